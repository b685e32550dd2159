"""Which runtime the worker runs a claimed task with (WorkerAgent.runtime_of), and that it
announces its default."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from server_client.models import Claim, Runtime, Sandbox, Task, TaskStatus, utcnow
from server_client.worker.agent import WorkerAgent
from server_client.worker.settings import WorkerSettings


def claim(runtime: Runtime | None, requested: Runtime | None) -> Claim:
    task = Task(
        id="t1",
        prompt="p",
        workdir=None,
        model=None,
        sandbox=Sandbox.WORKSPACE_WRITE,
        status=TaskStatus.RUNNING,
        created_at=utcnow(),
        runtime=runtime,
        requested_runtime=requested,
    )
    return Claim(task=task, lease_id="l1")


@pytest.mark.parametrize(
    ("default", "runtime", "requested", "expected"),
    [
        (Runtime.APP_SERVER, None, None, Runtime.APP_SERVER),
        (Runtime.EXEC, None, None, Runtime.EXEC),
        (Runtime.APP_SERVER, None, Runtime.EXEC, Runtime.EXEC),
        (Runtime.EXEC, None, Runtime.APP_SERVER, Runtime.APP_SERVER),
        (Runtime.EXEC, Runtime.APP_SERVER, Runtime.EXEC, Runtime.APP_SERVER),
    ],
)
async def test_the_recorded_then_requested_then_default_runtime_wins(
    default: Runtime, runtime: Runtime | None, requested: Runtime | None, expected: Runtime
) -> None:
    settings = WorkerSettings(server="http://127.0.0.1:9", token=SecretStr("t"), runtime=default)
    agent = WorkerAgent(settings)
    try:
        assert agent.runtime_of(claim(runtime, requested)) is expected
    finally:
        await agent.api.aclose()


def test_the_default_runtime_is_app_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODEX_TUI_WORKER_RUNTIME", raising=False)
    settings = WorkerSettings(server="http://s", token=SecretStr("t"))
    assert settings.runtime is Runtime.APP_SERVER
    monkeypatch.setenv("CODEX_TUI_WORKER_RUNTIME", "exec")
    assert WorkerSettings(server="http://s", token=SecretStr("t")).runtime is Runtime.EXEC
