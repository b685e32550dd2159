"""Provides the cancel benchmark: from the cancel request to every codex process of the task
gone, with the fake codex in ``sleep`` mode (exits on SIGINT) and in ``ignore-sigint`` mode
(only SIGKILL after the grace period ends it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import psutil

from benchmarks.harness import BenchError, Server, median
from benchmarks.load import bench_client

Log = Callable[[str], None]


def _task_processes(server: Server, task_id: str) -> list[psutil.Process]:
    """Live processes started for ``task_id`` (codex and what it started), by the worker's
    environment marker."""
    found = []
    worker = server.worker()
    candidates = worker.children(recursive=True) if worker is not None else []
    for proc in candidates:
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("CODEX_TUI_TASK_ID") == task_id:
                found.append(proc)
    return found


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> float:
    """Poll every 2 ms until no process of ``procs`` is alive; returns the perf_counter
    time it was seen so."""
    deadline = time.perf_counter() + timeout_s
    while _alive(procs) and time.perf_counter() < deadline:
        time.sleep(0.002)
    return time.perf_counter()


def _alive(procs: list[psutil.Process]) -> bool:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


async def _one(server: Server) -> dict[str, float]:
    async with bench_client(server) as client:
        task = await client.create_task("cancel bench", workdir=str(server.workdir))
        seen_status: list[float] = []
        started_cmd = asyncio.Event()

        async def follow() -> None:
            async for event in client.stream_events(task.id):
                if event.codex_type == "item.started":
                    started_cmd.set()
                if event.is_terminal:
                    seen_status.append(time.perf_counter())

        follower = asyncio.create_task(follow())
        try:
            await asyncio.wait_for(started_cmd.wait(), 60)
            procs: list[psutil.Process] = []
            deadline = time.monotonic() + 10
            while not procs and time.monotonic() < deadline:
                procs = _task_processes(server, task.id)
                await asyncio.sleep(0.01)
            if not procs:
                raise BenchError(f"no codex process found for task {task.id}")
            t0 = time.perf_counter()
            await client.cancel_task(task.id)
            gone = await asyncio.to_thread(_wait_gone, procs, 60.0)
            await asyncio.wait_for(follower, 60)
        finally:
            follower.cancel()
            with contextlib.suppress(BaseException):
                await follower
    return {"gone_s": gone - t0, "status_s": (seen_status[0] - t0) if seen_status else -1.0}


async def cancel(
    servers: dict[str, Server], samples: int, grace_s: float, log: Log
) -> dict[str, Any]:
    """``samples`` cancels on each of ``servers`` (by fake mode: ``sleep``, ``ignore-sigint``,
    started with ``grace_s``); medians and maxima."""
    out: dict[str, Any] = {"cancel_grace_s": grace_s, "samples": samples}
    for mode, server in servers.items():
        log(f"cancel: fake codex in {mode} mode, grace {grace_s:g} s")
        runs = [await _one(server) for _ in range(samples)]
        key = "sleep" if mode == "sleep" else "ignore_sigint"
        out[f"cancel_{key}_s"] = median([r["gone_s"] for r in runs])
        out[f"cancel_{key}_max_s"] = max(r["gone_s"] for r in runs)
        out[f"cancel_{key}_status_s"] = median([r["status_s"] for r in runs])
        log(
            f"  processes gone after {out[f'cancel_{key}_s']:.3f} s (median), "
            f"canceled status at the client after {out[f'cancel_{key}_status_s']:.3f} s"
        )
    out["cancel_s"] = out.get("cancel_sleep_s")
    return out
