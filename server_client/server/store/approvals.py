"""Provides the approvals: codex's requests for the owner's say (a command to run, a change to
apply, questions to answer), asked by the worker under its lease, answered once by the owner,
passed back to the worker until it acknowledges them, and withdrawn when the turn ends
without an answer.

An approval belongs to a task and is scoped by the task's owner: another owner's approval is
reported exactly like one that does not exist (:class:`NotFound`). The task row keeps the
count of its pending approvals (``pending_approvals``), written in the same transaction as
the approvals, and its status: ``waiting`` while one is pending, ``running`` again once all
are answered.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from server_client.models import (
    Approval,
    ApprovalAnswer,
    ApprovalDecision,
    ApprovalKind,
    ApprovalRequest,
    ApprovalState,
    Task,
    TaskStatus,
    UserInputQuestion,
    utcnow,
)
from server_client.server.db import approvals, tasks
from server_client.server.store.audit import write_audit
from server_client.server.store.events import append_status, leased_row
from server_client.server.store.records import Conflict, Invalid, LeaseLost, NotFound, User
from server_client.server.store.runner import BaseStore, dumps, new_id
from server_client.server.store.tasks import reread

#: Most approvals one list returns.
MAX_LISTED = 200

#: An approval joined with its task's id and owner (every read of approvals).
_APPROVAL_ROWS = select(
    approvals, tasks.c.id.label("task_id"), tasks.c.owner_id.label("owner_id")
).select_from(approvals.join(tasks, tasks.c.pk == approvals.c.task_pk))


def approval_from_row(row: Row[Any]) -> Approval:
    """The :class:`Approval` of an ``approvals`` row joined with ``task_id``."""
    questions = json.loads(row.questions) if row.questions else None
    return Approval(
        id=row.id,
        task_id=row.task_id,
        item_id=row.item_id,
        turn_id=row.turn_id,
        kind=ApprovalKind(row.kind),
        command=row.command,
        cwd=row.cwd,
        reason=row.reason,
        diff=row.diff,
        questions=[UserInputQuestion.model_validate(q) for q in questions] if questions else None,
        available_decisions=[ApprovalDecision(d) for d in json.loads(row.available_decisions)],
        state=ApprovalState(row.state),
        decision=ApprovalDecision(row.decision) if row.decision else None,
        answers=json.loads(row.answers) if row.answers else None,
        created_at=row.created_at,
        answered_at=row.answered_at,
        answered_by=row.answered_by,
        withdrawn_reason=row.withdrawn_reason,
    )


def withdraw_pending(
    conn: Connection, task_pk: int, last_seq: int, reason: str, now: datetime
) -> int:
    """Withdraw the task's pending approvals (the turn ends without their answer), each with
    a status event ``{"status": "running", "approval": {"id", "state": "withdrawn",
    "reason"}}``, in ``conn``'s transaction; the task's pending count becomes 0. Returns the
    task's last seq after the events.

    The caller writes the event that ends the turn (``idle``, or a terminal state) right
    after: the withdrawals come first, with the turn still running and no longer waiting, so
    that a client that stops at the turn's end has seen them."""
    pending = conn.scalars(
        select(approvals.c.id)
        .where(approvals.c.task_pk == task_pk, approvals.c.state == ApprovalState.PENDING.value)
        .order_by(approvals.c.created_at, approvals.c.id)
    ).all()
    if not pending:
        return last_seq
    conn.execute(
        update(approvals)
        .where(approvals.c.id.in_(list(pending)))
        .values(state=ApprovalState.WITHDRAWN.value, withdrawn_reason=reason)
    )
    conn.execute(update(tasks).where(tasks.c.pk == task_pk).values(pending_approvals=0))
    for approval_id in pending:
        data = {
            "status": TaskStatus.RUNNING.value,
            "approval": {"id": approval_id, "state": "withdrawn", "reason": reason},
        }
        last_seq = append_status(conn, task_pk, last_seq, data, now)
    return last_seq


