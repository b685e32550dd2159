"""Provides the server's error answers: RFC 9457 problem bodies (``application/problem+json``),
the handlers that turn every refusal into one, and their description for the OpenAPI document.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server_client.models import Problem
from server_client.server.ratelimit import RateLimited
from server_client.server.store import Conflict, Invalid, NotFound, PairingError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

#: The title of each status the server answers with.
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    507: "Insufficient Storage",
}

#: PostgreSQL's SQLSTATE ``disk_full`` (class 53, "insufficient resources"; PostgreSQL's
#: documentation, appendix A "PostgreSQL Error Codes").
PG_DISK_FULL = "53100"

#: The detail of a 507: the request is not at fault, and nothing of it was kept.
STORAGE_FULL_DETAIL = (
    "the server's storage is full: nothing of this request was stored (what was stored "
    "before is intact and can still be read); retry once its administrator has freed space"
)

#: Seconds between two log lines about a full storage (every write fails meanwhile).
STORAGE_FULL_LOG_EVERY_S = 60.0
_storage_full_logged_at: float | None = None

#: The error answers every API route may give, documented for the routers' OpenAPI operations:
#: each one a problem body. The 422 replaces FastAPI's default, which describes a body this
#: server never sends.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": Problem.model_json_schema()}},
    }
    for status, description in (
        (400, "Bad request: a malformed value, an unknown worker, a workdir outside the roots."),
        (401, "Missing, unknown or revoked bearer token."),
        (403, "A worker token on a user route, or what the server's policy forbids."),
        (404, "No such task or worker among the caller's (another owner's look the same)."),
        (409, "A conflict: the lease is lost, or an upload gap (``next_index`` says where)."),
        (413, "The prompt or body is too large."),
        (422, "The request does not match this document (wrong types, unknown fields, ...)."),
        (429, "A rate limit: retry after the ``Retry-After`` header's seconds."),
        (507, "The server's storage is full: nothing was stored; retry once space is freed."),
    )
}


def problem_response(
    status: int, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    """A JSON problem body (``application/problem+json``) with ``status``; a 401 also carries
    ``WWW-Authenticate: Bearer``."""
    return _response(Problem(title=title, status=status, detail=detail, **extra))


def is_storage_full(exc: DBAPIError) -> bool:
    """Whether the database refused a write because its storage is full: SQLite's
    ``SQLITE_FULL`` ("database or disk is full": the disk, or ``PRAGMA max_page_count``) or
    PostgreSQL's SQLSTATE 53100 ``disk_full``. Either way the statement's transaction was
    rolled back: nothing of it is stored, and what was stored before is intact."""
    orig = exc.orig
    if str(getattr(orig, "sqlstate", "") or "") == PG_DISK_FULL:
        return True
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_FULL  # extended codes keep the primary low byte
    return isinstance(orig, sqlite3.Error) and "database or disk is full" in str(orig)


def log_storage_full(exc: DBAPIError) -> None:
    """A warning about a full storage, at most once per :data:`STORAGE_FULL_LOG_EVERY_S`
    (a log on the same disk must not grow by a line per refused write)."""
    global _storage_full_logged_at  # one process-wide throttle
    now = time.monotonic()
    if _storage_full_logged_at is None or now - _storage_full_logged_at >= STORAGE_FULL_LOG_EVERY_S:
        _storage_full_logged_at = now
        log.warning(
            "the database's storage is full (%s); writes get 507 until space is freed, reads go on",
            type(exc.orig).__name__,
        )


def validation_problem(raw_errors: Sequence[Any]) -> Problem:
    """The 422 problem for pydantic's ``errors()`` of an invalid request: each error's
    location, message and type, the first one in ``detail``."""
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")}
        for err in raw_errors
    ]
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", []))
    detail = f"{where}: {first.get('msg')}" if first else "invalid request"
    return Problem(title="Unprocessable Content", status=422, detail=detail, errors=errors)


def problem_of(exc: Exception) -> Problem:
    """The problem an exception of a request's handling is answered with: HTTP errors with
    their status, the store's refusals 404/400/409, rate limits 429, values the database
    cannot store 400, a full storage 507, the rest 500 (logged, never shown). Shared by the
    HTTP handlers (:func:`install`) and the worker's upload socket, so both answer alike."""
    if isinstance(exc, StarletteHTTPException):
        title = TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return Problem(title=title, status=exc.status_code, detail=detail)
    if isinstance(exc, NotFound):
        return Problem(title="Not Found", status=404, detail=str(exc))
    if isinstance(exc, PairingError | Invalid):
        return Problem(title="Bad Request", status=400, detail=str(exc))
    if isinstance(exc, Conflict):
        return Problem(title="Conflict", status=409, detail=str(exc), next_index=exc.next_index)
    if isinstance(exc, RateLimited):
        log.info("refused over a rate limit (%s): %s", exc.limit, exc.detail)
        return Problem(title="Too Many Requests", status=429, detail=exc.detail)
    if isinstance(exc, DBAPIError):
        if is_storage_full(exc):
            log_storage_full(exc)
            return Problem(title="Insufficient Storage", status=507, detail=STORAGE_FULL_DETAIL)
        # SQLSTATE class 22, "data exception": a value from the request the database cannot
        # take, e.g. a NUL character in text or a number out of a column's range on
        # PostgreSQL. The request is at fault (400), nothing was stored.
        if str(getattr(exc.orig, "sqlstate", "") or "").startswith("22"):
            log.warning("refused a value the database cannot store: %s", type(exc.orig).__name__)
            return Problem(
                title="Bad Request",
                status=400,
                detail="the request holds a value the database cannot store "
                "(a NUL character, or a number out of range)",
            )
        log.error("database error: %s", type(exc).__name__, exc_info=exc)
        return Problem(title="Internal Server Error", status=500, detail="see the server log")
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
    return Problem(title="Internal Server Error", status=500, detail="see the server log")


def _response(problem: Problem) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem body (:func:`problem_of`; invalid
    requests 422 with pydantic's errors, :func:`validation_problem`), a rate limit with
    ``Retry-After``."""

    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        response = _response(problem_of(exc))
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _response(validation_problem(exc.errors()))

    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    for kind in (
        StarletteHTTPException,
        NotFound,
        PairingError,
        Invalid,
        Conflict,
        RateLimited,
        DBAPIError,
        Exception,
    ):
        app.add_exception_handler(kind, handle)
