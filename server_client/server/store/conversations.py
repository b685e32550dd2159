"""Provides the conversation side of tasks: replies (a follow-up prompt steers the running
turn or queues the idle task again for the worker that holds its thread), interrupts, the
worker's signals (cancel, interrupt, replies, answers) and their acknowledgements.

A reply is kept until the worker acknowledges handing it to codex (``delivered_at``); until
then it goes out in every signals answer (a running task) or with the claim (a queued one).
The task row keeps the count (``pending_replies``), written with the replies.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from server_client.models import (
    ACTIVE_STATUSES,
    Acks,
    ApprovalState,
    Reply,
    Runtime,
    Signals,
    Task,
    TaskStatus,
    utcnow,
)
from server_client.server.db import approvals, replies, tasks, workers
from server_client.server.store.approvals import _APPROVAL_ROWS, approval_from_row
from server_client.server.store.audit import write_audit
from server_client.server.store.events import append_status, task_row
from server_client.server.store.records import Conflict, User
from server_client.server.store.runner import BaseStore, new_id
from server_client.server.store.tasks import reread

#: The states in which a worker holds the task (its lease) and codex runs a turn.
ACTIVE = [s.value for s in ACTIVE_STATUSES]


def reply_from_row(row: Row[Any], task_id: str) -> Reply:
    """The :class:`Reply` of a ``replies`` row of the task ``task_id``."""
    return Reply(
        id=row.id,
        task_id=task_id,
        prompt=row.prompt,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )


def undelivered_replies(conn: Connection, task_pk: int, task_id: str) -> list[Reply]:
    """The task's replies not yet handed to codex, oldest first."""
    rows = conn.execute(
        select(replies)
        .where(replies.c.task_pk == task_pk, replies.c.delivered_at.is_(None))
        .order_by(replies.c.created_at, replies.c.id)
    ).all()
    return [reply_from_row(r, task_id) for r in rows]


def is_exec(row: Row[Any]) -> bool:
    """True when the task ``row`` runs (or asked to run) on the exec runtime."""
    return bool((row.runtime or row.requested_runtime) == Runtime.EXEC.value)


def holder_offline(conn: Connection, worker_id: str, ttl_s: float, now: datetime) -> str | None:
    """The name of the worker ``worker_id`` when it is offline (not heard from within
    ``ttl_s``), else None."""
    row = conn.execute(
        select(workers.c.name, workers.c.last_seen_at, workers.c.revoked_at).where(
            workers.c.id == worker_id
        )
    ).first()
    if row is None:
        return None
    if row.revoked_at is not None or row.last_seen_at < now - timedelta(seconds=ttl_s):
        return str(row.name)
    return None


