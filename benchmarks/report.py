"""Provides the report: the flat keys of ``latest.json``, the goals and how each result
compares, notes on the hot spots of the results that fall short (from the profiles of the same
run), and the Markdown tables printed at the end."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import rounded

#: The reference number of concurrent tasks of the latency goals.
REFERENCE_LEVEL = 50


@dataclass(frozen=True)
class Goal:
    """One goal: ``key`` compared with ``target`` (``<=`` or ``>=``)."""

    title: str
    key: str
    target: float
    op: str
    unit: str

    def met(self, value: float | None) -> bool | None:
        """True/False, or None when the value was not measured."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return value <= self.target if self.op == "<=" else value >= self.target


#: Units a goal's measured value is shown with in the goals table.
_GOAL_UNITS = ("ms", "s", "/s", "MB", "%", "B", "B/s")


def goals() -> list[Goal]:
    """Issue 14's goals (the event pipeline at token-delta rates)."""
    return [
        Goal("Sustained events/s (p99 ≤ 100 ms)", "sustained_events_per_s", 20000, ">=", "/s"),
        Goal("Sustained rate, % of the bare relay's", "sustained_vs_relay_pct", 25, ">=", "%"),
        Goal("Added latency p50 at 50 tasks", "added_p50_ms_50", 2, "<=", "ms"),
        Goal("Added latency p99 at 50 tasks", "added_p99_ms_50", 20, "<=", "ms"),
        Goal("Delta storm: added latency p99", "delta_storm_added_p99_ms", 50, "<=", "ms"),
        Goal("Concurrent tasks, nothing lost", "max_concurrent_tasks_ok", 1000, ">=", ""),
        Goal("TUI terminal bytes per 1,000 events", "tui_bytes_per_1000_events", 300000, "<=", "B"),
        Goal("TUI terminal bytes/s, 4 panes", "tui_bytes_per_s_4_panes", 40000, "<=", "B/s"),
        Goal("TUI event-loop lag p99 during a burst", "tui_lag_p99_ms", 16, "<=", "ms"),
        Goal("TUI cold start to first frame (median)", "tui_cold_start_ms", 300, "<=", "ms"),
    ]


def flatten(sections: dict[str, Any]) -> dict[str, Any]:
    """The flat keys of latest.json from the sections' results."""
    flat: dict[str, Any] = {}
    pipeline = sections.get("pipeline") or {}
    levels = (pipeline.get("latency") or {}).get("levels") or {}
    for n, level in sorted(levels.items()):
        e2e, base, add = level["e2e"], level["baseline"], level["added_ms"]
        flat[f"added_p50_ms_{n}"] = add["p50"]
        flat[f"added_p99_ms_{n}"] = add["p99"]
        flat[f"added_max_ms_{n}"] = add["max"]
        flat[f"e2e_p50_ms_{n}"] = e2e["latency_ms"]["p50"]
        flat[f"e2e_p99_ms_{n}"] = e2e["latency_ms"]["p99"]
        flat[f"baseline_p50_ms_{n}"] = base["latency_ms"]["p50"]
        flat[f"baseline_p99_ms_{n}"] = base["latency_ms"]["p99"]
        flat[f"ok_{n}"] = e2e["ok"]
        steady = e2e["latency_ms_by_phase"]["steady"]
        if steady["n"]:
            flat[f"added_p99_ms_{n}_steady"] = steady["p99"] - base["latency_ms"]["p99"]
    if levels:
        ref = REFERENCE_LEVEL if REFERENCE_LEVEL in levels else max(levels)
        flat["baseline_p99_ms"] = levels[ref]["baseline"]["latency_ms"]["p99"]
        flat["baseline_p50_ms"] = levels[ref]["baseline"]["latency_ms"]["p50"]
    latency = pipeline.get("latency") or {}
    for key in (
        "max_concurrent_tasks_ok",
        "max_concurrent_tasks_tried",
        "rss_mb_per_task",
        "rss_mb_per_task_at_max",
    ):
        if key in latency:
            flat[key] = latency[key]
    sustained = pipeline.get("sustained") or {}
    if sustained:
        flat["sustained_events_per_s"] = sustained["sustained_events_per_s"]
        flat["sqlite_events_per_s"] = sustained["sustained_events_per_s"]
        flat["delivered_at_sustained_per_s"] = sustained.get("delivered_at_sustained")
    if REFERENCE_LEVEL in levels:
        flat["sqlite_added_p99_ms_50"] = levels[REFERENCE_LEVEL]["added_ms"]["p99"]
        flat["sqlite_added_p50_ms_50"] = levels[REFERENCE_LEVEL]["added_ms"]["p50"]
    postgres = sections.get("postgres") or {}
    if postgres.get("sustained"):
        flat["postgres_events_per_s"] = postgres["sustained"]["sustained_events_per_s"]
    pg_level = postgres.get("level") or {}
    if pg_level:
        flat["postgres_added_p99_ms_50"] = pg_level["added_ms"]["p99"]
        flat["postgres_added_p50_ms_50"] = pg_level["added_ms"]["p50"]
    flat.update(_delta_keys(sections.get("deltas") or {}))
    flat.update(_storm_keys(sections.get("storm") or {}))
    relay = {k: v for k, v in (sections.get("relay") or {}).items() if k.startswith("relay_")}
    flat.update(relay)
    flat["sustained_vs_relay_pct"] = relay_pct(
        flat.get("sustained_events_per_s"), relay.get("relay_events_per_s")
    )
    added, floor = flat.get("added_p50_ms_50"), relay.get("relay_floor_p50_ms")
    if added is not None and floor:
        # How far the pipeline's added p50 is from its own libraries' (the same 100 events/s).
        flat["added_p50_vs_relay_floor"] = added / floor
    for name in ("resume", "tui", "cancel", "real_codex"):
        for key, value in (sections.get(name) or {}).items():
            if not isinstance(value, dict | list) or key.endswith("_runs_ms"):
                flat[key] = value
    return flat


