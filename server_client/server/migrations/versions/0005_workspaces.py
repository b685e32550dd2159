"""Workspaces (issue 15): a task's repository and ref, its workspace on the worker (path, base
commit, state, disk use), the summary of its latest diff, and the ``task_diffs`` table that
keeps that diff.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server_client.server.db import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TASK_PK = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("repo", sa.Text, nullable=True))
        batch.add_column(sa.Column("ref", sa.String(255), nullable=True))
        batch.add_column(sa.Column("workspace_path", sa.Text, nullable=True))
        batch.add_column(sa.Column("base_commit", sa.String(64), nullable=True))
        batch.add_column(sa.Column("workspace_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("workspace_bytes", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("workspace_updated_at", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("diff_files", sa.Integer, nullable=True))
        batch.add_column(sa.Column("diff_added", sa.Integer, nullable=True))
        batch.add_column(sa.Column("diff_removed", sa.Integer, nullable=True))
        batch.add_column(sa.Column("diff_updated_at", UTCDateTime, nullable=True))
    op.create_index("ix_tasks_worker_workspace", "tasks", ["worker_id", "workspace_state"])
    op.create_table(
        "task_diffs",
        sa.Column("task_pk", _TASK_PK, sa.ForeignKey("tasks.pk"), primary_key=True),
        sa.Column("base_commit", sa.String(64), nullable=False),
        sa.Column("files", sa.Text, nullable=False),
        sa.Column("patch", sa.LargeBinary, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_diffs")
    op.drop_index("ix_tasks_worker_workspace", "tasks")
    with op.batch_alter_table("tasks") as batch:
        for column in (
            "diff_updated_at",
            "diff_removed",
            "diff_added",
            "diff_files",
            "workspace_updated_at",
            "workspace_bytes",
            "workspace_state",
            "base_commit",
            "workspace_path",
            "ref",
            "repo",
        ):
            batch.drop_column(column)
