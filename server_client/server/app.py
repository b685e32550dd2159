"""Provides the FastAPI application factory, its settings and the RFC 9457 error bodies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server_client import __version__
from server_client.models import Health, Problem
from server_client.server.context import RequestContextMiddleware
from server_client.server.db import create_engine, migrate
from server_client.server.hub import Hub, cancel_key, task_key
from server_client.server.pgnotify import PgWakeRelay
from server_client.server.settings import ServerSettings
from server_client.server.store import Conflict, NotFound, PairingError, Store

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_response(
    status: int, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    """A JSON problem body (``application/problem+json``) with ``status``."""
    problem = Problem(title=title, status=status, detail=detail, **extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _TITLES.get(exc.status_code, "Error")
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

    @app.exception_handler(Conflict)
    async def conflict(_request: Request, exc: Conflict) -> JSONResponse:
        return problem_response(409, "Conflict", str(exc), next_index=exc.next_index)

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
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


async def _sweep_lost(store: Store, hub: Hub, settings: ServerSettings) -> None:
    """Every ``sweep_interval_s``, end ``lost`` the running tasks of silent workers.

    The first sweep waits one lease TTL after the start, so workers that kept running while
    the server was down can reconnect before their leases are judged (reliability.md R1).
    """
    await asyncio.sleep(settings.lease_ttl_s)
    while True:
        try:
            for task_pk, owner_id in await store.sweep_lost():
                log.warning("task %d lost: its worker stopped responding", task_pk)
                hub.notify(task_key(task_pk))
                hub.notify(cancel_key(owner_id))
        except Exception:  # noqa: BLE001 - keep sweeping after a transient store error
            log.exception("sweep of lost leases failed")
        await asyncio.sleep(settings.sweep_interval_s)


def create_app(settings: ServerSettings) -> FastAPI:
    """Build the app; the store is opened and migrated in the lifespan.

    ``app.state`` carries ``settings``, ``store`` and ``hub`` for the routes. On PostgreSQL
    the lifespan also runs a :class:`PgWakeRelay`, so that a notify in one replica wakes the
    waiters of every replica on the same database (SQLite stays in-process).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.db_url)
        await migrate(engine)
        store = Store(
            engine,
            lease_ttl_s=settings.lease_ttl_s,
            max_event_bytes=settings.max_event_bytes,
            max_events_per_task=settings.max_events_per_task,
        )
        app.state.store = store
        relay = None
        if engine.dialect.name == "postgresql":
            # Several replicas may share the database: wake each other's waiters.
            relay = PgWakeRelay(app.state.hub, settings.db_url)
            await relay.start()
        sweeper = asyncio.create_task(_sweep_lost(store, app.state.hub, settings), name="sweep")
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await app.state.limiter.aclose()
            if relay is not None:
                await relay.aclose()
            await store.aclose()
            await engine.dispose()

    app = FastAPI(
        title="codex-tui",
        version=__version__,
        summary="Run and watch OpenAI Codex agents on remote machines.",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    app.state.hub = Hub()
    app.add_middleware(RequestContextMiddleware)
    _install_error_handlers(app)

    from server_client.server import metrics, ratelimit

    ratelimit.install(app, settings)  # app.state.limiter: 429s with Retry-After (S8)
    metrics.install(app, settings)  # app.state.metrics and GET /metrics

    from server_client.server import routes_pairing, routes_tasks, routes_workers

    app.include_router(routes_tasks.router)
    app.include_router(routes_workers.router)
    app.include_router(routes_pairing.router)

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> Health:
        """Liveness: 200 when the server is up (no token needed)."""
        return Health(version=__version__)

    return app
