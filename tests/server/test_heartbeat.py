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
from sse_starlette import ServerSentEvent
from starlette.requests import Request

import server_client.worker.agent as agent_module
from server_client.models import EventBatch, EventIn, EventKind, TaskCreate, WorkerHello, utcnow
from server_client.server.app import create_app
from server_client.server.db import create_engine, migrate
from server_client.server.hub import Hub
from server_client.server.main import _Server
from server_client.server.routes_tasks import REPLAY_PAGE, _follow, _follow_many, _Followed
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


def _seqs(frames: list[ServerSentEvent | bytes]) -> list[int]:
    """The seqs of the events in a stream's frames (``id: N`` or ``id: TASK:N`` lines)."""
    text = b"".join(f for f in frames if isinstance(f, bytes)).decode()
    return [int(line.rpartition(":")[2]) for line in text.splitlines() if line.startswith("id:")]


async def test_a_stream_replaying_a_long_log_ends_after_its_page_once_shutdown_began(
    tmp_path: Path,
) -> None:
    """E5 mid-replay: once the hub is closed, a stream still replaying a long log sends the
    page it has read and ends, instead of replaying the rest first (which, to a slow client,
    could outlast uvicorn's graceful-shutdown timeout and be cut mid-response); the client
    resumes elsewhere from the last seq it got. Both the one-task and the many-task stream."""
    engine = create_engine(f"sqlite:///{tmp_path / 'replay.db'}")
    try:
        await migrate(engine)
        store = Store(engine)
        user = await store.create_user("replay")
        task = await store.create_task(user, TaskCreate(prompt="long"), None)
        worker = await store.connect_worker(user, WorkerHello(name="w", workdir_roots=["/"]))
        claim = await store.claim(user, worker)
        assert claim is not None, "the worker claimed the queued task"
        events = [
            EventIn(ts=utcnow(), kind=EventKind.CODEX, data={"text": f"event {i}"})
            for i in range(3 * REPLAY_PAGE)
        ]
        batch = EventBatch(lease_id=claim.lease_id, first_index=0, events=events)
        await store.append_events(user, worker.id, task.id, batch)
        task_pk, task = await store.task_pk(user, task.id)
        assert task.last_seq > 3 * REPLAY_PAGE, "the log is more than three pages long"
        hub = Hub()
        hub.close()  # the server began shutting down
        request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
        one = [frame async for frame in _follow(request, store, hub, task, task_pk, 0)]
        assert _seqs(one) == list(range(1, REPLAY_PAGE + 1))
        followed = [_Followed(task.id, task_pk, 0, ended=False)]
        many = [frame async for frame in _follow_many(request, store, hub, followed)]
        assert _seqs(many) == list(range(1, REPLAY_PAGE + 1))
    finally:
        await engine.dispose()


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
