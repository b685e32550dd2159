"""Provides the load generator: many stamped fake-codex tasks through the real pipeline
(worker → server → SSE → SDK client), and the same fakes read straight from pipes (baseline).

Each fake line carries ``t_ns``, the wall-clock time it was written (``tests/fakes/fake_codex.py``,
mode ``stamped``); the reader subtracts it from the wall-clock time at which it has the
parsed event. All tasks of a load wait at a :class:`Gate` until every one of them runs (and,
end to end, until every SSE stream has seen the task's ``turn.started``), so the latencies
are those of N tasks streaming at once, not of a ramp.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.harness import (
    CLEANUP,
    FAKE_CODEX,
    RUN_ENV,
    RUN_ID,
    CpuSample,
    Server,
    rounded,
    spawn_codex_pipe,
    summarize,
)
from server_client.client import CodexTuiClient
from server_client.models import EventKind

#: Bytes of text each stamped message carries (a line is then about 250 bytes, a typical
#: small codex event).
DEFAULT_PAD = 160


@dataclass(frozen=True)
class LoadSpec:
    """One load: ``tasks`` fakes at once, each printing ``events`` lines at ``rate`` per s.

    ``rate`` 0 means as fast as the fake can write.
    """

    tasks: int
    events: int
    rate: float
    pad: int = DEFAULT_PAD

    @property
    def offered_per_s(self) -> float:
        """The aggregate offered rate (events/s); 0 when unpaced."""
        return self.tasks * self.rate

    def prompts(self, gate: Path | None, seed: int = 0, word: str = "bench") -> list[str]:
        """One prompt per task that makes the fake behave so (``key=value`` words); each
        task gets a random phase within one interval, so paced fakes do not write in
        lockstep (the same ``seed`` gives the same phases). ``gate`` None: start at once."""
        rng = random.Random(seed)
        interval = 1 / self.rate if self.rate > 0 else 0.0
        gate_word = f" gate={gate}" if gate is not None else ""
        return [
            f"{word} events={self.events} rate={self.rate:g} pad={self.pad} "
            f"phase={rng.uniform(0, interval):.6f}{gate_word} nonce={secrets.token_hex(3)}"
            for _ in range(self.tasks)
        ]


class Gate:
    """A lock file held exclusively until :meth:`release`; stamped fakes wait on it."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"gate-{secrets.token_hex(4)}"
        self._file = open(self.path, "wb")  # noqa: SIM115 - held until release
        fcntl.flock(self._file, fcntl.LOCK_EX)
        self.released_at: float | None = None
        self._unregister = CLEANUP.push(f"gate {self.path}", self.release)

    def release(self) -> None:
        """Let every waiting fake start (idempotent)."""
        if not self._file.closed:
            self.released_at = time.time()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()

    def close(self) -> None:
        """Release and unregister from the cleanup."""
        self._unregister()


def bench_client(server: Server, timeout_s: float = 60.0) -> CodexTuiClient:
    """An SDK client for ``server`` (the SDK does not cap connections: one per stream)."""
    return CodexTuiClient(server.url, server.token, timeout=timeout_s)


def fake_env(mode: str = "stamped") -> dict[str, str]:
    """The environment a worker gives codex (its allow-list), for fakes started directly."""
    names = ("PATH", "HOME", "LANG", "USER", "LOGNAME", "TMPDIR")
    env = {name: os.environ[name] for name in names if name in os.environ}
    env["FAKE_CODEX_MODE"] = mode
    env[RUN_ENV] = RUN_ID
    return env


@dataclass
class Trace:
    """What one reader saw of one task."""

    task_id: str
    lat_ns: list[int] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)
    ns: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    last_arrival: int = 0
    ready: bool = False
    status: str | None = None
    error: str | None = None


def _peak_overlap(traces: list[Trace]) -> int:
    """The most tasks that were writing lines at the same time (from their stamps)."""
    edges: list[tuple[int, int]] = []
    for trace in traces:
        if trace.stamps:
            edges += [(trace.stamps[0], 1), (trace.stamps[-1], -1)]
    edges.sort(key=lambda e: (e[0], -e[1]))
    now = peak = 0
    for _, delta in edges:
        now += delta
        peak = max(peak, now)
    return peak


def by_phase(traces: list[Trace], start_ns: int, edge_s: float = 1.0) -> dict[str, Any]:
    """Latency of events written in the first ``edge_s`` after the start, in each task's last
    ``edge_s``, and in between (steady state): tells ramp and exit effects from the rest."""
    edge = int(edge_s * 1e9)
    first: list[float] = []
    last: list[float] = []
    steady: list[float] = []
    for trace in traces:
        if not trace.stamps:
            continue
        end = trace.stamps[-1]
        for stamp, lat in zip(trace.stamps, trace.lat_ns, strict=False):
            if stamp - start_ns < edge:
                first.append(lat / 1e6)
            elif end - stamp < edge:
                last.append(lat / 1e6)
            else:
                steady.append(lat / 1e6)
    return {
        "first_s": summarize(first),
        "steady": summarize(steady),
        "last_s": summarize(last),
    }


