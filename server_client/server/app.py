"""Provides the FastAPI application factory: the store's lifespan, the lost-lease sweeper and the
routes (error answers: server_client.server.problems)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from server_client import __version__
from server_client.heap import frozen_heap
from server_client.models import Health
from server_client.server import (
    metrics,
    problems,
    ratelimit,
    routes_conversations,
    routes_pairing,
    routes_tasks,
    routes_workers,
    routes_workspaces,
)
from server_client.server.context import RequestContextMiddleware
from server_client.server.db import create_engine, migrate
from server_client.server.edge import RequestBodyGuard
from server_client.server.hub import Hub, cancel_key, queue_key, task_key
from server_client.server.pgnotify import PgWakeRelay
from server_client.server.settings import ServerSettings
from server_client.server.store import Store

log = logging.getLogger(__name__)


async def _sweep_lost(store: Store, hub: Hub, settings: ServerSettings) -> None:
    """Every ``sweep_interval_s``, end ``lost`` the running tasks of silent workers (a
    started conversation becomes ``idle`` instead, server_client.server.store.leases).

    The first sweep waits one lease TTL after the start, so workers that kept running while
    the server was down can reconnect before their leases are judged (docs/reliability.md R1).
    A sweep refused for a full storage logs the throttled storage-full warning and is tried
    again at the next interval (docs/reliability.md R11); any other error is logged with its
    traceback.
    """
    await asyncio.sleep(settings.lease_ttl_s)
    while True:
        try:
            for task_id, owner_id in await store.sweep_lost():
                log.warning("task %s lost: its worker stopped responding", task_id)
                hub.notify(task_key(task_id))
                hub.notify(cancel_key(owner_id))
                hub.notify(queue_key(owner_id))  # a conversation with replies queues again
        except Exception as exc:  # noqa: BLE001 - keep sweeping after a transient store error
            if isinstance(exc, DBAPIError) and problems.is_storage_full(exc):
                problems.log_storage_full(exc)  # a warning now and then, not a traceback a sweep
            else:
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
            with frozen_heap():  # start-up is done: spare its objects the full collections
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
    )
    app.state.settings = settings
    app.state.hub = Hub()
    # Body size (413) and stall (408) limits, as problem bodies (docs/reliability.md S12).
    app.add_middleware(
        RequestBodyGuard,
        max_body_bytes=settings.max_body_bytes,
        read_timeout_s=settings.request_read_timeout_s,
    )
    app.add_middleware(RequestContextMiddleware)
    problems.install(app)
    ratelimit.install(app, settings)  # app.state.limiter (docs/reliability.md S8)
    metrics.install(app, settings)  # app.state.metrics and GET /metrics
    app.include_router(routes_tasks.router)
    app.include_router(routes_workers.router)
    app.include_router(routes_pairing.router)
    app.include_router(routes_conversations.router)
    app.include_router(routes_workspaces.router)

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> Health:
        """Liveness: 200 when the server is up (no token needed)."""
        return Health(version=__version__)

    return app
