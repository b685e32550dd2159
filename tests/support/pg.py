"""Provides throwaway PostgreSQL databases for tests: one fresh, uniquely named database per
test on the server named by ``CODEX_TUI_TEST_PG_URL``, dropped afterwards.

Without the variable the PostgreSQL tests skip with a message naming it, except in CI (the
``CI`` variable set), where they fail: CI must never skip them silently.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

#: The environment variable naming the test PostgreSQL server (any existing database on it,
#: used as the admin database to create and drop the per-test ones).
PG_URL_ENV = "CODEX_TUI_TEST_PG_URL"
#: Prefix of the per-test databases (so a leftover from a killed run is recognisable).
DB_PREFIX = "codex_tui_test_"


def pg_admin_url() -> str:
    """The admin URL from ``CODEX_TUI_TEST_PG_URL``; skips the test without it (fails in CI).

    Returns:
        A ``postgresql://`` URL, e.g. ``postgresql://postgres@127.0.0.1:5432/test``.
    """
    url = os.environ.get(PG_URL_ENV, "").strip()
    if url:
        return url
    message = (
        f"PostgreSQL tests need {PG_URL_ENV}, e.g. "
        f"{PG_URL_ENV}=postgresql://postgres@127.0.0.1:5432/test"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: PostgreSQL tests must not be skipped)", pytrace=False)
    pytest.skip(message)


def _plain(url: str) -> str:
    """``url`` with the plain ``postgresql`` scheme asyncpg accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to completion on its own loop in a helper thread (so it never touches the
    event loop pytest-asyncio may have set up for the test)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _create(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(_plain(admin_url), timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        # An odd session time zone (UTC+12:45/+13:45): nothing may depend on the server's.
        await conn.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'Pacific/Chatham'")
    finally:
        await conn.close()


async def _drop(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(_plain(admin_url), timeout=10)
    try:
        # Terminate whatever still uses it (servers killed with -9, pooled connections).
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextmanager
def fresh_database(admin_url: str | None = None) -> Iterator[str]:
    """Create a new, empty, uniquely named database; yield its URL; drop it afterwards.

    Args:
        admin_url: A URL of the server (default: :func:`pg_admin_url`).

    Yields:
        ``postgresql://…/codex_tui_test_<random>`` on the same server, user and options.
    """
    admin = admin_url or pg_admin_url()
    name = DB_PREFIX + secrets.token_hex(6)
    _run(_create(admin, name))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        _run(_drop(admin, name))
