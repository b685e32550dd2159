"""Provides how the TUI words a failed server request, and the poll loop its lists share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import httpx

from server_client.client import ApiError, CodexTuiError
from server_client.models import Problem

#: What a request to the server can raise: a refusal, a network error, or an answer that
#: does not parse (pydantic's ValidationError is a ValueError).
REQUEST_ERRORS = (CodexTuiError, httpx.HTTPError, ValueError)


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
    if isinstance(error, ApiError):
        return describe_problem(error.problem)
    return _unreachable(error)


def describe_poll_failure(error: Exception) -> str:
    """Why a background refresh failed (one of :data:`REQUEST_ERRORS`), for an error line."""
    if isinstance(error, CodexTuiError):
        return f"The server refused the request: {error}"
    if isinstance(error, httpx.HTTPError):
        return _unreachable(error)
    return f"Unexpected answer from the server: {error}"


async def poll_forever(
    poll_once: Callable[[], Awaitable[None]], wake: asyncio.Event, interval_s: float
) -> None:
    """Run ``poll_once`` now, then every ``interval_s`` seconds, or at once when ``wake`` is
    set (a "refresh now"); ends only when cancelled with the worker that runs it."""
    while True:
        wake.clear()
        await poll_once()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval_s)
