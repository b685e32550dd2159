"""Provides the tasks' append-only event logs: status events, worker uploads (the server's hot
path) and reads by seq.

Seqs are assigned here, 1..N per task with no gap, in the same transaction that updates the
task row, so a crash can never leave a gap (docs/reliability.md E1, R9). An upload is idempotent
by the batch's event index, and only the lease holder may upload (R4, R3).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, insert, select, update

from server_client.models import (
    ACTIVE_STATUSES,
    EventBatch,
    EventKind,
    TaskStatus,
    UploadResult,
    utcnow,
)
from server_client.server.db import events, tasks, tokens, users
from server_client.server.policy import encode_event
from server_client.server.store.audit import write_audit
from server_client.server.store.auth import hash_token
from server_client.server.store.records import (
    Appended,
    Conflict,
    LeaseLost,
    NotFound,
    Principal,
    StoredEvent,
    User,
)
from server_client.server.store.runner import BaseStore, dumps
from server_client.server.store.workers import worker_row

#: Largest event seq (a signed 32-bit INTEGER column); bounds are clamped to it, since a
#: larger number does not fit a query parameter.
MAX_SEQ = 2**31 - 1

#: The one read of a worker's upload or finish (:func:`token_task_row`): the task row joined
#: with the bearer token's facts. Built once: an upload is the server's hot path.
TOKEN_TASK_ROW = (
    select(
        tasks,
        tokens.c.kind.label("token_kind"),
        tokens.c.worker_id.label("token_worker"),
        users.c.name.label("owner_name"),
    )
    .select_from(
        tasks.join(tokens, tokens.c.user_id == tasks.c.owner_id).join(
            users, users.c.id == tasks.c.owner_id
        )
    )
    .where(
        tokens.c.token_hash == bindparam("token_hash"),
        tokens.c.revoked_at.is_(None),
        tasks.c.id == bindparam("task_id"),
    )
)
#: The same, locking the task row (PostgreSQL; SQLite writes are serialised in-process).
TOKEN_TASK_ROW_LOCKED = TOKEN_TASK_ROW.with_for_update(of=tasks)
_INSERT_EVENTS = insert(events)
#: An upload's update of the task row: its last seq and the next upload index.
_ADVANCE = (
    update(tasks)
    .where(tasks.c.pk == bindparam("b_pk"))
    .values(last_seq=bindparam("b_last_seq"), upload_next=bindparam("b_upload_next"))
)

#: A page of a task's events after a seq (streams and replays).
_READ_EVENTS = (
    select(events.c.seq, events.c.ts, events.c.kind, events.c.data)
    .where(events.c.task_pk == bindparam("task_pk"), events.c.seq > bindparam("after"))
    .order_by(events.c.seq)
    .limit(bindparam("limit"))
)


def append_status(
    conn: Connection, task_pk: int, last_seq: int, data: dict[str, Any], ts: datetime
) -> int:
    """Append a status event after ``last_seq`` and advance the task's last seq, in ``conn``'s
    transaction; returns the new seq."""
    seq = last_seq + 1
    conn.execute(
        insert(events).values(
            task_pk=task_pk, seq=seq, ts=ts, kind=EventKind.STATUS.value, data=dumps(data)
        )
    )
    conn.execute(update(tasks).where(tasks.c.pk == task_pk).values(last_seq=seq))
    return seq


def task_row(conn: Connection, owner_id: str, task_id: str, *, lock: bool = False) -> Row[Any]:
    """The owner's task ``task_id`` (row-locked with ``lock``). Raises NotFound."""
    query = select(tasks).where(tasks.c.id == task_id, tasks.c.owner_id == owner_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"no task {task_id}")
    return row


def check_lease(row: Row[Any], worker_id: str, lease_id: str) -> None:
    """Raise LeaseLost unless ``worker_id`` holds the task ``row`` under ``lease_id``."""
    if row.worker_id != worker_id or row.lease_id != lease_id:
        raise LeaseLost("this worker does not hold the task's lease")


def leased_row(
    conn: Connection, owner_id: str, worker_id: str, task_id: str, lease_id: str, *, lock: bool
) -> Row[Any]:
    """The owner's task row when ``worker_id`` holds it under ``lease_id`` (locked with
    ``lock``, on PostgreSQL). Raises NotFound, LeaseLost."""
    row = task_row(conn, owner_id, task_id, lock=lock)
    check_lease(row, worker_id, lease_id)
    return row


