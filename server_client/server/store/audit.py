"""Provides the audit log (docs/reliability.md S9): one append-only row per state-changing
call, written in the transaction of the change it records."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from server_client.models import utcnow
from server_client.server import context
from server_client.server.db import audit_log, users
from server_client.server.store.records import AuditEntry, User
from server_client.server.store.runner import BaseStore, dumps


def write_audit(
    conn: Connection,
    action: str,
    owner_id: str | None,
    target: str | None,
    detail: dict[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> None:
    """Append one audit row in ``conn``'s transaction, so it commits with the change.

    Actor, request id and client address come from the current call's context
    (server_client.server.context), unless ``actor`` is given; ``detail`` must never carry a
    secret.
    """
    ctx = context.current()
    conn.execute(
        insert(audit_log).values(
            at=utcnow(),
            actor=actor or ctx.actor,
            owner_id=owner_id,
            action=action,
            target=target,
            request_id=ctx.request_id,
            client_addr=ctx.client_addr,
            detail=dumps(detail) if detail else None,
        )
    )


class AuditStore(BaseStore):
    """The store's audit methods."""

    async def record_audit(
        self,
        action: str,
        owner_id: str | None,
        target: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one audit row on its own (for calls that change nothing else, such as a
        refused pairing attempt)."""

        def work(conn: Connection) -> None:
            write_audit(conn, action, owner_id, target, detail)

        await self._txn(work)

    async def list_audit(
        self,
        *,
        owner: User | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The newest ``limit`` audit rows matching the filters, oldest first."""
        query = (
            select(audit_log, users.c.name.label("owner_name"))
            .select_from(audit_log.outerjoin(users, users.c.id == audit_log.c.owner_id))
            .order_by(audit_log.c.id.desc())
            .limit(limit)
        )
        if owner is not None:
            query = query.where(audit_log.c.owner_id == owner.id)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if target is not None:
            query = query.where(audit_log.c.target == target)
        if since is not None:
            query = query.where(audit_log.c.at >= since)

        def work(conn: Connection) -> list[AuditEntry]:
            return [
                AuditEntry(
                    id=int(r.id),
                    at=r.at,
                    actor=r.actor,
                    owner=r.owner_name,
                    action=r.action,
                    target=r.target,
                    request_id=r.request_id,
                    client_addr=r.client_addr,
                    detail=json.loads(r.detail) if r.detail else {},
                )
                for r in reversed(conn.execute(query).all())
            ]

        return await self._read(work)
