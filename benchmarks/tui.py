"""Provides the TUI benchmarks.

- Event-loop lag while a burst streams into a pane: the app runs headless in this process
  (Textual's ``run_test``) against a real server; a 10 ms Textual timer records how late each
  tick fires. The burst is a realistic mix of codex events (commands with output, reasoning,
  to-do lists, file changes, Markdown agent messages; see :func:`_mix_items`) that a worker
  played in a subprocess uploads over the real worker protocol as fast as the server takes
  it, so it reaches the pane through the server's fan-out, SSE and the SDK like codex output.
  Headless Textual lays out and renders widgets but writes no terminal output. Python's
  garbage collections during the burst are timed (``gc.callbacks``), with the share of the
  late ticks' lateness they account for (py-spy shows no frame for the collector).
- Memory per retained line: ``tracemalloc`` around filling a transcript (the pane's bounded
  window) with a realistic mix of codex events, rendered at 80×24 (after one warm-up render
  of each kind, so lazily imported renderers are not counted as per-event memory).
- Cold start: ``codex-tui`` spawned under a pseudo-terminal (80×24) against a running server,
  timed until its first full-screen frame (every row drawn) — what a person waits for; the
  median and best of several runs, and the CPU time the process had used by that frame; and
  the same for a bare Textual app of the first screen's shape (``benchmarks.textual_floor``),
  the floor of the stack, interleaved with them.
- Terminal bytes per 1,000 streamed events: bytes read from the pty's master while a task
  streams into the pane, less the idle rate (what an SSH link carries).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import json
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    CLEANUP,
    ROOT,
    BenchError,
    Server,
    base_env,
    median,
    summarize,
)
from benchmarks.load import Gate, LoadSpec, bench_client

Log = Callable[[str], None]

#: The terminal size of every TUI benchmark (what must work over SSH).
COLUMNS, ROWS = 80, 24

_ROW_RE = re.compile(rb"\x1b\[(\d+);\d+H")
#: Bytes of the previous reads searched again with each new one: longer than any cursor
#: position sequence, so one split between two reads is still found.
_ROW_OVERLAP = 16

#: Cold starts measured at least (the machine is shared and noisy; each costs about 0.5 s).
MIN_COLD_RUNS = 5


# -- event-loop lag during a burst -----------------------------------------------------------

#: The worker name the lag burst's task is routed to (played by :func:`_play_mix_worker`).
MIX_WORKER = "bench-tui-mix"
#: Events the played worker uploads before the gate: a stderr line, thread and turn started.
_MIX_PRELUDE = 3


def _play_mix_worker() -> None:
    """Subprocess entry (argv: url, token, gate file, events): play a worker named
    :data:`MIX_WORKER` over the real worker protocol. Connect and print its id; claim the
    task routed to it, upload the prelude, wait for the gate, then upload ``events`` events of
    :func:`_mix_items` in batches of the real uploader's largest size as fast as the server
    takes them, and finish the task."""
    import fcntl

    from server_client.models import (
        EventBatch,
        EventIn,
        EventKind,
        FinishRequest,
        WorkerHello,
    )
    from server_client.models import TaskStatus as Status
    from server_client.worker.api import WorkerApi
    from server_client.worker.uploader import MAX_BATCH_EVENTS

    url, token, gate_path, count = sys.argv[1:5]

    async def play() -> None:
        api = WorkerApi(url, token)
        try:
            hello = WorkerHello(name=MIX_WORKER, hostname=MIX_WORKER, workdir_roots=["/"])
            worker = await api.connect(hello)
            print(worker.id, flush=True)  # noqa: T201 - tells the benchmark to go on
            claim = None
            while claim is None:
                claim = await api.claim(worker.id, wait_s=10)
            task_id = claim.task.id
            sent = 0

            async def upload(events: list[EventIn]) -> None:
                nonlocal sent
                batch = EventBatch(lease_id=claim.lease_id, first_index=sent, events=events)
                await api.upload(worker.id, task_id, batch.model_dump_json().encode())
                sent += len(events)

            now = datetime.now(UTC)
            prelude = [
                EventIn(ts=now, kind=EventKind.STDERR, data="Reading additional input..."),
                EventIn(ts=now, kind=EventKind.CODEX, data={"type": "thread.started"}),
                EventIn(ts=now, kind=EventKind.CODEX, data={"type": "turn.started"}),
            ]
            await upload(prelude)
            with open(gate_path, "rb") as gate:  # noqa: ASYNC230 - blocks on purpose
                fcntl.flock(gate, fcntl.LOCK_SH)  # held exclusively until the burst starts
            items = _mix_items(int(count), markdown_every=4)
            for start in range(0, len(items), MAX_BATCH_EVENTS):
                ts = datetime.now(UTC)
                await upload(
                    [
                        EventIn(ts=ts, kind=EventKind.CODEX, data=data)
                        for data in items[start : start + MAX_BATCH_EVENTS]
                    ]
                )
            await api.finish(
                worker.id,
                task_id,
                FinishRequest(
                    lease_id=claim.lease_id,
                    status=Status.COMPLETED,
                    event_count=sent,
                    exit_code=0,
                ),
            )
        finally:
            await api.aclose()

    asyncio.run(play())


def _start_mix_player(server: Server, gate: Gate, events: int) -> subprocess.Popen[bytes]:
    """Start :func:`_play_mix_worker` in a subprocess (it prints its worker id once
    connected)."""
    return subprocess.Popen(  # noqa: S603 - fixed argv
        [
            sys.executable,
            "-c",
            "from benchmarks.tui import _play_mix_worker; _play_mix_worker()",
            server.url,
            server.token,
            str(gate.path),
            str(events),
        ],
        env=base_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )


async def tui_lag(
    server: Server,
    events: int,
    log: Log,
    tick_s: float = 0.01,
    before_burst: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Stream a burst of ``events`` codex events (a realistic mix, see :func:`_mix_items`,
    uploaded by a worker played in a subprocess as fast as the server takes them) into the
    active pane of the dashboard and sample the app's event-loop lag with a ``tick_s``
    timer; Python's garbage collections during the burst are timed too (``gc.callbacks``).

    ``before_burst`` is awaited once the pane shows the task, right before the burst (e.g. to
    attach a profiler)."""
    from codex_tui.app import CodexTuiApp
    from codex_tui.screens.dashboard import DashboardScreen
    from server_client.models import TaskStatus

    log(f"tui: event-loop lag while {events} codex events stream into a pane (headless)")
    gate = Gate(server.home / "gates")
    player = _start_mix_player(server, gate, events)
    unregister = CLEANUP.push("the played mix worker", player.kill)
    assert player.stdout is not None
    if not await asyncio.to_thread(player.stdout.readline):
        unregister()
        raise BenchError(f"the played mix worker did not connect (exit {player.wait()})")
    async with bench_client(server) as client:
        task = await client.create_task(
            "tui-lag: a burst of codex events", workdir=str(server.workdir), worker=MIX_WORKER
        )
        app = CodexTuiApp(client, poll_interval_s=1.5)
        async with app.run_test(size=(COLUMNS, ROWS)) as pilot:
            dash = next(s for s in app.screen_stack if isinstance(s, DashboardScreen))
            deadline = time.monotonic() + 10
            while dash.event_view.task_id != task.id and time.monotonic() < deadline:
                await pilot.pause(0.05)
            if dash.event_view.task_id != task.id:
                # The list highlights another task: show ours in the active pane.
                dash.event_view.follow(await client.get_task(task.id))
            view = dash.event_view
            deadline = time.monotonic() + 30
            # queued, running and the prelude: the played worker waits at the gate
            while view.events_seen < 2 + _MIX_PRELUDE:
                if time.monotonic() > deadline or player.poll() is not None:
                    raise BenchError("the TUI pane never showed the burst task")
                await pilot.pause(0.05)
            ticks: list[float] = []
            app.set_interval(tick_s, lambda: ticks.append(time.perf_counter()), name="lag")
            await pilot.pause(0.3)
            if before_burst is not None:
                await before_burst()
            seen_before = view.events_seen
            ticks.clear()
            collections = _GcTimer()
            started = time.perf_counter()
            with collections:
                gate.release()
                deadline = time.monotonic() + 120 + events / 200
                while not (
                    view.status is TaskStatus.COMPLETED and not view.pending and not view.streaming
                ):
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
                done = time.perf_counter()
            seen = view.events_seen - seen_before
            await pilot.pause(0.2)
        try:
            await asyncio.to_thread(player.wait, 30)
        finally:
            unregister()
            if player.poll() is None:
                player.kill()
    gate.close()
    gaps = [(b - a - tick_s) * 1000 for a, b in zip(ticks, ticks[1:], strict=False)]
    lag = summarize(gaps)
    # Ticks later than a frame (16 ms), and how much of their lateness was spent collecting.
    slow = [(a, b) for a, b in zip(ticks, ticks[1:], strict=False) if b - a - tick_s > 0.016]
    pauses = collections.pauses
    late_s = sum(b - a - tick_s for a, b in slow)
    collecting_s = sum(
        max(0.0, min(b, end) - max(a, start)) for a, b in slow for start, end, _ in pauses
    )
    result = {
        "tui_lag_p99_ms": lag["p99"],
        "tui_lag_p50_ms": lag["p50"],
        "tui_lag_max_ms": lag["max"],
        "tui_lag_ticks": lag["n"],
        "tui_burst_events": seen,
        "tui_burst_s": done - started,
        "tui_burst_events_per_s": seen / max(done - started, 1e-9),
        "tui_burst_kind": "codex mix (commands, reasoning, to-dos, file changes, Markdown)",
        "tui_gc_pause_ms": sum(end - start for start, end, _ in pauses) * 1000,
        "tui_gc_max_pause_ms": max((end - start for start, end, _ in pauses), default=0.0) * 1000,
        "tui_gc_by_generation": {
            f"gen{g}": {
                "collections": len(times),
                "ms": sum(times) * 1000,
                "max_ms": max(times, default=0.0) * 1000,
            }
            for g in range(3)
            for times in [[end - start for start, end, gen in pauses if gen == g]]
        },
        "tui_slow_ticks": len(slow),
        "tui_slow_ticks_gc_pct": min(100.0, 100 * collecting_s / late_s) if slow else 0.0,
    }
    log(
        f"  lag p50 {lag['p50']:.1f} ms, p99 {lag['p99']:.1f} ms, max {lag['max']:.1f} ms; "
        f"{seen} events in {done - started:.1f} s; {len(pauses)} collections, "
        f"{result['tui_gc_pause_ms']:.0f} ms in all ({result['tui_slow_ticks_gc_pct']:.0f}% "
        f"of the lateness of the {len(slow)} ticks later than 16 ms)"
    )
    return result


