"""Restarts, leases and fencing with paired worker processes (issue 3; docs/reliability.md R1–R3,
R5, R6): a server killed mid-task loses no event; a worker killed, paused past its lease or revoked
loses its task as ``lost`` (never re-run), cannot write to it any more, and leaves no codex."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from server_client.client import CodexTuiClient
from server_client.models import Event, EventKind, TaskStatus, utcnow
from tests.conftest import ServerFactory, wait_until, wait_until_async
from tests.support.worker_procs import WorkerPool, task_processes

#: A short lease so lost tasks are found quickly: TTL 4 s, a sweep every 0.5 s.
SHORT_LEASE = ("--lease-ttl", "4", "--sweep-interval", "0.5")
LEASE_TTL_S = 4.0
SWEEP_S = 0.5


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    """Paired worker processes of this test (killed at the end, with their codex)."""
    with WorkerPool(tmp_path) as pool:
        yield pool


def _statuses(events: list[Event]) -> list[TaskStatus | None]:
    return [e.status for e in events if e.kind is EventKind.STATUS]


async def _until_event(
    client: CodexTuiClient,
    task_id: str,
    predicate: Callable[[Event], bool],
    timeout_s: float = 30.0,
) -> list[Event]:
    """Stream the task's events until one matches ``predicate`` (or the stream ends)."""
    seen: list[Event] = []

    async def follow() -> None:
        async for event in client.stream_events(task_id):
            seen.append(event)
            if predicate(event):
                return

    await asyncio.wait_for(follow(), timeout_s)
    return seen


async def _running(client: CodexTuiClient, task_id: str) -> list[Event]:
    """Wait until codex printed its first item for the task (it is really running)."""
    return await _until_event(
        client, task_id, lambda e: e.codex_type in ("item.started", "item.completed")
    )


async def test_server_kill_9_mid_task_loses_no_event_and_the_task_ends_completed(
    server_factory: ServerFactory, workers: WorkerPool
) -> None:
    server = server_factory(local_worker=False)
    count = 80
    remote = workers.start(
        server,
        "survivor",
        fake_mode="slow-burst",
        extra_env={"FAKE_CODEX_EVENTS": str(count), "FAKE_CODEX_INTERVAL": "0.1"},
    )
    async with server.client() as client:
        task = await client.create_task("burst slowly", worker="survivor")
        events: list[Event] = []
        some = asyncio.Event()

        async def follow() -> None:
            async for event in client.stream_events(task.id):
                events.append(event)
                if event.codex_type == "item.completed" and event.data["item"]["id"] == "item_4":
                    some.set()

        async def follow_many() -> None:  # the stream of many tasks resumes the same way
            async for event in client.follow_tasks({task.id: 0}):
                many.append(event)

        many: list[Event] = []
        follower = asyncio.create_task(follow())
        many_follower = asyncio.create_task(follow_many())
        await asyncio.wait_for(some.wait(), 30)
        server.proc.kill()
        server.proc.wait(10)
        killed_at = utcnow()
        # Codex goes on; the worker buffers its events and keeps retrying their upload.
        await wait_until_async(
            lambda: remote.log().count(f"upload for task {task.id} failed") >= 2,
            20,
            "the worker to retry uploads while the server is down",
        )
        assert remote.alive() and task_processes(task.id), remote.describe()
        await asyncio.to_thread(server_factory, local_worker=False, reuse=server)
        back_at = utcnow()
        await asyncio.wait_for(follower, 90)
        await asyncio.wait_for(many_follower, 30)
        final = await client.get_task(task.id)

    assert [e.seq for e in events] == list(range(1, len(events) + 1)), remote.describe()
    assert [(e.task_id, e.seq, e.data) for e in many] == [(task.id, e.seq, e.data) for e in events]
    items = [e.data["item"]["id"] for e in events if e.codex_type == "item.completed"]
    assert items == [f"item_{n}" for n in range(count)]
    assert [e.codex_type for e in events if e.codex_type == "thread.started"] == ["thread.started"]
    while_down = [e for e in events if e.kind is EventKind.CODEX and killed_at < e.ts < back_at]
    assert while_down, "no event was produced while the server was down"
    assert _statuses(events) == [TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.COMPLETED]
    assert final.status is TaskStatus.COMPLETED and final.exit_code == 0
    assert final.last_seq == events[-1].seq


