"""Input a database cannot store is a 4xx, never a 500 (docs/reliability.md S10), on SQLite and on
PostgreSQL alike: PostgreSQL refuses NUL characters in text and numbers past a column's range
(``invalid byte sequence for encoding "UTF8": 0x00``, ``value out of int32 range``), where
SQLite stores or compares them without complaint (NUL characters that SQLite takes are a
2xx there; PostgreSQL must refuse them with a 4xx). Nothing already stored is harmed: a pairing
code refused for such a reason still works afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server_client.server.store import encode_cursor
from tests.conftest import LiveServer, ServerFactory


@pytest.fixture(params=["sqlite", "postgresql"])
def db_kind(request: pytest.FixtureRequest) -> str:
    """Which database the server of the test runs on."""
    return str(request.param)


@pytest.fixture
def server(
    db_kind: str, request: pytest.FixtureRequest, server_factory: ServerFactory
) -> LiveServer:
    """A server without a local worker on a fresh database of each kind."""
    db_url = str(request.getfixturevalue("pg_url")) if db_kind == "postgresql" else None
    return server_factory(local_worker=False, db_url=db_url)


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client with the server's local user token."""
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=15) as client:
        yield client


def _not_a_500(response: httpx.Response) -> bool:
    """Assert the answer is no 5xx and a refusal carries a JSON problem body; True when the
    request was refused (4xx), False when it was taken (SQLite stores NUL characters)."""
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code < 400:
        return False
    assert response.headers["content-type"].startswith("application/problem+json")
    return True


def test_nul_characters_in_ids_names_and_bodies_are_never_a_500(
    db_kind: str, http: httpx.Client, tmp_path: Path
) -> None:
    postgres = db_kind == "postgresql"  # which refuses to store them
    task = http.post("/api/tasks", json={"prompt": "real", "workdir": str(tmp_path)})
    assert task.status_code == 201, task.text
    task_id = task.json()["id"]

    assert _not_a_500(http.get("/api/tasks/abc%00def"))
    assert _not_a_500(http.post("/api/tasks/abc%00def/cancel"))
    page = {"Accept": "application/json"}
    assert _not_a_500(http.get("/api/tasks/abc%00def/events", headers=page))
    assert _not_a_500(http.get("/api/tasks", params={"q": "a\x00b"}))
    _not_a_500(http.get("/api/tasks", params={"worker": "a\x00b"}))
    assert _not_a_500(http.post("/api/tasks", json={"prompt": "x", "worker": "a\x00b"}))
    refused = _not_a_500(http.post("/api/workers/connect", json={"name": "a\x00b"}))
    assert refused or not postgres
    assert _not_a_500(http.delete("/api/workers/a%00b"))

    worker = http.post("/api/workers/connect", json={"name": "w", "workdir_roots": ["/"]})
    assert worker.status_code == 200, worker.text
    worker_id = worker.json()["id"]
    _not_a_500(http.post(f"/api/workers/{worker_id}/signals", json={"task_ids": ["a\x00b"]}))
    claim = http.post(f"/api/workers/{worker_id}/claim", params={"wait": 5})
    assert claim.status_code == 200, claim.text
    lease = claim.json()["lease_id"]
    events = f"/api/workers/{worker_id}/tasks/{task_id}/events"
    upload = {"lease_id": lease, "first_index": 0, "events": [], "thread_id": "t\x00"}
    assert _not_a_500(http.post(events, json=upload)) or not postgres

    code = http.post("/api/pairing-codes").json()["code"]
    if _not_a_500(http.post("/api/pair", json={"code": code, "name": "n\x00"})):
        paired = http.post("/api/pair", json={"code": code, "name": "fine"})
        assert paired.status_code == 200, "the refused redemption used up the code"
    else:
        assert not postgres

    finish = f"/api/workers/{worker_id}/tasks/{task_id}/finish"
    failed = {"lease_id": lease, "status": "failed", "event_count": 0, "error": "e\x00"}
    if _not_a_500(http.post(finish, json=failed)):
        assert http.get(f"/api/tasks/{task_id}").json()["status"] == "running"
        ok = {"lease_id": lease, "status": "completed", "event_count": 0, "exit_code": 0}
        done = http.post(finish, json=ok)
        assert done.status_code == 200 and done.json()["status"] == "completed"
    else:
        assert not postgres


def test_numbers_past_a_column_are_refused_or_clamped(http: httpx.Client, tmp_path: Path) -> None:
    task = http.post("/api/tasks", json={"prompt": "real", "workdir": str(tmp_path)})
    task_id = task.json()["id"]
    page = {"Accept": "application/json"}
    for params in ({"after": 2**40}, {"after": 2**70}, {"before": 2**40}, {"before": 2**70}):
        got = http.get(f"/api/tasks/{task_id}/events", params=params, headers=page)
        assert not _not_a_500(got) or got.status_code == 422, (params, got.text)
    last = http.get(f"/api/tasks/{task_id}/events", params={"before": 2**31 - 1}, headers=page)
    assert [e["seq"] for e in last.json()] == [1]
    assert _not_a_500(http.get("/api/tasks", params={"cursor": encode_cursor(2**70)}))
    assert http.get("/api/tasks", params={"cursor": encode_cursor(2**63 - 1)}).json()["items"]

    worker = http.post("/api/workers/connect", json={"name": "w", "workdir_roots": ["/"]})
    worker_id = worker.json()["id"]
    lease = http.post(f"/api/workers/{worker_id}/claim", params={"wait": 5}).json()["lease_id"]
    finish = f"/api/workers/{worker_id}/tasks/{task_id}/finish"
    body = {"lease_id": lease, "status": "failed", "event_count": 0, "exit_code": 2**40}
    response = http.post(finish, json=body)
    assert response.status_code < 500, response.text
    body["exit_code"] = 1
    assert http.post(finish, json=body).status_code == 200
