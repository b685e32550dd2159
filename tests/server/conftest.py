"""Provides the server tests' shared fixtures: ``redis_url``, the test Redis with a key prefix
of each test's own.

The Redis tests use the server named by ``CODEX_TUI_TEST_REDIS_URL`` (e.g.
``redis://127.0.0.1:6379/0``). Without the variable they skip with a message, except in CI
(``CI`` set), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from limits.aio.storage import RedisStorage

from server_client.server.ratelimit import storage_uri

REDIS_URL_ENV = "CODEX_TUI_TEST_REDIS_URL"


def redis_base() -> str:
    """The test Redis's URL; skips the test without one (fails it in CI)."""
    url = os.environ.get(REDIS_URL_ENV, "").strip()
    if url:
        return url
    message = f"Redis tests need {REDIS_URL_ENV}, e.g. {REDIS_URL_ENV}=redis://127.0.0.1:6379/0"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: Redis tests must not be skipped)", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test Redis with a key prefix of this test's own; its keys are removed afterwards."""
    base = redis_base()
    prefix = f"codex_tui_test_{secrets.token_hex(6)}"
    yield f"{base}{'&' if '?' in base else '?'}key_prefix={prefix}"
    uri, _ = storage_uri(base)

    async def clean() -> None:
        await RedisStorage(uri, key_prefix=prefix).reset()

    # On a thread of its own, away from any event loop pytest-asyncio set up for the test.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, clean()).result()
