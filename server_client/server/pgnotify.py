"""Provides wake-ups across server processes that share one PostgreSQL database (LISTEN/NOTIFY).

Each server process's :class:`~server_client.server.hub.Hub` wakes only its own waiters. With
several replicas on one database a write in one process must also wake the SSE streams and
long polls waiting in the others. :class:`PgWakeRelay` does that with PostgreSQL's
LISTEN/NOTIFY, not by polling:

- a *publisher*: :meth:`PgWakeRelay.publish` (set as the hub's relay, so every ``hub.notify``
  calls it right after the writer's commit) queues the key; a background task sends the queued
  keys, duplicates coalesced, with one ``pg_notify(channel, key)`` per key in one statement;
- a *listener*: a dedicated connection LISTENs on the channel and calls ``hub.wake(key)`` for
  each notification from another process (its own echo is ignored: local waiters were woken
  at once).

Both use their own asyncpg connections, outside SQLAlchemy's pool. A lost connection is
reconnected with capped, jittered backoff; once the listener is back, every local waiter is
woken once, since notifications sent meanwhile are lost (waking is only a hint: the waiters
re-read the store, so nothing is missed). Keys the publisher could not send stay queued and go
out after it reconnects, and so do the keys it sent in the last :data:`RESEND_WINDOW_S` seconds
(a NOTIFY racing the death of its connection can vanish without an error; a repeated wake-up
is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from server_client.retry import Backoff
from server_client.server.hub import Hub

log = logging.getLogger(__name__)

#: The NOTIFY channel every replica listens on; payloads are hub keys such as ``task:12``.
CHANNEL = "codex_tui_wake"

#: Keys sent this recently (s) are sent again when the publisher's connection is replaced: a
#: NOTIFY racing the death of its connection can be lost without an error.
RESEND_WINDOW_S = 2.0

#: What a lost or refused connection raises (asyncpg errors, sockets, timeouts).
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # e.g. a reply to a query on a connection the server just terminated
    asyncpg.InternalClientError,
)


def asyncpg_dsn(db_url: str) -> str:
    """The plain ``postgresql://`` DSN asyncpg takes for a server's database URL.

    Args:
        db_url: ``postgresql://…``, ``postgres://…`` or ``postgresql+asyncpg://…`` (as in
            ``--db``); the password, host, port, database and query options are kept.

    Raises:
        ValueError: not a PostgreSQL URL.
    """
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {url.drivername!r}")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _on_termination(lost: asyncio.Event) -> Callable[[Any], None]:
    """An asyncpg termination callback that sets ``lost``."""

    def callback(_conn: Any) -> None:
        lost.set()

    return callback


class PgWakeRelay:
    """Carries a hub's notifications to the hubs of every other server process on one
    PostgreSQL database, and theirs to it.

    Use: ``relay = PgWakeRelay(hub, db_url); await relay.start()`` (it then relays every
    ``hub.notify``), and ``await relay.aclose()`` on shutdown.

    Attributes:
        channel: The NOTIFY channel (the same in every replica).
        reconnects: How many times the listener connection was re-established after a loss.
        received: Notifications from other processes delivered to the hub (a count).
    """

    def __init__(
        self,
        hub: Hub,
        db_url: str,
        *,
        channel: str = CHANNEL,
        ping_interval_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 5.0,
    ) -> None:
        """Prepare a relay for ``hub`` on the database of ``db_url`` (nothing connects yet).

        Args:
            hub: The local hub: it gets ``wake``/``wake_all`` calls and relays its notifies.
            db_url: The server's ``--db`` URL (see :func:`asyncpg_dsn`).
            channel: NOTIFY channel name.
            ping_interval_s: How often the idle listener connection is checked with a
                ``SELECT 1`` (s), so a silently dropped connection is noticed.
            connect_timeout_s: Timeout of one connection attempt and of a ping (s).
            backoff_base_s, backoff_cap_s: Reconnect delays (s), jittered and doubling.
        """
        self.hub = hub
        self.channel = channel
        self.reconnects = 0
        self.received = 0
        self._dsn = asyncpg_dsn(db_url)
        self._ping_interval_s = ping_interval_s
        self._timeout_s = connect_timeout_s
        # Jittered, doubling, never below half the first wait (server_client.retry).
        self._backoff = Backoff(backoff_base_s, backoff_cap_s, floor_s=backoff_base_s / 2)
        self._pending: dict[str, None] = {}
        self._recent: dict[str, float] = {}
        self._listened_before = False
        self._wanted = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._listening = asyncio.Event()
        self._listener: Any = None
        self._publisher_pid: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def listening(self) -> bool:
        """True while the listener connection is up and LISTENing."""
        return self._listening.is_set()

    @property
    def listener_pid(self) -> int | None:
        """The PostgreSQL backend pid of the listener connection (None while down)."""
        conn = self._listener
        return None if conn is None else int(conn.get_server_pid())

    @property
    def publisher_pid(self) -> int | None:
        """The PostgreSQL backend pid of the publisher connection (None before it first
        connected; it connects on the first publish)."""
        return self._publisher_pid

    async def start(self, timeout_s: float = 15.0) -> None:
        """Start the listener and publisher tasks; return once the listener is LISTENing and
        the hub relays its notifies here.

        Raises:
            TimeoutError: the listener could not connect within ``timeout_s`` seconds (the
                relay is closed again).
        """
        self._tasks = [
            asyncio.create_task(
                self._supervise(self._listen_forever, "listener"), name="pg-notify-listener"
            ),
            asyncio.create_task(
                self._supervise(self._publish_forever, "publisher"), name="pg-notify-publisher"
            ),
        ]
        try:
            async with asyncio.timeout(timeout_s):
                await self._listening.wait()
        except TimeoutError:
            await self.aclose()
            raise
        self.hub.set_relay(self.publish)

    def publish(self, key: str) -> None:
        """Queue ``key`` for the other processes (non-blocking; duplicates coalesce).

        Call only after the write the key announces committed, as ``hub.notify`` is.
        """
        if self._closed:
            return
        self._pending[key] = None
        self._idle.clear()
        self._wanted.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until every queued key was sent; True if so."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        return self._idle.is_set()

    async def aclose(self, flush_timeout_s: float = 1.0) -> None:
        """Stop relaying: send what is still queued (up to ``flush_timeout_s`` seconds), then
        stop both tasks and close their connections. Idempotent."""
        self.hub.set_relay(None)
        if not self._closed and self._tasks:
            await self.wait_idle(flush_timeout_s)
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # ------------------------------------------------------------------ internals

    async def _connect(self) -> Any:
        return await asyncpg.connect(self._dsn, timeout=self._timeout_s)

    @staticmethod
    async def _close(conn: Any) -> None:
        """Close ``conn`` politely within a second, else drop it."""
        if conn is None or conn.is_closed():
            return
        try:
            async with asyncio.timeout(1.0):
                await conn.close()
        except asyncio.CancelledError:
            conn.terminate()
            raise
        except Exception:  # noqa: BLE001 - closing a broken connection: drop it
            conn.terminate()

    async def _supervise(self, loop: Callable[[], Awaitable[None]], what: str) -> None:
        """Run ``loop`` until cancelled, restarting it (after a pause) if it ever fails with
        an error it did not expect: the relay must not stop silently."""
        delays = self._backoff.delays()
        while True:
            try:
                await loop()
            except Exception:
                log.exception("the %s of the NOTIFY relay failed; restarting it", what)
            await asyncio.sleep(next(delays))

    def _on_notification(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        if pid == self._publisher_pid:
            return  # our own echo: local waiters were woken by hub.notify already
        self.received += 1
        self.hub.wake(payload)

    async def _listen_forever(self) -> None:
        delays = self._backoff.delays()
        while True:
            try:
                conn = await self._connect()
            except _CONNECTION_ERRORS as exc:
                log.warning("LISTEN connection failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(next(delays))
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(_on_termination(lost))
            try:
                await conn.add_listener(self.channel, self._on_notification)
                self._listener = conn
                self._listening.set()
                delays = self._backoff.delays()
                if self._listened_before:
                    self.reconnects += 1
                    log.warning("LISTEN connection re-established; waking every waiter")
                    # Notifications sent while it was down are gone: everyone re-reads.
                    self.hub.wake_all()
                self._listened_before = True
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._ping_interval_s):
                            await lost.wait()
                    if not lost.is_set():
                        async with asyncio.timeout(self._timeout_s):
                            await conn.fetchval("SELECT 1")
                log.warning("LISTEN connection lost; reconnecting")
            except _CONNECTION_ERRORS as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
            finally:
                self._listening.clear()
                self._listener = None
                await self._close(conn)
            await asyncio.sleep(next(delays))

    def _recently_sent(self) -> list[str]:
        """Keys sent within the last :data:`RESEND_WINDOW_S` seconds."""
        cutoff = time.monotonic() - RESEND_WINDOW_S
        self._recent = {k: at for k, at in self._recent.items() if at > cutoff}
        return list(self._recent)

    def _on_publisher_lost(self, _conn: Any) -> None:
        self._wanted.set()  # reconnect now and send the recent keys again

    async def _publish_forever(self) -> None:
        delays = self._backoff.delays()
        conn: Any = None
        connected_before = False
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                if conn is not None and conn.is_closed():
                    conn = None
                if conn is None and (self._pending or self._recently_sent()):
                    try:
                        conn = await self._connect()
                    except _CONNECTION_ERRORS as exc:
                        log.warning("NOTIFY connection failed (%s); retrying", type(exc).__name__)
                        self._wanted.set()
                        await asyncio.sleep(next(delays))
                        continue
                    conn.add_termination_listener(self._on_publisher_lost)
                    self._publisher_pid = int(conn.get_server_pid())
                    if connected_before:
                        # A NOTIFY sent just before the old connection died may have been
                        # lost with it, with no error: send the recent keys again.
                        self._pending = dict.fromkeys(self._recently_sent()) | self._pending
                    connected_before = True
                if not self._pending:
                    self._idle.set()
                    continue
                # Take the queued keys at once: a key queued during the send goes out with the
                # next one, so its NOTIFY always follows its writer's commit.
                keys, self._pending = list(self._pending), {}
                try:
                    async with asyncio.timeout(self._timeout_s):
                        await conn.execute(
                            "SELECT pg_notify($1, k) FROM unnest($2::text[]) AS k",
                            self.channel,
                            keys,
                        )
                except _CONNECTION_ERRORS as exc:
                    log.warning("NOTIFY failed (%s); retrying", type(exc).__name__)
                    self._pending = dict.fromkeys(keys) | self._pending
                    self._wanted.set()
                    await self._close(conn)
                    conn = None
                    await asyncio.sleep(next(delays))
                    continue
                sent_at = time.monotonic()
                self._recent.update(dict.fromkeys(keys, sent_at))
                delays = self._backoff.delays()
                if not self._pending:
                    self._idle.set()
        finally:
            await self._close(conn)