async def _lost_event(client: CodexTuiClient, task_id: str, timeout_s: float) -> list[Event]:
    events = await _until_event(client, task_id, lambda e: e.is_terminal, timeout_s)
    assert events[-1].status is TaskStatus.LOST, events[-3:]
    return events


async def test_worker_kill_9_ends_its_task_lost_within_the_lease_and_it_is_never_rerun(
    server_factory: ServerFactory, workers: WorkerPool
) -> None:
    server = server_factory(local_worker=False, server_args=SHORT_LEASE)
    victim = workers.start(server, "victim", fake_mode="sleep")
    async with server.client() as client:
        task = await client.create_task("sleep a long time")  # not routed: anyone may take it
        await _running(client, task.id)
        assert (await client.get_task(task.id)).worker_name == "victim"
        spare = workers.start(server, "spare", fake_mode="ok")  # idle, polling for work
        assert task_processes(task.id), "codex runs"
        victim.kill()
        killed_at = utcnow()

        def codex_alive() -> list[psutil.Process]:
            alive = []
            for proc in task_processes(task.id):
                try:
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        alive.append(proc)
                except psutil.Error:
                    continue
            return alive

        # codex dies with its worker (PR_SET_PDEATHSIG), it does not go on editing files.
        await wait_until_async(lambda: not codex_alive(), 5, "codex to die with its worker")
        events = await _lost_event(client, task.id, LEASE_TTL_S + SWEEP_S + 10)
        lost = events[-1]
        assert lost.ts - killed_at < timedelta(seconds=LEASE_TTL_S + SWEEP_S + 2.0)
        assert "victim stopped responding" in lost.data["reason"]

        # The spare worker keeps polling and takes new work, but never the lost task.
        other = await client.create_task("something else")
        done = await _until_event(client, other.id, lambda e: e.is_terminal)
        assert done[-1].status is TaskStatus.COMPLETED, spare.describe()
        assert (await client.get_task(other.id)).worker_name == "spare"
        again = await client.get_events(task.id)
        final = await client.get_task(task.id)
    assert again == events  # nothing after the terminal event
    assert _statuses(again).count(TaskStatus.RUNNING) == 1
    assert final.status is TaskStatus.LOST and final.worker_name == "victim"
    assert spare.log().count("claimed") == 1, spare.describe()


async def test_a_worker_killed_mid_heartbeat_loses_its_task_one_ttl_after_that_poll_began(
    server_factory: ServerFactory, workers: WorkerPool
) -> None:
    """Issue 17 item 5: the signals long poll counts as heard from when it arrives, so a worker
    killed in the middle of one ends ``lost`` within TTL + sweep of the kill, not a whole poll
    (``heartbeat_s``, a third of the TTL) later; the reason states the server's real TTL."""
    ttl_s, sweep_s = 12.0, 0.5  # heartbeat_s = ttl/3 = 4 s: a late touch would show plainly
    server = server_factory(
        local_worker=False, server_args=("--lease-ttl", f"{ttl_s:g}", "--sweep-interval", "0.5")
    )
    # One slot: with its task running, the worker's only requests are its signals polls.
    victim = workers.start(server, "victim", fake_mode="sleep", max_tasks=1)
    async with server.client() as client:
        task = await client.create_task("sleep a long time", worker="victim")
        await _running(client, task.id)

        async def last_seen() -> datetime:
            listed = await client.list_workers()
            return next(w.last_seen_at for w in listed if w.name == "victim")

        # Kill the worker just after a signals poll arrived (its last_seen_at moved), once the
        # polls follow each other every heartbeat_s (the poll left open by the task's start,
        # which the worker gave up for a new one, has ended): that poll is then open for about
        # heartbeat_s more.
        heartbeat_s = ttl_s / 3
        seen = await last_seen()
        changes: list[datetime] = []
        deadline = asyncio.get_running_loop().time() + 3 * ttl_s
        while len(changes) < 2 or changes[-1] - changes[-2] < timedelta(seconds=heartbeat_s / 2):
            assert asyncio.get_running_loop().time() < deadline, f"no steady heartbeats {changes}"
            if (now_seen := await last_seen()) != seen:
                changes.append(seen := now_seen)
        victim.kill()
        killed_at = utcnow()
        events = await _lost_event(client, task.id, ttl_s + sweep_s + 20)
    lost = events[-1]
    # Not before one TTL of silence, and within TTL + sweep (+ a margin for a loaded machine)
    # of the kill: a poll that refreshed the worker when it ended would add ~4 s.
    assert lost.ts - seen >= timedelta(seconds=ttl_s), (seen, lost.ts)
    assert lost.ts - killed_at < timedelta(seconds=ttl_s + sweep_s + 1.5), (
        killed_at,
        lost.ts,
        victim.describe(),
    )
    assert f"(no heartbeat for {ttl_s:g} s)" in lost.data["reason"], lost.data


