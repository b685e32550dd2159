"""Slow and vanishing SSE clients against a real server (docs/reliability.md E4).

An event stream has no per-subscriber queue: each stream's generator (``_follow`` in
server_client/server/routes_tasks.py) pulls pages of at most 500 rows from the store at the
pace its client reads and, between pages, waits on a wake-up key of the hub. A slow client's
backlog therefore lives in the store, not in the server's memory; the only per-client buffers
are the kernel's socket buffers and uvicorn's transport buffer, both bounded. These tests show
it from the outside, against ``codex-tui server`` run as a user runs it:

- a client that stops reading after the headers holds back neither the worker nor another
  client, the server's memory does not grow with its unsent backlog, and once it reads it
  still gets every event exactly once (or, had it been dropped, the rest by
  ``Last-Event-ID``);
- 10,000 connect/reset cycles leave the open-stream gauge, the hub's wake-up keys and the
  server's memory where they were, and the server still serves streams afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from pathlib import Path

import httpx
import psutil
import pytest
from httpx_sse import EventSource
from prometheus_client.parser import text_string_to_metric_families

from server_client.models import (
    Event,
    EventBatch,
    EventIn,
    EventKind,
    TaskStatus,
    utcnow,
)
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory, wait_until, wait_until_async
from tests.support.protocol import claim_next, finish_completed

MIB = 1024 * 1024
STREAMS = "codex_tui_open_event_streams"
WAKE_KEYS = "codex_tui_wake_keys"

#: Items the fake codex prints at once in the slow-client test (one event each, ~170 bytes
#: of JSON, ~190 bytes of SSE): ~22 MiB of stream, several times what socket buffers hold.
BURST_EVENTS = 120_000
#: Receive buffer asked for the slow client's socket (the kernel doubles it). Pinning it
#: keeps the kernel from growing it, so the client side soaks up at most this much.
SLOW_RCVBUF = 64 * 1024
#: Largest send buffer the kernel lets a TCP socket grow to (the server's side), when
#: /proc does not say: Linux's default ``net.ipv4.tcp_wmem`` maximum.
DEFAULT_WMEM_MAX = 4 * MIB
#: uvicorn's write buffer before it pauses the app (uvicorn.protocols.http.flow_control),
#: plus one SSE message that may go over it.
UVICORN_BUFFER = 64 * 1024 + 64 * 1024
#: Most the server's RSS may grow while the slow client holds its unread stream, compared
#: with after an identical warm-up task (measured: about 1 MiB).
SLOW_RSS_BOUND = 4 * MIB

#: Connect/reset cycles measured in the churn test, after a warm-up round.
CHURN_CYCLES = 10_000
#: The warm-up round. Measured in-process: the RSS rises by about 3 MiB over the first few
#: thousand cycles (malloc arenas of the SQLite connection threads, which a reset that lands
#: mid-query makes SQLAlchemy replace) and then stays within 0.5 MiB for 17,500 more; 1,000
#: cycles are not enough to reach that plateau.
CHURN_WARMUP = 3_000
#: Connections in flight at once during the churn.
CHURN_CONCURRENCY = 32
#: Most the server's RSS may differ after the cycles from before them (after the warm-up):
#: a leak of 300 bytes per cycle would exceed it.
CHURN_RSS_SLACK = 3 * MIB


def _sse_headers(server: LiveServer, **extra: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {server.token}",
        "Accept": "text/event-stream",
        **extra,
    }


def _gauges(server: LiveServer) -> dict[str, float]:
    """The server's unlabelled samples from ``GET /metrics`` (name → value)."""
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        sample.name: float(sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }


def _rss(server: LiveServer) -> int:
    """The server process's resident set size (bytes)."""
    return int(psutil.Process(server.proc.pid).memory_info().rss)


