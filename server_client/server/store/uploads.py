"""Provides a worker's multiplexed upload: the new events of every task a worker runs, and the
ends of its leases, in one transaction (issue 14: the server's cost is per batch, not per
event or per task).

Each part of an upload is judged as the per-task routes judge theirs (the lease fences it,
its index makes it idempotent, docs/reliability.md R3, R4), and a part that is refused never
refuses the others: every check of a part runs before anything of it is written, so a refusal
needs no savepoint. A part's ``finish`` is applied after its events, in the same transaction,
only when the server then holds every event it counts (otherwise the part's answer says where
to resume, as the finish route's 409 does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, select

from server_client.models import PartProblem, TaskEvents, TaskStatus, TaskUploadResult, utcnow
from server_client.server.db import tasks, tokens
from server_client.server.store.auth import hash_token
from server_client.server.store.events import DeferredWrites, EventStore, check_lease
from server_client.server.store.leases import finish_row
from server_client.server.store.records import (
    Conflict,
    LeaseLost,
    NotFound,
    Principal,
    StoredEvent,
    StoreError,
)
from server_client.server.store.workers import worker_row

#: The task rows of an upload and the token's validity in one statement (the usual upload's
#: one read), built once so that its compiled form is reused; locked in key order on
#: PostgreSQL, so two uploads never deadlock.
_ROWS = (
    select(tasks)
    .select_from(tasks.join(tokens, tokens.c.user_id == tasks.c.owner_id))
    .where(
        tokens.c.token_hash == bindparam("token_hash"),
        tokens.c.revoked_at.is_(None),
        tasks.c.owner_id == bindparam("owner_id"),
        tasks.c.id.in_(bindparam("ids", expanding=True)),
    )
)
_ROWS_LOCKED = _ROWS.order_by(tasks.c.pk).with_for_update(of=tasks)
#: Whether a token is valid (asked only when an upload found none of its tasks).
_TOKEN_VALID = select(tokens.c.id).where(
    tokens.c.token_hash == bindparam("token_hash"), tokens.c.revoked_at.is_(None)
)


class TokenRevoked(StoreError):
    """The upload's token was revoked (or forgotten) since it was last seen: answer 401."""


@dataclass
class UploadOutcome:
    """What :meth:`UploadStore.append_uploads` did.

    Attributes:
        results: One answer per part, in the order of the parts.
        published: For each task that got events, its id and the events committed, in seq
            order (for this process's streams, server_client.server.hub).
        ended: The tasks whose lease this upload ended: their id, the task's status after and,
            for a task that ended for good, how long it ran (s).
        fresh: How many events were new in all (for metrics).
    """

    results: list[TaskUploadResult] = field(default_factory=list)
    published: list[tuple[str, list[StoredEvent]]] = field(default_factory=list)
    ended: list[tuple[str, TaskStatus, float | None]] = field(default_factory=list)
    fresh: int = 0


def _problem(exc: StoreError) -> PartProblem:
    status = 404 if isinstance(exc, NotFound) else 409
    return PartProblem(status=status, detail=str(exc), next_index=getattr(exc, "next_index", None))


