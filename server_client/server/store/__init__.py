"""Provides the task store: users, tokens, workers, tasks and their append-only event logs.

Every method scopes by owner: a task or worker of another owner is reported exactly like one
that does not exist (:class:`NotFound`), so ids never leak. Event seqs are assigned here,
1..N per task with no gap (reliability.md E1), inside the same transaction that updates the
task row, so a crash can never leave a gap (R9).

SQLite allows one writer at a time; writes from this process are serialised by an
``asyncio.Lock`` so concurrent requests queue instead of failing with "database is locked".
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Engine, Row, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server_client.models import (
    Claim,
    EventBatch,
    EventKind,
    FinishRequest,
    PairRequest,
    Sandbox,
    Task,
    TaskCreate,
    TaskPage,
    TaskStatus,
    UploadResult,
    Worker,
    WorkerHello,
    utcnow,
)
from server_client.server import context
from server_client.server.db import (
    audit_log,
    events,
    pairing_codes,
    sqlite_sync_twin,
    tasks,
    tokens,
    users,
    workers,
)
from server_client.server.policy import encode_event


class StoreError(Exception):
    """Base of the store's refusals."""


class NotFound(StoreError):
    """No such object for this owner."""


class Conflict(StoreError):
    """The request conflicts with the stored state (409).

    Attributes:
        next_index: For event uploads and finishes: the next event index the server expects.
    """

    def __init__(self, message: str, next_index: int | None = None) -> None:
        super().__init__(message)
        self.next_index = next_index


class LeaseLost(Conflict):
    """The worker's lease on the task is gone (another claim, or the task ended)."""


@dataclass(frozen=True)
class User:
    """An authenticated principal."""

    id: str
    name: str


@dataclass(frozen=True)
class Principal:
    """Who a bearer token speaks for: a user, or one of the user's workers.

    Attributes:
        kind: ``user`` or ``worker``. worker_id: the worker a worker token is bound to.
    """

    user: User
    kind: str
    worker_id: str | None = None


class Appended(NamedTuple):
    """What :meth:`Store.append_events` did: ``result`` (the worker's answer), ``task_pk``,
    ``fresh`` (events of the batch the store had not seen, stored or dropped by the cap) and
    ``events`` (the rows it committed, in seq order, for this process's streams)."""

    result: UploadResult
    task_pk: int
    fresh: int
    events: list[StoredEvent]


@dataclass(frozen=True)
class AuditEntry:
    """One audit row (reliability.md S9).

    Attributes:
        id: Increasing row id. at: When (UTC). actor: ``user:<name>``, ``worker:<id>``,
        ``admin`` or ``server``. owner: The owning user's name (None when unknown, e.g. a
        refused pairing code). action: e.g. ``task.create``. target: e.g. ``task:<id>``.
        request_id: The HTTP request's id. client_addr: The client's address.
        detail: Extra facts (never secrets).
    """

    id: int
    at: datetime
    actor: str
    owner: str | None
    action: str
    target: str | None
    request_id: str | None
    client_addr: str | None
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (time as ISO 8601 with Z)."""
        out = dict(self.__dict__)
        out["at"] = self.at.isoformat().replace("+00:00", "Z")
        return out


@dataclass(frozen=True)
class TokenInfo:
    """A token's record (never the token itself)."""

    id: int
    user: str
    kind: str
    worker: str | None
    created_at: datetime
    revoked_at: datetime | None


class PairingError(StoreError):
    """The pairing code is unknown, already used or expired (one message for all three)."""


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


@dataclass(frozen=True)
class StoredEvent:
    """One event row; ``data`` is the JSON text exactly as stored."""

    seq: int
    ts: datetime
    kind: str
    data: str

    def envelope_json(self) -> str:
        """The wire envelope ``{"seq","ts","kind","data"}`` as JSON text, without re-parsing."""
        ts = self.ts.isoformat().replace("+00:00", "Z")
        return f'{{"seq":{self.seq},"ts":"{ts}","kind":"{self.kind}","data":{self.data}}}'

    @property
    def is_terminal(self) -> bool:
        """True for the status event that ends a task."""
        if self.kind != EventKind.STATUS:
            return False
        status = json.loads(self.data).get("status")
        return status in {s.value for s in TaskStatus if s.is_terminal}


#: The event upload's one read (:meth:`Store.append_events_by_token`): the task row joined
#: with the bearer token's facts. Built once: an upload is the server's hot path.
_UPLOAD_ROW = (
    select(
        tasks,
        tokens.c.kind.label("token_kind"),
        tokens.c.worker_id.label("token_worker"),
        users.c.name.label("owner_name"),
    )
    .select_from(
        tasks.join(tokens, tokens.c.user_id == tasks.c.owner_id).join(
            users, users.c.id == tasks.c.owner_id
        )
    )
    .where(
        tokens.c.token_hash == bindparam("token_hash"),
        tokens.c.revoked_at.is_(None),
        tasks.c.id == bindparam("task_id"),
    )
)
#: The same, locking the task row (PostgreSQL; SQLite writes are serialised in-process).
_UPLOAD_ROW_LOCKED = _UPLOAD_ROW.with_for_update(of=tasks)
_INSERT_EVENTS = insert(events)
#: An upload's update of the task row: its last seq and the next upload index.
_ADVANCE = (
    update(tasks)
    .where(tasks.c.pk == bindparam("b_pk"))
    .values(last_seq=bindparam("b_last_seq"), upload_next=bindparam("b_upload_next"))
)

