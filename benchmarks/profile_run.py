"""Provides the profile section: py-spy attached from outside to the server, the worker and the
client while they carry a load, py-spy on this process while a burst streams into the TUI,
and the import-time breakdown of the TUI's cold start (``python -X importtime``).

Also the hot-spot shares the notes quote (:data:`HOT_SPOTS`): the percentage of busy samples
whose stack goes through a given function.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
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

#: Named hot spots: process → {name: regex}. A hot spot's share is the percentage of busy
#: samples with a frame that matches (what went through it, callees included); a regex that
#: starts with ``leaf:`` matches the innermost frame only (where the CPU itself went, e.g. in a
#: library's own code). Frames read ``func (package/module.py:line)``.
HOT_SPOTS: dict[str, dict[str, str]] = {
    "worker": {
        # One shared psutil pass per second for every run (ProcessWatch), the sweep at exit.
        "process_scans": r"read_process_table|ProcessWatch|_kill_and_wait|reap_orphan_zombies|"
        r"_nothing_left_behind|\(psutil/",
        "scans_at_exit": r"ProcessWatch\.sweep|_kill_and_wait|reap_orphan_zombies|"
        r"_nothing_left_behind",
        "upload_http": r"UploadStream\.(_run|_send)|WorkerApi\.(upload|upload_all|_post)|"
        r"UploadSocket\.upload",
        "finish_http": r"EventUploader\.close|WorkerApi\.finish",
        # The HTTP and WebSocket clients' own code (httpx, httpcore, h11, anyio, websockets),
        # callers left out.
        "http_client_code": r"leaf:\((httpx|httpcore|h11|anyio|sniffio|websockets)/",
        "read_codex_output": r"ExecRunner\.(_pump|_deliver|_on_stdout_line|_on_stderr_line)",
        "event_encoding": r"EventUploader\.(add|part)|UploadStream\._body|model_dump_json",
        # uvloop's C code (socket and pipe I/O, callbacks): the loop's frame is the innermost.
        "event_loop_c": r"leaf:^Runner\.run ",
    },
    "server": {
        "event_upload_route": r"upload_events|^(upload|upload_socket) \(server_client/server/"
        r"routes_workers",
        "append_events_txn": r"append_events_by_token|Store\._append\b|Store\._txn|"
        r"Store\.append_events|Store\.append_uploads|Store\._part\b",
        "finish_route": r"^finish \(server_client/server/routes_workers|Store\.finish|finish_row",
        "token_check": r"authenticate_known|Store\.authenticate|hash_token",
        "fastapi_dependencies": r"solve_dependencies",
        # Framework code by its own time: FastAPI, Starlette, uvicorn, sse-starlette, anyio,
        # websockets (the upload sockets' protocol).
        "framework_code": r"leaf:\((fastapi|starlette|uvicorn|sse_starlette|anyio|httptools|"
        r"h11|websockets)/",
        "event_loop_c": r"leaf:^Runner\.run ",
        "sse_streams": r"_follow|_follow_many|EventSourceResponse|ServerSentEvent|envelope_json|"
        r"sse_frame",
        "sse_tail_from_memory": r"Watch\.tail|Hub\.(tail|publish)",
        "read_events_query": r"Store\.read_events",
        # The SQLite hot path runs in worker threads (Store._txn/_read); aiosqlite/asyncpg
        # serve everything else.
        "db_threads": r"_in_transaction|_on_connection|\(aiosqlite/|\(asyncpg/|sqlite3",
        "thread_handoff": r"ThreadPoolExecutor\.submit|_chain_future|Future\._invoke_callbacks",
        "sqlalchemy": r"\(sqlalchemy/",
        "pydantic_validation": r"validate_python|validate_json|model_validate|TypeAdapter",
        "event_json": r"encode_event|\(json/",
    },
    "client": {
        "event_parsing": r"model_validate_json",
        "sse_parsing": r"aiter_sse|_aiter_sse_lines|SSEDecoder|_splitlines_sse",
        "httpx_streaming": r"aiter_bytes|aiter_raw|http11",
    },
    "tui": {
        # Per event as it arrives: visibility (no rendering), annotation, height estimate.
        "ingest_per_event": r"EventView\._ingest",
        "flush_to_transcript": r"EventView\._flush|Transcript\.append",
        "render_entries_in_view": r"Transcript\.(_render_entry|_ensure_rendered|_render_tail)|"
        r"render_annotated",
        "markdown": r"render_markdown|\(markdown_it/|\(rich/markdown\.py|\(pygments/",
        "draw_lines": r"Transcript\.(render_lines|render_line)",
        "sdk_stream": r"stream_events|aiter_sse",
        "event_parsing": r"model_validate_json",
        # Textual's own frame: layout, compositor, styles (all widgets, not only the pane).
        "textual_frame": r"\(textual/(_compositor|_arrange|_layout|_styles_cache|screen)\.py",
        "imports": r"_find_and_load",
    },
}


def hot_spot_share(stacks: list[tuple[list[str], int]], pattern: str) -> float:
    """Percent of the busy ``stacks`` that go through ``pattern`` (see :data:`HOT_SPOTS`)."""
    if not pattern.startswith("leaf:"):
        return profiling.share(stacks, pattern)
    regex = re.compile(pattern.removeprefix("leaf:"))
    total = sum(count for _, count in stacks)
    hit = sum(count for frames, count in stacks if regex.search(frames[-1]))
    return 100 * hit / total if total else 0.0


def _profile_summary(paths: dict[str, Path], top: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path in paths.items():
        summary = profiling.summarize_collapsed(path, top)
        spots = HOT_SPOTS.get(name, {})
        stacks = profiling.load_stacks(path)
        summary["hot_spots_pct"] = {
            k: round(hot_spot_share(stacks, v), 1) for k, v in spots.items()
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
        "events_per_task": spec.events,
        "offered_per_s": spec.offered_per_s,
        "delivered_per_s": result["delivered_per_s"],
        "latency_ms": result["latency_ms"],
        "cpu_ms_per_1000_events": result["cpu_ms_per_1000_events"],
    }
    return out


async def profile_tui(server: Server, run_dir: Path, events: int, log: Log) -> dict[str, Any]:
    """The TUI lag benchmark again, with py-spy on this process (where the app runs) during
    the burst only: the app's modules are imported and the Markdown renderer warmed up first
    (a terminal that shows a task has paid for both), and the recording starts right before
    the burst (it attaches within about half a second)."""
    from benchmarks import tui
    from codex_tui import app  # noqa: F401 - imported before the recording
    from codex_tui.events.markdown import warm_up

    warm_up()
    recorded: dict[str, Path] = {}
    pending: list[asyncio.Task[None]] = []

    async def record() -> None:
        recorded.update(
            await profiling.record({"tui": os.getpid()}, 4, run_dir / "profiles" / "tui")
        )

    async def before_burst() -> None:
        pending.append(asyncio.create_task(record()))
        await asyncio.sleep(0.5)

    lag = await tui.tui_lag(server, events, log, before_burst=before_burst)
    for task in pending:
        await task
    out = _profile_summary(recorded, 15)
    out["lag"] = lag
    return out


def import_breakdown(repeats: int = 3) -> dict[str, Any]:
    """Where the TUI's cold start goes before its first frame: interpreter start, importing
    the command (click, httpx, pydantic...) and the app (Textual), each as wall time and as
    the child's CPU time (steadier on a shared machine; medians of ``repeats``), and import
    time by top-level package (``-X importtime``, self times summed)."""
    env = dict(os.environ)

    def timed(code: str) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", code],
                env=env,
                check=False,  # noqa: S603
                capture_output=True,
            )
            walls.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        return median(walls) * 1000, median(cpus) * 1000

    out: dict[str, Any] = {}
    for key, code in (
        ("interpreter", "pass"),
        ("import_cli", "import codex_tui.cli"),
        ("import_cli_and_app", "import codex_tui.cli, codex_tui.app"),
    ):
        out[f"{key}_ms"], out[f"{key}_cpu_ms"] = timed(code)
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
    (concurrency) and its tasks' exits, the TUI burst, and the cold start's imports."""
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
            # The same level with tasks that end at about 40% of the recording: their exits
            # (sweep, last upload, finish) are in it, all tasks ending about together.
            ending = LoadSpec(level.tasks, max(2, round(level.rate * seconds * 0.4)), level.rate)
            out["exits"] = await profile_load(big, run_dir, ending, seconds, "exits", log)
        finally:
            big.stop()
    out["tui"] = await profile_tui(server, run_dir, cfg["tui_lag_events"], log)
    log("profile: cold start imports")
    out["import_breakdown"] = import_breakdown()
    return out
