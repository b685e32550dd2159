"""Provides in-process wake-ups: SSE streams, claim and signal long polls wait on keys.

A waiter takes :meth:`Hub.current` *before* it reads the store and awaits it after, so a
write that lands between the read and the wait still wakes it (no lost wake-up). Waking is
only a hint to look at the store again; the store is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib


class Hub:
    """Keyed one-shot notifications. Keys are strings such as ``task:<pk>``."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._closing: asyncio.Event | None = None

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
        """Wake everyone waiting on ``key``."""
        event = self._events.pop(key, None)
        if event is not None:
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
