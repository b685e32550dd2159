"""A worker stops when asked, whatever its server does (issue 17 item 11; docs/reliability.md T3):
SIGTERM with the server killed and never back ends the worker within codex's grace plus a
second or so; the events and the end it could not send wait on disk under its state folder,
and its next start sends them first, each once, before it connects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from server_client.models import EventKind, TaskStatus, utcnow
from tests.conftest import LiveServer, ServerFactory, wait_until_async
from tests.support.waits import bounded
from tests.support.worker_procs import WorkerPool, WorkerProc

#: codex's grace after SIGINT (the worker's default) and the bound on the worker's exit (s).
GRACE_S = 2.0
EXIT_BOUND_S = 5.0


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    """Paired worker processes of this test (killed at the end, with their codex)."""
    with WorkerPool(tmp_path) as pool:
        yield pool


async def _stopped_with_the_server_gone(
    server_factory: ServerFactory, workers: WorkerPool, *server_args: str
) -> tuple[LiveServer, WorkerProc, str, Path, datetime]:
    """A worker runs a task that prints steadily; the server is killed for good and the
    worker, retrying its uploads, gets SIGTERM: it must exit within the bound, code 0, with
    the task's unsent events saved. Returns the server, the worker, the task id, the saved
    file and when the server was killed."""
    server = server_factory(local_worker=False, server_args=server_args)
    worker = workers.start(
        server,
        "stopper",
        fake_mode="slow-burst",
        extra_env={"FAKE_CODEX_EVENTS": "100000", "FAKE_CODEX_INTERVAL": "0.05"},
    )
    async with server.client() as client:
        task = await client.create_task("burst slowly", worker="stopper")
        async with bounded(90, f"task {task.id}'s item_3 to complete"):
            async for event in client.stream_events(task.id):
                if event.codex_type == "item.completed" and event.data["item"]["id"] == "item_3":
                    break
    server.proc.kill()
    server.proc.wait(10)
    killed_at = utcnow()
    await wait_until_async(
        lambda: worker.log().count(f"upload for task {task.id} failed") >= 2,
        20,
        "the worker to retry its uploads while the server is down",
    )
    stopped = time.monotonic()
    code = await asyncio.to_thread(worker.terminate, 30)
    took = time.monotonic() - stopped
    assert took < EXIT_BOUND_S, f"exited {took:.1f} s after SIGTERM\n{worker.describe()}"
    assert code == 0, worker.describe()
    saved = worker.home / "state" / "unsent-uploads" / f"{task.id}.jsonl"
    assert saved.exists(), worker.describe()
    return server, worker, task.id, saved, killed_at


async def test_sigterm_with_the_server_gone_exits_in_seconds_and_the_next_start_sends_the_rest(
    server_factory: ServerFactory, workers: WorkerPool
) -> None:
    server, worker, task_id, saved, killed_at = await _stopped_with_the_server_gone(
        server_factory, workers
    )
    await asyncio.to_thread(server_factory, local_worker=False, reuse=server)
    await asyncio.to_thread(worker.restart_plain)
    await wait_until_async(
        lambda: not saved.exists(), 30, f"the saved events to be sent\n{worker.describe()}"
    )
    async with server.client() as client:
        final = await client.get_task(task_id)
        events = await client.get_events(task_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    items = [e.data["item"]["id"] for e in events if e.codex_type == "item.completed"]
    assert items == [f"item_{n}" for n in range(len(items))], items
    while_down = [e for e in events if e.kind is EventKind.CODEX and e.ts > killed_at]
    assert while_down, "no event printed while the server was down arrived"
    assert final.status is TaskStatus.CANCELED, (final, worker.describe())
    assert final.error == "the worker was stopped"
    assert [e.status for e in events if e.is_terminal] == [TaskStatus.CANCELED]
    assert "saved event(s) sent" in worker.log()


async def test_saved_events_whose_lease_was_lost_meanwhile_are_dropped_with_a_log_line(
    server_factory: ServerFactory, workers: WorkerPool
) -> None:
    """The server came back and, the worker being away past the lease, ended the task
    ``lost``: the next start drops what was saved (the lease fences it), says so, and the task
    stays as the server ended it."""
    server, worker, task_id, saved, _ = await _stopped_with_the_server_gone(
        server_factory, workers, "--lease-ttl", "2", "--sweep-interval", "0.5"
    )
    await asyncio.to_thread(server_factory, local_worker=False, reuse=server)
    async with server.client() as client:
        async with bounded(90, f"task {task_id} to end lost on the restarted server"):
            async for event in client.stream_events(task_id):
                if event.is_terminal:
                    break
        before = await client.get_events(task_id)
        assert before[-1].status is TaskStatus.LOST, before[-1]
        await asyncio.to_thread(worker.restart_plain)
        await wait_until_async(lambda: not saved.exists(), 30, "the saved file to be handled")
        after = await client.get_events(task_id)
        final = await client.get_task(task_id)
    assert after == before and final.status is TaskStatus.LOST
    assert "dropped: its lease was lost meanwhile" in worker.log(), worker.describe()


async def test_a_local_worker_whose_server_is_gone_for_good_exits(
    server_factory: ServerFactory,
) -> None:
    """Issue 17 item 10: the worker `codex-tui server` started beside itself outlives a server
    restart (R10) but not a server that is gone for good: once the server has been unreachable
    for ``local_give_up_s`` and no server runs on its state folder, it stops and exits."""
    give_up_s = 2.0
    server = server_factory(extra_env={"CODEX_TUI_WORKER_LOCAL_GIVE_UP_S": f"{give_up_s:g}"})
    state = server.home / "state"
    pid = int((state / "local-worker.pid").read_text())
    worker = psutil.Process(pid)
    async with server.client() as client:  # connected: it heard from its server

        async def online() -> bool:
            return any(w.online for w in await client.list_workers())

        deadline = asyncio.get_running_loop().time() + 30
        while not await online():
            assert asyncio.get_running_loop().time() < deadline, "the local worker connects"
    server.proc.kill()
    server.proc.wait(10)

    def gone() -> bool:
        try:
            return worker.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # give_up_s, the watch's tick (a quarter of it) and a stop without tasks, with a margin.
    try:
        await wait_until_async(gone, give_up_s + 10, "the local worker to exit")
    finally:
        log = (state / "local-worker.log").read_text()
    assert "this local worker stops" in log, log
