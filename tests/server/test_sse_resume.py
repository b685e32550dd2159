"""SSE resume (docs/reliability.md E1–E3): a client whose connection is cut at random byte offsets,
during replay and during live streaming, still receives every seq exactly once, in order."""

from __future__ import annotations

import asyncio
import random

import httpx

from server_client.client import CodexTuiClient
from server_client.models import (
    EventBatch,
    EventIn,
    EventKind,
    utcnow,
)
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory
from tests.fakes.netproxy import CuttingProxy
from tests.support.protocol import claim_next, finish_completed
from tests.support.waits import bounded, while_running, within


async def _act_as_worker(
    server: LiveServer, task_id: str, total: int, started: asyncio.Event
) -> None:
    """Claim the task and upload ``total`` events in small batches, then finish it."""
    api = WorkerApi(server.url, server.token)
    try:
        worker, claim = await claim_next(api, "resume-test")
        assert claim.task.id == task_id
        index = 0
        while index < total:
            size = min(random.randint(1, 40), total - index)
            events = [
                EventIn(
                    ts=utcnow(),
                    kind=EventKind.CODEX,
                    data={
                        "type": "item.completed",
                        "item": {
                            "id": f"item_{index + i}",
                            "type": "agent_message",
                            "text": "x" * random.randint(0, 300),
                        },
                    },
                )
                for i in range(size)
            ]
            batch = EventBatch(lease_id=claim.lease_id, first_index=index, events=events)
            body = batch.model_dump_json().encode()
            result = await api.upload(worker.id, task_id, body)
            assert result.next_index == index + size
            index += size
            if index >= total // 3:
                started.set()
            await asyncio.sleep(0)
        await finish_completed(api, worker, claim, total)
    finally:
        await api.aclose()


async def test_resume_after_random_cuts_yields_every_seq_once(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    total = 600
    async with server.client() as client:
        task = await client.create_task("resume me")
    started = asyncio.Event()
    producer = asyncio.create_task(_act_as_worker(server, task.id, total, started))
    await while_running(started.wait(), producer, 60, "the worker to upload a third")
    async with CuttingProxy(server.url, seed=7) as proxy:
        async with CodexTuiClient(proxy.url, server.token) as flaky:

            async def follow() -> list[int]:
                return [e.seq async for e in flaky.stream_events(task.id)]

            seqs = await while_running(follow(), producer, 120, "the cut stream to end")
    await within(producer, 30, "the worker to finish the task")
    # queued + running + `total` codex events + completed
    assert seqs == list(range(1, total + 4))
    assert proxy.cuts > 20, "the proxy should have cut the stream many times"


async def test_last_event_id_and_after_resume_from_the_store(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task = await client.create_task("short")
        started = asyncio.Event()
        await _act_as_worker(server, task.id, 10, started)
        async with bounded(60, f"the stream of finished task {task.id} to end"):
            everything = [e.seq async for e in client.stream_events(task.id)]
        assert everything == list(range(1, 14))
        async with bounded(60, f"the stream of finished task {task.id} after seq 9 to end"):
            tail = [e.seq async for e in client.stream_events(task.id, after=9)]
        assert tail == [10, 11, 12, 13]
        page = await client.get_events(task.id, after=3, limit=4)
        assert [e.seq for e in page] == [4, 5, 6, 7]
    headers = {"Authorization": f"Bearer {server.token}", "Last-Event-ID": "11"}
    async with httpx.AsyncClient() as http:
        async with http.stream(
            "GET", f"{server.url}/api/tasks/{task.id}/events", headers=headers
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-accel-buffering"] == "no"
            text = (await r.aread()).decode()
    ids = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("id:")]
    assert ids == ["12", "13"]


async def test_a_stream_resumed_past_the_end_of_a_finished_task_closes_at_once(
    live_server: LiveServer,
) -> None:
    async with live_server.client() as client:
        task = await client.create_task("hi", workdir=str(live_server.workdir))
        async with bounded(60, f"task {task.id}'s stream to end on the local worker"):
            events = [e async for e in client.stream_events(task.id)]
    last = events[-1].seq
    headers = {"Authorization": f"Bearer {live_server.token}", "Last-Event-ID": str(last)}
    url = f"{live_server.url}/api/tasks/{task.id}/events"
    async with httpx.AsyncClient(timeout=10) as http:
        # The whole answer must come back well within the read timeout: the stream ends.
        response = await http.get(url, headers=headers)
        assert response.status_code == 200
        assert "data:" not in response.text
        headers["Last-Event-ID"] = str(last - 1)
        response = await http.get(url, headers=headers)
    assert response.text.count("data:") == 1 and f"id: {last}" in response.text


async def test_one_sdk_client_holds_more_event_streams_than_httpx_pools_by_default(
    server_factory: ServerFactory,
) -> None:
    """Each stream holds a connection; httpx's default pool (100) would stall the 101st."""
    server = server_factory(local_worker=False)
    streams = 120
    async with server.client() as client:
        tasks = [await client.create_task(f"queued {n}") for n in range(streams)]
        queued = asyncio.Event()
        seen: list[int] = []

        async def first_event(task_id: str) -> None:
            async for event in client.stream_events(task_id, max_attempts=1):
                seen.append(event.seq)
                if len(seen) == streams:
                    queued.set()
                await queued.wait()  # every stream stays open until all have an event
                return

        async with asyncio.timeout(60):
            await asyncio.gather(*(first_event(task.id) for task in tasks))
    assert seen == [1] * streams