class _GcTimer:
    """While entered, records every garbage collection of this process as (start, end,
    generation), perf_counter seconds."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float, int]] = []
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((self._start, time.perf_counter(), info["generation"]))

    def __enter__(self) -> _GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


# -- memory per retained line --------------------------------------------------------------


#: An agent message that uses most of what codex's final answers use: a heading, emphasis,
#: inline code, a list and a fenced code block (highlighted by Pygments).
_RICH_MESSAGE = """## Summary

Added the `--json` flag to **export** and a test for it:

- `codex_tui/export.py`: writes one event per line
- `tests/test_export.py`: checks the *order* of the lines

```python
def export(events, fmt="json"):
    return [event.model_dump_json() for event in events]
```

Run `uv run pytest tests/test_export.py` to check."""


def _mix_items(count: int, markdown_every: int = 0) -> list[dict[str, Any]]:
    """``count`` codex JSONL objects in the proportions of a typical codex turn: a command
    started and completed (12 lines of output), reasoning, a to-do list update, a file change
    and an agent message with inline Markdown; with ``markdown_every`` > 0, every that many
    turns' agent message is a longer one with a heading, a list and a code block."""
    out: list[dict[str, Any]] = []
    turn = 0
    while len(out) < count:
        n = len(out)
        turn += 1
        output = "".join(f"src/module_{i}.py: line {i} of the output\n" for i in range(12))
        command = {
            "id": f"item_{n}",
            "type": "command_execution",
            "command": "bash -lc 'rg -n parse src'",
            "aggregated_output": "",
            "exit_code": None,
            "status": "in_progress",
        }
        items: list[dict[str, Any]] = [
            {"type": "item.started", "item": command},
            {
                "type": "item.completed",
                "item": command
                | {"aggregated_output": output, "exit_code": 0, "status": "completed"},
            },
            {
                "type": "item.completed",
                "item": {
                    "id": f"item_{n}r",
                    "type": "reasoning",
                    "text": "**Reading the parser** " + "x" * 200,
                },
            },
            {
                "type": "item.updated",
                "item": {
                    "id": f"item_{n}t",
                    "type": "todo_list",
                    "items": [
                        {"text": "add the flag", "completed": True},
                        {"text": "write the test", "completed": False},
                    ],
                },
            },
            {
                "type": "item.completed",
                "item": {
                    "id": f"item_{n}f",
                    "type": "file_change",
                    "changes": [{"path": "/srv/app/src/cli.py", "kind": "update"}],
                    "status": "completed",
                },
            },
            {
                "type": "item.completed",
                "item": {
                    "id": f"item_{n}m",
                    "type": "agent_message",
                    "text": _RICH_MESSAGE
                    if markdown_every and turn % markdown_every == 0
                    else "Added the flag to `export` and a test for it. " * 3,
                },
            },
        ]
        out.extend(items)
    return out[:count]


