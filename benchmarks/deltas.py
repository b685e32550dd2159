"""Provides the ``deltas`` section: many conversation tasks streaming token deltas at once
through the real pipeline (fake ``codex app-server`` → worker → server → SSE → SDK client),
and the same fakes read straight from their stdout pipes (the baseline). The ``storm``
section runs one such load, the delta storm of issue 14: 50 turns at once, each streaming
token-sized agent-message deltas (no padding: a delta is its stamp, about 25 characters) at
40/s and then its command's growing output (``item/commandExecution/outputDelta``) at the same
rate; its added latency is end to end − pipe, quantile by quantile.

The fake (``tests/fakes/fake_codex.py``, app-server mode ``as-deltas``) streams ``deltas``
``item/agentMessage/delta`` notifications of one agent message (then, with ``output``, as many
``item/commandExecution/outputDelta`` of one command) at ``rate`` per second, each delta's
text carrying its index and the wall-clock time it was written (``⟨n:t_ns⟩``), then the
completed items, the token usage and ``turn/completed``. The worker runs it with
``--runtime app-server``; its uploader coalesces consecutive deltas of one item while they are
unsent, so one stored ``item.delta`` event may carry several stamps: each stamp counts as one
delivered delta, its latency measured from its own stamp.

A client follows each task until the status event that ends its turn (``idle``; a
conversation does not end, its turn does). Measured: the latency of every delta (p50/p99, and
as a ratio to the pipe baseline's of the same run); the deltas emitted per stored
``item.delta`` event (the coalescing ratio); the latency of each event's first delta split at
the event's time (the worker's, when it read that delta: before it, the fake's pipe and the
worker's reading; after it, the wait to be sent, the upload, the store and the SSE stream); the
stored bytes per delta (the ``data`` of the tasks' delta events in the SQLite file, beside the
bytes of the deltas' own text); CPU and RSS of the server and worker; and integrity: every
stamp seen exactly once and in the order written, the deltas of each item concatenated equal
to its completed text, each item completed exactly once, as many delta events stored as the
clients saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from benchmarks.harness import FAKE_CODEX, CpuSample, Server, summarize
from benchmarks.load import Gate, _Prober, bench_client, fake_env
from server_client.client import CodexTuiClient
from server_client.enums import Runtime, TaskStatus
from server_client.models import EventKind

#: A delta's stamp: ``⟨index:time_ns⟩`` (tests/fakes/fake_codex.py ``delta_stamp``).
STAMP = re.compile("\u27e8(\\d+):(\\d+)\u27e9")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The fake's settings for this section (``FAKE_CODEX_MODE``).
FAKE_MODE = "as-deltas"

#: The stored event of a delta, and the notifications of one (app-server methods).
DELTA_TYPE = "item.delta"
DELTA_METHODS = ("item/agentMessage/delta", "item/commandExecution/outputDelta")


@dataclass(frozen=True)
class DeltaSpec:
    """One load: ``tasks`` conversation turns at once, each streaming ``deltas`` agent-message
    deltas and then ``output`` command-output deltas at ``rate`` per second (0: unpaced)."""

    tasks: int
    deltas: int
    rate: float
    output: int = 0
    pad: int = 0

    @property
    def per_task(self) -> int:
        """Deltas each task emits."""
        return self.deltas + self.output

    @property
    def offered_per_s(self) -> float:
        """Deltas per second of all tasks together (0 when unpaced)."""
        return self.tasks * self.rate

    @property
    def expected_s(self) -> float:
        """How long one task streams (s; a guess when unpaced)."""
        return self.per_task / self.rate if self.rate > 0 else self.per_task / 2000

    def prompts(self, gate: Path | None, seed: int = 0) -> list[str]:
        """One prompt per task (``key=value`` words the fake reads), each with a random phase
        within one interval (the same ``seed``, the same phases)."""
        rng = random.Random(seed)
        interval = 1 / self.rate if self.rate > 0 else 0.0
        gate_word = f" gate={gate}" if gate is not None else ""
        return [
            f"deltas bench deltas={self.deltas} output={self.output} rate={self.rate:g} "
            f"pad={self.pad} phase={rng.uniform(0, interval):.6f}{gate_word} "
            f"nonce={secrets.token_hex(3)}"
            for _ in range(self.tasks)
        ]


@dataclass
class DeltaTrace:
    """What one reader saw of one task's turn.

    ``texts`` maps item id → the delta texts in arrival order, ``completed`` item id → the
    texts of its completed events; ``seen`` counts each stamp index; ``out_of_order`` counts
    the stamps that arrived after one with a higher index (the fake numbers a task's deltas
    in the order it writes them, over both of its items).
    """

    task_id: str
    lat_ns: list[int] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)
    seen: Counter[int] = field(default_factory=Counter)
    texts: dict[str, list[str]] = field(default_factory=dict)
    completed: dict[str, list[str]] = field(default_factory=dict)
    read_ns: list[int] = field(default_factory=list)
    onward_ns: list[int] = field(default_factory=list)
    delta_events: int = 0
    out_of_order: int = 0
    max_index: int = -1
    last_arrival: int = 0
    ready: bool = False
    status: str | None = None
    error: str | None = None

    def add_delta(self, item_id: str, text: str, now_ns: int, ts_ns: int | None = None) -> None:
        """Record one delivered delta event (it may carry several stamps) that the reader has
        at ``now_ns``; ``ts_ns`` is the event's time (the worker's: when it read the event's
        first delta), which splits the first delta's latency in two (``read_ns``: write to
        the worker's read; ``onward_ns``: from there to the reader)."""
        self.delta_events += 1
        self.texts.setdefault(item_id, []).append(text)
        first = True
        for match in STAMP.finditer(text):
            stamp, index = int(match.group(2)), int(match.group(1))
            if index < self.max_index:
                self.out_of_order += 1
            self.max_index = max(self.max_index, index)
            self.seen[index] += 1
            self.stamps.append(stamp)
            self.lat_ns.append(now_ns - stamp)
            if first and ts_ns is not None:
                self.read_ns.append(ts_ns - stamp)
                self.onward_ns.append(now_ns - ts_ns)
            first = False
        self.last_arrival = now_ns

    def add_completed(self, item_id: str, text: str) -> None:
        """Record one completed item's final text."""
        self.completed.setdefault(item_id, []).append(text)


