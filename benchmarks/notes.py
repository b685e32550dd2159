"""Provides the notes of a run: for each goal that falls short, the measured value, the hot spot
that remains (with its share of the busy samples of the profile taken in the same run, when
one was taken) and why, and concrete suggestions.

The explanations come from reading these profiles and the code they point at; every number
comes from the run itself, so a note stays true to its own run.
"""

from __future__ import annotations

from typing import Any

from benchmarks.report import REFERENCE_LEVEL, goal_rows


def _get(data: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _pct(spots: dict[str, Any], key: str) -> str:
    value = spots.get(key)
    return f"{value:.0f}%" if isinstance(value, int | float) else "?"


def _levels(sections: dict[str, Any]) -> dict[int, Any]:
    return _get(sections, "pipeline", "latency", "levels") or {}


def _latency_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    levels = _levels(sections)
    ref = levels.get(REFERENCE_LEVEL) or {}
    e2e = ref.get("e2e") or {}
    cpu = e2e.get("cpu_ms_per_1000_events") or {}
    steady = _get(e2e, "latency_ms_by_phase", "steady") or {}
    parts = [
        f"Latency and throughput: at {REFERENCE_LEVEL} tasks ({e2e.get('offered_per_s', 0):g} "
        f"events/s offered, {e2e.get('delivered_per_s', 0):.0f}/s delivered) the added latency "
        f"is p50 {flat.get('added_p50_ms_50', 0):.0f} ms, p99 "
        f"{flat.get('added_p99_ms_50', 0):.0f} ms (steady state p99 "
        f"{steady.get('p99', 0):.0f} ms); sustained "
        f"{flat.get('sustained_events_per_s', 0):,.0f} events/s over "
        f"{_get(sections, 'pipeline', 'sustained', 'tasks')} tasks. Hot spot: the cost per "
        "upload request, paid per event. A task printing a few events per second sends each "
        "event alone (the 5 ms batch window rarely holds two), and each upload costs the server "
        "a token lookup, a worker lookup, a select of the task row, an insert, an update and a "
        "commit (six statements through SQLAlchemy and aiosqlite's thread), plus one store "
        "read and one SSE write per watching stream; the worker pays an HTTP request per event."
    ]
    if cpu and cpu.get("server"):
        parts.append(
            f"CPU per 1,000 events at {REFERENCE_LEVEL} tasks: server {cpu.get('server'):,.0f} "
            f"ms, worker {cpu.get('worker'):,.0f} ms, fake codex {cpu.get('codex'):,.0f} ms, "
            f"SDK client {cpu.get('client'):,.0f} ms; one core of server CPU thus carries about "
            f"{1e6 / cpu['server']:,.0f} such events/s, and past that the latency is queueing."
        )
    server = _get(sections, "profile", "throughput", "server", "hot_spots_pct") or {}
    if server:
        parts.append(
            "Server profile at the first failing rate (share of busy samples): DB driver "
            f"threads {_pct(server, 'db_driver_threads')}, SQLAlchemy "
            f"{_pct(server, 'sqlalchemy')}, append_events {_pct(server, 'append_events_txn')}, "
            f"token lookup {_pct(server, 'token_lookup')}, worker lookup "
            f"{_pct(server, 'worker_lookup')}, SSE streams {_pct(server, 'sse_streams')}, "
            f"pydantic {_pct(server, 'pydantic_validation')}."
        )
    worker = _get(sections, "profile", "throughput", "worker", "hot_spots_pct") or {}
    if worker:
        parts.append(
            f"Worker profile: psutil /proc scans {_pct(worker, 'psutil_process_scans')}, "
            f"uploads {_pct(worker, 'upload_http')}."
        )
    parts.append(
        "Suggestions: (1) server: keep the principal of a token hash and the worker row in a "
        "small in-process cache (seconds) instead of two queries per request; (2) server: "
        "append with one UPDATE … RETURNING of the task row (lease check, last_seq and "
        "upload_next at once) plus the insert, instead of select + insert + update; (3) server: "
        "hand the rows just committed to the SSE subscribers of this process from memory and "
        "read the store only to replay or fill a gap; (4) worker: one upload request per flush "
        "for all of its tasks (a multi-task batch), so 50 tasks cost one request per 5 ms, "
        "not 50; (5) orjson for batches and envelopes."
    )
    return " ".join(parts)


def _exit_note(sections: dict[str, Any]) -> str | None:
    levels = _levels(sections)
    ref = levels.get(REFERENCE_LEVEL) or (levels[max(levels)] if levels else None)
    steps = _get(sections, "pipeline", "sustained", "steps") or []
    sample = steps[0] if steps else (ref or {}).get("e2e")
    if not sample:
        return None
    phases = sample.get("latency_ms_by_phase") or {}
    last, steady = phases.get("last_s") or {}, phases.get("steady") or {}
    if not last.get("n") or not steady.get("n") or last["p99"] < 1.5 * steady["p99"]:
        return None
    return (
        f"Task exits stall the worker: at {sample['tasks']} tasks × {sample['rate_per_task']:g}/s "
        f"the events written in a task's last second have p99 {last['p99']:.0f} ms against "
        f"{steady['p99']:.0f} ms in the steady state. When codex exits, ExecRunner."
        "_kill_leftovers reads the environment of every process on the machine (up to four "
        "rounds) and reap_orphan_zombies lists all children, in threads that hold the GIL, so "
        "the worker's event loop, which uploads every other task's events, stops meanwhile. "
        "Suggestion: look for leftovers among the descendants and the process group recorded "
        "for the task (and its marker only in one combined /proc pass per exit), and skip the "
        "rounds when codex exited by itself with no descendant left."
    )


def _concurrency_note(flat: dict[str, Any], sections: dict[str, Any], missed: bool) -> str:
    levels = _levels(sections)
    top = max(levels) if levels else None
    e2e = (levels.get(top) or {}).get("e2e") or {} if top else {}
    worker = _get(sections, "profile", "concurrency", "worker", "hot_spots_pct") or {}
    text = (
        f"Concurrency: the largest level with every event delivered once was "
        f"{flat.get('max_concurrent_tasks_ok')} tasks (of {flat.get('max_concurrent_tasks_tried')}"
        " tried)"
    )
    if top and e2e:
        used = _get(e2e, "cpu_s", "worker")
        text += (
            f"; at {top} tasks ({e2e.get('offered_per_s', 0):g} events/s offered) "
            f"{e2e.get('delivered_per_s', 0):.1f}/s were delivered with p50 "
            f"{e2e['latency_ms']['p50']:,.0f} ms, {e2e.get('ready')} of the tasks had started "
            f"after {e2e.get('ramp_s', 0):.0f} s"
        )
        if used is not None:
            text += f", and the worker burnt {used:.0f} CPU-seconds while they streamed"
        lost_tasks = (e2e.get("statuses") or {}).get("lost")
        if lost_tasks:
            text += (
                f"; {lost_tasks} tasks ended `lost`: the worker's heartbeat (its signals long "
                "poll) did not reach the server within the 30 s lease TTL while its event loop "
                "starved, so the server ended its tasks and refused their remaining events"
            )
    text += (
        ". Hot spot: psutil scans of /proc in the worker. While codex runs, ExecRunner._track "
        "lists its descendants every second for every task with "
        "psutil.Process.children(recursive=True), which reads /proc/<pid>/stat of every "
        "process on the machine; when codex exits, _kill_leftovers reads the environment of "
        "every process (up to four rounds) and reap_orphan_zombies lists the children again. "
        "That is O(tasks × processes): the worker's CPU grows with the square of the number "
        "of tasks, its threads hold the GIL, and its event loop (uploads, claims, heartbeats) "
        "starves."
    )
    if worker:
        profiled = _get(sections, "profile", "concurrency", "load", "tasks")
        text += (
            f" Profile at {profiled} tasks: {_pct(worker, 'psutil_process_scans')} of the "
            f"worker's busy samples in psutil scans ({_pct(worker, 'scans_while_running')} "
            f"while running, {_pct(worker, 'scans_at_exit')} at exits)."
        )
    text += (
        " Suggestions: one scan per interval for all runners (a single ppid map, each runner "
        "takes its subtree), or none while codex runs (its process group and the task marker "
        "are enough at cancel time); at exit, look only at the recorded descendants and the "
        "process group, with one marker pass for all tasks that ended in the same tick."
    )
    if not missed:
        text += " (Nothing was lost at any level tried.)"
    return text


def _tui_lag_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    tui = _get(sections, "profile", "tui", "tui", "hot_spots_pct") or {}
    text = (
        f"TUI lag: p99 {flat.get('tui_lag_p99_ms', 0):.0f} ms (max "
        f"{flat.get('tui_lag_max_ms', 0):.0f} ms) while {flat.get('tui_burst_events', 0):,} "
        "events stream into a pane. Hot spot: EventView._flush hands every buffered event to "
        "Transcript.make_entries, which renders each one in full (render_annotated) only to "
        "learn whether it shows anything; an agent message becomes rich.markdown.Markdown, "
        "which builds a new MarkdownIt parser (rule chains, linkify regexes) per message. A "
        "50 ms flush of a burst thus does hundreds of ms of work in one go on the event loop."
    )
    if tui:
        text += (
            f" Profile of the app: make_entries {_pct(tui, 'make_entries_renders_every_event')}"
            f", Markdown/markdown-it setup {_pct(tui, 'markdown_parser_per_message')}, drawing "
            f"visible lines {_pct(tui, 'render_visible_lines')}, SDK stream "
            f"{_pct(tui, 'sdk_stream')} of busy samples."
        )
    text += (
        " Suggestions: decide visibility with a cheap predicate on the event (no rendering) "
        "and render only entries that scroll into view (as _render_entry already does); reuse "
        "one MarkdownIt parser (or plain Text when the message has no Markdown syntax); keep "
        "only the newest max_entries events of a flush and yield between chunks."
    )
    return text


def _cold_start_note(flat: dict[str, Any], sections: dict[str, Any]) -> str:
    breakdown = _get(sections, "profile", "import_breakdown") or {}
    text = (
        f"Cold start: {flat.get('tui_cold_start_ms', 0):,.0f} ms from spawning codex-tui in a "
        f"pty to its first full screen (median of {len(flat.get('tui_cold_start_runs_ms') or [])}"
        " runs)."
    )
    if breakdown:
        packages = ", ".join(
            f"{name} {ms:.0f}"
            for name, ms in list(breakdown.get("import_self_ms_by_package", {}).items())[:7]
        )
        text += (
            f" Hot spot: imports. The interpreter starts in {breakdown['interpreter_ms']:.0f} "
            f"ms, `import codex_tui.cli` takes {breakdown['import_cli_ms']:.0f} ms and with the "
            f"app {breakdown['import_cli_and_app_ms']:.0f} ms; import self time by package "
            f"(ms): {packages}."
        )
    text += (
        " The command module imports its whole world before it knows it will draw: config "
        "(pydantic-settings), the plain printer (rich Markdown, pygments), the SDK (httpx), "
        "and the app every screen (history, workers, compose, pairing, export). Suggestions: "
        "import per subcommand inside the click callbacks, import the screens that are not "
        "shown at start when first opened, and check what is left of Textual's own import."
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
        "Each statement is a round trip to the PostgreSQL process (on the same two cores), and "
        "the engine's pool_pre_ping adds a SELECT 1 to every connection checkout, i.e. to every "
        "short read (token, worker, task, events); the same per-request statements as on SQLite "
        "cost more. Suggestions as for SQLite, plus dropping pre-ping for a pool recycle time."
    )


def make_notes(flat: dict[str, Any], sections: dict[str, Any]) -> list[str]:
    """The notes of a run (see the module docstring)."""
    missed = {row["key"] for row in goal_rows(flat) if row["met"] is False}
    notes: list[str] = []
    if {"added_p50_ms_50", "added_p99_ms_50", "sustained_events_per_s"} & missed:
        notes.append(_latency_note(flat, sections))
    exit_note = _exit_note(sections)
    if exit_note:
        notes.append(exit_note)
    if _levels(sections):
        notes.append(_concurrency_note(flat, sections, "max_concurrent_tasks_ok" in missed))
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
            "poll, spawning codex with a preexec hook, the first upload and the SSE "
            "wake-up); at the end the worker first kills leftovers (the /proc scans above), "
            "closes the uploader and reports the finish before the terminal status event "
            "exists."
        )
    pg = _postgres_note(flat)
    if pg:
        notes.append(pg)
    streams = [
        v
        for k, v in sorted((_get(sections, "tui") or {}).items())
        if k.startswith("tui_stream_") and isinstance(v, dict)
    ]
    if streams:
        parts = [
            f"{1000 * s['bytes_per_event']:,.0f} bytes per 1,000 events at {s['rate_per_s']:g}"
            f"/s ({s['kbit_per_s']:,.0f} kbit/s)"
            for s in streams
            if "bytes_per_event" in s
        ]
        notes.append(
            "Terminal output into an 80×24 pane (truecolor): " + "; ".join(parts) + ". An "
            "event that arrives alone scrolls the followed pane, and Textual rewrites every "
            "line of the pane and its scrollbar (no terminal scroll region), about "
            f"{streams[0].get('bytes_per_event', 0) / 1000:.1f} KB per event; events that "
            "arrive within one 50 ms flush share one redraw. Over SSH a slow, steady stream "
            "costs the most. Suggestions: redraw a following pane at most every 100–200 ms when "
            "the terminal is remote, emit fewer style changes per line (same-style runs), and "
            "offer a 256-colour mode."
        )
    return notes
