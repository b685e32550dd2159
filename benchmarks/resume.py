"""Provides the resume benchmark: a client (re)opening the event stream of a stored task with
many events, as after a network drop or a day later: time to the first replayed event and the
replay rate, through the SDK (parsed events) and as raw SSE lines (what the server sends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from benchmarks.harness import BenchError, Server, median
from benchmarks.load import LoadSpec, bench_client

Log = Callable[[str], None]


async def _make_stored_task(server: Server, events: int, log: Log) -> tuple[str, int]:
    """A completed task with ``events`` stamped events (printed as fast as the fake can)."""
    spec = LoadSpec(1, events, 0.0)
    prompt = spec.prompts(None, word="resume")[0]
    async with bench_client(server) as client:
        task = await client.create_task(prompt, workdir=str(server.workdir))
        started = time.monotonic()
        deadline = started + 120 + events / 200
        while True:
            current = await client.get_task(task.id)
            if current.status.is_terminal:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"the {events}-event task did not finish:\n{server.log_tail()}")
            await asyncio.sleep(0.2)
    took = time.monotonic() - started
    log(f"  stored {current.last_seq} events in {took:.1f} s ({current.status.value})")
    return task.id, current.last_seq


async def _sdk_replay(server: Server, task_id: str, after: int) -> dict[str, float]:
    async with bench_client(server) as client:
        started = time.perf_counter()
        first = None
        count = 0
        async for _event in client.stream_events(task_id, after=after):
            if first is None:
                first = time.perf_counter()
            count += 1
        end = time.perf_counter()
    assert first is not None
    return {
        "first_event_ms": (first - started) * 1000,
        "events": count,
        "events_per_s": count / max(end - first, 1e-9),
    }


async def _raw_replay(server: Server, task_id: str) -> dict[str, float]:
    """The stream as SSE lines, without parsing events: what the server can send."""
    headers = {"Authorization": f"Bearer {server.token}", "Last-Event-ID": "0"}
    async with httpx.AsyncClient(timeout=120) as http:
        started = time.perf_counter()
        first = None
        count = 0
        async with http.stream(
            "GET", f"{server.url}/api/tasks/{task_id}/events", headers=headers
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    if first is None:
                        first = time.perf_counter()
                    count += 1
        end = time.perf_counter()
    assert first is not None
    return {
        "first_event_ms": (first - started) * 1000,
        "events": count,
        "events_per_s": count / max(end - first, 1e-9),
    }


async def resume(server: Server, events: int, repeats: int, log: Log) -> dict[str, Any]:
    """Store one task with ``events`` events, then replay it ``repeats`` times from the start
    (SDK and raw) and from its middle (SDK); medians of the repeats."""
    log(f"resume: a stored task with {events} events")
    task_id, last_seq = await _make_stored_task(server, events, log)
    sdk, raw, middle = [], [], []
    for _ in range(repeats):
        sdk.append(await _sdk_replay(server, task_id, 0))
        raw.append(await _raw_replay(server, task_id))
        middle.append(await _sdk_replay(server, task_id, last_seq // 2))
    result = {
        "stored_events": last_seq,
        "resume_first_event_ms": median([r["first_event_ms"] for r in sdk]),
        "replay_events_per_s": median([r["events_per_s"] for r in sdk]),
        "resume_middle_first_event_ms": median([r["first_event_ms"] for r in middle]),
        "replay_raw_first_event_ms": median([r["first_event_ms"] for r in raw]),
        "replay_raw_events_per_s": median([r["events_per_s"] for r in raw]),
        "replayed_all": all(r["events"] == last_seq for r in sdk),
        "repeats": repeats,
    }
    log(
        f"  first event {result['resume_first_event_ms']:.1f} ms, "
        f"{result['replay_events_per_s']:.0f} events/s (SDK), "
        f"{result['replay_raw_events_per_s']:.0f} events/s (raw SSE)"
    )
    return result
