"""Per-user stream slots under a reconnect storm (issue 17 item 3, docs/reliability.md S8):
opening and closing event streams concurrently against a real server, with the counters in
memory and in a real Redis, gives every slot back: right after the storm the user can open
exactly ``max_streams`` streams, the shared count is zero and the open-streams gauge agrees.

The epoch of the shared counters is short here (``CODEX_TUI_SERVER_STREAM_EPOCH_S``), so
that the counters are moved into new epochs many times during the storm, as they are over
hours in production.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import anyio
import httpx
import pytest

from server_client.server.ratelimit import Limiter, RateLimited
from server_client.server.settings import ServerSettings
from tests.conftest import LiveServer, ServerFactory, wait_until
from tests.server.test_ratelimits import _auth, _create, _metric, _stream, _within
from tests.support.waits import while_running, within

#: Open/close cycles of each storm, and how many run at once (two storms run together).
CYCLES = 1000
CONCURRENCY = 20
#: Above the two storms' streams at once.
MAX_STREAMS = 2 * CONCURRENCY + 8
#: Epoch of the shared counters in these tests (s): the counters move every second.
EPOCH_S = 4.0
#: Longest the storm may take (s): a stuck open or close fails here, not at the suite timeout.
STORM_TIMEOUT_S = 120.0


async def _storm(server: LiveServer, url: str) -> None:
    """``CYCLES`` streams of ``url`` opened (first bytes read) and closed, ``CONCURRENCY`` at
    a time."""
    left = iter(range(CYCLES))
    refused: list[int] = []

    async def run(client: httpx.AsyncClient) -> None:
        for _ in left:
            async with _stream(client, url, server.token) as opened:
                if opened.status_code != 200:
                    refused.append(opened.status_code)

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with (
        httpx.AsyncClient(timeout=30, limits=limits) as client,
        _within(STORM_TIMEOUT_S, f"{CYCLES} streams of {url} to open and close"),
    ):
        await asyncio.gather(*(run(client) for _ in range(CONCURRENCY)))
    # A closed stream's slot is released once the server has seen the client go, a moment
    # after the client's next open may arrive: some refusals during the storm are no leak.
    assert len(refused) < CYCLES, f"every open of the storm was refused ({set(refused)})"


async def _shared_count(redis_url: str, user_id: str) -> int | None:
    """The user's open streams on the shared counters, read as another replica would."""
    settings = ServerSettings(
        db_url="sqlite:///unused", redis_url=redis_url, stream_epoch_s=EPOCH_S
    )
    reader = Limiter(settings)
    try:
        return await reader.shared_streams(user_id)
    finally:
        await reader.aclose()


async def _all_slots_free(server: LiveServer, url: str) -> None:
    """Exactly ``MAX_STREAMS`` streams open now, the next is a 429, the gauge counts them."""
    async with httpx.AsyncClient(timeout=30) as client, AsyncExitStack() as stack:
        statuses = []
        for _ in range(MAX_STREAMS):
            opened = await stack.enter_async_context(_stream(client, url, server.token))
            statuses.append(opened.status_code)
        assert statuses == [200] * MAX_STREAMS, (
            f"after the storm only {statuses.count(200)} of {MAX_STREAMS} streams could be "
            f"opened ({statuses}): slots leaked"
        )
        assert _metric(server, "codex_tui_open_event_streams") == MAX_STREAMS
        async with _stream(client, url, server.token) as refused:
            assert refused.status_code == 429, refused.status_code


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_reconnect_storm_gives_every_stream_slot_back(
    server_factory: ServerFactory, backend: str, request: pytest.FixtureRequest
) -> None:
    env = {
        "CODEX_TUI_SERVER_MAX_STREAMS": str(MAX_STREAMS),
        "CODEX_TUI_SERVER_STREAM_EPOCH_S": str(EPOCH_S),
    }
    redis_url: str | None = None
    if backend == "redis":
        redis_url = request.getfixturevalue("redis_url")
        env["CODEX_TUI_SERVER_REDIS_URL"] = redis_url
    server = server_factory(local_worker=False, extra_env=env)
    task_id = _create(server, server.token).json()["id"]
    async with httpx.AsyncClient(timeout=30) as client:
        me = (await client.get(f"{server.url}/api/me", headers=_auth(server.token))).json()
    urls = [f"{server.url}/api/tasks/{task_id}/events", f"{server.url}/api/events?task={task_id}"]

    async with httpx.AsyncClient(timeout=30) as client:
        # One stream stays open through the storm, over several epochs: the refresher moves
        # its +1 along, and it is counted once, neither lost nor doubled.
        async with _stream(client, urls[0], server.token) as held:
            assert held.status_code == 200
            # Storms until more than one epoch has passed: a fast machine got through one
            # storm within an epoch, and the counters must be moved during the storm.
            started = time.monotonic()
            while time.monotonic() - started <= EPOCH_S:
                await asyncio.gather(*(_storm(server, url) for url in urls))
            await asyncio.to_thread(
                wait_until,
                lambda: _metric(server, "codex_tui_open_event_streams") == 1,
                what="the open-streams gauge to read 1 (the held stream) after the storm",
            )
            if redis_url is not None:
                assert await _shared_count(redis_url, me["user_id"]) == 1
    await asyncio.to_thread(
        wait_until,
        lambda: _metric(server, "codex_tui_open_event_streams") == 0,
        what="the open-streams gauge to read 0 once the held stream closed",
    )
    if redis_url is not None:
        # The shared count (what every replica refuses on) is back to zero too: read it as
        # a replica would, before the leaked counts could fade with their epochs.
        assert await _shared_count(redis_url, me["user_id"]) == 0
    await _all_slots_free(server, urls[0])