def _delta_keys(section: dict[str, Any]) -> dict[str, Any]:
    """The flat keys of the ``deltas`` section, per load (suffix: its number of tasks):
    ``deltas_p50_ms_N``/``deltas_p99_ms_N`` (end to end), ``deltas_pipe_p50_ms_N``/``..p99..``
    (the pipe baseline), ``deltas_p50_ratio_N``/``deltas_p99_ratio_N`` (end to end ÷ pipe),
    ``deltas_added_p99_ms_N``, ``deltas_read_p50_ms_N`` and ``deltas_after_read_p50_ms_N``/
    ``..p99..`` (each event's first delta, from its write to the worker's read, and from there
    to the client), ``deltas_per_event_N`` (coalescing: deltas per stored
    ``item.delta`` event), ``deltas_stored_bytes_per_delta_N``, ``deltas_server_cpu_ms_N`` and
    ``deltas_worker_cpu_ms_N`` (per 1,000 deltas), ``deltas_rss_peak_mb_N`` and ``deltas_ok_N``
    (every delta once, texts whole, every turn idle)."""
    flat: dict[str, Any] = {}
    for load in (section.get("loads") or {}).values():
        e2e, base = load["e2e"], load["baseline"]
        n = e2e["tasks"]
        cpu = e2e.get("cpu_ms_per_1000_deltas") or {}
        flat |= {
            f"deltas_p50_ms_{n}": e2e["latency_ms"]["p50"],
            f"deltas_p99_ms_{n}": e2e["latency_ms"]["p99"],
            f"deltas_pipe_p50_ms_{n}": base["latency_ms"]["p50"],
            f"deltas_pipe_p99_ms_{n}": base["latency_ms"]["p99"],
            f"deltas_p50_ratio_{n}": load["ratio"]["p50"],
            f"deltas_p99_ratio_{n}": load["ratio"]["p99"],
            f"deltas_added_p99_ms_{n}": load["added_ms"]["p99"],
            f"deltas_read_p50_ms_{n}": _get_p(e2e, "worker_read_ms", "p50"),
            f"deltas_after_read_p50_ms_{n}": _get_p(e2e, "after_read_ms", "p50"),
            f"deltas_after_read_p99_ms_{n}": _get_p(e2e, "after_read_ms", "p99"),
            f"deltas_per_event_{n}": e2e["deltas_per_event"],
            f"deltas_stored_bytes_per_delta_{n}": e2e["stored_bytes_per_delta"],
            f"deltas_server_cpu_ms_{n}": cpu.get("server"),
            f"deltas_worker_cpu_ms_{n}": cpu.get("worker"),
            f"deltas_rss_peak_mb_{n}": e2e["rss_peak_mb"],
            f"deltas_ok_{n}": e2e["ok"],
        }
    return flat


def relay_pct(sustained: float | None, relay: float | None) -> float | None:
    """The pipeline's sustained rate as a percentage of the bare relay's (both events/s);
    None unless both were measured and the relay's is positive."""
    if sustained is None or not relay:
        return None
    return 100 * sustained / relay