def _item_text(item: dict[str, Any]) -> str | None:
    """The final text of a completed agent message or command (app-server's item), else
    None."""
    if item.get("type") == "agentMessage":
        return str(item.get("text", ""))
    if item.get("type") == "commandExecution":
        return str(item.get("aggregatedOutput") or "")
    return None


def integrity(traces: list[DeltaTrace], per_task: int) -> dict[str, int]:
    """Lost, duplicated and out-of-order stamps (:class:`DeltaTrace`), items whose
    concatenated deltas differ from their completed text, and items not completed exactly
    once, over all ``traces``."""
    lost = dup = text_mismatch = completed_not_once = 0
    for trace in traces:
        lost += sum(1 for n in range(per_task) if trace.seen[n] == 0)
        dup += sum(count - 1 for count in trace.seen.values() if count > 1)
        for item_id in trace.texts.keys() | trace.completed.keys():
            done = trace.completed.get(item_id, [])
            if len(done) != 1:
                completed_not_once += 1
            if not done or "".join(trace.texts.get(item_id, [])) != done[0]:
                text_mismatch += 1
    return {
        "lost": lost,
        "duplicated": dup,
        "out_of_order": sum(t.out_of_order for t in traces),
        "text_mismatch": text_mismatch,
        "completed_not_once": completed_not_once,
    }


def _window_s(traces: list[DeltaTrace], fallback_ns: int) -> float:
    first = min((min(t.stamps) for t in traces if t.stamps), default=fallback_ns)
    last = max((t.last_arrival for t in traces), default=fallback_ns)
    return max((last - first) / 1e9, 1e-9)


