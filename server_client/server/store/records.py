"""Provides the store's errors and the records it returns (users, principals, stored events,
audit rows, token records, append results)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from server_client.models import TERMINAL_STATUSES, EventKind, UploadResult


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


class Invalid(StoreError):
    """The request does not fit the stored object (400), e.g. an answer codex did not offer."""


class LeaseLost(Conflict):
    """The worker's lease on the task is gone (another claim, or the task ended)."""


class PairingError(StoreError):
    """The pairing code is unknown, already used or expired (one message for all three)."""


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


@dataclass(frozen=True)
class StoredEvent:
    """One event row; ``data`` is the JSON text exactly as stored."""

    seq: int
    ts: datetime
    kind: str
    data: str

    def envelope_json(self) -> str:
        """The wire envelope ``{"seq","ts","kind","data"}`` as JSON text, the stored ``data``
        spliced in as it is (never parsed or encoded again)."""
        ts = self.ts.isoformat().replace("+00:00", "Z")
        return f'{{"seq":{self.seq},"ts":"{ts}","kind":"{self.kind}","data":{self.data}}}'

    def sse_frame(self) -> bytes:
        """The event as one Server-Sent Events message of a task's stream: ``id:`` the seq,
        ``data:`` the envelope (compact JSON has no line break, so it is one ``data:`` line;
        the separators are sse-starlette's CRLF). Made per send, not kept: the hub's tail
        holds events by count, and a kept copy would double what each costs."""
        return b"id: %d\r\ndata: %s\r\n\r\n" % (self.seq, self.envelope_json().encode())

    def sse_frame_of(self, task_id: str) -> bytes:
        """The event as a message of a stream following many tasks: ``id:`` is
        ``<task_id>:<seq>`` and the envelope carries ``task_id`` first."""
        return b'id: %s:%d\r\ndata: {"task_id":"%s",%s\r\n\r\n' % (
            task_id.encode(),
            self.seq,
            task_id.encode(),
            self.envelope_json()[1:].encode(),
        )

    @functools.cached_property
    def is_terminal(self) -> bool:
        """True for the status event that ends a task."""
        if self.kind != EventKind.STATUS:
            return False
        return json.loads(self.data).get("status") in TERMINAL_STATUSES


class Appended(NamedTuple):
    """What :meth:`Store.append_events` did: ``result`` (the worker's answer), ``task_pk``
    (the task's internal key, for event reads), ``fresh`` (events of the batch the store had
    not seen, stored or dropped by the cap) and ``events`` (the rows it committed, in seq
    order, for this process's streams)."""

    result: UploadResult
    task_pk: int
    fresh: int
    events: list[StoredEvent]


@dataclass(frozen=True)
class AuditEntry:
    """One audit row (docs/reliability.md S9).

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
