"""SSE heartbeats and shutdown (docs/reliability.md E3, E5) on a real uvicorn server in-process,
with a short heartbeat interval so the test is quick; and the worker's heartbeat, its signals
long poll, which a burst of task starts restarts only a few times."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

import server_client.worker.agent as agent_module
from server_client.server.app import create_app
from server_client.server.db import create_engine, migrate
from server_client.server.main import _Server
from server_client.server.settings import ServerSettings
from server_client.server.store import Store
from server_client.worker.agent import SIGNALS_RESTART_S, WorkerAgent
from server_client.worker.api import WorkerApi
from server_client.worker.runner import ExecRunner
from server_client.worker.settings import WorkerSettings
from tests.conftest import free_port, wait_until_async
from tests.support.waits import bounded, within


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
                first = await within(anext(lines), 10, "the stream's first bytes")
                assert first.startswith(":"), "a comment is sent at once"
                pings = 0
                async with bounded(10, "two heartbeats"):
                    async for line in lines:
                        if line.startswith(": ping"):
                            pings += 1
                            if pings == 2:
                                break
                server.handle_exit(signal.SIGTERM, None)
                async with bounded(5, "shutdown to end the open stream"):
                    rest = [line async for line in lines]
                assert not any(line.startswith("id:") for line in rest)
        await within(serving, 10, "uvicorn to exit after SIGTERM")
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)


class _SignalsApi:
    """Stands in for WorkerApi: records each signals long poll, which waits until cancelled."""

    def __init__(self) -> None:
        self.polls: list[list[str]] = []
        self.times: list[float] = []
        """When each poll began, on the event loop's clock (s)."""

    async def signals(self, worker_id: str, task_ids: Sequence[str], wait_s: float) -> Any:
        self.polls.append(list(task_ids))
        self.times.append(asyncio.get_running_loop().time())
        await asyncio.Event().wait()


async def test_a_burst_of_task_starts_restarts_the_signals_poll_a_few_times_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The burst must fit in the shortest time between restarts, counted from the first poll:
    # 0.1 s is less than a loaded box may take away from the test between two of its steps,
    # and a second restart then came during the burst. The test makes it 10 times longer.
    restart_s = 10 * SIGNALS_RESTART_S
    monkeypatch.setattr(agent_module, "SIGNALS_RESTART_S", restart_s)
    agent = WorkerAgent(WorkerSettings(server="http://127.0.0.1:9", token=SecretStr("t")))
    api = _SignalsApi()
    agent.api = cast(WorkerApi, api)
    agent.worker_id = "w1"
    polling = asyncio.create_task(agent._signals_loop())
    try:
        await wait_until_async(lambda: len(api.polls) == 1, what="the first signals poll")
        for i in range(50):  # 50 tasks start, one after the other
            agent._runners[f"t{i}"] = cast(ExecRunner, object())
            agent._changed.set()
            await asyncio.sleep(0)
        burst_s = asyncio.get_running_loop().time() - api.times[0]
        assert burst_s < restart_s, f"the burst took {burst_s:.2f} s: the test cannot judge"
        await wait_until_async(lambda: len(api.polls[-1]) == 50, what="a poll of all 50")
        # Restarted once, after SIGNALS_RESTART_S, not once per task (each restart drops a
        # connection).
        assert len(api.polls) == 2
        assert api.times[1] - api.times[0] >= restart_s * 0.9

        # Tasks that end need no restart: the poll still covers every running task.
        agent._runners.clear()
        agent._changed.set()
        await wait_until_async(lambda: not agent._changed.is_set(), what="the change seen")
        assert len(api.polls) == 2
        agent._runners["late"] = cast(ExecRunner, object())
        agent._changed.set()
        await wait_until_async(lambda: api.polls[-1] == ["late"], what="a poll of the new task")
        assert len(api.polls) == 3
    finally:
        polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)
