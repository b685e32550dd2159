"""The worker's multiplexed upload route (issue 14) over HTTP: a body it cannot take gets a 422
problem naming what is wrong and stores nothing; the token and the worker are judged for the
whole request; each task's part is answered on its own."""

from __future__ import annotations

import httpx

from server_client.models import TaskStatus, WorkerUploadResult
from server_client.worker.api import WorkerApi
from tests.conftest import ServerFactory
from tests.support.protocol import claim_next, upload_part
from tests.support.waits import bounded


async def test_the_upload_route_answers_each_part_and_refuses_bad_bodies_whole(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task = await client.create_task("uploads over http")
    api = WorkerApi(server.url, server.token)
    worker, claim = await claim_next(api, "route-test")
    await api.aclose()
    url = f"{server.url}/api/workers/{worker.id}/events"
    auth = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(headers=auth) as http:
        bad_bodies = {
            "each task at most once": [upload_part(task.id, claim.lease_id, 0, ["a"])] * 2,
            "NaN": [upload_part(task.id, claim.lease_id, 0, [])],
        }
        for needle, parts in bad_bodies.items():
            content = httpx.Request("POST", url, json={"tasks": parts}).content
            if needle == "NaN":
                content = content.replace(
                    b'"events":[]',
                    b'"events":[{"ts":"2026-12-06T00:00:00Z","kind":"codex","data":{"x":NaN}}]',
                )
            refused = await http.post(
                url, content=content, headers={"Content-Type": "application/json"}
            )
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert needle in refused.text
        done = {"status": "completed", "event_count": 2, "exit_code": 0}
        answer = await http.post(
            url,
            json={
                "tasks": [
                    upload_part(task.id, claim.lease_id, 0, ["a", "b"], finish=done),
                    upload_part("no-such-task", "x", 0, ["c"]),
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        results = WorkerUploadResult.model_validate_json(answer.content).tasks
        assert results[0].finished is TaskStatus.COMPLETED and results[0].next_index == 2
        assert results[1].problem is not None and results[1].problem.status == 404
        stranger = await http.post(
            url, json={"tasks": []}, headers={"Authorization": "Bearer not-a-token"}
        )
        assert stranger.status_code == 401
        elsewhere = await http.post(
            f"{server.url}/api/workers/not-a-worker/events", json={"tasks": []}
        )
        assert elsewhere.status_code == 404
    async with server.client() as client:
        async with bounded(60, f"the stream of finished task {task.id} to end"):
            events = [e async for e in client.stream_events(task.id)]
    assert [e.data.get("line") for e in events if e.kind.value == "stderr"] == ["a", "b"]
    assert events[-1].status is TaskStatus.COMPLETED
