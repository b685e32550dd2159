"""Provides the registry of workers: registration (connect), the admin's danger mark, reads,
liveness (last heard from) and the online count."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from server_client.models import ACTIVE_STATUSES, Runtime, Worker, WorkerHello, utcnow
from server_client.server.db import tasks, workers
from server_client.server.store.audit import write_audit
from server_client.server.store.records import NotFound, User
from server_client.server.store.runner import BaseStore, dumps, new_id


def worker_from_row(row: Row[Any], *, ttl_s: float = 30.0, running: int = 0) -> Worker:
    """The :class:`Worker` of a ``workers`` row: online when not revoked and heard from
    within ``ttl_s`` seconds; asked to heartbeat every third of that (1-10 s)."""
    online = row.revoked_at is None and row.last_seen_at > utcnow() - timedelta(seconds=ttl_s)
    return Worker(
        id=row.id,
        name=row.name,
        hostname=row.hostname,
        codex_version=row.codex_version,
        workdir_roots=json.loads(row.workdir_roots),
        max_tasks=row.max_tasks,
        labels=json.loads(row.labels),
        connected_at=row.connected_at,
        last_seen_at=row.last_seen_at,
        online=online,
        running=running,
        heartbeat_s=max(1.0, min(10.0, ttl_s / 3)),
        allow_danger=bool(row.allow_danger),
        runtime=Runtime(row.runtime) if row.runtime else None,
        cannot_run=row.cannot_run,
    )


def worker_row(conn: Connection, owner_id: str, worker_id: str) -> Row[Any]:
    """One of the owner's (not revoked) workers' row. Raises NotFound."""
    row = conn.execute(
        select(workers).where(
            workers.c.id == worker_id,
            workers.c.owner_id == owner_id,
            workers.c.revoked_at.is_(None),
        )
    ).first()
    if row is None:
        raise NotFound(f"no worker {worker_id}")
    return row


class WorkerStore(BaseStore):
    """The store's worker registry."""

    async def connect_worker(
        self, owner: User, hello: WorkerHello, *, worker_id: str | None = None
    ) -> Worker:
        """Register one of the owner's workers with its capabilities.

        A worker token passes its bound ``worker_id``: that record is updated (its name
        stays). A user token registers by name, creating the record or re-activating it.

        Raises:
            NotFound: ``worker_id`` is not the owner's, or was revoked.
        """
        try:
            return await self._connect_worker(owner, hello, worker_id)
        except IntegrityError:
            # Another replica registered the same name in the same instant (the unique
            # owner+name index refused the second row): the row exists now, update it.
            return await self._connect_worker(owner, hello, worker_id)

    async def _connect_worker(
        self, owner: User, hello: WorkerHello, worker_id: str | None
    ) -> Worker:
        now = utcnow()
        values = {
            "hostname": hello.hostname,
            "codex_version": hello.codex_version,
            "workdir_roots": dumps(hello.workdir_roots),
            "max_tasks": hello.max_tasks,
            "labels": dumps(sorted(set(hello.labels))),
            "connected_at": now,
            "last_seen_at": now,
            "runtime": hello.runtime.value if hello.runtime else None,
            "cannot_run": hello.cannot_run,
        }
        detail = {"name": hello.name, "hostname": hello.hostname, "codex": hello.codex_version}

        def work(conn: Connection) -> Row[Any]:
            bound = worker_id
            if bound is not None:
                result = conn.execute(
                    update(workers)
                    .where(
                        workers.c.id == bound,
                        workers.c.owner_id == owner.id,
                        workers.c.revoked_at.is_(None),
                    )
                    .values(values)
                )
                if result.rowcount != 1:
                    raise NotFound(f"no worker {bound}")
            else:
                existing = conn.scalar(
                    select(workers.c.id).where(
                        workers.c.owner_id == owner.id, workers.c.name == hello.name
                    )
                )
                if existing:
                    bound = str(existing)
                    conn.execute(
                        update(workers)
                        .where(workers.c.id == bound)
                        .values({**values, "revoked_at": None})
                    )
                else:
                    bound = new_id()
                    conn.execute(
                        insert(workers).values(
                            id=bound, owner_id=owner.id, name=hello.name, **values
                        )
                    )
            write_audit(conn, "worker.connect", owner.id, f"worker:{bound}", detail)
            return conn.execute(select(workers).where(workers.c.id == bound)).one()

        return worker_from_row(await self._txn(work), ttl_s=self.lease_ttl_s)

    async def set_worker_danger(self, owner: User, name: str, allow: bool) -> Worker:
        """Mark (or unmark) the owner's worker ``name`` as allowed to run ``danger-full-access``
        tasks (an admin's decision, docs/reliability.md S6). Raises NotFound."""
        query = (
            update(workers)
            .where(
                workers.c.owner_id == owner.id,
                workers.c.name == name,
                workers.c.revoked_at.is_(None),
            )
            .values(allow_danger=allow)
            .returning(workers)
        )

        def work(conn: Connection) -> Row[Any]:
            row = conn.execute(query).first()
            if row is None:
                raise NotFound(f"user {owner.name} has no worker named {name!r}")
            write_audit(conn, "worker.allow_danger", owner.id, f"worker:{row.id}", {"allow": allow})
            return row

        return worker_from_row(await self._txn(work), ttl_s=self.lease_ttl_s)

    async def get_worker(self, owner: User, worker_id: str) -> Worker:
        """One of the owner's (not revoked) workers. Raises NotFound."""

        def work(conn: Connection) -> Row[Any]:
            return worker_row(conn, owner.id, worker_id)

        return worker_from_row(await self._read(work), ttl_s=self.lease_ttl_s)

    async def list_workers(self, owner: User) -> list[Worker]:
        """The owner's workers (not revoked), by name, with online state and running count."""
        running = (
            select(func.count())
            .where(
                tasks.c.worker_id == workers.c.id,
                tasks.c.status.in_([s.value for s in ACTIVE_STATUSES]),
            )
            .scalar_subquery()
        )
        query = (
            select(workers, running.label("running_count"))
            .where(workers.c.owner_id == owner.id, workers.c.revoked_at.is_(None))
            .order_by(workers.c.name)
        )

        def work(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(query).all())

        return [
            worker_from_row(r, ttl_s=self.lease_ttl_s, running=int(r.running_count))
            for r in await self._read(work)
        ]

    async def worker_by_name(self, owner: User, name: str) -> Worker | None:
        """The owner's (not revoked) worker called ``name``, if any."""
        query = select(workers).where(
            workers.c.owner_id == owner.id,
            workers.c.name == name,
            workers.c.revoked_at.is_(None),
        )

        def work(conn: Connection) -> Row[Any] | None:
            return conn.execute(query).first()

        row = await self._read(work)
        return worker_from_row(row, ttl_s=self.lease_ttl_s) if row else None

    async def workdir_roots(self, owner: User) -> list[str]:
        """The union of the workdir roots the owner's workers reported."""
        roots: list[str] = []
        for worker in await self.list_workers(owner):
            roots += [root for root in worker.workdir_roots if root not in roots]
        return roots

    async def touch_worker(self, worker_id: str) -> None:
        """Record that the worker was just heard from."""
        query = update(workers).where(workers.c.id == worker_id).values(last_seen_at=utcnow())

        def work(conn: Connection) -> None:
            conn.execute(query)

        await self._txn(work)

    async def count_workers_online(self) -> int:
        """How many workers (of every owner) are online: not revoked and heard from within the
        lease TTL."""
        cutoff = utcnow() - timedelta(seconds=self.lease_ttl_s)
        query = (
            select(func.count())
            .select_from(workers)
            .where(workers.c.revoked_at.is_(None), workers.c.last_seen_at > cutoff)
        )

        def work(conn: Connection) -> int:
            return int(conn.scalar(query) or 0)

        return await self._read(work)