def _wmem_max() -> int:
    """The largest send buffer TCP autotuning gives a socket here (bytes)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return DEFAULT_WMEM_MAX


def _events_url(server: LiveServer, task_id: str, *, after: int = 0, many: bool = False) -> str:
    """The task's own event stream, or (``many``) the stream of several tasks following only
    this one, from after ``after``."""
    if many:
        return f"{server.url}/api/events?task={task_id}:{after}"
    return f"{server.url}/api/tasks/{task_id}/events?after={after}"


async def _read_events(response: httpx.Response, sink: list[Event]) -> None:
    """Append every event of an open SSE response to ``sink``, checking ``id:`` is the seq
    (``TASK_ID:SEQ`` on a stream of several tasks, which ends with an ``end`` message)."""
    async for sse in EventSource(response).aiter_sse():
        if sse.event == "end":
            return
        if not sse.data:
            continue  # the opening comment or a heartbeat
        event = Event.model_validate_json(sse.data)
        expected = str(event.seq) if event.task_id is None else f"{event.task_id}:{event.seq}"
        assert sse.id == expected, (sse.id, event.seq)
        sink.append(event)


async def _read_whole_stream(
    http: httpx.AsyncClient,
    server: LiveServer,
    task_id: str,
    sink: list[Event],
    *,
    many: bool = False,
) -> int:
    """Read the task's stream on one connection to its end into ``sink``; the body's bytes."""
    url = _events_url(server, task_id, many=many)
    async with http.stream("GET", url, headers=_sse_headers(server)) as response:
        assert response.status_code == 200
        await _read_events(response, sink)
        return response.num_bytes_downloaded


def _assert_whole_log(events: list[Event], items: int) -> None:
    """``events`` is the task's whole log exactly once, in order: seqs 1..N without gap or
    repeat, the ``items`` agent messages of the fake's burst in order, and ``completed`` last
    (and only there)."""
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), "seqs repeat, skip or go backwards"
    texts = [
        e.data["item"]["text"]
        for e in events
        if e.codex_type == "item.completed" and e.data["item"]["type"] == "agent_message"
    ]
    assert texts == [f"message {n}" for n in range(items)]
    assert events[-1].status is TaskStatus.COMPLETED
    assert sum(e.is_terminal for e in events) == 1


@pytest.mark.timeout(300)
@pytest.mark.parametrize("many", [False, True], ids=["task-stream", "many-tasks-stream"])
async def test_a_client_that_stops_reading_holds_back_no_one(
    server_factory: ServerFactory, many: bool
) -> None:
    """A client reads nothing after the headers while the fake codex bursts
    ``BURST_EVENTS`` items: meanwhile the worker finishes the task and another client reads
    the whole log; the server's RSS stays flat although most of the stalled stream (more than
    the socket buffers can hold) was never sent; then the stalled client reads and gets every
    event exactly once, from the store. The same through a task's own stream and through the
    stream of several tasks (``many``).

    The RSS is compared with after an identical warm-up task read by a normal client, so the
    ingest's own cost (allocator arenas, SQLite's page cache) is paid before. A server that
    buffered the unsent backlog would hold at least its bytes: at least ``unsent_min`` minus
    what the warm-up freed for reuse, which the test checks is above the bound.

    Fails if the worker waited for subscribers (the task could not complete while the slow
    client reads nothing), if the stream buffered its backlog in the server (RSS), if the
    server ended the stalled stream without cause, or if the slow client lost or repeated
    events."""
    server = server_factory(fake_mode="burst", extra_env={"FAKE_CODEX_EVENTS": str(BURST_EVENTS)})
    async with server.client() as client, httpx.AsyncClient(timeout=120) as http:
        rss_fresh = _rss(server)
        warm = await client.create_task("warm up", workdir=str(server.workdir))
        warm_events: list[Event] = []
        await _read_whole_stream(http, server, warm.id, warm_events)
        _assert_whole_log(warm_events, BURST_EVENTS)
        warm_task = await client.get_task(warm.id)
        wait_until(lambda: _gauges(server)[STREAMS] == 0, what="the warm-up stream to end")
        rss_before = _rss(server)

        task = await client.create_task("burst", workdir=str(server.workdir))
        slow_transport = httpx.AsyncHTTPTransport(
            socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)]
        )
        slow_events: list[Event] = []
        async with httpx.AsyncClient(transport=slow_transport, timeout=120) as slow_http:
            request = slow_http.build_request(
                "GET", _events_url(server, task.id, many=many), headers=_sse_headers(server)
            )
            slow = await slow_http.send(request, stream=True)  # the headers; no body read
            try:
                assert slow.status_code == 200
                normal: list[Event] = []
                started = time.monotonic()
                stream_bytes = await _read_whole_stream(http, server, task.id, normal, many=many)
                normal_s = time.monotonic() - started
                _assert_whole_log(normal, BURST_EVENTS)
                done = await client.get_task(task.id)
                assert done.status is TaskStatus.COMPLETED  # the worker was not held back

                # The stalled stream is still open on the server (had its whole log fitted in
                # socket buffers it would have ended): the rest waits in the store.
                gauges = _gauges(server)
                rss_held = _rss(server)
                assert gauges[STREAMS] == 1, "the stalled stream ended or was never counted"
                buffers = _wmem_max() + 2 * SLOW_RCVBUF + UVICORN_BUFFER
                unsent_min = stream_bytes - buffers
                reusable = max(0, rss_before - rss_fresh)
                grown = rss_held - rss_before
                assert done.started_at and done.finished_at
                assert warm_task.started_at and warm_task.finished_at
                print(
                    f"\nstream {stream_bytes / MIB:.1f} MiB, of which at least "
                    f"{unsent_min / MIB:.1f} MiB unsent to the stalled client; task ran "
                    f"{(warm_task.finished_at - warm_task.started_at).total_seconds():.1f} s "
                    f"alone, {(done.finished_at - done.started_at).total_seconds():.1f} s "
                    f"beside the stalled client; the other client read it in {normal_s:.1f} s"
                    f"; RSS fresh {rss_fresh / MIB:.1f}, after warm-up {rss_before / MIB:.1f}"
                    f", holding {rss_held / MIB:.1f} MiB ({grown / MIB:+.1f})"
                )
                assert unsent_min - reusable > SLOW_RSS_BOUND, (
                    "the test cannot tell a buffered backlog from noise: make the burst larger"
                )
                assert grown < SLOW_RSS_BOUND, f"RSS grew {grown / MIB:.1f} MiB"

                # Now the slow client reads: everything, exactly once, from the store.
                started = time.monotonic()
                with contextlib.suppress(httpx.TransportError):  # dropped: resume below
                    await _read_events(slow, slow_events)
            finally:
                await slow.aclose()
        reconnects = 0
        while not (slow_events and slow_events[-1].is_terminal):
            reconnects += 1  # it was dropped: resume after its last seq
            assert reconnects <= 3, "the slow client keeps being dropped"
            after = _events_url(server, task.id, after=slow_events[-1].seq, many=many)
            async with http.stream("GET", after, headers=_sse_headers(server)) as resumed:
                await _read_events(resumed, slow_events)
        print(
            f"the slow client then read it in {time.monotonic() - started:.1f} s "
            f"with {reconnects} reconnects"
        )
        _assert_whole_log(slow_events, BURST_EVENTS)
    wait_until(lambda: _gauges(server)[STREAMS] == 0, what="every stream to end")


# -- churn ------------------------------------------------------------------------------


async def _connect_and_reset(host: str, port: int, request: bytes, marks: list[bytes]) -> None:
    """One cycle: connect, ask for the stream, read up to each of ``marks`` in turn, then
    reset the connection: SO_LINGER 0 and close send an RST instead of a FIN, like a client
    that vanished."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        head = b"".join([await reader.readuntil(mark) for mark in marks])
        assert head.startswith(b"HTTP/1.1 200 "), head[:300]
    finally:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