class UploadStore(EventStore):
    """The store's multiplexed worker upload."""

    async def append_uploads(
        self, principal: Principal, token: str, worker_id: str, parts: Sequence[TaskEvents]
    ) -> UploadOutcome:
        """Append every part's events (and apply its ``finish``) in one transaction.

        The token is checked again inside the transaction (a token revoked since it was
        cached fails here), and the worker must be the principal's own: a worker token's
        worker, or for a user token one of the owner's workers that is not revoked. The task
        rows are read in one query (locked in key order on PostgreSQL, so two uploads never
        deadlock).

        Raises:
            TokenRevoked: the token is no longer valid.
            NotFound: a worker token used for another worker, or a worker that is not the
                owner's (or was revoked).
        """
        owner_id = principal.user.id
        token_hash = hash_token(token)
        ids = [part.task_id for part in parts]
        if principal.kind == "worker" and principal.worker_id != worker_id:
            raise NotFound(f"no worker {worker_id}")
        query = _ROWS_LOCKED if self._lock_rows else _ROWS
        params = {"token_hash": token_hash, "owner_id": owner_id, "ids": ids}
        check_token = {"token_hash": token_hash}

        def work(conn: Connection) -> UploadOutcome:
            rows = {row.id: row for row in conn.execute(query, params).all()} if ids else {}
            if not rows and conn.execute(_TOKEN_VALID, check_token).first() is None:
                raise TokenRevoked("the token was revoked")
            out = UploadOutcome()
            deferred = DeferredWrites()
            for part in parts:
                row = rows.get(part.task_id)
                out.results.append(self._part(conn, row, worker_id, part, out, deferred))
            deferred.run(conn)
            if principal.kind == "user" and (
                not parts or any(result.problem is not None for result in out.results)
            ):
                # A user token names the worker it acts as: one that is not the owner's (or
                # was revoked) is a 404 for the whole upload, as on every worker route. (A part
                # that was stored proves it: only the owner's worker holds its lease.)
                worker_row(conn, owner_id, worker_id)
            return out

        return await self._txn(work)

    def _part(
        self,
        conn: Connection,
        row: Any,
        worker_id: str,
        part: TaskEvents,
        out: UploadOutcome,
        deferred: DeferredWrites,
    ) -> TaskUploadResult:
        """One part, in the upload's transaction: append (its usual writes gathered in
        ``deferred``, run for every part at once), then finish when it asks to (a part that
        ends its lease writes at once: the end follows its events)."""
        task_id = part.task_id
        if row is None:
            missing = NotFound(f"no task {task_id}")
            return TaskUploadResult(task_id=task_id, problem=_problem(missing))
        try:
            check_lease(row, worker_id, part.lease_id)
        except LeaseLost as exc:
            return TaskUploadResult(task_id=task_id, problem=_problem(exc))
        try:
            if part.events or part.finish is None:
                gather = None if part.finish is not None else deferred
                appended = self._append(conn, row, row.owner_id, task_id, part, gather)
                next_index = appended.result.next_index
                cancel = appended.result.cancel_requested
                out.fresh += appended.fresh
                written = list(appended.events)
                last_seq = written[-1].seq if written else int(row.last_seq)
            else:  # a finish alone (the events went earlier)
                next_index, cancel, written = int(row.upload_next), bool(row.cancel_requested), []
                last_seq = int(row.last_seq)
        except (Conflict, LeaseLost) as exc:
            if part.finish is not None and isinstance(exc, LeaseLost):
                # The lease's turn ended already: the finish may be a retry of this very one.
                return self._finish(conn, row, worker_id, part, out, [])
            return TaskUploadResult(task_id=task_id, problem=_problem(exc))
        if part.finish is not None:
            current = _Advanced(row, last_seq=last_seq, upload_next=next_index)
            return self._finish(conn, current, worker_id, part, out, written)
        if written:
            out.published.append((task_id, written))
        return TaskUploadResult(task_id=task_id, next_index=next_index, cancel_requested=cancel)

    def _finish(
        self,
        conn: Connection,
        row: Any,
        worker_id: str,
        part: TaskEvents,
        out: UploadOutcome,
        written: list[StoredEvent],
    ) -> TaskUploadResult:
        """Apply ``part.finish`` on ``row`` (as it stands after the part's events)."""
        assert part.finish is not None
        now = utcnow()
        try:
            ended = finish_row(conn, row, worker_id, part.finish, now)
        except (Conflict, LeaseLost) as exc:
            if written:
                out.published.append((part.task_id, written))
            return TaskUploadResult(
                task_id=part.task_id, next_index=int(row.upload_next), problem=_problem(exc)
            )
        if ended.changed:
            ran_s = None
            if ended.status.is_terminal and row.started_at is not None:
                ran_s = max(0.0, (now - row.started_at).total_seconds())
            out.ended.append((part.task_id, ended.status, ran_s))
            if ended.events and (not written or written[-1].seq + 1 == ended.events[0].seq):
                written = written + ended.events
            else:  # withdrawn approvals came between: streams read those from the store
                written = []
        if written:
            out.published.append((part.task_id, written))
        return TaskUploadResult(
            task_id=part.task_id,
            next_index=int(row.upload_next),
            cancel_requested=bool(row.cancel_requested),
            finished=ended.status,
        )


class _Advanced:
    """A task row read at the start of an upload, with the seq and index its part's events
    moved it to (what a re-read would show, without reading)."""

    def __init__(self, row: Any, *, last_seq: int, upload_next: int) -> None:
        self._row = row
        self.last_seq = last_seq
        self.upload_next = upload_next

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)
