"""Provides the two processes of the bare relay reference (the ``relay`` section,
``benchmarks/relay.py``): the relay server and the producer.

The relay is built from the product's own libraries and nothing else of it: FastAPI on
uvicorn (its defaults, as ``codex-tui server`` uses them: uvloop and httptools where
installed), sse-starlette's ``EventSourceResponse`` for the streams, and httpx for the
producer. It has no store, no authentication, no validation and no rate limits: each channel
keeps its events in memory as ready SSE frames.

- ``POST /channels/{name}/events`` takes ``{"first_index": i, "events": [{"ts", "kind",
  "data"}, ...]}`` (the shape of a worker's upload), numbers the events (seq 1, 2, …) and
  wakes the channel's streams. An event of kind ``status`` ends the channel.
- ``GET /channels/{name}/events`` streams the channel as Server-Sent Events after
  ``Last-Event-ID`` (``id:`` the seq, ``data:`` the envelope ``{"seq", "ts", "kind",
  "data"}``), every frame it has in one write, and ends after the ``status`` event.
- ``DELETE /channels/{name}`` forgets a channel; ``GET /healthz`` answers 200.

The producer (``python -m benchmarks.relay_procs produce …``) makes ``events`` events at
``rate`` per second on an absolute schedule, each the stamped agent message of the fake
codex's ``stamped`` mode (the same JSON, ``n`` and ``t_ns``: the wall-clock time in ns when
the event is made), and uploads them as the worker's uploader does: over one keep-alive httpx
client, one request in flight, each request carrying every event made meanwhile (at most
:data:`MAX_BATCH_EVENTS`). Then it posts a ``status`` event, prints ``{"cpu_s": S}`` (the CPU
seconds it used from the first event made to the last upload, its start-up left out) and
exits.

Run as ``python -m benchmarks.relay_procs serve --port P`` and ``… produce --url U
--channel C --events N --rate R [--pad B]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

#: Most events in one upload (the worker's uploader caps its batches the same way).
MAX_BATCH_EVENTS = 500

#: Shortest sleep of the producer between makes (s): at high rates it makes the events due
#: once a tick, each stamped as it is made, instead of waking for every event.
TICK_S = 0.001

#: Seconds between heartbeats of an idle stream.
PING_S = 15

_COMPACT = (",", ":")


class Channel:
    """One relay channel: its SSE frames (index i holds seq i + 1) and a wake-up."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.ended = False
        self._changed = asyncio.Event()

    def append(self, events: list[dict[str, Any]]) -> int:
        """Number ``events``, keep their frames, wake the streams; returns the last seq."""
        for event in events:
            seq = len(self.frames) + 1
            envelope = {"seq": seq, "ts": event["ts"], "kind": event["kind"], "data": event["data"]}
            data = json.dumps(envelope, separators=_COMPACT, ensure_ascii=False)
            self.frames.append(ServerSentEvent(data=data, id=str(seq)).encode())
            self.ended = self.ended or event["kind"] == "status"
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return len(self.frames)

    async def follow(self, after: int) -> AsyncIterator[bytes]:
        """Every frame after seq ``after``, as they come, several at a time; ends after the
        channel's ``status`` event."""
        sent = after
        while True:
            changed, end = self._changed, len(self.frames)
            if sent < end:
                chunk = b"".join(self.frames[sent:end])
                sent = end
                yield chunk
                continue
            if self.ended:
                return
            await changed.wait()


def create_relay_app() -> FastAPI:
    """The relay's FastAPI app (see the module docstring)."""
    app = FastAPI(title="bare relay")
    channels: dict[str, Channel] = {}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/channels/{name}/events")
    async def upload(name: str, request: Request) -> dict[str, int]:
        body = json.loads(await request.body())
        channel = channels.setdefault(name, Channel())
        return {"last_seq": channel.append(body["events"])}

    @app.get("/channels/{name}/events")
    async def stream(name: str, request: Request) -> EventSourceResponse:
        channel = channels.setdefault(name, Channel())
        after = int(request.headers.get("last-event-id") or 0)
        return EventSourceResponse(channel.follow(after), ping=PING_S)

    @app.delete("/channels/{name}")
    async def forget(name: str) -> dict[str, bool]:
        return {"deleted": channels.pop(name, None) is not None}

    return app


