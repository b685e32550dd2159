"""SSE heartbeats and shutdown (reliability.md E3, E5) on a real uvicorn server in-process,
with a short heartbeat interval so the test is quick."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import uvicorn

from server_client.server.app import create_app
from server_client.server.db import create_engine, migrate
from server_client.server.main import _Server
from server_client.server.settings import ServerSettings
from server_client.server.store import Store
from tests.conftest import free_port, wait_until_async


async def _token(db_url: str) -> str:
    engine = create_engine(db_url)
    try:
        await migrate(engine)
        store = Store(engine)
        user = await store.create_user("hb")
        return await store.issue_token(user.id)
    finally:
        await engine.dispose()


async def test_heartbeats_arrive_and_shutdown_closes_streams(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'hb.db'}"
    token = await _token(db_url)
    app = create_app(ServerSettings(db_url=db_url, heartbeat_s=0.2))
    port = free_port()
    server = _Server(uvicorn.Config(app, port=port, log_level="warning"), app.state.hub)
    serving = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            await wait_until_async(lambda: server.started, 10, "uvicorn to start")
            task = (await http.post("/api/tasks", json={"prompt": "wait"})).json()
            async with http.stream("GET", f"/api/tasks/{task['id']}/events") as response:
                lines = response.aiter_lines()
                first = await anext(lines)
                assert first.startswith(":"), "a comment is sent at once"
                pings = 0
                async with asyncio.timeout(10):
                    async for line in lines:
                        if line.startswith(": ping"):
                            pings += 1
                            if pings == 2:
                                break
                server.handle_exit(signal.SIGTERM, None)
                async with asyncio.timeout(5):
                    rest = [line async for line in lines]
                assert not any(line.startswith("id:") for line in rest)
        async with asyncio.timeout(10):
            await serving
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
