"""Provides the real-codex run: the pinned ``codex exec --json`` against the mock model server
(tests/fakes/mock_model_server.py), through the whole pipeline and read straight from its pipe (the
baseline), with the same script: run a shell command, then answer.

The real codex's lines carry no timestamp, so this compares times from the start: to codex's
first line and to the end of the turn (the pipe: codex's exit; end to end: the terminal status
event at the client, i.e. what a person waits for)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    CLEANUP,
    RUN_ENV,
    RUN_ID,
    BenchError,
    Server,
    median,
    spawn_codex_pipe,
)
from benchmarks.load import bench_client
from server_client.models import EventKind

Log = Callable[[str], None]

PROMPT = "run the command, then say done"


async def _direct(codex_bin: str, env: dict[str, str], workdir: Path) -> dict[str, float]:
    started = time.perf_counter()
    proc = await spawn_codex_pipe(codex_bin, PROMPT, workdir, env)
    assert proc.stdout is not None
    first = None
    lines = 0
    while line := await asyncio.wait_for(proc.stdout.readline(), 120):
        if line.strip():
            lines += 1
            if first is None:
                first = time.perf_counter()
    await proc.wait()
    end = time.perf_counter()
    return {
        "first_line_s": (first or end) - started,
        "total_s": end - started,
        "lines": lines,
        "exit_code": proc.returncode or 0,
    }


@dataclass
class RealCodex:
    """The real codex binary, the mock model it talks to and its CODEX_HOME."""

    codex_bin: str
    codex_home: Path
    env: dict[str, str]

    def server_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`start_server` for a server running this codex."""
        return {
            "fake_mode": None,
            "codex_bin": self.codex_bin,
            "extra_env": {"CODEX_HOME": str(self.codex_home)},
        }


def prepare(run_dir: Path) -> RealCodex:
    """Find the pinned codex, start the mock model (stopped at cleanup) with a script that
    runs a shell command and then answers, and write CODEX_HOME.

    Raises:
        BenchError: the pinned codex binary is not installed.
    """
    from tests.fakes.codex_home import (
        CodexBinaryNotFound,
        codex_env,
        find_test_codex_bin,
        write_codex_home,
    )
    from tests.fakes.mock_model_server import MockModel, call_shell, say

    try:
        codex_bin = find_test_codex_bin()
    except CodexBinaryNotFound as exc:
        raise BenchError(str(exc)) from exc
    model = MockModel([call_shell("echo codex-tui-bench"), say("done")]).start()
    CLEANUP.push("the mock model server", model.stop)
    codex_home = write_codex_home(run_dir / "codex-home", model.base_url)
    env = codex_env(codex_home, extra={RUN_ENV: RUN_ID, "LANG": "C.UTF-8"})
    return RealCodex(codex_bin, codex_home, env)


async def _through_server(server: Server) -> dict[str, float]:
    async with bench_client(server) as client:
        started = time.perf_counter()
        task = await client.create_task(PROMPT, workdir=str(server.workdir))
        first = None
        codex_events = 0
        status = "none"
        async for event in client.stream_events(task.id):
            if event.kind is EventKind.CODEX:
                codex_events += 1
                if first is None:
                    first = time.perf_counter()
            if event.is_terminal and event.status is not None:
                status = event.status.value
        end = time.perf_counter()
    return {
        "first_line_s": (first or end) - started,
        "total_s": end - started,
        "lines": codex_events,
        "completed": float(status == "completed"),
    }


async def real_codex(
    real: RealCodex, server: Server, run_dir: Path, runs: int, log: Log
) -> dict[str, Any]:
    """One warm-up run, then ``runs`` runs straight from the pipe and ``runs`` through the
    server, alternating; medians."""
    log(f"real codex: {real.codex_bin}")
    workdir = run_dir / "real-work"
    workdir.mkdir(exist_ok=True)
    await _direct(real.codex_bin, real.env, workdir)  # warm-up: binary and caches
    direct: list[dict[str, float]] = []
    e2e: list[dict[str, float]] = []
    for _ in range(runs):
        direct.append(await _direct(real.codex_bin, real.env, workdir))
        e2e.append(await _through_server(server))
    result: dict[str, Any] = {
        "runs": runs,
        "real_codex_pipe_first_line_s": median([r["first_line_s"] for r in direct]),
        "real_codex_pipe_total_s": median([r["total_s"] for r in direct]),
        "real_codex_e2e_first_event_s": median([r["first_line_s"] for r in e2e]),
        "real_codex_e2e_total_s": median([r["total_s"] for r in e2e]),
        "real_codex_lines": direct[0]["lines"],
        "real_codex_events": e2e[0]["lines"],
        "real_codex_completed": all(r["completed"] for r in e2e),
    }
    result["real_codex_added_total_s"] = (
        result["real_codex_e2e_total_s"] - result["real_codex_pipe_total_s"]
    )
    result["real_codex_added_first_event_s"] = (
        result["real_codex_e2e_first_event_s"] - result["real_codex_pipe_first_line_s"]
    )
    log(
        f"  pipe: first line {result['real_codex_pipe_first_line_s']:.3f} s, end "
        f"{result['real_codex_pipe_total_s']:.3f} s; end to end: first event "
        f"{result['real_codex_e2e_first_event_s']:.3f} s, end "
        f"{result['real_codex_e2e_total_s']:.3f} s "
        f"({result['real_codex_added_total_s'] * 1000:+.0f} ms)"
    )
    return result
