"""Provides ``EventUploader``: batches one task's events and uploads them, idempotently.

Events are encoded to JSON once, when codex produces them, and kept until the server has
acknowledged them. A flush happens ``interval_s`` after the first unsent event (by default at
once, after the lines codex wrote in the same read), and only one upload per task is in
flight: what codex prints meanwhile goes in the next batch, so under load batches grow
instead of requests multiplying, and an event that comes alone waits for nothing. The batch is built
when the request gets a connection slot (:meth:`WorkerApi.upload`), so events that arrive
while it waits for one go with it. The server commits each batch in one transaction: events
land in small groups a few ms apart (issue 5). Batches are capped by count and bytes. Network
errors and 5xx answers are retried with capped, jittered backoff (server_client.retry: the
:data:`~server_client.retry.UPLOAD` numbers) and nothing is dropped (docs/reliability.md R4,
R5); a 409 gap answer rewinds to the server's ``next_index``.

Deltas (``codex`` events of type ``item.delta``, from the app-server runtime) are coalesced: a
delta of the same item and stream as the last unsent event is appended to it instead of
becoming an event of its own (the merged event keeps the first delta's time), up to
:data:`MAX_MERGED_DELTA_CHARS`. An event that is part of a batch already built is never changed
(a retried batch carries exactly what the server may already have stored), and merging does
not count as an event (``count``, the finish's ``event_count``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime

from server_client.errors import ApiError
from server_client.models import EventIn, EventKind, UploadResult
from server_client.retry import UPLOAD, WORKER_FINAL, is_retryable, retry_call
from server_client.worker.api import WorkerApi

log = logging.getLogger(__name__)

#: Largest batch, in events and in encoded bytes.
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: Longest text one coalesced ``item.delta`` grows to, in characters.
MAX_MERGED_DELTA_CHARS = 64 * 1024


class LeaseLostError(RuntimeError):
    """The server says this worker no longer holds the task's lease (409 without an index)."""


