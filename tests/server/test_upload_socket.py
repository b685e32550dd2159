"""The worker's upload socket (issue 14: one stream per worker): each upload message is
answered as the upload route answers the same body, over one WebSocket; a refused token ends
the socket; a worker whose socket cannot be opened uploads by requests instead."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Response, WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server_client.errors import ApiError
from server_client.models import TaskStatus, WorkerUploadResult
from server_client.server.edge import too_large_detail
from server_client.worker import api as api_module
from server_client.worker.api import UploadSocket, WorkerApi
from tests.conftest import ServerFactory, wait_until_async
from tests.support.protocol import claim_next, upload_part
from tests.support.waits import bounded


def _socket_url(http_url: str, worker_id: str) -> str:
    return "ws" + http_url.removeprefix("http") + f"/api/workers/{worker_id}/events/socket"


async def test_the_upload_socket_answers_each_message_as_the_route_would(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        local_worker=False, extra_env={"CODEX_TUI_SERVER_MAX_BODY_BYTES": str(1024 * 1024)}
    )
    async with server.client() as client:
        task = await client.create_task("uploads over the socket")
    api = WorkerApi(server.url, server.token)
    worker, claim = await claim_next(api, "socket-test")
    await api.aclose()
    auth = {"Authorization": f"Bearer {server.token}"}

    async with bounded(30, "the upload socket's answers"):
        async with connect(_socket_url(server.url, worker.id), additional_headers=auth) as ws:

            async def ask(body: str) -> dict[str, Any]:
                await ws.send(body)
                answer: dict[str, Any] = json.loads(await ws.recv())
                return answer

            parts = [upload_part(task.id, claim.lease_id, 0, ["a"])] * 2
            refused = await ask(json.dumps({"tasks": parts}))
            assert refused["status"] == 422 and "each task at most once" in refused["detail"]
            nan = '{"tasks":[' + json.dumps(upload_part(task.id, claim.lease_id, 0, []))[:-1]
            nan = nan.replace('"events": []', '"events": [{"ts": "2026-12-06T00:00:00Z", ')
            nan += '"kind": "codex", "data": {"x": NaN}}]}]}'
            assert (await ask(nan))["status"] == 422
            assert (await ask("not json"))["status"] == 422
            too_big = json.dumps(
                {"tasks": [upload_part(task.id, claim.lease_id, 0, ["x" * 1_100_000])]}
            )
            refused = await ask(too_big)
            assert refused["status"] == 413, refused
            # In the words of a request body over the limit: they name the setting.
            assert refused["detail"] == too_large_detail(1024 * 1024)
            # The limit counts bytes: 400,000 three-byte characters are over 1 MiB.
            wide = json.dumps(
                {"tasks": [upload_part(task.id, claim.lease_id, 0, ["€" * 400_000])]},
                ensure_ascii=False,
            )
            assert len(wide) < 1024 * 1024 < len(wide.encode())
            assert (await ask(wide))["status"] == 413
            # The refusals stored nothing; the socket goes on: the first events, then the
            # same again (idempotent by first_index), then the rest and the task's end.
            first = await ask(
                json.dumps({"tasks": [upload_part(task.id, claim.lease_id, 0, ["a"])]})
            )
            again = await ask(
                json.dumps({"tasks": [upload_part(task.id, claim.lease_id, 0, ["a"])]})
            )
            assert first == again and first["tasks"][0]["next_index"] == 1
            done = {"status": "completed", "event_count": 2, "exit_code": 0}
            answer = WorkerUploadResult.model_validate(
                await ask(
                    json.dumps(
                        {
                            "tasks": [
                                upload_part(task.id, claim.lease_id, 1, ["b"], finish=done),
                                upload_part("no-such-task", "x", 0, ["c"]),
                            ]
                        }
                    )
                )
            )
            assert answer.tasks[0].finished is TaskStatus.COMPLETED
            assert answer.tasks[1].problem is not None and answer.tasks[1].problem.status == 404

        async with connect(_socket_url(server.url, "not-a-worker"), additional_headers=auth) as ws:
            await ws.send('{"tasks":[]}')
            assert json.loads(await ws.recv())["status"] == 404

        stranger = {"Authorization": "Bearer not-a-token"}
        async with connect(_socket_url(server.url, worker.id), additional_headers=stranger) as ws:
            await ws.send('{"tasks":[]}')
            assert json.loads(await ws.recv())["status"] == 401
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

        # No token at all: the same refusal, in the same words, as the upload route's.
        async with httpx.AsyncClient(base_url=server.url) as anonymous:
            route = await anonymous.post(f"/api/workers/{worker.id}/events", json={"tasks": []})
        assert route.status_code == 401
        async with connect(_socket_url(server.url, worker.id)) as ws:
            await ws.send('{"tasks":[]}')
            refused = json.loads(await ws.recv())
        assert refused["status"] == 401
        assert refused["detail"] == route.json()["detail"]

    async with server.client() as client:
        async with bounded(60, f"the stream of finished task {task.id} to end"):
            events = [e async for e in client.stream_events(task.id)]
    assert [e.data.get("line") for e in events if e.kind.value == "stderr"] == ["a", "b"]
    assert events[-1].status is TaskStatus.COMPLETED


async def test_a_worker_uploads_over_its_socket_and_a_refused_token_there_is_an_api_error(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task = await client.create_task("uploads through WorkerApi")
    api = WorkerApi(server.url, server.token)
    try:
        worker, claim = await claim_next(api, "socket-api")
        body = json.dumps({"tasks": [upload_part(task.id, claim.lease_id, 0, ["a", "b"])]}).encode()
        async with bounded(30, "an upload over the socket"):
            answer = await api.upload_all(worker.id, lambda: body)
        assert answer.tasks[0].next_index == 2
        sock = api._sockets[worker.id]
        assert sock._conn is not None, "the upload went over the socket"
    finally:
        await api.aclose()
    stranger = WorkerApi(server.url, "ctu_not-a-token")
    try:
        with pytest.raises(ApiError) as refused:
            async with bounded(30, "a refused upload over the socket"):
                await stranger.upload_all(worker.id, lambda: b'{"tasks":[]}')
        assert refused.value.status == 401
        assert stranger._sockets[worker.id]._conn is None, "the refused socket was dropped"
    finally:
        await stranger.aclose()


async def test_a_worker_whose_socket_cannot_be_opened_uploads_by_requests(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server (or a proxy) that takes no WebSocket: the upload goes as a request, and the
    socket is not tried again for a while."""
    server = server_factory(local_worker=False)
    async with server.client() as client:
        task = await client.create_task("uploads without a socket")
    # A plain HTTP server without WebSocket support stands where the socket would be.
    plain = FastAPI()
    attempts: list[str] = []

    @plain.get("/{path:path}")
    async def anything(path: str) -> dict[str, str]:
        attempts.append(path)
        return {"not": "a websocket"}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    plain_server = uvicorn.Server(uvicorn.Config(plain, log_level="warning", ws="none"))
    serving = asyncio.create_task(plain_server.serve(sockets=[sock]))
    api = WorkerApi(server.url, server.token)
    try:
        await wait_until_async(lambda: plain_server.started, 10)
        worker, claim = await claim_next(api, "no-socket")
        path = f"/api/workers/{worker.id}/events"
        api._sockets[worker.id] = UploadSocket(
            f"ws://127.0.0.1:{port}{path}/socket", server.token, 5.0
        )
        for first, line in enumerate(["a", "b"]):
            body = json.dumps(
                {"tasks": [upload_part(task.id, claim.lease_id, first, [line])]}
            ).encode()
            async with bounded(30, "an upload that falls back to a request"):
                answer = await api.upload_all(worker.id, functools.partial(bytes, body))
            assert answer.tasks[0].next_index == first + 1
        assert len(attempts) == 1, "the socket was tried once, then left alone for a while"
        assert api_module.SOCKET_RETRY_S >= 30
    finally:
        await api.aclose()
        plain_server.should_exit = True
        await serving