class ConversationStore(BaseStore):
    """The store's replies, interrupts, signals and acknowledgements."""

    async def add_reply(self, owner: User, task_id: str, prompt: str) -> tuple[Reply, Task]:
        """Store a reply to the owner's conversation ``task_id``.

        To a running or waiting task it goes out in the worker's signals (it steers the
        turn); to a queued one with the claim; an idle task is queued again, for the worker
        that holds its thread (``worker_id`` is kept: only it may claim the task). A status
        event ``{"status", "reply": {"id", "prompt"}}`` is written (``status``: ``queued``
        when it queued an idle task), and ``{"status": "queued", "waiting_for_worker": NAME}``
        when that worker is offline; and an audit row.

        Returns:
            The reply and the task after it.

        Raises:
            NotFound: no such task for this owner.
            Conflict: the task ended, or runs on the exec runtime (no replies).
        """
        now = utcnow()
        lock = self._lock_rows
        ttl_s = self.lease_ttl_s

        def work(conn: Connection) -> tuple[Reply, Task]:
            row = task_row(conn, owner.id, task_id, lock=lock)
            status = TaskStatus(row.status)
            if status.is_terminal:
                raise Conflict(
                    f"task {task_id} already ended {status.value}; it takes no more replies "
                    f"(start a new one: codex-tui rerun {task_id}, or codex-tui submit)"
                )
            if is_exec(row):
                raise Conflict(
                    f"task {task_id} runs on the exec runtime, which takes no replies; "
                    "submit a conversation with --runtime app-server"
                )
            reply_id = new_id()
            conn.execute(
                insert(replies).values(id=reply_id, task_pk=row.pk, prompt=prompt, created_at=now)
            )
            if status is TaskStatus.IDLE:
                status = TaskStatus.QUEUED
            conn.execute(
                update(tasks)
                .where(tasks.c.pk == row.pk)
                .values(status=status.value, pending_replies=tasks.c.pending_replies + 1)
            )
            data = {"status": status.value, "reply": {"id": reply_id, "prompt": prompt}}
            seq = append_status(conn, row.pk, row.last_seq, data, now)
            if status is TaskStatus.QUEUED and row.worker_id:
                name = holder_offline(conn, row.worker_id, ttl_s, now)
                if name is not None:
                    waiting = {"status": "queued", "waiting_for_worker": name}
                    append_status(conn, row.pk, seq, waiting, now)
            write_audit(conn, "task.reply", owner.id, f"task:{task_id}", {"reply_id": reply_id})
            reply = reply_from_row(
                conn.execute(select(replies).where(replies.c.id == reply_id)).one(), task_id
            )
            return reply, reread(conn, row.pk)

        return await self._txn(work)

    async def request_interrupt(self, owner: User, task_id: str) -> tuple[Task, bool]:
        """Ask the worker to interrupt the task's running turn: ``interrupt_requested`` is set
        (and cleared when the turn ends), with a status event ``{"status",
        "interrupt": "requested"}`` and an audit row. Idempotent while set.

        Returns:
            The task and whether this call set the flag.

        Raises:
            NotFound: no such task for this owner.
            Conflict: the task is not running or waiting (no turn to interrupt).
        """
        now = utcnow()
        lock = self._lock_rows

        def work(conn: Connection) -> tuple[Task, bool]:
            row = task_row(conn, owner.id, task_id, lock=lock)
            if row.status not in ACTIVE:
                raise Conflict(
                    f"task {task_id} is {row.status}: only a running or waiting turn can be "
                    "interrupted (cancel ends a task in any state: codex-tui cancel)"
                )
            if row.interrupt_requested:
                write_audit(conn, "task.interrupt", owner.id, f"task:{task_id}", {"changed": False})
                return reread(conn, row.pk), False
            conn.execute(update(tasks).where(tasks.c.pk == row.pk).values(interrupt_requested=True))
            data = {"status": row.status, "interrupt": "requested"}
            append_status(conn, row.pk, row.last_seq, data, now)
            write_audit(conn, "task.interrupt", owner.id, f"task:{task_id}", {"changed": True})
            return reread(conn, row.pk), True

        return await self._txn(work)

    async def signals(self, owner: User, worker_id: str, task_ids: Sequence[str]) -> Signals:
        """What the worker running ``task_ids`` must act on now: the tasks to stop (a cancel
        request, or no longer held: ended, lost, or not its task), the running turns to
        interrupt, the replies and approval answers it has not acknowledged."""
        if not task_ids:
            return Signals()
        query = select(
            tasks.c.pk,
            tasks.c.id,
            tasks.c.status,
            tasks.c.worker_id,
            tasks.c.cancel_requested,
            tasks.c.interrupt_requested,
            tasks.c.pending_replies,
        ).where(tasks.c.owner_id == owner.id, tasks.c.id.in_(list(task_ids)))

        def work(conn: Connection) -> Signals:
            held = {
                r.id: r
                for r in conn.execute(query).all()
                if r.worker_id == worker_id and r.status in ACTIVE
            }
            out = Signals(
                cancel=[t for t in task_ids if t not in held or held[t].cancel_requested],
                interrupt=[t for t, r in held.items() if r.interrupt_requested],
            )
            for task_id, row in held.items():
                if row.pending_replies:
                    out.replies += undelivered_replies(conn, row.pk, task_id)
            if held:
                pks = [r.pk for r in held.values()]
                answered = conn.execute(
                    _APPROVAL_ROWS.where(
                        approvals.c.task_pk.in_(pks),
                        approvals.c.state == ApprovalState.ANSWERED.value,
                        approvals.c.acked_at.is_(None),
                    ).order_by(approvals.c.answered_at, approvals.c.id)
                ).all()
                out.answers = [approval_from_row(r) for r in answered]
            return out

        return await self._read(work)

    async def ack(self, owner: User, worker_id: str, acks: Acks) -> list[str]:
        """Record what ``worker_id`` handed to codex: its replies become delivered (the
        tasks' pending counts drop) and its approval answers acknowledged. Ids of other
        workers' or owners' tasks, and ids already acknowledged, are ignored.

        A task that was queued again for replies that are all delivered now (its worker
        took them into a turn before it finished) goes back to ``idle``.

        Returns:
            The ids of the tasks whose state changed (to wake their streams).
        """
        now = utcnow()
        approval_ids = list(acks.approvals)
        reply_ids = list(acks.replies)

        def work(conn: Connection) -> list[str]:
            changed: list[str] = []
            if reply_ids:
                rows = conn.execute(
                    select(replies.c.id, replies.c.task_pk)
                    .select_from(replies.join(tasks, tasks.c.pk == replies.c.task_pk))
                    .where(
                        replies.c.id.in_(reply_ids),
                        replies.c.delivered_at.is_(None),
                        tasks.c.owner_id == owner.id,
                        tasks.c.worker_id == worker_id,
                    )
                ).all()
                by_task: dict[int, int] = {}
                for r in rows:
                    by_task[r.task_pk] = by_task.get(r.task_pk, 0) + 1
                if rows:
                    conn.execute(
                        update(replies)
                        .where(replies.c.id.in_([r.id for r in rows]))
                        .values(delivered_at=now)
                    )
                for task_pk, count in by_task.items():
                    # Relative to the stored count, which a reply may raise meanwhile.
                    task = conn.execute(
                        update(tasks)
                        .where(tasks.c.pk == task_pk)
                        .values(pending_replies=tasks.c.pending_replies - count)
                        .returning(
                            tasks.c.id,
                            tasks.c.status,
                            tasks.c.turns,
                            tasks.c.last_seq,
                            tasks.c.pending_replies,
                        )
                    ).one()
                    requeued = task.status == TaskStatus.QUEUED.value and task.turns > 0
                    if task.pending_replies <= 0 and requeued:
                        conn.execute(
                            update(tasks)
                            .where(tasks.c.pk == task_pk)
                            .values(status=TaskStatus.IDLE.value)
                        )
                        data = {"status": "idle", "turns": int(task.turns)}
                        append_status(conn, task_pk, task.last_seq, data, now)
                        changed.append(str(task.id))
            if approval_ids:
                held = select(tasks.c.pk).where(
                    tasks.c.owner_id == owner.id, tasks.c.worker_id == worker_id
                )
                conn.execute(
                    update(approvals)
                    .where(
                        approvals.c.id.in_(approval_ids),
                        approvals.c.state == ApprovalState.ANSWERED.value,
                        approvals.c.acked_at.is_(None),
                        approvals.c.task_pk.in_(held.scalar_subquery()),
                    )
                    .values(acked_at=now)
                )
            return changed

        return await self._txn(work)
