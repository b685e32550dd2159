"""Provides bounded waits for asyncio tests: a hang fails with a message naming what was
awaited, and a helper task's error surfaces at once instead of as a hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout_s: float, what: str) -> T:
    """The result of ``awaitable``, which must come within ``timeout_s`` seconds.

    Raises:
        AssertionError: after ``timeout_s`` seconds, naming ``what`` (the awaitable is
            cancelled).
    """
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None


@asynccontextmanager
async def bounded(timeout_s: float, what: str) -> AsyncIterator[None]:
    """Bound the block to ``timeout_s`` seconds.

    Raises:
        AssertionError: when the block is still running after ``timeout_s`` seconds, naming
            ``what`` (the block is cancelled).
    """
    bound = asyncio.timeout(timeout_s)
    try:
        async with bound:
            yield
    except TimeoutError:
        if not bound.expired():
            raise
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None


async def while_running(
    awaitable: Awaitable[T], helper: asyncio.Future[Any], timeout_s: float, what: str
) -> T:
    """The result of ``awaitable`` within ``timeout_s`` seconds, while ``helper`` (e.g. a task
    acting as the worker that feeds it) runs beside it.

    Raises:
        BaseException: ``helper``'s own error, at once, when it fails first (``awaitable`` is
            cancelled), since what is awaited would then never come.
        AssertionError: after ``timeout_s`` seconds, naming ``what``; also when ``helper`` is
            cancelled first.
    """
    waiting = asyncio.ensure_future(awaitable)
    bound = asyncio.timeout(timeout_s)
    try:
        async with bound:
            while True:
                pending = {waiting} if helper.done() else {waiting, helper}
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if waiting in done:
                    return waiting.result()
                if helper.cancelled():
                    raise AssertionError(f"the helper was cancelled while waiting for {what}")
                helper.result()  # raises the helper's error; a clean end waits on
    except TimeoutError:
        if not bound.expired():
            raise
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None
    finally:
        if not waiting.done():
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