class EventUploader:
    """Uploads the events of one task under one lease.

    Args:
        api: The worker's HTTP client.
        worker_id: This worker's id.
        task_id: The task.
        lease_id: The lease from the claim.
        interval_s: Longest time an event waits before a flush when idle (s).
        on_cancel_requested: Called when an upload answer carries the cancel flag.
        on_lease_lost: Called once when the server refuses the lease (or the token): the task
            is no longer this worker's, so its codex must stop (docs/reliability.md R3).
    """

    def __init__(
        self,
        api: WorkerApi,
        worker_id: str,
        task_id: str,
        lease_id: str,
        *,
        interval_s: float = 0.0,
        on_cancel_requested: Callable[[], None] | None = None,
        on_lease_lost: Callable[[], None] | None = None,
    ) -> None:
        self._api = api
        self._worker_id = worker_id
        self._task_id = task_id
        self._lease_id = lease_id
        self._interval_s = interval_s
        self._on_cancel = on_cancel_requested
        self._on_lease_lost = on_lease_lost
        self._pending: deque[str] = deque()
        self._sending = 0
        # events at the head of _pending that are in a built batch (never changed)
        self._frozen = 0
        # the last pending event when it is a delta: ((item_id, stream), delta, ts, data)
        self._tail: tuple[tuple[object, object], str, datetime, dict[str, object]] | None = None
        self._base_index = 0
        self._count = 0
        self._thread_id: str | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._lease_lost = False
        self._task: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        """How many events were added so far."""
        return self._count

    def start(self) -> None:
        """Start the background flush loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"upload-{self._task_id}"
        )

    def add(self, event: EventIn) -> None:
        """Queue one event (cheap and synchronous; called for every line codex prints); a
        delta may join the last unsent one (module docstring)."""
        data = event.data
        if (
            event.kind is EventKind.CODEX
            and isinstance(data, dict)
            and data.get("type") == "item.delta"
            and isinstance(data.get("delta"), str)
        ):
            key = (data.get("item_id"), data.get("stream"))
            tail = self._tail
            if (
                tail is not None
                and tail[0] == key
                and len(self._pending) > self._frozen
                and len(tail[1]) + len(data["delta"]) <= MAX_MERGED_DELTA_CHARS
            ):
                delta = tail[1] + data["delta"]
                merged = EventIn(ts=tail[2], kind=EventKind.CODEX, data={**tail[3], "delta": delta})
                self._pending[-1] = merged.model_dump_json()
                self._tail = (key, delta, tail[2], tail[3])
                self._wake.set()
                return
            self._tail = (key, data["delta"], event.ts, data)
        else:
            self._tail = None
        self._pending.append(event.model_dump_json())
        self._count += 1
        self._wake.set()

    @property
    def thread_id(self) -> str | None:
        """Codex's thread id once the runner reported it (:meth:`set_thread_id`)."""
        return self._thread_id

    def set_thread_id(self, thread_id: str) -> None:
        """Send ``thread_id`` with the next uploads, so the server learns it while the task
        runs (the runner calls this when codex reports its thread)."""
        self._thread_id = thread_id

    async def close(self) -> None:
        """Flush everything still pending (retrying as needed) and stop the loop.

        Raises:
            LeaseLostError: the server refused the lease; the remaining events are dropped.
        """
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._lease_lost:
            raise LeaseLostError(f"lease on task {self._task_id} lost")

    def _next_body(self) -> bytes:
        """Encode the next batch (sets ``_sending`` to its number of events)."""
        parts: list[str] = []
        size = 0
        for encoded in self._pending:
            if parts and (len(parts) >= MAX_BATCH_EVENTS or size + len(encoded) > MAX_BATCH_BYTES):
                break
            parts.append(encoded)
            size += len(encoded) + 1
        head = {"lease_id": self._lease_id, "first_index": self._base_index}
        if self._thread_id:
            head["thread_id"] = self._thread_id
        prefix = json.dumps(head)[:-1]
        body = f'{prefix},"events":[{",".join(parts)}]}}'
        self._sending = len(parts)
        self._frozen = max(self._frozen, len(parts))
        return body.encode()

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                # Batch: give codex interval_s to print more before flushing (0: let the
                # lines of the same read join).
                if not self._closing:
                    await asyncio.sleep(self._interval_s)
                continue
            try:
                sent = await retry_call(
                    self._send, UPLOAD, retry_if=self._retryable, on_retry=self._log_retry
                )
            except ApiError as exc:
                log.error("task %s: lease lost (%s)", self._task_id, exc.problem.detail)
                self._lease_lost = True
                self._pending.clear()
                if self._on_lease_lost is not None:
                    self._on_lease_lost()
                return
            self._frozen = 0  # answered: the server stored exactly what it acknowledged
            if isinstance(sent, int):  # a gap: the server wants the events from there again
                self._rewind(sent)
                continue
            self._rewind(sent.next_index, sent_hint=self._sending)
            if sent.cancel_requested and self._on_cancel is not None:
                self._on_cancel()

    async def _send(self) -> UploadResult | int:
        """Upload the next batch: the server's answer, or the ``next_index`` of a 409 gap
        answer (the server misses events before this batch).

        Raises:
            ApiError: any other refusal.
            httpx.TransportError: no answer.
        """
        try:
            return await self._api.upload(self._worker_id, self._task_id, self._next_body)
        except ApiError as exc:
            if exc.status == 409 and exc.problem.next_index is not None:
                return exc.problem.next_index
            raise

    @staticmethod
    def _retryable(exc: BaseException) -> bool:
        """The worker protocol's rule (server_client.retry.WORKER_FINAL): a refused token,
        a gone worker or task and a lost lease end the uploads; anything else is retried."""
        return is_retryable(exc, WORKER_FINAL)

    def _log_retry(self, exc: BaseException, wait_s: float) -> None:
        if isinstance(exc, ApiError):
            log.warning(
                "upload for task %s refused (%s); retrying in %.1f s", self._task_id, exc, wait_s
            )
        else:
            log.warning(
                "upload for task %s failed (%s); retrying in %.1f s", self._task_id, exc, wait_s
            )

    def _rewind(self, next_index: int, sent_hint: int | None = None) -> None:
        """Drop what the server has acknowledged, up to ``next_index``."""
        acked = next_index - self._base_index
        if acked < 0:
            log.error(
                "task %s: server expects index %d but events before %d were already dropped",
                self._task_id,
                next_index,
                self._base_index,
            )
            return
        if sent_hint is not None and acked > sent_hint:
            acked = sent_hint
        for _ in range(min(acked, len(self._pending))):
            self._pending.popleft()
        self._base_index += acked
