"""Several server replicas on one PostgreSQL database (issue 5): a write in one process wakes
the waiters of every other one through LISTEN/NOTIFY (server_client.server.pgnotify).

The relay itself is tested on a real database (delivery, own echo ignored, the listener and
the publisher reconnecting after their connections are killed, a prompt close); then two real
``codex-tui server`` processes share a fresh database, with the only worker attached to
replica A: a stream on replica B follows a task live, a cancel sent to B reaches the worker
on A, and a task created on B is claimed by the worker on A at once. The worker's long polls
are far longer than the times allowed (claims 25 s, signals 10 s), so only a wake-up that
crossed processes can meet them.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from httpx_sse import aconnect_sse

from server_client.client import CodexTuiClient
from server_client.models import Event, EventKind, TaskStatus
from server_client.paths import AppDirs
from server_client.server.db import create_engine
from server_client.server.hub import Hub
from server_client.server.main import bootstrap
from server_client.server.pgnotify import PgWakeRelay, asyncpg_dsn
from server_client.server.settings import ServerSettings
from server_client.server.store import Store
from tests.conftest import LiveServer, ServerFactory, wait_until_async

#: Longest time (s) from a task's creation on replica B to its claim by the worker on A.
PICKUP_S = 2.0
#: Longest time (s) from a cancel on replica B to the task's terminal ``canceled`` (C1: ~2 s).
CANCEL_S = 3.0
#: Longest time (s) from SIGTERM to the end of a replica's open stream (E5: a few seconds;
#: uvicorn's graceful shutdown gives up on a stream after 5 s and cuts it).
SHUTDOWN_S = 5.0


async def until(
    condition: Callable[[], Awaitable[object]], timeout_s: float = 15.0, what: str = "condition"
) -> None:
    """Like :func:`tests.conftest.wait_until_async` for an async ``condition``: await it
    (polling, with a short growing delay) until it is truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


# ------------------------------------------------------------------ the relay


@pytest.fixture
async def relays(pg_url: str) -> AsyncIterator[tuple[PgWakeRelay, PgWakeRelay]]:
    """Two hubs, each with a started relay on one fresh database (two "processes")."""
    pair = (PgWakeRelay(Hub(), pg_url), PgWakeRelay(Hub(), pg_url))
    for relay in pair:
        await relay.start()
    try:
        yield pair
    finally:
        for relay in pair:
            await relay.aclose()


async def _terminate_backend(pg_url: str, pid: int) -> None:
    """Kill one PostgreSQL backend, as a network cut or a database restart would, and wait
    (up to 5 s) until it is gone: a query racing the kill might still go through."""
    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await conn.close()


async def test_a_notify_in_one_process_wakes_the_other_and_not_itself_twice(
    relays: tuple[PgWakeRelay, PgWakeRelay],
) -> None:
    one, two = relays
    wanted, other = two.hub.current("task:1"), two.hub.current("task:2")
    local = one.hub.current("task:1")
    for _ in range(50):  # a burst of one key coalesces; any number of wakes is harmless
        one.hub.notify("task:1")
    assert local.is_set(), "the notifying process wakes its own waiters at once"
    assert await Hub.wait(wanted, 10.0), "the other process was not woken"
    assert not other.is_set()
    assert two.received >= 1

    # Notifications arrive in commit order: once one's echo-free reply from two is in,
    # one's own earlier notification has been delivered to it too, and was ignored.
    back = one.hub.current("queue:x")
    two.hub.notify("queue:x")
    assert await Hub.wait(back, 10.0)
    assert one.received == 1
    assert await one.wait_idle(5.0) and await two.wait_idle(5.0)


async def test_the_listener_reconnects_and_wakes_every_waiter(
    relays: tuple[PgWakeRelay, PgWakeRelay], pg_url: str
) -> None:
    one, two = relays
    missed = two.hub.current("task:7")  # its notification might be sent while two is away
    pid = two.listener_pid
    assert pid is not None
    await _terminate_backend(pg_url, pid)
    assert await Hub.wait(missed, 15.0), "waiters were not woken after the reconnect"
    assert two.reconnects == 1 and two.listening and two.listener_pid != pid

    after = two.hub.current("task:8")
    one.hub.notify("task:8")
    assert await Hub.wait(after, 10.0), "no delivery after the listener reconnected"


async def test_the_publisher_resends_after_losing_its_connection(
    relays: tuple[PgWakeRelay, PgWakeRelay], pg_url: str
) -> None:
    one, two = relays
    first = two.hub.current("task:1")
    one.hub.notify("task:1")
    assert await Hub.wait(first, 10.0)
    pid = one.publisher_pid
    assert pid is not None
    await _terminate_backend(pg_url, pid)

    second = two.hub.current("task:2")
    one.hub.notify("task:2")
    assert await Hub.wait(second, 15.0), "the key queued across the lost connection was lost"
    assert one.publisher_pid not in (None, pid)


