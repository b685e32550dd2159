"""Provides a Pilot test of a conversation driven from the TUI against a real server on
loopback: the test plays the worker over the worker protocol (uploading deltas, asking for an
approval, finishing the turn idle), and the TUI, keyboard only at 80×24, is notified, answers
the approval with its key (the server then holds the answer), interrupts the turn and replies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from codex_tui.app import CodexTuiApp
from server_client.client import CodexTuiClient
from server_client.models import (
    ApprovalDecision,
    ApprovalState,
    EventBatch,
    EventIn,
    EventKind,
    FinishRequest,
    Task,
    TaskStatus,
)
from tests.conftest import ServerFactory
from tests.server.test_conversations_api import owner
from tests.support.tui_helpers import (
    dashboard_ready,
    event_view,
    log_text,
    row_texts,
    running_app,
    task_list,
    wait_for,
)


def codex_in(data: dict[str, Any]) -> EventIn:
    """A codex event as a worker uploads it."""
    return EventIn(ts=datetime.now(UTC), kind=EventKind.CODEX, data=data)


class Poll:
    """The newest record of a task, fetched in the background while the app runs (a Pilot
    wait cannot await)."""

    def __init__(self, client: CodexTuiClient, task_id: str) -> None:
        self.client = client
        self.task_id = task_id
        self.task: Task | None = None

    async def refresh(self) -> None:
        self.task = await self.client.get_task(self.task_id)


def toasts(app: CodexTuiApp) -> list[str]:
    """The titles of the toasts shown so far."""
    return [notification.title for notification in app._notifications]


async def test_an_approval_answered_with_its_key_an_interrupt_and_a_reply(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_factory(local_worker=False)
    async with owner(server) as me:
        task = await me.client.create_task("deploy the docs", approval_policy="on-request")
        worker = await me.worker()
        claim = await me.claim(worker)
        events = [
            codex_in({"type": "turn.started", "turn_id": "t1"}),
            codex_in(
                {
                    "type": "item.delta",
                    "item_id": "m1",
                    "stream": "agent_message",
                    "delta": "Deploying the docs",
                }
            ),
        ]
        batch = EventBatch(lease_id=claim.lease_id, first_index=0, events=events)
        await me.api.upload(worker.id, task.id, batch.model_dump_json().encode())
        asked = await me.ask(worker, claim)
        assert asked.status_code == 200, asked.text
        approval_id = asked.json()["id"]

        bells: list[None] = []
        monkeypatch.setattr(CodexTuiApp, "bell", lambda _app: bells.append(None))
        async with running_app(me.client, server) as (app, pilot):
            await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
            tasks = task_list(app)
            await wait_for(pilot, lambda: tasks.loaded, "the first poll")
            assert any("waiting for approval" in row for row in row_texts(tasks))
            await wait_for(pilot, lambda: "! Approval needed" in toasts(app), "the toast")
            assert bells, "the bell rang for the approval"

            tasks.select_task(task.id)
            view = event_view(app)
            await wait_for(pilot, lambda: "⚠ approval needed" in log_text(view), "the card")
            text = log_text(view)
            assert "$ make deploy" in text and "in /srv" in text
            assert "codex ✎" in text and "Deploying the docs" in text  # streamed so far
            await pilot.press("enter")  # from the list into the pane
            assert app.focused is view.transcript
            await pilot.press("y")
            await wait_for(pilot, lambda: "→ accepted by" in log_text(view), "the answer")
            approval = await me.client.get_approval(approval_id)
            assert approval.state is ApprovalState.ANSWERED
            assert approval.decision is ApprovalDecision.ACCEPT
            await wait_for(pilot, lambda: view.status is TaskStatus.RUNNING, "running again")

            await pilot.press("s")
            await wait_for(pilot, lambda: "interrupt requested" in log_text(view), "interrupt")
            poll = Poll(me.client, task.id)
            await poll.refresh()
            assert poll.task is not None and poll.task.interrupt_requested

            # The worker interrupts the turn and ends it idle.
            more = [codex_in({"type": "turn.interrupted", "turn_id": "t1"})]
            batch = EventBatch(lease_id=claim.lease_id, first_index=2, events=more)
            await me.api.upload(worker.id, task.id, batch.model_dump_json().encode())
            await me.api.finish(
                worker.id,
                task.id,
                FinishRequest(lease_id=claim.lease_id, status=TaskStatus.IDLE, event_count=3),
            )
            await wait_for(pilot, lambda: view.status is TaskStatus.IDLE, "the turn to end")
            text = log_text(view)
            assert "■ turn interrupted" in text and "reply with i" in text
            assert view.has_class("-bar") and not view.has_class("-approval")
            await wait_for(
                pilot,
                lambda: any("idle, ready for a reply" in row for row in row_texts(tasks)),
                "the task ready for a reply",
            )

            await pilot.press("i")
            assert view.replying
            await pilot.press(*"now check the links", "enter")
            await wait_for(pilot, lambda: "› you: now check the links" in log_text(view), "reply")
            assert not view.replying and app.focused is view.transcript
            await poll.refresh()
            assert poll.task is not None
            assert poll.task.status is TaskStatus.QUEUED and poll.task.pending_replies == 1