async def test_a_worker_restarted_right_after_kill_9_does_not_leave_its_task_running(
    server_factory: ServerFactory, workers: WorkerPool
) -> None:
    """The killed worker comes back (say, under systemd) before its lease expires: its old task
    cannot go on (its codex lost its supervisor), so it ends ``lost`` rather than hanging in
    ``running`` forever behind a worker that heartbeats again."""
    server = server_factory(local_worker=False)  # the default 30 s lease
    phoenix = workers.start(server, "phoenix", fake_mode="sleep")
    async with server.client() as client:
        task = await client.create_task("sleep", worker="phoenix")
        await _running(client, task.id)
        phoenix.kill()
        phoenix.restart_plain()
        events = await _lost_event(client, task.id, 10)
    assert _statuses(events).count(TaskStatus.RUNNING) == 1
    assert "phoenix" in events[-1].data["reason"]


async def test_a_paused_worker_loses_its_lease_cannot_write_stops_codex_and_works_on(
    server_factory: ServerFactory, workers: WorkerPool
) -> None:
    server = server_factory(local_worker=False, server_args=SHORT_LEASE)
    sleepy = workers.start(
        server,
        "sleepy",
        fake_mode="slow-burst",
        extra_env={"FAKE_CODEX_EVENTS": "100000", "FAKE_CODEX_INTERVAL": "0.2"},
    )
    async with server.client() as client:
        task = await client.create_task("talk forever", worker="sleepy")
        await _running(client, task.id)
        sleepy.pause()
        paused_at = utcnow()
        events = await _lost_event(client, task.id, LEASE_TTL_S + SWEEP_S + 15)
        assert events[-1].ts - paused_at < timedelta(seconds=LEASE_TTL_S + SWEEP_S + 2.0)
        assert task_processes(task.id), "codex runs on while its worker is paused"
        sleepy.resume()

        # Fenced: its buffered events are refused (409) and codex is stopped.
        await wait_until_async(
            lambda: "does not hold the task's lease" in sleepy.log(),
            15,
            "the worker to be refused",
        )
        await wait_until_async(lambda: not task_processes(task.id), 10, "codex to stop")
        assert await client.get_events(task.id, after=events[-1].seq) == []
        assert (await client.get_task(task.id)).status is TaskStatus.LOST

        # The worker itself runs on, online again, and takes new tasks.
        assert sleepy.alive(), sleepy.describe()
        await wait_until_async(
            lambda: (record := sleepy.record()) is not None and record.online, 15, "online again"
        )
        fresh = await client.create_task("another", worker="sleepy")
        await _running(client, fresh.id)
        await client.cancel_task(fresh.id)
        ended = await _until_event(client, fresh.id, lambda e: e.is_terminal, 15)
    assert ended[-1].status is TaskStatus.CANCELED, sleepy.describe()


async def test_a_revoked_worker_loses_its_task_exits_and_its_token_fails(
    server_factory: ServerFactory, workers: WorkerPool
) -> None:
    server = server_factory(local_worker=False)
    doomed = workers.start(server, "doomed", fake_mode="sleep")
    token = doomed.token
    async with server.client() as client:
        task = await client.create_task("sleep", worker="doomed")
        await _running(client, task.id)
        await client.revoke_worker(doomed.worker_id)
        events = await _lost_event(client, task.id, 10)
        assert events[-1].data["reason"] == "its worker was revoked"
        assert [w.name for w in await client.list_workers()] == []
    code = await asyncio.to_thread(doomed.wait, 20)
    assert code != 0 and "pair it again" in doomed.log(), doomed.describe()
    wait_until(lambda: not task_processes(task.id), 10, "codex to stop")
    async with httpx.AsyncClient(base_url=server.url) as http:
        refused = await http.post(
            "/api/workers/connect",
            json={"name": "doomed"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert refused.status_code == 401
    async with server.client() as client:
        final = await client.get_task(task.id)
    assert final.status is TaskStatus.LOST and final.finished_at is not None
