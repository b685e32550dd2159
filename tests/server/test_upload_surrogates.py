"""A lone UTF-16 surrogate in an upload (issue 17 item 4; docs/reliability.md S10, T2):
``"\\ud800"`` is valid JSON and pydantic takes it, but UTF-8, and so the store, cannot hold it.
The server stores such text with each lone surrogate replaced by ``?`` (as the worker does with
codex's lines, server_client.codex.lines), on SQLite and on PostgreSQL, through the worker's
upload, the per-task upload and the finish; an id with one (no id of the server's has one) is
refused with a 422 naming it. Never a 500, and the other parts of the same upload are stored."""

from __future__ import annotations

import json

import httpx
import pytest

from server_client.models import EventKind, TaskStatus, WorkerHello, WorkerUploadResult
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory

#: A lone high surrogate, as JSON text (the escape itself: a raw one is not valid UTF-8).
LONE = "\\ud800"
#: A lone low surrogate, as JSON text.
LOW = "\\udfff"


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> LiveServer:
    """A server without a local worker on a fresh database of each kind."""
    postgres = request.param == "postgresql"
    db_url = str(request.getfixturevalue("pg_url")) if postgres else None
    return server_factory(local_worker=False, db_url=db_url)


def _event(data_json: str) -> str:
    return f'{{"ts":"2026-12-06T00:00:00Z","kind":"codex","data":{data_json}}}'


async def test_lone_surrogates_are_stored_as_question_marks_and_never_refuse_other_parts(
    server: LiveServer,
) -> None:
    async with server.client() as client:
        first = await client.create_task("surrogates in the events")
        second = await client.create_task("plain events beside them")
        third = await client.create_task("surrogates through the per-task routes")
    api = WorkerApi(server.url, server.token)
    worker = await api.connect(WorkerHello(name="hand", workdir_roots=["/"], max_tasks=3))
    claims = {}
    for _ in range(3):
        claim = await api.claim(worker.id, 5)
        assert claim is not None
        claims[claim.task.id] = claim
    await api.aclose()
    url = f"{server.url}/api/workers/{worker.id}"
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}

    poisoned = _event(f'{{"type":"item.completed","text":"a{LONE}b","{LOW}":[1,"{LOW}"]}}')
    plain = _event('{"type":"plain"}')
    finish = f'{{"status":"failed","event_count":1,"error":"boom {LONE}","thread_id":"t{LONE}"}}'
    parts = [
        f'{{"task_id":"{first.id}","lease_id":"{claims[first.id].lease_id}","first_index":0,'
        f'"thread_id":"th{LONE}","events":[{poisoned}],"finish":{finish}}}',
        f'{{"task_id":"{second.id}","lease_id":"{claims[second.id].lease_id}","first_index":0,'
        f'"events":[{plain}]}}',
    ]
    body = f'{{"tasks":[{",".join(parts)}]}}'.encode()
    json.loads(body)  # valid JSON, surrogates and all
    async with httpx.AsyncClient(headers=headers, timeout=15) as http:
        answer = await http.post(f"{url}/events", content=body)
        assert answer.status_code == 200, answer.text
        results = WorkerUploadResult.model_validate_json(answer.content).tasks
        assert results[0].problem is None and results[0].finished is TaskStatus.FAILED
        assert results[1].problem is None and results[1].next_index == 1
        assert len(results) == 2

        # An id with one is refused by validation: a 422 naming the field, nothing stored.
        bad_id = f'{{"task_id":"x{LONE}","lease_id":"y","first_index":0,"events":[{poisoned}]}}'
        refused = await http.post(f"{url}/events", content=f'{{"tasks":[{bad_id}]}}'.encode())
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "tasks.0.task_id" in refused.json()["detail"], refused.text

        # The per-task upload and the finish route take them too.
        lease = claims[third.id].lease_id
        batch = (
            f'{{"lease_id":"{lease}","first_index":0,"thread_id":"{LONE}","events":[{poisoned}]}}'
        )
        appended = await http.post(f"{url}/tasks/{third.id}/events", content=batch.encode())
        assert appended.status_code == 200, appended.text
        assert appended.json()["next_index"] == 1
        ended = f'{{"lease_id":"{lease}","status":"completed","event_count":1,"error":"e{LOW}"}}'
        finished = await http.post(f"{url}/tasks/{third.id}/finish", content=ended.encode())
        assert finished.status_code == 200, finished.text
        assert finished.json()["status"] == "completed"

    async with server.client() as client:
        for task_id in (first.id, third.id):
            events = await client.get_events(task_id)
            codex = [e for e in events if e.kind is EventKind.CODEX]
            assert [e.data for e in codex] == [
                {"type": "item.completed", "text": "a?b", "?": [1, "?"]}
            ], codex
        first_events = await client.get_events(first.id)
        assert first_events[-1].status is TaskStatus.FAILED
        assert "boom ?" in json.dumps(first_events[-1].data), first_events[-1].data
        assert (await client.get_task(first.id)).status is TaskStatus.FAILED
        stored = [e.data for e in await client.get_events(second.id) if e.kind is EventKind.CODEX]
        assert stored == [{"type": "plain"}]
        assert (await client.get_task(third.id)).status is TaskStatus.COMPLETED
