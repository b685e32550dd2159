"""Provides the store's schema (SQLAlchemy Core tables) and the async engine factory.

The schema is created and upgraded only by Alembic (``migrations/``); these table objects are
what queries are written against and must match the newest migration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    event,
    text,
)
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored without zone and always read back as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("is_local", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("worker_id", String(32), nullable=True),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("codex_version", String(100), nullable=True),
    Column("workdir_roots", Text, nullable=False),
    Column("max_tasks", Integer, nullable=False),
    Column("connected_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("labels", Text, nullable=False, default="[]"),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("allow_danger", Boolean, nullable=False, default=False),
    Column("runtime", String(16), nullable=True),
    Column("cannot_run", Text, nullable=True),
    Index("ix_workers_owner", "owner_id"),
    Index("ux_workers_owner_name", "owner_id", "name", unique=True),
)

pairing_codes = Table(
    "pairing_codes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Column("worker_id", String(32), nullable=True),
)

tasks = Table(
    "tasks",
    metadata,
    Column(
        "pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("id", String(32), nullable=False, unique=True),
    Column("owner_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("prompt", Text, nullable=False),
    Column("workdir", Text, nullable=True),
    Column("model", String(200), nullable=True),
    Column("sandbox", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("worker_id", String(32), nullable=True),
    Column("worker_name", String(100), nullable=True),
    Column("lease_id", String(64), nullable=True),
    Column("thread_id", String(200), nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("last_seq", Integer, nullable=False, default=0),
    Column("upload_next", Integer, nullable=False, default=0),
    Column("target_worker", String(100), nullable=True),
    Column("labels", Text, nullable=False, default="[]"),
    Column("approval_policy", String(16), nullable=False, default="never"),
    Column("runtime", String(16), nullable=True),
    Column("requested_runtime", String(16), nullable=True),
    Column("turns", Integer, nullable=False, default=0),
    Column("interrupt_requested", Boolean, nullable=False, default=False),
    Column("pending_approvals", Integer, nullable=False, default=0),
    Column("pending_replies", Integer, nullable=False, default=0),
    Column("repo", Text, nullable=True),
    Column("ref", String(255), nullable=True),
    Column("workspace_path", Text, nullable=True),
    Column("base_commit", String(64), nullable=True),
    Column("workspace_state", String(16), nullable=True),
    Column("workspace_bytes", BigInteger, nullable=True),
    Column("workspace_updated_at", UTCDateTime, nullable=True),
    Column("diff_files", Integer, nullable=True),
    Column("diff_added", Integer, nullable=True),
    Column("diff_removed", Integer, nullable=True),
    Column("diff_updated_at", UTCDateTime, nullable=True),
    Index("ix_tasks_owner_pk", "owner_id", "pk"),
    Index("ix_tasks_status_owner", "status", "owner_id", "pk"),
    Index("ix_tasks_worker_status", "worker_id", "status"),
    Index("ix_tasks_worker_workspace", "worker_id", "workspace_state"),
)

#: The latest diff of a task's workspace (server_client.server.store.workspaces), one row per
#: task, replaced by each upload: ``files`` is JSON text (``[{"path","added","removed"}]``),
#: ``patch`` the ``git diff --binary`` bytes (empty when ``truncated``).
task_diffs = Table(
    "task_diffs",
    metadata,
    Column(
        "task_pk",
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("tasks.pk"),
        primary_key=True,
    ),
    Column("base_commit", String(64), nullable=False),
    Column("files", Text, nullable=False),
    Column("patch", LargeBinary, nullable=False),
    Column("truncated", Boolean, nullable=False, default=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("task_pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("ts", UTCDateTime, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("data", Text, nullable=False),
)

#: Codex's requests for the owner's say (server_client.server.store.approvals), one per codex
#: item of a task (``item_id``); owner-scoped through their task. JSON columns are text.
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "task_pk",
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("tasks.pk"),
        nullable=False,
    ),
    Column("item_id", String(200), nullable=False),
    Column("turn_id", String(200), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("command", Text, nullable=True),
    Column("cwd", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("diff", Text, nullable=True),
    Column("questions", Text, nullable=True),
    Column("available_decisions", Text, nullable=False, default="[]"),
    Column("state", String(16), nullable=False),
    Column("decision", String(32), nullable=True),
    Column("answers", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("answered_at", UTCDateTime, nullable=True),
    Column("answered_by", String(100), nullable=True),
    Column("withdrawn_reason", Text, nullable=True),
    Column("acked_at", UTCDateTime, nullable=True),
    Index("ux_approvals_task_item", "task_pk", "item_id", unique=True),
    Index("ix_approvals_task_state", "task_pk", "state"),
)

#: Follow-up prompts of a conversation (server_client.server.store.conversations);
#: ``delivered_at`` is set when the worker acknowledges handing one to codex.
replies = Table(
    "replies",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "task_pk",
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("tasks.pk"),
        nullable=False,
    ),
    Column("prompt", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Index("ix_replies_task", "task_pk", "delivered_at"),
)

#: One row per state-changing call (docs/reliability.md S9). Append-only: triggers of migration
#: 0003 refuse UPDATE and DELETE. ``detail`` is JSON text, never a secret.
audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(140), nullable=False),
    Column("owner_id", String(32), nullable=True),
    Column("action", String(40), nullable=False),
    Column("target", String(200), nullable=True),
    Column("request_id", String(64), nullable=True),
    Column("client_addr", String(100), nullable=True),
    Column("detail", Text, nullable=True),
    Index("ix_audit_owner", "owner_id", "id"),
    Index("ix_audit_at", "at"),
)


def async_url(url: str) -> str:
    """Map a user-facing database URL to its async driver.

    ``sqlite:///path`` → ``sqlite+aiosqlite:///path``; ``postgresql://`` →
    ``postgresql+asyncpg://``. URLs that already name a driver pass through.

    Raises:
        ValueError: an unsupported database.
    """
    parsed = make_url(url)
    if parsed.drivername == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if parsed.drivername in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        return url
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url`` (see :func:`async_url`); SQLite runs in WAL mode."""
    full = async_url(url)
    if full.startswith("sqlite"):
        path = make_url(full).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(full, pool_size=8, max_overflow=8)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    return create_async_engine(full, pool_size=10, max_overflow=20, pool_pre_ping=True)