async def test_a_stream_closed_while_its_slot_is_being_moved_gives_it_back_at_once(
    redis_url: str,
) -> None:
    """The release of a stream must not wait behind the epoch mover: a response gives its
    release a few seconds at most (``RELEASE_TIMEOUT_S``), and a release cut short there left
    the slot's +1 in the shared count while the gauge read 0. Here the mover is stuck in a
    storage call while one of the two slots it moves is closed under a short deadline."""
    epoch_s = 3600.0  # the background mover sleeps a quarter of it: only the test moves
    now = [time.time()]
    settings = ServerSettings(db_url="sqlite:///unused", redis_url=redis_url, max_streams=5)
    limiter = Limiter(settings, stream_epoch_s=epoch_s, clock=lambda: now[0])
    try:
        async with _within(30, "the move and the release"):
            kept = await limiter.open_stream("u1")
            closed = await limiter.open_stream("u1")
            assert await limiter.shared_streams("u1") == 2

            storage = limiter._shared
            real_incr = storage.incr
            in_move = asyncio.Event()
            go_on = asyncio.Event()

            async def slow_incr(key: str, expiry: int, amount: int = 1) -> int:
                if amount == 2:  # the mover's +2 into the new epoch: held up
                    in_move.set()
                    await go_on.wait()
                return await real_incr(key, expiry, amount)

            storage.incr = slow_incr  # type: ignore[method-assign]
            now[0] += epoch_s
            mover = asyncio.create_task(limiter.refresh_streams())
            await while_running(in_move.wait(), mover, 30, "the mover's +2 into the new epoch")
            with anyio.move_on_after(0.5):  # as SlotEventSourceResponse bounds its release
                await limiter.close_stream(closed)
            assert limiter.local_streams == 1
            go_on.set()
            await within(mover, 30, "the mover to finish moving the slots")
            storage.incr = real_incr  # type: ignore[method-assign]
            assert await limiter.shared_streams("u1") == 1, "the closed slot is still counted"
            await limiter.close_stream(kept)
            assert await limiter.shared_streams("u1") == 0
    finally:
        await limiter.aclose()


async def test_moving_slots_into_a_new_epoch_never_counts_them_twice(redis_url: str) -> None:
    """While the mover moves a replica's slots into a new epoch, another replica reading the
    count must never see them twice (it would refuse a stream of a user at the limit for
    nothing); for a moment it may see them not at all. The mover is held between its two
    storage calls."""
    epoch_s = 3600.0  # the background mover sleeps a quarter of it: only the test moves
    now = [time.time()]
    settings = ServerSettings(db_url="sqlite:///unused", redis_url=redis_url, max_streams=2)
    mover_side = Limiter(settings, stream_epoch_s=epoch_s, clock=lambda: now[0])
    reader = Limiter(settings, stream_epoch_s=epoch_s, clock=lambda: now[0])
    try:
        async with _within(30, "the move"):
            for _ in range(2):
                await mover_side.open_stream("u1")
            storage = mover_side._shared
            real_incr = storage.incr
            between = asyncio.Event()
            go_on = asyncio.Event()
            calls: list[int] = []

            async def held_incr(key: str, expiry: int, amount: int = 1) -> int:
                calls.append(amount)
                if len(calls) == 2:  # the move's second call: the first one has landed
                    between.set()
                    await go_on.wait()
                return await real_incr(key, expiry, amount)

            storage.incr = held_incr  # type: ignore[method-assign]
            now[0] += epoch_s
            move = asyncio.create_task(mover_side.refresh_streams())
            await while_running(between.wait(), move, 30, "the move's second storage call")
            assert sorted(map(abs, calls)) == [2, 2], calls
            during = await reader.shared_streams("u1")
            go_on.set()
            await within(move, 30, "the move to finish")
            assert during is not None and during <= 2, f"{during} streams counted for 2"
            assert await reader.shared_streams("u1") == 2
            # And a user at the limit is refused only when at it.
            with pytest.raises(RateLimited):
                await reader.open_stream("u1")
    finally:
        await mover_side.aclose()
        await reader.aclose()
