"""Provides the notes of a run: for each goal that falls short, the measured value, what was
already done about it, the hot spot that remains (with its share of the busy samples of the
profiles taken in the same run, when they were taken) and why.

The wording lives in ``benchmarks/notes.md`` (one template per fragment, see its opening);
this module picks the notes and fragments that apply to a run and fills in the figures, every
one of them from the run itself, so a note stays true to its own run. A goal that is met gets
no hot-spot note.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from benchmarks.report import REFERENCE_LEVEL, goal_rows, goals

#: The notes' wording: Markdown, one ``### `id` `` fragment per template.
NOTES_MD = Path(__file__).with_name("notes.md")

#: The sustained-rate goal (events/s), for the CPU budget per event it implies.
_RATE_GOAL = 20_000

_FRAGMENT = re.compile(r"^###\s+`([^`]+)`\s*$")
_LABEL = re.compile(r"^-\s+`([^`]+)`:\s*(.+?)\s*$")


@dataclass(frozen=True)
class Fragment:
    """One fragment of ``notes.md``.

    Attributes:
        text: the template (its lines joined with single spaces), in ``str.format`` syntax.
        labels: ``(key, label)`` pairs of its ``- `key`: label`` lines, in file order.
    """

    text: str
    labels: tuple[tuple[str, str], ...]


def parse_fragments(markdown: str) -> dict[str, Fragment]:
    """The fragments of a notes file.

    A fragment starts at a ``### `id` `` heading: its template is the first paragraph after
    the heading (lines joined with single spaces), its labels the ``- `key`: label`` lines
    that follow. The next heading, or a paragraph after those, ends it; such paragraphs are
    for readers only.

    Raises:
        ValueError: an id appears twice.
    """
    fragments: dict[str, Fragment] = {}
    current: str | None = None
    lines: list[str] = []
    labels: list[tuple[str, str]] = []
    paragraph_done = False

    def close() -> None:
        if current is None:
            return
        if current in fragments:
            raise ValueError(f"{NOTES_MD.name}: fragment {current!r} appears twice")
        fragments[current] = Fragment(" ".join(lines), tuple(labels))

    for raw in markdown.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            close()
            match = _FRAGMENT.match(line)
            current = match.group(1) if match else None
            lines, labels, paragraph_done = [], [], False
        elif current is None:
            continue
        elif not line:
            paragraph_done = paragraph_done or bool(lines)
        elif label := _LABEL.match(line):
            labels.append((label.group(1), label.group(2)))
            paragraph_done = True
        elif not paragraph_done:
            lines.append(line)
        else:  # a paragraph for readers: the fragment has ended
            close()
            current = None
    close()
    return fragments


@cache
def _fragments() -> dict[str, Fragment]:
    return parse_fragments(NOTES_MD.read_text(encoding="utf-8"))


def text(fragment_id: str, **figures: Any) -> str:
    """Fragment ``fragment_id`` of ``notes.md`` filled with ``figures``.

    Raises:
        KeyError: no such fragment, or its template names a figure that was not given.
    """
    return _fragments()[fragment_id].text.format(**figures)


def _labels(fragment_id: str) -> list[tuple[str, str]]:
    return list(_fragments()[fragment_id].labels)


def _get(data: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _pct(spots: dict[str, Any], key: str) -> str:
    value = spots.get(key)
    return f"{value:.0f}%" if isinstance(value, int | float) else "?"


def _shares(spots: dict[str, Any], labels: list[tuple[str, str]]) -> str:
    """``label N%, …`` for the hot spots of ``labels`` that were measured."""
    return ", ".join(f"{label} {_pct(spots, key)}" for key, label in labels if key in spots)


def _profile(fragment_id: str, spots: dict[str, Any], **figures: Any) -> str:
    """`` head label N%, ….`` for the hot spots the fragment lists that were measured, or ''."""
    shares = _shares(spots, _labels(fragment_id))
    return f" {text(fragment_id, **figures)} {shares}." if shares else ""


def _cpu(cpu: dict[str, Any], names: str = "cpu-names") -> str:
    """``server N, worker N, … ms``: CPU per process, for those measured, named and ordered
    by the labels of fragment ``names``."""
    parts = [
        f"{label} {cpu[key]:,.0f}" for key, label in _labels(names) if cpu.get(key) is not None
    ]
    return ", ".join(parts) + " ms"


def _per_task(load: dict[str, Any]) -> float:
    """Events/s per task of a load (a level, a step or a profile's load)."""
    if load.get("rate_per_task") is not None:
        return float(load["rate_per_task"])
    return float(load.get("offered_per_s") or 0) / max(int(load.get("tasks") or 1), 1)


def _levels(sections: dict[str, Any]) -> dict[int, Any]:
    """The latency levels by task count (JSON read back from a results file has them as
    strings)."""
    levels = _get(sections, "pipeline", "latency", "levels") or {}
    return {int(tasks): level for tasks, level in levels.items()}


def _spots(sections: dict[str, Any], profile: str, process: str) -> dict[str, Any]:
    return _get(sections, "profile", profile, process, "hot_spots_pct") or {}


def _latency_note(flat: dict[str, Any], sections: dict[str, Any], exits: bool) -> str:
    ref = _levels(sections).get(REFERENCE_LEVEL) or {}
    e2e = ref.get("e2e") or {}
    steady = _get(e2e, "latency_ms_by_phase", "steady") or {}
    note = text(
        "latency",
        level=REFERENCE_LEVEL,
        p50=flat.get("added_p50_ms_50", 0),
        p99=flat.get("added_p99_ms_50", 0),
        offered=e2e.get("offered_per_s", 0),
        rate=e2e.get("rate_per_task") or 0,
        steady_p99=steady.get("p99", 0),
        exits=", " + text("latency.exits") if exits else "",
    )
    if flat.get("relay_floor_p50_ms") and flat.get("added_p50_vs_relay_floor"):
        note += " " + text(
            "latency.floor",
            rate=flat.get("relay_floor_rate_per_s") or 0,
            p50=flat["relay_floor_p50_ms"],
            ratio=flat["added_p50_vs_relay_floor"],
        )
    note += " " + text("latency.done")
    # The concurrency profile's load (a few events/s per task) and the throughput profile's
    # (more per task); without profiles, the reference level alone.
    alone = _get(sections, "profile", "concurrency", "load") or e2e
    faster = _get(sections, "profile", "throughput", "load") or {}
    cpu_alone = alone.get("cpu_ms_per_1000_events") or {}
    note += " " + text("latency.hot-spot", per_task=_per_task(alone))
    if cpu_alone.get("server") is not None:
        note += ": " + text("latency.cpu", tasks=alone.get("tasks"), cpu=_cpu(cpu_alone))
        cpu_more = faster.get("cpu_ms_per_1000_events") or {}
        if cpu_more.get("server"):
            note += ", " + text(
                "latency.cpu-compared",
                cpu=_cpu(cpu_more),
                tasks=faster.get("tasks"),
                per_task=_per_task(faster),
            )
    note += "."
    note += _profile("latency.server-profile", _spots(sections, "concurrency", "server"))
    worker = _profile("latency.worker-profile", _spots(sections, "concurrency", "worker"))
    if worker:
        note += worker + " " + text("latency.per-request")
    return note


def _throughput_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    sustained = _get(sections, "pipeline", "sustained") or {}
    failing = sustained.get("first_failing")
    note = text(
        "throughput",
        rate=flat.get("sustained_events_per_s", 0),
        tasks=sustained.get("tasks"),
    )
    step = next(
        (s for s in sustained.get("steps") or [] if s.get("offered_per_s") == failing), None
    )
    if failing:
        note += "; " + text("throughput.failed", failing=failing)
        if sustained.get("steady_p99_at_first_failing_ms") is not None:
            p99 = sustained["steady_p99_at_first_failing_ms"]
            note += " " + text("throughput.failed-steady", p99=p99)
    note += "."
    cpu = (step or {}).get("cpu_ms_per_1000_events") or {}
    total = sum(v for v in cpu.values() if isinstance(v, int | float))
    cores = os.cpu_count() or 1
    if total:
        budget = cores * 1e6 / _RATE_GOAL
        note += " " + text(
            # Within 1.5× of the budget: the cores are nearly full before the goal.
            "throughput.cpu" if total >= 1.5 * budget else "throughput.cpu-busy",
            cores=cores,
            failing=failing,
            total=total,
            cpu=_cpu(cpu),
            capacity=cores * 1e6 / total,
            goal=_RATE_GOAL,
            budget=budget,
            factor=total / budget,
            busy_pct=100 * failing * total / (cores * 1e6) if failing else 0,
        )
    note += _profile("throughput.server-profile", _spots(sections, "throughput", "server"))
    note += _profile("throughput.worker-profile", _spots(sections, "throughput", "worker"))
    note += _profile("throughput.client-profile", _spots(sections, "throughput", "client"))
    return note


def _exit_sample(sections: dict[str, Any]) -> dict[str, Any] | None:
    """A load whose task exits stand out: events written in a task's last second have a p99
    at least 1.5× that of the steady state (the reference level first, else the first step)."""
    ref = (_levels(sections).get(REFERENCE_LEVEL) or {}).get("e2e")
    steps = _get(sections, "pipeline", "sustained", "steps") or []
    samples: list[dict[str, Any] | None] = [ref, steps[0] if steps else None]
    for sample in samples:
        if not sample:
            continue
        phases = sample.get("latency_ms_by_phase") or {}
        last, steady = phases.get("last_s") or {}, phases.get("steady") or {}
        if last.get("n") and steady.get("n") and last["p99"] >= 1.5 * steady["p99"]:
            return sample
    return None


def _task_end_ms(sections: dict[str, Any]) -> dict[str, float]:
    """CPU (ms) a task costs each process beyond its events, mostly its end (the loads are
    measured from the moment their tasks run until every task ended), estimated from the
    concurrency and exits profiles' loads (same tasks and rate, different events per task):
    per task, CPU = fixed + events × per event. Empty without both loads or when an estimate
    is not positive."""
    many = _get(sections, "profile", "concurrency", "load") or {}
    few = _get(sections, "profile", "exits", "load") or {}
    e_many, e_few = many.get("events_per_task"), few.get("events_per_task")
    if not e_many or not e_few or e_many == e_few or many.get("tasks") != few.get("tasks"):
        return {}
    out: dict[str, float] = {}
    for process in ("server", "worker", "codex"):
        c_many = _get(many, "cpu_ms_per_1000_events", process)
        c_few = _get(few, "cpu_ms_per_1000_events", process)
        if c_many is None or c_few is None:
            continue
        per_task_many, per_task_few = c_many * e_many / 1000, c_few * e_few / 1000
        per_event = (per_task_many - per_task_few) / (e_many - e_few)
        fixed = per_task_few - per_event * e_few
        if fixed > 0:
            out[process] = fixed
    return out


def _exit_note(sample: dict[str, Any], sections: dict[str, Any]) -> str:
    phases = sample["latency_ms_by_phase"]
    load = _get(sections, "profile", "exits", "load") or {}
    note = text(
        "exits",
        tasks=sample["tasks"],
        rate=sample["rate_per_task"],
        last_p99=phases["last_s"]["p99"],
        steady_p99=phases["steady"]["p99"],
    )
    ends = _task_end_ms(sections)
    if ends:
        tasks = load.get("tasks") or 0
        names = dict(_labels("cpu-names"))
        note += ", " + text(
            "exits.per-task",
            ends=", ".join(f"{names[k]} {v:.0f}" for k, v in ends.items()),
            cpu_s=tasks * sum(ends.values()) / 1000,
            tasks=tasks,
        )
    note += ". " + text("exits.finish")
    note += _profile(
        "exits.server-profile", _spots(sections, "exits", "server"), tasks=load.get("tasks")
    )
    note += _profile("exits.worker-profile", _spots(sections, "exits", "worker"))
    return note


def _concurrency_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    levels = _levels(sections)
    top = max(levels)
    e2e = (levels.get(top) or {}).get("e2e") or {}
    note = text(
        "concurrency",
        ok=flat.get("max_concurrent_tasks_ok"),
        tried=flat.get("max_concurrent_tasks_tried"),
    )
    if e2e:
        note += "; " + text(
            "concurrency.top",
            top=top,
            offered=e2e.get("offered_per_s", 0),
            delivered=e2e.get("delivered_per_s", 0),
            p50=e2e["latency_ms"]["p50"],
            ready=e2e.get("ready"),
            ramp_s=e2e.get("ramp_s", 0),
        )
        used = _get(e2e, "cpu_s", "worker")
        if used is not None:
            note += ", " + text("concurrency.worker-cpu", cpu_s=used)
        lost_tasks = (e2e.get("statuses") or {}).get("lost")
        if lost_tasks:
            note += "; " + text("concurrency.lost", lost=lost_tasks)
    note += ". " + text("concurrency.done")
    tasks = _get(sections, "profile", "concurrency", "load", "tasks")
    note += _profile(
        "concurrency.worker-profile", _spots(sections, "concurrency", "worker"), tasks=tasks
    )
    note += _profile("concurrency.server-profile", _spots(sections, "concurrency", "server"))
    if e2e:
        note += " " + text(
            "concurrency.spread",
            top=top,
            offered=e2e.get("offered_per_s", 0),
            per_task=_per_task(e2e),
        )
    return note


def _gc_text(flat: dict[str, Any], sections: dict[str, Any], *, why: bool) -> str:
    """What Python's garbage collector did during the burst (and, with ``why``, why it runs
    so often), or ''."""
    gc_ms = flat.get("tui_gc_pause_ms")
    by_gen = _get(sections, "tui", "tui_gc_by_generation") or {}
    if gc_ms is None or not by_gen:
        return ""
    count = sum(g.get("collections", 0) for g in by_gen.values())
    name, longest = max(by_gen.items(), key=lambda kv: kv[1].get("max_ms", 0))
    note = text("gc", count=count, gc_ms=gc_ms, longest=longest.get("max_ms", 0), generation=name)
    young = (by_gen.get("gen0") or {}).get("collections")
    if why and young:
        note += ": " + text("gc.why", every=flat.get("tui_burst_events", 0) / young)
    return note + "."


def _tui_lag_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    burst_s = flat.get("tui_burst_s") or 0.0
    note = text(
        "tui-lag",
        p99=flat.get("tui_lag_p99_ms", 0),
        max=flat.get("tui_lag_max_ms", 0),
        events=flat.get("tui_burst_events", 0),
        burst_s=burst_s,
    )
    slow = flat.get("tui_slow_ticks")
    gc_pct = flat.get("tui_slow_ticks_gc_pct")
    gc_first = gc_pct is not None and gc_pct >= 50
    if slow and gc_pct is not None:
        per_redraw = 0.5 <= slow / max(burst_s / 0.1, 1) <= 1.5
        late = text("tui-lag.late", slow=slow)
        if per_redraw:
            late += ", " + text("tui-lag.per-redraw")
        fragment = "tui-lag.gc" if gc_first else "tui-lag.loop"
        note += " " + text(fragment, late=late, gc_pct=gc_pct)
    gc_text = _gc_text(flat, sections, why=gc_first)
    if gc_text:
        note += " " + gc_text
    tui = _spots(sections, "tui", "tui")
    if tui:
        names = _labels("tui-lag.profile")
        ranked = sorted(
            ((k, label) for k, label in names if k in tui), key=lambda kv: -float(tui[kv[0]] or 0)
        )
        note += (
            " "
            + text("tui-lag.profile")
            + " "
            + ", ".join(f"{label} {_pct(tui, k)}" for k, label in ranked[:5])
            + "."
        )
    return note


def _cold_start_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    wall = flat.get("tui_cold_start_ms", 0)
    runs = len(flat.get("tui_cold_start_runs_ms") or [])
    note = text("cold-start", wall=wall)
    if flat.get("tui_cold_start_best_ms") is not None:
        note += " " + text("cold-start.runs", runs=runs, best=flat["tui_cold_start_best_ms"])
    cpu = flat.get("tui_cold_start_cpu_ms")
    if cpu is not None:
        note += "; " + text("cold-start.cpu", cpu=cpu)
        if cpu >= 0.8 * wall:
            note += ", " + text("cold-start.cpu-bound")
        else:
            note += ", " + text("cold-start.waited", waited=wall - cpu)
    floor = flat.get("tui_cold_start_floor_ms")
    if floor is not None:
        note += "; " + text("cold-start.floor", floor=floor, ratio=wall / floor if floor else 0)
    note += ". " + text("cold-start.done")
    breakdown = _get(sections, "profile", "import_breakdown") or {}
    if breakdown:
        packages = ", ".join(
            f"{name} {ms:.0f}"
            for name, ms in list(breakdown.get("import_self_ms_by_package", {}).items())[:7]
        )
        if "import_cli_and_app_cpu_ms" in breakdown:  # CPU: comparable with the CPU above
            unit, suffix = "ms of CPU", "_cpu_ms"
        else:
            unit, suffix = "ms", "_ms"
        note += " " + text(
            "cold-start.imports",
            interpreter=breakdown["interpreter" + suffix],
            cli=breakdown["import_cli" + suffix],
            app=breakdown["import_cli_and_app" + suffix],
            unit=unit,
            packages=packages,
        )
    return note


def _postgres_note(flat: dict[str, Any]) -> str | None:
    pg, lite = flat.get("postgres_events_per_s"), flat.get("sqlite_events_per_s")
    pg99, lite99 = flat.get("postgres_added_p99_ms_50"), flat.get("sqlite_added_p99_ms_50")
    if pg is None or lite is None or pg99 is None or lite99 is None:
        return None
    return text("postgres", pg=pg, lite=lite, level=REFERENCE_LEVEL, pg99=pg99, lite99=lite99)


def _terminal_note(sections: dict[str, Any]) -> str | None:
    streams = [
        v
        for k, v in sorted((_get(sections, "tui") or {}).items())
        if k.startswith("tui_stream_")
        and isinstance(v, dict)
        and "bytes_per_event" in v
        and v.get("last_event_shown", True)  # else the pane followed another task
    ]
    if not streams:
        return None
    parts = [
        text(
            "terminal.stream",
            bytes=1000 * s["bytes_per_event"],
            rate=s["rate_per_s"],
            kbit=s["kbit_per_s"],
        )
        for s in streams
    ]
    first = streams[0]
    return text(
        "terminal",
        streams="; ".join(parts),
        kb=first["bytes_per_event"] / 1000,
        rate=first["rate_per_s"],
    )


def _deltas_notes(sections: dict[str, Any]) -> list[str]:
    """One note per load of the ``deltas`` section, and one for the ``storm`` section's
    load."""
    notes = [
        note
        for load in (_get(sections, "deltas", "loads") or {}).values()
        if (note := _delta_load_note(load))
    ]
    for load in (_get(sections, "storm", "loads") or {}).values():
        note = _delta_load_note(load)
        if note:
            e2e, added = load["e2e"], load["added_ms"]
            head = text(
                "storm",
                tasks=e2e["tasks"],
                rate=e2e["rate_per_task"],
                offered=e2e["offered_per_s"],
                added50=added["p50"],
                added99=added["p99"],
            )
            notes.append(f"{head} {note}")
    return notes


def _delta_load_note(load: dict[str, Any]) -> str | None:
    """The note of one load of deltas (None when either side received nothing)."""
    e2e, base = load["e2e"], load["baseline"]
    if not e2e.get("received") or not base.get("received"):
        return None
    size = e2e.get("stored_bytes_per_delta")
    broken = [
        f"{key.replace('_', ' ')} {e2e[key]}"
        for key in ("lost", "duplicated", "out_of_order", "text_mismatch", "completed_not_once")
        if e2e.get(key)
    ]
    if e2e.get("timed_out"):
        broken.append("turns still running at the deadline")
    cpu = e2e.get("cpu_ms_per_1000_deltas") or {}
    read, after = e2e.get("worker_read_ms") or {}, e2e.get("after_read_ms") or {}
    split = ""
    if read.get("n") and after.get("n"):
        figures = {"read": read["p50"], "after": after["p50"], "after99": after["p99"]}
        split = " " + text("deltas.split", **figures)
    return text(
        "deltas",
        tasks=e2e["tasks"],
        rate=e2e["rate_per_task"],
        p50=e2e["latency_ms"]["p50"],
        p99=e2e["latency_ms"]["p99"],
        pipe50=base["latency_ms"]["p50"],
        pipe99=base["latency_ms"]["p99"],
        split=split,
        per_event=e2e.get("deltas_per_event") or 0.0,
        stored=text("deltas.stored", size=size, text=e2e.get("text_bytes_per_delta") or 0)
        if size is not None
        else "size unknown",
        server=cpu.get("server") or 0.0,
        worker=cpu.get("worker") or 0.0,
        intact=text("deltas.broken", what=", ".join(broken)) if broken else "",
    )


def _relay_note(flat: dict[str, Any], sections: dict[str, Any]) -> str | None:
    """The bare relay's sustained rate, its latency and CPU there, and the pipeline's rate as
    a share of it (None when the relay did not run)."""
    rate = flat.get("relay_events_per_s")
    if rate is None:
        return None
    steps: list[dict[str, Any]] = _get(sections, "relay", "steps") or []
    passing = next((s for s in steps if s.get("passed") and s.get("offered_per_s") == rate), {})
    failing = flat.get("relay_first_failing_per_s")
    note = text(
        "relay",
        rate=rate,
        p50=flat.get("relay_p50_ms") or 0.0,
        p99=flat.get("relay_p99_ms") or 0.0,
        limit=" " + text("relay.failed", failing=failing) if failing else "",
        cpu=_cpu(passing.get("cpu_ms_per_1000_events") or {}, "relay.cpu-names"),
    )
    if flat.get("sustained_vs_relay_pct") is not None:
        note += "; " + text(
            "relay.ratio",
            sustained=flat.get("sustained_events_per_s", 0),
            pct=flat["sustained_vs_relay_pct"],
        )
    return note + "."


def shared_machine_note(meta: dict[str, Any]) -> str:
    """The note for a run on a loaded machine: ``meta``'s load averages and CPU count."""
    return text(
        "shared-machine", before=meta["load_before"], after=meta["load_after"], cpus=meta["cpus"]
    )


def make_notes(flat: dict[str, Any], sections: dict[str, Any]) -> list[str]:
    """The notes of a run (see the module docstring)."""
    missed = {row["key"] for row in goal_rows(flat) if row["met"] is False}
    untried = {row["key"] for row in goal_rows(flat) if row["met"] is None}
    notes: list[str] = []
    exit_sample = _exit_sample(sections) if "added_p99_ms_50" in missed else None
    if {"added_p50_ms_50", "added_p99_ms_50"} & missed:
        notes.append(_latency_note(flat, sections, exits=exit_sample is not None))
    if exit_sample is not None:
        notes.append(_exit_note(exit_sample, sections))
    if "sustained_events_per_s" in missed:
        notes.append(_throughput_note(flat, sections))
    if _levels(sections):
        if "max_concurrent_tasks_ok" in missed:
            notes.append(_concurrency_note(flat, sections))
        elif "max_concurrent_tasks_ok" in untried:
            goal = next(g.target for g in goals() if g.key == "max_concurrent_tasks_ok")
            tried = flat.get("max_concurrent_tasks_tried")
            notes.append(text("concurrency.untried", tried=tried, goal=goal))
    if "tui_lag_p99_ms" in missed:
        notes.append(_tui_lag_note(flat, sections))
    if "tui_cold_start_ms" in missed:
        notes.append(_cold_start_note(flat, sections))
    grace = flat.get("cancel_grace_s") or 2.0
    for key in ("cancel_s", "cancel_ignore_sigint_s"):  # an earlier issue's goal: grace + 0.5 s
        if (flat.get(key) or 0) > grace + 0.5:
            notes.append(text("cancel", key=key, value=flat[key], grace=grace))
    if flat.get("real_codex_added_total_s") is not None:
        notes.append(
            text(
                "real-codex",
                total_ms=flat["real_codex_added_total_s"] * 1000,
                first_ms=flat.get("real_codex_added_first_event_s", 0) * 1000,
            )
        )
    relay = _relay_note(flat, sections)
    if relay:
        notes.append(relay)
    pg = _postgres_note(flat)
    if pg:
        notes.append(pg)
    terminal = _terminal_note(sections)
    if terminal:
        notes.append(terminal)
    notes += _deltas_notes(sections)
    return notes