def sqlite_sync_twin(engine: AsyncEngine) -> Engine | None:
    """A plain (sqlite3, thread-safe pool) engine on the same SQLite file as ``engine``, for
    work run in a thread with one hop per transaction; None for an in-memory database, which
    a second engine would not share."""
    url = engine.url
    if not url.database or url.database == ":memory:":
        return None
    twin = sa_create_engine(url.set(drivername="sqlite"), pool_size=8, max_overflow=8)
    event.listen(twin, "connect", _sqlite_on_connect)
    return twin


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


#: Key of the PostgreSQL advisory lock held while migrating (any fixed 64-bit number).
MIGRATION_LOCK_KEY = 0x636F6465785F7475  # "codex_tu"
#: Key of the PostgreSQL advisory lock held while a server ensures its local user.
BOOTSTRAP_LOCK_KEY = MIGRATION_LOCK_KEY + 1


@asynccontextmanager
async def advisory_lock(engine: AsyncEngine, key: int) -> AsyncIterator[None]:
    """Hold the PostgreSQL advisory lock ``key`` (a signed 64-bit number) for the block, on a
    connection of its own, so that server processes sharing the database take turns; waits
    for a holder in another process. A no-op on SQLite (one server per file)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent).

    On PostgreSQL a transaction-scoped advisory lock serialises replicas that start at the
    same time: the second waits for the first's migration to commit, then finds nothing to do.
    """
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            await conn.execute(lock, {"key": MIGRATION_LOCK_KEY})
        await conn.run_sync(_upgrade)
