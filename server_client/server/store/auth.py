"""Provides users and bearer tokens: creation, authentication (with a memory of recently valid
tokens for the event upload) and revocation. Tokens are stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from server_client.models import utcnow
from server_client.server.db import tokens, users, workers
from server_client.server.store.audit import write_audit
from server_client.server.store.records import Conflict, NotFound, Principal, TokenInfo, User
from server_client.server.store.runner import BaseStore, inserted_pk, new_id

#: How many recently valid tokens :meth:`AuthStore.authenticate_known` remembers.
KNOWN_TOKENS = 1024

#: Who a live token speaks for (prepared once: every request asks it).
_AUTHENTICATE = (
    select(users.c.id, users.c.name, tokens.c.kind, tokens.c.worker_id)
    .select_from(tokens.join(users, users.c.id == tokens.c.user_id))
    .where(tokens.c.token_hash == bindparam("token_hash"), tokens.c.revoked_at.is_(None))
)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token; tokens are 256-bit random, so no salt or KDF is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A new random bearer token (256 bits of entropy, prefixed ``ctu_``)."""
    return "ctu_" + secrets.token_urlsafe(32)


def insert_token(
    conn: Connection, user_id: str, token: str, kind: str, worker_id: str | None = None
) -> int:
    """Store ``token`` (hashed) for ``user_id`` in ``conn``'s transaction; returns its id."""
    result = conn.execute(
        insert(tokens).values(
            user_id=user_id,
            kind=kind,
            token_hash=hash_token(token),
            created_at=utcnow(),
            worker_id=worker_id,
        )
    )
    return inserted_pk(result)


class AuthStore(BaseStore):
    """The store's users and tokens."""

    async def create_user(self, name: str, *, is_local: bool = False) -> User:
        """Create a user. Raises Conflict when the name is taken (also when another server
        process on the same database creates it at the same moment)."""
        user = User(id=new_id(), name=name)

        def work(conn: Connection) -> User:
            if conn.scalar(select(users.c.id).where(users.c.name == name)):
                raise Conflict(f"user {name!r} already exists")
            try:
                conn.execute(
                    insert(users).values(
                        id=user.id, name=name, is_local=is_local, created_at=utcnow()
                    )
                )
            except IntegrityError as exc:
                raise Conflict(f"user {name!r} already exists") from exc
            write_audit(conn, "user.create", user.id, f"user:{name}")
            return user

        return await self._txn(work)

    async def local_user(self) -> User | None:
        """The user created for the server's own OS user, if any."""
        query = (
            select(users.c.id, users.c.name)
            .where(users.c.is_local.is_(True))
            .order_by(users.c.created_at)
            .limit(1)
        )

        def work(conn: Connection) -> User | None:
            row = conn.execute(query).first()
            return User(id=row.id, name=row.name) if row else None

        return await self._read(work)

    async def count_users(self) -> int:
        """How many users exist."""

        def work(conn: Connection) -> int:
            return int(conn.scalar(select(func.count()).select_from(users)) or 0)

        return await self._read(work)

    async def issue_token(self, user_id: str, kind: str = "user") -> str:
        """Create a user token for ``user_id``; returns the plain token (stored only hashed)."""
        token = new_token()

        def work(conn: Connection) -> None:
            token_id = insert_token(conn, user_id, token, kind)
            write_audit(conn, "token.issue", user_id, f"token:{token_id}", {"kind": kind})

        await self._txn(work)
        return token

    async def authenticate(self, token: str) -> Principal | None:
        """Who a bearer token speaks for, or None (unknown or revoked)."""
        params = {"token_hash": hash_token(token)}

        def work(conn: Connection) -> Principal | None:
            row = conn.execute(_AUTHENTICATE, params).first()
            if row is None:
                return None
            user = User(id=row.id, name=row.name)
            return Principal(user, kind=row.kind, worker_id=row.worker_id)

        return await self._read(work)

    async def authenticate_known(self, token: str) -> Principal | None:
        """:meth:`authenticate`, answered from the last :data:`KNOWN_TOKENS` tokens that were
        valid here, so a route does not pay a query before its own.

        Only for a route whose own statement checks the token again (the event upload and the
        finish, see :meth:`~server_client.server.store.Store.append_events_by_token`): the
        memory only lets a token that was valid reach that statement, which refuses it once
        revoked, even when another process revoked it. An unknown token is looked up, so it
        is refused before its body is looked at.
        """
        digest = hash_token(token)
        principal = self._known.get(digest)
        if principal is not None:
            self._known.move_to_end(digest)
            return principal
        principal = await self.authenticate(token)
        if principal is not None:
            self._known[digest] = principal
            if len(self._known) > KNOWN_TOKENS:
                self._known.popitem(last=False)
        return principal

    def forget_token(self, token: str) -> None:
        """Drop ``token`` from :meth:`authenticate_known`'s memory (it was refused)."""
        self._known.pop(hash_token(token), None)

    async def user_by_name(self, name: str) -> User:
        """A user by name. Raises NotFound."""

        def work(conn: Connection) -> User:
            row = conn.execute(select(users.c.id, users.c.name).where(users.c.name == name))
            found = row.first()
            if found is None:
                raise NotFound(f"no user named {name!r}")
            return User(id=found.id, name=found.name)

        return await self._read(work)

    async def list_users(self) -> list[tuple[User, datetime, int]]:
        """Every user with their creation time and number of live tokens."""
        live = (
            select(func.count())
            .where(tokens.c.user_id == users.c.id, tokens.c.revoked_at.is_(None))
            .scalar_subquery()
        )
        query = select(users.c.id, users.c.name, users.c.created_at, live.label("live")).order_by(
            users.c.created_at
        )

        def work(conn: Connection) -> list[tuple[User, datetime, int]]:
            rows = conn.execute(query).all()
            return [(User(id=r.id, name=r.name), r.created_at, int(r.live)) for r in rows]

        return await self._read(work)

    async def list_tokens(self, user: User | None = None) -> list[TokenInfo]:
        """Token records (of one user, or all), oldest first."""
        query = (
            select(
                tokens.c.id,
                users.c.name.label("user"),
                tokens.c.kind,
                workers.c.name.label("worker"),
                tokens.c.created_at,
                tokens.c.revoked_at,
            )
            .select_from(
                tokens.join(users, users.c.id == tokens.c.user_id).outerjoin(
                    workers, workers.c.id == tokens.c.worker_id
                )
            )
            .order_by(tokens.c.id)
        )
        if user is not None:
            query = query.where(tokens.c.user_id == user.id)

        def work(conn: Connection) -> list[TokenInfo]:
            return [
                TokenInfo(
                    id=r.id,
                    user=r.user,
                    kind=r.kind,
                    worker=r.worker,
                    created_at=r.created_at,
                    revoked_at=r.revoked_at,
                )
                for r in conn.execute(query).all()
            ]

        return await self._read(work)

    async def revoke_tokens(self, token_ids: Sequence[int] = (), user: User | None = None) -> int:
        """Revoke tokens by id, or every token of ``user``; returns how many were revoked."""
        query = (
            update(tokens)
            .where(tokens.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(tokens.c.id, tokens.c.user_id)
        )
        if user is not None:
            query = query.where(tokens.c.user_id == user.id)
        else:
            query = query.where(tokens.c.id.in_(list(token_ids)))

        def work(conn: Connection) -> int:
            revoked = conn.execute(query).all()
            for row in revoked:
                write_audit(conn, "token.revoke", row.user_id, f"token:{row.id}")
            return len(revoked)

        count = await self._txn(work)
        self._known.clear()
        return count
