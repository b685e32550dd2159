"""Per-user rate limits (issue 5, docs/reliability.md S8), against real servers: a burst over a
limit gets 429 with a problem body naming the limit and a ``Retry-After``; another user (or another
client address, for pairing) is unaffected; stream slots are always given back; through Redis two
servers share one user's counts; an unreachable Redis degrades to per-process limits.

The Redis tests use the server named by ``CODEX_TUI_TEST_REDIS_URL`` (e.g.
``redis://127.0.0.1:6379/0``), each with its own key prefix (removed afterwards). Without the
variable they skip with a message, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import cast

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server_client.server.ratelimit import Limiter, RateLimited, storage_uri
from server_client.server.settings import ServerSettings
from tests.conftest import LiveServer, ServerFactory, free_port, wait_until

PROBLEM = "application/problem+json"


# -- helpers ----------------------------------------------------------------------------


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _add_user(server: LiveServer, name: str, db_url: str | None = None) -> str:
    """A new user's token, made with the admin CLI (on ``db_url``, else the server's file)."""
    extra = ("--db", db_url) if db_url else ()
    added = server.cli("admin", "user", "add", *extra, name)
    assert added.returncode == 0, added.stderr
    return added.stdout.strip()


def _create(server: LiveServer, token: str, prompt: str = "x") -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/tasks",
        json={"prompt": prompt, "workdir": str(server.workdir)},
        headers=_auth(token),
    )


def _assert_429(response: httpx.Response, setting: str, max_retry_s: int) -> dict[str, object]:
    """A 429 problem naming ``setting`` with a whole-second Retry-After in 1..max_retry_s."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"
    assert setting in str(body["detail"]), body
    assert f"CODEX_TUI_SERVER_{setting.upper()}" in str(body["detail"]), body
    retry = response.headers["retry-after"]
    assert retry.isdigit() and 1 <= int(retry) <= max_retry_s, retry
    return cast(dict[str, object], body)


def _no_open_streams(server: LiveServer) -> bool:
    """True when the server's gauge counts no open event stream."""
    return _metric(server, "codex_tui_open_event_streams") == 0


def _metric(server: LiveServer, name: str) -> float:
    """The value of an unlabelled sample of the server's /metrics."""
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics:\n{text}")


@asynccontextmanager
async def _within(seconds: float, what: str) -> AsyncIterator[None]:
    """Bound the block to ``seconds``: past them it fails with an AssertionError naming
    ``what``, instead of hanging until the suite's timeout."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds} s waiting for {what}") from None


@asynccontextmanager
async def _stream(client: httpx.AsyncClient, url: str, token: str) -> AsyncIterator[httpx.Response]:
    """An SSE request; when 200, the first bytes have arrived (the stream is open)."""
    headers = {**_auth(token), "Accept": "text/event-stream"}
    async with client.stream("GET", url, headers=headers) as response:
        chunks = response.aiter_bytes()  # kept: a dropped iterator closes the connection
        if response.status_code == 200:
            await anext(chunks)
        else:
            await response.aread()
        yield response


def _drop_with_reset(server: LiveServer, path: str, token: str) -> None:
    """Open an SSE stream over a raw socket, wait for its first bytes, then reset the TCP
    connection (SO_LINGER 0): a client that vanishes without a goodbye."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


# -- task creations and active tasks ------------------------------------------------------


def test_task_creation_burst_gets_429_and_other_users_are_unaffected(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        local_worker=False, extra_env={"CODEX_TUI_SERVER_RATE_TASK_CREATIONS": "5/minute"}
    )
    bob = _add_user(server, "bob")
    for i in range(5):
        assert _create(server, server.token, f"a{i}").status_code == 201
    refused = _create(server, server.token, "one too many")
    body = _assert_429(refused, "rate_task_creations", 60)
    assert "5 per 1 minute" in str(body["detail"])
    # Nothing was stored for the refused request.
    listed = httpx.get(f"{server.url}/api/tasks", headers=_auth(server.token)).json()["items"]
    assert sorted(t["prompt"] for t in listed) == [f"a{i}" for i in range(5)]
    # Another user has a window of their own.
    for i in range(5):
        assert _create(server, bob, f"b{i}").status_code == 201
    _assert_429(_create(server, bob), "rate_task_creations", 60)
    _assert_429(_create(server, server.token), "rate_task_creations", 60)
    # Bad input is still judged (auth comes before the limit: a bad token is a 401).
    assert _create(server, "ctu_wrong").status_code == 401


