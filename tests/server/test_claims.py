"""Claims and routing (issue 3, docs/reliability.md R7, R8): many workers of two owners race for
hundreds of tasks and each task is claimed exactly once, by a worker of its owner; a task routed
by worker name or labels goes only to a matching worker, and waits queued until one connects."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from server_client.client import ApiError, CodexTuiClient, redeem_pairing_code
from server_client.models import Claim, FinishRequest, TaskStatus, Worker, WorkerHello
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory
from tests.support.waits import bounded
from tests.support.worker_procs import WorkerPool, add_user

TASKS_PER_OWNER = 150
WORKERS_PER_OWNER = 8


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server without a local worker."""
    return server_factory(local_worker=False)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    """Paired worker processes of this test (killed at the end)."""
    with WorkerPool(tmp_path) as pool:
        yield pool


@asynccontextmanager
async def paired_workers(
    server: LiveServer, token: str, hellos: list[WorkerHello]
) -> AsyncIterator[list[tuple[WorkerApi, Worker]]]:
    """In-process workers of the token's user, each paired with its own code and connected
    with its worker token (the server is the real process)."""
    async with CodexTuiClient(server.url, token) as client:
        codes = [await client.create_pairing_code() for _ in hellos]
    results = await asyncio.gather(
        *(
            redeem_pairing_code(server.url, code.code, name=hello.name)
            for code, hello in zip(codes, hellos, strict=True)
        )
    )
    apis = [WorkerApi(server.url, result.token) for result in results]
    try:
        connected = await asyncio.gather(
            *(api.connect(hello) for api, hello in zip(apis, hellos, strict=True))
        )
        yield list(zip(apis, connected, strict=True))
    finally:
        for api in apis:
            await api.aclose()


async def _finish(api: WorkerApi, worker: Worker, claim: Claim) -> None:
    body = FinishRequest(lease_id=claim.lease_id, status=TaskStatus.COMPLETED, event_count=0)
    done = await api.finish(worker.id, claim.task.id, body)
    assert done.status is TaskStatus.COMPLETED


async def test_many_workers_of_two_owners_claim_each_task_exactly_once(
    server: LiveServer,
) -> None:
    tokens = {"alice": server.token, "bob": await add_user(server, "bob")}
    async with (
        paired_workers(
            server,
            tokens["alice"],
            [WorkerHello(name=f"alice-{i}", max_tasks=1000) for i in range(WORKERS_PER_OWNER)],
        ) as alice_workers,
        paired_workers(
            server,
            tokens["bob"],
            [WorkerHello(name=f"bob-{i}", max_tasks=1000) for i in range(WORKERS_PER_OWNER)],
        ) as bob_workers,
    ):
        fleet = {"alice": alice_workers, "bob": bob_workers}
        claims: list[tuple[str, Worker, Claim]] = []
        counts: Counter[str] = Counter()
        enough = {owner: asyncio.Event() for owner in tokens}

        async def work(owner: str, api: WorkerApi, worker: Worker) -> None:
            while not enough[owner].is_set():
                claim = await api.claim(worker.id, 0.5)
                if claim is None:
                    continue
                claims.append((owner, worker, claim))
                await asyncio.sleep(random.uniform(0, 0.01))  # hold it a moment, like a run
                await _finish(api, worker, claim)
                counts[owner] += 1
                if counts[owner] >= TASKS_PER_OWNER:
                    enough[owner].set()

        pollers = [
            asyncio.create_task(work(owner, api, worker))
            for owner, pairs in fleet.items()
            for api, worker in pairs
        ]
        created: dict[str, set[str]] = {}
        try:
            # Submit while every worker is already long-polling: each submit wakes them all.
            for owner, token in tokens.items():
                async with CodexTuiClient(server.url, token) as client:
                    tasks = await asyncio.gather(
                        *(client.create_task(f"{owner} #{n}") for n in range(TASKS_PER_OWNER))
                    )
                created[owner] = {task.id for task in tasks}
            await asyncio.wait_for(asyncio.gather(*pollers), 90)
        finally:
            for poller in pollers:
                poller.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)

        # Nothing is left for anyone: every worker's next claim is empty.
        leftovers = await asyncio.gather(
            *(api.claim(worker.id, 0) for pairs in fleet.values() for api, worker in pairs)
        )
        assert leftovers == [None] * (2 * WORKERS_PER_OWNER)

    claimed_ids = [claim.task.id for _, _, claim in claims]
    assert len(claimed_ids) == len(set(claimed_ids)) == 2 * TASKS_PER_OWNER
    for owner in tokens:
        mine = {claim.task.id for o, _, claim in claims if o == owner}
        assert mine == created[owner], f"{owner}'s workers claimed another owner's task"
        claimers = {worker.id for o, worker, _ in claims if o == owner}
        assert len(claimers) > 1, "no race: one worker took everything"
    by_id = {claim.task.id: worker for _, worker, claim in claims}
    for owner, token in tokens.items():
        async with CodexTuiClient(server.url, token) as client:
            page = await client.list_tasks(limit=200)
            assert {t.id for t in page.items} == created[owner]
            for task in page.items:
                assert task.status is TaskStatus.COMPLETED
                assert task.worker_id == by_id[task.id].id
            logs = await asyncio.gather(*(client.get_events(t) for t in sorted(created[owner])))
        for events in logs:
            assert [e.status for e in events] == [
                TaskStatus.QUEUED,
                TaskStatus.RUNNING,
                TaskStatus.COMPLETED,
            ]


