"""Provides the profile section: py-spy attached from outside to the server, the worker and the
client while they carry a load, py-spy on this process while a burst streams into the TUI,
and the import-time breakdown of the TUI's cold start (``python -X importtime``).

Also the hot-spot shares the notes quote (:data:`HOT_SPOTS`): the percentage of busy samples
whose stack goes through a given function.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import profiling
from benchmarks.harness import Server, median
from benchmarks.load import LoadSpec, bench_client, run_load
from benchmarks.pipeline import PipelineConfig

Log = Callable[[str], None]

#: Named hot spots: process → {name: regex over a frame}. Shares of busy samples.
HOT_SPOTS: dict[str, dict[str, str]] = {
    "worker": {
        "psutil_process_scans": r"_descendants|_marked_processes|reap_orphan_zombies|"
        r"_kill_leftover|ppid_map|\(psutil/",
        "scans_while_running": r"_descendants|ExecRunner\._track",
        "scans_at_exit": r"_kill_leftover|_marked_processes|reap_orphan_zombies",
        "upload_http": r"EventUploader\._run|WorkerApi\.upload",
        "read_codex_output": r"ExecRunner\._pump|_on_stdout_line",
        "event_encoding": r"EventUploader\.add|model_dump_json",
    },
    "server": {
        "event_upload_route": r"upload_events",
        "sse_streams": r"_follow|EventSourceResponse|envelope_json",
        "token_lookup": r"current_principal|Store\.authenticate",
        "worker_lookup": r"Store\.get_worker|touch_worker",
        "append_events_txn": r"Store\.append_events",
        "read_events_query": r"Store\.read_events",
        "db_driver_threads": r"\(aiosqlite/|\(asyncpg/|sqlite3",
        "sqlalchemy": r"\(sqlalchemy/",
        "pydantic_validation": r"validate_python|validate_json|model_validate|TypeAdapter",
    },
    "client": {
        "event_parsing": r"model_validate_json",
        "sse_parsing": r"aiter_sse|_aiter_sse_lines|SSEDecoder",
        "httpx_streaming": r"aiter_bytes|aiter_raw|http11",
    },
    "tui": {
        "make_entries_renders_every_event": r"Transcript\.make_entries",
        "markdown_parser_per_message": r"\(markdown_it/|\(linkify_it/|\(rich/markdown\.py",
        "render_visible_lines": r"Transcript\.(render_line|render_lines|_render_entry)",
        "sdk_stream": r"stream_events|aiter_sse",
        "compositor": r"_compositor|compositor\.py",
    },
}


def _profile_summary(paths: dict[str, Path], top: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path in paths.items():
        summary = profiling.summarize_collapsed(path, top)
        spots = HOT_SPOTS.get(name, {})
        stacks = profiling.load_stacks(path)
        summary["hot_spots_pct"] = {
            k: round(profiling.share(stacks, v), 1) for k, v in spots.items()
        }
        out[name] = summary
    return out


async def profile_load(
    server: Server, run_dir: Path, spec: LoadSpec, seconds: float, label: str, log: Log
) -> dict[str, Any]:
    """Run ``spec`` and record the server, worker and this process (the client) meanwhile."""
    log(f"profile: {label}: {spec.tasks} tasks × {spec.rate:g}/s for {seconds:g} s")
    recorded: dict[str, Path] = {}
    pending: list[asyncio.Task[None]] = []

    async def start() -> None:
        pids = {**server.pids(), "client": os.getpid()}

        async def go() -> None:
            recorded.update(await profiling.record(pids, seconds, run_dir / "profiles" / label))

        pending.append(asyncio.create_task(go()))

    async with bench_client(server) as client:
        result = await run_load(server, client, spec, run_dir / "gates", log=log, on_running=start)
    for task in pending:
        await task
    out = _profile_summary(recorded, 15)
    out["load"] = {
        "tasks": spec.tasks,
        "offered_per_s": spec.offered_per_s,
        "delivered_per_s": result["delivered_per_s"],
        "latency_ms": result["latency_ms"],
        "cpu_ms_per_1000_events": result["cpu_ms_per_1000_events"],
    }
    return out


async def profile_tui(server: Server, run_dir: Path, events: int, log: Log) -> dict[str, Any]:
    """The TUI lag benchmark again, with py-spy on this process (where the app runs)."""
    from benchmarks import tui

    recorded: dict[str, Path] = {}

    async def record() -> None:
        recorded.update(
            await profiling.record({"tui": os.getpid()}, 6, run_dir / "profiles" / "tui")
        )

    recorder = asyncio.create_task(record())
    await asyncio.sleep(0.5)
    lag = await tui.tui_lag(server, events, log)
    await recorder
    out = _profile_summary(recorded, 15)
    out["lag"] = lag
    return out


def import_breakdown(repeats: int = 3) -> dict[str, Any]:
    """Where the TUI's cold start goes before its first frame: interpreter start, importing
    the command (click, httpx, pydantic...) and the app (Textual), and import time by top-level
    package (``-X importtime``, self times summed)."""
    env = dict(os.environ)

    def wall(code: str) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", code],
                env=env,
                check=False,  # noqa: S603
                capture_output=True,
            )
            times.append(time.perf_counter() - started)
        return median(times) * 1000

    out: dict[str, Any] = {
        "interpreter_ms": wall("pass"),
        "import_cli_ms": wall("import codex_tui.cli"),
        "import_cli_and_app_ms": wall("import codex_tui.cli, codex_tui.app"),
    }
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-X", "importtime", "-c", "import codex_tui.cli, codex_tui.app"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    by_package: dict[str, int] = defaultdict(int)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            self_us = int(parts[0].split(":")[1])
        except ValueError:
            continue
        name = parts[2].strip().split(".")[0]
        by_package[name] += self_us
    top = sorted(by_package.items(), key=lambda kv: -kv[1])[:12]
    out["import_self_ms_by_package"] = {k: round(v / 1000, 1) for k, v in top}
    return out


async def profile_all(
    server: Server, run_dir: Path, cfg: dict[str, Any], sections: dict[str, Any], log: Log
) -> dict[str, Any]:
    """Every profile: the pipeline at its first failing rate (throughput), a large level
    (concurrency), the TUI burst, and the cold start's imports."""
    if profiling.py_spy_command() is None:
        log("profile: neither py-spy nor uvx found; only the import breakdown")
        return {"import_breakdown": import_breakdown()}
    pipeline_cfg: PipelineConfig = cfg["pipeline"]
    seconds = float(cfg["profile_s"])
    out: dict[str, Any] = {}
    sustained = (sections.get("pipeline") or {}).get("sustained") or {}
    offered = sustained.get("first_failing") or 400.0
    rate = offered / pipeline_cfg.step_tasks
    spec = LoadSpec(pipeline_cfg.step_tasks, max(5, round(rate * (seconds + 3))), rate)
    out["throughput"] = await profile_load(server, run_dir, spec, seconds, "throughput", log)
    # The concurrency profile at up to 200 tasks: enough to show what grows with the number
    # of tasks, without another several-minute ramp of 500.
    top_level = max([n for n in pipeline_cfg.levels if n <= 200], default=0)
    if top_level > pipeline_cfg.step_tasks:
        level = pipeline_cfg.level_spec(top_level)
        level = LoadSpec(level.tasks, max(5, round(level.rate * (seconds + 5))), level.rate)
        from benchmarks.harness import start_server

        big = start_server(run_dir, name="profile-level", max_tasks=top_level)
        try:
            out["concurrency"] = await profile_load(
                big, run_dir, level, seconds, "concurrency", log
            )
        finally:
            big.stop()
    out["tui"] = await profile_tui(server, run_dir, cfg["tui_lag_events"], log)
    log("profile: cold start imports")
    out["import_breakdown"] = import_breakdown()
    return out
