"""Audit log (append-only), the admin's danger-full-access mark on workers, and one worker
per owner and name (replicas registering the same name at once on PostgreSQL).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server_client.server.db import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# One statement per execute: asyncpg prepares each, and a prepared statement holds one command.
_PG_GUARDS = [
    """CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
]

_SQLITE_GUARDS = [
    f"""CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"""
    for verb in ("UPDATE", "DELETE")
]


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(140), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("client_addr", sa.String(100), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_audit_owner", "audit_log", ["owner_id", "id"])
    op.create_index("ix_audit_at", "audit_log", ["at"])
    with op.batch_alter_table("workers") as batch:
        batch.add_column(
            sa.Column("allow_danger", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_index("ux_workers_owner_name", "workers", ["owner_id", "name"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_GUARDS:
            op.execute(statement)
    else:
        for statement in _SQLITE_GUARDS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    op.drop_index("ux_workers_owner_name", "workers")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("allow_danger")
    op.drop_index("ix_audit_at", "audit_log")
    op.drop_index("ix_audit_owner", "audit_log")
    op.drop_table("audit_log")
