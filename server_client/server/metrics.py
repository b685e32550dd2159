"""Provides the Prometheus metrics and ``GET /metrics`` (text exposition format).

Each app has its own :class:`~prometheus_client.CollectorRegistry` (never the global one), so
several apps in one process do not mix their numbers. Exposed:

- ``codex_tui_tasks{state}``: tasks in each state, counted in the store at scrape time (every
  replica reports the same truth);
- ``codex_tui_workers_online``: non-revoked workers heard from within the lease TTL, from the
  store at scrape time;
- ``codex_tui_pending_approvals``: codex's approvals waiting for their owner's answer, from
  the store at scrape time;
- ``codex_tui_events_ingested_total``: events stored from worker uploads (re-sent ones not
  counted), by this process;
- ``codex_tui_open_event_streams``: SSE event streams open in this process;
- ``codex_tui_wake_keys``: keys in this process's wake-up hub: one per task with open event
  streams, plus per-owner claim and cancel keys (docs/reliability.md E4: streams that ended must
  not leave keys behind);
- ``codex_tui_task_claim_latency_seconds``: how long tasks waited queued, from creation to
  their claim by a worker (observed by the process that handed them out);
- ``codex_tui_task_duration_seconds``: from claim to finish, for tasks a worker finished
  (observed by the process that recorded the finish; lost and cancelled-while-queued tasks
  are not observed);
- ``codex_tui_http_requests_total{route,method,status}``: HTTP requests answered, by route
  template (``unmatched`` for paths that match no route).

When ``settings.metrics_token`` is set, ``/metrics`` needs ``Authorization: Bearer <it>``
(401 problem otherwise).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server_client.models import Task, TaskStatus
from server_client.server.problems import problem_response
from server_client.server.settings import ServerSettings
from server_client.server.store import Store

#: Buckets of the claim latency (s): sub-second pickups up to an hour in the queue.
CLAIM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Buckets of the task duration (s): seconds up to half a day.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0)
#: Route label of requests that matched no route (keeps the label set bounded).
UNMATCHED = "unmatched"


async def store_snapshot(store: Store) -> tuple[dict[str, int], int, int]:
    """Tasks per state (every state, 0 included), the number of workers online (not
    revoked, heard from within the store's lease TTL) and of approvals waiting for an
    answer, read from the store now."""
    return (
        await store.count_tasks_by_state(),
        await store.count_workers_online(),
        await store.count_pending_approvals(),
    )


class _StoreCollector(Collector):
    """Reports the last :func:`store_snapshot`, which ``/metrics`` takes just before it
    renders (collectors are synchronous; the store is not)."""

    def __init__(self) -> None:
        self.by_state: dict[str, int] = {status.value: 0 for status in TaskStatus}
        self.workers_online = 0
        self.pending_approvals = 0

    def describe(self) -> Iterable[Metric]:
        """The families without samples (so registering does not collect)."""
        yield GaugeMetricFamily("codex_tui_tasks", "Tasks in each state.", labels=["state"])
        yield GaugeMetricFamily("codex_tui_workers_online", "Workers online.")
        yield GaugeMetricFamily("codex_tui_pending_approvals", "Approvals pending.")

    def collect(self) -> Iterable[Metric]:
        """The tasks-by-state and workers-online gauges of the last snapshot."""
        by_state = GaugeMetricFamily(
            "codex_tui_tasks", "Tasks in each state (from the store).", labels=["state"]
        )
        for state, count in sorted(self.by_state.items()):
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily(
            "codex_tui_workers_online",
            "Non-revoked workers heard from within the lease TTL (from the store).",
            value=self.workers_online,
        )
        yield GaugeMetricFamily(
            "codex_tui_pending_approvals",
            "Approvals of codex waiting for their owner's answer (from the store).",
            value=self.pending_approvals,
        )


class Metrics:
    """One app's metrics, on ``app.state.metrics``.

    Args:
        open_streams: Returns the number of SSE streams open in this process now (read at
            scrape time).
        wake_keys: Returns the number of keys in this process's wake-up hub now (read at
            scrape time).
    """

    def __init__(
        self,
        open_streams: Callable[[], float] | None = None,
        wake_keys: Callable[[], float] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events_ingested = Counter(
            "codex_tui_events_ingested",
            "Events stored from worker uploads (re-sent events not counted).",
            registry=self.registry,
        )
        self.open_streams = Gauge(
            "codex_tui_open_event_streams",
            "SSE event streams open in this process.",
            registry=self.registry,
        )
        if open_streams is not None:
            self.open_streams.set_function(open_streams)
        self.wake_keys = Gauge(
            "codex_tui_wake_keys",
            "Keys in this process's wake-up hub (tasks with open streams, owners' claim and "
            "cancel keys).",
            registry=self.registry,
        )
        if wake_keys is not None:
            self.wake_keys.set_function(wake_keys)
        self.claim_latency = Histogram(
            "codex_tui_task_claim_latency_seconds",
            "Seconds a task waited from its creation to its claim by a worker.",
            buckets=CLAIM_BUCKETS,
            registry=self.registry,
        )
        self.task_duration = Histogram(
            "codex_tui_task_duration_seconds",
            "Seconds from a task's claim to its finish, for tasks a worker finished.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "codex_tui_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.upload_messages = Counter(
            "codex_tui_upload_socket_messages",
            "Worker uploads answered over upload sockets (one WebSocket per worker), by the "
            "status of the answer (200, or the problem's).",
            ["status"],
            registry=self.registry,
        )
        self.upload_sockets = Gauge(
            "codex_tui_open_upload_sockets",
            "Workers' upload sockets open in this process.",
            registry=self.registry,
        )
        self._store = _StoreCollector()
        self.registry.register(self._store)

    def observe_claim(self, task: Task) -> None:
        """Record how long ``task`` (just claimed) waited in the queue."""
        if task.started_at is not None:
            wait = (task.started_at - task.created_at).total_seconds()
            self.claim_latency.observe(max(0.0, wait))

    def observe_finish(self, task: Task) -> None:
        """Record the run time of ``task``, which a worker just finished."""
        if task.started_at is not None and task.finished_at is not None:
            self.observe_run((task.finished_at - task.started_at).total_seconds())

    def observe_run(self, seconds: float) -> None:
        """Record the run time of a task that just ended (s)."""
        self.task_duration.observe(max(0.0, seconds))

    async def render(self, store: Store) -> bytes:
        """Take the store snapshot and render every metric in the text format."""
        (
            self._store.by_state,
            self._store.workers_online,
            self._store.pending_approvals,
        ) = await store_snapshot(store)
        return generate_latest(self.registry)


class HttpMetricsMiddleware:
    """ASGI middleware counting answered HTTP requests by route template, method and status
    (a request that raised counts as 500; a streamed response counts when it ends)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and count it once answered."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) if route is not None else None
            self.metrics.http_requests.labels(
                template or UNMATCHED, scope.get("method", "?"), str(status)
            ).inc()


async def get_metrics(request: Request) -> Metrics:
    """The app's :class:`Metrics`."""
    metrics: Metrics = request.app.state.metrics
    return metrics


MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def install(app: FastAPI, settings: ServerSettings) -> Metrics:
    """Put a :class:`Metrics` on ``app.state.metrics``, count HTTP requests, and serve
    ``GET /metrics`` (not in the OpenAPI document). Call after the limiter is installed so
    the open-streams gauge reads it."""
    limiter = getattr(app.state, "limiter", None)
    hub = getattr(app.state, "hub", None)
    metrics = Metrics(
        open_streams=(lambda: float(limiter.local_streams)) if limiter is not None else None,
        wake_keys=(lambda: float(len(hub))) if hub is not None else None,
    )
    app.state.metrics = metrics
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        """Prometheus metrics (text format); needs ``Authorization: Bearer <metrics_token>``
        when the server has one (401 problem otherwise)."""
        if settings.metrics_token and not _authorized(request, settings.metrics_token):
            return problem_response(
                401,
                "Unauthorized",
                "metrics need 'Authorization: Bearer <metrics token>' "
                "(server setting metrics_token, CODEX_TUI_SERVER_METRICS_TOKEN)",
            )
        body = await metrics.render(request.app.state.store)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
