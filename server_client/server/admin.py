"""Provides the administration verbs behind ``codex-tui admin``: users and tokens, run on the
server's machine directly against its store (no HTTP, so they work with the server down)."""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from server_client.models import Worker
from server_client.server import context
from server_client.server.db import create_engine, migrate
from server_client.server.store import AuditEntry, Store, TokenInfo, User


@asynccontextmanager
async def open_store(db_url: str) -> AsyncIterator[Store]:
    """The store at ``db_url``, migrated to the newest schema; closed on exit.

    Audit rows written through it name the actor ``admin:<OS user>``.
    """
    context.set_actor(f"admin:{getpass.getuser()}")
    engine = create_engine(db_url)
    store = Store(engine)
    try:
        await migrate(engine)
        yield store
    finally:
        await store.aclose()
        await engine.dispose()


async def add_user(db_url: str, name: str) -> tuple[User, str]:
    """Create a user and a first token; returns both (the token is never shown again).

    Raises:
        server_client.server.store.Conflict: the name is taken.
    """
    async with open_store(db_url) as store:
        user = await store.create_user(name)
        return user, await store.issue_token(user.id)


async def list_users(db_url: str) -> list[tuple[User, datetime, int]]:
    """Every user with creation time and live token count."""
    async with open_store(db_url) as store:
        return await store.list_users()


async def add_token(db_url: str, user_name: str) -> str:
    """A new user token for an existing user. Raises NotFound for an unknown user."""
    async with open_store(db_url) as store:
        user = await store.user_by_name(user_name)
        return await store.issue_token(user.id)


async def list_tokens(db_url: str, user_name: str | None = None) -> list[TokenInfo]:
    """Token records (never the tokens), of one user or all."""
    async with open_store(db_url) as store:
        user = await store.user_by_name(user_name) if user_name else None
        return await store.list_tokens(user)


async def revoke_tokens(
    db_url: str, token_ids: Sequence[int] = (), user_name: str | None = None
) -> int:
    """Revoke tokens by id or all of a user's; returns how many. They fail on their next use."""
    async with open_store(db_url) as store:
        user = await store.user_by_name(user_name) if user_name else None
        return await store.revoke_tokens(token_ids, user)


async def set_worker_danger(db_url: str, user_name: str, worker_name: str, allow: bool) -> Worker:
    """Allow (or forbid) ``danger-full-access`` tasks on a user's worker (docs/reliability.md S6).

    Raises:
        server_client.server.store.NotFound: unknown user or worker.
    """
    async with open_store(db_url) as store:
        user = await store.user_by_name(user_name)
        return await store.set_worker_danger(user, worker_name, allow)


async def read_audit(
    db_url: str,
    *,
    user_name: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """The newest ``limit`` audit rows matching the filters, oldest first.

    Raises:
        server_client.server.store.NotFound: unknown user.
    """
    async with open_store(db_url) as store:
        owner = await store.user_by_name(user_name) if user_name else None
        return await store.list_audit(
            owner=owner, action=action, target=target, since=since, limit=limit
        )