def _storm_keys(section: dict[str, Any]) -> dict[str, Any]:
    """The flat keys of the ``storm`` section (its one load): ``delta_storm_added_p50_ms``/
    ``..p99..`` (end to end − pipe, ms), ``delta_storm_p50_ms``/``..p99..`` (end to end),
    ``delta_storm_pipe_p50_ms``/``..p99..`` (the pipe baseline), ``delta_storm_tasks``,
    ``delta_storm_offered_per_s`` and ``delta_storm_delivered_per_s`` (deltas/s), the
    integrity counts ``delta_storm_lost``, ``.._duplicated``, ``.._out_of_order``,
    ``.._text_mismatch``, ``.._completed_not_once``, and ``delta_storm_ok`` (all of them 0,
    every turn idle, as many delta events stored as seen)."""
    loads = list((section.get("loads") or {}).values())
    if not loads:
        return {}
    load = loads[0]
    e2e, base, add = load["e2e"], load["baseline"], load["added_ms"]
    flat = {
        "delta_storm_added_p50_ms": add["p50"],
        "delta_storm_added_p99_ms": add["p99"],
        "delta_storm_p50_ms": e2e["latency_ms"]["p50"],
        "delta_storm_p99_ms": e2e["latency_ms"]["p99"],
        "delta_storm_pipe_p50_ms": base["latency_ms"]["p50"],
        "delta_storm_pipe_p99_ms": base["latency_ms"]["p99"],
        "delta_storm_tasks": e2e["tasks"],
        "delta_storm_offered_per_s": e2e["offered_per_s"],
        "delta_storm_delivered_per_s": e2e["delivered_per_s"],
        "delta_storm_ok": e2e["ok"],
    }
    for key in ("lost", "duplicated", "out_of_order", "text_mismatch", "completed_not_once"):
        flat[f"delta_storm_{key}"] = e2e.get(key)
    return flat


def _get_p(e2e: dict[str, Any], key: str, quantile: str) -> float | None:
    return (e2e.get(key) or {}).get(quantile)


def _delta_table(section: dict[str, Any], what: str = "Token deltas") -> list[str]:
    """The Markdown table of the ``deltas`` or ``storm`` section (``what`` opens its
    caption; no lines when it did not run)."""
    loads = section.get("loads") or {}
    if not loads:
        return []
    lines = [
        "",
        f"{what} of conversation turns (app-server runtime), from the fake writing a "
        "delta to the SDK client parsing the event that carries it (ms); pipe = the same "
        "fakes read straight from their pipes; added = end to end − pipe and × pipe = end to "
        "end ÷ pipe, quantile by quantile; deltas per event = "
        "emitted deltas per stored `item.delta` event (the worker's coalescing); CPU in ms per "
        "1,000 deltas.",
        "",
        "| Tasks | Offered /s | Delivered /s | E2E p50 | E2E p99 | Pipe p50 | Pipe p99 | "
        "Added p50 | Added p99 | × pipe p50 | × pipe p99 | Deltas per event | "
        "Stored B per delta | Server CPU | Worker CPU | RSS peak MB | Intact |",
        "|" + " ---: |" * 16 + " :---: |",
    ]
    for load in loads.values():
        e2e, base, ratio = load["e2e"], load["baseline"], load["ratio"]
        lat, blat, add = e2e["latency_ms"], base["latency_ms"], load["added_ms"]
        cpu = e2e.get("cpu_ms_per_1000_deltas") or {}
        lines.append(
            f"| {e2e['tasks']} | {_fmt(e2e['offered_per_s'])} | {_fmt(e2e['delivered_per_s'])} | "
            f"{_fmt(lat['p50'])} | {_fmt(lat['p99'])} | {_fmt(blat['p50'])} | "
            f"{_fmt(blat['p99'])} | {_fmt(add['p50'])} | {_fmt(add['p99'])} | "
            f"{_fmt(ratio['p50'])} | {_fmt(ratio['p99'])} | "
            f"{_fmt(e2e['deltas_per_event'])} | {_fmt(e2e['stored_bytes_per_delta'])} | "
            f"{_fmt(cpu.get('server'))} | {_fmt(cpu.get('worker'))} | "
            f"{_fmt(e2e['rss_peak_mb'])} | {'✓' if e2e['ok'] else '✗'} |"
        )
    return lines