def trace_integrity(traces: list[Trace], events: int) -> dict[str, int]:
    """Lost, duplicated and out-of-order events, and seq gaps, over all traces."""
    lost = dup = disorder = gaps = 0
    for trace in traces:
        unique = set(trace.ns)
        lost += len(set(range(events)) - unique)
        dup += len(trace.ns) - len(unique)
        disorder += sum(1 for a, b in zip(trace.ns, trace.ns[1:], strict=False) if b <= a)
        if trace.seqs:
            gaps += trace.seqs[-1] - len(set(trace.seqs))
    return {"lost": lost, "duplicated": dup, "out_of_order": disorder, "seq_gaps": gaps}


class _Prober:
    """Samples the server's /healthz round trip from a thread (so the benchmark's own event
    loop, busy with streams, does not count), and RSS of the server and its worker."""

    def __init__(self, server: Server, interval_s: float = 0.1) -> None:
        self.server = server
        self.interval_s = interval_s
        self.rtt_ms: list[float] = []
        self.rss: list[int] = []
        self.codex_alive: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        tick = 0
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    http.get(f"{self.server.url}/healthz")
                    self.rtt_ms.append((time.perf_counter() - started) * 1000)
                if tick % 3 == 0:
                    with contextlib.suppress(psutil.Error):
                        self.rss.append(self.server.rss_bytes())
                if tick % 10 == 0:  # children() scans /proc: not too often
                    with contextlib.suppress(psutil.Error):
                        self.codex_alive.append(len(self.server.codex_processes()))
                tick += 1
                self._stop.wait(self.interval_s)


async def _follow(client: CodexTuiClient, trace: Trace, on_ready: Callable[[], None]) -> None:
    """Stream one task to its end, recording latencies of stamped events."""
    try:
        async for event in client.stream_events(trace.task_id):
            now = time.time_ns()
            trace.seqs.append(event.seq)
            data = event.data
            if event.kind is EventKind.CODEX and isinstance(data, dict):
                stamp = data.get("t_ns")
                if stamp is not None:
                    trace.lat_ns.append(now - stamp)
                    trace.stamps.append(stamp)
                    trace.ns.append(data["n"])
                    trace.last_arrival = now
                elif data.get("type") == "turn.started" and not trace.ready:
                    trace.ready = True
                    on_ready()
            if event.is_terminal:
                trace.status = event.status.value if event.status else None
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        trace.error = repr(exc)


