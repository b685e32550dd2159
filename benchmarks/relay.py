"""Provides the ``relay`` section: a bare relay built from the product's libraries, as a
reference for the pipeline's sustained rate.

The relay server (``benchmarks/relay_procs.py``: FastAPI on uvicorn, sse-starlette, events
kept in memory, no store, no authentication) runs as its own process on loopback, like
``codex-tui server``. For each step a producer process makes stamped events at the offered
rate and uploads them in batches over a keep-alive httpx client, as the worker does; one
consumer here reads them back over SSE with httpx-sse and takes each event's latency: the
wall-clock time it has the event parsed (``json.loads``; the pipeline's SDK also builds
its models) less the event's ``t_ns`` (when the producer made it). The events are the
pipeline's (the fake's ``stamped`` agent message with the same padding, in the same
envelope), so the bytes per event match.

The offered rate is stepped as the pipeline's sustained rate is
(:func:`benchmarks.pipeline.step_rates`, the same pass rule
:func:`benchmarks.pipeline.judge_step`: nothing lost, duplicated or out of order, steady p99 ≤
100 ms, ≥ 90 % of the offered rate delivered); ``relay_events_per_s`` is the highest rate
that passed, with its latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from httpx_sse import aconnect_sse

from benchmarks.harness import (
    CLEANUP,
    ROOT,
    BenchError,
    base_env,
    free_port,
    rounded,
    summarize,
    wait_healthy,
)
from benchmarks.load import DEFAULT_PAD, Trace, by_phase, trace_integrity
from benchmarks.pipeline import brief, judge_step, step_rates

PROCS = "benchmarks.relay_procs"


@dataclass
class RelayConfig:
    """Sizes of the ``relay`` section.

    Attributes:
        steps: Offered rates tried in turn (events/s), lowest first, until one fails.
        step_s: Seconds each step streams.
        refine: Bisection steps between the last passing and the first failing rate.
        fallback: Rates tried (highest first, events/s) when the first step fails.
        pad: Bytes of filler text per event (the pipeline's events carry as many).
        floor_rate: The rate (events/s) of one more step after the stepping: the pipeline's
            latency levels offer 100 events/s in all, so at this rate the relay's latency is
            the floor of the pipeline's added latency (each event uploaded and streamed
            alone, as the pipeline's are at 2/s per task). 0: no such step.
    """

    steps: list[float]
    step_s: float
    refine: int
    fallback: list[float] = field(default_factory=list)
    pad: int = DEFAULT_PAD
    floor_rate: float = 100.0


@dataclass
class RelayServer:
    """A running relay server process (:func:`start_relay`)."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the relay has used so far."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the relay's log."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the relay, SIGKILL it if it lingers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_relay(run_dir: Path, timeout_s: float = 30.0) -> RelayServer:
    """Start the relay server on a free loopback port and wait until it answers.

    Raises:
        BenchError: it exited or did not answer within ``timeout_s`` seconds.
    """
    port = free_port()
    log_path = run_dir / "relay.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", PROCS, "serve", "--port", str(port)],
            env=base_env(),
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    relay = RelayServer(f"http://127.0.0.1:{port}", proc, log_path)
    CLEANUP.push("relay server", relay.stop)
    with httpx.Client(timeout=2) as http:
        deadline = time.monotonic() + timeout_s
        wait_healthy(http, f"{relay.url}/healthz", proc, deadline, "relay", relay.log_tail)
    return relay


def _producer_cpu_s(stdout: bytes) -> float:
    """The CPU seconds the producer reported on its last line (NaN when it did not)."""
    try:
        return float(json.loads(stdout.splitlines()[-1])["cpu_s"])
    except (IndexError, ValueError, KeyError, TypeError):
        return math.nan


async def _consume(source: Any, trace: Trace) -> None:
    """Read ``source``'s events into ``trace`` until the ``status`` event."""
    async for sse in source.aiter_sse():
        now = time.time_ns()
        envelope = json.loads(sse.data)
        trace.seqs.append(envelope["seq"])
        if envelope["kind"] == "status":
            trace.status = "completed"
            return
        stamp = envelope["data"]["t_ns"]
        trace.lat_ns.append(now - stamp)
        trace.stamps.append(stamp)
        trace.ns.append(envelope["data"]["n"])
        trace.last_arrival = now


