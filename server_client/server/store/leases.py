"""Provides the task leases: claims (a worker takes a queued task), finishes, stop signals, and
ending the tasks whose worker is gone (silent, restarted or revoked).

A claim gives the task a fresh lease id; only its holder may upload events or finish; a task
whose worker is gone ends ``lost`` and is never re-run on its own (docs/reliability.md R3, R2).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, insert, or_, select, update

from server_client.models import (
    ACTIVE_STATUSES,
    ApprovalPolicy,
    Claim,
    EventKind,
    FinishRequest,
    Runtime,
    Task,
    TaskStatus,
    TurnEnd,
    Worker,
    utcnow,
)
from server_client.routing import folder_fits
from server_client.server.admission import labels_fit, routing_clauses
from server_client.server.db import events, tasks, tokens, workers
from server_client.server.store.approvals import withdraw_pending
from server_client.server.store.audit import write_audit
from server_client.server.store.conversations import undelivered_replies
from server_client.server.store.events import (
    TOKEN_TASK_ROW,
    TOKEN_TASK_ROW_LOCKED,
    append_status,
    leased_row,
    token_task_row,
)
from server_client.server.store.records import Conflict, LeaseLost, NotFound, StoredEvent, User
from server_client.server.store.runner import BaseStore, dumps
from server_client.server.store.tasks import reread, task_from_row
from server_client.server.store.workers import worker_row

#: How many of the oldest queued tasks one claim looks through for a routing match.
CLAIM_SCAN = 200

#: The states in which a worker holds a task's lease.
ACTIVE = [s.value for s in ACTIVE_STATUSES]
#: The states in which a task depends on the worker it names (its lease, or its thread).
HELD = [*ACTIVE, TaskStatus.IDLE.value, TaskStatus.QUEUED.value]


def end_lost(
    conn: Connection,
    task_pk: int,
    reason: str,
    now: datetime,
    *,
    cause: str | None = None,
    resumable: bool = True,
    states: Sequence[str] = ACTIVE,
) -> str | None:
    """End a running (or waiting) task whose worker is gone, in ``conn``'s transaction, with
    its status event and an audit row; returns its id, or None when it is no longer active
    (another replica's sweep, or its worker, got there first: the conditional update waits
    for their row lock and then matches nothing, docs/reliability.md R6).

    A conversation whose thread codex already started (``thread_id``) is not lost when
    ``resumable``: codex keeps the thread on the worker's machine, so it becomes ``idle``
    with ``error`` explaining that the turn was cut short (``cause``, e.g. "worker w1
    restarted", then the turn and what to do), and a reply resumes it (queued again at once,
    for its worker, when replies wait). Anything else ends ``lost`` with ``reason``. Pending
    approvals are withdrawn either way. ``states``: the states the task may be in (the
    active ones; a revoked worker's idle conversations end too).
    """
    row = conn.execute(
        select(tasks).where(tasks.c.pk == task_pk, tasks.c.status.in_(list(states)))
    ).first()
    if row is None:
        return None
    conversation = resumable and row.thread_id and row.runtime == Runtime.APP_SERVER.value
    if conversation:
        explained = (
            f"{cause or reason} during turn {row.turns}; codex's turn was interrupted, "
            "the conversation is kept: reply to continue"
        )
        status = TaskStatus.QUEUED if row.pending_replies else TaskStatus.IDLE
        values: dict[str, Any] = {
            "status": status.value,
            "error": explained,
            "lease_id": None,
            "interrupt_requested": False,
        }
    else:
        explained = reason
        status = TaskStatus.LOST
        values = {"status": status.value, "finished_at": now, "error": reason, "lease_id": None}
    ended = conn.execute(
        update(tasks)
        .where(tasks.c.pk == task_pk, tasks.c.status.in_(list(states)))
        .values(values)
        .returning(tasks.c.id, tasks.c.owner_id, tasks.c.last_seq, tasks.c.worker_id)
    ).first()
    if ended is None:
        return None
    seq = withdraw_pending(conn, task_pk, ended.last_seq, explained, now)
    data: dict[str, Any]
    if conversation:
        data = {"status": status.value, "turns": int(row.turns), "error": explained}
    else:
        data = {"status": TaskStatus.LOST.value, "reason": reason}
    append_status(conn, task_pk, seq, data, now)
    write_audit(
        conn,
        "task.lease_lost",
        ended.owner_id,
        f"task:{ended.id}",
        {"worker_id": ended.worker_id, "reason": reason, "status": status.value},
    )
    return str(ended.id)


class Ended(NamedTuple):
    """What :func:`finish_row` did: the task's ``status`` after, whether it ``changed`` (False:
    the lease had ended it already) and the status events it wrote, in seq order."""

    status: TaskStatus
    changed: bool
    events: list[StoredEvent]


def _finish(
    conn: Connection, row: Row[Any], worker_id: str, body: TurnEnd, now: datetime
) -> tuple[Task, bool]:
    """:func:`finish_row`, then the task as it stands (the finish route's answer)."""
    ended = finish_row(conn, row, worker_id, body, now)
    return (reread(conn, row.pk) if ended.changed else task_from_row(row)), ended.changed


def finish_row(conn: Connection, row: Any, worker_id: str, body: TurnEnd, now: datetime) -> Ended:
    """The body of a finish, in the caller's transaction, on the task ``row`` the worker
    holds: end it (or its turn, ``idle``) with the worker's verdict, or leave it unchanged
    when it already ended.

    A turn's end withdraws the approvals still pending and clears the interrupt flag. An
    ``idle`` finish ends the lease but keeps the worker (it holds the thread); when replies
    wait that codex never got, the task is queued again at once for that worker. Costs an
    update, the status event and the audit row (and the withdrawals, when approvals are
    pending): no read.

    Raises:
        Conflict: ``event_count`` differs from the events stored (``next_index`` set), or an
            exec task asked to end idle. LeaseLost: the turn already ended otherwise.
    """
    status = TaskStatus(row.status)
    if status.is_terminal:
        return Ended(status, False, [])
    if status not in ACTIVE_STATUSES:
        # Idle, or queued again for replies: the turn ended under this lease (the row keeps
        # the lease id until the next claim, so that the idle finish is idempotent).
        if body.status is TaskStatus.IDLE:
            return Ended(status, False, [])
        raise LeaseLost(f"task {row.id} is {status.value}: the turn already ended")
    if body.event_count != row.upload_next:
        raise Conflict(
            f"finish says {body.event_count} events, the server has {row.upload_next}",
            next_index=int(row.upload_next),
        )
    if body.status is TaskStatus.IDLE and row.runtime == Runtime.EXEC.value:
        raise Conflict("an exec task cannot end idle: it takes no replies")
    data: dict[str, Any]
    if body.status is TaskStatus.IDLE:
        requeue = int(row.pending_replies) > 0
        after = TaskStatus.QUEUED if requeue else TaskStatus.IDLE
        values: dict[str, Any] = {
            "status": after.value,
            "error": body.error,
            "interrupt_requested": False,
            "thread_id": body.thread_id or row.thread_id,
        }
        data = {"status": after.value, "turns": int(row.turns)}
        if body.error:
            data["error"] = body.error
        if requeue:
            data["replies"] = int(row.pending_replies)
        reason = "the turn ended before an answer"
    else:
        after = body.status
        values = {
            "status": after.value,
            "finished_at": now,
            "exit_code": body.exit_code,
            "error": body.error,
            "thread_id": body.thread_id or row.thread_id,
            "interrupt_requested": False,
        }
        data = {"status": after.value}
        if body.exit_code is not None:
            data["exit_code"] = body.exit_code
        if body.error:
            data["reason"] = body.error
        reason = f"the task ended {after.value} before an answer"
    seq = int(row.last_seq)
    if row.pending_approvals:
        seq = withdraw_pending(conn, row.pk, seq, reason, now)
    seq += 1
    values["last_seq"] = seq
    text = dumps(data)
    conn.execute(
        insert(events).values(
            task_pk=row.pk, seq=seq, ts=now, kind=EventKind.STATUS.value, data=text
        )
    )
    conn.execute(update(tasks).where(tasks.c.pk == row.pk).values(values))
    write_audit(
        conn,
        "task.finish",
        row.owner_id,
        f"task:{row.id}",
        {"status": body.status.value, "exit_code": body.exit_code, "worker_id": worker_id},
    )
    return Ended(after, True, [StoredEvent(seq, now, EventKind.STATUS.value, text)])


def runtime_for(row: Any, worker: Worker) -> str:
    """The runtime a task ``row`` runs on when ``worker`` claims it first: the one it asked
    for; else ``app-server`` when it needs it (an approval policy, or replies already sent);
    else the worker's default (``exec`` for a worker that announced none)."""
    if row.requested_runtime:
        return str(row.requested_runtime)
    if row.approval_policy != ApprovalPolicy.NEVER.value or row.pending_replies:
        return Runtime.APP_SERVER.value
    return (worker.runtime or Runtime.EXEC).value


class LeaseStore(BaseStore):
    """The store's claims, finishes and lost tasks."""

    async def claim(self, owner: User, worker: Worker) -> Claim | None:
        """Atomically take the owner's oldest queued task for ``worker``, or None.

        The task becomes ``running`` with a fresh lease id; a ``status: running`` event is
        appended. Only tasks of the worker's owner are ever considered (docs/reliability.md
        R7), and of those only the ones the routing rule gives this worker
        (server_client.server.admission: routed to it by name or to none, labels it all
        carries, danger-full-access only when marked), and whose folder (workdir or local
        repository) its workdir roots hold (server_client.routing.folder_fits). A worker
        that said it cannot run tasks (``cannot_run``: its codex is missing) gets none.
        """
        if worker.cannot_run is not None:
            return None  # it said it cannot run tasks (codex missing): hand it none
        now = utcnow()
        lease_id = secrets.token_hex(16)
        capability = []
        if worker.runtime is None:
            # An older worker that only runs codex exec: no conversation (asked for, needing
            # approvals, or with replies waiting) and no thread to resume.
            capability = [
                or_(
                    tasks.c.requested_runtime.is_(None),
                    tasks.c.requested_runtime == Runtime.EXEC.value,
                ),
                or_(tasks.c.runtime.is_(None), tasks.c.runtime == Runtime.EXEC.value),
                tasks.c.approval_policy == ApprovalPolicy.NEVER.value,
                tasks.c.pending_replies == 0,
            ]
        query = (
            select(
                tasks.c.pk,
                tasks.c.id,
                tasks.c.last_seq,
                tasks.c.target_worker,
                tasks.c.labels,
                tasks.c.created_at,
                tasks.c.started_at,
                tasks.c.runtime,
                tasks.c.requested_runtime,
                tasks.c.approval_policy,
                tasks.c.pending_replies,
                tasks.c.turns,
                tasks.c.workdir,
                tasks.c.repo,
            )
            .where(
                tasks.c.owner_id == owner.id,
                tasks.c.status == TaskStatus.QUEUED.value,
                # A conversation queued again is pinned to the worker holding its thread.
                or_(tasks.c.worker_id.is_(None), tasks.c.worker_id == worker.id),
                *routing_clauses(worker),
                *capability,
            )
            .order_by(tasks.c.pk)
            .limit(CLAIM_SCAN)
        )
        skip_locked = self._lock_rows

        def work(conn: Connection) -> Claim | None:
            rows = conn.execute(query).all()
            fits = [
                r
                for r in rows
                if labels_fit(json.loads(r.labels), worker)
                and folder_fits(r.workdir, r.repo, worker.workdir_roots)
            ]
            row = fits[0] if fits else None
            if fits and skip_locked:
                # Lock only the oldest fitting task no concurrent claim holds: locking every
                # candidate would tell the other claims "nothing queued" meanwhile
                # (docs/reliability.md R8).
                locking = query.where(tasks.c.pk.in_([r.pk for r in fits])).limit(1)
                row = conn.execute(locking.with_for_update(skip_locked=True)).first()
            if row is None:
                return None
            runtime = row.runtime or runtime_for(row, worker)
            turn = int(row.turns) + 1
            result = conn.execute(
                update(tasks)
                .where(tasks.c.pk == row.pk, tasks.c.status == TaskStatus.QUEUED.value)
                .values(
                    status=TaskStatus.RUNNING.value,
                    started_at=row.started_at or now,
                    worker_id=worker.id,
                    worker_name=worker.name,
                    lease_id=lease_id,
                    runtime=runtime,
                    turns=turn,
                    error=None,
                    # Event indexes count from 0 under each lease (each turn's claim).
                    upload_next=0,
                    interrupt_requested=False,
                )
            )
            if result.rowcount != 1:
                return None
            running: dict[str, Any] = {
                "status": "running",
                "worker_id": worker.id,
                "worker": worker.name,
            }
            if runtime == Runtime.APP_SERVER.value:
                running["turn"] = turn
            append_status(conn, row.pk, row.last_seq, running, now)
            write_audit(
                conn,
                "task.claim",
                owner.id,
                f"task:{row.id}",
                {
                    "worker_id": worker.id,
                    "waited_s": round((now - row.created_at).total_seconds(), 3),
                    "turn": turn,
                },
            )
            pending = undelivered_replies(conn, row.pk, row.id) if row.pending_replies else []
            return Claim(task=reread(conn, row.pk), lease_id=lease_id, replies=pending)

        return await self._txn(work)

    async def finish(
        self, owner: User, worker_id: str, task_id: str, body: FinishRequest
    ) -> tuple[Task, bool]:
        """End a task with the worker's verdict; idempotent for the lease holder
        (docs/reliability.md R6).

        Returns:
            The task and whether this call ended it.

        Raises:
            NotFound, LeaseLost, or Conflict (with ``next_index``) when events are missing.
        """
        now = utcnow()
        lock = self._lock_rows

        def work(conn: Connection) -> tuple[Task, bool]:
            row = leased_row(conn, owner.id, worker_id, task_id, body.lease_id, lock=lock)
            return _finish(conn, row, worker_id, body, now)

        return await self._txn(work)

    async def finish_by_token(
        self, token: str, worker_id: str, task_id: str, body: FinishRequest
    ) -> tuple[Task, bool] | None:
        """:meth:`finish` for the bearer of ``token``, checking the token, the worker and the
        lease in the transaction of the finish (the finish route's one trip to the store, as
        :meth:`~server_client.server.store.Store.append_events_by_token` is the upload's).

        Returns:
            As :meth:`finish`; None when the token is unknown or revoked, or its owner has no
            task ``task_id`` (the caller tells which apart).

        Raises:
            NotFound: a worker token used for another worker, or a worker that is not the
            token owner's (or was revoked). LeaseLost, Conflict: as :meth:`finish`.
        """
        now = utcnow()
        query = TOKEN_TASK_ROW_LOCKED if self._lock_rows else TOKEN_TASK_ROW

        def work(conn: Connection) -> tuple[Task, bool] | None:
            found = token_task_row(conn, query, token, worker_id, task_id)
            if found is None:
                return None
            _, row = found
            holds = row.worker_id == worker_id and row.lease_id == body.lease_id
            if not holds or TaskStatus(row.status).is_terminal:
                # The worker named must be the owner's and not revoked (404, as on every
                # worker route, before any lease answer). The holder of a running task's
                # lease always is: revoking a worker ends its running tasks.
                worker_row(conn, row.owner_id, worker_id)
            if not holds:
                raise LeaseLost("this worker does not hold the task's lease")
            return _finish(conn, row, worker_id, body, now)

        return await self._txn(work)

    async def tasks_to_stop(
        self, owner: User, worker_id: str, task_ids: Sequence[str]
    ) -> list[str]:
        """Which of the ``task_ids`` a worker runs it must stop: those with a cancel request,
        and those it no longer holds (ended ``lost``, or not its task at all)."""
        if not task_ids:
            return []
        query = select(
            tasks.c.id, tasks.c.status, tasks.c.worker_id, tasks.c.cancel_requested
        ).where(tasks.c.owner_id == owner.id, tasks.c.id.in_(list(task_ids)))

        def work(conn: Connection) -> set[str]:
            return {
                r.id
                for r in conn.execute(query).all()
                if r.worker_id == worker_id and r.status in ACTIVE and not r.cancel_requested
            }

        held = await self._read(work)
        return [task_id for task_id in task_ids if task_id not in held]

    async def sweep_lost(self) -> list[tuple[str, str]]:
        """End ``lost`` every running task whose worker was not heard from within the lease
        TTL (docs/reliability.md R2); such tasks are never re-run on their own.

        Returns:
            ``(task_id, owner_id)`` of each task that ended.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=self.lease_ttl_s)
        query = (
            select(tasks.c.pk, tasks.c.owner_id, workers.c.name)
            .select_from(tasks.join(workers, workers.c.id == tasks.c.worker_id))
            .where(tasks.c.status.in_(ACTIVE), workers.c.last_seen_at < cutoff)
        )
        silence = f"(no heartbeat for {self.lease_ttl_s:g} s)"

        def work(conn: Connection) -> list[tuple[str, str]]:
            ended = []
            for row in conn.execute(query).all():
                reason = f"worker {row.name} stopped responding {silence}"
                task_id = end_lost(conn, row.pk, reason, now)  # a conversation: idle
                if task_id is not None:
                    ended.append((task_id, str(row.owner_id)))
            return ended

        return await self._txn(work)

    async def end_previous_runs(self, owner: User, worker: Worker) -> list[str]:
        """End ``lost`` the tasks still running under ``worker`` when it (re)connects.

        A worker connects once per process start, with no task running; tasks the server still
        has running under its id belonged to its previous process (killed, say, and restarted
        before its lease expired). Nobody supervises them any more, and they are never re-run,
        so they end now instead of staying ``running`` behind a worker that heartbeats again.

        Returns:
            The ids of the tasks that ended (to wake their streams).
        """
        now = utcnow()
        reason = f"worker {worker.name} restarted; the run it had was lost with its old process"
        query = select(tasks.c.pk).where(
            tasks.c.owner_id == owner.id,
            tasks.c.worker_id == worker.id,
            tasks.c.status.in_(ACTIVE),
        )
        cause = f"worker {worker.name} restarted"

        def work(conn: Connection) -> list[str]:
            ended = (
                end_lost(conn, pk, reason, now, cause=cause) for pk in conn.scalars(query).all()
            )
            return [task_id for task_id in ended if task_id is not None]

        return await self._txn(work)

    async def revoke_worker(self, owner: User, worker_id: str) -> list[str]:
        """Revoke a worker: its tokens stop working at once and its running tasks end ``lost``.

        Returns:
            The ids of the tasks that ended (to wake their streams).

        Raises:
            NotFound: not one of the owner's workers.
        """
        now = utcnow()

        def work(conn: Connection) -> list[str]:
            result = conn.execute(
                update(workers)
                .where(
                    workers.c.id == worker_id,
                    workers.c.owner_id == owner.id,
                    workers.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            if result.rowcount != 1:
                raise NotFound(f"no worker {worker_id}")
            conn.execute(
                update(tokens)
                .where(tokens.c.worker_id == worker_id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            # Its active tasks, and the conversations whose thread it holds (idle, or queued
            # again for it): no other worker can resume them.
            held = conn.scalars(
                select(tasks.c.pk).where(tasks.c.worker_id == worker_id, tasks.c.status.in_(HELD))
            ).all()
            write_audit(conn, "worker.revoke", owner.id, f"worker:{worker_id}")
            ended = (
                end_lost(conn, pk, "its worker was revoked", now, resumable=False, states=HELD)
                for pk in held
            )
            return [task_id for task_id in ended if task_id is not None]

        ended = await self._txn(work)
        self._known.clear()
        return ended
