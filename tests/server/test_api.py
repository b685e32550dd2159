"""Tests of the HTTP contract against a real server: auth, bad input, listing, cancel."""

from __future__ import annotations

from typing import cast

import httpx
import pytest

from server_client.client import ApiError, NotFoundError
from server_client.models import EventKind, TaskStatus
from tests.conftest import LiveServer, ServerFactory
from tests.support.waits import bounded

PROBLEM = "application/problem+json"


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server without a worker, so tasks stay queued."""
    return server_factory(local_worker=False)


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    return cast(dict[str, object], body)


def test_every_api_route_needs_a_token(server: LiveServer) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    api_routes = [
        (method, path)
        for path, methods in spec["paths"].items()
        if path.startswith("/api/")
        for method in methods
    ]
    assert len(api_routes) >= 10
    # Redeeming a pairing code is the one route whose credential is the code in its body.
    assert ("post", "/api/pair") in api_routes
    api_routes.remove(("post", "/api/pair"))
    assert (
        httpx.post(f"{server.url}/api/pair", json={"code": "nope", "name": "w"}).status_code == 400
    )
    for method, path in api_routes:
        url = server.url + path.replace("{task_id}", "x").replace("{worker_id}", "y")
        for headers in ({}, {"Authorization": "Bearer ctu_wrong"}):
            response = httpx.request(method, url, headers=headers, json={})
            body = _problem(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "ctu_wrong" not in str(body)


def test_health_and_openapi_need_no_token(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/api/tasks/{task_id}/events" in spec["paths"]


def test_bad_input_gets_problem_bodies_and_loses_nothing(server: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {server.token}"}
    created = httpx.post(f"{server.url}/api/tasks", json={"prompt": "keep me"}, headers=auth).json()

    _problem(httpx.get(f"{server.url}/api/tasks/nope", headers=auth), 404)
    _problem(httpx.post(f"{server.url}/api/tasks/nope/cancel", headers=auth), 404)
    _problem(httpx.get(f"{server.url}/api/tasks/nope/events", headers=auth), 404)
    body = _problem(httpx.post(f"{server.url}/api/tasks", json={"promt": "x"}, headers=auth), 422)
    assert "prompt" in str(body["detail"])
    for bad_prompt in ("", "   ", "-", "nul\x00byte"):
        _problem(
            httpx.post(f"{server.url}/api/tasks", json={"prompt": bad_prompt}, headers=auth), 422
        )
    _problem(
        httpx.post(
            f"{server.url}/api/tasks",
            content=b"{not json",
            headers={**auth, "Content-Type": "application/json"},
        ),
        422,
    )
    _problem(
        httpx.post(
            f"{server.url}/api/tasks", json={"prompt": "x", "sandbox": "yolo"}, headers=auth
        ),
        422,
    )
    outside = _problem(
        httpx.post(
            f"{server.url}/api/tasks", json={"prompt": "x", "workdir": "/etc"}, headers=auth
        ),
        400,
    )
    assert "outside the allowed roots" in str(outside["detail"])
    # It names what changes the roots (issue 16).
    assert "--workdir-root or CODEX_TUI_SERVER_WORKDIR_ROOTS" in str(outside["detail"])
    _problem(
        httpx.post(
            f"{server.url}/api/tasks",
            json={"prompt": "x", "workdir": f"{server.workdir}/../../../etc"},
            headers=auth,
        ),
        400,
    )
    _problem(
        httpx.post(f"{server.url}/api/tasks", json={"prompt": "x", "workdir": "rel"}, headers=auth),
        400,
    )
    _problem(httpx.get(f"{server.url}/api/tasks?cursor=%%%", headers=auth), 400)
    _problem(httpx.get(f"{server.url}/api/tasks?status=bogus", headers=auth), 422)
    _problem(
        httpx.get(
            f"{server.url}/api/tasks/{created['id']}/events",
            headers={**auth, "Last-Event-ID": "abc"},
        ),
        400,
    )

    listed = httpx.get(f"{server.url}/api/tasks", headers=auth).json()["items"]
    assert [t["id"] for t in listed] == [created["id"]]
    assert listed[0]["prompt"] == "keep me"


async def test_list_is_newest_first_with_cursor_and_status_filter(server: LiveServer) -> None:
    async with server.client() as client:
        made = [
            await client.create_task(f"task {i}", workdir=str(server.workdir)) for i in range(7)
        ]
        await client.cancel_task(made[2].id)
        seen = []
        cursor = None
        while True:
            page = await client.list_tasks(limit=3, cursor=cursor)
            seen += [t.id for t in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [t.id for t in reversed(made)]
        canceled = await client.list_tasks(status=[TaskStatus.CANCELED])
        assert [t.id for t in canceled.items] == [made[2].id]
        queued = await client.list_tasks(status=["queued"])
        assert len(queued.items) == 6


async def test_cancel_of_a_queued_task_ends_it_with_a_terminal_event(server: LiveServer) -> None:
    async with server.client() as client:
        task = await client.create_task("never runs")
        canceled = await client.cancel_task(task.id)
        assert canceled.status is TaskStatus.CANCELED
        again = await client.cancel_task(task.id)
        assert again.status is TaskStatus.CANCELED
        async with bounded(60, f"the stream of canceled task {task.id} to end"):
            events = [e async for e in client.stream_events(task.id)]
        assert [e.seq for e in events] == [1, 2]
        assert all(e.kind is EventKind.STATUS for e in events)
        assert events[-1].is_terminal and events[-1].status is TaskStatus.CANCELED


async def test_tasks_are_scoped_to_their_owner(server: LiveServer) -> None:
    """A token of another user sees none of the local user's tasks (404, not 403)."""
    from server_client.server.db import create_engine
    from server_client.server.store import Store

    async with server.client() as client:
        task = await client.create_task("private")

    engine = create_engine(f"sqlite:///{server.home / 'data' / 'codex-tui.db'}")
    try:
        store = Store(engine)
        other = await store.create_user("mallory")
        token = await store.issue_token(other.id)
    finally:
        await engine.dispose()

    from server_client.client import CodexTuiClient

    async with CodexTuiClient(server.url, token) as intruder:
        assert (await intruder.me()).name == "mallory"
        assert (await intruder.list_tasks()).items == []
        for call in (intruder.get_task, intruder.cancel_task):
            with pytest.raises(NotFoundError):
                await call(task.id)
        with pytest.raises(NotFoundError):
            await anext(intruder.stream_events(task.id))
    async with server.client() as client:
        assert (await client.get_task(task.id)).status is TaskStatus.QUEUED


async def test_sdk_raises_api_error_with_the_problem(server: LiveServer) -> None:
    async with server.client() as client:
        with pytest.raises(ApiError) as info:
            await client.create_task("x", workdir="/etc")
        assert info.value.status == 400
        assert "outside the allowed roots" in (info.value.problem.detail or "")
