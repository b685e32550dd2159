"""Initial schema: users, tokens, workers, tasks, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server_client.server.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigPK = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("is_local", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("codex_version", sa.String(100), nullable=True),
        sa.Column("workdir_roots", sa.Text, nullable=False),
        sa.Column("max_tasks", sa.Integer, nullable=False),
        sa.Column("connected_at", UTCDateTime, nullable=False),
        sa.Column("last_seen_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_workers_owner", "workers", ["owner_id"])
    op.create_table(
        "tasks",
        sa.Column("pk", BigPK, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("workdir", sa.Text, nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("sandbox", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("worker_id", sa.String(32), nullable=True),
        sa.Column("worker_name", sa.String(100), nullable=True),
        sa.Column("lease_id", sa.String(64), nullable=True),
        sa.Column("thread_id", sa.String(200), nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("upload_next", sa.Integer, nullable=False),
    )
    op.create_index("ix_tasks_owner_pk", "tasks", ["owner_id", "pk"])
    op.create_index("ix_tasks_status_owner", "tasks", ["status", "owner_id", "pk"])
    op.create_table(
        "events",
        sa.Column("task_pk", BigPK, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("ts", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("events")
    op.drop_index("ix_tasks_status_owner", "tasks")
    op.drop_index("ix_tasks_owner_pk", "tasks")
    op.drop_table("tasks")
    op.drop_index("ix_workers_owner", "workers")
    op.drop_table("workers")
    op.drop_table("tokens")
    op.drop_table("users")