def token_task_row(
    conn: Connection, query: Select[Any], token: str, worker_id: str, task_id: str
) -> tuple[Principal, Row[Any]] | None:
    """The task ``task_id`` of the owner of ``token`` (a :data:`TOKEN_TASK_ROW` ``query``) and
    who the token speaks for; None when the token is unknown or revoked, or its owner has no
    such task.

    Raises:
        NotFound: a worker token used for another worker than ``worker_id``.
    """
    row = conn.execute(query, {"token_hash": hash_token(token), "task_id": task_id}).first()
    if row is None:
        return None
    principal = Principal(
        User(id=row.owner_id, name=row.owner_name),
        kind=row.token_kind,
        worker_id=row.token_worker,
    )
    if principal.kind == "worker" and principal.worker_id != worker_id:
        raise NotFound(f"no worker {worker_id}")
    return principal, row


class DeferredWrites:
    """The usual writes of many tasks' appends, gathered to run as two statements: every
    event row in one insert and every task row's advance in one executemany update."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.advances: list[dict[str, Any]] = []

    def run(self, conn: Connection) -> None:
        """Write what was gathered, in ``conn``'s transaction, and start afresh."""
        if self.rows:
            conn.execute(_INSERT_EVENTS, self.rows)
        if self.advances:
            conn.execute(_ADVANCE, self.advances)
        self.rows, self.advances = [], []