def test_active_tasks_are_limited_per_user_from_the_store(server_factory: ServerFactory) -> None:
    server = server_factory(
        local_worker=False, extra_env={"CODEX_TUI_SERVER_MAX_ACTIVE_TASKS": "3"}
    )
    bob = _add_user(server, "bob")
    made = [_create(server, server.token, f"a{i}") for i in range(3)]
    assert [r.status_code for r in made] == [201, 201, 201]
    _assert_429(_create(server, server.token), "max_active_tasks", 60)
    assert all(_create(server, bob, f"b{i}").status_code == 201 for i in range(3))
    # Ending one of them (cancel of a queued task) frees a place at once.
    task_id = made[0].json()["id"]
    cancel = httpx.post(f"{server.url}/api/tasks/{task_id}/cancel", headers=_auth(server.token))
    assert cancel.status_code == 202 and cancel.json()["status"] == "canceled"
    assert _create(server, server.token, "after cancel").status_code == 201
    _assert_429(_create(server, server.token), "max_active_tasks", 60)


# -- open event streams -----------------------------------------------------------------


async def test_streams_are_limited_per_user_and_always_given_back(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False, extra_env={"CODEX_TUI_SERVER_MAX_STREAMS": "3"})
    bob = _add_user(server, "bob")
    mine = _create(server, server.token).json()["id"]
    bobs = _create(server, bob).json()["id"]
    url, bob_url = (f"{server.url}/api/tasks/{t}/events" for t in (mine, bobs))

    async with httpx.AsyncClient(timeout=30) as client, AsyncExitStack() as stack:
        for _ in range(3):
            opened = await stack.enter_async_context(_stream(client, url, server.token))
            assert opened.status_code == 200
        assert _metric(server, "codex_tui_open_event_streams") == 3
        async with _stream(client, url, server.token) as refused:
            _assert_429(refused, "max_streams", 60)
        # JSON pages are not streams and are not limited.
        page = await client.get(url, headers={**_auth(server.token), "Accept": "application/json"})
        assert page.status_code == 200 and page.json()[0]["seq"] == 1
        # Bob's streams are his own.
        for _ in range(3):
            opened = await stack.enter_async_context(_stream(client, bob_url, bob))
            assert opened.status_code == 200
        async with _stream(client, bob_url, bob) as refused:
            _assert_429(refused, "max_streams", 60)

    # Open and drop many streams: closed by the client, and reset without a goodbye.
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(10):
            async with AsyncExitStack() as stack:
                for _ in range(3):
                    opened = await stack.enter_async_context(_stream(client, url, server.token))
                    assert opened.status_code == 200
    for _ in range(10):
        await asyncio.to_thread(_drop_with_reset, server, f"/api/tasks/{mine}/events", server.token)

    wait_until(
        lambda: _metric(server, "codex_tui_open_event_streams") == 0,
        what="every stream slot to be given back",
    )
    # Back to exactly zero: all three slots are free again, and only three.
    async with httpx.AsyncClient(timeout=30) as client, AsyncExitStack() as stack:
        for _ in range(3):
            opened = await stack.enter_async_context(_stream(client, url, server.token))
            assert opened.status_code == 200
        async with _stream(client, url, server.token) as refused:
            assert refused.status_code == 429


async def test_a_finished_stream_gives_its_slot_back(server_factory: ServerFactory) -> None:
    """A stream that ends on its own (terminal event) releases its slot too."""
    server = server_factory(local_worker=False, extra_env={"CODEX_TUI_SERVER_MAX_STREAMS": "1"})
    task_id = _create(server, server.token).json()["id"]
    url = f"{server.url}/api/tasks/{task_id}/events"
    async with httpx.AsyncClient(timeout=30) as client:
        headers = {**_auth(server.token), "Accept": "text/event-stream"}
        async with client.stream("GET", url, headers=headers) as opened:
            assert opened.status_code == 200
            chunks = opened.aiter_bytes()
            await anext(chunks)
            cancel = await client.post(
                f"{server.url}/api/tasks/{task_id}/cancel", headers=_auth(server.token)
            )
            assert cancel.status_code == 202
            async for _ in chunks:
                pass  # the server ends the stream after the terminal event
            async with _stream(client, url, server.token) as replay:
                assert replay.status_code == 200  # the first slot is free already


