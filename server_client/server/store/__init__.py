"""Provides the task store: users, tokens, workers, tasks, their append-only event logs,
pairing codes and the audit log, as one :class:`Store`.

Every method scopes by owner: a task or worker of another owner is reported exactly like one
that does not exist (:class:`NotFound`), so ids never leak. Each aggregate is a module of this
package (``auth``, ``tasks``, ``events``, ``workers``, ``leases``, ``conversations``,
``approvals``, ``workspaces``, ``uploads``, ``pairing``, ``audit``)
adding its methods to :class:`Store`; all of them reach the database one way, through the
transaction runner of ``runner``.
"""

from __future__ import annotations

from server_client.server.store.approvals import ApprovalStore
from server_client.server.store.audit import AuditStore
from server_client.server.store.auth import KNOWN_TOKENS, AuthStore, hash_token, new_token
from server_client.server.store.conversations import ConversationStore
from server_client.server.store.events import MAX_SEQ, EventStore
from server_client.server.store.leases import CLAIM_SCAN, LeaseStore
from server_client.server.store.pairing import (
    PAIRING_ALPHABET,
    PairingStore,
    new_pairing_code,
    normalise_pairing_code,
)
from server_client.server.store.records import (
    Appended,
    AuditEntry,
    Conflict,
    Invalid,
    LeaseLost,
    NotFound,
    PairingError,
    Principal,
    StoredEvent,
    StoreError,
    TokenInfo,
    User,
)
from server_client.server.store.tasks import MAX_PK, TaskStore, decode_cursor, encode_cursor
from server_client.server.store.uploads import TokenRevoked, UploadOutcome, UploadStore
from server_client.server.store.workers import WorkerStore
from server_client.server.store.workspaces import WorkspaceStore

__all__ = [
    "CLAIM_SCAN",
    "KNOWN_TOKENS",
    "MAX_PK",
    "MAX_SEQ",
    "PAIRING_ALPHABET",
    "Appended",
    "AuditEntry",
    "Conflict",
    "Invalid",
    "LeaseLost",
    "NotFound",
    "PairingError",
    "Principal",
    "Store",
    "StoreError",
    "StoredEvent",
    "TokenInfo",
    "TokenRevoked",
    "UploadOutcome",
    "User",
    "decode_cursor",
    "encode_cursor",
    "hash_token",
    "new_pairing_code",
    "new_token",
    "normalise_pairing_code",
]


class Store(
    AuthStore,
    TaskStore,
    UploadStore,
    EventStore,
    WorkerStore,
    LeaseStore,
    ConversationStore,
    ApprovalStore,
    WorkspaceStore,
    PairingStore,
    AuditStore,
):
    """All persistent state, over an async SQLAlchemy engine (SQLite or PostgreSQL).

    Constructed as ``Store(engine, lease_ttl_s=..., max_event_bytes=...,
    max_events_per_task=...)`` (see :class:`~server_client.server.store.runner.BaseStore`);
    ``aclose()`` it before disposing the engine.
    """
