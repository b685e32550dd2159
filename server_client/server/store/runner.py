"""Provides the store's one transaction runner (:class:`BaseStore`) and the helpers its work
functions share.

Every query of the store is written one way: a method builds a *work function*, plain
SQLAlchemy Core on a synchronous :class:`~sqlalchemy.Connection` (``work(conn) -> result``),
and hands it to :meth:`BaseStore._txn` (one write transaction) or :meth:`BaseStore._read` (one
read connection). Helpers that several aggregates need inside a transaction (an audit row, a
status event) are therefore plain functions of a connection, written once.

- SQLite, in a file: the work runs as plain sqlite3 in a worker thread, one thread hop per
  transaction, on a second (sync) engine on the same file (server_client.server.db
  ``sqlite_sync_twin``) instead of a hop per driver call through aiosqlite: about 5x less CPU
  per event upload, the server's hot path (benchmarks/). SQLite allows one writer at a time;
  writes of this process are serialised by an ``asyncio.Lock``, so concurrent requests queue
  instead of failing with "database is locked".
- PostgreSQL, and an in-memory SQLite database (which a second engine would not share): the
  same work runs on a connection of the async engine through ``run_sync``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from server_client.server.db import sqlite_sync_twin
from server_client.server.store.records import Principal

T = TypeVar("T")


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return work(conn)


def _on_connection(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        return work(conn)


def new_id(length: int = 12) -> str:
    """A new random hex id of ``length`` characters (tasks, users, workers)."""
    return secrets.token_hex(length // 2)


def dumps(value: Any) -> str:
    """``value`` as compact JSON text, as the store keeps JSON columns."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def inserted_pk(result: Any) -> int:
    """The primary key an ``insert`` just assigned."""
    inserted = result.inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


class BaseStore:
    """The store's state and its transaction runner; each aggregate of
    :class:`~server_client.server.store.Store` is a subclass adding its methods.

    Args:
        engine: The async engine (SQLite or PostgreSQL), migrated; the caller disposes it.
        lease_ttl_s: A worker not heard from for this long (s) loses its leases.
        max_event_bytes: Largest stored event (encoded JSON bytes); longer ones are cut.
        max_events_per_task: Events stored per task; past it the task is cancelled.
    """

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
        #: Whether reads that precede an update take the row lock (PostgreSQL; SQLite's writes
        #: are serialised in-process instead).
        self._lock_rows = not self._sqlite
        self._write_lock = asyncio.Lock()
        #: Recently valid tokens by hash (server_client.server.store.auth).
        self._known: OrderedDict[str, Principal] = OrderedDict()
        self._sync_engine = sqlite_sync_twin(engine) if self._sqlite else None

    async def _txn(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction and return its result; its exceptions roll
        the transaction back and propagate. Serialised with the other writes of this process
        on SQLite."""
        if self._sync_engine is not None:
            async with self._write_lock:
                return await asyncio.to_thread(_in_transaction, self._sync_engine, work)
        if self._sqlite:
            async with self._write_lock, self.engine.begin() as conn:
                return await conn.run_sync(work)
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
