"""Provides snapshot tests of a pane following a conversation at 80×24: a command whose output
streams with its timer, an agent message streaming, then an approval card with the bar of its
answer keys, and the reply box open under the transcript; and the whole dashboard, against a
real server, with a task waiting for an approval (*Needs attention*).

The events are handed to the pane as its stream would hand them, on frozen clocks (see
:mod:`tests.tui.test_conversation`). Update with ``pytest --snapshot-update`` and review the
report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from textual.pilot import Pilot

from server_client.models import (
    ApprovalKind,
    ApprovalRequest,
    EventBatch,
    EventIn,
    EventKind,
    Task,
    TaskStatus,
)
from tests.conftest import LiveServer, ServerFactory
from tests.server.test_conversations_api import owner
from tests.support.tui_helpers import (
    SEED_TS,
    SIZE,
    FrozenClock,
    closing_app,
    dashboard_ready,
    event_view,
    task_list,
    wait_for,
)
from tests.tui.test_conversation import (
    APPROVAL,
    TURN,
    PaneHost,
    conversation_task,
    feed,
    status_event,
)
from tests.tui.test_transcript import BurstClient

SnapCompare = Callable[..., bool]


def test_pane_streaming_command_and_message(snap_compare: SnapCompare) -> None:
    app = PaneHost(BurstClient())

    async def run_before(pilot: Pilot[Any]) -> None:
        app.pane.follow(conversation_task())
        await pilot.pause()
        feed(app, [*TURN[:5], *TURN[6:9]])  # the command still runs; the message streams
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_pane_approval_card_and_keys(snap_compare: SnapCompare) -> None:
    app = PaneHost(BurstClient())

    async def run_before(pilot: Pilot[Any]) -> None:
        app.pane.follow(conversation_task(TaskStatus.WAITING))
        await pilot.pause()
        feed(app, [*TURN, status_event(12, {"status": "waiting", "approval": APPROVAL})])
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_pane_turn_done_and_reply_box(snap_compare: SnapCompare) -> None:
    app = PaneHost(BurstClient())

    async def run_before(pilot: Pilot[Any]) -> None:
        app.pane.follow(conversation_task(TaskStatus.IDLE))
        await pilot.pause()
        feed(app, [*TURN, status_event(12, {"status": "idle", "turns": 1})])
        await pilot.pause()
        app.pane.transcript.focus()
        await pilot.press("i")
        await pilot.press(*"and the docs")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def seed_conversation(server: LiveServer) -> tuple[Task, FrozenClock]:
    """A conversation waiting for an approval on ``server``, played over the worker protocol:
    a turn whose command completed and whose message still streams, then an approval asked.
    Returns the task and a clock 5m20s after it was created."""
    async with owner(server) as me:
        task = await me.client.create_task("Tidy the build directory", approval_policy="on-request")
        worker = await me.worker("devbox")
        claim = await me.claim(worker)
        events = [
            EventIn(ts=SEED_TS, kind=EventKind.CODEX, data=event.data)
            for event in [*TURN[:3], TURN[5], *TURN[6:9], TURN[10]]
        ]
        batch = EventBatch(lease_id=claim.lease_id, first_index=0, events=events)
        await me.api.upload(worker.id, task.id, batch.model_dump_json().encode())
        body = ApprovalRequest(
            lease_id=claim.lease_id,
            item_id="c2",
            kind=ApprovalKind.COMMAND,
            command="rm -rf build",
            cwd="/srv/app",
            reason="clean the build output before the release",
        )
        response = await me.http.post(
            f"/api/workers/{worker.id}/tasks/{task.id}/approvals",
            content=body.model_dump_json(),
        )
        assert response.status_code == 200, response.text
        task = await me.client.get_task(task.id)
    clock = FrozenClock()
    clock.set_after(task.created_at, timedelta(minutes=5, seconds=20))
    return task, clock


def test_dashboard_waiting_for_an_approval(
    snap_compare: SnapCompare, server_factory: ServerFactory
) -> None:
    server = server_factory(local_worker=False)
    task, clock = asyncio.run(seed_conversation(server))
    app = closing_app(server.client(), clock=clock, default_workdir="/srv/app", poll_interval_s=0.2)

    async def run_before(pilot: Pilot[Any]) -> None:
        await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
        tasks = task_list(app)
        await wait_for(pilot, lambda: tasks.loaded, "the first poll")
        tasks.select_task(task.id)
        view = event_view(app)
        await wait_for(pilot, lambda: view.has_class("-approval"), "the approval bar")
        await pilot.press("enter")
        app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
