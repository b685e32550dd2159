"""Provides in-process wake-ups: SSE streams, claim and signal long polls wait on keys.

A waiter takes :meth:`Hub.current` *before* it reads the store and awaits it after, so a
write that lands between the read and the wait still wakes it (no lost wake-up). Waking is
only a hint to look at the store again; the store is the truth.

Events a process has just committed are also kept, briefly, in a bounded in-memory *tail* per
watched key (:meth:`Hub.publish`), so the SSE streams of this process take them from memory
instead of reading each one back from the store. A stream uses the tail only when it continues
exactly where the stream stands (seqs are contiguous per task); anything else, e.g. events
written by another process or a status event written without the tail, is read from the store.

With several server processes on one PostgreSQL database a relay
(server_client.server.pgnotify) carries every :meth:`Hub.notify` to the other processes, whose
hubs then :meth:`Hub.wake` their own waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server_client.server.store import StoredEvent

#: Most events kept in memory per watched key (a stream further behind reads the store).
TAIL_EVENTS = 1024


class Watch:
    """A waiter's hold on one key (from :meth:`Hub.watch`): the event to wait on and the
    key's in-memory tail."""

    def __init__(self, hub: Hub, key: str) -> None:
        self._hub = hub
        self.key = key

    def current(self) -> asyncio.Event:
        """The event the next notify of this key sets (take it *before* reading)."""
        return self._hub.current(self.key)

    def tail(self, after: int) -> list[StoredEvent] | None:
        """The events with ``seq > after`` this process committed, when the tail continues
        right after ``after``; None means "read the store" (see :meth:`Hub.tail`)."""
        return self._hub.tail(self.key, after)


class MultiWatch:
    """A waiter's hold on several keys at once (from :meth:`Hub.watch_many`): one event that
    any of them sets, and which of them woke since the waiter last looked.

    The waiter calls :meth:`take_woken` (which also clears :attr:`event`) *before* it reads
    the store for those keys, and waits on :attr:`event` after, so a write landing between
    the read and the wait still wakes it; only the keys that woke need reading again.
    """

    def __init__(self, hub: Hub, keys: Sequence[str]) -> None:
        self._hub = hub
        self.keys = list(keys)
        self.event = asyncio.Event()
        self._woken: set[str] = set(self.keys)  # everything is read the first time

    def woke(self, key: str) -> None:
        """Mark ``key`` as woken (the hub calls this)."""
        self._woken.add(key)
        self.event.set()

    def take_woken(self) -> set[str]:
        """The keys woken since the last call (all of them the first time); clears
        :attr:`event`."""
        self.event.clear()
        woken, self._woken = self._woken, set()
        return woken

    def tail(self, key: str, after: int) -> list[StoredEvent] | None:
        """As :meth:`Watch.tail`, for one of the keys."""
        return self._hub.tail(key, after)