def _mix_envelopes(count: int) -> list[str]:
    """``count`` event envelopes (JSON, as the server sends them) of :func:`_mix_items`."""
    ts = datetime(2026, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return [
        json.dumps({"seq": seq, "ts": ts, "kind": "codex", "data": data}, separators=(",", ":"))
        for seq, data in enumerate(_mix_items(count), start=1)
    ]


async def tui_memory(entries: int, log: Log) -> dict[str, Any]:
    """Bytes retained per transcript entry (one codex event) after filling a transcript of
    ``entries`` events at 80×24 and rendering its visible part (``tracemalloc``)."""
    from textual.app import App, ComposeResult

    from codex_tui.events.pane import RenderState
    from codex_tui.events.view import annotate
    from codex_tui.widgets.transcript import Transcript
    from server_client.models import Event

    log(f"tui: memory of a transcript holding {entries} events")

    class TranscriptApp(App[None]):
        def compose(self) -> ComposeResult:
            yield Transcript(max_entries=entries, id="transcript")

    envelopes = _mix_envelopes(entries)
    app = TranscriptApp()
    async with app.run_test(size=(COLUMNS, ROWS)) as pilot:
        transcript = app.query_one(Transcript)
        await pilot.pause()
        # Render one event of each kind first: renderers imported or built on first use
        # (Markdown, Pygments) are paid once per process, not per event.
        warm_state = RenderState()
        warm = [Event.model_validate_json(raw) for raw in _mix_envelopes(6)]
        transcript.append(transcript.make_entries((e, annotate(e, warm_state)) for e in warm))
        await pilot.pause()
        transcript.reset()
        await pilot.pause()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        events = [Event.model_validate_json(raw) for raw in envelopes]
        state = RenderState()
        batch = [(event, annotate(event, state)) for event in events]
        made = transcript.make_entries(batch)
        transcript.append(made)
        await pilot.pause()
        transcript.scroll_to(y=transcript.max_scroll_y // 2, animate=False, immediate=True)
        await pilot.pause()
        held = len(transcript.entries)
        del events, batch, made
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    per_line = (after - before) / max(held, 1)
    log(f"  {per_line:.0f} bytes per retained event ({held} held)")
    return {
        "tui_bytes_per_line": per_line,
        "tui_lines_held": held,
        "tui_window_mb": per_line * 2000 / 2**20,
    }


# -- a real terminal -----------------------------------------------------------------------


def process_cpu_s(pid: int) -> float | None:
    """CPU time (user + system, s) used so far by process ``pid``: the scheduler's exact
    runtime of its live threads (``/proc/<pid>/task/*/sched``), else ``/proc/<pid>/stat``
    (clock ticks, which include finished threads); None when neither can be read."""
    total = 0.0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/sched") as sched:
                for line in sched:
                    if line.startswith("se.sum_exec_runtime"):
                        total += float(line.rsplit(":", 1)[1]) / 1000  # ms
                        break
                else:
                    raise OSError("no se.sum_exec_runtime")
        return total
    except (OSError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class PtyTui:
    """``codex-tui`` under a pseudo-terminal of :data:`COLUMNS` × :data:`ROWS`; a thread
    records every chunk read from the master with its time, and notes the first full-screen
    frame (every row addressed by a cursor position sequence, searched across reads) with the
    process's CPU time at that moment."""

    def __init__(self, server: Server, home: Path, argv: list[str] | None = None) -> None:
        """Spawn ``codex-tui`` (or ``argv``, e.g. the Textual floor) against ``server``."""
        env = base_env()
        env.update(
            CODEX_TUI_HOME=str(home),
            CODEX_TUI_SERVER=server.url,
            CODEX_TUI_TOKEN=server.token,
            TERM="xterm-256color",
            COLORTERM="truecolor",
        )
        env.pop("NO_COLOR", None)
        self.chunks: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()
        self._rows: set[int] = set()
        self._tail = b""
        #: The first full screen: seconds after spawn, and CPU seconds then (None if unread).
        self.first_frame: tuple[float, float | None] | None = None
        self._framed = threading.Event()
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        if argv is None:
            command = Path(sys.executable).with_name("codex-tui")
            argv = [str(command)] if command.exists() else [sys.executable, "-m", "codex_tui"]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=server.workdir,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self._unregister = CLEANUP.push("a pty TUI", self.close)
        self._thread = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            at = time.perf_counter()
            with self._lock:
                self.chunks.append((at, data))
            if self.first_frame is None:
                self._look_for_frame(at, data)

    def _look_for_frame(self, at: float, data: bytes) -> None:
        """Add the rows ``data`` addresses, searching it joined to the end of the previous
        reads (a sequence can be split between two); once every row was drawn, record the
        first frame and the process's CPU time, read right away."""
        joined = self._tail + data
        self._rows.update(int(m.group(1)) for m in _ROW_RE.finditer(joined))
        self._tail = joined[-_ROW_OVERLAP:]
        if self._rows >= set(range(1, ROWS + 1)):
            self.first_frame = (at - self.started, process_cpu_s(self.proc.pid))
            self._framed.set()

    def output(self, since: float = 0.0) -> bytes:
        """Everything read after ``since`` (perf_counter time)."""
        with self._lock:
            return b"".join(d for t, d in self.chunks if t > since)

    def bytes_between(self, start: float, end: float) -> int:
        """How many bytes arrived in ``(start, end]``."""
        with self._lock:
            return sum(len(d) for t, d in self.chunks if start < t <= end)

    def last_time(self) -> float:
        """When the newest chunk arrived (0 before any)."""
        with self._lock:
            return self.chunks[-1][0] if self.chunks else 0.0

    def wait_full_screen(self, timeout_s: float = 30.0) -> float:
        """Seconds from spawn until every row was drawn (the first full-screen frame; its CPU
        time is in :attr:`first_frame`).

        Raises:
            BenchError: no full screen within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while not self._framed.wait(0.02):
            if self.proc.poll() is not None:
                self._thread.join(1.0)  # what it wrote before exiting may still be read
                if self._framed.is_set():
                    break
                raise BenchError(f"codex-tui exited {self.proc.returncode}: {self.output()!r}")
            if time.monotonic() > deadline:
                raise BenchError(f"codex-tui drew no full screen in {timeout_s:.0f} s")
        assert self.first_frame is not None
        return self.first_frame[0]

    def wait_text(self, text: bytes, timeout_s: float = 20.0, since: float = 0.0) -> bool:
        """Wait until ``text`` appears in the output after ``since``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.output(since):
                return True
            time.sleep(0.02)
        return False

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> float:
        """Wait until nothing arrived for ``quiet_s``; returns the last chunk's time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            last = self.last_time()
            if time.perf_counter() - last >= quiet_s:
                return last
            time.sleep(0.05)
        return self.last_time()

    def close(self) -> None:
        """Quit with ``q``; kill after 5 s."""
        self._unregister()
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.write(self.master, b"q")
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)


async def _wait_running(server: Server, task_id: str) -> None:
    async with bench_client(server) as client:
        deadline = time.monotonic() + 60
        while (await client.get_task(task_id)).status.value != "running":
            if time.monotonic() > deadline:
                raise BenchError("the TUI's task never ran")
            await asyncio.sleep(0.05)


async def _wait_done(server: Server, task_id: str, timeout_s: float) -> None:
    async with bench_client(server) as client:
        deadline = time.monotonic() + timeout_s
        while not (await client.get_task(task_id)).status.is_terminal:
            if time.monotonic() > deadline:
                raise BenchError("the TUI's task never finished")
            await asyncio.sleep(0.1)


async def _idle_rate(tui: PtyTui, idle_s: float) -> float:
    """Bytes per second the TUI writes to its terminal while nothing happens for ``idle_s``."""
    start = time.perf_counter()
    await asyncio.sleep(idle_s)
    return tui.bytes_between(start, time.perf_counter()) / idle_s


def stream_figures(
    events: int, rate: float, total: int, idle_rate: float, seconds: float, shown: bool
) -> dict[str, Any]:
    """What one stream into a pane cost the terminal: ``total`` bytes written in ``seconds``
    from the release of ``events`` events at ``rate`` per second, less what the idle screen
    writes (``idle_rate``, bytes per second: the clocks of a running task), per event and
    in kbit/s; ``shown`` is whether the last event appeared on the screen. A stream whose
    last event never showed measured a pane that did not follow it: its figures describe
    nothing and the caller does not report them as a goal's key."""
    streamed = max(total - idle_rate * seconds, 0.0)
    return {
        "events": events,
        "rate_per_s": rate,
        "bytes_per_event": streamed / events,
        "bytes": total,
        "idle_bytes_per_s": idle_rate,
        "seconds": seconds,
        "last_event_shown": shown,
        "kbit_per_s": streamed * 8 / 1000 / max(seconds, 1e-9),
    }


async def tui_terminal(
    server: Server,
    run_dir: Path,
    *,
    cold_runs: int,
    streams: list[tuple[int, float]],
    log: Log,
    idle_s: float = 2.0,
) -> dict[str, Any]:
    """Cold starts under a pty (``cold_runs``, at least :data:`MIN_COLD_RUNS`): the median
    and best time to the first full screen, and the median CPU time the process had used by
    then (steadier than wall time on a shared machine); then :func:`tui_streams` (terminal
    bytes while each of ``streams`` streams into the active pane)."""
    runs = max(cold_runs, MIN_COLD_RUNS)
    log(f"tui: cold start under a pty ({runs} runs each), terminal bytes per event")
    home = run_dir / "tui-home"
    floor_argv = [sys.executable, "-m", "benchmarks.textual_floor"]
    colds: list[float] = []
    cpus: list[float] = []
    floors: list[float] = []
    floor_cpus: list[float] = []
    for _ in range(runs):  # interleaved, so a burst of load hits both alike
        for argv, walls, cpu_times in ((None, colds, cpus), (floor_argv, floors, floor_cpus)):
            tui = PtyTui(server, home, argv)
            try:
                walls.append(await asyncio.to_thread(tui.wait_full_screen))
                assert tui.first_frame is not None
                if tui.first_frame[1] is not None:
                    cpu_times.append(tui.first_frame[1])
            finally:
                await asyncio.to_thread(tui.close)
    out: dict[str, Any] = {
        "tui_cold_start_ms": median(colds) * 1000,
        "tui_cold_start_best_ms": min(colds) * 1000,
        "tui_cold_start_runs_ms": [round(c * 1000) for c in colds],
        "tui_cold_start_floor_ms": median(floors) * 1000,
        "tui_cold_start_floor_runs_ms": [round(c * 1000) for c in floors],
        "tui_cold_start_vs_floor": median(colds) / median(floors),
        "tui_terminal": f"{COLUMNS}x{ROWS}, TERM=xterm-256color, COLORTERM=truecolor",
    }
    if cpus:
        out["tui_cold_start_cpu_ms"] = median(cpus) * 1000
        out["tui_cold_start_cpu_runs_ms"] = [round(c * 1000) for c in cpus]
    if floor_cpus:
        out["tui_cold_start_floor_cpu_ms"] = median(floor_cpus) * 1000
    log(
        f"  first full screen after {out['tui_cold_start_ms']:.0f} ms (median of {runs}, "
        f"best {out['tui_cold_start_best_ms']:.0f} ms; CPU "
        f"{out.get('tui_cold_start_cpu_ms', float('nan')):.0f} ms by then); a bare Textual "
        f"app of the same shape: {out['tui_cold_start_floor_ms']:.0f} ms "
        f"(×{out['tui_cold_start_vs_floor']:.2f})"
    )
    out.update(await tui_streams(server, run_dir, streams=streams, log=log, idle_s=idle_s))
    return out


async def tui_streams(
    server: Server,
    run_dir: Path,
    *,
    streams: list[tuple[int, float]],
    log: Log,
    idle_s: float = 2.0,
) -> dict[str, Any]:
    """Terminal bytes while each of ``streams`` (events, events/s) streams into the pane of
    a ``codex-tui`` under a pty (80×24), opened on the running task, less the idle screen's
    rate measured over ``idle_s`` before; keys ``tui_bytes_per_1000_events`` (the first
    stream) and ``tui_bytes_per_1000_events_<rate>`` (the others), and ``tui_stream_<n>``
    with each stream's :func:`stream_figures`. A stream whose last event never showed gets
    no key (the log says so)."""
    out: dict[str, Any] = {}
    for index, (events, rate) in enumerate(streams):
        gate = Gate(run_dir / "gates")
        spec = LoadSpec(1, events, rate)
        word = f"tui-bytes-{index}"
        async with bench_client(server) as client:
            task = await client.create_task(
                spec.prompts(gate.path, word=word)[0], workdir=str(server.workdir)
            )
        await _wait_running(server, task.id)
        # A home of its own: the TUI reopens the panes it left (tui-state.json, README), so a
        # shared one would show the previous stream's task instead of this one.
        tui = PtyTui(server, run_dir / f"tui-home-stream-{index}")
        try:
            await asyncio.to_thread(tui.wait_full_screen)
            if not await asyncio.to_thread(tui.wait_text, word.encode()):
                log("  (the task's prompt never showed on the screen)")
            await asyncio.to_thread(tui.wait_quiet, 1.0, 10.0)
            idle_rate = await _idle_rate(tui, idle_s)
            gate.release()
            released = time.perf_counter()
            await _wait_done(server, task.id, 60 + events / max(rate, 100))
            last = b"message %d " % (events - 1)
            shown = await asyncio.to_thread(tui.wait_text, last, 30.0, released)
            end = await asyncio.to_thread(tui.wait_quiet, 1.0, 30.0)
            end = max(end, released)
            total = tui.bytes_between(released, end)
        finally:
            gate.close()
            await asyncio.to_thread(tui.close)
        key = "tui_bytes_per_1000_events" if index == 0 else f"tui_bytes_per_1000_events_{rate:g}"
        figures = stream_figures(events, rate, total, idle_rate, end - released, shown)
        out[f"tui_stream_{index}"] = figures
        if shown:
            out[key] = figures["bytes_per_event"] * 1000
            log(
                f"  {events} events at {rate:g}/s: {out[key]:.0f} bytes per 1,000 events "
                f"({figures['kbit_per_s']:.0f} kbit/s; idle {idle_rate:.0f} B/s)"
            )
        else:
            log(
                f"  {events} events at {rate:g}/s: the pane never showed the last event "
                f"({total} bytes in {end - released:.1f} s); {key} is not reported"
            )
    return out


#: The 4-pane measurement: agent-message deltas per task and their rate (per second).
FOUR_PANES_DELTAS = 400
FOUR_PANES_RATE = 40.0


async def tui_four_panes(
    run_dir: Path,
    log: Log,
    *,
    deltas: int = FOUR_PANES_DELTAS,
    rate: float = FOUR_PANES_RATE,
    idle_s: float = 2.0,
) -> dict[str, Any]:
    """Terminal bytes per second while four panes of an 80×24 ``codex-tui`` each follow a
    conversation turn that streams ``deltas`` agent-message deltas at ``rate`` per second
    (the fake ``codex app-server``, mode ``as-deltas``, on a server of its own).

    The panes are opened as a person would: ``o`` splits the highlighted task into a new pane
    and ``down`` shows the next task there (three times), then ``enter`` moves the keyboard
    into the last pane, so one pane has the focus and three have not. The rate is measured
    over the steady part of the stream (from 0.5 s after the gate opens until 0.5 s before
    the last delta is due); the whole stream's bytes (up to the last write after every turn
    ended) and the idle rate before are reported too, and whether every pane ended showing
    the end of its turn (the "turn done" bar)."""
    from benchmarks.deltas import FAKE_MODE, DeltaSpec
    from benchmarks.harness import start_server
    from server_client.enums import Runtime

    log(f"tui: terminal bytes while 4 panes follow turns streaming {rate:g} deltas/s each")
    server = await asyncio.to_thread(
        start_server,
        run_dir,
        name="tui-panes",
        fake_mode=FAKE_MODE,
        runtime="app-server",
        max_tasks=4,
    )
    try:
        spec = DeltaSpec(4, deltas, rate)
        gate = Gate(run_dir / "gates")
        async with bench_client(server) as client:
            tasks = [
                await client.create_task(
                    prompt, workdir=str(server.workdir), runtime=Runtime.APP_SERVER
                )
                for prompt in spec.prompts(gate.path)
            ]
        for task in tasks:
            await _wait_running(server, task.id)
        tui = PtyTui(server, run_dir / "tui-panes-home")
        try:
            await asyncio.to_thread(tui.wait_full_screen)
            if not await asyncio.to_thread(tui.wait_text, b"deltas bench"):
                raise BenchError("the tasks never showed in the TUI")
            await asyncio.to_thread(tui.wait_quiet, 0.5, 10.0)
            for key in (b"o", b"\x1b[B", b"o", b"\x1b[B", b"o", b"\x1b[B", b"\r"):
                os.write(tui.master, key)
                await asyncio.sleep(0.3)
            await asyncio.to_thread(tui.wait_quiet, 1.0, 10.0)
            idle_rate = await _idle_rate(tui, idle_s)
            gate.release()
            released = time.perf_counter()
            for task in tasks:
                await _wait_idle(server, task.id, 60 + spec.expected_s)
            end = max(await asyncio.to_thread(tui.wait_quiet, 1.0, 30.0), released)
            steady = (released + 0.5, released + max(spec.expected_s - 0.5, 1.0))
            steady_bytes = tui.bytes_between(*steady)
            total = tui.bytes_between(released, end)
            done_bars = tui.output(released).count(b"turn done")
        finally:
            gate.close()
            await asyncio.to_thread(tui.close)
    finally:
        await asyncio.to_thread(server.stop)
    per_s = steady_bytes / (steady[1] - steady[0])
    out = {
        "tui_bytes_per_s_4_panes": per_s,
        "tui_4_panes": {
            "deltas_per_task": deltas,
            "rate_per_s": rate,
            "steady_s": steady[1] - steady[0],
            "bytes": total,
            "seconds": end - released,
            "bytes_per_delta": total / (4 * deltas),
            "idle_bytes_per_s": idle_rate,
            "turn_done_bars_drawn": done_bars,
        },
    }
    log(
        f"  {per_s:.0f} bytes/s while streaming ({total} bytes in {end - released:.1f} s, "
        f"{total / (4 * deltas):.0f} per delta; idle {idle_rate:.0f} B/s)"
    )
    return out


async def _wait_idle(server: Server, task_id: str, timeout_s: float) -> None:
    """Wait until the conversation ``task_id``'s turn ended (idle, or any end)."""
    async with bench_client(server) as client:
        deadline = time.monotonic() + timeout_s
        while True:
            status = (await client.get_task(task_id)).status
            if status.value == "idle" or status.is_terminal:
                return
            if time.monotonic() > deadline:
                raise BenchError("a 4-pane task's turn never ended")
            await asyncio.sleep(0.1)
