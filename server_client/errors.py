"""Provides the SDK's exceptions and how a failed HTTP answer becomes one.

Exceptions (re-exported by :mod:`server_client.client`, the SDK's public module)::

    CodexTuiError
     └── ApiError            the server answered with a 4xx/5xx problem body
          └── NotFoundError  404: no such task (or not yours)

They live here, below the SDK and the worker's client, so that :mod:`server_client.retry`
can classify them without importing the SDK.
"""

from __future__ import annotations

import httpx

from server_client.models import Problem


class CodexTuiError(Exception):
    """Base class of the SDK's own errors."""


class ApiError(CodexTuiError):
    """The server refused a request; ``problem`` is its RFC 9457 body."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail or ''}".strip())
        self.problem = problem

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self.problem.status


class NotFoundError(ApiError):
    """404: the task does not exist or belongs to someone else."""


def problem_from_response(response: httpx.Response) -> ApiError:
    """Build the :class:`ApiError` for a failed response (the body must already be read)."""
    try:
        problem = Problem.model_validate_json(response.content)
    except ValueError:
        problem = Problem(
            title=response.reason_phrase or "error",
            status=response.status_code,
            detail=response.text[:500] or None,
        )
    if response.status_code == 404:
        return NotFoundError(problem)
    return ApiError(problem)


def raise_for_problem(response: httpx.Response) -> None:
    """Raise :class:`ApiError` for a 4xx/5xx response; do nothing otherwise."""
    if response.is_error:
        raise problem_from_response(response)
