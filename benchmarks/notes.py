"""Provides the notes of a run: for each goal that falls short, the measured value, what was
already done about it, the hot spot that remains (with its share of the busy samples of the
profiles taken in the same run, when they were taken) and why.

The explanations come from reading these profiles and the code they point at; every number
comes from the run itself, so a note stays true to its own run. A goal that is met gets no
hot-spot note.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.report import REFERENCE_LEVEL, goal_rows

#: The sustained-rate goal (events/s), for the CPU budget per event it implies.
_RATE_GOAL = 20_000


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


def _profile(head: str, spots: dict[str, Any], labels: list[tuple[str, str]]) -> str:
    """`` head label N%, ….`` for the hot spots of ``labels`` that were measured, or ''."""
    shares = _shares(spots, labels)
    return f" {head}{shares}." if shares else ""


def _cpu(cpu: dict[str, Any]) -> str:
    names = (("server", "server"), ("worker", "worker"), ("codex", "fake codex"))
    parts = [f"{label} {cpu[key]:,.0f}" for key, label in names if cpu.get(key) is not None]
    if cpu.get("client") is not None:
        parts.append(f"SDK client {cpu['client']:,.0f}")
    return ", ".join(parts) + " ms"


def _per_task(load: dict[str, Any]) -> float:
    """Events/s per task of a load (a level, a step or a profile's load)."""
    if load.get("rate_per_task") is not None:
        return float(load["rate_per_task"])
    return float(load.get("offered_per_s") or 0) / max(int(load.get("tasks") or 1), 1)


def _levels(sections: dict[str, Any]) -> dict[int, Any]:
    return _get(sections, "pipeline", "latency", "levels") or {}


def _spots(sections: dict[str, Any], profile: str, process: str) -> dict[str, Any]:
    return _get(sections, "profile", profile, process, "hot_spots_pct") or {}


#: What an upload costs now (the work already done on the hot path), for the latency notes.
_UPLOAD_DONE = (
    "Already done: an upload is one read of the task row (token, worker and lease checked in "
    "it), an insert and an update in one sqlite3 transaction; known tokens and the newest "
    "events come from memory, an SSE stream sends what it has in one write, and uploads leave "
    "at once (one in flight per task)."
)


def _latency_note(flat: dict[str, Any], sections: dict[str, Any], exits: bool) -> str:
    ref = _levels(sections).get(REFERENCE_LEVEL) or {}
    e2e = ref.get("e2e") or {}
    steady = _get(e2e, "latency_ms_by_phase", "steady") or {}
    rate = e2e.get("rate_per_task")
    text = (
        f"Added latency at {REFERENCE_LEVEL} tasks: p50 {flat.get('added_p50_ms_50', 0):.0f} "
        f"ms, p99 {flat.get('added_p99_ms_50', 0):.0f} ms ({e2e.get('offered_per_s', 0):g} "
        f"events/s offered, {rate or 0:g}/s per task; steady-state p99 "
        f"{steady.get('p99', 0):.0f} ms"
        f"{', the rest comes from task exits, see below' if exits else ''}). {_UPLOAD_DONE}"
    )
    # The concurrency profile's load (a few events/s per task) and the throughput profile's
    # (more per task); without profiles, the reference level alone.
    alone = _get(sections, "profile", "concurrency", "load") or e2e
    faster = _get(sections, "profile", "throughput", "load") or {}
    cpu_alone = alone.get("cpu_ms_per_1000_events") or {}
    text += (
        " Hot spot: the fixed cost of a request, paid per event when events arrive alone (at "
        f"{_per_task(alone):g}/s per task each upload, SSE write and SDK read carries one)"
    )
    if cpu_alone.get("server") is not None:
        text += f": at {alone.get('tasks')} tasks the run used {_cpu(cpu_alone)} of CPU per "
        text += "1,000 events"
        cpu_more = faster.get("cpu_ms_per_1000_events") or {}
        if cpu_more.get("server"):
            text += (
                f", against {_cpu(cpu_more)} at {faster.get('tasks')} tasks × "
                f"{_per_task(faster):g}/s, where more events share each task's fixed costs"
            )
    text += "."
    text += _profile(
        "Server profile there (share of busy samples): ",
        _spots(sections, "concurrency", "server"),
        [
            ("framework_code", "FastAPI/Starlette/uvicorn's own code"),
            ("fastapi_dependencies", "FastAPI's dependency resolution"),
            ("event_loop_c", "uvloop's own C code (socket I/O, polling)"),
            ("append_events_txn", "the append (SQLAlchemy, sqlite3)"),
            ("thread_handoff", "handing it to its thread and back"),
            ("sse_streams", "SSE streams"),
        ],
    )
    worker = _profile(
        "Worker: ",
        _spots(sections, "concurrency", "worker"),
        [
            ("http_client_code", "httpx/httpcore/anyio's own code"),
            ("event_loop_c", "uvloop's C code"),
            ("process_scans", "the shared process scan"),
        ],
    )
    if worker:
        text += worker + " Most of this is paid per request, as much for one event as for many."
    return text


def _throughput_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    sustained = _get(sections, "pipeline", "sustained") or {}
    failing = sustained.get("first_failing")
    text = (
        f"Sustained rate: {flat.get('sustained_events_per_s', 0):,.0f} events/s over "
        f"{sustained.get('tasks')} tasks with p99 ≤ 100 ms"
    )
    step = next(
        (s for s in sustained.get("steps") or [] if s.get("offered_per_s") == failing), None
    )
    if failing:
        text += f"; {failing:,.0f}/s failed"
        if sustained.get("steady_p99_at_first_failing_ms") is not None:
            text += f" (steady-state p99 {sustained['steady_p99_at_first_failing_ms']:.0f} ms)"
    text += "."
    cpu = (step or {}).get("cpu_ms_per_1000_events") or {}
    total = sum(v for v in cpu.values() if isinstance(v, int | float))
    cores = os.cpu_count() or 1
    if total:
        budget = cores * 1e6 / _RATE_GOAL
        text += (
            f" Hot spot: CPU. Every process of the pipeline runs on the same {cores} cores, and "
            f"at {failing:,.0f}/s they used {total:,.0f} ms of CPU per 1,000 events in all "
            f"({_cpu(cpu)}): {cores} cores carry at most about {cores * 1e6 / total:,.0f} such "
            f"events/s, while {_RATE_GOAL:,}/s needs at most {budget:,.0f} ms per 1,000 events "
            f"end to end ({total / budget:.0f}× less)."
        )
    text += _profile(
        "Server profile at that rate (share of busy samples): ",
        _spots(sections, "throughput", "server"),
        [
            ("framework_code", "FastAPI/Starlette/uvicorn's own code"),
            ("event_loop_c", "uvloop's C code"),
            ("append_events_txn", "the append transaction"),
            ("sse_streams", "SSE streams"),
            ("pydantic_validation", "validating batches"),
            ("event_json", "JSON encoding"),
        ],
    )
    text += _profile(
        "Worker: ",
        _spots(sections, "throughput", "worker"),
        [
            ("http_client_code", "HTTP client code"),
            ("read_codex_output", "reading codex's output"),
            ("event_encoding", "encoding events"),
            ("process_scans", "the shared process scan"),
        ],
    )
    text += _profile(
        "SDK client: ",
        _spots(sections, "throughput", "client"),
        [("sse_parsing", "SSE parsing"), ("event_parsing", "event validation")],
    )
    return text


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
    text = (
        f"Task exits: at {sample['tasks']} tasks × {sample['rate_per_task']:g}/s the events "
        f"written in a task's last second have p99 {phases['last_s']['p99']:.0f} ms against "
        f"{phases['steady']['p99']:.0f} ms in the steady state (a load's tasks end within about "
        "a second of each other). Already done: the sweep at exit scans nothing when codex "
        "left no process behind. Hot spot: the CPU all the ends need at once"
    )
    ends = _task_end_ms(sections)
    if ends:
        tasks = load.get("tasks") or 0
        names = {"server": "server", "worker": "worker", "codex": "fake codex"}
        text += (
            ", about "
            + ", ".join(f"{names[k]} {v:.0f}" for k, v in ends.items())
            + " ms of CPU per task beyond its events (estimated from the two profiled loads), "
            f"{tasks * sum(ends.values()) / 1000:.1f} CPU-seconds for {tasks} tasks, while "
            "the other tasks' last events queue"
        )
    text += (
        ". On the server a task's end is its finish: a token query (the known-token memory "
        "serves uploads only), a worker read, one transaction of five statements on the "
        "appends' thread path under the SQLite write lock that every append also takes, and a "
        "task read; the fake codex processes (Python) exit on the same cores meanwhile."
    )
    text += _profile(
        f"Profile while {load.get('tasks')} tasks end together (share of busy samples): server ",
        _spots(sections, "exits", "server"),
        [
            ("finish_route", "finish route"),
            ("db_threads", "database threads"),
            ("sqlalchemy", "SQLAlchemy"),
            ("token_check", "token look-ups"),
        ],
    )
    text += _profile(
        "Worker: ",
        _spots(sections, "exits", "worker"),
        [("finish_http", "finish requests"), ("scans_at_exit", "the sweep at exit")],
    )
    return text


def _concurrency_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    levels = _levels(sections)
    top = max(levels)
    e2e = (levels.get(top) or {}).get("e2e") or {}
    text = (
        f"Concurrency: the largest level with every event delivered once was "
        f"{flat.get('max_concurrent_tasks_ok')} tasks (of {flat.get('max_concurrent_tasks_tried')}"
        " tried)"
    )
    if e2e:
        text += (
            f"; at {top} tasks ({e2e.get('offered_per_s', 0):g} events/s offered) "
            f"{e2e.get('delivered_per_s', 0):.1f}/s were delivered with p50 "
            f"{e2e['latency_ms']['p50']:,.0f} ms, {e2e.get('ready')} of the tasks had started "
            f"after {e2e.get('ramp_s', 0):.0f} s"
        )
        used = _get(e2e, "cpu_s", "worker")
        if used is not None:
            text += f", and the worker used {used:.1f} CPU-seconds while they streamed"
        lost_tasks = (e2e.get("statuses") or {}).get("lost")
        if lost_tasks:
            text += (
                f"; {lost_tasks} tasks ended `lost`: the worker's heartbeat (its signals long "
                "poll) did not reach the server within the lease TTL, so the server ended its "
                "tasks and refused their remaining events"
            )
    text += (
        ". Already done: one shared psutil pass per second serves every run (not a /proc scan "
        "per run), and the sweep at exit costs nothing when codex left no process behind."
    )
    tasks = _get(sections, "profile", "concurrency", "load", "tasks")
    text += _profile(
        f"Profile at {tasks} tasks (share of busy samples): worker ",
        _spots(sections, "concurrency", "worker"),
        [
            ("upload_http", "uploads"),
            ("http_client_code", "httpx/httpcore/anyio's own code"),
            ("process_scans", "the process scan"),
        ],
    )
    text += _profile(
        "Server: ",
        _spots(sections, "concurrency", "server"),
        [
            ("framework_code", "framework code"),
            ("fastapi_dependencies", "dependency resolution"),
            ("append_events_txn", "appends"),
        ],
    )
    if e2e:
        text += (
            f" Spread over {top} tasks, the {e2e.get('offered_per_s', 0):g} events/s offered "
            f"come {_per_task(e2e):g}/s per task, so each event travels alone and costs a "
            "request (see the latency note), and every task keeps its own stream, upload loop "
            "and codex process."
        )
    return text


#: The TUI's hot spots (keys of :data:`benchmarks.profile_run.HOT_SPOTS`) as the notes name them.
_TUI_SPOTS = {
    "sdk_stream": "the SDK stream (SSE decoding, pydantic validation of each event)",
    "flush_to_transcript": "handing buffered events to the transcript",
    "textual_frame": "Textual's own frame (layout, compositor, styles)",
    "ingest_per_event": "taking each event in (visibility, annotation, height estimate)",
    "render_entries_in_view": "rendering the entries in view",
    "markdown": "Markdown",
    "imports": "imports",
}


def _gc_text(flat: dict[str, Any], sections: dict[str, Any], *, why: bool) -> str:
    """What Python's garbage collector did during the burst (and, with ``why``, why it runs
    so often), or ''."""
    gc_ms = flat.get("tui_gc_pause_ms")
    by_gen = _get(sections, "tui", "tui_gc_by_generation") or {}
    if gc_ms is None or not by_gen:
        return ""
    count = sum(g.get("collections", 0) for g in by_gen.values())
    name, longest = max(by_gen.items(), key=lambda kv: kv[1].get("max_ms", 0))
    text = (
        f"The garbage collector paused the app {count} times for {gc_ms:.0f} ms in all "
        f"(longest {longest.get('max_ms', 0):.0f} ms, {name})"
    )
    young = (by_gen.get("gen0") or {}).get("collections")
    if why and young:
        text += (
            ": each event allocates containers (its JSON's dicts and lists, the pydantic "
            "model, its annotation and entry), so the youngest generation is collected every "
            f"{flat.get('tui_burst_events', 0) / young:.0f} events, and the older generations' "
            "passes walk what the burst allocated and kept"
        )
    return text + "."


def _tui_lag_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    burst_s = flat.get("tui_burst_s") or 0.0
    text = (
        f"TUI lag: p99 {flat.get('tui_lag_p99_ms', 0):.0f} ms (max "
        f"{flat.get('tui_lag_max_ms', 0):.0f} ms) while {flat.get('tui_burst_events', 0):,} "
        f"events stream into a pane in {burst_s:.1f} s. Already done: visibility decided "
        "without rendering, only entries in view rendered, one shared markdown-it parser, a "
        "redraw at most every 0.1 s, a stream that yields every few ms, and the app's "
        "long-lived objects frozen out of the garbage collector after the first frame."
    )
    slow = flat.get("tui_slow_ticks")
    gc_pct = flat.get("tui_slow_ticks_gc_pct")
    gc_first = gc_pct is not None and gc_pct >= 50
    if slow and gc_pct is not None:
        per_redraw = 0.5 <= slow / max(burst_s / 0.1, 1) <= 1.5
        late = f"{slow} timer ticks were later than 16 ms" + (
            ", about one per 0.1 s redraw" if per_redraw else ""
        )
        if gc_first:
            text += (
                f" Hot spot: Python's garbage collector. {late}, and {gc_pct:.0f}% of their "
                "lateness was spent collecting."
            )
        else:
            text += (
                " Hot spot: the work the event loop does between two ticks while events pour "
                "in (reading and parsing the stream, handing a batch to the transcript, "
                f"rendering the newest entries, Textual's frame). {late}; garbage collection "
                f"was {gc_pct:.0f}% of their lateness."
            )
    gc_text = _gc_text(flat, sections, why=gc_first)
    if gc_text:
        text += " " + gc_text
    tui = _spots(sections, "tui", "tui")
    if tui:
        ranked = sorted((k for k in _TUI_SPOTS if k in tui), key=lambda k: -float(tui[k] or 0))
        text += (
            " Profile of the app during the burst (share of busy samples): "
            + ", ".join(f"{_TUI_SPOTS[k]} {_pct(tui, k)}" for k in ranked[:5])
            + "."
        )
    return text


def _cold_start_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    wall = flat.get("tui_cold_start_ms", 0)
    runs = len(flat.get("tui_cold_start_runs_ms") or [])
    text = f"Cold start: {wall:,.0f} ms from spawning codex-tui in a pty to its first full screen"
    if flat.get("tui_cold_start_best_ms") is not None:
        text += f" (median of {runs} runs, best {flat['tui_cold_start_best_ms']:,.0f} ms)"
    cpu = flat.get("tui_cold_start_cpu_ms")
    if cpu is not None:
        text += f"; the process had used {cpu:,.0f} ms of CPU by then (median)"
        text += (
            ", so the time is its own work, not waiting for a core"
            if cpu >= 0.8 * wall
            else f", and waited about {wall - cpu:,.0f} ms for a core or I/O"
        )
    text += (
        ". Already done: the command module imports only click (each command what it uses), "
        "screens not shown at start are imported when first opened, settings warnings and the "
        "first task poll wait for the first frame. Hot spot: the floor, importing what the "
        "first screen needs (Textual, Rich, pydantic and the models with their validators, "
        "httpx), then Textual's start-up (CSS, compose, layout) and the first paint."
    )
    breakdown = _get(sections, "profile", "import_breakdown") or {}
    if breakdown:
        packages = ", ".join(
            f"{name} {ms:.0f}"
            for name, ms in list(breakdown.get("import_self_ms_by_package", {}).items())[:7]
        )
        kind = "ms"
        if "import_cli_and_app_cpu_ms" in breakdown:  # CPU: comparable with the CPU above
            kind, suffix = "ms of CPU", "_cpu_ms"
        else:
            suffix = "_ms"
        text += (
            f" Measured apart: the interpreter starts in {breakdown['interpreter' + suffix]:.0f}"
            f" {kind}, `import codex_tui.cli` takes {breakdown['import_cli' + suffix]:.0f} "
            f"{kind} and with the app {breakdown['import_cli_and_app' + suffix]:.0f} {kind}; "
            f"import self time by package (ms): {packages}."
        )
    return text


def _postgres_note(flat: dict[str, Any]) -> str | None:
    pg, lite = flat.get("postgres_events_per_s"), flat.get("sqlite_events_per_s")
    pg99, lite99 = flat.get("postgres_added_p99_ms_50"), flat.get("sqlite_added_p99_ms_50")
    if pg is None or lite is None or pg99 is None or lite99 is None:
        return None
    return (
        f"PostgreSQL against SQLite for the same load: sustained {pg:,.0f} against {lite:,.0f} "
        f"events/s, added p99 at {REFERENCE_LEVEL} tasks {pg99:,.0f} against {lite99:,.0f} ms. "
        "An upload does the same work on both (one read of the task row, locked on "
        "PostgreSQL, an insert and an update), but on PostgreSQL each statement is a round "
        "trip to the database process on the same cores, the pool's pre-ping adds a SELECT 1 "
        "to each checkout, and wake-ups also go to the other replicas as NOTIFYs."
    )


def _terminal_note(sections: dict[str, Any]) -> str | None:
    streams = [
        v
        for k, v in sorted((_get(sections, "tui") or {}).items())
        if k.startswith("tui_stream_") and isinstance(v, dict) and "bytes_per_event" in v
    ]
    if not streams:
        return None
    parts = [
        f"{1000 * s['bytes_per_event']:,.0f} bytes per 1,000 events at {s['rate_per_s']:g}/s "
        f"({s['kbit_per_s']:,.0f} kbit/s)"
        for s in streams
    ]
    return (
        "Terminal output into an 80×24 pane (truecolor): " + "; ".join(parts) + ". A following "
        "pane redraws at most every 0.1 s, so events that arrive within 0.1 s share one redraw, "
        "and its lines are sent with merged style runs; each redraw that scrolls the pane "
        "rewrites its lines (Textual uses no terminal scroll region), so a slow, steady "
        f"stream costs the most per event ({streams[0]['bytes_per_event'] / 1000:.1f} KB at "
        f"{streams[0]['rate_per_s']:g}/s)."
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
            notes.append(
                f"Concurrency: every level tried, up to {flat.get('max_concurrent_tasks_tried')}"
                " tasks, delivered every event once; the goal's 500 tasks are tried in the full "
                "run only."
            )
    if "tui_lag_p99_ms" in missed:
        notes.append(_tui_lag_note(flat, sections))
    if "tui_cold_start_ms" in missed:
        notes.append(_cold_start_note(flat, sections))
    for key in ("cancel_s", "cancel_ignore_sigint_s"):
        if key in missed:
            notes.append(
                f"Cancel: {key} = {flat.get(key, 0):.2f} s against a grace period of "
                f"{flat.get('cancel_grace_s')} s."
            )
    if flat.get("real_codex_added_total_s") is not None:
        first = flat.get("real_codex_added_first_event_s", 0) * 1000
        notes.append(
            f"Real codex against the mock model: the turn ends "
            f"{flat['real_codex_added_total_s'] * 1000:+,.0f} ms later at the client than on "
            f"codex's own pipe (first event {first:+,.0f} ms: task creation, the claim long "
            "poll, spawning codex, the first upload and the SSE wake-up); at the end the "
            "worker sweeps codex's processes (nothing to do when it left none), sends its last "
            "upload and then the finish (see task exits) before the terminal status event "
            "exists."
        )
    pg = _postgres_note(flat)
    if pg:
        notes.append(pg)
    terminal = _terminal_note(sections)
    if terminal:
        notes.append(terminal)
    return notes
