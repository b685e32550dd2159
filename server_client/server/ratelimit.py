"""Provides the per-user rate limits (docs/reliability.md S8): task creations per window, open
event streams, and pairing attempts per client address. (The active-task limit is a rule of
task admission, counted in the store: server_client.server.admission.)

Counters live in the ``limits`` library's async storage: this process's memory by default, or
Redis when ``settings.redis_url`` is set, so that every replica shares them.

Over a limit the request gets 429 with a problem body whose detail names the limit and the
setting that raises it, and a ``Retry-After`` header in whole seconds (at least 1).

**Open streams** are a shared counter with an expiry, so that the streams of a replica that
crashed (and so never released them) fade instead of blocking their user for good. ``limits``
sets a counter's expiry only when the counter is created, so the counter is split by time
into *epochs* of ``stream_epoch_s`` seconds: each open stream holds +1 in the key of the
current epoch, and this process moves its streams' +1 into each new epoch's (fresh) key as it
begins; a user's count is the sum of the current and the previous epoch's keys, and every key
expires three epochs after it was made. A crashed replica's streams therefore drop out of the
count within two epochs (``stream_epoch_s``, server setting, default 30 s). A slot joins this
process's slots, which the mover counts, only once its +1 is in (under the lock the mover
holds), so that no open is counted twice in a reconnect storm. Each stream's slot is released
in a ``finally`` when the response ends, however it ends (see :class:`SlotEventSourceResponse`),
without waiting for that lock (a slot closed while being moved is released by the mover).

**When Redis is unreachable** the limits *degrade, they do not fail*: the request is never
refused or failed for that reason. A warning is logged (once per outage), and for the next
:data:`SHARED_RETRY_S` seconds the counters of this process's memory are used instead, so
each replica still enforces every limit on its own (a user may reach up to N times a limit
across N replicas until Redis is back). Streams opened meanwhile are registered in Redis once
it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
from fastapi import Depends, FastAPI, Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from server_client.server import context
from server_client.server.settings import ServerSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Default prefix of every Redis key (override with ``?key_prefix=`` on the Redis URL).
DEFAULT_KEY_PREFIX = "codex_tui"
#: Seconds one Redis command may take before the limits degrade to this process's memory.
SHARED_TIMEOUT_S = 1.0
#: After a Redis failure, seconds during which this process's memory is used before Redis
#: is tried again.
SHARED_RETRY_S = 5.0

#: Longest :meth:`Limiter.aclose` waits for the epoch refresher to stop (s).
CLOSE_TIMEOUT_S = 3 * SHARED_TIMEOUT_S
#: Retry-After (s) of a refused stream: streams end at any time, so a short guess.
STREAM_RETRY_AFTER_S = 5
#: Longest wait (s) for a stream slot's release while the response is torn down.
RELEASE_TIMEOUT_S = 5.0


class RateLimited(Exception):
    """A request over a limit; rendered as 429 with a problem body and ``Retry-After``.

    Attributes:
        detail: Which limit, and the setting that raises it.
        retry_after_s: Whole seconds (at least 1) after which a retry may succeed.
        limit: The setting's name (``rate_task_creations``, ``max_active_tasks``, ...).

    Rendered by server_client.server.problems.
    """

    def __init__(self, detail: str, retry_after_s: int, limit: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = max(1, int(retry_after_s))
        self.limit = limit


def storage_uri(redis_url: str | None) -> tuple[str, str]:
    """The ``limits`` storage URI and the Redis key prefix for ``redis_url``.

    ``redis://``, ``rediss://`` and ``unix://`` URLs map to ``async+redis://``,
    ``async+rediss://`` and ``async+redis+unix://``; ``async+...`` URIs pass through. A
    ``key_prefix`` query parameter is taken out of the URL and returned (default
    :data:`DEFAULT_KEY_PREFIX`), so deployments (and test runs) sharing a Redis keep apart.
    No URL gives ``("memory://", prefix)``: counters in this process's memory.

    Raises:
        ValueError: a URL that is not a Redis URL.
    """
    if not redis_url:
        return "memory://", DEFAULT_KEY_PREFIX
    parts = urlsplit(redis_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "key_prefix" and v), DEFAULT_KEY_PREFIX)
    rest = urlencode([(k, v) for k, v in query if k != "key_prefix"])
    schemes = {
        "redis": "async+redis",
        "rediss": "async+rediss",
        "unix": "async+redis+unix",
        "redis+unix": "async+redis+unix",
    }
    scheme = parts.scheme.lower()
    if scheme.startswith("async+"):
        mapped = scheme
    elif scheme in schemes:
        mapped = schemes[scheme]
    else:
        raise ValueError(
            f"redis_url must be a redis://, rediss:// or unix:// URL, not {parts.scheme!r}://"
        )
    uri = f"{mapped}://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else "")
    return uri, prefix


def _parse_rate(value: str, setting: str) -> RateLimitItem:
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(
            f"server setting {setting} (CODEX_TUI_SERVER_{setting.upper()}): {value!r} is not "
            "a rate in limits notation such as '60/minute' or '10 per hour'"
        ) from exc


def _retry_after(reset_time: float) -> int:
    """Whole seconds from now until ``reset_time`` (epoch seconds), at least 1."""
    return max(1, math.ceil(reset_time - time.time()))


@dataclass(eq=False)
class StreamSlot:
    """One open event stream of a user, held until :meth:`Limiter.close_stream`.

    Attributes:
        user_id: Whose stream it is.
        epoch: The epoch whose shared counter holds this stream's +1; None while it is not
            registered in the shared storage (Redis was unreachable).
        released: True once closed (closing again does nothing).
        moving: True while the epoch mover moves its +1 into a new epoch; a slot closed
            meanwhile leaves the release of its +1 to the mover.
    """

    user_id: str
    epoch: int | None = None
    released: bool = False
    moving: bool = False


class Limiter:
    """The app's rate limits; one per app, on ``app.state.limiter``.

    Args:
        settings: Reads ``redis_url``, ``rate_task_creations``, ``max_streams`` and
            ``rate_pairing``.
        stream_epoch_s: Epoch of the stream counters (s), default ``settings.stream_epoch_s``;
            see the module docstring.
        clock: Wall-clock seconds since the epoch, which the stream epochs are cut from
            (tests pass their own to move from one epoch to the next without waiting).

    Raises:
        ValueError: a rate that is not in ``limits`` notation, or a non-Redis ``redis_url``.
    """

    def __init__(
        self,
        settings: ServerSettings,
        *,
        stream_epoch_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.task_rate = _parse_rate(settings.rate_task_creations, "rate_task_creations")
        self.pairing_rate = _parse_rate(settings.rate_pairing, "rate_pairing")
        self.max_streams = settings.max_streams
        self._clock = clock
        self.stream_epoch_s = settings.stream_epoch_s if stream_epoch_s is None else stream_epoch_s
        self._memory = MemoryStorage()
        uri, prefix = storage_uri(settings.redis_url)
        self.shared_is_redis = settings.redis_url is not None
        self._shared: Storage = (
            RedisStorage(
                uri,
                wrap_exceptions=True,
                key_prefix=prefix,
                connect_timeout=SHARED_TIMEOUT_S,
                stream_timeout=SHARED_TIMEOUT_S,
            )
            if self.shared_is_redis
            else self._memory
        )
        self._shared_windows = MovingWindowRateLimiter(self._shared)
        self._local_windows = MovingWindowRateLimiter(self._memory)
        self._down_until = 0.0
        self._slots: set[StreamSlot] = set()
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self._closing = False

    # -- shared storage, with the fallback to memory ------------------------------------

    def _shared_usable(self) -> bool:
        return time.monotonic() >= self._down_until

    async def _shared_call(self, call: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """Run ``call`` against the shared storage: ``(True, result)``, or ``(False, None)``
        when it is unreachable or was recently (the failure is logged once per outage)."""
        if not self._shared_usable():
            return False, None
        try:
            async with asyncio.timeout(SHARED_TIMEOUT_S * 2):
                result = await call()
        except Exception as exc:  # noqa: BLE001 - any storage failure degrades, never fails
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancel that reached the storage client came back as its own error (a
                # connection error, say): the caller was cancelled, so it must end.
                raise asyncio.CancelledError from exc
            if self._down_until == 0.0:
                log.warning(
                    "rate-limit storage unreachable (%s: %s); each limit is enforced by this "
                    "process alone until it answers again (tried every %g s)",
                    type(exc).__name__,
                    exc,
                    SHARED_RETRY_S,
                )
            self._down_until = time.monotonic() + SHARED_RETRY_S
            return False, None
        if self._down_until:
            log.warning("rate-limit storage reachable again")
            self._down_until = 0.0
        return True, result

    async def _hit(self, item: RateLimitItem, *keys: str) -> int | None:
        """Take one from ``item``'s moving window for ``keys``: None when allowed, else the
        Retry-After seconds."""
        shared = self._shared_windows

        async def hit() -> int | None:
            if await shared.hit(item, *keys):
                return None
            stats = await shared.get_window_stats(item, *keys)
            return _retry_after(stats.reset_time)

        ok, refused = await self._shared_call(hit)
        if ok:
            return refused
        if await self._local_windows.hit(item, *keys):
            return None
        stats = await self._local_windows.get_window_stats(item, *keys)
        return _retry_after(stats.reset_time)

    # -- task creations and pairing ------------------------------------------------------

    async def take_task_creation(self, owner_id: str) -> None:
        """Take one task creation from ``owner_id``'s moving window, or refuse it (the other
        admission rules: server_client.server.admission).

        Raises:
            RateLimited: the user made ``rate_task_creations`` already.
        """
        retry = await self._hit(self.task_rate, "tasks", owner_id)
        if retry is not None:
            raise RateLimited(
                f"too many task creations: at most {self.task_rate} per user (server setting "
                "rate_task_creations, CODEX_TUI_SERVER_RATE_TASK_CREATIONS); "
                f"retry in {retry} s",
                retry,
                "rate_task_creations",
            )

    async def check_pairing(self, client_addr: str) -> None:
        """Admit one pairing-code redemption from ``client_addr``, or refuse it.

        Raises:
            RateLimited: ``rate_pairing`` attempts from this address already.
        """
        retry = await self._hit(self.pairing_rate, "pairing", client_addr)
        if retry is not None:
            raise RateLimited(
                f"too many pairing attempts from this address: at most {self.pairing_rate} "
                "(server setting rate_pairing, CODEX_TUI_SERVER_RATE_PAIRING); "
                f"retry in {retry} s",
                retry,
                "rate_pairing",
            )

    # -- open event streams --------------------------------------------------------------

    def _epoch(self) -> int:
        return int(self._clock() // self.stream_epoch_s)

    def _stream_key(self, user_id: str, epoch: int) -> str:
        return f"streams/{user_id}/{epoch}"

    @property
    def _stream_expiry(self) -> int:
        return max(1, math.ceil(3 * self.stream_epoch_s))

    @property
    def local_streams(self) -> int:
        """Event streams open in this process now (every user)."""
        return len(self._slots)

    def _local_streams_of(self, user_id: str) -> int:
        return sum(1 for slot in self._slots if slot.user_id == user_id)

    async def shared_streams(self, user_id: str) -> int | None:
        """The user's open streams over every replica (from the shared counters); None when
        the shared storage is unreachable."""
        epoch = self._epoch()
        storage = self._shared

        async def count() -> int:
            now, previous = await asyncio.gather(
                storage.get(self._stream_key(user_id, epoch)),
                storage.get(self._stream_key(user_id, epoch - 1)),
            )
            return max(0, int(now)) + max(0, int(previous))

        ok, value = await self._shared_call(count)
        return value if ok else None

    async def open_stream(self, user_id: str) -> StreamSlot:
        """Take one of the user's ``max_streams`` stream slots; release it with
        :meth:`close_stream` (:class:`SlotEventSourceResponse` does so when the stream ends).

        Raises:
            RateLimited: the user already has ``max_streams`` streams open (over every
                replica, or in this process while Redis is unreachable).
        """
        slot = StreamSlot(user_id)
        try:
            self._start_refresher()
            async with self._lock:
                # The slot joins the process's slots only once registered (or found
                # unregistrable), under the lock: the refresher registers the slots it finds
                # without an epoch, so one it saw while this open waited for the lock would
                # be counted twice and released once, a leak until its epoch faded (issue 17
                # item 3). The epoch is read under the lock too: a refresh that moved every
                # slot into a new epoch before this one registers leaves it in the current.
                epoch = self._epoch()
                key = self._stream_key(user_id, epoch)
                # Shielded: a cancel in the middle of the call would leave the counter
                # raised with no slot to lower it (the call is bounded by _shared_call).
                with anyio.CancelScope(shield=True):
                    ok, _ = await self._shared_call(
                        lambda: self._shared.incr(key, self._stream_expiry, 1)
                    )
                    if ok:
                        slot.epoch = epoch
                    self._slots.add(slot)
            count = await self.shared_streams(user_id) if ok else None
            if count is None:
                count = self._local_streams_of(user_id)
            if count > self.max_streams:
                raise RateLimited(
                    f"too many open event streams: at most {self.max_streams} per user (server "
                    "setting max_streams, CODEX_TUI_SERVER_MAX_STREAMS); close another stream "
                    "of yours first",
                    STREAM_RETRY_AFTER_S,
                    "max_streams",
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.close_stream(slot)
            raise
        return slot

    async def close_stream(self, slot: StreamSlot) -> None:
        """Release ``slot`` (idempotent). When the shared storage cannot be reached the shared
        count stays up until its epoch fades (see the module docstring).

        Never waits for the epoch mover's lock: a response bounds its release
        (:data:`RELEASE_TIMEOUT_S`), and a release cut short while queued behind the mover
        and the opens would leave the slot counted with nothing left to release it. A slot
        the mover is moving right now is given back by the mover, once its move is done.
        """
        if slot.released:
            return
        slot.released = True
        self._slots.discard(slot)
        if slot.moving:
            return  # refresh_streams releases it after the move
        epoch, slot.epoch = slot.epoch, None
        if epoch is not None:
            await self._release_shared(slot.user_id, epoch, 1)

    async def _release_shared(self, user_id: str, epoch: int, amount: int) -> None:
        """Take ``amount`` off the user's counter of ``epoch``."""
        key = self._stream_key(user_id, epoch)
        await self._shared_call(lambda: self._shared.incr(key, self._stream_expiry, -amount))

    def _start_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_loop(), name="stream-epochs")

    async def _refresh_loop(self) -> None:
        while not self._closing:
            to_boundary = self.stream_epoch_s - self._clock() % self.stream_epoch_s
            await asyncio.sleep(min(self.stream_epoch_s / 4, to_boundary + 0.01))
            try:
                await self.refresh_streams()
            except Exception:  # noqa: BLE001 - keep refreshing after any error
                log.exception("refreshing the stream counters failed")

    async def refresh_streams(self) -> None:
        """Move this process's open streams into the current epoch's counters, and register
        those opened while the shared storage was unreachable. Runs on its own every
        quarter epoch while streams are open."""
        epoch = self._epoch()
        async with self._lock:
            stale: dict[tuple[str, int | None], list[StreamSlot]] = {}
            for slot in self._slots:
                if not slot.released and slot.epoch != epoch:
                    stale.setdefault((slot.user_id, slot.epoch), []).append(slot)
            for (user_id, old), slots in stale.items():
                for slot in slots:
                    slot.moving = True
                try:
                    moved = await self._move(user_id, old, epoch, slots)
                finally:
                    # Slots closed during the move left their release to it (close_stream).
                    with anyio.CancelScope(shield=True):
                        await self._release_closed(slots)
                if not moved:
                    return

    async def _move(
        self, user_id: str, old: int | None, epoch: int, slots: list[StreamSlot]
    ) -> bool:
        """Move ``slots`` (of ``user_id``, counted in ``old``, None: not counted) into
        ``epoch``'s counter; False when the shared storage is unreachable.

        Off the old counter first, then onto the new one: a count read in between (by any
        replica) is short of these slots for a moment, and may let a stream too many in,
        but never counts them twice, which would refuse a stream of a user at the limit for
        nothing. Slots taken off but not yet counted again have no epoch: should the second
        call fail, the next refresh registers them as it does those opened while the storage
        was unreachable.
        """
        amount = len(slots)
        if old is not None:
            old_key = self._stream_key(user_id, old)
            ok, _ = await self._shared_call(
                lambda: self._shared.incr(old_key, self._stream_expiry, -amount)
            )
            if not ok:
                return False
            for slot in slots:
                slot.epoch = None
        key = self._stream_key(user_id, epoch)
        ok, _ = await self._shared_call(lambda: self._shared.incr(key, self._stream_expiry, amount))
        if not ok:
            return False
        for slot in slots:
            slot.epoch = epoch
        return True

    async def _release_closed(self, slots: list[StreamSlot]) -> None:
        """End the move of ``slots``: release the +1 of those closed meanwhile."""
        closed: dict[tuple[str, int], int] = {}
        for slot in slots:
            slot.moving = False
            if slot.released and slot.epoch is not None:
                where = (slot.user_id, slot.epoch)
                closed[where] = closed.get(where, 0) + 1
                slot.epoch = None
        for (user_id, epoch), amount in closed.items():
            await self._release_shared(user_id, epoch, amount)

    async def aclose(self) -> None:
        """Stop the epoch refresher (the app's lifespan calls this on shutdown).

        Waits at most :data:`CLOSE_TIMEOUT_S` for it: a storage client that will not be
        cancelled in the middle of a call (or turns the cancel into its own error) must not
        hold a shutdown up; the loop also ends by itself at its next turn.
        """
        self._closing = True
        if self._refresher is not None:
            refresher, self._refresher = self._refresher, None
            refresher.cancel()
            done, _ = await asyncio.wait({refresher}, timeout=CLOSE_TIMEOUT_S)
            if done:
                await asyncio.gather(refresher, return_exceptions=True)
            else:
                log.warning(
                    "the stream-counter refresher did not stop within %g s (its storage call "
                    "ignores cancellation); leaving it behind",
                    CLOSE_TIMEOUT_S,
                )