#: A page of a task's events after a seq (streams and replays).
_READ_EVENTS = (
    select(events.c.seq, events.c.ts, events.c.kind, events.c.data)
    .where(events.c.task_pk == bindparam("task_pk"), events.c.seq > bindparam("after"))
    .order_by(events.c.seq)
    .limit(bindparam("limit"))
)

#: How many recently valid tokens :meth:`Store.authenticate_known` remembers.
KNOWN_TOKENS = 1024

#: How many of the oldest queued tasks one claim looks through for a routing match.
CLAIM_SCAN = 200


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token; tokens are 256-bit random, so no salt or KDF is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A new random bearer token (256 bits of entropy, prefixed ``ctu_``)."""
    return "ctu_" + secrets.token_urlsafe(32)


def _new_id(length: int = 12) -> str:
    return secrets.token_hex(length // 2)


def _inserted_pk(result: Any) -> int:
    """The primary key an ``insert`` just assigned."""
    inserted = result.inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


#: Largest task key (a signed 64-bit BIGINT on PostgreSQL, an INTEGER on SQLite).
MAX_PK = 2**63 - 1
#: Largest event seq (a signed 32-bit INTEGER column); bounds are clamped to it, since a
#: larger number does not fit a query parameter.
MAX_SEQ = 2**31 - 1


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


def _task_from_row(row: Row[Any]) -> Task:
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
    )


def _worker_from_row(row: Row[Any], *, ttl_s: float = 30.0, running: int = 0) -> Worker:
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
    )


T = TypeVar("T")


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return work(conn)


def _on_connection(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        return work(conn)


def _append_status_sync(
    conn: Connection, task_pk: int, last_seq: int, data: dict[str, Any], ts: datetime
) -> int:
    """Append a status event after ``last_seq`` and advance the task's last seq; the new seq."""
    seq = last_seq + 1
    conn.execute(
        insert(events).values(
            task_pk=task_pk, seq=seq, ts=ts, kind=EventKind.STATUS.value, data=_dumps(data)
        )
    )
    conn.execute(update(tasks).where(tasks.c.pk == task_pk).values(last_seq=seq))
    return seq


def _worker_row_sync(conn: Connection, owner_id: str, worker_id: str) -> Row[Any]:
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


def _leased_row_sync(
    conn: Connection, owner_id: str, worker_id: str, task_id: str, lease_id: str, *, lock: bool
) -> Row[Any]:
    """The owner's task row when ``worker_id`` holds it under ``lease_id`` (locked with
    ``lock``, on PostgreSQL). Raises NotFound, LeaseLost."""
    query = select(tasks).where(tasks.c.id == task_id, tasks.c.owner_id == owner_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"no task {task_id}")
    if row.worker_id != worker_id or row.lease_id != lease_id:
        raise LeaseLost("this worker does not hold the task's lease")
    return row


