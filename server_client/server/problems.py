"""Provides the server's error answers: RFC 9457 problem bodies (``application/problem+json``),
the handlers that turn every refusal into one, and their description for the OpenAPI document.
"""

from __future__ import annotations

import logging
import sqlite3
import time
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
    problem = Problem(title=title, status=status, detail=detail, **extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


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


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem body: HTTP errors with their status,
    invalid requests 422 (with pydantic's errors), the store's refusals 404/400/409, rate
    limits 429 with ``Retry-After``, values the database cannot store 400, a full storage 507
    (reads go on; writes succeed again once space is freed), the rest 500 (logged, never
    shown)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return problem_response(exc.status_code, title, detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {}
        where = ".".join(str(part) for part in first.get("loc", []))
        detail = f"{where}: {first.get('msg')}" if first else "invalid request"
        return problem_response(422, "Unprocessable Content", detail, errors=errors)

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return problem_response(404, "Not Found", str(exc))

    @app.exception_handler(PairingError)
    async def pairing_error(_request: Request, exc: PairingError) -> JSONResponse:
        return problem_response(400, "Bad Request", str(exc))

    @app.exception_handler(Invalid)
    async def invalid(_request: Request, exc: Invalid) -> JSONResponse:
        return problem_response(400, "Bad Request", str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_request: Request, exc: Conflict) -> JSONResponse:
        return problem_response(409, "Conflict", str(exc), next_index=exc.next_index)

    @app.exception_handler(RateLimited)
    async def rate_limited(_request: Request, exc: RateLimited) -> JSONResponse:
        log.info("refused over a rate limit (%s): %s", exc.limit, exc.detail)
        response = problem_response(429, "Too Many Requests", exc.detail)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        if is_storage_full(exc):
            log_storage_full(exc)
            return problem_response(507, "Insufficient Storage", STORAGE_FULL_DETAIL)
        # SQLSTATE class 22, "data exception": a value from the request the database cannot
        # take, e.g. a NUL character in text or a number out of a column's range on
        # PostgreSQL. The request is at fault (400), nothing was stored.
        if str(getattr(exc.orig, "sqlstate", "") or "").startswith("22"):
            log.warning("refused a value the database cannot store: %s", type(exc.orig).__name__)
            return problem_response(
                400,
                "Bad Request",
                "the request holds a value the database cannot store "
                "(a NUL character, or a number out of range)",
            )
        log.error("database error: %s", type(exc).__name__, exc_info=exc)
        return problem_response(500, "Internal Server Error", "see the server log")

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return problem_response(500, "Internal Server Error", "see the server log")
