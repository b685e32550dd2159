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

    def current(self, key: str) -> asyncio.Event:
        """The event the next :meth:`notify` of ``key`` will set."""
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        return event

    def notify(self, key: str) -> None:
        """Wake everyone waiting on ``key``."""
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

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
