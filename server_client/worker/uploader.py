"""Provides the worker's upload stream: the events of every task the worker runs go to the
server through one :class:`UploadStream`, one request at a time (issue 14).

Each task has an :class:`EventUploader` (from :meth:`UploadStream.open`) that keeps the task's
events, encoded to JSON once when codex produces them, until the server has acknowledged
them. The stream's loop sends whatever the tasks have gathered in one ``POST
/api/workers/{wid}/events``: each task's part carries its lease and the index of its first
event, so the server fences it and skips what it already has (docs/reliability.md R3, R4);
while a request is in flight, what codex prints meanwhile waits for the next one, so under
load requests grow instead of multiplying, and the server's cost is per request, not per
event or per task. A task's end (:meth:`EventUploader.close` with a :class:`TurnEnd`) goes in
the part that carries its last events, in the same request and store transaction.

Requests are capped (:data:`MAX_UPLOAD_EVENTS` events, :data:`MAX_BATCH_BYTES` bytes; the
tasks take turns at the front). Network errors and 5xx answers are retried with capped,
jittered backoff (server_client.retry: the :data:`~server_client.retry.UPLOAD` numbers, each
task its own) and nothing is dropped (docs/reliability.md R4, R5); a part answered with a gap
rewinds that task to the server's ``next_index``. A request of several tasks that fails with a
5xx or is refused whole is split, one task per request, so no task holds back another; a
request the server will always refuse (400, 413, 422) is halved until the one event refused is
found, which is dropped with a visible ``stderr`` marker in its place (issue 17).

Memory is bounded: a task holds at most ``memory_bytes`` of unsent events in memory; beyond
that (the server away for long) its events go to a spool file on disk, in order, and come
back as the server acknowledges the ones before them.

When the worker stops and the server does not answer in time, what a task has not sent (its
events and its end) is saved to a file (:class:`SavedUpload`), and the worker's next start
sends it through :meth:`UploadStream.resume` (docs/reliability.md T3).

Deltas (``codex`` events of type ``item.delta``, from the app-server runtime) are coalesced: a
delta of the same item and stream as the last unsent event is appended to it instead of
becoming an event of its own (the merged event keeps the first delta's time), up to
:data:`MAX_MERGED_DELTA_CHARS`. An event that is part of a request already built is never
changed (a retried request carries exactly what the server may already have stored), and
merging does not count as an event (``count``, the finish's ``event_count``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from pydantic_core import PydanticSerializationError

from server_client.codex.lines import scrub_surrogates
from server_client.errors import ApiError
from server_client.models import (
    MAX_UPLOAD_EVENTS,
    EventIn,
    EventKind,
    TaskUploadResult,
    TurnEnd,
    WorkerUploadResult,
    utcnow,
)
from server_client.retry import UPLOAD, WORKER_FINAL, is_retryable
from server_client.worker.api import WorkerApi

log = logging.getLogger(__name__)

#: Largest request, in encoded bytes (a single larger event still goes, alone).
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: Most events of one task in one request (kept for callers sizing their batches).
MAX_BATCH_EVENTS = 500
#: Longest text one coalesced ``item.delta`` grows to, in characters.
MAX_MERGED_DELTA_CHARS = 64 * 1024
#: Unsent events one task keeps in memory before spooling to disk (bytes).
MEMORY_BYTES = 8 * 1024 * 1024


def _dump(event: EventIn) -> str:
    """``event`` as JSON text; a lone surrogate in its data (which no UTF-8 can hold) becomes
    ``?``, as in codex's lines (server_client.codex.lines; docs/reliability.md T2)."""
    try:
        return event.model_dump_json()
    except PydanticSerializationError:
        scrubbed = EventIn(ts=event.ts, kind=event.kind, data=scrub_surrogates(event.data))
        return scrubbed.model_dump_json()


