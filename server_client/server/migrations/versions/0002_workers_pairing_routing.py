"""Worker tokens, labels and revocation, pairing codes, task routing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server_client.server.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("worker_id", sa.String(32), nullable=True))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("labels", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("revoked_at", UTCDateTime, nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("target_worker", sa.String(100), nullable=True))
        batch.add_column(sa.Column("labels", sa.Text, nullable=False, server_default="[]"))
    op.create_table(
        "pairing_codes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("used_at", UTCDateTime, nullable=True),
        sa.Column("worker_id", sa.String(32), nullable=True),
    )
    op.create_index("ix_tasks_worker_status", "tasks", ["worker_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_tasks_worker_status", "tasks")
    op.drop_table("pairing_codes")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("labels")
        batch.drop_column("target_worker")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("labels")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("worker_id")
