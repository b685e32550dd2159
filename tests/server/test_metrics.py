"""Prometheus metrics (issue 5): ``GET /metrics`` of a real server reports what happened —
events ingested, claim latency and task duration observations, tasks by state and workers
online from the store, open event streams, HTTP requests — and needs the metrics token when
the server has one."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from server_client.models import EventKind, TaskStatus
from server_client.server.app import create_app
from server_client.server.settings import ServerSettings
from tests.conftest import LiveServer, ServerFactory, wait_until
from tests.support.waits import bounded

PROBLEM = "application/problem+json"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(server: LiveServer, token: str | None = None) -> Samples:
    """Every sample of the server's /metrics: (name, sorted labels) → value."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{server.url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{key} not in {sorted(samples)}"
    return samples[key]


def _states(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["state"]: value
        for (name, labels), value in samples.items()
        if name == "codex_tui_tasks"
    }


async def test_a_finished_task_shows_in_every_metric(live_server: LiveServer) -> None:
    server = live_server
    async with server.client() as client:
        wait_until(lambda: _value(_scrape(server), "codex_tui_workers_online") == 1)
        task = await client.create_task("hello", workdir=str(server.workdir))
        async with bounded(60, f"task {task.id}'s stream to end on the local worker"):
            events = [e async for e in client.stream_events(task.id)]
        assert events[-1].status is TaskStatus.COMPLETED
        uploaded = sum(1 for e in events if e.kind is not EventKind.STATUS)
        assert uploaded > 0
        listed = {s: len((await client.list_tasks(status=[s])).items) for s in TaskStatus}

    samples = _scrape(server)
    assert _value(samples, "codex_tui_events_ingested_total") == uploaded
    assert _value(samples, "codex_tui_task_claim_latency_seconds_count") == 1
    assert 0 <= _value(samples, "codex_tui_task_claim_latency_seconds_sum") < 30
    assert _value(samples, "codex_tui_task_duration_seconds_count") == 1
    assert _value(samples, "codex_tui_task_duration_seconds_sum") >= 0
    assert _states(samples) == {s.value: float(n) for s, n in listed.items()}
    assert _states(samples)["completed"] == 1
    assert _value(samples, "codex_tui_workers_online") == 1
    assert _value(samples, "codex_tui_open_event_streams") == 0
    requests = "codex_tui_http_requests_total"
    assert _value(samples, requests, route="/api/tasks", method="POST", status="201") == 1
    # The worker's one upload stream goes over its upload socket, not as requests.
    assert _value(samples, "codex_tui_upload_socket_messages_total", status="200") >= 1
    assert _value(samples, "codex_tui_open_upload_sockets") == 1

    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{server.url}/no/such/path")).status_code == 404
    samples = _scrape(server)
    assert _value(samples, requests, route="unmatched", method="GET", status="404") == 1


async def test_tasks_by_state_and_open_streams(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        made = [await client.create_task(f"t{i}") for i in range(3)]
        await client.cancel_task(made[0].id)
    samples = _scrape(server)
    assert _states(samples) == {
        "queued": 2,
        "running": 0,
        "waiting": 0,
        "idle": 0,
        "completed": 0,
        "failed": 0,
        "canceled": 1,
        "lost": 0,
    }
    assert _value(samples, "codex_tui_pending_approvals") == 0
    assert _value(samples, "codex_tui_workers_online") == 0
    assert _value(samples, "codex_tui_events_ingested_total") == 0

    def open_streams() -> float:
        return _value(_scrape(server), "codex_tui_open_event_streams")

    url = f"{server.url}/api/tasks/{made[1].id}/events"
    headers = {"Authorization": f"Bearer {server.token}", "Accept": "text/event-stream"}
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("GET", url, headers=headers) as first:
            first_chunks = first.aiter_bytes()
            await anext(first_chunks)
            assert open_streams() == 1
            async with http.stream("GET", url, headers=headers) as second:
                second_chunks = second.aiter_bytes()
                await anext(second_chunks)
                assert open_streams() == 2
            wait_until(lambda: open_streams() == 1, what="the closed stream to be counted out")
    wait_until(lambda: open_streams() == 0, what="every stream to be counted out")


def test_the_metrics_token_is_required_when_set(server_factory: ServerFactory) -> None:
    secret = "metrics-secret-4f9a"
    server = server_factory(
        local_worker=False, extra_env={"CODEX_TUI_SERVER_METRICS_TOKEN": secret}
    )
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {secret}"},
        {"Authorization": f"Bearer {server.token}"},  # a user token is not the metrics token
    ):
        refused = httpx.get(f"{server.url}/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["content-type"].startswith(PROBLEM)
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "metrics_token" in refused.json()["detail"]
        assert secret not in refused.text
    assert _value(_scrape(server, secret), "codex_tui_workers_online") == 0


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    """Apps built in one process (as tests do) do not share or clash over metrics."""
    apps = [
        create_app(ServerSettings(db_url=f"sqlite:///{tmp_path / f'{i}.db'}")) for i in range(2)
    ]
    one, two = (app.state.metrics for app in apps)
    assert one.registry is not two.registry
    one.events_ingested.inc(5)
    assert two.registry.get_sample_value("codex_tui_events_ingested_total") == 0
    assert one.registry.get_sample_value("codex_tui_events_ingested_total") == 5
    assert "/metrics" not in apps[0].openapi()["paths"]