class SlotEventSourceResponse(EventSourceResponse):
    """An SSE response that releases its stream slot when it ends, however it ends (the
    stream finished, the client went away, the server is shutting down, or an error).

    Args:
        content: The event iterator, as for :class:`EventSourceResponse`.
        release: Awaited once after the response; shielded from cancellation and bounded by
            :data:`RELEASE_TIMEOUT_S`.
        **kwargs: Passed to :class:`EventSourceResponse`.
    """

    def __init__(
        self, content: Any, *, release: Callable[[], Awaitable[None]], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream, then release the slot."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT_S):
                await self._release()


# -- FastAPI wiring ---------------------------------------------------------------------


async def get_limiter(request: Request) -> Limiter:
    """The app's :class:`Limiter`."""
    limiter: Limiter = request.app.state.limiter
    return limiter


LimiterDep = Annotated[Limiter, Depends(get_limiter)]


async def limit_pairing(request: Request, limiter: LimiterDep) -> None:
    """Dependency of ``POST /api/pair``: 429 (:class:`RateLimited`) over the client address's
    pairing-attempt limit. The address is the one uvicorn reports: the connection's peer, or
    the proxy's client when the server's ``trusted_proxies`` names the proxy (S11)."""
    addr = context.current().client_addr or (request.client.host if request.client else None)
    await limiter.check_pairing(addr or "unknown")


#: ``dependencies=[PairingLimit]`` on ``POST /api/pair``.
PairingLimit = Depends(limit_pairing)


def install(app: FastAPI, settings: ServerSettings) -> Limiter:
    """Put a :class:`Limiter` on ``app.state.limiter`` (:class:`RateLimited` is rendered as
    429 by server_client.server.problems); the lifespan should ``await limiter.aclose()``.

    Raises:
        ValueError: invalid rate settings or Redis URL (see :class:`Limiter`).
    """
    limiter = Limiter(settings)
    app.state.limiter = limiter
    return limiter
