"""Provides tasks: creation, listing and search, reads, cancel requests and counts, and the
task-row helpers the other aggregates share."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, func, insert, or_, select, update

from server_client.models import (
    ACTIVE_STATUSES,
    ApprovalPolicy,
    Runtime,
    Sandbox,
    Task,
    TaskCreate,
    TaskPage,
    TaskStatus,
    WorkspaceState,
    utcnow,
)
from server_client.server.db import tasks
from server_client.server.store.audit import write_audit
from server_client.server.store.events import append_status, task_row
from server_client.server.store.records import User
from server_client.server.store.runner import BaseStore, dumps, inserted_pk, new_id

#: Largest task key (a signed 64-bit BIGINT on PostgreSQL, an INTEGER on SQLite).
MAX_PK = 2**63 - 1

#: States in which a task counts against its owner's active-task limit (an idle conversation
#: does not: it waits for its owner, not for a worker).
ACTIVE = (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.WAITING.value)


def encode_cursor(pk: int) -> str:
    """An opaque pagination cursor for the task with internal key ``pk``."""
    return base64.urlsafe_b64encode(f"t{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Inverse of :func:`encode_cursor`. Raises ValueError for a malformed cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("malformed cursor") from exc
    if not raw.startswith("t") or not raw[1:].isdigit() or int(raw[1:]) > MAX_PK:
        raise ValueError("malformed cursor")
    return int(raw[1:])


def task_from_row(row: Row[Any]) -> Task:
    """The :class:`Task` of a ``tasks`` row."""
    return Task(
        id=row.id,
        prompt=row.prompt,
        workdir=row.workdir,
        model=row.model,
        sandbox=Sandbox(row.sandbox),
        status=TaskStatus(row.status),
        cancel_requested=bool(row.cancel_requested),
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        worker_id=row.worker_id,
        worker_name=row.worker_name,
        thread_id=row.thread_id,
        exit_code=row.exit_code,
        error=row.error,
        last_seq=row.last_seq,
        target_worker=row.target_worker,
        labels=json.loads(row.labels),
        approval_policy=ApprovalPolicy(row.approval_policy),
        runtime=Runtime(row.runtime) if row.runtime else None,
        requested_runtime=Runtime(row.requested_runtime) if row.requested_runtime else None,
        turns=row.turns,
        pending_approvals=row.pending_approvals,
        pending_replies=row.pending_replies,
        interrupt_requested=bool(row.interrupt_requested),
        repo=row.repo,
        ref=row.ref,
        workspace_path=row.workspace_path,
        base_commit=row.base_commit,
        workspace_state=WorkspaceState(row.workspace_state) if row.workspace_state else None,
        workspace_bytes=row.workspace_bytes,
        diff_files=row.diff_files,
        diff_added=row.diff_added,
        diff_removed=row.diff_removed,
        diff_updated_at=row.diff_updated_at,
    )


def reread(conn: Connection, task_pk: int) -> Task:
    """The task of key ``task_pk`` as it stands now in ``conn``'s transaction."""
    return task_from_row(conn.execute(select(tasks).where(tasks.c.pk == task_pk)).one())


