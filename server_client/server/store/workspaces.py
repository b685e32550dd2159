"""Provides the workspace side of tasks (docs/design.md, "Workspaces"): the workspace a worker
made for a task it holds, the latest diff of it, the owner's list of workspaces and removal
requests, and the worker's periodic sync that reports disk use and learns what to remove.

Every write of a worker is fenced by the task's lease (the report of a workspace and each diff
upload); the sync is not (it reports what the worker's disk holds, whoever held the task), but
only ever touches tasks the worker ran.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from server_client.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    DiffUpload,
    FileChange,
    Task,
    TaskDiff,
    TaskStatus,
    WorkspaceHeld,
    WorkspaceOrders,
    WorkspaceReport,
    WorkspaceState,
    utcnow,
)
from server_client.server.db import task_diffs, tasks
from server_client.server.store.audit import write_audit
from server_client.server.store.events import leased_row, task_row
from server_client.server.store.records import Conflict, Invalid, LeaseLost, NotFound, User
from server_client.server.store.runner import BaseStore, dumps
from server_client.server.store.tasks import reread, task_from_row

#: The states in which a task's workspace may be removed: it ended, or its conversation is
#: idle (no turn runs in the workspace; a later reply then fails with the reason).
_REMOVABLE = {*(s.value for s in TERMINAL_STATUSES), TaskStatus.IDLE.value}

#: The states in which a turn runs under the worker's lease: its workspace and diff reports
#: are taken only then (a late one must not undo a removal or change a turn's final diff).
_TURN_RUNNING = [s.value for s in ACTIVE_STATUSES]

#: Workspaces listed by ``GET /api/workspaces`` at most.
MAX_LISTED = 1000

#: States in which the worker still has the workspace on its disk.
_ON_DISK = [WorkspaceState.PRESENT.value, WorkspaceState.REMOVING.value]


def diff_from_row(row: Any, task_id: str, status: str) -> TaskDiff:
    """The :class:`TaskDiff` of a ``task_diffs`` row of the task ``task_id`` in ``status``."""
    files = [FileChange.model_validate(item) for item in json.loads(row.files)]
    return TaskDiff(
        task_id=task_id,
        base_commit=row.base_commit,
        files=files,
        added=sum(f.added or 0 for f in files),
        removed=sum(f.removed or 0 for f in files),
        patch_bytes=len(row.patch),
        truncated=bool(row.truncated),
        updated_at=row.updated_at,
        final=status not in (TaskStatus.RUNNING.value, TaskStatus.WAITING.value),
    )


class WorkspaceStore(BaseStore):
    """The store's workspace methods."""

    async def report_workspace(
        self, owner: User, worker_id: str, task_id: str, body: WorkspaceReport
    ) -> Task:
        """Record the workspace ``worker_id`` made (or reused) for the task it holds under
        ``body.lease_id``: its path and base commit, state ``present``.

        Raises:
            NotFound: no such task for this owner. LeaseLost: the worker does not hold the
            task's lease, or no turn runs (the task ended or is idle). Invalid: the task has
            no repository, or a workspace at another base commit (a task keeps the base it
            started from).
        """
        now = utcnow()
        lock = self._lock_rows

        def work(conn: Connection) -> Task:
            row = _turn_row(conn, owner, worker_id, task_id, body.lease_id, lock=lock)
            if row.repo is None:
                raise Invalid(f"task {task_id} has no repository, so no workspace")
            if row.base_commit is not None:
                _same_base(row, body.base_commit)
            conn.execute(
                update(tasks)
                .where(tasks.c.pk == row.pk)
                .values(
                    workspace_path=body.path,
                    base_commit=body.base_commit,
                    workspace_state=WorkspaceState.PRESENT.value,
                    workspace_updated_at=now,
                )
            )
            if row.workspace_path is None:
                write_audit(
                    conn,
                    "workspace.create",
                    owner.id,
                    f"task:{task_id}",
                    {"worker_id": worker_id, "base_commit": body.base_commit},
                )
            return reread(conn, row.pk)

        return await self._txn(work)

    async def store_diff(self, owner: User, worker_id: str, task_id: str, body: DiffUpload) -> Task:
        """Keep ``body`` as the task's latest diff (replacing the one before) and its
        summary on the task row, for the task ``worker_id`` holds under ``body.lease_id``.

        Raises:
            NotFound: no such task for this owner. LeaseLost: the worker does not hold the
            task's lease, or no turn runs (the task ended or is idle). Invalid: the task
            has no workspace, or one at another base commit.
        """
        now = utcnow()
        lock = self._lock_rows
        files = dumps([f.model_dump(mode="json") for f in body.files])
        added = sum(f.added or 0 for f in body.files)
        removed = sum(f.removed or 0 for f in body.files)
        patch = b"" if body.truncated else body.patch

        def work(conn: Connection) -> Task:
            row = _turn_row(conn, owner, worker_id, task_id, body.lease_id, lock=lock)
            if row.base_commit is None:
                raise Invalid(f"task {task_id} has no workspace yet (report it first)")
            _same_base(row, body.base_commit)
            conn.execute(delete(task_diffs).where(task_diffs.c.task_pk == row.pk))
            conn.execute(
                insert(task_diffs).values(
                    task_pk=row.pk,
                    base_commit=body.base_commit,
                    files=files,
                    patch=patch,
                    truncated=body.truncated,
                    updated_at=now,
                )
            )
            conn.execute(
                update(tasks)
                .where(tasks.c.pk == row.pk)
                .values(
                    diff_files=len(body.files),
                    diff_added=added,
                    diff_removed=removed,
                    diff_updated_at=now,
                )
            )
            return reread(conn, row.pk)

        return await self._txn(work)

    async def get_diff(self, owner: User, task_id: str) -> TaskDiff:
        """The task's latest diff, without its patch.

        Raises:
            NotFound: no such task for this owner, or it has no diff (the message says why).
        """

        def work(conn: Connection) -> TaskDiff:
            row = task_row(conn, owner.id, task_id)
            diff = conn.execute(
                select(
                    task_diffs.c.base_commit,
                    task_diffs.c.files,
                    task_diffs.c.patch,
                    task_diffs.c.truncated,
                    task_diffs.c.updated_at,
                ).where(task_diffs.c.task_pk == row.pk)
            ).first()
            if diff is None:
                raise NotFound(_no_diff(row))
            return diff_from_row(diff, task_id, row.status)

        return await self._read(work)

    async def get_patch(self, owner: User, task_id: str) -> bytes:
        """The task's latest diff as patch bytes (``git diff --binary`` output).

        Raises:
            NotFound: no such task for this owner, or no diff. Conflict: the diff was over
            the patch limit, so only its counts were kept.
        """

        def work(conn: Connection) -> bytes:
            row = task_row(conn, owner.id, task_id)
            diff = conn.execute(
                select(task_diffs.c.patch, task_diffs.c.truncated).where(
                    task_diffs.c.task_pk == row.pk
                )
            ).first()
            if diff is None:
                raise NotFound(_no_diff(row))
            if diff.truncated:
                where = f" ({row.workspace_path} on {row.worker_name})" if row.worker_name else ""
                raise Conflict(
                    f"task {task_id}'s diff was too large to keep; only its file counts are "
                    f"stored. Read it in the workspace{where} with `git diff {row.base_commit}`"
                )
            return bytes(diff.patch)

        return await self._read(work)

    async def list_workspaces(self, owner: User) -> list[Task]:
        """The owner's tasks whose workspace is on a worker's disk (``present`` or
        ``removing``), newest first, at most :data:`MAX_LISTED`."""
        query = (
            select(tasks)
            .where(tasks.c.owner_id == owner.id, tasks.c.workspace_state.in_(_ON_DISK))
            .order_by(tasks.c.pk.desc())
            .limit(MAX_LISTED)
        )

        def work(conn: Connection) -> list[Task]:
            return [task_from_row(row) for row in conn.execute(query).all()]

        return await self._read(work)

    async def request_workspace_removal(self, owner: User, task_id: str) -> tuple[Task, bool]:
        """Ask the task's worker to delete its workspace: state ``removing`` (idempotent;
        a workspace already removed stays so).

        Returns:
            The task and whether this call changed it.

        Raises:
            NotFound: no such task for this owner, or it never had a workspace.
            Conflict: the task is queued or running a turn (cancel it first).
        """
        lock = self._lock_rows

        def work(conn: Connection) -> tuple[Task, bool]:
            row = task_row(conn, owner.id, task_id, lock=lock)
            if row.workspace_state is None:
                raise NotFound(f"task {task_id} has no workspace")
            if row.workspace_state != WorkspaceState.PRESENT.value:
                return task_from_row(row), False
            if row.status not in _REMOVABLE:
                raise Conflict(
                    f"task {task_id} is {row.status}: its workspace is in use; cancel the task "
                    "first (codex-tui cancel)"
                )
            conn.execute(
                update(tasks)
                .where(tasks.c.pk == row.pk)
                .values(workspace_state=WorkspaceState.REMOVING.value)
            )
            write_audit(conn, "workspace.remove", owner.id, f"task:{task_id}", {"requested": True})
            return reread(conn, row.pk), True

        return await self._txn(work)

    async def workspaces_to_remove(self, owner: User, worker_id: str) -> bool:
        """True when a workspace of ``worker_id`` awaits removal (its signals say so)."""
        query = (
            select(tasks.c.pk)
            .where(
                tasks.c.worker_id == worker_id,
                tasks.c.workspace_state == WorkspaceState.REMOVING.value,
                tasks.c.owner_id == owner.id,
            )
            .limit(1)
        )

        def work(conn: Connection) -> bool:
            return conn.execute(query).first() is not None

        return await self._read(work)

    async def sync_workspaces(
        self,
        owner: User,
        worker_id: str,
        held: Sequence[WorkspaceHeld],
        *,
        retention_s: float,
    ) -> tuple[WorkspaceOrders, list[str]]:
        """Record what ``worker_id`` reports holding and say what it must remove.

        The tasks it ran whose workspaces it no longer holds become ``removed``; those it
        holds get their disk use. It is to remove a workspace whose removal was asked for,
        one whose task ended more than ``retention_s`` seconds ago (0: never by age), and
        one of a task whose workspace is recorded ``removed`` (a removal that failed before).

        Returns:
            The orders, and the ids of the tasks marked ``removed`` now.
        """
        now = utcnow()
        by_id = {item.task_id: item for item in held}
        cutoff = now - timedelta(seconds=retention_s) if retention_s > 0 else None
        terminal = {s.value for s in TERMINAL_STATUSES}

        def work(conn: Connection) -> tuple[WorkspaceOrders, list[str]]:
            rows = conn.execute(
                select(
                    tasks.c.pk,
                    tasks.c.id,
                    tasks.c.status,
                    tasks.c.finished_at,
                    tasks.c.workspace_state,
                ).where(
                    tasks.c.owner_id == owner.id,
                    tasks.c.worker_id == worker_id,
                    tasks.c.workspace_state.in_(_ON_DISK),
                )
            ).all()
            known = {row.id for row in rows}
            orders = WorkspaceOrders()
            gone: list[str] = []
            for row in rows:
                item = by_id.get(row.id)
                if item is None:
                    conn.execute(
                        update(tasks)
                        .where(tasks.c.pk == row.pk)
                        .values(
                            workspace_state=WorkspaceState.REMOVED.value,
                            workspace_bytes=0,
                            workspace_updated_at=now,
                        )
                    )
                    gone.append(row.id)
                    continue
                conn.execute(
                    update(tasks)
                    .where(tasks.c.pk == row.pk)
                    .values(workspace_bytes=item.bytes, workspace_updated_at=now)
                )
                aged = (
                    cutoff is not None
                    and row.status in terminal
                    and row.finished_at is not None
                    and row.finished_at < cutoff
                )
                if row.workspace_state == WorkspaceState.REMOVING.value or aged:
                    orders.remove.append(row.id)
            others = [task_id for task_id in by_id if task_id not in known]
            if others:
                removed = conn.execute(
                    select(tasks.c.id).where(
                        tasks.c.owner_id == owner.id,
                        tasks.c.worker_id == worker_id,
                        tasks.c.id.in_(others),
                        tasks.c.workspace_state == WorkspaceState.REMOVED.value,
                    )
                ).all()
                orders.remove += [row.id for row in removed]
            if gone:
                write_audit(
                    conn,
                    "workspace.removed",
                    owner.id,
                    f"worker:{worker_id}",
                    {"tasks": gone},
                )
            return orders, gone

        return await self._txn(work)