async def _churn(server: LiveServer, task_id: str, cycles: int, last_seq: int) -> float:
    """Run ``cycles`` connect/reset cycles, ``CHURN_CONCURRENCY`` at a time; the seconds.

    Every other cycle resets as soon as the stream's first bytes (its opening comment) come,
    often while the server still reads the store for it; the others once the event
    ``last_seq`` has come whole, when the stream has replayed the log and waits on the hub as
    a live subscriber."""
    host, port = server.url.removeprefix("http://").split(":")
    request = (
        f"GET /api/tasks/{task_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {server.token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    replayed = f"id: {last_seq}\r\n".encode()
    left = cycles

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            marks = [b"codex-tui event stream"] if left % 2 else [replayed, b"\r\n\r\n"]
            cycle = _connect_and_reset(host, int(port), request, marks)
            await asyncio.wait_for(cycle, 30)

    started = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(CHURN_CONCURRENCY)))
    return time.monotonic() - started


def _wait_settled(server: LiveServer, start: dict[str, float], what: str) -> None:
    """Wait until the open-stream gauge and the wake-up keys are back to ``start``'s."""
    now: dict[str, float] = {}

    def settled() -> bool:
        now.update(_gauges(server))
        return all(now[name] == start[name] for name in (STREAMS, WAKE_KEYS))

    try:
        wait_until(settled, 30, what)
    except AssertionError as exc:
        detail = {name: (now[name], start[name]) for name in (STREAMS, WAKE_KEYS)}
        raise AssertionError(f"{exc}: (now, at the start) {detail}") from None


def _codex_event(index: int, status: str) -> EventIn:
    item: dict[str, object] = {"id": "item_0", "type": "command_execution", "command": "sleep 600"}
    item |= {"aggregated_output": "", "exit_code": None if index == 0 else 0, "status": status}
    kind = "item.started" if index == 0 else "item.completed"
    return EventIn(ts=utcnow(), kind=EventKind.CODEX, data={"type": kind, "item": item})