class TaskStore(BaseStore):
    """The store's task methods."""

    async def create_task(
        self, owner: User, body: TaskCreate, workdir: str | None, repo: str | None = None
    ) -> Task:
        """Store a new queued task and its first event (``status: queued``); ``workdir`` and
        ``repo`` as admitted (server_client.server.admission)."""
        now = utcnow()
        task_id = new_id()
        values = {
            "id": task_id,
            "owner_id": owner.id,
            "prompt": body.prompt,
            "workdir": workdir,
            "model": body.model,
            "sandbox": body.sandbox.value,
            "status": TaskStatus.QUEUED.value,
            "cancel_requested": False,
            "created_at": now,
            "last_seq": 0,
            "upload_next": 0,
            "target_worker": body.worker,
            "labels": dumps(sorted(set(body.labels))),
            "approval_policy": body.approval_policy.value,
            "requested_runtime": body.runtime.value if body.runtime else None,
            "turns": 0,
            "interrupt_requested": False,
            "pending_approvals": 0,
            "pending_replies": 0,
            "repo": repo or body.repo,
            "ref": body.ref,
        }
        detail = {
            "sandbox": body.sandbox.value,
            "model": body.model,
            "worker": body.worker,
            "approval_policy": body.approval_policy.value,
            "runtime": body.runtime.value if body.runtime else None,
        }

        def work(conn: Connection) -> Task:
            pk = inserted_pk(conn.execute(insert(tasks).values(values)))
            append_status(conn, pk, 0, {"status": "queued"}, now)
            write_audit(conn, "task.create", owner.id, f"task:{task_id}", detail)
            return reread(conn, pk)

        return await self._txn(work)

    async def list_tasks(
        self,
        owner: User,
        *,
        statuses: Sequence[TaskStatus] = (),
        q: str | None = None,
        worker: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> TaskPage:
        """A page of the owner's tasks, newest first; the filters combine with AND.

        Args:
            owner: Whose tasks.
            statuses: Only tasks in one of these states (empty: any state).
            q: Only tasks whose prompt contains this text, ignoring case (on SQLite only the
                case of ASCII letters). ``%``, ``_`` and the escape character match
                literally (no wildcards). Empty or None: any. A substring search scans the
                owner's tasks newest first until the page is full (no index helps it).
            worker: Only tasks run by the worker of this name, or routed to it (its
                ``target_worker``) while they wait. None: any.
            cursor: ``next_cursor`` of the previous page (older tasks follow).
            limit: Page size (tasks).

        Raises:
            ValueError: a malformed cursor.
        """
        query = select(tasks).where(tasks.c.owner_id == owner.id)
        if statuses:
            query = query.where(tasks.c.status.in_([s.value for s in statuses]))
        if q:
            # lower(prompt) LIKE '%' || lower(:q) || '%' ESCAPE '/' (ILIKE on PostgreSQL),
            # with %, _ and / in q escaped so they match themselves.
            query = query.where(tasks.c.prompt.icontains(q, autoescape=True))
        if worker is not None:
            query = query.where(or_(tasks.c.worker_name == worker, tasks.c.target_worker == worker))
        if cursor:
            query = query.where(tasks.c.pk < decode_cursor(cursor))
        query = query.order_by(tasks.c.pk.desc()).limit(limit + 1)

        def work(conn: Connection) -> TaskPage:
            rows = conn.execute(query).all()
            more = len(rows) > limit
            rows = rows[:limit]
            return TaskPage(
                items=[task_from_row(r) for r in rows],
                next_cursor=encode_cursor(rows[-1].pk) if more and rows else None,
            )

        return await self._read(work)

    async def get_task(self, owner: User, task_id: str) -> Task:
        """One task of the owner. Raises NotFound."""

        def work(conn: Connection) -> Task:
            return task_from_row(task_row(conn, owner.id, task_id))

        return await self._read(work)

    async def task_pk(self, owner: User, task_id: str) -> tuple[int, Task]:
        """The internal key and the task, for event reads. Raises NotFound."""

        def work(conn: Connection) -> tuple[int, Task]:
            row = task_row(conn, owner.id, task_id)
            return int(row.pk), task_from_row(row)

        return await self._read(work)

    async def task_pks(self, owner: User, task_ids: Sequence[str]) -> dict[str, tuple[int, Task]]:
        """:meth:`task_pk` for several tasks in one query; ids the owner has no task of are
        left out."""
        query = select(tasks).where(tasks.c.owner_id == owner.id, tasks.c.id.in_(list(task_ids)))

        def work(conn: Connection) -> dict[str, tuple[int, Task]]:
            return {r.id: (int(r.pk), task_from_row(r)) for r in conn.execute(query).all()}

        return await self._read(work)

    async def request_cancel(self, owner: User, task_id: str) -> tuple[Task, bool]:
        """Cancel a task: a queued or idle one ends ``canceled`` at once, a running or waiting
        one is flagged (its worker stops it).

        Idempotent: a terminal task, or one already flagged, is returned unchanged.

        Returns:
            The task and whether anything changed.

        Raises:
            NotFound: no such task for this owner.
        """
        now = utcnow()
        lock = self._lock_rows

        def work(conn: Connection) -> tuple[Task, bool]:
            row = task_row(conn, owner.id, task_id, lock=lock)
            status = TaskStatus(row.status)
            if status in (TaskStatus.QUEUED, TaskStatus.IDLE):
                # Nothing runs: a queued task never started (or waits for its next turn),
                # an idle conversation waits for a reply.
                reason = (
                    "canceled before it started"
                    if row.turns == 0
                    else f"canceled between turns (after turn {row.turns})"
                )
                conn.execute(
                    update(tasks)
                    .where(tasks.c.pk == row.pk)
                    .values(
                        status=TaskStatus.CANCELED.value,
                        cancel_requested=True,
                        finished_at=now,
                        error=reason,
                    )
                )
                data: dict[str, Any] = {"status": "canceled", "reason": reason}
            elif status in ACTIVE_STATUSES and not row.cancel_requested:
                conn.execute(
                    update(tasks).where(tasks.c.pk == row.pk).values(cancel_requested=True)
                )
                data = {"status": status.value, "cancel_requested": True}
            else:
                write_audit(conn, "task.cancel", owner.id, f"task:{task_id}", {"changed": False})
                return task_from_row(row), False
            append_status(conn, row.pk, row.last_seq, data, now)
            write_audit(
                conn,
                "task.cancel",
                owner.id,
                f"task:{task_id}",
                {"changed": True, "was": status.value},
            )
            return reread(conn, row.pk), True

        return await self._txn(work)

    async def count_active_tasks(self, owner: User) -> int:
        """How many of the owner's tasks are queued or running (every replica agrees: it is
        counted in the store)."""
        query = (
            select(func.count())
            .select_from(tasks)
            .where(tasks.c.owner_id == owner.id, tasks.c.status.in_(ACTIVE))
        )

        def work(conn: Connection) -> int:
            return int(conn.scalar(query) or 0)

        return await self._read(work)

    async def count_tasks_by_state(self) -> dict[str, int]:
        """How many tasks (of every owner) are in each state, every state included (0)."""
        query = select(tasks.c.status, func.count()).group_by(tasks.c.status)

        def work(conn: Connection) -> dict[str, int]:
            by_state = {status.value: 0 for status in TaskStatus}
            for status, count in conn.execute(query):
                by_state[str(status)] = int(count)
            return by_state

        return await self._read(work)