def _turn_row(
    conn: Connection, owner: User, worker_id: str, task_id: str, lease_id: str, *, lock: bool
) -> Row[Any]:
    """The task's row when ``worker_id`` holds it under ``lease_id`` and a turn runs.

    Raises:
        NotFound: no such task for this owner. LeaseLost: another lease, or no turn runs
        (the task ended, or its turn ended idle: the lease's reports end with it).
    """
    row = leased_row(conn, owner.id, worker_id, task_id, lease_id, lock=lock)
    if row.status not in _TURN_RUNNING:
        raise LeaseLost(f"task {task_id} is {row.status}: no turn runs under this lease")
    return row


def _same_base(row: Row[Any], base_commit: str) -> None:
    """Raise Invalid unless the task's workspace started at ``base_commit``."""
    if row.base_commit != base_commit:
        raise Invalid(f"task {row.id}'s workspace started at {row.base_commit}, not {base_commit}")


def _no_diff(row: Row[Any]) -> str:
    """Why the task of ``row`` has no diff to show."""
    if row.repo is None:
        return (
            f"task {row.id} has no diff: it ran in a folder, not a repository's workspace "
            "(submit with --repo to get one)"
        )
    if row.workspace_state == WorkspaceState.REMOVED.value:
        return f"task {row.id}'s workspace was removed before a diff was kept"
    return f"task {row.id} has no diff yet: its worker has not reported one"


__all__ = ["MAX_LISTED", "WorkspaceStore", "diff_from_row"]