async def run_load(
    server: Server,
    client: CodexTuiClient,
    spec: LoadSpec,
    gate_dir: Path,
    *,
    log: Callable[[str], None] = print,
    on_running: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Run ``spec`` end to end on ``server``; returns latencies and integrity.

    ``on_running`` is called (and awaited when it returns an awaitable) right after the gate
    opens, e.g. to start a profiler.
    """
    gate = Gate(gate_dir)
    limiter = asyncio.Semaphore(16)

    async def create(prompt: str) -> str:
        async with limiter:
            task = await client.create_task(prompt, workdir=str(server.workdir))
            return task.id

    cpu_start = server.cpu()
    idle_rss = server.rss_bytes()
    ready = 0
    all_ready = asyncio.Event()

    def one_ready() -> None:
        nonlocal ready
        ready += 1
        if ready >= spec.tasks:
            all_ready.set()

    started = time.monotonic()
    ids = await asyncio.gather(*(create(p) for p in spec.prompts(gate.path)))
    traces = [Trace(task_id) for task_id in ids]
    followers = [asyncio.create_task(_follow(client, t, one_ready)) for t in traces]
    prober = _Prober(server)
    prober.start()
    ramp_timeout = 30 + 0.15 * spec.tasks
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_ready.wait(), ramp_timeout)
    ramp_s = time.monotonic() - started
    if ready < spec.tasks:
        log(f"  only {ready}/{spec.tasks} tasks ready after {ramp_s:.0f} s; starting anyway")
    rss_ready = server.rss_bytes()
    cpu_gate = server.cpu()
    client_cpu = psutil.Process().cpu_times()
    gate.release()
    gate_ns = time.time_ns()
    if on_running is not None:
        result = on_running()
        if asyncio.iscoroutine(result):
            await result
    expected_s = spec.events / spec.rate if spec.rate > 0 else spec.events / 2000
    run_timeout = 3 * expected_s + 60 + 0.2 * spec.tasks
    done, pending = await asyncio.wait(followers, timeout=run_timeout)
    timed_out = bool(pending)
    if pending:
        log(f"  {len(pending)} streams still open after {run_timeout:.0f} s; cancelling")
        for trace in traces:
            if trace.status is None:
                with contextlib.suppress(Exception):
                    await client.cancel_task(trace.task_id)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    end_ns = time.time_ns()
    client_cpu_end = psutil.Process().cpu_times()
    cpu_end = server.cpu()
    prober.stop()
    gate.close()

    statuses: dict[str, int] = {}
    for trace in traces:
        key = trace.status or ("error" if trace.error else "unfinished")
        statuses[key] = statuses.get(key, 0) + 1
    stored_mismatch = 0
    for trace in traces:
        with contextlib.suppress(Exception):
            stored = await client.get_task(trace.task_id)
            if not trace.seqs or stored.last_seq != trace.seqs[-1]:
                stored_mismatch += 1
    integrity = trace_integrity(traces, spec.events)
    lat_ms = [ns / 1e6 for trace in traces for ns in trace.lat_ns]
    received = len(lat_ms)
    first_stamp = min((t.stamps[0] for t in traces if t.stamps), default=gate_ns)
    last_arrival = max((t.last_arrival for t in traces), default=end_ns)
    window_s = max((last_arrival - first_stamp) / 1e9, 1e-9)
    used = cpu_end.minus(cpu_gate)
    client_used = (client_cpu_end.user + client_cpu_end.system) - (
        client_cpu.user + client_cpu.system
    )
    ok = (
        statuses.get("completed", 0) == spec.tasks
        and integrity["lost"] == 0
        and integrity["duplicated"] == 0
        and integrity["seq_gaps"] == 0
        and stored_mismatch == 0
        and not timed_out
    )
    errors = sorted({t.error for t in traces if t.error})[:3]
    result_cpu = _cpu_per_1000(used, client_used, received)
    return {
        "tasks": spec.tasks,
        "events_per_task": spec.events,
        "rate_per_task": spec.rate,
        "offered_per_s": spec.offered_per_s,
        "delivered_per_s": received / window_s,
        "received": received,
        "expected": spec.tasks * spec.events,
        "ok": ok,
        "ready": ready,
        "ramp_s": ramp_s,
        "statuses": statuses,
        "stored_last_seq_mismatch": stored_mismatch,
        "timed_out": timed_out,
        "peak_overlap": _peak_overlap(traces),
        "latency_ms": summarize(lat_ms),
        "latency_ms_by_phase": by_phase(traces, gate_ns),
        "healthz_ms": summarize(prober.rtt_ms),
        "rss_idle_mb": idle_rss / 2**20,
        "rss_ready_mb": rss_ready / 2**20,
        "rss_peak_mb": max([*prober.rss, rss_ready]) / 2**20,
        "codex_alive_peak": max(prober.codex_alive, default=0),
        "cpu_s": {
            "server": used.server,
            "worker": used.worker,
            "codex": used.codex,
            "client": client_used,
        },
        "cpu_ms_per_1000_events": result_cpu,
        "cpu_start_to_gate_s": cpu_gate.minus(cpu_start).__dict__,
        "errors": errors,
        **integrity,
    }


def _cpu_per_1000(used: CpuSample, client_s: float, events: int) -> dict[str, float | None]:
    if not events:
        return {}
    scale = 1e6 / events  # s per event → ms per 1000 events
    return {
        "server": rounded(used.server * scale),
        "worker": rounded(used.worker * scale),
        "codex": rounded(used.codex * scale),
        "client": rounded(client_s * scale),
    }


async def run_baseline(spec: LoadSpec, gate_dir: Path, workdir: Path) -> dict[str, Any]:
    """The pipe baseline: the same fakes, spawned here, their stdout read by asyncio readers.

    Returns:
        ``latency_ms`` (summary), ``received``, ``expected`` and ``delivered_per_s``.
    """
    gate = Gate(gate_dir)
    env = fake_env()
    ready = 0
    all_ready = asyncio.Event()
    lat_ns: list[int] = []
    first_stamp: list[int] = []
    last_arrival = 0

    async def spawn(prompt: str) -> asyncio.subprocess.Process:
        return await spawn_codex_pipe(FAKE_CODEX, prompt, workdir, env, limit=1 << 20)

    async def read(proc: asyncio.subprocess.Process) -> None:
        nonlocal ready, last_arrival
        assert proc.stdout is not None
        first = True
        while line := await proc.stdout.readline():
            now = time.time_ns()
            at = line.rfind(b'"t_ns":')
            if at >= 0:
                stamp = int(line[at + 7 :].rstrip(b"}\r\n"))
                lat_ns.append(now - stamp)
                last_arrival = now
                if first:
                    first_stamp.append(stamp)
                    first = False
            elif b'"turn.started"' in line:
                ready += 1
                if ready >= spec.tasks:
                    all_ready.set()
        await proc.wait()

    procs: list[asyncio.subprocess.Process] = []
    readers: list[asyncio.Task[None]] = []
    try:
        for prompt in spec.prompts(gate.path):
            proc = await spawn(prompt)
            procs.append(proc)
            readers.append(asyncio.create_task(read(proc)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_ready.wait(), 30 + 0.1 * spec.tasks)
        gate.release()
        expected_s = spec.events / spec.rate if spec.rate > 0 else spec.events / 2000
        await asyncio.wait(readers, timeout=3 * expected_s + 60)
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
    window_s = max((last_arrival - min(first_stamp, default=last_arrival)) / 1e9, 1e-9)
    return {
        "tasks": spec.tasks,
        "rate_per_task": spec.rate,
        "received": len(lat_ns),
        "expected": spec.tasks * spec.events,
        "delivered_per_s": len(lat_ns) / window_s,
        "latency_ms": summarize([ns / 1e6 for ns in lat_ns]),
    }