async def run_relay_step(relay: RelayServer, offered: float, cfg: RelayConfig) -> dict[str, Any]:
    """One step: a producer offering ``offered`` events/s for ``cfg.step_s`` seconds, one
    SSE consumer here.

    Returns:
        What :func:`benchmarks.pipeline.judge_step` and :func:`benchmarks.pipeline.brief`
        read (``latency_ms``, ``latency_ms_by_phase``, ``delivered_per_s``, ``ok``, …), the
        integrity counts and ``cpu_ms_per_1000_events`` (ms) of the relay, the producer (from
        its first event on) and this process (the consumer).
    """
    channel = secrets.token_hex(4)
    events = max(5, round(offered * cfg.step_s))
    trace = Trace(channel)
    timeout_s = 3 * cfg.step_s + 30
    argv = [sys.executable, "-m", PROCS, "produce", "--url", relay.url, "--channel", channel]
    argv += ["--events", str(events), "--rate", f"{offered:g}", "--pad", str(cfg.pad)]
    relay_cpu, client_cpu = relay.cpu_s(), psutil.Process().cpu_times()
    error: str | None = None
    async with (
        httpx.AsyncClient(base_url=relay.url, timeout=httpx.Timeout(60, read=None)) as http,
        aconnect_sse(http, "GET", f"/channels/{channel}/events") as source,
    ):
        producer = await asyncio.create_subprocess_exec(
            *argv,
            env=base_env(),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.wait_for(_consume(source, trace), timeout_s)
        except (TimeoutError, httpx.HTTPError, ValueError) as exc:
            error = repr(exc)
        finally:
            if producer.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(producer.wait(), 10)
            with contextlib.suppress(ProcessLookupError):
                producer.kill()
            stdout, stderr = await producer.communicate()
        await http.delete(f"/channels/{channel}")
    if producer.returncode:
        error = error or f"producer exited {producer.returncode}: {stderr.decode()[-500:]}"
    end_ns = time.time_ns()
    client_end = psutil.Process().cpu_times()
    used = {
        "relay": relay.cpu_s() - relay_cpu,
        "producer": _producer_cpu_s(stdout),
        "client": (client_end.user + client_end.system) - (client_cpu.user + client_cpu.system),
    }
    checks = trace_integrity([trace], events)
    received = len(trace.lat_ns)
    first = trace.stamps[0] if trace.stamps else end_ns
    window_s = max(((trace.last_arrival or end_ns) - first) / 1e9, 1e-9)
    return {
        "tasks": 1,
        "offered_per_s": offered,
        "events": events,
        "received": received,
        "delivered_per_s": received / window_s,
        "latency_ms": summarize([ns / 1e6 for ns in trace.lat_ns]),
        "latency_ms_by_phase": by_phase([trace], first),
        "statuses": {trace.status or "unfinished": 1},
        "ok": trace.status == "completed" and error is None and not any(checks.values()),
        "cpu_ms_per_1000_events": {
            k: rounded(v * 1e6 / received) if received else None for k, v in used.items()
        },
        "errors": [error] if error else [],
        **checks,
    }


async def relay(run_dir: Path, cfg: RelayConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """The section: start the relay, step the offered rate, stop the relay.

    Returns:
        ``steps`` (each step's result), ``relay_events_per_s`` (the highest passing offered
        rate, events/s; 0 when none passed), ``relay_p50_ms``/``relay_p99_ms`` (latency at
        that rate, ms), ``relay_steady_p99_ms``, ``relay_delivered_per_s`` and
        ``relay_first_failing_per_s``; with ``cfg.floor_rate``, ``floor_step`` and
        ``relay_floor_rate_per_s``, ``relay_floor_p50_ms``/``relay_floor_p99_ms`` (the
        latency at that low rate, ms: the floor of the pipeline's added latency).
    """
    server = await asyncio.to_thread(start_relay, run_dir)
    steps: list[dict[str, Any]] = []

    async def step(offered: float) -> dict[str, Any]:
        log(f"relay: offered {offered:g} events/s")
        result = await run_relay_step(server, offered, cfg)
        judge_step(result, offered)
        log(f"    {brief(result)} → {'pass' if result['passed'] else 'fail'}")
        steps.append(result)
        return result

    floor: dict[str, Any] = {}
    try:
        passing, failing = await step_rates(
            cfg.steps, step, refine=cfg.refine, fallback=cfg.fallback
        )
        if cfg.floor_rate:
            log(f"relay: latency floor at {cfg.floor_rate:g} events/s")
            floor = await run_relay_step(server, cfg.floor_rate, cfg)
            judge_step(floor, cfg.floor_rate)
            log(f"    {brief(floor)}")
    finally:
        server.stop()
    if not steps:
        raise BenchError("relay: no step ran")
    floor_keys: dict[str, Any] = {}
    if floor.get("passed"):
        floor_keys = {
            "floor_step": floor,
            "relay_floor_rate_per_s": cfg.floor_rate,
            "relay_floor_p50_ms": floor["latency_ms"]["p50"],
            "relay_floor_p99_ms": floor["latency_ms"]["p99"],
        }
    return {
        **floor_keys,
        "steps": steps,
        "relay_events_per_s": passing["offered_per_s"] if passing else 0.0,
        "relay_p50_ms": passing["latency_ms"]["p50"] if passing else None,
        "relay_p99_ms": passing["latency_ms"]["p99"] if passing else None,
        "relay_steady_p99_ms": passing["steady_p99_ms"] if passing else None,
        "relay_delivered_per_s": passing["delivered_per_s"] if passing else None,
        "relay_first_failing_per_s": failing["offered_per_s"] if failing else None,
    }