# -- pairing ----------------------------------------------------------------------------


def test_pairing_attempts_are_limited_per_client_address(server_factory: ServerFactory) -> None:
    server = server_factory(
        local_worker=False, extra_env={"CODEX_TUI_SERVER_RATE_PAIRING": "3/minute"}
    )
    made = httpx.post(f"{server.url}/api/pairing-codes", headers=_auth(server.token))
    assert made.status_code == 201
    code = made.json()["code"]
    for i in range(3):
        guess = httpx.post(f"{server.url}/api/pair", json={"code": f"WRONG{i}", "name": "w"})
        assert guess.status_code == 400
    # The fourth attempt from this address is refused, even with the right code.
    refused = httpx.post(f"{server.url}/api/pair", json={"code": code, "name": "w"})
    _assert_429(refused, "rate_pairing", 60)
    # Another address (127.0.0.2 is loopback too) has its own count.
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
        assert other.post(f"{server.url}/api/pair", json={"code": "WRONG", "name": "w"}).is_error
        paired = other.post(f"{server.url}/api/pair", json={"code": code, "name": "w"})
        assert paired.status_code == 200, paired.text
        assert paired.json()["worker"]["name"] == "w"


# -- Redis unreachable ------------------------------------------------------------------


def test_unreachable_redis_degrades_to_this_process_counters(
    server_factory: ServerFactory,
) -> None:
    """Rate limits never take the service down: with nothing listening at the Redis address,
    requests still succeed, limits hold per process, and a warning is logged."""
    server = server_factory(
        local_worker=False,
        extra_env={
            "CODEX_TUI_SERVER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "CODEX_TUI_SERVER_RATE_TASK_CREATIONS": "3/minute",
        },
    )
    assert [_create(server, server.token).status_code for _ in range(3)] == [201] * 3
    _assert_429(_create(server, server.token), "rate_task_creations", 60)
    task_id = httpx.get(f"{server.url}/api/tasks", headers=_auth(server.token)).json()["items"][0]
    with httpx.stream(
        "GET",
        f"{server.url}/api/tasks/{task_id['id']}/events",
        headers={**_auth(server.token), "Accept": "text/event-stream"},
    ) as stream:
        assert stream.status_code == 200
    wait_until(lambda: "rate-limit storage unreachable" in server.log(), what="the warning")


# -- Redis ------------------------------------------------------------------------------