class EventStore(BaseStore):
    """The store's event methods."""

    async def read_events(self, task_pk: int, after: int, limit: int = 500) -> list[StoredEvent]:
        """Stored events with ``seq > after`` in order, at most ``limit``."""
        params = {"task_pk": task_pk, "after": min(after, MAX_SEQ), "limit": limit}

        def work(conn: Connection) -> list[StoredEvent]:
            rows = conn.execute(_READ_EVENTS, params).all()
            return [StoredEvent(seq=r.seq, ts=r.ts, kind=r.kind, data=r.data) for r in rows]

        return await self._read(work)

    async def read_events_before(
        self, task_pk: int, before: int, limit: int = 500, *, after: int = 0
    ) -> list[StoredEvent]:
        """The ``limit`` stored events with the largest seqs below ``before`` (and above
        ``after``), in ascending seq order: one page backwards through a task's log.

        Args:
            task_pk: The task's internal key.
            before: Only events with ``seq < before``.
            limit: At most this many events (the ones nearest to ``before``).
            after: Only events with ``seq > after`` (0: from the first event).
        """
        query = (
            select(events.c.seq, events.c.ts, events.c.kind, events.c.data)
            .where(
                events.c.task_pk == task_pk,
                events.c.seq < min(before, MAX_SEQ),
                events.c.seq > min(after, MAX_SEQ),
            )
            .order_by(events.c.seq.desc())
            .limit(limit)
        )

        def work(conn: Connection) -> list[StoredEvent]:
            rows = conn.execute(query).all()
            return [
                StoredEvent(seq=r.seq, ts=r.ts, kind=r.kind, data=r.data) for r in reversed(rows)
            ]

        return await self._read(work)

    async def append_events(
        self, owner: User, worker_id: str, task_id: str, batch: EventBatch
    ) -> Appended:
        """Append a worker's batch idempotently by index, in one transaction
        (docs/reliability.md R4).

        Events past ``max_event_bytes`` are cut (policy.truncate_event); past
        ``max_events_per_task`` they are dropped, once with a marker status event and a
        cancel request.

        Returns:
            The upload result, the task's internal key, how many of the batch's events were
            new (for metrics) and the events committed (for this process's streams).

        Raises:
            NotFound: unknown task. LeaseLost: not this worker's lease, or the task ended.
            Conflict: the batch starts past the next expected index (``next_index`` set).
        """
        lock = self._lock_rows

        def work(conn: Connection) -> Appended:
            row = leased_row(conn, owner.id, worker_id, task_id, batch.lease_id, lock=lock)
            return self._append(conn, row, owner.id, task_id, batch)

        return await self._txn(work)

    async def append_events_by_token(
        self, token: str, worker_id: str, task_id: str, batch: EventBatch
    ) -> tuple[Principal, Appended] | None:
        """:meth:`append_events` for the bearer of ``token``, checking the token, the worker
        and the lease in the same statement that reads the task row: the upload route's one
        read per batch (a revoked token fails on its next upload, as on any route).

        Returns:
            Who the token speaks for and what was appended; None when the token is unknown or
            revoked, or its owner has no task ``task_id`` (the caller tells which apart).

        Raises:
            NotFound: a worker token used for another worker. LeaseLost, Conflict: as
            :meth:`append_events`.
        """
        query = TOKEN_TASK_ROW_LOCKED if self._lock_rows else TOKEN_TASK_ROW

        def work(conn: Connection) -> tuple[Principal, Appended] | None:
            found = token_task_row(conn, query, token, worker_id, task_id)
            if found is None:
                return None
            principal, row = found
            try:
                check_lease(row, worker_id, batch.lease_id)
                return principal, self._append(conn, row, row.owner_id, task_id, batch)
            except Conflict:
                # A user token names the worker it acts as: one that is not the owner's (or
                # was revoked) is a 404, as on every worker route, before any lease answer.
                worker_row(conn, row.owner_id, worker_id)
                raise

        return await self._txn(work)

    def _append(
        self,
        conn: Connection,
        row: Row[Any],
        owner_id: str,
        task_id: str,
        batch: EventBatch,
        deferred: DeferredWrites | None = None,
    ) -> Appended:
        """The body of an append, in the caller's transaction (:meth:`_txn`), on the leased
        task ``row``. With ``deferred``, the usual writes (the events' insert and the task
        row's advance) are added to it, for the caller to run for many tasks at once
        (:meth:`DeferredWrites.run`); the rare ones (the event cap, a thread id) run now."""
        if TaskStatus(row.status).is_terminal:
            raise LeaseLost(f"task {task_id} already ended {row.status}")
        if TaskStatus(row.status) not in ACTIVE_STATUSES:
            raise LeaseLost(f"task {task_id} is {row.status}: its turn ended with the lease")
        expected = int(row.upload_next)
        if batch.first_index > expected:
            raise Conflict(
                f"gap: batch starts at {batch.first_index}, expected {expected}",
                next_index=expected,
            )
        fresh = batch.events[expected - batch.first_index :]
        seq = int(row.last_seq)
        # Room under the per-task cap, keeping one seq for the marker (status events
        # written by the server later may pass the cap: a task must be able to end).
        room = max(0, self.max_events_per_task - 1 - seq)
        kept = fresh[:room] if seq < self.max_events_per_task else []
        rows = []
        stored: list[StoredEvent] = []
        for item in kept:
            seq += 1
            text = encode_event(item.data, self.max_event_bytes)
            rows.append(
                {
                    "task_pk": row.pk,
                    "seq": seq,
                    "ts": item.ts,
                    "kind": item.kind.value,
                    "data": text,
                }
            )
            # As the row reads back: a UTC timestamp (the column keeps microseconds).
            stored.append(StoredEvent(seq, item.ts.astimezone(UTC), item.kind.value, text))
        capped = len(kept) < len(fresh) and int(row.last_seq) < self.max_events_per_task
        if deferred is not None and not capped and not (batch.thread_id and not row.thread_id):
            deferred.rows.extend(rows)
            advance = {"b_pk": row.pk, "b_last_seq": seq, "b_upload_next": expected + len(fresh)}
            deferred.advances.append(advance)
            result = UploadResult(
                next_index=expected + len(fresh), cancel_requested=bool(row.cancel_requested)
            )
            return Appended(result, int(row.pk), len(fresh), stored)
        if rows:
            conn.execute(_INSERT_EVENTS, rows)
        values: dict[str, Any] = {
            "last_seq": seq,
            "upload_next": expected + len(fresh),
        }
        if capped:
            reason = (
                f"the task reached this server's cap of {self.max_events_per_task} events "
                "(CODEX_TUI_SERVER_MAX_EVENTS_PER_TASK); later events are dropped and the "
                "task is cancelled"
            )
            marker = {"status": row.status, "cancel_requested": True, "reason": reason}
            now = utcnow()
            seq = append_status(conn, row.pk, seq, marker, now)
            stored.append(StoredEvent(seq, now, EventKind.STATUS.value, dumps(marker)))
            values["last_seq"] = seq
            values["cancel_requested"] = True
            write_audit(
                conn,
                "task.event_cap",
                owner_id,
                f"task:{task_id}",
                {"cap": self.max_events_per_task, "dropped": len(fresh) - len(kept)},
            )
        if batch.thread_id and not row.thread_id:
            values["thread_id"] = batch.thread_id
        if len(values) == 2:  # the usual case, one prepared statement
            advance = {"b_pk": row.pk, "b_last_seq": seq, "b_upload_next": values["upload_next"]}
            conn.execute(_ADVANCE, advance)
        else:
            conn.execute(update(tasks).where(tasks.c.pk == row.pk).values(values))
        result = UploadResult(
            next_index=expected + len(fresh),
            cancel_requested=bool(row.cancel_requested) or capped,
        )
        return Appended(result, int(row.pk), len(fresh), stored)