def _relay_table(section: dict[str, Any]) -> list[str]:
    """The Markdown table of the ``relay`` section's steps (no lines when it did not run)."""
    steps = section.get("steps") or []
    if not steps:
        return []
    lines = [
        "",
        "Bare relay (FastAPI on uvicorn, sse-starlette, httpx and httpx-sse; no store, no "
        "auth): one producer process uploading batches, one SSE consumer; latency from the "
        "producer making an event to the consumer parsing it (ms); CPU in ms per 1,000 events.",
        "",
        "| Offered /s | Delivered /s | p50 | p99 | Steady p99 | Max | Relay CPU | "
        "Producer CPU | Consumer CPU | Intact | Passed |",
        "|" + " ---: |" * 9 + " :---: | :---: |",
    ]
    for step in steps:
        lat, cpu = step["latency_ms"], step.get("cpu_ms_per_1000_events") or {}
        lines.append(
            f"| {_fmt(step['offered_per_s'])} | {_fmt(step['delivered_per_s'])} | "
            f"{_fmt(lat['p50'])} | {_fmt(lat['p99'])} | {_fmt(step.get('steady_p99_ms'))} | "
            f"{_fmt(lat['max'])} | {_fmt(cpu.get('relay'))} | {_fmt(cpu.get('producer'))} | "
            f"{_fmt(cpu.get('client'))} | {'✓' if step['ok'] else '✗'} | "
            f"{'✓' if step.get('passed') else '✗'} |"
        )
    return lines


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        text = (
            f"{value:,.0f}"
            if abs(value) >= 100
            else f"{value:.1f}"
            if abs(value) >= 10
            else f"{value:.2f}"
        )
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def goal_rows(flat: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its measured value and whether it is met."""
    rows = []
    for goal in goals():
        value = flat.get(goal.key)
        met = goal.met(value)
        if (
            goal.key == "max_concurrent_tasks_ok"
            and met is False
            and value == flat.get("max_concurrent_tasks_tried")
        ):
            met = None  # every level tried passed; the target level was not tried
        rows.append(
            {
                "goal": goal.title,
                "key": goal.key,
                "target": f"{goal.op} {goal.target:g} {goal.unit}".strip(),
                "measured": rounded(value) if isinstance(value, float) else value,
                "met": met,
            }
        )
    return rows


def markdown(results: dict[str, Any], flat: dict[str, Any]) -> str:
    """The Markdown tables of a run (``flat``: its flat keys)."""
    meta = results["meta"]
    lines = [
        f"Mode: {meta['mode']}, {meta['started']}, {meta['cpus']} CPUs, load average (1, 5 "
        f"and 15 min) {meta['load_before']} before and {meta['load_after']} after; "
        f"{meta['commit']}.",
    ]
    if meta.get("section_load"):
        at_start = "; ".join(f"{name} {load}" for name, load in meta["section_load"].items())
        lines.append(f"Load average at the start of each section: {at_start}.")
    lines += [
        "",
        "| Goal | Key | Measured | Target | Met |",
        "| --- | --- | ---: | ---: | :---: |",
    ]
    for row in results["goals"]:
        met = {True: "✓", False: "✗", None: "–"}[row["met"]]
        unit = row["target"].split()[-1] if row["target"].split()[-1] in _GOAL_UNITS else ""
        lines.append(
            f"| {row['goal']} | `{row['key']}` | {_fmt(row['measured'], unit)} | "
            f"{row['target']} | {met} |"
        )
    levels = ((results["sections"].get("pipeline") or {}).get("latency") or {}).get("levels")
    if levels:
        lines += [
            "",
            "Latency per event, from codex writing the line to the SDK client parsing it (ms); "
            "pipe = the same fakes read straight from a pipe; added = end to end − pipe, "
            "quantile by quantile.",
            "",
            "| Tasks | Offered /s | Delivered /s | E2E p50 | E2E p99 | E2E max | Pipe p50 | "
            "Pipe p99 | Added p50 | Added p99 | Added max | Added p99 steady | Nothing lost |",
            "|" + " ---: |" * 12 + " :---: |",
        ]
        for n, level in sorted(levels.items()):
            e2e, base, add = level["e2e"], level["baseline"], level["added_ms"]
            lat, blat = e2e["latency_ms"], base["latency_ms"]
            lines.append(
                f"| {n} | {_fmt(e2e['offered_per_s'])} | {_fmt(e2e['delivered_per_s'])} | "
                f"{_fmt(lat['p50'])} | {_fmt(lat['p99'])} | {_fmt(lat['max'])} | "
                f"{_fmt(blat['p50'])} | {_fmt(blat['p99'])} | {_fmt(add['p50'])} | "
                f"{_fmt(add['p99'])} | {_fmt(add['max'])} | "
                f"{_fmt(flat.get(f'added_p99_ms_{n}_steady'))} | {'✓' if e2e['ok'] else '✗'} |"
            )
    lines += _relay_table(results["sections"].get("relay") or {})
    lines += _delta_table(results["sections"].get("deltas") or {})
    lines += _delta_table(results["sections"].get("storm") or {}, "Delta storm: token deltas")
    other = [
        ("Pipe floor p50 (the fakes read from pipes, 50 tasks)", "baseline_p50_ms", "ms"),
        ("Pipe floor p99 (the fakes read from pipes, 50 tasks)", "baseline_p99_ms", "ms"),
        ("Bare relay: sustained events/s", "relay_events_per_s", "/s"),
        ("Bare relay: latency p50 at that rate", "relay_p50_ms", "ms"),
        ("Bare relay: latency p99 at that rate", "relay_p99_ms", "ms"),
        (
            "Bare relay at 100 events/s: latency p50 (the floor of added latency)",
            "relay_floor_p50_ms",
            "ms",
        ),
        ("Bare relay at 100 events/s: latency p99", "relay_floor_p99_ms", "ms"),
        (
            "Added p50 at 50 tasks ÷ the bare relay's p50 at 100 events/s",
            "added_p50_vs_relay_floor",
            "×",
        ),
        ("Delta storm: added latency p50", "delta_storm_added_p50_ms", "ms"),
        ("Delta storm: every delta once, in order, texts whole", "delta_storm_ok", ""),
        ("Sustained events/s, SQLite", "sqlite_events_per_s", "/s"),
        ("Sustained events/s, PostgreSQL", "postgres_events_per_s", "/s"),
        ("Added p99 at 50 tasks, SQLite", "sqlite_added_p99_ms_50", "ms"),
        ("Added p99 at 50 tasks, PostgreSQL", "postgres_added_p99_ms_50", "ms"),
        ("RSS per running task (at the largest level)", "rss_mb_per_task_at_max", "MB"),
        ("Resume: first replayed event", "resume_first_event_ms", "ms"),
        ("Resume: replay rate (SDK)", "replay_events_per_s", "/s"),
        ("Resume: replay rate (raw SSE)", "replay_raw_events_per_s", "/s"),
        ("TUI cold start to first frame, best run", "tui_cold_start_best_ms", "ms"),
        (
            "Cold start of a bare Textual app of the same shape (the floor, median)",
            "tui_cold_start_floor_ms",
            "ms",
        ),
        ("TUI cold start ÷ the bare Textual app's", "tui_cold_start_vs_floor", "×"),
        (
            "TUI cold start, CPU time used by the first frame (median)",
            "tui_cold_start_cpu_ms",
            "ms",
        ),
        ("TUI burst: garbage collection pauses in all", "tui_gc_pause_ms", "ms"),
        ("TUI burst: longest garbage collection pause", "tui_gc_max_pause_ms", "ms"),
        ("TUI memory per retained event", "tui_bytes_per_line", "B"),
        ("TUI terminal bytes per 1,000 events, 30 events/s", "tui_bytes_per_1000_events", "B"),
        (
            "TUI terminal bytes per 1,000 events, 1,000 events/s",
            "tui_bytes_per_1000_events_1000",
            "B",
        ),
        ("TUI burst into a pane", "tui_burst_events_per_s", "/s"),
        ("Server + worker RSS per running task", "rss_mb_per_task", "MB"),
        ("Cancel: codex exits on SIGINT", "cancel_s", "s"),
        (
            "Cancel: codex ignores SIGINT (killed after the grace period)",
            "cancel_ignore_sigint_s",
            "s",
        ),
        ("Cancel: canceled status at the client (SIGINT)", "cancel_sleep_status_s", "s"),
        ("Real codex: end of turn, pipe", "real_codex_pipe_total_s", "s"),
        ("Real codex: end of turn, end to end", "real_codex_e2e_total_s", "s"),
        ("Real codex: added to the turn", "real_codex_added_total_s", "s"),
    ]
    rows = [(t, k, u) for t, k, u in other if flat.get(k) is not None]
    if rows:
        lines += ["", "| Other measurement | Key | Result |", "| --- | --- | ---: |"]
        lines += [f"| {t} | `{k}` | {_fmt(flat[k], u)} |" for t, k, u in rows]
    if results.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines)


def write(results: dict[str, Any], path: Path) -> None:
    """Write ``results`` as JSON (NaN as null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return None if math.isnan(value) or math.isinf(value) else round(value, 3)
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(results), indent=2, ensure_ascii=False) + "\n")
