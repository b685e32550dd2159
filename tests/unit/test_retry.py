"""Provides the tests of the one retry policy (server_client.retry): the shape of its waits,
which failures it retries for the SDK and for the worker protocol, and ``retry_call``."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest
from httpx_sse import SSEError

from server_client.client import ApiError, NotFoundError, backoff_delays
from server_client.models import Problem
from server_client.retry import (
    CONNECT_FINAL,
    POLL,
    STREAM,
    UPLOAD,
    WORKER,
    WORKER_FINAL,
    Backoff,
    is_retryable,
    retry_call,
)


def refusal(status: int, next_index: int | None = None) -> ApiError:
    """The ApiError of a ``status`` answer."""
    problem = Problem(title="x", status=status, next_index=next_index)
    return NotFoundError(problem) if status == 404 else ApiError(problem)


def bounds(backoff: Backoff, count: int) -> list[tuple[float, float]]:
    """The (low, high) each of the first ``count`` waits is drawn between."""
    drawn: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        drawn.append((low, high))
        return low

    list(itertools.islice(backoff.delays(record), count))
    return drawn


# -- the waits -------------------------------------------------------------------------------


def test_full_jitter_doubles_up_to_the_cap_from_zero() -> None:
    assert bounds(STREAM, 8) == [(0, h) for h in (0.25, 0.5, 1, 2, 4, 8, 10, 10)]
    assert bounds(WORKER, 3) == [(0, 0.2), (0, 0.4), (0, 0.8)]
    assert bounds(UPLOAD, 8)[-1] == (0, 5.0)
    for attempt, delay in enumerate(itertools.islice(backoff_delays(0.25, 10.0), 300)):
        assert 0 <= delay <= min(10.0, 0.25 * 2**attempt), (attempt, delay)


def test_a_floor_and_a_smaller_jitter_keep_waits_off_zero() -> None:
    # The PostgreSQL relay's: never below half the first wait.
    assert bounds(Backoff(0.2, 5.0, floor_s=0.1), 6) == [
        (0.1, 0.2),
        (0.1, 0.4),
        (0.1, 0.8),
        (0.1, 1.6),
        (0.1, 3.2),
        (0.1, 5.0),
    ]
    # The TUI's polls: at most a fifth below the bound.
    assert [high for _, high in bounds(POLL, 6)] == [1, 2, 4, 8, 15, 15]
    assert [low for low, _ in bounds(POLL, 6)] == pytest.approx([0.8, 1.6, 3.2, 6.4, 12, 12])


def test_waits_stay_capped_after_very_many_failures() -> None:
    delays = Backoff(0.1, 5.0, jitter=0.0).delays()
    assert list(itertools.islice(delays, 5000))[-1] == 5.0


# -- the classification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("down"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut")],
)
def test_no_answer_is_always_retried(failure: Exception) -> None:
    assert is_retryable(failure)
    assert is_retryable(failure, WORKER_FINAL)
    assert is_retryable(SSEError("not an event stream"))


def test_the_sdk_retries_5xx_only() -> None:
    assert is_retryable(refusal(500)) and is_retryable(refusal(503))
    assert not any(is_retryable(refusal(s)) for s in (400, 401, 403, 404, 409, 422, 429))
    assert not is_retryable(ValueError("an answer that does not parse"))


def test_the_worker_retries_all_but_its_final_refusals() -> None:
    for status in (401, 403, 404, 409):
        assert not is_retryable(refusal(status), WORKER_FINAL), status
    for status in (400, 413, 422, 429, 500, 502):
        assert is_retryable(refusal(status), WORKER_FINAL), status
    # A 409 that names the missing events is the server asking for them first.
    assert is_retryable(refusal(409, next_index=7), WORKER_FINAL)
    for status in (401, 403, 422):
        assert not is_retryable(refusal(status), CONNECT_FINAL), status
    for status in (404, 429, 503):
        assert is_retryable(refusal(status), CONNECT_FINAL), status


# -- retry_call ------------------------------------------------------------------------------


async def test_retry_call_retries_until_it_succeeds_and_reports_each_wait() -> None:
    failures = [httpx.ConnectError("down"), refusal(503), httpx.ReadError("cut")]
    slept: list[float] = []
    reported: list[tuple[str, float]] = []

    async def call() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    got = await retry_call(
        call,
        Backoff(1.0, 3.0, jitter=0.0),
        on_retry=lambda exc, wait_s: reported.append((type(exc).__name__, wait_s)),
        sleep=sleep,
    )
    assert got == "done"
    assert slept == [1.0, 2.0, 3.0]
    assert reported == [("ConnectError", 1.0), ("ApiError", 2.0), ("ReadError", 3.0)]


async def test_retry_call_raises_a_final_failure_at_once() -> None:
    calls = 0
    slept: list[float] = []

    async def call() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("down")
        raise refusal(401)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(ApiError) as refused:
        await retry_call(
            call, WORKER, retry_if=lambda exc: is_retryable(exc, WORKER_FINAL), sleep=sleep
        )
    assert refused.value.status == 401
    assert calls == 2 and len(slept) == 1


async def test_retry_call_ends_when_its_sleep_does() -> None:
    async def call() -> None:
        raise httpx.ConnectError("down")

    async def sleep(_seconds: float) -> None:
        raise asyncio.CancelledError  # e.g. a worker told to stop

    with pytest.raises(asyncio.CancelledError):
        await retry_call(call, WORKER, sleep=sleep)
