"""Provides ``python -m benchmarks``: run the benchmarks, print a Markdown table and write
``benchmarks/results/latest.json`` (and a copy as ``full.json`` or ``quick.json``, the last
complete run of each mode).

Usage::

    uv run python -m benchmarks            # the full run (several minutes)
    uv run python -m benchmarks --quick    # a smaller run, a few minutes
    uv run python -m benchmarks --only pipeline,tui --profile

Sections: pipeline (latency by concurrency, sustained rate, capacity, memory per task), relay
(a bare relay of the same libraries, the reference for the sustained rate), resume, tui,
cancel, postgres, real-codex, deltas (many conversation turns streaming token deltas), storm
(the delta storm: 50 turns streaming token deltas and command output at 40/s each), profile.
Progress goes to stderr, the table to stdout.
Everything started is stopped at the end, on Ctrl-C too (servers, workers, codex processes,
TUIs, the PostgreSQL database).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import cancel, deltas, real_codex, relay, report, resume
from benchmarks.deltas import DeltaSpec
from benchmarks.harness import (
    CLEANUP,
    ROOT,
    BenchError,
    Server,
    create_pg_database,
    ignore_signals,
    install_signal_handlers,
    kill_run_processes,
    make_run_dir,
    raise_fd_limit,
    start_server,
)
from benchmarks.notes import make_notes, shared_machine_note
from benchmarks.pipeline import PipelineConfig, latency_levels, run_level, sustained
from benchmarks.relay import RelayConfig
from benchmarks.report import REFERENCE_LEVEL

SECTIONS = (
    "pipeline",
    "relay",
    "resume",
    "tui",
    "cancel",
    "postgres",
    "real-codex",
    "deltas",
    "storm",
    "profile",
)
RESULTS = Path(__file__).parent / "results"

#: Offered rates (events/s, all tasks together) tried in turn when stepping.
STEPS = [25.0, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200]

#: The bare relay's steps: the same ladder from 800 events/s (it passes the lower ones in any
#: case), one rung higher; the lower rungs are its fallback.
RELAY_STEPS = [r for r in STEPS if r >= 800] + [2 * STEPS[-1]]
RELAY_FALLBACK = sorted((r for r in STEPS if r < 800), reverse=True)


def storm_spec(seconds: float) -> DeltaSpec:
    """The delta storm of issue 14 streaming for about ``seconds`` s: 50 turns, each
    token-sized agent-message deltas for two thirds of the time, then its command's output
    deltas, at 40 deltas/s."""
    rate = 40
    return DeltaSpec(
        tasks=50, deltas=round(rate * seconds * 2 / 3), rate=rate, output=round(rate * seconds / 3)
    )


def quick_config() -> dict[str, Any]:
    """Sizes of ``--quick`` (a few minutes on 2 cores).

    The sections added for issue 14 (relay, storm) run at their full load for less time.
    """
    return {
        "pipeline": PipelineConfig(
            levels=[1, 50],
            level_s=3,
            aggregate_per_s=100,
            single_rate=20,
            fresh_server_per_level=False,
            step_tasks=10,
            steps=STEPS,
            step_s=3,
            refine=0,
        ),
        "resume_events": 10_000,
        "resume_repeats": 1,
        "tui_lag_events": 10_000,
        "tui_memory_entries": 2000,
        "tui_cold_runs": 5,
        "tui_streams": [(90, 30.0), (1000, 1000.0)],
        "tui_idle_s": 1.0,
        "cancel_samples": 1,
        "cancel_grace_s": 2.0,
        "real_codex_runs": 1,
        "deltas": [DeltaSpec(tasks=20, deltas=300, rate=100, output=100)],
        "relay": RelayConfig(steps=RELAY_STEPS, step_s=3, refine=1, fallback=RELAY_FALLBACK),
        "storm": storm_spec(4.5),
        "profile_s": 5,
    }


def full_config() -> dict[str, Any]:
    """Sizes of the full run."""
    return {
        "pipeline": PipelineConfig(
            levels=[1, 50, 200, 500],
            level_s=15,
            aggregate_per_s=100,
            single_rate=20,
            fresh_server_per_level=True,
            step_tasks=10,
            steps=STEPS,
            step_s=8,
            refine=2,
            capacity_probe=[1000],
        ),
        "resume_events": 50_000,
        "resume_repeats": 3,
        "tui_lag_events": 10_000,
        "tui_memory_entries": 2000,
        "tui_cold_runs": 9,
        "tui_streams": [(300, 30.0), (5000, 1000.0)],
        "tui_idle_s": 2.0,
        "cancel_samples": 5,
        "cancel_grace_s": 2.0,
        "real_codex_runs": 3,
        "deltas": [
            DeltaSpec(tasks=20, deltas=1000, rate=100, output=300),
            DeltaSpec(tasks=100, deltas=800, rate=50, output=200),
        ],
        "relay": RelayConfig(steps=RELAY_STEPS, step_s=8, refine=2, fallback=RELAY_FALLBACK),
        "storm": storm_spec(15),
        "profile_s": 8,
    }


def ensure_bytecode() -> float:
    """Compile every module of the environment and of this project to bytecode, as an
    installed package has it (pip and ``uv tool install`` compile at install time), and return
    how long that took (s; 0 when everything was compiled already).

    Without it, where ``PYTHONDONTWRITEBYTECODE`` is set (as on some CI machines) every
    process would compile its imports from source at each start, and start-up times (the
    TUI's cold start above all) would measure the compiler instead of codex-tui.
    """
    import compileall
    import sysconfig

    started = time.monotonic()
    folders = [Path(sysconfig.get_paths()["purelib"]), ROOT / "codex_tui", ROOT / "server_client"]
    for folder in folders:
        compileall.compile_dir(folder, quiet=2, workers=os.cpu_count() or 1)
    return round(time.monotonic() - started, 1)


def log(message: str) -> None:
    """Progress, to stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    return f"commit {head}{' + local changes' if dirty else ''}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Runner:
    """Runs the chosen sections in order, keeping each one's result or error.

    The servers the sections share are started at once, in threads, before anything is
    measured (their start-up is not measured, and waiting for each in turn would cost most
    of a quick run).
    """

    def __init__(self, args: argparse.Namespace, cfg: dict[str, Any], run_dir: Path) -> None:
        self.args = args
        self.cfg = cfg
        self.run_dir = run_dir
        self.sections: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.loads: dict[str, str] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="server-start")
        self._servers: dict[str, Future[Server]] = {}
        self._real: real_codex.RealCodex | None = None

    def wanted(self, name: str) -> bool:
        """Whether section ``name`` runs."""
        if name == "profile" and not self.args.only:
            return bool(self.args.profile)
        return not self.args.only or name in self.args.only

    def _start(
        self, name: str, setup: Callable[[], dict[str, Any]] | None = None, **options: Any
    ) -> None:
        def start() -> Server:
            extra = setup() if setup is not None else {}
            return start_server(self.run_dir, name=name, **options, **extra)

        self._servers[name] = self._pool.submit(start)

    def prestart(self) -> None:
        """Start every shared server the wanted sections need, in parallel."""
        pipeline: PipelineConfig = self.cfg["pipeline"]
        if any(self.wanted(n) for n in ("pipeline", "resume", "tui", "profile")):
            self._start("main", max_tasks=max([*pipeline.levels, pipeline.step_tasks]))
        if self.wanted("cancel"):
            for mode in ("sleep", "ignore-sigint"):
                self._start(f"cancel-{mode}", fake_mode=mode, grace_s=self.cfg["cancel_grace_s"])
        if self.wanted("postgres"):
            self._start(
                "postgres",
                lambda: {"db_url": create_pg_database()},
                max_tasks=max(pipeline.step_tasks, REFERENCE_LEVEL),
            )
        if self.wanted("real-codex"):

            def real_setup() -> dict[str, Any]:
                self._real = real_codex.prepare(self.run_dir)
                return self._real.server_options()

            self._start("real", real_setup)
        if self.wanted("deltas") or self.wanted("storm"):  # one server for both
            specs = [*self.cfg["deltas"], self.cfg["storm"]]
            self._start(
                "deltas",
                fake_mode=deltas.FAKE_MODE,
                runtime="app-server",
                max_tasks=max(spec.tasks for spec in specs),
            )

    def server(self, name: str) -> Server:
        """A prestarted server (waits for it; raises what its start raised)."""
        return self._servers[name].result()

    def wait_servers(self) -> None:
        """Wait until every prestarted server is up (failures surface in their sections)."""
        for future in self._servers.values():
            with contextlib.suppress(Exception):
                future.result()
        self._pool.shutdown(wait=True)

    async def section(self, name: str, work: Callable[[], Awaitable[Any]]) -> None:
        """Run one section; a failure is recorded and the next section runs."""
        if not self.wanted(name):
            return
        started = time.monotonic()
        self.loads[name] = _load()
        log(f"== {name} (load average {self.loads[name]})")
        try:
            self.sections[name.replace("-", "_")] = await work()
        except BenchError as exc:
            log(f"{name} failed: {exc}")
            self.errors[name] = str(exc)[:2000]
        except Exception as exc:  # noqa: BLE001 - one section's bug must not lose the rest
            log(f"{name} failed: {exc!r}")
            self.errors[name] = repr(exc)[:2000]
        self.timings[name] = time.monotonic() - started

    async def run(self) -> None:
        """Every wanted section, in order."""
        cfg = self.cfg
        started = time.monotonic()
        self.prestart()
        await asyncio.to_thread(self.wait_servers)
        log(f"servers up after {time.monotonic() - started:.1f} s")
        await self.section("pipeline", self._pipeline)
        await self.section("relay", lambda: relay.relay(self.run_dir, cfg["relay"], log))
        await self.section(
            "resume",
            lambda: resume.resume(
                self.server("main"), cfg["resume_events"], cfg["resume_repeats"], log
            ),
        )
        await self.section("tui", self._tui)
        await self.section(
            "cancel",
            lambda: cancel.cancel(
                {m: self.server(f"cancel-{m}") for m in ("sleep", "ignore-sigint")},
                cfg["cancel_samples"],
                cfg["cancel_grace_s"],
                log,
            ),
        )
        await self.section("postgres", self._postgres)
        await self.section("real-codex", self._real_codex)
        await self.section(
            "deltas",
            lambda: deltas.deltas(self.server("deltas"), self.run_dir, cfg["deltas"], log),
        )
        await self.section(
            "storm",
            lambda: deltas.deltas(
                self.server("deltas"), self.run_dir, [cfg["storm"]], log, section="storm"
            ),
        )
        if not self.args.only and not self.args.profile and not self.args.quick:
            # The full run profiles whatever falls short of its goal.
            flat = report.flatten(self.sections)
            self.args.profile = any(row["met"] is False for row in report.goal_rows(flat))
        await self.section("profile", self._profile)

    async def _pipeline(self) -> dict[str, Any]:
        cfg: PipelineConfig = self.cfg["pipeline"]
        main = self.server("main")
        latency = await latency_levels(self.run_dir, cfg, log, main)
        # Below the first step, in case even that fails (a busy machine).
        fallback = [cfg.steps[0] / 2, cfg.steps[0] / 4]
        steps = await sustained(main, self.run_dir, cfg, log, fallback=fallback)
        return {"latency": latency, "sustained": steps}

    async def _tui(self) -> dict[str, Any]:
        from benchmarks import tui

        main = self.server("main")
        out: dict[str, Any] = {}
        out.update(await tui.tui_lag(main, self.cfg["tui_lag_events"], log))
        out.update(await tui.tui_memory(self.cfg["tui_memory_entries"], log))
        out.update(
            await tui.tui_terminal(
                main,
                self.run_dir,
                cold_runs=self.cfg["tui_cold_runs"],
                streams=self.cfg["tui_streams"],
                log=log,
                idle_s=self.cfg["tui_idle_s"],
            )
        )
        out.update(await tui.tui_four_panes(self.run_dir, log))
        return out

    async def _postgres(self) -> dict[str, Any]:
        cfg: PipelineConfig = self.cfg["pipeline"]
        server = self.server("postgres")
        spec = cfg.level_spec(REFERENCE_LEVEL)
        levels = ((self.sections.get("pipeline") or {}).get("latency") or {}).get("levels") or {}
        baseline = (levels.get(REFERENCE_LEVEL) or {}).get("baseline")
        log(f"postgres: latency level {REFERENCE_LEVEL}")
        level = await run_level(server, spec, self.run_dir, log, baseline=baseline)
        fallback: list[float] = []
        if self.args.quick:
            # Start at the last rate SQLite sustained (a few steps, not the whole ladder);
            # go down from there if PostgreSQL does not sustain it.
            done = (self.sections.get("pipeline") or {}).get("sustained") or {}
            floor = done.get("sustained_events_per_s") or cfg.steps[0]
            start = ([r for r in cfg.steps if r <= floor] or cfg.steps[:1])[-1]
            fallback = sorted((r for r in cfg.steps if r < start), reverse=True)
            cfg = replace(cfg, steps=[r for r in cfg.steps if r >= start])
        if not fallback:  # below the first step, in case even that fails
            fallback = [cfg.steps[0] / 2, cfg.steps[0] / 4]
        steps = await sustained(server, self.run_dir, cfg, log, name="postgres", fallback=fallback)
        return {"level": level, "sustained": steps}

    async def _real_codex(self) -> dict[str, Any]:
        server = self.server("real")
        assert self._real is not None
        return await real_codex.real_codex(
            self._real, server, self.run_dir, self.cfg["real_codex_runs"], log
        )

    async def _profile(self) -> dict[str, Any]:
        from benchmarks import profile_run

        return await profile_run.profile_all(
            self.server("main"), self.run_dir, self.cfg, self.sections, log
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the smaller run (a few minutes)")
    parser.add_argument(
        "--only",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=[],
        help=f"comma-separated sections: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile (py-spy through uvx) the server, worker and TUI",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "latest.json",
        help="where the JSON goes (default: benchmarks/results/latest.json)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run, report, clean up; returns the exit code (1 if a section failed)."""
    args = parse_args(argv)
    cfg = quick_config() if args.quick else full_config()
    install_signal_handlers()
    raise_fd_limit()
    compiled = ensure_bytecode()
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    meta: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "load_before": _load(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _commit(),
        "sections": args.only or [s for s in SECTIONS if s != "profile" or args.profile],
        "bytecode_compiled_s": compiled,
    }
    runner: Runner | None = None
    interrupted = False
    try:
        runner = Runner(args, cfg, make_run_dir())
        asyncio.run(runner.run())
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; cleaning up")
    finally:
        ignore_signals()
        CLEANUP.run_all()
        left = kill_run_processes()
        if left:
            log(f"killed {left} leftover process(es)")
    if runner is None:
        return 130
    meta["load_after"] = _load()
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["section_seconds"] = {k: round(v, 1) for k, v in runner.timings.items()}
    meta["section_load"] = runner.loads
    meta["interrupted"] = interrupted
    flat = report.flatten(runner.sections)
    results: dict[str, Any] = {**flat, "meta": meta}
    results["goals"] = report.goal_rows(flat)
    results["notes"] = make_notes(flat, runner.sections)
    if max(os.getloadavg()[0], load_before) > 1.0:
        results["notes"].append(shared_machine_note(meta))
    results["errors"] = runner.errors
    results["sections"] = runner.sections
    report.write(results, args.out)
    if not args.only and args.out == RESULTS / "latest.json" and not interrupted:
        report.write(results, RESULTS / f"{meta['mode']}.json")  # the last run of each mode
    print(report.markdown(results, flat))
    log(f"wrote {args.out} in {meta['seconds']} s")
    return 130 if interrupted else (1 if runner.errors else 0)


if __name__ == "__main__":
    sys.exit(main())
