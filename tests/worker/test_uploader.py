"""The worker's upload stream against a real server: batches, and retries that lose nothing and
duplicate nothing when responses are lost after the server stored the batch (R4); uploads
share one kept-alive connection; the tasks of a worker share one request, with their ends; a
refused part leaves the others stored; a backlog past the memory bound waits on disk."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server_client.client import ApiError
from server_client.models import (
    EventBatch,
    EventIn,
    EventKind,
    TaskStatus,
    TurnEnd,
    WorkerHello,
    utcnow,
)
from server_client.worker.api import WorkerApi
from server_client.worker.uploader import LeaseLostError, UploadStream
from tests.conftest import ServerFactory, wait_until_async
from tests.fakes.netproxy import CuttingProxy
from tests.support.protocol import claim_next, finish_completed
from tests.support.waits import bounded


async def test_lost_responses_are_retried_without_duplicates(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task = await client.create_task("upload")
    direct = WorkerApi(server.url, server.token)
    worker, claim = await claim_next(direct, "uploader-test")
    async with CuttingProxy(server.url, seed=1, low=10**9, high=10**9, drop_first=3) as proxy:
        flaky = WorkerApi(proxy.url, server.token)
        stream = UploadStream(flaky, worker.id, interval_s=0.01)
        uploader = stream.open(task.id, claim.lease_id)
        for i in range(250):
            uploader.add(EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": f"line {i}"}))
        await uploader.close()
        await stream.aclose()
        await flaky.aclose()
    assert proxy.connections > 3, "the first responses were dropped, so it must have retried"
    await finish_completed(direct, worker, claim, 250)
    await direct.aclose()
    async with server.client() as client:
        async with bounded(60, f"the stream of finished task {task.id} to end"):
            events = [e async for e in client.stream_events(task.id)]
    lines = [e.data["line"] for e in events if e.kind is EventKind.STDERR]
    assert lines == [f"line {i}" for i in range(250)]
    assert [e.seq for e in events] == list(range(1, 254))


async def test_a_stale_lease_cannot_append_or_finish(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task = await client.create_task("fenced")
    api = WorkerApi(server.url, server.token)
    worker, claim = await claim_next(api, "fence-test")
    stream = UploadStream(api, worker.id, interval_s=0.01)
    uploader = stream.open(task.id, "not-the-lease")
    uploader.add(EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": "x"}))
    with pytest.raises(LeaseLostError):
        await uploader.close()
    await stream.aclose()
    with pytest.raises(ApiError) as info:
        await finish_completed(api, worker, claim, 0, lease_id="not-the-lease")
    assert info.value.status == 409
    await api.aclose()


async def test_uploads_share_one_keep_alive_connection(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task = await client.create_task("keep-alive")
    direct = WorkerApi(server.url, server.token)
    worker, claim = await claim_next(direct, "keep-alive-test")
    async with CuttingProxy(server.url, seed=1, low=10**9, high=10**9) as proxy:
        api = WorkerApi(proxy.url, server.token)
        for i in range(20):
            event = EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": f"line {i}"})
            batch = EventBatch(lease_id=claim.lease_id, first_index=i, events=[event])
            result = await api.upload(worker.id, task.id, batch.model_dump_json().encode())
            assert result.next_index == i + 1
        await api.aclose()
    await direct.aclose()
    assert proxy.connections == 1


async def test_deltas_coalesce_and_retries_still_lose_and_duplicate_nothing(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task = await client.create_task("deltas")
    direct = WorkerApi(server.url, server.token)
    worker, claim = await claim_next(direct, "delta-test")
    texts: list[tuple[str, str]] = []
    async with CuttingProxy(server.url, seed=2, low=10**9, high=10**9, drop_first=3) as proxy:
        flaky = WorkerApi(proxy.url, server.token)
        stream = UploadStream(flaky, worker.id)
        uploader = stream.open(task.id, claim.lease_id)

        def add(i: int) -> None:
            item = "a" if (i // 7) % 2 == 0 else "b"
            texts.append((item, f"{i},"))
            delta = {"type": "item.delta", "item_id": item, "stream": "agent_message"}
            uploader.add(
                EventIn(ts=utcnow(), kind=EventKind.CODEX, data={**delta, "delta": f"{i},"})
            )
            if i % 5 == 0:
                uploader.add(EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": str(i)}))

        # deltas of one item added while the batch holding their predecessor is in flight
        # (its response is dropped: the server stored it, the retry must carry the same)
        for i in range(1, 4):
            add(i)
            await wait_until_async(lambda i=i: proxy.connections >= i, 10, f"upload {i}")  # type: ignore[misc]
        for i in range(4, 400):
            add(i)
            if i % 11 == 0:
                await asyncio.sleep(0.002)  # let uploads start in between
        await uploader.close()
        await stream.aclose()
        await flaky.aclose()
    assert proxy.connections > 3, "the first responses were dropped, so it must have retried"
    count = uploader.count
    await finish_completed(direct, worker, claim, count)
    await direct.aclose()
    async with server.client() as client:
        async with bounded(60, f"the stream of finished task {task.id} to end"):
            events = [e async for e in client.stream_events(task.id)]
    stored = [e.data for e in events if e.kind is EventKind.CODEX]
    expected_lines = [str(i) for i in range(5, 400, 5)]
    assert len(stored) + len(expected_lines) == count, "merging counts no event"
    assert len(stored) < 399 / 2, "consecutive deltas of one item merged"
    assert "".join(d["delta"] for d in stored) == "".join(text for _, text in texts)
    for item in ("a", "b"):
        mine = "".join(d["delta"] for d in stored if d["item_id"] == item)
        assert mine == "".join(text for name, text in texts if name == item)
    lines = [e.data["line"] for e in events if e.kind is EventKind.STDERR]
    assert lines == expected_lines


class CountingApi(WorkerApi):
    """The real worker HTTP client, counting its multiplexed uploads."""

    uploads = 0

    async def upload_all(self, worker_id, body):  # type: ignore[no-untyped-def]
        self.uploads += 1
        return await super().upload_all(worker_id, body)


def _line(i: int) -> EventIn:
    return EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": f"line {i}"})


async def test_the_tasks_of_a_worker_share_one_request_with_their_ends(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        tasks = [await client.create_task(f"multiplexed {n}") for n in range(3)]
    api = CountingApi(server.url, server.token)
    worker = await api.connect(WorkerHello(name="mux-test", workdir_roots=["/"]))
    claims = [await api.claim(worker.id, 5.0) for _ in tasks]
    stream = UploadStream(api, worker.id)
    uploaders = []
    for claim in claims:
        assert claim is not None
        uploader = stream.open(claim.task.id, claim.lease_id)
        for i in range(100):
            uploader.add(_line(i))
        uploaders.append(uploader)
    end = TurnEnd(status=TaskStatus.COMPLETED, event_count=100, exit_code=0)
    results = await asyncio.gather(*(u.close(end) for u in uploaders))
    await stream.aclose()
    await api.aclose()
    assert api.uploads == 1, "three tasks' events and ends travel in one request"
    assert all(r is not None and r.finished is TaskStatus.COMPLETED for r in results)
    async with server.client() as client:
        for task in tasks:
            assert (await client.get_task(task.id)).status is TaskStatus.COMPLETED
            async with bounded(60, f"the stream of finished task {task.id} to end"):
                events = [e async for e in client.stream_events(task.id)]
            lines = [e.data["line"] for e in events if e.kind is EventKind.STDERR]
            assert lines == [f"line {i}" for i in range(100)]
            assert events[-1].status is TaskStatus.COMPLETED


async def test_a_refused_part_leaves_the_others_stored(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        for name in ("kept", "fenced"):
            await client.create_task(name)
    api = CountingApi(server.url, server.token)
    worker = await api.connect(WorkerHello(name="part-test", workdir_roots=["/"]))
    first = await api.claim(worker.id, 5.0)
    second = await api.claim(worker.id, 5.0)
    assert first is not None and second is not None
    stream = UploadStream(api, worker.id)
    lost: list[str] = []
    kept = stream.open(first.task.id, first.lease_id)
    fenced = stream.open(second.task.id, "a-stale-lease", on_lease_lost=lambda: lost.append("x"))
    for i in range(10):
        kept.add(_line(i))
        fenced.add(_line(i))
    end = TurnEnd(status=TaskStatus.COMPLETED, event_count=10)
    outcome = await asyncio.gather(kept.close(end), fenced.close(end), return_exceptions=True)
    await stream.aclose()
    await api.aclose()
    assert api.uploads == 1
    assert isinstance(outcome[1], LeaseLostError) and lost == ["x"]
    assert outcome[0].finished is TaskStatus.COMPLETED  # type: ignore[union-attr]
    async with server.client() as client:
        fenced_task = await client.get_task(second.task.id)
        assert fenced_task.status is TaskStatus.RUNNING and fenced_task.last_seq == 2


async def test_a_backlog_past_the_memory_bound_spools_to_disk_and_arrives_in_order(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task = await client.create_task("spooled")
    direct = WorkerApi(server.url, server.token)
    worker, claim = await claim_next(direct, "spool-test")
    async with CuttingProxy(server.url, seed=3, low=10**9, high=10**9, drop_first=2) as proxy:
        flaky = WorkerApi(proxy.url, server.token)
        stream = UploadStream(flaky, worker.id, memory_bytes=4_000, spool_dir=tmp_path)
        uploader = stream.open(task.id, claim.lease_id)
        for i in range(2_000):
            uploader.add(_line(i))
        assert uploader.spooled > 1_900, "past 4 kB the events wait on disk"
        assert uploader.unsent == 2_000
        end = TurnEnd(status=TaskStatus.COMPLETED, event_count=2_000)
        result = await uploader.close(end)
        await stream.aclose()
        await flaky.aclose()
    await direct.aclose()
    assert result is not None and result.finished is TaskStatus.COMPLETED
    assert uploader.spooled == 0
    async with server.client() as client:
        async with bounded(60, f"the stream of finished task {task.id} to end"):
            events = [e async for e in client.stream_events(task.id)]
    lines = [e.data["line"] for e in events if e.kind is EventKind.STDERR]
    assert lines == [f"line {i}" for i in range(2_000)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_a_poison_event_is_dropped_with_a_marker_and_holds_back_no_task(
    server_factory: ServerFactory,
) -> None:
    """Issue 17 item 4: an event the server will always refuse (its time is out of range once
    in UTC: a 422 for the whole request) is narrowed down, dropped and replaced by a visible
    ``stderr`` marker; the other events of its task and the other task's events are stored
    and both tasks end; a lone surrogate in an event's data is stored as ``?``."""
    server = server_factory(local_worker=False)
    async with server.client() as client:
        for name in ("poisoned", "neighbour"):
            await client.create_task(name)
    api = CountingApi(server.url, server.token)
    worker = await api.connect(WorkerHello(name="poison-test", workdir_roots=["/"], max_tasks=2))
    first = await api.claim(worker.id, 5.0)
    second = await api.claim(worker.id, 5.0)
    assert first is not None and second is not None
    stream = UploadStream(api, worker.id)
    poisoned = stream.open(first.task.id, first.lease_id)
    neighbour = stream.open(second.task.id, second.lease_id)
    ancient = datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    for i in range(40):
        if i == 23:  # model_construct: the worker's own models would refuse it too
            poisoned.add(EventIn.model_construct(ts=ancient, kind=EventKind.STDERR, data={}))
        elif i == 31:
            poisoned.add(EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": "a\ud800b"}))
        else:
            poisoned.add(_line(i))
        neighbour.add(_line(i))
    ends = [
        TurnEnd(status=TaskStatus.COMPLETED, event_count=u.count) for u in (poisoned, neighbour)
    ]
    results = await asyncio.wait_for(
        asyncio.gather(poisoned.close(ends[0]), neighbour.close(ends[1])), 60
    )
    await stream.aclose()
    await api.aclose()
    assert all(r is not None and r.finished is TaskStatus.COMPLETED for r in results), results
    async with server.client() as client:
        events = await client.get_events(first.task.id)
        lines = [e.data["line"] for e in events if e.kind is EventKind.STDERR]
        assert len(lines) == 40, lines
        assert lines[:23] == [f"line {i}" for i in range(23)]
        assert lines[23].startswith("codex-tui: an event (") and "was dropped" in lines[23]
        assert "422" in lines[23], lines[23]
        assert lines[31] == "a?b"
        assert lines[24:31] + lines[32:] == [f"line {i}" for i in range(24, 40) if i != 31]
        assert events[-1].status is TaskStatus.COMPLETED
        others = await client.get_events(second.task.id)
        assert [e.data["line"] for e in others if e.kind is EventKind.STDERR] == [
            f"line {i}" for i in range(40)
        ]
        assert others[-1].status is TaskStatus.COMPLETED


class _PoisonProxy:
    """An HTTP proxy in front of the real server that answers 500 to every worker upload
    carrying ``task_id`` while ``poisoned`` is set (as a part the server cannot store would);
    every other request goes through unchanged."""

    def __init__(self, upstream: str, task_id: str) -> None:
        self.upstream = upstream
        self.task_id = task_id.encode()
        self.poisoned = True
        self.refused = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def _app(self, request: Request) -> Response:
        body = await request.body()
        if self.poisoned and request.url.path.endswith("/events") and self.task_id in body:
            self.refused += 1
            return Response(
                b'{"type":"about:blank","title":"Internal Server Error","status":500}',
                status_code=500,
                media_type="application/problem+json",
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as client:
            answer = await client.request(
                request.method,
                request.url.path,
                params=request.url.query,
                content=body,
                headers=headers,
            )
        drop = {"content-length", "transfer-encoding", "connection", "content-encoding"}
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in drop}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    async def __aenter__(self) -> _PoisonProxy:
        app = Starlette(routes=[Route("/{path:path}", self._app, methods=["GET", "POST"])])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        await wait_until_async(lambda: self._server is not None and self._server.started, 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


async def test_a_task_whose_part_gets_5xx_holds_back_no_other_and_loses_nothing(
    server_factory: ServerFactory,
) -> None:
    """Issue 17 item 4: a request of several tasks answered 5xx is split, each task backs off
    on its own, so the other task's events and end go through while one part keeps failing;
    once the server takes it, the failing task's events arrive too, each once."""
    server = server_factory(local_worker=False)
    async with server.client() as client:
        for name in ("failing", "healthy"):
            await client.create_task(name)
    direct = WorkerApi(server.url, server.token)
    worker = await direct.connect(WorkerHello(name="5xx-test", workdir_roots=["/"], max_tasks=2))
    first = await direct.claim(worker.id, 5.0)
    second = await direct.claim(worker.id, 5.0)
    await direct.aclose()
    assert first is not None and second is not None
    async with _PoisonProxy(server.url, first.task.id) as proxy:
        api = WorkerApi(proxy.url, server.token)
        stream = UploadStream(api, worker.id)
        failing = stream.open(first.task.id, first.lease_id)
        healthy = stream.open(second.task.id, second.lease_id)
        for i in range(30):
            failing.add(_line(i))
            healthy.add(_line(i))
        end = TurnEnd(status=TaskStatus.COMPLETED, event_count=30)
        stuck = asyncio.ensure_future(failing.close(end))
        done = await asyncio.wait_for(healthy.close(end), 20)
        assert done is not None and done.finished is TaskStatus.COMPLETED
        assert not stuck.done() and proxy.refused >= 1
        proxy.poisoned = False
        result = await asyncio.wait_for(stuck, 20)
        assert result is not None and result.finished is TaskStatus.COMPLETED
        await stream.aclose()
        await api.aclose()
    async with server.client() as client:
        for task_id in (first.task.id, second.task.id):
            events = await client.get_events(task_id)
            lines = [e.data["line"] for e in events if e.kind is EventKind.STDERR]
            assert lines == [f"line {i}" for i in range(30)]
            assert events[-1].status is TaskStatus.COMPLETED