async def test_close_is_prompt_and_stops_relaying(pg_url: str) -> None:
    hub = Hub()
    relay = PgWakeRelay(hub, pg_url)
    await relay.start()
    hub.notify("task:1")
    started = time.monotonic()
    await relay.aclose()
    assert time.monotonic() - started < 3.0
    assert not relay.listening
    hub.notify("task:2")  # no relay any more: only local waiters, nothing raised


# ------------------------------------------------------------------ two real servers


def _client(server: LiveServer, token: str | None = None) -> CodexTuiClient:
    return CodexTuiClient(server.url, token or server.token)


async def _stream_once(
    server: LiveServer, token: str, task_id: str, seen: list[Event], codex_seen: asyncio.Event
) -> list[str]:
    """Read the task's SSE stream on one connection (no reconnects, no de-duplication) until
    its terminal event; ``seen`` gets every event as it arrives. Returns the SSE ids."""
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx.Timeout(10.0, read=60.0)
    async with (
        httpx.AsyncClient(base_url=server.url, headers=headers, timeout=timeout) as http,
        aconnect_sse(http, "GET", f"/api/tasks/{task_id}/events") as source,
    ):
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            event = Event.model_validate_json(sse.data)
            ids.append(sse.id)
            seen.append(event)
            if event.kind is EventKind.CODEX:
                codex_seen.set()
            if event.is_terminal:
                return ids
    raise AssertionError(f"the stream ended before the terminal event: {[e.seq for e in seen]}")


async def _local_worker_online(server: LiveServer) -> None:
    async with _client(server) as client:

        async def online() -> bool:
            return any(w.name == "local" and w.online for w in await client.list_workers())

        await until(online, 30, "the local worker to come online")


def _replicas(
    server_factory: ServerFactory, pg_url: str, **worker: object
) -> tuple[LiveServer, LiveServer]:
    """Replica A with the local worker (fake codex, ``worker`` options) and replica B without
    one, both on the database ``pg_url``; B bootstraps against the users A created."""
    a = server_factory(db_url=pg_url, **worker)
    b = server_factory(db_url=pg_url, local_worker=False)
    return a, b