async def _claim_all(api: WorkerApi, worker: Worker) -> list[str]:
    """Claim (and finish) until the worker gets nothing; the ids it got."""
    got = []
    while (claim := await api.claim(worker.id, 0.3)) is not None:
        got.append(claim.task.id)
        await _finish(api, worker, claim)
    return got


async def test_routed_tasks_go_only_to_the_named_worker_or_one_with_all_labels(
    server: LiveServer,
) -> None:
    hellos = [
        WorkerHello(name="a", labels=["gpu"]),
        WorkerHello(name="b", labels=["gpu", "os:linux"]),
        WorkerHello(name="c"),
    ]
    async with (
        paired_workers(server, server.token, hellos) as pairs,
        server.client() as client,
    ):
        (a_api, a), (b_api, b), (c_api, c) = pairs
        to_a = await client.create_task("only a", worker="a")
        both_labels = await client.create_task("gpu linux", labels=["gpu", "os:linux"])
        gpu = await client.create_task("any gpu", labels=["gpu"])
        c_but_gpu = await client.create_task("c lacks gpu", worker="c", labels=["gpu"])
        anyone = await client.create_task("anyone")
        with pytest.raises(ApiError) as unknown:
            await client.create_task("nobody", worker="nobody")
        assert unknown.value.status == 400

        # The workers that must not take a task try first.
        assert await _claim_all(c_api, c) == [anyone.id]
        assert await _claim_all(b_api, b) == [both_labels.id, gpu.id]
        assert await _claim_all(a_api, a) == [to_a.id]
        assert [await _claim_all(api, w) for api, w in pairs] == [[], [], []]
        tasks = {t.id: t for t in (await client.list_tasks()).items}
    assert tasks[c_but_gpu.id].status is TaskStatus.QUEUED
    assert tasks[to_a.id].worker_name == "a" and tasks[to_a.id].target_worker == "a"
    assert tasks[both_labels.id].labels == ["gpu", "os:linux"]


async def test_a_routed_task_waits_queued_until_a_matching_worker_connects(
    server: LiveServer, workers: WorkerPool, tmp_path: Path
) -> None:
    plain = workers.start(server, "plain")
    gpu_root = tmp_path / "worker-gpu-1" / "work"
    gpu_root.mkdir(parents=True)
    submitted = server.cli("submit", "--label", "gpu", "--workdir", str(gpu_root), "needs a gpu")
    assert submitted.returncode == 0, submitted.stderr
    by_label = submitted.stdout.strip()
    async with (
        paired_workers(server, server.token, [WorkerHello(name="late")]) as [(late_api, late)],
        server.client() as client,
    ):
        by_name = await client.create_task("for late", worker="late")
        # The worker that exists but runs nowhere yet ("late") is the only one it may go to.
        await late_api.aclose()
        async with paired_workers(server, server.token, [WorkerHello(name="other")]) as others:
            (other_api, other) = others[0]
            assert await other_api.claim(other.id, 1.0) is None
        for task_id in (by_label, by_name.id):
            task = await client.get_task(task_id)
            assert task.status is TaskStatus.QUEUED, plain.describe()

        gpu = workers.start(server, "gpu-1", labels=("gpu",))
        connected = gpu.wait_connected()
        async with bounded(60, f"task {by_label}'s stream to end on worker gpu-1"):
            done = [e async for e in client.stream_events(by_label)]
        assert done[-1].status is TaskStatus.COMPLETED, gpu.describe()
        task = await client.get_task(by_label)
        assert task.worker_name == "gpu-1" and task.started_at is not None
        assert task.started_at - connected.connected_at < timedelta(seconds=5)

        late_proc = workers.start(server, "late")  # pairs again: the same worker, a new token
        assert late_proc.wait_connected().id == late.id
        async with bounded(60, f"task {by_name.id}'s stream to end on worker late"):
            done = [e async for e in client.stream_events(by_name.id)]
        assert done[-1].status is TaskStatus.COMPLETED, late_proc.describe()
        task = await client.get_task(by_name.id)
        assert task.worker_id == late.id and task.started_at is not None
        assert task.started_at - late_proc.wait_connected().connected_at < timedelta(seconds=5)
    assert "claimed" not in plain.log()


async def test_a_worker_claims_only_tasks_whose_folder_lies_inside_its_roots(
    server: LiveServer, tmp_path: Path
) -> None:
    """A workdir names a folder on some machine: an unrouted task goes to a worker whose
    workdir roots hold it (or hold its local repository), never to one that would fail it."""
    roots = {name: tmp_path / name for name in ("here", "there")}
    for root in roots.values():
        (root / "app").mkdir(parents=True)
    hellos = [
        WorkerHello(name="here", workdir_roots=[str(roots["here"])]),
        WorkerHello(name="there", workdir_roots=[str(roots["there"])]),
    ]
    async with (
        paired_workers(server, server.token, hellos) as pairs,
        server.client() as client,
    ):
        (here_api, here), (there_api, there) = pairs
        in_there = await client.create_task("there", workdir=str(roots["there"] / "app"))
        repo_there = await client.create_task("repo", repo=str(roots["there"] / "app"))
        in_here = await client.create_task("here", workdir=str(roots["here"] / "app"))
        anywhere = await client.create_task("anywhere")
        # "here" asks first: it must pass over the two tasks it could not run.
        assert await _claim_all(here_api, here) == [in_here.id, anywhere.id]
        assert await _claim_all(there_api, there) == [in_there.id, repo_there.id]
