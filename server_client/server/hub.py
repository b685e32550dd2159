"""Provides in-process wake-ups: SSE streams, claim and signal long polls wait on keys.

A waiter takes :meth:`Hub.current` *before* it reads the store and awaits it after, so a
write that lands between the read and the wait still wakes it (no lost wake-up). Waking is
only a hint to look at the store again; the store is the truth.

With several server processes on one PostgreSQL database a relay
(server_client.server.pgnotify) carries every :meth:`Hub.notify` to the other processes, whose
hubs then :meth:`Hub.wake` their own waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator


class Hub:
    """Keyed one-shot notifications. Keys are strings such as ``task:<pk>``."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._watchers: dict[str, int] = {}
        self._closing: asyncio.Event | None = None
        self._relay: Callable[[str], None] | None = None

    def set_relay(self, relay: Callable[[str], None] | None) -> None:
        """Hand the key of every later :meth:`notify` also to ``relay`` (None: stop).

        ``relay`` must not block: it is called synchronously by writers right after their
        commit (e.g. :meth:`PgWakeRelay.publish`, which queues the key for other processes).
        """
        self._relay = relay

    @property
    def closing(self) -> bool:
        """True once the server began shutting down: long polls and streams return early."""
        return self._closing is not None and self._closing.is_set()

    def close(self) -> None:
        """Wake every waiter for good (server shutdown, reliability.md E5)."""
        if self._closing is None:
            self._closing = asyncio.Event()
        self._closing.set()
        for event in self._events.values():
            event.set()
        self._events.clear()

    def notify(self, key: str) -> None:
        """Wake everyone waiting on ``key``, here at once and, through the relay if one is
        set, in every other server process (call it after the write committed)."""
        self.wake(key)
        if self._relay is not None:
            self._relay(key)

    def wake(self, key: str) -> None:
        """Wake this process's waiters on ``key`` only (a notification from another process)."""
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        """Wake every waiter of this process once; each re-reads the store and waits again.

        For when notifications may have been missed (the relay's connection was lost).
        """
        pending, self._events = self._events, {}
        for event in pending.values():
            event.set()

    def current(self, key: str) -> asyncio.Event:
        """The event the next :meth:`notify` of ``key`` will set (already set when closing)."""
        if self.closing:
            fired = asyncio.Event()
            fired.set()
            return fired
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        return event

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Event]:
        """:meth:`current` for the span of the ``with`` block, for waiters that may stop at
        any time (SSE streams): when the last watcher of ``key`` leaves, the key is dropped,
        so streams that ended, e.g. those of a finished task, which is never notified again,
        leave no key behind (reliability.md E4). Use a key either only through ``watch`` or
        only through :meth:`current`."""
        event = self.current(key)
        self._watchers[key] = self._watchers.get(key, 0) + 1
        try:
            yield event
        finally:
            left = self._watchers[key] - 1
            if left:
                self._watchers[key] = left
            else:
                del self._watchers[key]
                self._events.pop(key, None)

    @staticmethod
    async def wait(event: asyncio.Event, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for ``event``; True when it fired."""
        if timeout_s <= 0:
            return event.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
        return event.is_set()

    def __len__(self) -> int:
        return len(self._events)


def task_key(task_pk: int) -> str:
    """Key woken when a task gets events."""
    return f"task:{task_pk}"


def queue_key(owner_id: str) -> str:
    """Key woken when an owner gets a queued task."""
    return f"queue:{owner_id}"


def cancel_key(owner_id: str) -> str:
    """Key woken when one of an owner's running tasks gets a cancel request."""
    return f"cancel:{owner_id}"