@dataclass
class SavedUpload:
    """What one task's uploader had not sent when its worker stopped (:meth:`EventUploader.save`),
    kept on disk for the next start of the worker to send (:meth:`UploadStream.resume`).

    Attributes:
        worker_id: The worker that held the lease. task_id, lease_id: The task and lease.
        first_index: The index of ``events[0]`` among the lease's events.
        events: The encoded events (JSON texts), in order.
        finish: The lease's end, when the run had ended (else None: the task ends ``lost``
            when the worker connects again).
        thread_id: Codex's thread id, when known.
    """

    worker_id: str
    task_id: str
    lease_id: str
    first_index: int
    events: list[str]
    finish: TurnEnd | None = None
    thread_id: str | None = None

    def write(self, path: Path) -> None:
        """Write to ``path`` atomically (a header line, then one event per line)."""
        head = {
            "worker_id": self.worker_id,
            "task_id": self.task_id,
            "lease_id": self.lease_id,
            "first_index": self.first_index,
            "thread_id": self.thread_id,
            "finish": None if self.finish is None else self.finish.model_dump(mode="json"),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with open(partial, "w", encoding="utf-8") as out:
            out.write(json.dumps(scrub_surrogates(head)) + "\n")
            for encoded in self.events:
                out.write(encoded + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)

    @classmethod
    def read(cls, path: Path) -> SavedUpload:
        """Read what :meth:`write` wrote.

        Raises:
            OSError: the file cannot be read. ValueError: it is not such a file.
        """
        with open(path, encoding="utf-8") as source:
            head = json.loads(source.readline())
            events = [line[:-1] if line.endswith("\n") else line for line in source]
        finish = head.get("finish")
        return cls(
            worker_id=str(head["worker_id"]),
            task_id=str(head["task_id"]),
            lease_id=str(head["lease_id"]),
            first_index=int(head["first_index"]),
            events=[event for event in events if event],
            finish=None if finish is None else TurnEnd.model_validate(finish),
            thread_id=head.get("thread_id"),
        )


class LeaseLostError(RuntimeError):
    """The server says this worker no longer holds the task's lease (409 without an index)."""


@dataclass
class _Merge:
    """The last pending event of a task when it is a delta later deltas of the same item and
    stream may join: its deltas so far (``chars`` characters, ``encoded`` of them in the
    pending event's text), its time and data (``dirty``: joined since last encoded)."""

    key: tuple[object, object]
    parts: list[str]
    chars: int
    ts: datetime
    data: dict[str, object]
    encoded: int = field(init=False)
    dirty: bool = False

    def __post_init__(self) -> None:
        self.encoded = self.chars  # the first delta is in the pending event's text


class Spool:
    """Encoded events, in order, in an unnamed temporary file (deleted when closed).

    Args:
        folder: Where the file is made (None: the system's temporary folder).
    """

    def __init__(self, folder: Path | None = None) -> None:
        self._folder = folder
        self._file: IO[bytes] | None = None
        self._read_at = 0
        self._count = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self._count

    def append(self, encoded: str) -> None:
        """Add one encoded event (JSON text, which never holds a raw newline)."""
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._folder)  # noqa: SIM115 (kept open)
        data = encoded.encode() + b"\n"
        self._file.seek(0, os.SEEK_END)
        self._file.write(data)
        self._count += 1
        self.bytes += len(data)

    def take(self, max_bytes: int) -> list[str]:
        """Remove and return the oldest events, about ``max_bytes`` of them (at least one
        when any is left)."""
        if self._file is None or not self._count:
            return []
        self._file.flush()
        self._file.seek(self._read_at)
        out: list[str] = []
        taken = 0
        while self._count and (not out or taken < max_bytes):
            line = self._file.readline()
            taken += len(line)
            self._count -= 1
            out.append(line[:-1].decode())
        self._read_at += taken
        self.bytes -= taken
        if not self._count:
            self._file.seek(0)
            self._file.truncate()
            self._read_at = 0
            self.bytes = 0
        return out

    def close(self) -> None:
        """Delete the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._count = self._read_at = self.bytes = 0


class EventUploader:
    """The unsent events of one task under one lease (made by :meth:`UploadStream.open`).

    Args:
        stream: The worker's upload stream.
        task_id: The task.
        lease_id: The lease from the claim.
        on_cancel_requested: Called when an upload answer carries the cancel flag.
        on_lease_lost: Called once when the server refuses the lease: the task is no longer
            this worker's, so its codex must stop (docs/reliability.md R3).
        memory_bytes: Unsent events kept in memory before the rest is spooled to disk.
        spool_dir: Where spool files go (None: the system's temporary folder).
    """

    def __init__(
        self,
        stream: UploadStream,
        task_id: str,
        lease_id: str,
        *,
        on_cancel_requested: Callable[[], None] | None = None,
        on_lease_lost: Callable[[], None] | None = None,
        memory_bytes: int = MEMORY_BYTES,
        spool_dir: Path | None = None,
    ) -> None:
        self._stream = stream
        self.task_id = task_id
        self.lease_id = lease_id
        self._on_cancel = on_cancel_requested
        self._on_lease_lost = on_lease_lost
        self._memory_bytes = memory_bytes
        self._pending: deque[str] = deque()
        self._pending_bytes = 0
        self._spool = Spool(spool_dir)
        # events at the head of _pending that are in a built request (never changed)
        self._frozen = 0
        # how many events of _pending the request in flight carries
        self._sending = 0
        # the last pending event when it is a delta that later ones may join
        self._tail: _Merge | None = None
        self._base_index = 0
        self._count = 0
        self._thread_id: str | None = None
        self._finish: TurnEnd | None = None
        self._closing = False
        self._lease_lost = False
        self._done = asyncio.get_running_loop().create_future()
        # A request carrying this part alone was refused for good: at most this many events
        # go in the next ones, halved at each refusal, until the one event refused is found.
        self._cap: int | None = None
        # After a failed request: its backoff (UPLOAD) and the loop time before which this
        # task sends nothing, so that one task's trouble never holds back the others.
        self._delays: Iterator[float] | None = None
        self.not_before = 0.0

    @property
    def count(self) -> int:
        """How many events were added so far."""
        return self._count

    @property
    def thread_id(self) -> str | None:
        """Codex's thread id once the runner reported it (:meth:`set_thread_id`)."""
        return self._thread_id

    @property
    def spooled(self) -> int:
        """Unsent events waiting on disk (memory was full)."""
        return len(self._spool)

    @property
    def unsent(self) -> int:
        """Events not yet acknowledged by the server (in memory and spooled)."""
        return len(self._pending) + len(self._spool)

    def set_thread_id(self, thread_id: str) -> None:
        """Send ``thread_id`` with the next uploads, so the server learns it while the task
        runs (the runner calls this when codex reports its thread)."""
        self._thread_id = thread_id

    def add(self, event: EventIn) -> None:
        """Queue one event (cheap and synchronous; called for every line codex prints); a
        delta may join the last unsent one (module docstring)."""
        if self._closing:
            log.error("task %s: an event came after its end was sent; dropped", self.task_id)
            return
        data = event.data
        if (
            event.kind is EventKind.CODEX
            and isinstance(data, dict)
            and data.get("type") == "item.delta"
            and isinstance(data.get("delta"), str)
        ):
            key = (data.get("item_id"), data.get("stream"))
            tail = self._tail
            delta = data["delta"]
            if (
                tail is not None
                and tail.key == key
                and len(self._pending) > self._frozen
                and tail.chars + len(delta) <= MAX_MERGED_DELTA_CHARS
            ):
                # Joined now, encoded once when a request takes it (not once per delta).
                tail.parts.append(delta)
                tail.chars += len(delta)
                tail.dirty = True
                self._pending_bytes += len(delta)
                self._stream.wake()
                return
            self._encode_tail()  # the merge ends here: its text must be final
            self._tail = _Merge(key, [delta], len(delta), event.ts, data)
        else:
            self._encode_tail()
            self._tail = None
        encoded = _dump(event)
        self._count += 1
        if len(self._spool) or self._pending_bytes + len(encoded) > self._memory_bytes:
            self._spool.append(encoded)  # the server is far behind: keep memory bounded
            self._tail = None
        else:
            self._pending.append(encoded)
            self._pending_bytes += len(encoded)
        self._stream.wake()

    async def close(self, finish: TurnEnd | None = None) -> TaskUploadResult | None:
        """Upload everything still unsent (retrying as needed), then ``finish`` when given,
        in the same request as the last events.

        Returns:
            The server's answer to the finish (``finished`` set, or ``problem`` when the
            server refused the finish, e.g. an exec task asked to end idle); None without
            ``finish``.

        Raises:
            LeaseLostError: the server refused the lease; the remaining events are dropped.
        """
        self._finish = finish
        self._closing = True
        if finish is None and not self.unsent and not self._sending:
            self._settle(TaskUploadResult(task_id=self.task_id))
        self._stream.wake()
        try:
            return await asyncio.shield(self._done)
        finally:
            self._stream.forget(self)

    # The stream's side.

    @property
    def has_work(self) -> bool:
        """Something to send: unsent events, or a finish once everything is sent."""
        if self._done.done():
            return False
        if self._pending or len(self._spool):
            return True
        return self._closing and self._finish is not None

    def part(self, room_bytes: int, room_events: int) -> tuple[str, int]:
        """Encode this task's next part of a request, within the room left; returns the
        JSON text and how many events it carries (which it freezes)."""
        self._encode_tail()
        self._refill()
        parts: list[str] = []
        size = 0
        most = min(room_events, MAX_BATCH_EVENTS, self._cap or MAX_BATCH_EVENTS)
        for encoded in self._pending:
            if parts and (len(parts) >= most or size + len(encoded) > room_bytes):
                break
            parts.append(encoded)
            size += len(encoded) + 1
        head: dict[str, object] = {
            "task_id": self.task_id,
            "lease_id": self.lease_id,
            "first_index": self._base_index,
        }
        if self._thread_id:
            head["thread_id"] = self._thread_id
        all_in = len(parts) == len(self._pending) and not len(self._spool)
        if self._closing and all_in and self._finish is not None:
            head["finish"] = scrub_surrogates(self._finish.model_dump(mode="json"))
        self._sending = len(parts)
        self._frozen = max(self._frozen, len(parts))
        prefix = json.dumps(head)[:-1]
        text = f'{prefix},"events":[{",".join(parts)}]}}'
        return text, len(parts)

    def unfreeze(self) -> None:
        """The request that carried this task's part was refused whole before anything of it
        was stored (a 4xx): what it carried may go again in another shape."""
        self._frozen = 0
        self._sending = 0

    def backoff(self, now: float) -> float:
        """The request that carried this task's part failed and may pass later (no answer, a
        5xx, a 429): send nothing of it before ``now`` plus the next wait of its backoff
        (:data:`~server_client.retry.UPLOAD`); returns that wait (s)."""
        if self._delays is None:
            self._delays = UPLOAD.delays()
        wait_s = next(self._delays)
        self.not_before = now + wait_s
        return wait_s

    def refused(self, why: str) -> None:
        """A request carrying this task's part alone was refused for good (a 4xx that is no
        lease answer: 400, 413, 422): the same events would be refused again. Halve what the
        next request carries until one event alone is refused; that one is dropped and an
        ``stderr`` event in its place says so (the index stays consistent: one for one), so
        one poison event never wedges the task nor the worker's other tasks. A refused finish
        with no event left ends the task's uploads as lost (its lease ends by the sweep)."""
        self._frozen = 0
        sent, self._sending = self._sending, 0
        if sent > 1:
            self._cap = max(1, sent // 2)
            return
        self._cap = None
        if sent == 0:
            self.lost(f"the server refused the task's end: {why}")
            return
        dropped = self._pending.popleft()
        self._pending_bytes -= len(dropped)
        line = (
            f"codex-tui: an event ({len(dropped)} bytes) was dropped: the server refused it ({why})"
        )
        log.error("task %s: %s", self.task_id, line)
        marker = _dump(EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": line[:4000]}))
        self._pending.appendleft(marker)
        self._pending_bytes += len(marker)
        if len(self._pending) == 1:
            self._tail = None

    def answered(self, result: TaskUploadResult) -> None:
        """Take the server's answer to the part this task sent."""
        self._frozen = 0  # answered: the server stored exactly what it acknowledged
        self._delays = None
        sent, self._sending = self._sending, 0
        problem = result.problem
        if problem is None:
            assert result.next_index is not None
            self._rewind(result.next_index, sent_hint=sent)
            if result.cancel_requested and self._on_cancel is not None:
                self._on_cancel()
            if result.finished is not None or (self._closing and self._finish is None):
                self._settle(result)
            return
        if problem.next_index is not None:  # a gap: the server wants the events from there
            self._rewind(problem.next_index, sent_hint=None if result.next_index is None else sent)
            return
        if result.next_index is not None:  # the events were stored; the finish was refused
            self._rewind(result.next_index, sent_hint=sent)
            self._settle(result)
            return
        self.lost(f"{problem.status} {problem.detail}")

    def lost(self, why: str) -> None:
        """The server refused this task's lease (or the worker): drop what is unsent."""
        if self._done.done():
            return
        log.error("task %s: lease lost (%s)", self.task_id, why)
        self._lease_lost = True
        self._pending.clear()
        self._pending_bytes = 0
        self._spool.close()
        self._done.set_exception(LeaseLostError(f"lease on task {self.task_id} lost"))
        self._done.exception()  # retrieved here: close() may never be awaited
        if self._on_lease_lost is not None:
            self._on_lease_lost()

    def save(self, worker_id: str) -> SavedUpload | None:
        """What this task has not sent yet (its events, in memory and spooled, and its end
        once :meth:`close` gave it), for the worker's next start; None when nothing is left.
        Call only once the stream's loop is stopped (:meth:`UploadStream.aclose`)."""
        if self._done.done() or not (self.unsent or self._finish is not None):
            return None
        self._encode_tail()
        events = list(self._pending) + self._spool.take(1 << 62)
        return SavedUpload(
            worker_id=worker_id,
            task_id=self.task_id,
            lease_id=self.lease_id,
            first_index=self._base_index,
            events=events,
            finish=self._finish,
            thread_id=self._thread_id,
        )

    def _restore(self, saved: SavedUpload) -> None:
        """Take ``saved``'s events as this (fresh) uploader's unsent ones."""
        self._base_index = saved.first_index
        self._pending.extend(saved.events)
        self._pending_bytes = sum(len(event) for event in saved.events)
        self._count = saved.first_index + len(saved.events)
        self._thread_id = saved.thread_id

    def _encode_tail(self) -> None:
        """Encode the deltas joined to the last pending event since it was last encoded."""
        tail = self._tail
        if tail is None or not tail.dirty or not self._pending:
            return
        merged = EventIn(
            ts=tail.ts, kind=EventKind.CODEX, data={**tail.data, "delta": "".join(tail.parts)}
        )
        encoded = _dump(merged)
        self._pending_bytes += len(encoded) - len(self._pending[-1]) - (tail.chars - tail.encoded)
        self._pending[-1] = encoded
        tail.dirty = False
        tail.encoded = tail.chars

    def _settle(self, result: TaskUploadResult) -> None:
        if not self._done.done() and not self.unsent:
            self._spool.close()
            self._done.set_result(result if self._finish is not None else None)

    def _refill(self) -> None:
        """Move spooled events back to memory while there is room."""
        room = self._memory_bytes // 2 - self._pending_bytes
        if len(self._spool) and room > 0:
            for encoded in self._spool.take(room):
                self._pending.append(encoded)
                self._pending_bytes += len(encoded)

    def _rewind(self, next_index: int, sent_hint: int | None = None) -> None:
        """Drop what the server has acknowledged, up to ``next_index``."""
        acked = next_index - self._base_index
        if acked < 0:
            log.error(
                "task %s: server expects index %d but events before %d were already dropped",
                self.task_id,
                next_index,
                self._base_index,
            )
            return
        if sent_hint is not None and acked > sent_hint:
            acked = sent_hint
        for _ in range(min(acked, len(self._pending))):
            self._pending_bytes -= len(self._pending.popleft())
        self._base_index += acked
        if not self._pending:
            self._tail = None
        self._refill()


class UploadStream:
    """One worker's upload stream: one request in flight, carrying every task's new events.

    Args:
        api: The worker's HTTP client.
        worker_id: This worker's id.
        interval_s: Time given to codex to print more after the first unsent event before a
            request leaves (s; 0: the lines of the same read go together).
        memory_bytes: Unsent events each task keeps in memory before spooling to disk.
        spool_dir: Where spool files go (None: the system's temporary folder).
    """

    def __init__(
        self,
        api: WorkerApi,
        worker_id: str,
        *,
        interval_s: float = 0.0,
        memory_bytes: int = MEMORY_BYTES,
        spool_dir: Path | None = None,
    ) -> None:
        self._api = api
        self._worker_id = worker_id
        self._interval_s = interval_s
        self._memory_bytes = memory_bytes
        self._spool_dir = spool_dir
        self._uploaders: dict[str, EventUploader] = {}
        self._sending: list[EventUploader] = []
        self._turn = 0
        # While > 0, requests carry one task each (a refused request is being split).
        self._solo = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def open(
        self,
        task_id: str,
        lease_id: str,
        *,
        on_cancel_requested: Callable[[], None] | None = None,
        on_lease_lost: Callable[[], None] | None = None,
    ) -> EventUploader:
        """The uploader of one task's lease (starts the stream's loop on first use)."""
        uploader = EventUploader(
            self,
            task_id,
            lease_id,
            on_cancel_requested=on_cancel_requested,
            on_lease_lost=on_lease_lost,
            memory_bytes=self._memory_bytes,
            spool_dir=self._spool_dir,
        )
        self._uploaders[task_id] = uploader
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"uploads-{self._worker_id}"
            )
        return uploader

    def resume(self, saved: SavedUpload) -> EventUploader:
        """The uploader of a task whose events an earlier process of this worker saved
        (:meth:`EventUploader.save`); :meth:`EventUploader.close` with ``saved.finish`` sends
        them (idempotent by index, fenced by the lease: LeaseLostError when it was lost)."""
        uploader = self.open(saved.task_id, saved.lease_id)
        uploader._restore(saved)
        self.wake()
        return uploader

    def save_unsent(self) -> list[SavedUpload]:
        """What every open task has not sent (:meth:`EventUploader.save`); call after
        :meth:`aclose`."""
        saved = [u.save(self._worker_id) for u in list(self._uploaders.values())]
        return [s for s in saved if s is not None]

    def wake(self) -> None:
        """Something new to send."""
        self._wake.set()

    def forget(self, uploader: EventUploader) -> None:
        """Drop a closed task's uploader."""
        if self._uploaders.get(uploader.task_id) is uploader:
            del self._uploaders[uploader.task_id]

    async def aclose(self) -> None:
        """Stop the loop (what is unsent stays unsent: close each uploader first)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            waiting = [u for u in self._uploaders.values() if u.has_work]
            if not any(u.not_before <= now for u in waiting):
                self._wake.clear()
                later = min((u.not_before for u in waiting), default=None)
                with contextlib.suppress(TimeoutError):  # not wait_for (3.11 loses cancels)
                    async with asyncio.timeout(None if later is None else later - now):
                        await self._wake.wait()
                continue
            # Batch: give codex interval_s to print more (0: let what is ready to run add
            # its lines, the other tasks' reads and their ends included).
            await asyncio.sleep(self._interval_s)
            try:
                answer = await self._send()
            except Exception as exc:  # noqa: BLE001 - each kind is judged in _failed
                self._failed(exc, loop.time())
                continue
            by_task = {result.task_id: result for result in answer.tasks}
            for uploader in self._sending:
                result = by_task.get(uploader.task_id)
                if result is not None:
                    uploader.answered(result)
            self._sending, self._solo = [], max(0, self._solo - 1)

    def _failed(self, exc: Exception, now: float) -> None:
        """Judge a request that got no answer, or a refusal of the whole of it.

        - A refused token or a gone worker (401, 403, 404: server_client.retry.WORKER_FINAL)
          loses every lease it carried.
        - What may pass later (no answer, 5xx, 408, 429) is retried after its tasks' backoff;
          a request of several tasks is first split (one task per request for a while), so a
          task whose part the server cannot take holds back no other.
        - Any other refusal (400, 413, 422) would come again for the same request: split, then
          :meth:`EventUploader.refused` narrows it down to the one event dropped.
        - Anything else (a bug, an answer that does not parse) loses the leases it carried,
          so that no close hangs.
        """
        sending, self._sending = self._sending, []
        if isinstance(exc, ApiError) and exc.status in WORKER_FINAL:
            for uploader in sending:  # the worker or its token is refused: leases lost
                uploader.lost(str(exc))
            return
        if isinstance(exc, ApiError) and 400 <= exc.status < 500 and exc.status not in (408, 429):
            if len(sending) > 1:
                self._solo = len(sending)
                log.warning("upload refused (%s); sending each task alone to find why", exc)
                for uploader in sending:
                    uploader.unfreeze()
                return
            for uploader in sending:
                uploader.refused(str(exc))
            return
        if is_retryable(exc, WORKER_FINAL):
            if isinstance(exc, ApiError) and len(sending) > 1:
                self._solo = len(sending)
            wait_s = 0.0
            for uploader in sending:  # still frozen: the server may have stored its part
                wait_s = uploader.backoff(now)
            self._log_retry(sending, exc, wait_s)
            return
        log.error("upload for worker %s failed for good", self._worker_id, exc_info=exc)
        for uploader in sending:
            uploader.lost(f"{type(exc).__name__}: {exc}")

    def _body(self) -> bytes:
        """Encode the next request: each task with work and not backing off contributes a
        part, in turns (one only while a refused request is being split)."""
        now = asyncio.get_running_loop().time()
        ready = [u for u in self._uploaders.values() if u.has_work and u.not_before <= now]
        self._turn = (self._turn + 1) % max(1, len(ready))
        ready = ready[self._turn :] + ready[: self._turn]
        if self._solo:
            ready = ready[:1]
        parts: list[str] = []
        sending: list[EventUploader] = []
        room_bytes, room_events = MAX_BATCH_BYTES, MAX_UPLOAD_EVENTS
        for uploader in ready:
            if parts and (room_bytes <= 0 or room_events <= 0):
                break
            text, count = uploader.part(max(room_bytes, 1), max(room_events, 1))
            parts.append(text)
            sending.append(uploader)
            room_bytes -= len(text)
            room_events -= count
        self._sending = sending
        return f'{{"tasks":[{",".join(parts)}]}}'.encode()

    async def _send(self) -> WorkerUploadResult:
        """Upload the next request.

        Raises:
            ApiError: the request as a whole was refused.
            httpx.TransportError: no answer.
        """
        return await self._api.upload_all(self._worker_id, self._body)

    @staticmethod
    def _log_retry(sending: list[EventUploader], exc: BaseException, wait_s: float) -> None:
        what = "refused" if isinstance(exc, ApiError) else "failed"
        tasks = ", ".join(u.task_id for u in sending) or "none"
        plural = "s" if len(sending) > 1 else ""
        log.warning(
            "upload for task%s %s %s (%s); retrying in %.1f s", plural, tasks, what, exc, wait_s
        )
