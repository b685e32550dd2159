"""One stream for many tasks (issue 14, docs/reliability.md E1–E3 on the new transport): a
client following several tasks through ``GET /api/events`` whose connection is cut at random
byte offsets, during replay and live, still receives every task's every seq exactly once and
in order, while one worker streams all of them through its one upload stream; the stream ends
once every task ended; bad positions and other owners' tasks are refused."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import httpx
import pytest

from server_client.client import ApiError, CodexTuiClient
from server_client.models import Event, EventIn, EventKind, TaskStatus, TurnEnd, utcnow
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory
from tests.fakes.netproxy import CuttingProxy
from tests.support.protocol import claim_all
from tests.support.waits import bounded, while_running, within


async def _one_worker_streams_all(
    server: LiveServer, task_ids: list[str], total: int, started: asyncio.Event
) -> None:
    """Claim every task as one worker and stream ``total`` events to each through one upload
    stream, in random bursts interleaved across the tasks; then end them completed."""
    api = WorkerApi(server.url, server.token)
    rng = random.Random(11)
    try:
        stream, uploaders = await claim_all(api, "many-test", len(task_ids))
        assert sorted(uploaders) == sorted(task_ids)
        made = dict.fromkeys(task_ids, 0)
        while any(n < total for n in made.values()):
            task_id = rng.choice([t for t, n in made.items() if n < total])
            for _ in range(min(rng.randint(1, 30), total - made[task_id])):
                text = "x" * rng.randint(0, 300)
                item = {"id": f"item_{made[task_id]}", "type": "agent_message", "text": text}
                uploaders[task_id].add(
                    EventIn(
                        ts=utcnow(),
                        kind=EventKind.CODEX,
                        data={"type": "item.completed", "item": item},
                    )
                )
                made[task_id] += 1
            if sum(made.values()) > total:
                started.set()
            await asyncio.sleep(0.001)
        end = TurnEnd(status=TaskStatus.COMPLETED, event_count=total, exit_code=0)
        await asyncio.gather(*(u.close(end) for u in uploaders.values()))
        await stream.aclose()
    finally:
        await api.aclose()


async def test_one_stream_of_many_tasks_resumes_after_random_cuts_with_each_seq_once(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    total = 300
    async with server.client() as client:
        task_ids = [(await client.create_task(f"many {n}")).id for n in range(3)]
    started = asyncio.Event()
    producer = asyncio.create_task(_one_worker_streams_all(server, task_ids, total, started))
    await while_running(started.wait(), producer, 60, "the worker to upload a third")
    seen: dict[str, list[Event]] = defaultdict(list)
    async with CuttingProxy(server.url, seed=5) as proxy:
        async with CodexTuiClient(proxy.url, server.token) as flaky:

            async def follow() -> None:
                async for event in flaky.follow_tasks(dict.fromkeys(task_ids, 0)):
                    assert event.task_id is not None
                    seen[event.task_id].append(event)

            await while_running(follow(), producer, 120, "the cut stream of the 3 tasks to end")
    await within(producer, 30, "the worker to finish the tasks")
    assert proxy.cuts > 10, "the proxy should have cut the stream many times"
    for task_id in task_ids:
        events = seen[task_id]
        # queued + running + `total` codex events + completed, each once and in order
        assert [e.seq for e in events] == list(range(1, total + 4))
        items = [e.data["item"]["id"] for e in events if e.kind is EventKind.CODEX]
        assert items == [f"item_{n}" for n in range(total)]
        assert events[-1].status is TaskStatus.COMPLETED


async def test_positions_resume_each_task_and_a_finished_one_ends_at_once(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        running, finished = [(await client.create_task(n)).id for n in ("a", "b")]
        await client.cancel_task(finished)  # queued: ends canceled at once (seqs 1, 2)
        async with bounded(60, f"the follow of finished task {finished} past its end to end"):
            assert [e.seq async for e in client.follow_tasks({finished: 2})] == []
        async with bounded(60, f"the follow of finished task {finished} from seq 1 to end"):
            tail = [(e.task_id, e.seq) async for e in client.follow_tasks({finished: 1})]
        assert tail == [(finished, 2)]
        await client.cancel_task(running)
        async with bounded(60, f"the follow of canceled tasks {running} and {finished} to end"):
            both = [
                (e.task_id, e.seq) async for e in client.follow_tasks({running: 0, finished: 1})
            ]
        assert sorted(both) == sorted([(finished, 2), (running, 1), (running, 2)])
        assert [seq for task_id, seq in both if task_id == running] == [1, 2]  # in order


async def test_bad_positions_and_other_owners_tasks_are_refused(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task = await client.create_task("mine")
        with pytest.raises(ApiError) as missing:
            async with bounded(60, "the follow of an unknown task to be refused"):
                async for _ in client.follow_tasks({task.id: 0, "not-a-task": 0}):
                    pass
        assert missing.value.status == 404
    auth = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=auth) as http:
        refusals = {
            f"task={task.id}:x": 422,  # not a position
            "task=:4": 422,
            "task=a%00b": 422,
            "": 422,  # no task at all
            f"task={task.id}&task={task.id}:3": 400,  # named twice
            f"task={task.id}:9999999999": 400,  # past any seq
        }
        for query, status in refusals.items():
            refused = await http.get(f"/api/events?{query}")
            assert refused.status_code == status, query
            assert refused.headers["content-type"].startswith("application/problem+json")