async def _follow(client: CodexTuiClient, trace: DeltaTrace, on_ready: Callable[[], None]) -> None:
    """Follow one task's stream until its turn ends (status ``idle``) or the task ends."""
    try:
        async for event in client.stream_events(trace.task_id):
            now = time.time_ns()
            data = event.data
            if event.kind is EventKind.CODEX and isinstance(data, dict):
                kind = data.get("type")
                if kind == DELTA_TYPE:
                    ts = event.ts if event.ts.tzinfo else event.ts.replace(tzinfo=UTC)
                    ts_ns = (ts - EPOCH) // timedelta(microseconds=1) * 1000
                    delta = str(data.get("delta", ""))
                    trace.add_delta(str(data.get("item_id")), delta, now, ts_ns)
                elif kind == "item.completed" and isinstance(data.get("item"), dict):
                    final = _item_text(data["item"])
                    if final is not None:
                        trace.add_completed(str(data["item"].get("id")), final)
                elif kind == "turn.started" and not trace.ready:
                    trace.ready = True
                    on_ready()
            status = event.status
            if status is TaskStatus.IDLE or event.is_terminal:
                trace.status = status.value if status is not None else None
                return
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        trace.error = repr(exc)


def stored_delta_bytes(server: Server, task_ids: list[str]) -> tuple[int, int] | None:
    """``(events, bytes)``: the tasks' stored ``item.delta`` events and the bytes of their
    ``data``, read from the server's SQLite file (None when there is none)."""
    files = sorted(server.home.rglob("codex-tui.db"))
    if not files or not task_ids:
        return None
    marks = ",".join("?" * len(task_ids))
    query = (
        "SELECT count(*), coalesce(sum(length(CAST(e.data AS BLOB))), 0) FROM events e "
        f"JOIN tasks t ON t.pk = e.task_pk WHERE t.id IN ({marks}) AND e.kind = 'codex' "
        "AND e.data LIKE '%\"item.delta\"%'"
    )
    with contextlib.closing(sqlite3.connect(f"file:{files[0]}?mode=ro", uri=True)) as conn:
        conn.execute("PRAGMA busy_timeout = 5000")
        events, size = conn.execute(query, task_ids).fetchone()
    return int(events), int(size)