def test_through_redis_two_servers_share_one_users_counts(
    server_factory: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    """Two servers on one store (a SQLite file both open) and one Redis: one user's burst is
    counted across both; another user is unaffected; streams are counted across both."""
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {
        "CODEX_TUI_SERVER_REDIS_URL": redis_url,
        "CODEX_TUI_SERVER_RATE_TASK_CREATIONS": "5/minute",
        "CODEX_TUI_SERVER_MAX_STREAMS": "2",
    }
    one = server_factory(local_worker=False, extra_env=env, server_args=("--db", db_url))
    two = server_factory(local_worker=False, extra_env=env, server_args=("--db", db_url))
    me = httpx.get(f"{one.url}/api/me", headers=_auth(one.token)).json()
    assert httpx.get(f"{two.url}/api/me", headers=_auth(two.token)).json() == me
    bob = _add_user(one, "bob", db_url)

    servers = [one, two, one, two, one]
    assert [_create(s, s.token).status_code for s in servers] == [201] * 5
    _assert_429(_create(two, two.token), "rate_task_creations", 60)
    _assert_429(_create(one, one.token), "rate_task_creations", 60)
    assert _create(two, bob).status_code == 201

    task_id = httpx.get(f"{one.url}/api/tasks", headers=_auth(one.token)).json()["items"][0]["id"]

    async def streams() -> None:
        async with httpx.AsyncClient(timeout=30) as client, AsyncExitStack() as stack:
            for server in (one, two):
                url = f"{server.url}/api/tasks/{task_id}/events"
                opened = await stack.enter_async_context(_stream(client, url, server.token))
                assert opened.status_code == 200
            for server in (one, two):
                url = f"{server.url}/api/tasks/{task_id}/events"
                async with _stream(client, url, server.token) as refused:
                    _assert_429(refused, "max_streams", 60)

    asyncio.run(streams())
    for server in (one, two):
        wait_until(functools.partial(_no_open_streams, server))
    # Both slots are free again on the shared count.
    asyncio.run(streams())


async def test_a_crashed_replicas_streams_fade_from_the_shared_count(redis_url: str) -> None:
    """A replica that dies holding stream slots never releases them; its counts drop out
    within two stream epochs, while a live replica's slot stays counted across many epochs.

    The limiters' clock is the test's: it moves from one epoch to the next and runs the
    mover's refresh itself, so nothing here depends on how fast a loaded machine runs (the
    real-time version read the count while the mover was between its two calls, or late).
    Every wait is bounded: a storage call that never returns fails within 30 s, saying so.
    """
    epoch_s = 3600.0  # the background mover sleeps a quarter of it: it never runs here
    now = [time.time()]
    settings = ServerSettings(db_url="sqlite:///unused", redis_url=redis_url, max_streams=2)
    crashed = Limiter(settings, stream_epoch_s=epoch_s, clock=lambda: now[0])
    live = Limiter(settings, stream_epoch_s=epoch_s, clock=lambda: now[0])
    try:
        async with _within(30, "the crashed replica's streams to fade"):
            for _ in range(2):
                await crashed.open_stream("u1")
            await crashed.aclose()  # stops moving, as a killed process would; never closed

            with pytest.raises(RateLimited) as refused:
                await live.open_stream("u1")
            assert refused.value.limit == "max_streams" and refused.value.retry_after_s >= 1
            assert live.local_streams == 0  # the refused slot was given back at once
            assert await live.shared_streams("u1") == 2
            now[0] += epoch_s
            await live.refresh_streams()
            assert await live.shared_streams("u1") == 2  # the previous epoch still counts
            now[0] += epoch_s
            await live.refresh_streams()
            assert await live.shared_streams("u1") == 0, "the crashed replica's streams stay"

            held = await live.open_stream("u1")
            for _ in range(4):  # several epochs: the live slot is moved along each time
                now[0] += epoch_s
                assert await live.shared_streams("u1") == 1  # before the move: in previous
                await live.refresh_streams()
                assert await live.shared_streams("u1") == 1
            await live.close_stream(held)
            assert await live.shared_streams("u1") == 0
    finally:
        await live.aclose()


def test_storage_uri_maps_redis_urls() -> None:
    assert storage_uri(None) == ("memory://", "codex_tui")
    assert storage_uri("redis://h:6379/2") == ("async+redis://h:6379/2", "codex_tui")
    assert storage_uri("rediss://u:p@h/0?key_prefix=k1&ssl_cert_reqs=none") == (
        "async+rediss://u:p@h/0?ssl_cert_reqs=none",
        "k1",
    )
    assert (
        storage_uri("unix:///run/redis.sock?db=1")[0] == "async+redis+unix:///run/redis.sock?db=1"
    )
    with pytest.raises(ValueError, match="redis://"):
        storage_uri("http://h:6379")


async def test_closing_ends_the_refresher_even_when_the_storage_swallows_the_cancel() -> None:
    """A storage client that will not be cancelled in the middle of a call (as a Redis
    client may not, while it cleans a connection up) must not hold a shutdown up: ``aclose``
    returns, and the refresher's loop ends by itself once the call does."""
    settings = ServerSettings(db_url="sqlite:///unused", max_streams=5)
    limiter = Limiter(settings, stream_epoch_s=0.2)
    in_call = asyncio.Event()
    release = asyncio.Event()

    async def incr(key: str, expiry: int, amount: int = 1) -> int:
        in_call.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallowed: the call goes on
        raise ConnectionError("connection reset")

    await limiter.open_stream("u1")
    limiter._shared.incr = incr  # type: ignore[method-assign]
    await asyncio.wait_for(in_call.wait(), 10)  # the refresher is inside the storage call
    refresher = limiter._refresher
    assert refresher is not None
    await asyncio.wait_for(limiter.aclose(), 10)
    assert limiter._refresher is None
    release.set()  # the call ends: the loop sees it is closing and stops on its own
    await asyncio.wait_for(asyncio.gather(refresher, return_exceptions=True), 10)
    assert refresher.done()
