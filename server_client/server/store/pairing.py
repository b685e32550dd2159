"""Provides pairing codes: a user's single-use code that a new worker redeems for a worker
token bound to that user (like a CI runner's registration token)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from server_client.models import PairRequest, Worker, utcnow
from server_client.server.db import pairing_codes, tokens, users, workers
from server_client.server.store.audit import write_audit
from server_client.server.store.auth import hash_token, insert_token, new_token
from server_client.server.store.records import PairingError, User
from server_client.server.store.runner import BaseStore, dumps, inserted_pk, new_id
from server_client.server.store.workers import worker_from_row

#: Alphabet of pairing codes: Crockford's base32, no I, L, O or U to misread.
PAIRING_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_pairing_code() -> str:
    """A pairing code such as ``K7PQ-3MZD``: 8 symbols of base32, 40 bits."""
    raw = "".join(secrets.choice(PAIRING_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def normalise_pairing_code(code: str) -> str:
    """Upper-case, drop separators and map look-alikes (O→0, I/L→1), as typed by a person."""
    table = str.maketrans({"O": "0", "I": "1", "L": "1"})
    return "".join(ch for ch in code.upper() if ch.isalnum()).translate(table)


class PairingStore(BaseStore):
    """The store's pairing methods."""

    async def create_pairing_code(self, owner: User, ttl_s: float = 600.0) -> tuple[str, datetime]:
        """A new single-use pairing code for ``owner``; returns it (shown once) and its expiry."""
        code = new_pairing_code()
        now = utcnow()
        expires = now + timedelta(seconds=ttl_s)
        values = {
            "owner_id": owner.id,
            "code_hash": hash_token(normalise_pairing_code(code)),
            "created_at": now,
            "expires_at": expires,
        }

        def work(conn: Connection) -> None:
            code_id = inserted_pk(conn.execute(insert(pairing_codes).values(values)))
            write_audit(
                conn,
                "pairing.create",
                owner.id,
                f"pairing-code:{code_id}",
                {"expires_at": expires.isoformat()},
            )

        await self._txn(work)
        return code, expires

    async def redeem_pairing_code(self, request: PairRequest) -> tuple[User, Worker, str]:
        """Exchange a pairing code for a worker of its owner and that worker's token.

        Atomic: of concurrent redemptions of one code exactly one succeeds (a conditional
        update). Re-pairing a worker name of the owner replaces that worker's old tokens.

        Raises:
            PairingError: unknown, used or expired code.
        """
        now = utcnow()
        code_hash = hash_token(normalise_pairing_code(request.code))
        token = new_token()
        values = {
            "hostname": request.hostname,
            "labels": dumps(sorted(set(request.labels))),
            "connected_at": now,
            # Not seen yet: it shows offline until its process connects.
            "last_seen_at": now - timedelta(seconds=self.lease_ttl_s),
            "revoked_at": None,
        }

        def work(conn: Connection) -> tuple[User, Row[Any]]:
            code_row = conn.execute(
                select(pairing_codes.c.id, pairing_codes.c.owner_id).where(
                    pairing_codes.c.code_hash == code_hash
                )
            ).first()
            owner_id = code_row.owner_id if code_row else None
            worker_id = new_id()
            claimed = conn.execute(
                update(pairing_codes)
                .where(
                    pairing_codes.c.code_hash == code_hash,
                    pairing_codes.c.used_at.is_(None),
                    pairing_codes.c.expires_at > now,
                )
                .values(used_at=now, worker_id=worker_id)
            )
            if code_row is None or owner_id is None or claimed.rowcount != 1:
                raise PairingError("invalid, used or expired pairing code")
            owner_row = conn.execute(
                select(users.c.id, users.c.name).where(users.c.id == owner_id)
            ).one()
            existing = conn.scalar(
                select(workers.c.id).where(
                    workers.c.owner_id == owner_id, workers.c.name == request.name
                )
            )
            if existing:
                worker_id = str(existing)
                conn.execute(
                    update(tokens)
                    .where(tokens.c.worker_id == worker_id, tokens.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                conn.execute(update(workers).where(workers.c.id == worker_id).values(values))
                conn.execute(
                    update(pairing_codes)
                    .where(pairing_codes.c.code_hash == code_hash)
                    .values(worker_id=worker_id)
                )
            else:
                conn.execute(
                    insert(workers).values(
                        id=worker_id,
                        owner_id=owner_id,
                        name=request.name,
                        codex_version=None,
                        workdir_roots="[]",
                        max_tasks=1,
                        **values,
                    )
                )
            token_id = insert_token(conn, owner_id, token, "worker", worker_id)
            write_audit(
                conn,
                "pairing.redeem",
                owner_id,
                f"worker:{worker_id}",
                {
                    "worker": request.name,
                    "pairing_code": f"pairing-code:{code_row.id}",
                    "token": f"token:{token_id}",
                },
                actor=f"worker:{worker_id}",
            )
            row = conn.execute(select(workers).where(workers.c.id == worker_id)).one()
            return User(id=owner_row.id, name=owner_row.name), row

        owner, row = await self._txn(work)
        return owner, worker_from_row(row, ttl_s=self.lease_ttl_s), token