@pytest.mark.timeout(400)
async def test_connect_reset_churn_releases_every_subscriber(
    server_factory: ServerFactory,
) -> None:
    """10,000 clients open the stream of a running task and reset the connection, half of
    them at its first bytes, half once they read its log (3 events) and the stream waits for
    more. Afterwards the open-stream gauge and the
    hub's wake-up keys are back to their values from before, the server's RSS is within
    ``CHURN_RSS_SLACK`` of its value after a warm-up round of ``CHURN_WARMUP`` cycles,
    nothing was logged as a traceback, and a new stream still gets the task's events,
    replayed then live, to the end; after that the finished task's wake-up key is gone too.

    The test acts as the task's worker (claims it, uploads one event, finishes it at the end)
    and the lease TTL is an hour: the task stays running throughout without a fake codex, and
    no worker long poll comes and goes among the hub's keys while they are compared (the
    fake's ``sleep`` mode would give the same task, with those polls in the way).

    Fails if a reset stream kept its slot (open streams would stay up, and under the real
    ``max_streams`` the user would soon get 429s), if streams left wake-up keys or
    generators behind (the gauge or RSS would grow with the cycles), if a key outlived the
    streams that waited on it (before ``Hub.watch`` the running task's key stayed until its
    next event, and a finished task's for good), or if the churn wedged the server.
    """
    server = server_factory(local_worker=False, server_args=("--lease-ttl", "3600"))
    api = WorkerApi(server.url, server.token)
    try:
        async with server.client() as client:
            task = await client.create_task("sleep")
        worker, claim = await claim_next(api, "churn-test")
        assert claim.task.id == task.id
        first = EventBatch(lease_id=claim.lease_id, first_index=0, events=[_codex_event(0, "")])
        await api.upload(worker.id, task.id, first.model_dump_json().encode())
        start = _gauges(server)
        # No stream yet; the one key is the owner's claim queue's, which a claim leaves until
        # the owner's next task (one per owner, not per request).
        assert start[STREAMS] == 0 and start[WAKE_KEYS] <= 1

        warm_s = await _churn(server, task.id, CHURN_WARMUP, last_seq=3)
        _wait_settled(server, start, "the warm-up's streams to be released")
        rss_before = _rss(server)
        threads_before = psutil.Process(server.proc.pid).num_threads()
        cpu_before = sum(psutil.Process(server.proc.pid).cpu_times()[:2])
        churn_s = await _churn(server, task.id, CHURN_CYCLES, last_seq=3)
        _wait_settled(server, start, "the churn's streams to be released")
        rss_after = _rss(server)
        cpu_s = sum(psutil.Process(server.proc.pid).cpu_times()[:2]) - cpu_before
        print(
            f"\nwarm-up: {CHURN_WARMUP} cycles in {warm_s:.1f} s; then {CHURN_CYCLES} "
            f"cycles in {churn_s:.1f} s ({CHURN_CYCLES / churn_s:.0f}/s, server CPU "
            f"{cpu_s:.1f} s); RSS {rss_before / MIB:.2f} -> {rss_after / MIB:.2f} MiB "
            f"({(rss_after - rss_before) / MIB:+.2f}); threads {threads_before} -> "
            f"{psutil.Process(server.proc.pid).num_threads()}; server log: "
            f"{server.log().count('Task was destroyed but it is pending')} pending tasks "
            "destroyed (SQLAlchemy's close of a connection whose query a reset cancelled)"
        )
        assert abs(rss_after - rss_before) < CHURN_RSS_SLACK
        assert "Traceback" not in server.log()
        # A reset no longer cancels a store read half way (the read is shielded), so no
        # pooled connection is force-closed.
        assert "Task was destroyed but it is pending" not in server.log()

        # The server still serves: a new stream replays the log, then gets the rest live.
        async with server.client() as client:
            seen: list[Event] = []

            async def follow() -> None:
                async for event in client.stream_events(task.id, max_attempts=1):
                    seen.append(event)

            follower = asyncio.create_task(follow())
            # queued, running and the uploaded item.started: replayed from the store
            await wait_until_async(lambda: len(seen) >= 3 or follower.done(), 15, "a replay")
            assert len(seen) == 3 and not follower.done(), (seen, follower)
            second = EventBatch(
                lease_id=claim.lease_id, first_index=1, events=[_codex_event(1, "completed")]
            )
            await api.upload(worker.id, task.id, second.model_dump_json().encode())
            await finish_completed(api, worker, claim, 2)
            await asyncio.wait_for(follower, 15)
        assert [e.seq for e in seen] == [1, 2, 3, 4, 5]
        assert seen[3].codex_type == "item.completed" and seen[-1].status is TaskStatus.COMPLETED
        _wait_settled(server, start, "the last stream and the finished task's key to go")
    finally:
        await api.aclose()
