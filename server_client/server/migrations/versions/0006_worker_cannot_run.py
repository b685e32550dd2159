"""Workers say when they cannot run tasks (issue 16): ``workers.cannot_run`` holds why (its
codex binary is missing), as the worker's last hello said; the server hands such a worker
no task.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("cannot_run", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("cannot_run")
