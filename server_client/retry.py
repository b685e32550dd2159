"""Provides the one retry policy: capped exponential backoff with jitter (tenacity), and which
failures are worth another attempt.

Every loop that retries uses it: the SDK's event stream (:meth:`CodexTuiClient.stream_events`),
the worker's connect, long polls, uploads and finishes, the server's PostgreSQL LISTEN/NOTIFY
connections and the TUI's polls. What differs between them is only the numbers (a
:class:`Backoff` each, below) and, for the worker protocol, which refusals end a call for good.

The classification (:func:`is_retryable`):

- no answer (:data:`NETWORK_ERRORS`: connect, read and write errors, timeouts, a broken SSE
  stream) is always worth another attempt;
- a 5xx answer (the server's own trouble) is too;
- a 4xx answer is final for the SDK: the same request gets the same answer (a 429 too: a
  stream over the user's ``max_streams`` is refused, and says so, rather than waited for);
- the worker protocol names its final refusals instead (:data:`WORKER_FINAL`,
  :data:`CONNECT_FINAL`) and retries every other one, 429 included: a worker must not drop
  its tasks' events or ends over a refusal that may pass (docs/reliability.md R4, R5).

Loops retry without end, until their caller is cancelled or stops (the stream's
``max_attempts`` excepted); a success starts the next run of failures from the shortest wait
again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import httpx
from httpx_sse import SSEError

from server_client.errors import ApiError

if TYPE_CHECKING:
    from tenacity import RetryCallState

# tenacity is imported where a failure is first retried, not with this module: the SDK (and
# so the TUI's cold start) imports this module, and a call that succeeds needs none of it.

__all__ = [
    "CONNECT_FINAL",
    "NETWORK_ERRORS",
    "POLL",
    "STREAM",
    "UPLOAD",
    "WORKER",
    "WORKER_FINAL",
    "Backoff",
    "JitteredExponential",
    "is_retryable",
    "retry_call",
]

T = TypeVar("T")

#: What a request raises when no (whole) answer came: httpx's transport errors (connect, read,
#: write, timeouts, protocol) and a stream that is not a well-formed SSE stream.
NETWORK_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError, SSEError)

#: Refusals that end a worker's call (claim, signals, upload, finish) for good: its token is
#: refused or revoked (401, 403), its worker or task is gone (404), its lease on the task is
#: lost (409 without ``next_index``). A 409 *with* ``next_index`` asks for missing events
#: first and is not final; every other refusal is retried.
WORKER_FINAL = frozenset({401, 403, 404, 409})

#: Refusals that end a worker's connect for good: its token is refused (401, 403) or its
#: hello is invalid (422). Every other refusal is retried.
CONNECT_FINAL = frozenset({401, 403, 422})


def is_retryable(exc: BaseException, final: Collection[int] | None = None) -> bool:
    """Whether another attempt of the request that raised ``exc`` may succeed.

    Args:
        exc: What the attempt raised.
        final: The refusals (HTTP statuses) that are final for this call; every other
            refusal is retried. None: the SDK's rule, every 4xx is final. A 5xx is never
            final, nor a 409 that carries ``next_index`` (the server asks for the events it
            misses; the call succeeds once they are sent).

    Returns:
        True for :data:`NETWORK_ERRORS` and refusals that are not final; False for anything
        else (a bug or an answer that does not parse is not retried).
    """
    if isinstance(exc, NETWORK_ERRORS):
        return True
    if not isinstance(exc, ApiError):
        return False
    status = exc.status
    if status >= 500 or (status == 409 and exc.problem.next_index is not None):
        return True
    if final is None:
        return False
    return status not in final


class JitteredExponential:
    """A tenacity wait (a callable of the retry state): capped exponential backoff with
    jitter below the cap.

    Attempt ``n`` (tenacity counts from 1) waits a random time in ``[low, d]`` seconds, where
    ``d = min(cap_s, base_s·2ⁿ⁻¹)`` and ``low = max(floor_s, (1 − jitter)·d)`` (never above
    ``d``). ``jitter=1, floor_s=0`` is tenacity's ``wait_random_exponential`` ("full
    jitter", from AWS's "Exponential Backoff and Jitter"); a smaller ``jitter`` keeps every
    wait near ``d``.

    Args:
        base_s: The first attempt's ``d`` (s).
        cap_s: The largest ``d`` (s).
        jitter: The fraction of ``d`` the draw may take off, 0..1.
        floor_s: The shortest wait (s).
        uniform: Draws between two bounds (``random.uniform``; injectable for tests).
    """

    def __init__(
        self,
        base_s: float,
        cap_s: float,
        *,
        jitter: float = 1.0,
        floor_s: float = 0.0,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        from tenacity.wait import wait_exponential

        self._exponential = wait_exponential(multiplier=base_s, max=cap_s)
        self.jitter = jitter
        self.floor_s = floor_s
        self.uniform = uniform

    def __call__(self, retry_state: RetryCallState) -> float:
        """The wait (s) after the attempt ``retry_state.attempt_number``."""
        high = self._exponential(retry_state)
        low = min(high, max(self.floor_s, high * (1.0 - self.jitter)))
        return self.uniform(low, high)


@dataclass(frozen=True)
class Backoff:
    """The numbers of one retry loop: capped exponential backoff with jitter.

    The n-th wait of a run of failures (n from 0) is drawn from ``[max(floor_s, (1 −
    jitter)·d), d]`` seconds with ``d = min(cap_s, base_s·2ⁿ)`` (:class:`JitteredExponential`).

    Attributes:
        base_s: The first wait's upper bound (s).
        cap_s: The largest upper bound (s).
        jitter: The fraction of the bound a wait may fall short of it (1: anywhere from 0).
        floor_s: The shortest wait (s).
    """

    base_s: float
    cap_s: float
    jitter: float = 1.0
    floor_s: float = 0.0

    def wait(
        self, uniform: Callable[[float, float], float] = random.uniform
    ) -> JitteredExponential:
        """This backoff as a tenacity wait strategy."""
        return JitteredExponential(
            self.base_s, self.cap_s, jitter=self.jitter, floor_s=self.floor_s, uniform=uniform
        )

    def delays(self, uniform: Callable[[float, float], float] = random.uniform) -> Iterator[float]:
        """The waits (s) of one run of failures, in order and without end, for loops that
        are not one call retried (a stream, a poll): take one per failure, and a new iterator
        after a success.

        Args:
            uniform: Draws between two bounds (injectable for tests).
        """
        from tenacity import AsyncRetrying, RetryCallState

        wait = self.wait(uniform)
        state = RetryCallState(AsyncRetrying(), None, (), {})  # the wait reads attempt_number
        while True:
            yield wait(state)
            state.attempt_number += 1


#: The SDK's event stream: reconnects after 0.25 s doubling to 10 s, full jitter.
STREAM = Backoff(0.25, 10.0)
#: A worker's connect, long polls (claim, signals) and finishes: 0.2 s doubling to 10 s.
WORKER = Backoff(0.2, 10.0)
#: A worker's event uploads: 0.1 s doubling to 5 s (codex keeps printing meanwhile).
UPLOAD = Backoff(0.1, 5.0)
#: The TUI's polls while they fail: about 1, 2, 4, 8, then every 15 s, less up to a fifth at
#: random, so that a countdown on screen stays meaningful (never near zero).
POLL = Backoff(1.0, 15.0, jitter=0.2)


async def retry_call(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retry_if: Callable[[BaseException], bool] = is_retryable,
    on_retry: Callable[[BaseException, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await ``call()`` until it returns, retrying the failures ``retry_if`` accepts.

    Retries without end (until the caller is cancelled, or ``sleep`` raises), waiting the
    delays of ``backoff`` between attempts. The first attempt runs outside tenacity's
    machinery (tens of µs per call), so a call that succeeds at once costs what it costs:
    a worker uploads on this path.

    Args:
        call: Makes one attempt (a new awaitable each time).
        backoff: The waits between attempts.
        retry_if: Whether a failure is worth another attempt (default: :func:`is_retryable`
            with the SDK's rule).
        on_retry: Called with the failure and the wait (s) before each retry (to log it).
        sleep: Waits between attempts (e.g. one that ends early when a worker stops).

    Returns:
        What the first successful attempt returned.

    Raises:
        Exception: the first failure ``retry_if`` refuses, as it was raised.
    """
    try:
        return await call()
    except Exception as exc:
        if not retry_if(exc):
            raise
        first: list[BaseException] = [exc]
    from tenacity import AsyncRetrying, retry_if_exception, stop_never

    async def attempt() -> T:
        if first:  # the attempt made above, replayed so tenacity counts and logs it
            raise first.pop()
        return await call()

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            failure = state.outcome.exception()
            if failure is not None:
                on_retry(failure, state.next_action.sleep)

    retrying = AsyncRetrying(
        sleep=sleep,
        stop=stop_never,
        wait=backoff.wait(),
        retry=retry_if_exception(retry_if),
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retrying(attempt)
