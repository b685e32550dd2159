"""Conversations (issue 13): a task's approval policy, runtime, turns and interrupt flag, the
counts of its pending approvals and replies, a worker's runtime, and the ``approvals`` and
``replies`` tables.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server_client.server.db import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TASK_PK = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("approval_policy", sa.String(16), nullable=False, server_default="never")
        )
        batch.add_column(sa.Column("runtime", sa.String(16), nullable=True))
        batch.add_column(sa.Column("requested_runtime", sa.String(16), nullable=True))
        batch.add_column(sa.Column("turns", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("interrupt_requested", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("pending_approvals", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("pending_replies", sa.Integer, nullable=False, server_default="0")
        )
    # Tasks that ran before this revision ran on codex exec.
    op.execute("UPDATE tasks SET runtime = 'exec', turns = 1 WHERE started_at IS NOT NULL")
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("runtime", sa.String(16), nullable=True))
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("task_pk", _TASK_PK, sa.ForeignKey("tasks.pk"), nullable=False),
        sa.Column("item_id", sa.String(200), nullable=False),
        sa.Column("turn_id", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("command", sa.Text, nullable=True),
        sa.Column("cwd", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("diff", sa.Text, nullable=True),
        sa.Column("questions", sa.Text, nullable=True),
        sa.Column("available_decisions", sa.Text, nullable=False, server_default="[]"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(32), nullable=True),
        sa.Column("answers", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("answered_at", UTCDateTime, nullable=True),
        sa.Column("answered_by", sa.String(100), nullable=True),
        sa.Column("withdrawn_reason", sa.Text, nullable=True),
        sa.Column("acked_at", UTCDateTime, nullable=True),
    )
    op.create_index("ux_approvals_task_item", "approvals", ["task_pk", "item_id"], unique=True)
    op.create_index("ix_approvals_task_state", "approvals", ["task_pk", "state"])
    op.create_table(
        "replies",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("task_pk", _TASK_PK, sa.ForeignKey("tasks.pk"), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("delivered_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_replies_task", "replies", ["task_pk", "delivered_at"])


def downgrade() -> None:
    op.drop_index("ix_replies_task", "replies")
    op.drop_table("replies")
    op.drop_index("ix_approvals_task_state", "approvals")
    op.drop_index("ux_approvals_task_item", "approvals")
    op.drop_table("approvals")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("runtime")
    with op.batch_alter_table("tasks") as batch:
        for column in (
            "pending_replies",
            "pending_approvals",
            "interrupt_requested",
            "turns",
            "requested_runtime",
            "runtime",
            "approval_policy",
        ):
            batch.drop_column(column)