@pytest.mark.parametrize("away", ["refused", "bad gateway"])
async def test_a_socket_refused_while_the_server_restarts_is_tried_again_at_the_next_upload(
    away: str,
) -> None:
    """Nothing listening (or a proxy's 502 in front of it) is a server away for a moment,
    not a path without WebSocket support: the socket is not left alone for SOCKET_RETRY_S,
    and the upload after the server is back goes over it."""
    app = FastAPI()

    @app.websocket("/socket")
    async def upload_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await websocket.send_text('{"tasks":[]}')
        await websocket.close()

    gate = FastAPI()  # a proxy whose upstream is down

    @gate.get("/{path:path}")
    async def bad_gateway(path: str) -> Response:  # noqa: ARG001 - any path
        return Response(status_code=502)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if away == "refused":
        sock.close()  # nothing listens on the port until the server comes back
    upload = UploadSocket(f"ws://127.0.0.1:{port}/socket", "ctu_token", 5.0)
    server: uvicorn.Server | None = None
    serving: asyncio.Task[None] | None = None
    try:
        if away == "bad gateway":
            server = uvicorn.Server(uvicorn.Config(gate, log_level="warning", ws="none"))
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            await wait_until_async(lambda: server is not None and server.started, 10)
        async with bounded(30, "an upload while the server is away"):
            assert await upload.upload(b'{"tasks":[]}') is None
        if server is not None and serving is not None:
            server.should_exit = True
            await serving
        again = socket.socket()
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        serving = asyncio.create_task(server.serve(sockets=[again]))
        await wait_until_async(lambda: server is not None and server.started, 10)
        async with bounded(30, "the upload once the server is back"):
            answer = await upload.upload(b'{"tasks":[]}')
        assert answer is not None and answer.tasks == [], "the socket was left alone"
    finally:
        await upload.aclose()
        if server is not None and serving is not None:
            server.should_exit = True
            await serving