class Store:
    """All persistent state, over an async SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        lease_ttl_s: float = 30.0,
        max_event_bytes: int = 256 * 1024,
        max_events_per_task: int = 200_000,
    ) -> None:
        self.engine = engine
        self.lease_ttl_s = lease_ttl_s
        self.max_event_bytes = max_event_bytes
        self.max_events_per_task = max_events_per_task
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock()
        self._known: OrderedDict[str, Principal] = OrderedDict()
        # SQLite: the hot paths (event appends and reads) run as plain sqlite3 work in one
        # thread hop per transaction, instead of a hop per driver call through aiosqlite
        # (about 5x less CPU per upload; benchmarks/). PostgreSQL runs them on its engine.
        self._sync_engine = sqlite_sync_twin(engine) if self._sqlite else None

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (serialised in-process on SQLite)."""
        if self._sqlite:
            async with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    async def _txn(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction and return its result (its exceptions roll
        the transaction back and propagate). On SQLite in a worker thread, serialised with
        the other writes of this process; elsewhere through the async engine."""
        if self._sync_engine is not None:
            async with self._write_lock:
                return await asyncio.to_thread(_in_transaction, self._sync_engine, work)
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    async def _read(self, work: Callable[[Connection], T]) -> T:
        """Run the read ``work`` on a connection of its own and return its result."""
        if self._sync_engine is not None:
            return await asyncio.to_thread(_on_connection, self._sync_engine, work)
        async with self.engine.connect() as conn:
            return await conn.run_sync(work)

    async def aclose(self) -> None:
        """Close the connections of the SQLite thread path (the caller disposes ``engine``)."""
        if self._sync_engine is not None:
            await asyncio.to_thread(self._sync_engine.dispose)

    async def _audit(
        self,
        conn: AsyncConnection,
        action: str,
        owner_id: str | None,
        target: str | None,
        detail: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        """Append one audit row in ``conn``'s transaction (so it commits with the change).

        Actor, request id and client address come from the current call's context
        (server_client.server.context); ``detail`` must never carry a secret.
        """
        await conn.run_sync(self._audit_sync, action, owner_id, target, detail, actor=actor)

    def _audit_sync(
        self,
        conn: Connection,
        action: str,
        owner_id: str | None,
        target: str | None,
        detail: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        """:meth:`_audit` on a plain connection (inside :meth:`_txn`)."""
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
                detail=_dumps(detail) if detail else None,
            )
        )

    async def record_audit(
        self,
        action: str,
        owner_id: str | None,
        target: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one audit row on its own (for calls that change nothing else, such as a
        refused pairing attempt)."""
        async with self._write() as conn:
            await self._audit(conn, action, owner_id, target, detail)

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
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
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
            for r in reversed(rows)
        ]

    # ---------------------------------------------------------------- users and tokens

    async def create_user(self, name: str, *, is_local: bool = False) -> User:
        """Create a user. Raises Conflict when the name is taken (also when another server
        process on the same database creates it at the same moment)."""
        user = User(id=_new_id(), name=name)
        async with self._write() as conn:
            taken = await conn.scalar(select(users.c.id).where(users.c.name == name))
            if taken:
                raise Conflict(f"user {name!r} already exists")
            try:
                await conn.execute(
                    insert(users).values(
                        id=user.id, name=name, is_local=is_local, created_at=utcnow()
                    )
                )
            except IntegrityError as exc:
                raise Conflict(f"user {name!r} already exists") from exc
            await self._audit(conn, "user.create", user.id, f"user:{name}")
        return user

    async def local_user(self) -> User | None:
        """The user created for the server's own OS user, if any."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(users.c.id, users.c.name)
                    .where(users.c.is_local.is_(True))
                    .order_by(users.c.created_at)
                    .limit(1)
                )
            ).first()
        return User(id=row.id, name=row.name) if row else None

    async def count_users(self) -> int:
        """How many users exist."""
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(users)) or 0)

    async def issue_token(self, user_id: str, kind: str = "user") -> str:
        """Create a user token for ``user_id``; returns the plain token (stored only hashed)."""
        token = new_token()
        async with self._write() as conn:
            token_id = await self._insert_token(conn, user_id, token, kind)
            await self._audit(conn, "token.issue", user_id, f"token:{token_id}", {"kind": kind})
        return token

    async def _insert_token(
        self,
        conn: AsyncConnection,
        user_id: str,
        token: str,
        kind: str,
        worker_id: str | None = None,
    ) -> int:
        result = await conn.execute(
            insert(tokens).values(
                user_id=user_id,
                kind=kind,
                token_hash=hash_token(token),
                created_at=utcnow(),
                worker_id=worker_id,
            )
        )
        inserted = result.inserted_primary_key
        assert inserted is not None
        return int(inserted[0])

    async def authenticate(self, token: str) -> Principal | None:
        """Who a bearer token speaks for, or None (unknown or revoked)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(users.c.id, users.c.name, tokens.c.kind, tokens.c.worker_id)
                    .select_from(tokens.join(users, users.c.id == tokens.c.user_id))
                    .where(tokens.c.token_hash == hash_token(token), tokens.c.revoked_at.is_(None))
                )
            ).first()
        if row is None:
            return None
        return Principal(User(id=row.id, name=row.name), kind=row.kind, worker_id=row.worker_id)

    async def authenticate_known(self, token: str) -> Principal | None:
        """:meth:`authenticate`, answered from the last :data:`KNOWN_TOKENS` tokens that were
        valid here, so an upload does not pay a query before its own.

        Only for a route whose own statement checks the token again (the event upload, see
        :meth:`append_events_by_token`): the memory only lets a token that was valid reach
        that statement, which refuses it once revoked, even when another process revoked it.
        An unknown token is looked up, so it is refused before its body is looked at.
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
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(users.c.id, users.c.name).where(users.c.name == name))
            ).first()
        if row is None:
            raise NotFound(f"no user named {name!r}")
        return User(id=row.id, name=row.name)

    async def list_users(self) -> list[tuple[User, datetime, int]]:
        """Every user with their creation time and number of live tokens."""
        live = (
            select(func.count())
            .where(tokens.c.user_id == users.c.id, tokens.c.revoked_at.is_(None))
            .scalar_subquery()
        )
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        users.c.id, users.c.name, users.c.created_at, live.label("live")
                    ).order_by(users.c.created_at)
                )
            ).all()
        return [(User(id=r.id, name=r.name), r.created_at, int(r.live)) for r in rows]

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
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            TokenInfo(
                id=r.id,
                user=r.user,
                kind=r.kind,
                worker=r.worker,
                created_at=r.created_at,
                revoked_at=r.revoked_at,
            )
            for r in rows
        ]

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
        async with self._write() as conn:
            revoked = (await conn.execute(query)).all()
            for row in revoked:
                await self._audit(conn, "token.revoke", row.user_id, f"token:{row.id}")
        self._known.clear()
        return len(revoked)

    # ---------------------------------------------------------------- tasks

    async def create_task(self, owner: User, body: TaskCreate, workdir: str | None) -> Task:
        """Store a new queued task and its first event (``status: queued``)."""
        now = utcnow()
        task_id = _new_id()
        async with self._write() as conn:
            result = await conn.execute(
                insert(tasks).values(
                    id=task_id,
                    owner_id=owner.id,
                    prompt=body.prompt,
                    workdir=workdir,
                    model=body.model,
                    sandbox=body.sandbox.value,
                    status=TaskStatus.QUEUED.value,
                    cancel_requested=False,
                    created_at=now,
                    last_seq=0,
                    upload_next=0,
                    target_worker=body.worker,
                    labels=_dumps(sorted(set(body.labels))),
                )
            )
            inserted = result.inserted_primary_key
            assert inserted is not None
            pk = int(inserted[0])
            await self._append_status(conn, pk, 0, {"status": "queued"}, now)
            await self._audit(
                conn,
                "task.create",
                owner.id,
                f"task:{task_id}",
                {"sandbox": body.sandbox.value, "model": body.model, "worker": body.worker},
            )
            row = (await conn.execute(select(tasks).where(tasks.c.pk == pk))).one()
        return _task_from_row(row)

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
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return TaskPage(
            items=[_task_from_row(r) for r in rows],
            next_cursor=encode_cursor(rows[-1].pk) if more and rows else None,
        )

    async def _task_row(
        self, conn: AsyncConnection, owner_id: str, task_id: str, *, lock: bool = False
    ) -> Row[Any]:
        query = select(tasks).where(tasks.c.id == task_id, tasks.c.owner_id == owner_id)
        if lock and not self._sqlite:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"no task {task_id}")
        return row

    async def get_task(self, owner: User, task_id: str) -> Task:
        """One task of the owner. Raises NotFound."""
        async with self.engine.connect() as conn:
            return _task_from_row(await self._task_row(conn, owner.id, task_id))

    async def task_pk(self, owner: User, task_id: str) -> tuple[int, Task]:
        """The internal key and the task, for event reads. Raises NotFound."""
        async with self.engine.connect() as conn:
            row = await self._task_row(conn, owner.id, task_id)
        return int(row.pk), _task_from_row(row)

    async def request_cancel(self, owner: User, task_id: str) -> tuple[Task, bool]:
        """Cancel a task: a queued one ends ``canceled`` at once, a running one is flagged.

        Idempotent: a terminal task, or one already flagged, is returned unchanged.

        Returns:
            The task and whether anything changed.

        Raises:
            NotFound: no such task for this owner.
        """
        now = utcnow()
        async with self._write() as conn:
            row = await self._task_row(conn, owner.id, task_id, lock=True)
            status = TaskStatus(row.status)
            if status is TaskStatus.QUEUED:
                await conn.execute(
                    update(tasks)
                    .where(tasks.c.pk == row.pk)
                    .values(
                        status=TaskStatus.CANCELED.value,
                        cancel_requested=True,
                        finished_at=now,
                        error="canceled before it started",
                    )
                )
                await self._append_status(
                    conn,
                    row.pk,
                    row.last_seq,
                    {"status": "canceled", "reason": "canceled before it started"},
                    now,
                )
            elif status is TaskStatus.RUNNING and not row.cancel_requested:
                await conn.execute(
                    update(tasks).where(tasks.c.pk == row.pk).values(cancel_requested=True)
                )
                await self._append_status(
                    conn,
                    row.pk,
                    row.last_seq,
                    {"status": "running", "cancel_requested": True},
                    now,
                )
            else:
                await self._audit(
                    conn, "task.cancel", owner.id, f"task:{task_id}", {"changed": False}
                )
                return _task_from_row(row), False
            await self._audit(
                conn,
                "task.cancel",
                owner.id,
                f"task:{task_id}",
                {"changed": True, "was": status.value},
            )
            new = (await conn.execute(select(tasks).where(tasks.c.pk == row.pk))).one()
        return _task_from_row(new), True

    # ---------------------------------------------------------------- events

    async def _append_status(
        self,
        conn: AsyncConnection,
        task_pk: int,
        last_seq: int,
        data: dict[str, Any],
        ts: datetime,
    ) -> int:
        return await conn.run_sync(_append_status_sync, task_pk, last_seq, data, ts)

    async def read_events(self, task_pk: int, after: int, limit: int = 500) -> list[StoredEvent]:
        """Stored events with ``seq > after`` in order, at most ``limit``."""
        params = {"task_pk": task_pk, "after": min(after, MAX_SEQ), "limit": limit}

        def work(conn: Connection) -> list[StoredEvent]:
            rows = conn.execute(_READ_EVENTS, params).all()
            return [StoredEvent(seq=r.seq, ts=r.ts, kind=r.kind, data=r.data) for r in rows]

        return await self._read(work)

    async def read_events_before(
        self, task_pk: int, before: int, limit: int = 500, *, after: int = 0
    ) -> list[StoredEvent]:
        """The ``limit`` stored events with the largest seqs below ``before`` (and above
        ``after``), in ascending seq order: one page backwards through a task's log.

        Args:
            task_pk: The task's internal key.
            before: Only events with ``seq < before``.
            limit: At most this many events (the ones nearest to ``before``).
            after: Only events with ``seq > after`` (0: from the first event).
        """
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(events.c.seq, events.c.ts, events.c.kind, events.c.data)
                    .where(
                        events.c.task_pk == task_pk,
                        events.c.seq < min(before, MAX_SEQ),
                        events.c.seq > min(after, MAX_SEQ),
                    )
                    .order_by(events.c.seq.desc())
                    .limit(limit)
                )
            ).all()
        return [StoredEvent(seq=r.seq, ts=r.ts, kind=r.kind, data=r.data) for r in reversed(rows)]

    # ---------------------------------------------------------------- workers

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
            "workdir_roots": _dumps(hello.workdir_roots),
            "max_tasks": hello.max_tasks,
            "labels": _dumps(sorted(set(hello.labels))),
            "connected_at": now,
            "last_seen_at": now,
        }
        async with self._write() as conn:
            if worker_id is not None:
                result = await conn.execute(
                    update(workers)
                    .where(
                        workers.c.id == worker_id,
                        workers.c.owner_id == owner.id,
                        workers.c.revoked_at.is_(None),
                    )
                    .values(values)
                )
                if result.rowcount != 1:
                    raise NotFound(f"no worker {worker_id}")
            else:
                existing = await conn.scalar(
                    select(workers.c.id).where(
                        workers.c.owner_id == owner.id, workers.c.name == hello.name
                    )
                )
                if existing:
                    worker_id = str(existing)
                    await conn.execute(
                        update(workers)
                        .where(workers.c.id == worker_id)
                        .values({**values, "revoked_at": None})
                    )
                else:
                    worker_id = _new_id()
                    await conn.execute(
                        insert(workers).values(
                            id=worker_id, owner_id=owner.id, name=hello.name, **values
                        )
                    )
            await self._audit(
                conn,
                "worker.connect",
                owner.id,
                f"worker:{worker_id}",
                {"name": hello.name, "hostname": hello.hostname, "codex": hello.codex_version},
            )
            row = (await conn.execute(select(workers).where(workers.c.id == worker_id))).one()
        return _worker_from_row(row, ttl_s=self.lease_ttl_s)

    async def set_worker_danger(self, owner: User, name: str, allow: bool) -> Worker:
        """Mark (or unmark) the owner's worker ``name`` as allowed to run ``danger-full-access``
        tasks (an admin's decision, reliability.md S6). Raises NotFound."""
        async with self._write() as conn:
            row = (
                await conn.execute(
                    update(workers)
                    .where(
                        workers.c.owner_id == owner.id,
                        workers.c.name == name,
                        workers.c.revoked_at.is_(None),
                    )
                    .values(allow_danger=allow)
                    .returning(workers)
                )
            ).first()
            if row is None:
                raise NotFound(f"user {owner.name} has no worker named {name!r}")
            await self._audit(
                conn, "worker.allow_danger", owner.id, f"worker:{row.id}", {"allow": allow}
            )
        return _worker_from_row(row, ttl_s=self.lease_ttl_s)

    async def get_worker(self, owner: User, worker_id: str) -> Worker:
        """One of the owner's (not revoked) workers. Raises NotFound."""
        async with self.engine.connect() as conn:
            row = await self._worker_row(conn, owner.id, worker_id)
        return _worker_from_row(row, ttl_s=self.lease_ttl_s)

    async def _worker_row(self, conn: AsyncConnection, owner_id: str, worker_id: str) -> Row[Any]:
        return await conn.run_sync(_worker_row_sync, owner_id, worker_id)

    async def list_workers(self, owner: User) -> list[Worker]:
        """The owner's workers (not revoked), by name, with online state and running count."""
        running = (
            select(func.count())
            .where(tasks.c.worker_id == workers.c.id, tasks.c.status == TaskStatus.RUNNING.value)
            .scalar_subquery()
        )
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(workers, running.label("running_count"))
                    .where(workers.c.owner_id == owner.id, workers.c.revoked_at.is_(None))
                    .order_by(workers.c.name)
                )
            ).all()
        return [
            _worker_from_row(r, ttl_s=self.lease_ttl_s, running=int(r.running_count)) for r in rows
        ]

    async def worker_by_name(self, owner: User, name: str) -> Worker | None:
        """The owner's (not revoked) worker called ``name``, if any."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(workers).where(
                        workers.c.owner_id == owner.id,
                        workers.c.name == name,
                        workers.c.revoked_at.is_(None),
                    )
                )
            ).first()
        return _worker_from_row(row, ttl_s=self.lease_ttl_s) if row else None

    async def workdir_roots(self, owner: User) -> list[str]:
        """The union of the workdir roots the owner's workers reported."""
        roots: list[str] = []
        for worker in await self.list_workers(owner):
            roots += [root for root in worker.workdir_roots if root not in roots]
        return roots

    # ---------------------------------------------------------------- pairing and revocation

    async def create_pairing_code(self, owner: User, ttl_s: float = 600.0) -> tuple[str, datetime]:
        """A new single-use pairing code for ``owner``; returns it (shown once) and its expiry."""
        code = new_pairing_code()
        now = utcnow()
        expires = now + timedelta(seconds=ttl_s)
        async with self._write() as conn:
            result = await conn.execute(
                insert(pairing_codes).values(
                    owner_id=owner.id,
                    code_hash=hash_token(normalise_pairing_code(code)),
                    created_at=now,
                    expires_at=expires,
                )
            )
            await self._audit(
                conn,
                "pairing.create",
                owner.id,
                f"pairing-code:{_inserted_pk(result)}",
                {"expires_at": expires.isoformat()},
            )
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
        async with self._write() as conn:
            code_row = (
                await conn.execute(
                    select(pairing_codes.c.id, pairing_codes.c.owner_id).where(
                        pairing_codes.c.code_hash == code_hash
                    )
                )
            ).first()
            owner_id = code_row.owner_id if code_row else None
            worker_id = _new_id()
            claimed = await conn.execute(
                update(pairing_codes)
                .where(
                    pairing_codes.c.code_hash == code_hash,
                    pairing_codes.c.used_at.is_(None),
                    pairing_codes.c.expires_at > now,
                )
                .values(used_at=now, worker_id=worker_id)
            )
            if owner_id is None or claimed.rowcount != 1:
                raise PairingError("invalid, used or expired pairing code")
            owner_row = (
                await conn.execute(select(users.c.id, users.c.name).where(users.c.id == owner_id))
            ).one()
            existing = await conn.scalar(
                select(workers.c.id).where(
                    workers.c.owner_id == owner_id, workers.c.name == request.name
                )
            )
            values = {
                "hostname": request.hostname,
                "labels": _dumps(sorted(set(request.labels))),
                "connected_at": now,
                # Not seen yet: it shows offline until its process connects.
                "last_seen_at": now - timedelta(seconds=self.lease_ttl_s),
                "revoked_at": None,
            }
            if existing:
                worker_id = str(existing)
                await conn.execute(
                    update(tokens)
                    .where(tokens.c.worker_id == worker_id, tokens.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                await conn.execute(update(workers).where(workers.c.id == worker_id).values(values))
                await conn.execute(
                    update(pairing_codes)
                    .where(pairing_codes.c.code_hash == code_hash)
                    .values(worker_id=worker_id)
                )
            else:
                await conn.execute(
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
            token_id = await self._insert_token(conn, owner_id, token, "worker", worker_id)
            await self._audit(
                conn,
                "pairing.redeem",
                owner_id,
                f"worker:{worker_id}",
                {
                    "worker": request.name,
                    "pairing_code": f"pairing-code:{code_row.id}" if code_row else None,
                    "token": f"token:{token_id}",
                },
                actor=f"worker:{worker_id}",
            )
            row = (await conn.execute(select(workers).where(workers.c.id == worker_id))).one()
        owner = User(id=owner_row.id, name=owner_row.name)
        return owner, _worker_from_row(row, ttl_s=self.lease_ttl_s), token

    async def revoke_worker(self, owner: User, worker_id: str) -> list[int]:
        """Revoke a worker: its tokens stop working at once and its running tasks end ``lost``.

        Returns:
            The internal keys of the tasks that ended (to wake their streams).

        Raises:
            NotFound: not one of the owner's workers.
        """
        now = utcnow()
        async with self._write() as conn:
            result = await conn.execute(
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
            await conn.execute(
                update(tokens)
                .where(tokens.c.worker_id == worker_id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            self._known.clear()
            rows = (
                await conn.execute(
                    select(tasks.c.pk, tasks.c.last_seq).where(
                        tasks.c.worker_id == worker_id,
                        tasks.c.status == TaskStatus.RUNNING.value,
                    )
                )
            ).all()
            await self._audit(conn, "worker.revoke", owner.id, f"worker:{worker_id}")
            ended = [
                int(row.pk)
                for row in rows
                if await self._end_lost(conn, row.pk, "its worker was revoked", now)
            ]
        return ended

    async def end_previous_runs(self, owner: User, worker: Worker) -> list[int]:
        """End ``lost`` the tasks still running under ``worker`` when it (re)connects.

        A worker connects once per process start, with no task running; tasks the server still
        has running under its id belonged to its previous process (killed, say, and restarted
        before its lease expired). Nobody supervises them any more, and they are never re-run,
        so they end now instead of staying ``running`` behind a worker that heartbeats again.

        Returns:
            The internal keys of the tasks that ended (to wake their streams).
        """
        now = utcnow()
        reason = f"worker {worker.name} restarted; the run it had was lost with its old process"
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    select(tasks.c.pk, tasks.c.last_seq).where(
                        tasks.c.owner_id == owner.id,
                        tasks.c.worker_id == worker.id,
                        tasks.c.status == TaskStatus.RUNNING.value,
                    )
                )
            ).all()
            ended = [int(row.pk) for row in rows if await self._end_lost(conn, row.pk, reason, now)]
        return ended

    async def _end_lost(
        self, conn: AsyncConnection, task_pk: int, reason: str, now: datetime
    ) -> bool:
        """End a running task ``lost`` with its terminal event and an audit row; False when it
        is no longer running (another replica's sweep, or its worker, got there first: the
        conditional update waits for their row lock and then matches nothing, R6)."""
        ended = (
            await conn.execute(
                update(tasks)
                .where(tasks.c.pk == task_pk, tasks.c.status == TaskStatus.RUNNING.value)
                .values(status=TaskStatus.LOST.value, finished_at=now, error=reason, lease_id=None)
                .returning(tasks.c.id, tasks.c.owner_id, tasks.c.last_seq, tasks.c.worker_id)
            )
        ).first()
        if ended is None:
            return False
        await self._append_status(
            conn, task_pk, ended.last_seq, {"status": TaskStatus.LOST.value, "reason": reason}, now
        )
        await self._audit(
            conn,
            "task.lease_lost",
            ended.owner_id,
            f"task:{ended.id}",
            {"worker_id": ended.worker_id, "reason": reason},
        )
        return True

    async def sweep_lost(self) -> list[tuple[int, str]]:
        """End ``lost`` every running task whose worker was not heard from within the lease
        TTL (reliability.md R2); such tasks are never re-run on their own.

        Returns:
            ``(task_pk, owner_id)`` of each task that ended.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=self.lease_ttl_s)
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    select(tasks.c.pk, tasks.c.last_seq, tasks.c.owner_id, workers.c.name)
                    .select_from(tasks.join(workers, workers.c.id == tasks.c.worker_id))
                    .where(
                        tasks.c.status == TaskStatus.RUNNING.value,
                        workers.c.last_seen_at < cutoff,
                    )
                )
            ).all()
            ended = []
            for row in rows:
                reason = (
                    f"worker {row.name} stopped responding "
                    f"(no heartbeat for {self.lease_ttl_s:g} s)"
                )
                if await self._end_lost(conn, row.pk, reason, now):
                    ended.append((int(row.pk), str(row.owner_id)))
        return ended

    async def touch_worker(self, worker_id: str) -> None:
        """Record that the worker was just heard from."""
        async with self._write() as conn:
            await conn.execute(
                update(workers).where(workers.c.id == worker_id).values(last_seen_at=utcnow())
            )

    async def claim(self, owner: User, worker: Worker) -> Claim | None:
        """Atomically take the owner's oldest queued task for ``worker``, or None.

        The task becomes ``running`` with a fresh lease id; a ``status: running`` event is
        appended. Only tasks of the worker's owner are ever considered (R7), and of those only
        the ones routed to this worker by name, or to none, whose labels it all carries.
        """
        now = utcnow()
        lease_id = secrets.token_hex(16)
        async with self._write() as conn:
            query = (
                select(
                    tasks.c.pk,
                    tasks.c.id,
                    tasks.c.last_seq,
                    tasks.c.target_worker,
                    tasks.c.labels,
                    tasks.c.created_at,
                )
                .where(
                    tasks.c.owner_id == owner.id,
                    tasks.c.status == TaskStatus.QUEUED.value,
                    or_(tasks.c.target_worker.is_(None), tasks.c.target_worker == worker.name),
                )
                .order_by(tasks.c.pk)
                .limit(CLAIM_SCAN)
            )
            if not worker.allow_danger:
                query = query.where(tasks.c.sandbox != Sandbox.DANGER_FULL_ACCESS.value)
            have = set(worker.labels)
            fits = [
                r for r in (await conn.execute(query)).all() if set(json.loads(r.labels)) <= have
            ]
            row = fits[0] if fits else None
            if fits and not self._sqlite:
                # Lock only the oldest fitting task no concurrent claim holds: locking every
                # candidate would tell the other claims "nothing queued" meanwhile (R8).
                locking = query.where(tasks.c.pk.in_([r.pk for r in fits])).limit(1)
                row = (await conn.execute(locking.with_for_update(skip_locked=True))).first()
            if row is None:
                return None
            result = await conn.execute(
                update(tasks)
                .where(tasks.c.pk == row.pk, tasks.c.status == TaskStatus.QUEUED.value)
                .values(
                    status=TaskStatus.RUNNING.value,
                    started_at=now,
                    worker_id=worker.id,
                    worker_name=worker.name,
                    lease_id=lease_id,
                )
            )
            if result.rowcount != 1:
                return None
            await self._append_status(
                conn,
                row.pk,
                row.last_seq,
                {"status": "running", "worker_id": worker.id, "worker": worker.name},
                now,
            )
            await self._audit(
                conn,
                "task.claim",
                owner.id,
                f"task:{row.id}",
                {
                    "worker_id": worker.id,
                    "waited_s": round((now - row.created_at).total_seconds(), 3),
                },
            )
            task_row = (await conn.execute(select(tasks).where(tasks.c.pk == row.pk))).one()
        return Claim(task=_task_from_row(task_row), lease_id=lease_id)

    async def append_events(
        self, owner: User, worker_id: str, task_id: str, batch: EventBatch
    ) -> Appended:
        """Append a worker's batch idempotently by index (R4), in one transaction.

        Events past ``max_event_bytes`` are cut (policy.truncate_event); past
        ``max_events_per_task`` they are dropped, once with a marker status event and a
        cancel request.

        Returns:
            The upload result, the task's internal key (for notifying subscribers) and how
            many of the batch's events were new (for metrics).

        Raises:
            NotFound: unknown task. LeaseLost: not this worker's lease, or the task ended.
            Conflict: the batch starts past the next expected index (``next_index`` set).
        """
        lock = not self._sqlite

        def work(conn: Connection) -> Appended:
            row = _leased_row_sync(conn, owner.id, worker_id, task_id, batch.lease_id, lock=lock)
            return self._append(conn, row, owner.id, task_id, batch)

        return await self._txn(work)

    async def append_events_by_token(
        self, token: str, worker_id: str, task_id: str, batch: EventBatch
    ) -> tuple[Principal, Appended] | None:
        """:meth:`append_events` for the bearer of ``token``, checking the token, the worker
        and the lease in the same statement that reads the task row: the upload route's one
        read per batch (a revoked token fails on its next upload, as on any route).

        Returns:
            Who the token speaks for and what was appended; None when the token is unknown or
            revoked, or its owner has no task ``task_id`` (the caller tells which apart).

        Raises:
            NotFound: a worker token used for another worker. LeaseLost, Conflict: as
            :meth:`append_events`.
        """
        query = _UPLOAD_ROW if self._sqlite else _UPLOAD_ROW_LOCKED
        params = {"token_hash": hash_token(token), "task_id": task_id}

        def work(conn: Connection) -> tuple[Principal, Appended] | None:
            row = conn.execute(query, params).first()
            if row is None:
                return None
            principal = Principal(
                User(id=row.owner_id, name=row.owner_name),
                kind=row.token_kind,
                worker_id=row.token_worker,
            )
            if principal.kind == "worker" and principal.worker_id != worker_id:
                raise NotFound(f"no worker {worker_id}")
            try:
                if row.worker_id != worker_id or row.lease_id != batch.lease_id:
                    raise LeaseLost("this worker does not hold the task's lease")
                return principal, self._append(conn, row, row.owner_id, task_id, batch)
            except Conflict:
                # A user token names the worker it acts as: one that is not the owner's (or
                # was revoked) is a 404, as on every worker route, before any lease answer.
                _worker_row_sync(conn, row.owner_id, worker_id)
                raise

        return await self._txn(work)

    def _append(
        self, conn: Connection, row: Row[Any], owner_id: str, task_id: str, batch: EventBatch
    ) -> Appended:
        """The body of an append, in the caller's transaction (:meth:`_txn`), on the leased
        task ``row``."""
        if TaskStatus(row.status).is_terminal:
            raise LeaseLost(f"task {task_id} already ended {row.status}")
        expected = int(row.upload_next)
        if batch.first_index > expected:
            raise Conflict(
                f"gap: batch starts at {batch.first_index}, expected {expected}",
                next_index=expected,
            )
        fresh = batch.events[expected - batch.first_index :]
        seq = int(row.last_seq)
        # Room under the per-task cap, keeping one seq for the marker (status events
        # written by the server later may pass the cap: a task must be able to end).
        room = max(0, self.max_events_per_task - 1 - seq)
        kept = fresh[:room] if seq < self.max_events_per_task else []
        rows = []
        stored: list[StoredEvent] = []
        for item in kept:
            seq += 1
            text = encode_event(item.data, self.max_event_bytes)
            rows.append(
                {
                    "task_pk": row.pk,
                    "seq": seq,
                    "ts": item.ts,
                    "kind": item.kind.value,
                    "data": text,
                }
            )
            # As the row reads back: a UTC timestamp (the column keeps microseconds).
            stored.append(StoredEvent(seq, item.ts.astimezone(UTC), item.kind.value, text))
        if rows:
            conn.execute(_INSERT_EVENTS, rows)
        values: dict[str, Any] = {
            "last_seq": seq,
            "upload_next": expected + len(fresh),
        }
        capped = len(kept) < len(fresh) and int(row.last_seq) < self.max_events_per_task
        if capped:
            reason = (
                f"the task reached this server's cap of {self.max_events_per_task} events "
                "(CODEX_TUI_SERVER_MAX_EVENTS_PER_TASK); later events are dropped and the "
                "task is cancelled"
            )
            marker = {"status": "running", "cancel_requested": True, "reason": reason}
            now = utcnow()
            seq = _append_status_sync(conn, row.pk, seq, marker, now)
            stored.append(StoredEvent(seq, now, EventKind.STATUS.value, _dumps(marker)))
            values["last_seq"] = seq
            values["cancel_requested"] = True
            self._audit_sync(
                conn,
                "task.event_cap",
                owner_id,
                f"task:{task_id}",
                {"cap": self.max_events_per_task, "dropped": len(fresh) - len(kept)},
            )
        if batch.thread_id and not row.thread_id:
            values["thread_id"] = batch.thread_id
        if len(values) == 2:  # the usual case, one prepared statement
            advance = {"b_pk": row.pk, "b_last_seq": seq, "b_upload_next": values["upload_next"]}
            conn.execute(_ADVANCE, advance)
        else:
            conn.execute(update(tasks).where(tasks.c.pk == row.pk).values(values))
        result = UploadResult(
            next_index=expected + len(fresh),
            cancel_requested=bool(row.cancel_requested) or capped,
        )
        return Appended(result, int(row.pk), len(fresh), stored)

    async def finish(
        self, owner: User, worker_id: str, task_id: str, body: FinishRequest
    ) -> tuple[Task, bool]:
        """End a task with the worker's verdict; idempotent for the lease holder (R6).

        Returns:
            The task and whether this call ended it.

        Raises:
            NotFound, LeaseLost, or Conflict (with ``next_index``) when events are missing.
        """
        now = utcnow()
        lock = not self._sqlite

        def work(conn: Connection) -> tuple[Task, bool]:
            row = _leased_row_sync(conn, owner.id, worker_id, task_id, body.lease_id, lock=lock)
            if TaskStatus(row.status).is_terminal:
                return _task_from_row(row), False
            if body.event_count != row.upload_next:
                raise Conflict(
                    f"finish says {body.event_count} events, the server has {row.upload_next}",
                    next_index=int(row.upload_next),
                )
            conn.execute(
                update(tasks)
                .where(tasks.c.pk == row.pk)
                .values(
                    status=body.status.value,
                    finished_at=now,
                    exit_code=body.exit_code,
                    error=body.error,
                    thread_id=body.thread_id or row.thread_id,
                )
            )
            data: dict[str, Any] = {"status": body.status.value}
            if body.exit_code is not None:
                data["exit_code"] = body.exit_code
            if body.error:
                data["reason"] = body.error
            _append_status_sync(conn, row.pk, row.last_seq, data, now)
            self._audit_sync(
                conn,
                "task.finish",
                owner.id,
                f"task:{task_id}",
                {"status": body.status.value, "exit_code": body.exit_code, "worker_id": worker_id},
            )
            new = conn.execute(select(tasks).where(tasks.c.pk == row.pk)).one()
            return _task_from_row(new), True

        return await self._txn(work)

    async def tasks_to_stop(
        self, owner: User, worker_id: str, task_ids: Sequence[str]
    ) -> list[str]:
        """Which of the ``task_ids`` a worker runs it must stop: those with a cancel request,
        and those it no longer holds (ended ``lost``, or not its task at all)."""
        if not task_ids:
            return []
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        tasks.c.id, tasks.c.status, tasks.c.worker_id, tasks.c.cancel_requested
                    ).where(tasks.c.owner_id == owner.id, tasks.c.id.in_(list(task_ids)))
                )
            ).all()
        held = {
            r.id
            for r in rows
            if r.worker_id == worker_id
            and r.status == TaskStatus.RUNNING.value
            and not r.cancel_requested
        }
        return [task_id for task_id in task_ids if task_id not in held]
