"""Orphans of a worker killed with ``kill -9`` (issue 17 item 6; docs/reliability.md C3): codex
dies with its worker, but a command it started in a session of its own lives on; the next start
of the same worker kills it, and never touches what another worker on the machine runs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from server_client.client import CodexTuiClient
from server_client.worker.procs import WORKER_ENV
from tests.conftest import ServerFactory, wait_until_async
from tests.support.worker_procs import WorkerPool, task_processes


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    """Paired worker processes of this test (killed at the end, with their codex)."""
    with WorkerPool(tmp_path) as pool:
        yield pool


def _alive(task_id: str) -> list[psutil.Process]:
    """The task's processes that run (not zombies)."""
    alive = []
    for proc in task_processes(task_id):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            continue
    return alive


async def _forked(client: CodexTuiClient, task_id: str) -> list[psutil.Process]:
    """Wait until the task's codex runs its command in a session of its own."""
    async for event in client.stream_events(task_id):
        if event.codex_type == "item.started":
            break
    procs = await wait_until_async(
        lambda: len(_alive(task_id)) >= 2 and _alive(task_id), 10, "codex and its command"
    )
    assert isinstance(procs, list)
    return procs


async def test_a_restarted_worker_kills_what_its_killed_process_left_and_nothing_else(
    server_factory: ServerFactory, workers: WorkerPool
) -> None:
    server = server_factory(local_worker=False)
    crashy = workers.start(server, "crashy", fake_mode="fork")
    bystander = workers.start(server, "bystander", fake_mode="fork")
    async with server.client() as client:
        doomed = await client.create_task("fork and sleep", worker="crashy")
        other = await client.create_task("fork and sleep too", worker="bystander")
        await asyncio.wait_for(_forked(client, doomed.id), 30)
        others = await asyncio.wait_for(_forked(client, other.id), 30)
        markers = {p.environ().get(WORKER_ENV) for p in _alive(doomed.id)}
        assert len(markers) == 1 and str(crashy.home) in str(markers), markers

        crashy.kill()
        # codex dies with its worker (parent-death signal); its own-session command does not.
        left = await wait_until_async(
            lambda: len(_alive(doomed.id)) == 1 and _alive(doomed.id), 10, "codex to die"
        )
        assert isinstance(left, list)
        orphan = left[0]
        assert orphan.pid != orphan.ppid() and os.getsid(orphan.pid) == orphan.pid, "own session"

        await asyncio.to_thread(crashy.restart_plain)
        await wait_until_async(
            lambda: not _alive(doomed.id),
            10,
            f"the restarted worker to kill pid {orphan.pid}\n{crashy.describe()}",
        )
        assert "left behind by an earlier worker process" in crashy.log(), crashy.describe()
    # The other worker's codex and command run on.
    assert {p.pid for p in _alive(other.id)} == {p.pid for p in others}, bystander.describe()
