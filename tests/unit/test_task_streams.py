"""``TaskStreams`` against a real server (issue 14): consumers following different tasks share
one stream; one that joins later, or follows a task another consumer is halfway through, still
gets its task's whole log exactly once and in order; leaving stops nothing for the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from server_client import streams as streams_module
from server_client.client import CodexTuiClient
from server_client.models import Event, EventIn, EventKind, TaskStatus, TurnEnd, utcnow
from server_client.streams import TaskStreams
from server_client.worker.api import WorkerApi
from tests.conftest import ServerFactory
from tests.support.protocol import claim_all


class CountingClient(CodexTuiClient):
    """The real SDK client, counting the streams it opens for ``TaskStreams``."""

    opened: list[dict[str, int]]

    def follow_tasks(self, positions: Mapping[str, int], **kwargs: Any) -> AsyncIterator[Event]:
        self.opened.append(dict(positions))
        return super().follow_tasks(positions, **kwargs)


def _line(task_id: str, n: int) -> EventIn:
    return EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": f"{task_id} line {n}"})


async def _collect(
    streams: TaskStreams, task_id: str, sink: list[Event], halfway: asyncio.Event | None = None
) -> None:
    async for event in streams.events(task_id):
        sink.append(event)
        if halfway is not None and len(sink) >= 30:
            halfway.set()


async def test_consumers_share_one_stream_and_a_late_one_gets_the_whole_log(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        ids = [(await client.create_task(f"shared {n}")).id for n in range(2)]
    api = WorkerApi(server.url, server.token)
    uploads, uploaders = await claim_all(api, "streams-test", len(ids))

    client = CountingClient(server.url, server.token)
    client.opened = []
    streams = TaskStreams(client)
    first: list[Event] = []
    late: list[Event] = []
    twin: list[Event] = []
    a, b = ids
    halfway = asyncio.Event()
    reader = asyncio.create_task(_collect(streams, a, first, halfway))
    for n in range(50):
        uploaders[a].add(_line(a, n))
        uploaders[b].add(_line(b, n))
    await asyncio.wait_for(halfway.wait(), 30)  # the first consumer is well into task a's log
    late_reader = asyncio.create_task(_collect(streams, b, late))
    twin_reader = asyncio.create_task(_collect(streams, a, twin))  # a from its start again
    for n in range(50, 100):
        uploaders[a].add(_line(a, n))
        uploaders[b].add(_line(b, n))
    end = TurnEnd(status=TaskStatus.COMPLETED, event_count=100)
    await asyncio.gather(*(u.close(end) for u in uploaders.values()))
    await asyncio.wait_for(asyncio.gather(reader, late_reader, twin_reader), 30)
    await streams.aclose()
    await uploads.aclose()
    await api.aclose()
    await client.aclose()

    for task_id, events in ((a, first), (b, late), (a, twin)):
        assert [e.seq for e in events] == list(range(1, 104)), "each seq once, in order"
        lines = [e.data["line"] for e in events if e.kind is EventKind.STDERR]
        assert lines == [f"{task_id} line {n}" for n in range(100)], "its own task's events"
        assert events[-1].status is TaskStatus.COMPLETED
    assert {e.task_id for e in first + twin + late} == {None}  # as a task's own stream has them
    # One stream at a time: made again when a consumer joins (with everyone's position).
    assert client.opened[0] == {a: 0}
    assert any(set(opened) == {a, b} for opened in client.opened)
    assert len(client.opened) <= 5


async def test_a_burst_read_in_one_network_read_lets_the_event_loop_run_between_events(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay of a stored log arrives many events per network read; the SSE parser hands
    them over without awaiting anything, so the stream itself must give the loop a turn (every
    ``SLICE_S``; 0 here: before each event) or a TUI's timers wait for a whole read's parse."""
    monkeypatch.setattr(streams_module, "SLICE_S", 0.0)
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task_id = (await client.create_task("a long log")).id
    api = WorkerApi(server.url, server.token)
    uploads, uploaders = await claim_all(api, "burst-test", 1)
    for n in range(2_000):
        uploaders[task_id].add(_line(task_id, n))
    await uploaders[task_id].close(TurnEnd(status=TaskStatus.COMPLETED, event_count=2_000))
    await uploads.aclose()
    await api.aclose()

    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async with server.client() as client:
        streams = TaskStreams(client)
        counter = asyncio.create_task(count_turns())
        back_to_back = 0
        seen = 0
        last_turns = turns
        try:
            async with asyncio.timeout(60):
                async for _event in streams.events(task_id):
                    seen += 1
                    if turns == last_turns:
                        back_to_back += 1  # handed over with no other work run since the last
                    last_turns = turns
        finally:
            counter.cancel()
            await streams.aclose()
    assert seen == 2_003  # queued, running, 2,000 lines, completed
    assert back_to_back == 0, f"{back_to_back} of {seen} events came without the loop running"