def check_answer(approval: Approval, answer: ApprovalAnswer) -> None:
    """Refuse an answer that does not fit the approval.

    Raises:
        Invalid: a decision codex did not offer (``available_decisions``, when not empty);
            for ``user_input``, a decision other than ``accept`` or ``cancel``, or ``accept``
            without answers; answers to an approval that asked no question.
    """
    decision = answer.decision
    offered = approval.available_decisions
    if offered and decision not in offered:
        names = ", ".join(d.value for d in offered)
        raise Invalid(f"codex did not offer {decision.value} for this approval (it offers {names})")
    if approval.kind is ApprovalKind.USER_INPUT:
        if decision not in (ApprovalDecision.ACCEPT, ApprovalDecision.CANCEL):
            raise Invalid(
                "a user_input approval is answered with accept and its answers, or cancel"
            )
        if decision is ApprovalDecision.ACCEPT and answer.answers is None:
            ids = ", ".join(q.id for q in approval.questions or []) or "none"
            raise Invalid(f"accept needs the answers by question id (questions: {ids})")
    elif answer.answers is not None:
        raise Invalid(f"a {approval.kind.value} approval takes a decision, not answers")


class ApprovalStore(BaseStore):
    """The store's approval methods."""

    async def request_approval(
        self, owner: User, worker_id: str, task_id: str, body: ApprovalRequest
    ) -> tuple[Approval, Task, bool]:
        """Store codex's request for the task ``worker_id`` holds under ``body.lease_id``:
        a pending approval, the task ``waiting``, a status event
        ``{"status": "waiting", "approval": <Approval>}`` and an audit row. Idempotent by
        ``item_id``: the same item again returns the stored approval unchanged.

        Returns:
            The approval, the task, and whether this call created the approval.

        Raises:
            NotFound: no such task for this owner. LeaseLost: the worker does not hold the
            task's lease (or the task ended).
        """
        now = utcnow()
        lock = self._lock_rows

        def work(conn: Connection) -> tuple[Approval, Task, bool]:
            row = leased_row(conn, owner.id, worker_id, task_id, body.lease_id, lock=lock)
            existing = conn.execute(
                _APPROVAL_ROWS.where(
                    approvals.c.task_pk == row.pk, approvals.c.item_id == body.item_id
                )
            ).first()
            if existing is not None:
                return approval_from_row(existing), reread(conn, row.pk), False
            if TaskStatus(row.status).is_terminal:
                raise LeaseLost(f"task {task_id} already ended {row.status}")
            approval_id = new_id()
            conn.execute(
                insert(approvals).values(
                    id=approval_id,
                    task_pk=row.pk,
                    item_id=body.item_id,
                    turn_id=body.turn_id,
                    kind=body.kind.value,
                    command=body.command,
                    cwd=body.cwd,
                    reason=body.reason,
                    diff=body.diff,
                    questions=dumps([q.model_dump(mode="json") for q in body.questions])
                    if body.questions is not None
                    else None,
                    available_decisions=dumps([d.value for d in body.available_decisions]),
                    state=ApprovalState.PENDING.value,
                    created_at=now,
                )
            )
            conn.execute(
                update(tasks)
                .where(tasks.c.pk == row.pk)
                .values(
                    status=TaskStatus.WAITING.value,
                    pending_approvals=tasks.c.pending_approvals + 1,
                )
            )
            approval = approval_from_row(
                conn.execute(_APPROVAL_ROWS.where(approvals.c.id == approval_id)).one()
            )
            data = {"status": "waiting", "approval": approval.model_dump(mode="json")}
            append_status(conn, row.pk, row.last_seq, data, now)
            write_audit(
                conn,
                "approval.request",
                owner.id,
                f"task:{task_id}",
                {"approval_id": approval_id, "kind": body.kind.value, "worker_id": worker_id},
            )
            return approval, reread(conn, row.pk), True

        return await self._txn(work)

    async def list_approvals(
        self,
        owner: User,
        *,
        state: ApprovalState | None = None,
        task_id: str | None = None,
        limit: int = MAX_LISTED,
    ) -> list[Approval]:
        """The owner's approvals, newest first, at most ``limit``; only those in ``state`` or
        of the task ``task_id`` when given (another owner's task id lists nothing)."""
        query = _APPROVAL_ROWS.where(tasks.c.owner_id == owner.id)
        if state is not None:
            query = query.where(approvals.c.state == state.value)
        if task_id is not None:
            query = query.where(tasks.c.id == task_id)
        query = query.order_by(approvals.c.created_at.desc(), approvals.c.id.desc()).limit(limit)

        def work(conn: Connection) -> list[Approval]:
            return [approval_from_row(r) for r in conn.execute(query).all()]

        return await self._read(work)

    async def get_approval(self, owner: User, approval_id: str) -> Approval:
        """One of the owner's approvals. Raises NotFound (also for another owner's)."""
        query = _APPROVAL_ROWS.where(approvals.c.id == approval_id, tasks.c.owner_id == owner.id)

        def work(conn: Connection) -> Approval:
            row = conn.execute(query).first()
            if row is None:
                raise NotFound(f"no approval {approval_id}")
            return approval_from_row(row)

        return await self._read(work)

    async def answer_approval(
        self, owner: User, approval_id: str, answer: ApprovalAnswer
    ) -> tuple[Approval, Task]:
        """Answer one of the owner's pending approvals, once: the decision (and answers) are
        stored with who answered and when, the task goes back to ``running`` when no other
        approval is pending, a status event ``{"status", "approval": {"id", "decision",
        "answered_by"}}`` and an audit row are written. The worker gets the answer through
        its signals until it acknowledges it.

        Raises:
            NotFound: no such approval for this owner.
            Conflict: it was answered already (the message names the first decision, who gave
                it and when) or withdrawn (with the reason).
            Invalid: the answer does not fit the approval (:func:`check_answer`).
        """
        now = utcnow()
        lock = self._lock_rows
        query = _APPROVAL_ROWS.where(approvals.c.id == approval_id, tasks.c.owner_id == owner.id)

        def work(conn: Connection) -> tuple[Approval, Task]:
            row = conn.execute(query.with_for_update(of=approvals) if lock else query).first()
            if row is None:
                raise NotFound(f"no approval {approval_id}")
            approval = approval_from_row(row)
            if approval.state is ApprovalState.ANSWERED:
                at = approval.answered_at.isoformat() if approval.answered_at else "?"
                decision = approval.decision.value if approval.decision else "?"
                raise Conflict(f"already answered: {decision} by {approval.answered_by} at {at}")
            if approval.state is ApprovalState.WITHDRAWN:
                raise Conflict(f"withdrawn: {approval.withdrawn_reason}")
            check_answer(approval, answer)
            conn.execute(
                update(approvals)
                .where(approvals.c.id == approval_id)
                .values(
                    state=ApprovalState.ANSWERED.value,
                    decision=answer.decision.value,
                    answers=dumps(answer.answers) if answer.answers is not None else None,
                    answered_at=now,
                    answered_by=owner.name,
                )
            )
            task = conn.execute(
                select(tasks).where(tasks.c.pk == row.task_pk).with_for_update()
                if lock
                else select(tasks).where(tasks.c.pk == row.task_pk)
            ).one()
            left = max(0, int(task.pending_approvals) - 1)
            status = TaskStatus(task.status)
            if status is TaskStatus.WAITING and left == 0:
                status = TaskStatus.RUNNING
            conn.execute(
                update(tasks)
                .where(tasks.c.pk == task.pk)
                .values(pending_approvals=left, status=status.value)
            )
            data = {
                "status": status.value,
                "approval": {
                    "id": approval_id,
                    "decision": answer.decision.value,
                    "answered_by": owner.name,
                },
            }
            append_status(conn, task.pk, task.last_seq, data, now)
            write_audit(
                conn,
                "approval.answer",
                owner.id,
                f"approval:{approval_id}",
                {"task_id": row.task_id, "decision": answer.decision.value},
            )
            answered = conn.execute(_APPROVAL_ROWS.where(approvals.c.id == approval_id)).one()
            return approval_from_row(answered), reread(conn, task.pk)

        return await self._txn(work)

    async def count_pending_approvals(self) -> int:
        """How many approvals (of every owner) wait for an answer."""
        query = (
            select(func.count())
            .select_from(approvals)
            .where(approvals.c.state == ApprovalState.PENDING.value)
        )

        def work(conn: Connection) -> int:
            return int(conn.scalar(query) or 0)

        return await self._read(work)
