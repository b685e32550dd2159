"""Provides ``TaskStreams``: many consumers, each following one task, over one event stream.

A TUI with four panes, or a dashboard of everything running, would otherwise hold one SSE
connection per task; :class:`TaskStreams` holds one (``GET /api/events`` through
:meth:`CodexTuiClient.follow_tasks`) for every task someone follows (issue 14). When a
consumer starts or stops following, the connection is made again with every task's position
(the last seq each consumer has), so nothing is lost or repeated: each consumer sees its
task's events with a seq above the one it gave, in order, exactly once, then the iteration
ends after the terminal event, as :meth:`CodexTuiClient.stream_events` does.

The connection's own resumes (network errors, a server restart) are the SDK's; a refusal of
the stream (:class:`ApiError`, e.g. a task that is not the caller's) is raised in every
consumer of that connection.

One network read can carry hundreds of events, which the SSE parser hands over without
awaiting anything: the stream gives the event loop a turn at least every
:data:`SLICE_S` while it parses such a burst, so an application's timers, keys and
rendering never wait for a whole read (a 10,000-event burst held a TUI's loop for one read's
parse at a time, tens of ms, before).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from server_client.client import CodexTuiClient
from server_client.models import Event

#: Most events waiting for one consumer that does not read them (it is then dropped with an
#: error: a consumer must keep up, as a TUI pane that buffers its events does).
MAX_WAITING = 100_000

#: Longest the stream parses and hands over events without letting the event loop run other
#: work (s). A timer or a key waits for a few of these turns, one per task that has work, so
#: the slice sets the app's lag in a burst: in the TUI's 10,000-event burst (benchmarks/ tui
#: lag) the p99 fell from 17-25 ms at 2 ms slices to about 13 ms at 0.5 ms, the burst taking
#: as long.
SLICE_S = 0.0005


#: The client attribute that holds its shared streams (:meth:`TaskStreams.shared`); kept on
#: the client, not in a global table, so both go away together.
_ATTRIBUTE = "_codex_tui_task_streams"


@dataclass(eq=False)
class _Consumer:
    task_id: str
    last: int
    queue: asyncio.Queue[Event | BaseException | None] = field(
        default_factory=lambda: asyncio.Queue(MAX_WAITING)
    )


class TaskStreams:
    """One event stream shared by everything that follows a task through ``client``.

    Args:
        client: The SDK client (its connection pool carries the one stream).
    """

    def __init__(self, client: CodexTuiClient) -> None:
        self._client = client
        self._consumers: set[_Consumer] = set()
        self._changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    @classmethod
    def shared(cls, client: CodexTuiClient) -> TaskStreams:
        """The one :class:`TaskStreams` of ``client`` (made on first use, kept as long as the
        client is)."""
        streams = getattr(client, _ATTRIBUTE, None)
        if not isinstance(streams, cls):
            streams = cls(client)
            setattr(client, _ATTRIBUTE, streams)
        return streams

    @property
    def followed(self) -> set[str]:
        """The tasks someone follows now."""
        return {consumer.task_id for consumer in self._consumers}

    async def events(self, task_id: str, *, after: int = 0) -> AsyncIterator[Event]:
        """Yield the task's events with ``seq > after``, replayed then live, each exactly
        once, as the task's own stream has them (``task_id`` None); ends after the terminal
        status event. Stopping the iteration (``break``, a
        cancelled task) stops following.

        Raises:
            ApiError: the server refused the shared stream.
        """
        consumer = _Consumer(task_id, after)
        self._consumers.add(consumer)
        self._changed.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="task-streams")
        try:
            while True:
                item = await consumer.queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._consumers.discard(consumer)
            self._changed.set()

    async def aclose(self) -> None:
        """Stop the shared stream (the consumers' iterations wait for nothing more)."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for consumer in self._consumers:
            consumer.queue.put_nowait(None)

    async def _run(self) -> None:
        """Follow what the consumers follow; start again whenever that changes."""
        while self._consumers:
            self._changed.clear()
            positions: dict[str, int] = {}
            consumers = set(self._consumers)  # a later one waits for the next connection
            for consumer in consumers:
                known = positions.get(consumer.task_id)
                positions[consumer.task_id] = (
                    consumer.last if known is None else min(known, consumer.last)
                )
            follow = asyncio.ensure_future(self._follow(positions, consumers))
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({follow, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in (follow, changed):
                    waiting.cancel()
                await asyncio.gather(follow, changed, return_exceptions=True)
            if follow.done() and not follow.cancelled() and not self._changed.is_set():
                # Every task followed then ended, or the stream was refused (its consumers
                # were told): go on once someone starts or stops following.
                await self._changed.wait()

    async def _follow(self, positions: dict[str, int], consumers: set[_Consumer]) -> None:
        """Feed ``consumers`` from one stream that starts at ``positions`` (a consumer that
        left meanwhile is skipped)."""
        clock = time.perf_counter
        try:
            slice_end = clock() + SLICE_S
            async for event in self._client.follow_tasks(positions):
                if clock() >= slice_end:
                    await asyncio.sleep(0)  # a burst of one read: let the loop run between
                    slice_end = clock() + SLICE_S
                task_id = event.task_id
                event.task_id = None  # as the task's own stream has it (exports, raw views)
                for consumer in consumers:
                    if consumer not in self._consumers:
                        continue
                    if consumer.task_id != task_id or event.seq <= consumer.last:
                        continue
                    consumer.last = event.seq
                    self._deliver(consumer, event)
                    if event.is_terminal:
                        self._deliver(consumer, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream was refused: every consumer learns why
            for consumer in consumers & self._consumers:
                self._deliver(consumer, exc)
            raise
        # Every task ended (some were followed from past their end): nothing more comes.
        for consumer in consumers & self._consumers:
            self._deliver(consumer, None)

    def _deliver(self, consumer: _Consumer, item: Event | BaseException | None) -> None:
        try:
            consumer.queue.put_nowait(item)
        except asyncio.QueueFull:
            self._consumers.discard(consumer)
            consumer.queue = asyncio.Queue(1)
            consumer.queue.put_nowait(RuntimeError("the consumer fell too far behind its task"))
