"""The real Codex CLI (pinned 0.169.0) end to end: `codex-tui server` → its local worker →
`codex exec --json` against the mock model server → SSE → the SDK and the CLI."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from server_client.models import Event, EventKind, TaskStatus
from tests.conftest import LiveServer, ServerFactory, wait_until
from tests.fakes.mock_model_server import MockModel, call_shell, say
from tests.support.waits import bounded

# Above the sum of any one test's own bounded waits (the cancel test: 30 + 60 + 90 s), so a
# hang fails with the message of the wait that timed out, not at the suite's timeout.
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def real_server(server_factory: ServerFactory, codex_bin: str, codex_home: Path) -> LiveServer:
    """A server whose local worker runs the real codex against the mock model."""
    return server_factory(
        codex_bin=codex_bin, fake_mode=None, extra_env={"CODEX_HOME": str(codex_home)}
    )


def _items(events: list[Event], event_type: str, item_type: str) -> list[dict[str, object]]:
    return [
        e.data["item"]
        for e in events
        if e.codex_type == event_type and e.data["item"].get("type") == item_type
    ]


async def test_real_codex_runs_a_shell_command_streamed_through_server_and_sdk(
    real_server: LiveServer, mock_model: MockModel
) -> None:
    marker = f"codex-tui-e2e-{uuid.uuid4().hex[:12]}"
    mock_model.script([call_shell(f"echo {marker}"), say(f"Echoed {marker}.")])
    async with real_server.client() as client:
        task = await client.create_task(
            "echo the marker", workdir=str(real_server.workdir), sandbox="workspace-write"
        )
        async with bounded(90, f"task {task.id}'s stream to end under the real codex"):
            events = [e async for e in client.stream_events(task.id)]
        final = await client.get_task(task.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].status is TaskStatus.COMPLETED, real_server.log()
    codex_types = [e.codex_type for e in events if e.kind is EventKind.CODEX]
    assert codex_types[0] == "thread.started"
    assert codex_types[-1] == "turn.completed"
    commands = _items(events, "item.completed", "command_execution")
    assert commands and marker in str(commands[0]["aggregated_output"])
    assert commands[0]["exit_code"] == 0
    messages = _items(events, "item.completed", "agent_message")
    assert messages[-1]["text"] == f"Echoed {marker}."
    assert any(marker in out for out in mock_model.function_call_outputs())
    assert final.status is TaskStatus.COMPLETED and final.exit_code == 0
    assert final.thread_id == next(
        e.data["thread_id"] for e in events if e.codex_type == "thread.started"
    )


def test_real_codex_submit_follow_prints_events_live_and_exits_zero(
    real_server: LiveServer, mock_model: MockModel
) -> None:
    marker = f"cli-{uuid.uuid4().hex[:12]}"
    mock_model.script([call_shell(f"echo {marker}"), say("All done.")])
    result = real_server.cli("submit", "--follow", "print the marker", timeout=90)
    assert result.returncode == 0, result.stderr + real_server.log()
    out = result.stdout
    task_id = out.splitlines()[0]
    assert len(task_id) == 12
    assert f"echo {marker}" in out
    assert "All done." in out
    assert "completed" in out
    as_json = real_server.cli("logs", "--json", task_id)
    kinds = [json.loads(line)["kind"] for line in as_json.stdout.splitlines()]
    assert kinds[0] == "status" and "codex" in kinds


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(
                proc.info["cmdline"] or ()
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def allow_danger_on_local_worker(server: LiveServer) -> None:
    """Mark the server's local worker for danger-full-access, as an admin would (S6)."""
    name = httpx.get(
        f"{server.url}/api/me", headers={"Authorization": f"Bearer {server.token}"}
    ).json()["name"]

    def marked() -> bool:
        return server.cli("admin", "worker", "allow-danger", name, "local").returncode == 0

    wait_until(marked, 30, "the local worker to register")


@pytest.mark.parametrize("sandbox", ["danger-full-access", "workspace-write"])
async def test_cancel_of_a_long_running_real_command_leaves_no_process(
    server_factory: ServerFactory,
    codex_bin: str,
    codex_home: Path,
    mock_model: MockModel,
    sandbox: str,
) -> None:
    server = server_factory(
        codex_bin=codex_bin,
        fake_mode=None,
        extra_env={
            "CODEX_HOME": str(codex_home),
            "CODEX_TUI_SERVER_ALLOWED_SANDBOXES": '["workspace-write", "danger-full-access"]',
        },
        grace_s=2.0,
    )
    if sandbox == "danger-full-access":
        allow_danger_on_local_worker(server)
    marker = f"codex-tui-sleeper-{uuid.uuid4().hex[:12]}"
    mock_model.script(
        [call_shell(f"bash -c 'exec -a {marker} sleep 120' & wait", yield_time_ms=30000)]
    )
    async with server.client() as client:
        task = await client.create_task("sleep", workdir=str(server.workdir), sandbox=sandbox)
        wait_until(lambda: _marked(marker), 60, "the command to start")
        started = time.monotonic()
        await client.cancel_task(task.id)
        async with bounded(90, f"canceled task {task.id}'s stream to end"):
            events = [e async for e in client.stream_events(task.id)]
        took = time.monotonic() - started
    assert events[-1].status is TaskStatus.CANCELED, server.log()
    assert took < 2.0 + 1.5
    assert _marked(marker) == []
    leftovers = [
        p
        for p in psutil.process_iter(["environ"])
        if (p.info["environ"] or {}).get("CODEX_TUI_TASK_ID") == task.id
    ]
    assert leftovers == []


async def test_tui_shows_a_real_codex_run_live_and_cancels_a_running_one(
    real_server: LiveServer, mock_model: MockModel
) -> None:
    from codex_tui.screens.confirm import ConfirmModal
    from tests.support.tui_helpers import event_view, log_text, running_app, wait_for
    from tests.tui.test_tui import submit

    marker = f"tui-{uuid.uuid4().hex[:10]}"
    sleeper = f"codex-tui-tui-sleeper-{uuid.uuid4().hex[:10]}"
    mock_model.script([call_shell(f"echo {marker}"), say(f"Saw {marker}.")])
    async with real_server.client() as client, running_app(client, real_server) as (app, pilot):
        view = event_view(app)
        await submit(pilot, app, "echo the marker")
        await wait_for(pilot, lambda: view.status is TaskStatus.COMPLETED, "completed", 60)
        # The status shows at once; the transcript takes its batch at the pane's next hand-over.
        await wait_for(pilot, lambda: f"Saw {marker}." in log_text(view), "the last message")
        text = log_text(view)
        assert f"echo {marker}" in text and "exit 0" in text and f"Saw {marker}." in text

        mock_model.script(
            [call_shell(f"bash -c 'exec -a {sleeper} sleep 120' & wait", yield_time_ms=30000)]
        )
        await submit(pilot, app, "sleep a long time")
        await wait_for(pilot, lambda: bool(_marked(sleeper)), "the command to run", 60)
        await wait_for(pilot, lambda: "running… " in log_text(view), "the running command")
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_for(pilot, lambda: view.status is TaskStatus.CANCELED, "canceled", 30)
    assert _marked(sleeper) == []