class Hub:
    """Keyed one-shot notifications. Keys are strings such as ``task:<id>`` (:func:`task_key`)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._multi: dict[str, set[MultiWatch]] = {}
        self._watchers: dict[str, int] = {}
        self._tails: dict[str, deque[StoredEvent]] = {}
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
        """Wake every waiter for good (server shutdown, docs/reliability.md E5)."""
        if self._closing is None:
            self._closing = asyncio.Event()
        self._closing.set()
        for event in self._events.values():
            event.set()
        self._events.clear()
        for key, watches in self._multi.items():
            for watch in watches:
                watch.woke(key)

    def notify(self, key: str) -> None:
        """Wake everyone waiting on ``key``, here at once and, through the relay if one is
        set, in every other server process (call it after the write committed)."""
        self.wake(key)
        if self._relay is not None:
            self._relay(key)

    def publish(self, key: str, events: Sequence[StoredEvent]) -> None:
        r""":meth:`notify` ``key`` after ``events`` (in seq order) were committed, keeping them
        in the key's tail while someone :meth:`watch`\ es it (at most :data:`TAIL_EVENTS`).

        A batch that does not continue the tail (a seq written meanwhile without it) starts
        it afresh, so a tail never has a hole.
        """
        if events and key in self._watchers:
            tail = self._tails.get(key)
            if tail is None:
                tail = self._tails[key] = deque(maxlen=TAIL_EVENTS)
            elif tail and tail[-1].seq + 1 != events[0].seq:
                tail.clear()
            tail.extend(events)
        self.notify(key)

    def tail(self, key: str, after: int) -> list[StoredEvent] | None:
        """The events of ``key``'s tail with ``seq > after``, or None when the tail does not
        continue right after ``after`` (empty, starts later, or has nothing newer): the caller
        then reads the store, which may hold events other processes wrote."""
        tail = self._tails.get(key)
        if not tail or tail[0].seq > after + 1 or tail[-1].seq <= after:
            return None
        return list(itertools.islice(tail, after + 1 - tail[0].seq, None))

    def wake(self, key: str) -> None:
        """Wake this process's waiters on ``key`` only (a notification from another process)."""
        event = self._events.pop(key, None)
        if event is not None:
            event.set()
        watches = self._multi.get(key)
        if watches:
            for watch in watches:
                watch.woke(key)

    def wake_all(self) -> None:
        """Wake every waiter of this process once; each re-reads the store and waits again.

        For when notifications may have been missed (the relay's connection was lost).
        """
        pending, self._events = self._events, {}
        for event in pending.values():
            event.set()
        for key, watches in self._multi.items():
            for watch in watches:
                watch.woke(key)

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
    def watch(self, key: str) -> Iterator[Watch]:
        """Hold ``key`` for the span of the ``with`` block, for waiters that may stop at any
        time (SSE streams): take :meth:`Watch.current` before each read of the store and wait
        on it after; :meth:`Watch.tail` has what this process committed meanwhile. When the
        last watcher of ``key`` leaves, the key and its tail are dropped, so streams that
        ended, e.g. those of a finished task, which is never notified again, leave nothing
        behind (docs/reliability.md E4). Use a key either only through ``watch`` or only through
        :meth:`current`."""
        self._hold(key)
        try:
            yield Watch(self, key)
        finally:
            self._release(key)

    @contextlib.contextmanager
    def watch_many(self, keys: Sequence[str]) -> Iterator[MultiWatch]:
        """Hold every one of ``keys`` for the span of the ``with`` block, as :meth:`watch`
        holds one (their tails are kept), with one event for all of them: a stream that
        follows many tasks waits on one event, and learns which tasks woke (issue 14)."""
        multi = MultiWatch(self, keys)
        for key in multi.keys:
            self._hold(key)
            self._multi.setdefault(key, set()).add(multi)
        if self.closing:
            multi.event.set()
        try:
            yield multi
        finally:
            for key in multi.keys:
                watches = self._multi[key]
                watches.discard(multi)
                if not watches:
                    del self._multi[key]
                self._release(key)

    def _hold(self, key: str) -> None:
        self._watchers[key] = self._watchers.get(key, 0) + 1

    def _release(self, key: str) -> None:
        """One watcher of ``key`` left; the last one drops the key and its tail."""
        left = self._watchers[key] - 1
        if left:
            self._watchers[key] = left
        else:
            del self._watchers[key]
            self._events.pop(key, None)
            self._tails.pop(key, None)

    @staticmethod
    async def wait(event: asyncio.Event, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for ``event``; True when it fired."""
        if timeout_s <= 0:
            return event.is_set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()
        return event.is_set()

    def __len__(self) -> int:
        return len(self._events)


def task_key(task_id: str) -> str:
    """Key woken when a task gets events (by its public id, which every route has at hand)."""
    return f"task:{task_id}"


def queue_key(owner_id: str) -> str:
    """Key woken when an owner gets a queued task."""
    return f"queue:{owner_id}"


def cancel_key(owner_id: str) -> str:
    """Key woken when one of an owner's workers has a signal to act on: a cancel request, an
    interrupt, a reply or an approval answer for a task it runs (its signals long poll)."""
    return f"cancel:{owner_id}"