async def test_replicas_bootstrapping_at_once_share_one_local_user(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas starting at the same moment on an empty database: both migrate (one waits
    for the other's migration) and both end up with a token of one and the same local user,
    however their user creations interleave."""
    monkeypatch.setenv("CODEX_TUI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CODEX_TUI_KEYRING", "0")
    dirs = [
        AppDirs(config=tmp_path / f"c{i}", data=tmp_path / f"d{i}", state=tmp_path / f"s{i}")
        for i in range(2)
    ]
    settings = ServerSettings(db_url=pg_url)
    tokens = await asyncio.gather(
        *(bootstrap(settings, f"http://127.0.0.1:{9000 + i}", d) for i, d in enumerate(dirs))
    )
    engine = create_engine(pg_url)
    try:
        store = Store(engine)
        assert await store.count_users() == 1
        principals = [await store.authenticate(token) for token in tokens]
        local = await store.local_user()
        assert local is not None
        assert [p.user if p else None for p in principals] == [local, local]
    finally:
        await engine.dispose()


async def test_tokens_of_either_replica_authenticate_at_the_other(
    server_factory: ServerFactory, pg_url: str
) -> None:
    a, b = _replicas(server_factory, pg_url, local_worker=False)
    assert a.token != b.token
    async with _client(a) as at_a, _client(b, a.token) as a_token_at_b:
        async with _client(a, b.token) as b_token_at_a:
            me = await at_a.me()
            assert await a_token_at_b.me() == me
            assert await b_token_at_a.me() == me


async def test_a_stream_on_replica_b_follows_a_task_run_by_a_worker_on_replica_a(
    server_factory: ServerFactory, pg_url: str
) -> None:
    a, b = _replicas(
        server_factory,
        pg_url,
        fake_mode="slow-burst",
        extra_env={"FAKE_CODEX_EVENTS": "60", "FAKE_CODEX_INTERVAL": "0.05"},
        pass_env=("FAKE_CODEX_INTERVAL",),
    )
    await _local_worker_online(a)
    async with _client(a) as at_a:
        task = await at_a.create_task("stream me across replicas", workdir=str(a.workdir))
        seen: list[Event] = []
        codex_seen = asyncio.Event()
        stream = asyncio.create_task(_stream_once(b, b.token, task.id, seen, codex_seen))
        await asyncio.wait_for(codex_seen.wait(), 30)
        during = await at_a.get_task(task.id)
        assert during.status is TaskStatus.RUNNING, "the events did not arrive live"
        ids = await asyncio.wait_for(stream, 60)
        stored = await at_a.get_events(task.id, limit=5000)

    seqs = [e.seq for e in seen]
    assert seqs == list(range(1, len(seen) + 1)), "events missing, repeated or out of order"
    assert ids == [str(seq) for seq in seqs]
    assert seen[-1].status is TaskStatus.COMPLETED
    assert [(e.seq, e.kind, e.data) for e in seen] == [(e.seq, e.kind, e.data) for e in stored]
    items = [e for e in seen if e.codex_type == "item.completed"]
    assert len(items) == 60


async def test_cancel_and_pickup_cross_from_replica_b_to_the_worker_on_replica_a(
    server_factory: ServerFactory, pg_url: str
) -> None:
    a, b = _replicas(server_factory, pg_url, fake_mode="sleep")
    await _local_worker_online(a)
    async with _client(a) as at_a, _client(b) as at_b:
        # A first task keeps the worker busy; it has free slots, so its claim long poll (on A,
        # 25 s) is parked again by the time the second task is created, on B.
        first = await at_a.create_task("keep busy", workdir=str(a.workdir))

        async def running(task_id: str) -> bool:
            return (await at_b.get_task(task_id)).status is TaskStatus.RUNNING

        await until(lambda: running(first.id), 30, "the first claim")

        created = time.monotonic()
        second = await at_b.create_task("created on B", workdir=str(a.workdir))
        await until(lambda: running(second.id), 30, "the second claim")
        pickup = time.monotonic() - created
        assert pickup < PICKUP_S, f"claimed after {pickup:.2f} s: the long poll was not woken"

        seen: list[Event] = []
        codex_seen = asyncio.Event()
        stream = asyncio.create_task(_stream_once(b, b.token, second.id, seen, codex_seen))
        # The fake codex started its command and sleeps: nothing more is uploaded, so only
        # the signals long poll (10 s) can tell the worker about the cancel.
        await wait_until_async(
            lambda: any(e.codex_type == "item.started" for e in seen), 30, "the command"
        )
        asked = time.monotonic()
        await at_b.cancel_task(second.id)
        await asyncio.wait_for(stream, 30)
        took = time.monotonic() - asked
        assert seen[-1].status is TaskStatus.CANCELED
        assert took < CANCEL_S, f"canceled after {took:.2f} s: the signals poll was not woken"
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        assert (await at_a.get_task(first.id)).status is TaskStatus.RUNNING
        await at_b.cancel_task(first.id)

        async def ended() -> bool:
            return (await at_a.get_task(first.id)).status.is_terminal

        await until(ended, 30, "the first task to end after its cancel")


async def test_a_replica_shuts_down_promptly_with_streams_open_and_the_other_serves_on(
    server_factory: ServerFactory, pg_url: str
) -> None:
    """E5 with the relay running: SIGTERM reaching replica A while its open stream replays
    the task's log (or has just sent it) ends that stream within a few seconds, cleanly: the
    event being replayed is sent whole and the chunked response is completed, never cut
    mid-body; A exits, the task is untouched and replica B keeps streaming it."""
    a, b = _replicas(server_factory, pg_url, local_worker=False)
    async with _client(a) as at_a:
        task = await at_a.create_task("wait", workdir=str(a.workdir))
    headers = {"Authorization": f"Bearer {a.token}"}
    rest: list[str] = []
    async with (
        httpx.AsyncClient(base_url=a.url, headers=headers, timeout=30) as http,
        http.stream("GET", f"/api/tasks/{task.id}/events") as response,
    ):
        lines = response.aiter_lines()
        assert (await anext(lines)).startswith(":")
        # The stream's generator is past its opening comment: it is reading or sending the
        # replay of the queued event (seq 1) when the signal comes.
        a.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(SHUTDOWN_S):
                async for line in lines:
                    rest.append(line)
        except TimeoutError:
            raise AssertionError(
                f"replica A's stream did not end within {SHUTDOWN_S} s of SIGTERM "
                f"(got {rest!r})\n{a.log()}"
            ) from None
        except httpx.RemoteProtocolError as exc:
            raise AssertionError(
                f"replica A cut its stream on SIGTERM instead of ending it ({exc}; got "
                f"{rest!r})\n{a.log()}"
            ) from exc
    # The replay of the queued event, whole, before the end.
    assert [line for line in rest if line.startswith("id:")] == ["id: 1"], rest
    assert sum(line.startswith("data: ") for line in rest) == 1, rest
    await asyncio.to_thread(a.proc.wait, 10)
    async with _client(b) as at_b:
        assert (await at_b.get_task(task.id)).status is TaskStatus.QUEUED
        events = await at_b.get_events(task.id)
        assert [e.seq for e in events] == [1]
