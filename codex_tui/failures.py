"""Provides how the TUI words a failed server request, and the poll loop its lists share.

The connection rule: the TUI counts the server as disconnected after one failed poll of its
task list, that is a request that raised one of :data:`REQUEST_ERRORS` — mostly a network
error or a timeout (every request carries the SDK client's own timeout, 10 s by default), also
a refusal or an answer that does not parse. While polls fail it polls again after growing
delays (:func:`poll_retry_delays`: about 1, 2, 4, 8, then every 15 s; a "refresh now" still
polls at once), and the first poll that succeeds counts as connected again and brings the
normal interval back. Event streams judge for themselves: a stream counts as dead after three
missed heartbeats (the server sends one every 15 s; the SDK's stream read timeout matches)
and reconnects with ``Last-Event-ID`` on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from server_client.client import ApiError
    from server_client.models import Problem

    #: What a request to the server can raise: a refusal, a network error, or an answer that
    #: does not parse (pydantic's ValidationError is a ValueError).
    REQUEST_ERRORS: tuple[type[Exception], ...]
    #: What an action the user asked for can raise: a refusal or a network error (what
    #: :func:`describe_action_failure` words).
    ACTION_ERRORS: tuple[type[ApiError], type[httpx.HTTPError]]

#: The names :func:`__getattr__` builds on first use.
_LAZY = frozenset({"REQUEST_ERRORS", "ACTION_ERRORS"})


def __getattr__(name: str) -> Any:
    """:data:`REQUEST_ERRORS` and :data:`ACTION_ERRORS`, built (and kept) on first use: httpx
    and the SDK are imported then, not with this module, which the TUI's first frame imports
    (the SDK is built after it)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import httpx

    from server_client.client import ApiError, CodexTuiError

    globals()["REQUEST_ERRORS"] = (CodexTuiError, httpx.HTTPError, ValueError)
    globals()["ACTION_ERRORS"] = (ApiError, httpx.HTTPError)
    return globals()[name]


def describe_problem(problem: Problem) -> str:
    """One readable paragraph for a server problem body (title, detail, field errors)."""
    text = problem.title
    if problem.detail:
        text = f"{text}: {problem.detail}"
    for error in (problem.errors or [])[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        message = error.get("msg") or error.get("message") or ""
        text += f"\n• {where}: {message}" if where else f"\n• {message}"
    return text


def _unreachable(error: httpx.HTTPError) -> str:
    return f"Cannot reach the server: {error or type(error).__name__}"


def describe_action_failure(error: ApiError | httpx.HTTPError) -> str:
    """Why an action the user asked for failed: the server's problem, or the network."""
    from server_client.client import ApiError

    if isinstance(error, ApiError):
        return describe_problem(error.problem)
    return _unreachable(error)


def describe_poll_failure(error: Exception, server_url: str | None = None) -> str:
    """Why a background refresh failed (one of :data:`REQUEST_ERRORS`), for an error line.

    Args:
        error: What the request raised.
        server_url: The server's address; when given, a network failure names it (``Cannot
            reach the server at http://127.0.0.1:8765``, short enough for one line) instead
            of quoting the exception.
    """
    import httpx

    from server_client.client import CodexTuiError

    if isinstance(error, CodexTuiError):
        return f"The server refused the request: {error}"
    if isinstance(error, httpx.HTTPError):
        if server_url is None:
            return _unreachable(error)
        timed_out = " (timed out)" if isinstance(error, httpx.TimeoutException) else ""
        return f"Cannot reach the server at {server_url}{timed_out}"
    return f"Unexpected answer from the server: {error}"


def poll_retry_delays(
    base_s: float | None = None,
    cap_s: float | None = None,
    *,
    uniform: Callable[[float, float], float] = random.uniform,
) -> Iterator[float]:
    """Yield the waits (s) before each retry while polls keep failing (the retry policy is
    imported at the first wait, not before the first frame).

    The n-th wait is ``base_s·2ⁿ`` capped at ``cap_s``, less up to a fifth of it at random
    (jitter, so that many TUIs do not retry in step): about 1, 2, 4, 8, 15, 15 … s. Unlike
    the SDK's stream backoff (full jitter) a wait never drops near zero, so a countdown on
    screen stays meaningful. This is :data:`server_client.retry.POLL` (the one retry policy)
    with other numbers where they are given.

    Args:
        base_s: The first wait (s; None: ``POLL``'s).
        cap_s: The longest wait (s; None: ``POLL``'s).
        uniform: Draws the jittered wait between its two bounds (injectable for tests).
    """
    from server_client.retry import POLL, Backoff  # with the SDK: after the first frame

    base_s = POLL.base_s if base_s is None else base_s
    cap_s = POLL.cap_s if cap_s is None else cap_s
    yield from Backoff(base_s, cap_s, jitter=POLL.jitter).delays(uniform)


async def poll_forever(
    poll_once: Callable[[], Awaitable[float | None]], wake: asyncio.Event, interval_s: float
) -> None:
    """Run ``poll_once`` now and again after the seconds it returns (``interval_s`` when it
    returns None), or at once when ``wake`` is set (a "refresh now"); ends only when cancelled
    with the worker that runs it.

    A poller backs off by returning its next retry delay after a failure (see
    :func:`poll_retry_delays`) and None once a poll succeeds.
    """
    while True:
        wake.clear()
        wait_s = await poll_once()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s if wait_s is None else wait_s):
                await wake.wait()
