"""The worker's uploader against a real server: batches, and retries that lose nothing and
duplicate nothing when responses are lost after the server stored the batch (R4); uploads
share one kept-alive connection."""

from __future__ import annotations

import asyncio

import pytest

from server_client.client import ApiError
from server_client.models import (
    EventBatch,
    EventIn,
    EventKind,
    utcnow,
)
from server_client.worker.api import WorkerApi
from server_client.worker.uploader import EventUploader, LeaseLostError
from tests.conftest import ServerFactory, wait_until_async
from tests.fakes.netproxy import CuttingProxy
from tests.support.protocol import claim_next, finish_completed


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
        uploader = EventUploader(flaky, worker.id, task.id, claim.lease_id, interval_s=0.01)
        uploader.start()
        for i in range(250):
            uploader.add(EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": f"line {i}"}))
        await uploader.close()
        await flaky.aclose()
    assert proxy.connections > 3, "the first responses were dropped, so it must have retried"
    await finish_completed(direct, worker, claim, 250)
    await direct.aclose()
    async with server.client() as client:
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
    uploader = EventUploader(api, worker.id, task.id, "not-the-lease", interval_s=0.01)
    uploader.start()
    uploader.add(EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": "x"}))
    with pytest.raises(LeaseLostError):
        await uploader.close()
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
        uploader = EventUploader(flaky, worker.id, task.id, claim.lease_id)
        uploader.start()

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
        await flaky.aclose()
    assert proxy.connections > 3, "the first responses were dropped, so it must have retried"
    count = uploader.count
    await finish_completed(direct, worker, claim, count)
    await direct.aclose()
    async with server.client() as client:
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