def serve(port: int) -> None:
    """Serve the relay on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    import uvicorn

    uvicorn.run(create_relay_app(), host="127.0.0.1", port=port, log_level="warning")


def stamped_event(n: int, pad: str, ts: str) -> str:
    """Event ``n`` as the producer uploads it (JSON text): the fake codex's ``stamped``
    agent message with ``pad`` as its filler, ``t_ns`` its last field (taken now)."""
    head = (
        f'{{"ts":"{ts}","kind":"codex","data":{{"type":"item.completed","item":{{'
        f'"id":"item_{n}","type":"agent_message","text":"message {n} {pad}"}},"n":{n},"t_ns":'
    )
    return f"{head}{time.time_ns()}}}}}"


async def produce(url: str, channel: str, events: int, rate: float, pad: int) -> None:
    """Make ``events`` stamped events at ``rate`` per second (0: as fast as possible) and
    upload them to ``url``'s ``channel`` as the worker does (see the module docstring), then
    a ``status`` event.

    Raises:
        httpx.HTTPStatusError: the relay refused an upload.
    """
    import httpx

    filler = "x" * pad
    pending: list[str] = []
    made = asyncio.Event()
    done = False

    async def make() -> None:
        nonlocal done
        start = time.monotonic()
        n = 0
        while n < events:
            due = events if rate <= 0 else min(events, int((time.monotonic() - start) * rate) + 1)
            ts = datetime.now(UTC).isoformat()
            while n < due:
                pending.append(stamped_event(n, filler, ts))
                n += 1
            made.set()
            if rate > 0 and n < events:  # the next event's time, at least a tick away
                await asyncio.sleep(max(TICK_S, start + n / rate - time.monotonic()))
            else:
                await asyncio.sleep(0)
        done = True
        made.set()

    async def upload(http: httpx.AsyncClient) -> None:
        index = 0
        while True:
            await made.wait()
            made.clear()
            while pending:
                batch = pending[:MAX_BATCH_EVENTS]
                del pending[: len(batch)]
                body = f'{{"first_index":{index},"events":[{",".join(batch)}]}}'
                response = await http.post(path, content=body.encode(), headers=_JSON)
                response.raise_for_status()
                index += len(batch)
            if done:
                return

    path = f"/channels/{channel}/events"
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await asyncio.gather(make(), upload(http))
        end = {"ts": datetime.now(UTC).isoformat(), "kind": "status", "data": {"status": "done"}}
        body = json.dumps({"first_index": events, "events": [end]})
        (await http.post(path, content=body.encode(), headers=_JSON)).raise_for_status()


_JSON = {"Content-Type": "application/json"}


def main(argv: list[str] | None = None) -> int:
    """``serve`` or ``produce`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay_procs")
    verbs = parser.add_subparsers(dest="verb", required=True)
    serve_args = verbs.add_parser("serve")
    serve_args.add_argument("--port", type=int, required=True)
    produce_args = verbs.add_parser("produce")
    produce_args.add_argument("--url", required=True)
    produce_args.add_argument("--channel", required=True)
    produce_args.add_argument("--events", type=int, required=True)
    produce_args.add_argument("--rate", type=float, required=True)
    produce_args.add_argument("--pad", type=int, default=0)
    args = parser.parse_args(argv)
    if args.verb == "serve":
        serve(args.port)
    else:
        started = time.process_time()
        run = produce(args.url, args.channel, args.events, args.rate, args.pad)
        try:  # on uvloop where installed, as the worker runs
            import uvloop
        except ImportError:
            asyncio.run(run)
        else:
            uvloop.run(run)
        print(json.dumps({"cpu_s": time.process_time() - started}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