async def run_deltas(
    server: Server, spec: DeltaSpec, gate_dir: Path, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run ``spec`` end to end on ``server`` (its worker must run app-server tasks with the
    fake in mode :data:`FAKE_MODE`); returns latencies, coalescing, costs and integrity."""
    client = bench_client(server)
    gate = Gate(gate_dir)
    limiter = asyncio.Semaphore(16)
    ready = 0
    all_ready = asyncio.Event()

    def one_ready() -> None:
        nonlocal ready
        ready += 1
        if ready >= spec.tasks:
            all_ready.set()

    async def create(prompt: str) -> str:
        async with limiter:
            task = await client.create_task(
                prompt, workdir=str(server.workdir), runtime=Runtime.APP_SERVER
            )
            return task.id

    try:
        idle_rss = server.rss_bytes()
        started = time.monotonic()
        ids = await asyncio.gather(*(create(p) for p in spec.prompts(gate.path)))
        traces = [DeltaTrace(task_id) for task_id in ids]
        followers = [asyncio.create_task(_follow(client, t, one_ready)) for t in traces]
        prober = _Prober(server)
        prober.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_ready.wait(), 30 + 0.15 * spec.tasks)
        ramp_s = time.monotonic() - started
        if ready < spec.tasks:
            log(f"  only {ready}/{spec.tasks} tasks ready after {ramp_s:.0f} s; starting anyway")
        rss_ready = server.rss_bytes()
        cpu_gate = server.cpu()
        client_cpu = psutil.Process().cpu_times()
        gate.release()
        gate_ns = time.time_ns()
        run_timeout = 3 * spec.expected_s + 60 + 0.2 * spec.tasks
        _, pending = await asyncio.wait(followers, timeout=run_timeout)
        if pending:
            log(f"  {len(pending)} turns still running after {run_timeout:.0f} s; cancelling")
            for trace in traces:
                if trace.status is None:
                    with contextlib.suppress(Exception):
                        await client.cancel_task(trace.task_id)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        end_ns = time.time_ns()
        client_cpu_end = psutil.Process().cpu_times()
        cpu_used = server.cpu().minus(cpu_gate)
        prober.stop()
        for trace in traces:  # end the conversations (their threads stay idle otherwise)
            with contextlib.suppress(Exception):
                await client.cancel_task(trace.task_id)
    finally:
        gate.close()
        await client.aclose()
    stored = await asyncio.to_thread(stored_delta_bytes, server, ids)
    statuses = Counter(t.status or ("error" if t.error else "unfinished") for t in traces)
    checks = integrity(traces, spec.per_task)
    emitted = spec.tasks * spec.per_task
    received = sum(len(t.lat_ns) for t in traces)
    delta_events = sum(t.delta_events for t in traces)
    client_s = (client_cpu_end.user + client_cpu_end.system) - (client_cpu.user + client_cpu.system)
    text_bytes = sum(len(x.encode()) for t in traces for texts in t.texts.values() for x in texts)
    ok = (
        statuses.get(TaskStatus.IDLE.value, 0) == spec.tasks
        and not pending
        and all(v == 0 for v in checks.values())
        and (stored is None or stored[0] == delta_events)
    )
    return {
        "tasks": spec.tasks,
        "deltas_per_task": spec.per_task,
        "rate_per_task": spec.rate,
        "offered_per_s": spec.offered_per_s,
        "delivered_per_s": received / _window_s(traces, end_ns),
        "emitted": emitted,
        "received": received,
        "delta_events": delta_events,
        "deltas_per_event": received / delta_events if delta_events else None,
        "stored_delta_events": stored[0] if stored else None,
        "stored_bytes_per_delta": stored[1] / emitted if stored and emitted else None,
        "text_bytes_per_delta": text_bytes / received if received else None,
        "ok": ok,
        "ready": ready,
        "ramp_s": ramp_s,
        "statuses": dict(statuses),
        "timed_out": bool(pending),
        "latency_ms": summarize([ns / 1e6 for t in traces for ns in t.lat_ns]),
        "worker_read_ms": summarize([ns / 1e6 for t in traces for ns in t.read_ns]),
        "after_read_ms": summarize([ns / 1e6 for t in traces for ns in t.onward_ns]),
        "healthz_ms": summarize(prober.rtt_ms),
        "rss_idle_mb": idle_rss / 2**20,
        "rss_ready_mb": rss_ready / 2**20,
        "rss_peak_mb": max([*prober.rss, rss_ready]) / 2**20,
        "cpu_s": {**_cpu(cpu_used), "client": client_s},
        "cpu_ms_per_1000_deltas": {
            k: v * 1e6 / received if received else None
            for k, v in {**_cpu(cpu_used), "client": client_s}.items()
        },
        "seconds_after_gate": (end_ns - gate_ns) / 1e9,
        "errors": sorted({t.error for t in traces if t.error})[:3],
        **checks,
    }


def _cpu(used: CpuSample) -> dict[str, float]:
    return {"server": used.server, "worker": used.worker, "codex": used.codex}


def _request(request_id: int, method: str, params: dict[str, Any]) -> bytes:
    return (json.dumps({"id": request_id, "method": method, "params": params}) + "\n").encode()


async def run_pipe_baseline(spec: DeltaSpec, gate_dir: Path, workdir: Path) -> dict[str, Any]:
    """The baseline: the same fakes spawned here (``app-server``, the worker's argv), driven
    through initialize, thread/start and turn/start on stdin, their stdout read by asyncio
    readers that parse each line as JSON.

    Returns:
        ``latency_ms`` (summary), ``received``, ``emitted``, ``delivered_per_s`` and the
        integrity counts.
    """
    gate = Gate(gate_dir)
    env = fake_env(FAKE_MODE)
    ready = 0
    all_ready = asyncio.Event()
    prompts = spec.prompts(gate.path)
    traces = [DeltaTrace(f"pipe-{i}") for i in range(spec.tasks)]

    async def drive(proc: asyncio.subprocess.Process, prompt: str, trace: DeltaTrace) -> None:
        nonlocal ready
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(_request(0, "initialize", {"clientInfo": {"name": "bench"}}))
        proc.stdin.write(_request(1, "thread/start", {"cwd": str(workdir)}))
        await proc.stdin.drain()
        while line := await proc.stdout.readline():
            now = time.time_ns()
            message = json.loads(line)
            method = message.get("method")
            params = message.get("params") or {}
            if method in DELTA_METHODS:
                trace.add_delta(params["itemId"], params["delta"], now)
            elif method == "item/completed":
                text = _item_text(params["item"])
                if text is not None:
                    trace.add_completed(params["item"]["id"], text)
            elif method == "thread/started":
                thread = {"threadId": params["thread"]["id"]}
                words = [{"type": "text", "text": prompt}]
                proc.stdin.write(_request(2, "turn/start", {**thread, "input": words}))
                await proc.stdin.drain()
            elif method == "turn/started":
                ready += 1
                if ready >= spec.tasks:
                    all_ready.set()
            elif method == "turn/completed":
                trace.status = TaskStatus.IDLE.value
                proc.stdin.close()
        await proc.wait()

    procs: list[asyncio.subprocess.Process] = []
    readers: list[asyncio.Task[None]] = []
    try:
        for prompt, trace in zip(prompts, traces, strict=True):
            proc = await asyncio.create_subprocess_exec(
                str(FAKE_CODEX),
                "app-server",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=workdir,
                env=env,
                start_new_session=True,
                limit=1 << 20,
            )
            procs.append(proc)
            readers.append(asyncio.create_task(drive(proc, prompt, trace)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_ready.wait(), 30 + 0.1 * spec.tasks)
        gate.release()
        await asyncio.wait(readers, timeout=3 * spec.expected_s + 60)
    finally:
        gate.close()
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
    received = sum(len(t.lat_ns) for t in traces)
    return {
        "tasks": spec.tasks,
        "emitted": spec.tasks * spec.per_task,
        "received": received,
        "delivered_per_s": received / _window_s(traces, time.time_ns()),
        "latency_ms": summarize([ns / 1e6 for t in traces for ns in t.lat_ns]),
        "turns_completed": sum(1 for t in traces if t.status),
        **integrity(traces, spec.per_task),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b != b or a != a or b <= 0:
        return None
    return a / b


async def deltas(
    server: Server,
    run_dir: Path,
    specs: list[DeltaSpec],
    log: Callable[[str], None] = print,
    section: str = "deltas",
) -> dict[str, Any]:
    """The section (``deltas``, or ``storm`` with the one load of the delta storm): for each
    load, the pipe baseline then the same load end to end on ``server``; latencies also as
    differences and ratios (end to end − pipe, end to end ÷ pipe, quantile by quantile, ms).
    ``section`` names the progress lines.

    Returns:
        ``{"loads": {"<tasks>x<rate>": {"e2e", "baseline", "ratio", "added_ms"}}}`` and the
        first load's figures as ``deltas_*`` keys (see :func:`benchmarks.report.flatten`).
    """
    loads: dict[str, Any] = {}
    for spec in specs:
        name = f"{spec.tasks}x{spec.rate:g}"
        log(f"{section}: {spec.tasks} tasks × {spec.per_task} deltas at {spec.rate:g}/s: pipe")
        base = await run_pipe_baseline(spec, run_dir / "gates", server.workdir)
        log(f"{section}: {name}: end to end")
        e2e = await run_deltas(server, spec, run_dir / "gates", log=log)
        lat, blat = e2e["latency_ms"], base["latency_ms"]
        loads[name] = {
            "e2e": e2e,
            "baseline": base,
            "ratio": {q: _ratio(lat[q], blat[q]) for q in ("p50", "p90", "p99")},
            "added_ms": {q: lat[q] - blat[q] for q in ("p50", "p90", "p99", "max")},
        }
        log(
            f"  p50 {lat['p50']:.1f} ms (pipe {blat['p50']:.2f}), p99 {lat['p99']:.1f} ms "
            f"(pipe {blat['p99']:.2f}); {e2e['deltas_per_event'] or 0:.1f} deltas per event; "
            f"ok={e2e['ok']}"
        )
    return {"loads": loads}
