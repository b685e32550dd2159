"""Provides the pipeline benchmarks: added latency by number of concurrent tasks, sustained
throughput (offered rate stepped up until p99 passes 100 ms), the largest number of concurrent
tasks with nothing lost, memory per running task, and the same on PostgreSQL.

Latency levels use one offered aggregate rate for every level (``aggregate_per_s``, each task
at ``aggregate_per_s / N`` events per second, at most ``single_rate``), so that the levels
differ in concurrency (tasks, codex processes, uploads and SSE streams at once), not in load.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import Server, rounded, start_server
from benchmarks.load import LoadSpec, bench_client, run_baseline, run_load

#: The p99 (ms) a sustained rate must stay under.
SUSTAINED_P99_MS = 100.0

Log = Callable[[str], None]


@dataclass
class PipelineConfig:
    """Sizes of the pipeline benchmarks (see ``benchmarks.__main__`` for quick and full).

    Attributes:
        levels: Numbers of concurrent tasks for the latency levels.
        level_s: Seconds each level streams.
        aggregate_per_s: Offered events/s of a level, over all its tasks.
        single_rate: Most events/s one task prints.
        fresh_server_per_level: A new server for each level (clean memory figures).
        step_tasks: Concurrent tasks while stepping the offered rate.
        steps: Offered aggregate rates tried, in order, until one fails.
        step_s: Seconds each step streams (longer at low rates: ≥ 5 events per task).
        refine: Bisection steps between the last passing and the first failing rate.
        capacity_probe: Levels tried after the largest one passed, until one fails.
    """

    levels: list[int]
    level_s: float
    aggregate_per_s: float
    single_rate: float
    fresh_server_per_level: bool
    step_tasks: int
    steps: list[float]
    step_s: float
    refine: int
    capacity_probe: list[int] = field(default_factory=list)

    def level_spec(self, tasks: int) -> LoadSpec:
        """The load of the level with ``tasks`` concurrent tasks."""
        rate = min(self.single_rate, self.aggregate_per_s / tasks)
        return LoadSpec(tasks, max(3, round(rate * self.level_s)), rate)

    def step_spec(self, offered: float) -> LoadSpec:
        """The load of the step offering ``offered`` events/s in all."""
        rate = offered / self.step_tasks
        return LoadSpec(self.step_tasks, max(5, round(rate * self.step_s)), rate)


def steady_p99(result: dict[str, Any]) -> float:
    """The p99 of the steady state: events written neither in the first second after the
    start nor in their task's last second (ramp and exit effects left out), or of all events
    when too few are left."""
    steady = result["latency_ms_by_phase"]["steady"]
    return float(steady["p99"] if steady["n"] >= 20 else result["latency_ms"]["p99"])


def judge_step(result: dict[str, Any], offered: float) -> bool:
    """Whether a step at ``offered`` events/s passes: nothing lost (``ok``), the steady p99
    (:func:`steady_p99`) at most :data:`SUSTAINED_P99_MS` and at least 90 % of the offered
    rate delivered. Sets ``steady_p99_ms`` (ms) and ``passed`` in ``result``."""
    p99 = steady_p99(result)
    result["steady_p99_ms"] = p99
    result["passed"] = bool(
        result["ok"] and p99 <= SUSTAINED_P99_MS and result["delivered_per_s"] >= 0.9 * offered
    )
    return bool(result["passed"])


def brief(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    return (
        f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms (steady {steady_p99(result):.1f}), "
        f"max {lat['max']:.1f} ms, "
        f"{result['delivered_per_s']:.0f}/s delivered, "
        f"{'ok' if result['ok'] else 'NOT OK: ' + _problems(result)}"
    )


def _problems(result: dict[str, Any]) -> str:
    keys = ("lost", "duplicated", "out_of_order", "seq_gaps", "stored_last_seq_mismatch")
    parts = [f"{k} {result[k]}" for k in keys if result.get(k)]
    if result.get("timed_out"):
        parts.append("timed out")
    if result["statuses"].get("completed", 0) != result["tasks"]:
        parts.append(f"statuses {result['statuses']}")
    parts += result.get("errors") or []
    return ", ".join(parts) or "?"


def added(e2e: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """End-to-end minus baseline, quantile by quantile (ms)."""
    out: dict[str, float | None] = {}
    for key in ("p50", "p90", "p99", "max"):
        a, b = e2e["latency_ms"].get(key), baseline["latency_ms"].get(key)
        out[key] = None if a is None or b is None or math.isnan(a - b) else a - b
    return out


async def run_level(
    server: Server,
    spec: LoadSpec,
    run_dir: Path,
    log: Log,
    on_running: Callable[[], Awaitable[None]] | None = None,
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One level: the load end to end, then the same fakes through pipes (unless
    ``baseline``, the pipe baseline of the same load measured earlier in this run, is
    given)."""
    log(
        f"  {spec.tasks} task(s) × {spec.events} events at {spec.rate:g}/s "
        f"({spec.offered_per_s:g}/s offered)"
    )
    async with bench_client(server) as client:
        e2e = await run_load(
            server, client, spec, run_dir / "gates", log=log, on_running=on_running
        )
    log(f"    end to end: {brief(e2e)}")
    if baseline is None:
        baseline = await run_baseline(spec, run_dir / "gates", server.workdir)
        lat = baseline["latency_ms"]
        log(f"    pipe baseline: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
    return {"e2e": e2e, "baseline": baseline, "added_ms": added(e2e, baseline)}


async def latency_levels(
    run_dir: Path,
    cfg: PipelineConfig,
    log: Log,
    main_server: Server,
    *,
    db_url: str | None = None,
    name: str = "sqlite",
) -> dict[str, Any]:
    """Every level (and the capacity probe), on fresh servers or on ``main_server``."""
    levels: dict[int, Any] = {}
    for tasks in [*cfg.levels, *cfg.capacity_probe]:
        probing = tasks not in cfg.levels
        if probing and not _worth_probing(levels):
            log(f"{name}: capacity probe {tasks} skipped (a level lost events or tasks)")
            break
        log(f"{name}: {'capacity probe' if probing else 'latency level'} {tasks}")
        server = main_server
        fresh = cfg.fresh_server_per_level and tasks > 1
        if fresh:
            server = start_server(
                run_dir, name=f"{name}-level{tasks}", max_tasks=max(tasks, 4), db_url=db_url
            )
        try:
            levels[tasks] = await run_level(server, cfg.level_spec(tasks), run_dir, log)
            levels[tasks]["fresh_server"] = fresh or tasks == 1
        finally:
            if fresh:
                server.stop()
        if probing and not levels[tasks]["e2e"]["ok"]:
            break
    return {"levels": levels, **_capacity(levels)}


def _worth_probing(levels: dict[int, Any]) -> bool:
    """Probe further only if every level passed (nothing lost, every task completed). A
    largest level that fell behind its offered rate is probed past all the same: the capacity
    goal counts tasks that lose nothing, however slowly they stream."""
    return bool(levels) and all(r["e2e"]["ok"] for r in levels.values())


def _capacity(levels: dict[int, Any]) -> dict[str, Any]:
    """The largest level with nothing lost, and server + worker RSS per running task."""
    ok_levels = [n for n, r in levels.items() if r["e2e"]["ok"] and r["e2e"]["ready"] == n]
    points = [
        (n, r["e2e"]["rss_peak_mb"] - r["e2e"]["rss_idle_mb"])
        for n, r in levels.items()
        if r["e2e"]["ok"]
    ]
    slope = None
    if len(points) >= 2:
        mean_n = sum(n for n, _ in points) / len(points)
        mean_m = sum(m for _, m in points) / len(points)
        var = sum((n - mean_n) ** 2 for n, _ in points)
        if var:
            slope = sum((n - mean_n) * (m - mean_m) for n, m in points) / var
    top = max(ok_levels, default=None)
    tried = max(levels, default=0)
    per_task_top = None
    if top is not None and top > 1:
        e2e = levels[top]["e2e"]
        per_task_top = (e2e["rss_peak_mb"] - e2e["rss_idle_mb"]) / top
    return {
        "max_concurrent_tasks_ok": top or 0,
        "max_concurrent_tasks_tried": tried,
        "rss_mb_per_task": slope if slope is not None else per_task_top,
        "rss_mb_per_task_at_max": per_task_top,
        "rss_points": [(n, rounded(m)) for n, m in points],
    }


async def step_rates(
    steps: Sequence[float],
    run_step: Callable[[float], Awaitable[dict[str, Any]]],
    *,
    refine: int = 0,
    fallback: Sequence[float] | None = None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Find the highest offered rate that passes: try ``steps`` (events/s, rising) in turn
    until one fails; when the first already fails, try the ``fallback`` rates (highest first)
    until one passes; then bisect ``refine`` times between the last passing and the first
    failing rate (stopping once they are within 25 events/s or 10 %).

    Args:
        steps: Offered rates (events/s), lowest first.
        run_step: Runs one step at an offered rate; its result has ``passed`` (bool) and
            ``offered_per_s`` (events/s).
        refine: Bisection steps.
        fallback: Rates below the first step (events/s), highest first.

    Returns:
        ``(passing, failing)``: the result of the highest passing step and of the lowest
        failing one (None when no step passed, or none failed).
    """
    passing: dict[str, Any] | None = None
    failing: dict[str, Any] | None = None
    for offered in steps:
        result = await run_step(offered)
        if result["passed"]:
            passing = result
        else:
            failing = result
            break
    if passing is None:
        for offered in fallback or ():
            result = await run_step(offered)
            if result["passed"]:
                passing = result
                break
            failing = result
    for _ in range(refine):
        if passing is None or failing is None:
            break
        low, high = passing["offered_per_s"], failing["offered_per_s"]
        if high - low <= max(25.0, 0.1 * low):
            break
        result = await run_step(round((low + high) / 2))
        if result["passed"]:
            passing = result
        else:
            failing = result
    return passing, failing


async def sustained(
    server: Server,
    run_dir: Path,
    cfg: PipelineConfig,
    log: Log,
    *,
    name: str = "sqlite",
    on_step: Callable[[float], Callable[[], Awaitable[None]] | None] | None = None,
    fallback: list[float] | None = None,
) -> dict[str, Any]:
    """Step the offered aggregate rate up until the steady-state p99 (:func:`steady_p99`)
    passes 100 ms (or events are lost, or fewer than 90 % are delivered at the offered rate),
    then bisect ``cfg.refine`` times.

    ``on_step(offered)`` may return a coroutine function run when the step's load starts
    (e.g. a profiler). When the first step already fails, the ``fallback`` rates (highest
    first) are tried until one passes.
    """
    steps: list[dict[str, Any]] = []

    async def step(offered: float) -> dict[str, Any]:
        spec = cfg.step_spec(offered)
        log(f"{name}: offered {offered:g} events/s ({spec.tasks} tasks × {spec.rate:g}/s)")
        hook = on_step(offered) if on_step is not None else None
        async with bench_client(server) as client:
            result = await run_load(
                server, client, spec, run_dir / "gates", log=log, on_running=hook
            )
        judge_step(result, offered)
        log(f"    {brief(result)} → {'pass' if result['passed'] else 'fail'}")
        steps.append(result)
        return result

    passing, failing = await step_rates(cfg.steps, step, refine=cfg.refine, fallback=fallback)
    return {
        "steps": steps,
        "sustained_events_per_s": passing["offered_per_s"] if passing else 0.0,
        "delivered_at_sustained": passing["delivered_per_s"] if passing else None,
        "first_failing": failing["offered_per_s"] if failing else None,
        "steady_p99_at_first_failing_ms": failing["steady_p99_ms"] if failing else None,
        "steady_p99_at_sustained_ms": passing["steady_p99_ms"] if passing else None,
        "p99_at_sustained_ms": passing["latency_ms"]["p99"] if passing else None,
        "tasks": cfg.step_tasks,
    }
