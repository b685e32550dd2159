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
jittered backoff (server_client.retry: the :data:`~server_client.retry.UPLOAD` numbers) and
nothing is dropped (docs/reliability.md R4, R5); a part answered with a gap rewinds that task
to the server's ``next_index``.

Memory is bounded: a task holds at most ``memory_bytes`` of unsent events in memory; beyond
that (the server away for long) its events go to a spool file on disk, in order, and come
back as the server acknowledges the ones before them.

Deltas (``codex`` events of type ``item.delta``, from the app-server runtime) are coalesced: a
delta of the same item and stream as the last unsent event is appended to it instead of
becoming an event of its own (the merged event keeps the first delta's time), up to
:data:`MAX_MERGED_DELTA_CHARS`. An event that is part of a request already built is never
changed (a retried request carries exactly what the server may already have stored), and
merging does not count as an event (``count``, the finish's ``event_count``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from server_client.errors import ApiError
from server_client.models import (
    MAX_UPLOAD_EVENTS,
    EventIn,
    EventKind,
    TaskUploadResult,
    TurnEnd,
    WorkerUploadResult,
)
from server_client.retry import UPLOAD, WORKER_FINAL, is_retryable, retry_call
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
        encoded = event.model_dump_json()
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
        for encoded in self._pending:
            if parts and (
                len(parts) >= min(room_events, MAX_BATCH_EVENTS) or size + len(encoded) > room_bytes
            ):
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
            head["finish"] = json.loads(self._finish.model_dump_json())
        self._sending = len(parts)
        self._frozen = max(self._frozen, len(parts))
        prefix = json.dumps(head)[:-1]
        text = f'{prefix},"events":[{",".join(parts)}]}}'
        return text, len(parts)

    def answered(self, result: TaskUploadResult) -> None:
        """Take the server's answer to the part this task sent."""
        self._frozen = 0  # answered: the server stored exactly what it acknowledged
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

    def _encode_tail(self) -> None:
        """Encode the deltas joined to the last pending event since it was last encoded."""
        tail = self._tail
        if tail is None or not tail.dirty or not self._pending:
            return
        merged = EventIn(
            ts=tail.ts, kind=EventKind.CODEX, data={**tail.data, "delta": "".join(tail.parts)}
        )
        encoded = merged.model_dump_json()
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
        while True:
            if not any(u.has_work for u in self._uploaders.values()):
                self._wake.clear()
                await self._wake.wait()
                continue
            # Batch: give codex interval_s to print more (0: let what is ready to run add
            # its lines, the other tasks' reads and their ends included).
            await asyncio.sleep(self._interval_s)
            try:
                answer = await retry_call(
                    self._send, UPLOAD, retry_if=self._retryable, on_retry=self._log_retry
                )
            except ApiError as exc:  # the worker or its token is refused: every lease is lost
                for uploader in self._sending:
                    uploader.lost(str(exc))
                continue
            except Exception as exc:  # e.g. an answer that is not one: never hang a close
                log.exception("upload for worker %s failed for good", self._worker_id)
                for uploader in self._sending:
                    uploader.lost(f"{type(exc).__name__}: {exc}")
                continue
            by_task = {result.task_id: result for result in answer.tasks}
            for uploader in self._sending:
                result = by_task.get(uploader.task_id)
                if result is not None:
                    uploader.answered(result)
            self._sending = []

    def _body(self) -> bytes:
        """Encode the next request: each task with work contributes a part, in turns."""
        ready = [u for u in self._uploaders.values() if u.has_work]
        self._turn = (self._turn + 1) % max(1, len(ready))
        ready = ready[self._turn :] + ready[: self._turn]
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
    def _retryable(exc: BaseException) -> bool:
        """The worker protocol's rule (server_client.retry.WORKER_FINAL): a refused token or
        a gone worker end the uploads; anything else is retried."""
        return is_retryable(exc, WORKER_FINAL)

    def _log_retry(self, exc: BaseException, wait_s: float) -> None:
        what = "refused" if isinstance(exc, ApiError) else "failed"
        tasks = ", ".join(u.task_id for u in self._sending) or "none"
        plural = "s" if len(self._sending) > 1 else ""
        log.warning(
            "upload for task%s %s %s (%s); retrying in %.1f s", plural, tasks, what, exc, wait_s
        )
