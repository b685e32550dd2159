"""Provides snapshot tests of a pane following a conversation at 80×24: a command whose output
streams with its timer, an agent message streaming, then an approval card with the bar of its
answer keys, and the reply box open under the transcript.

The events are handed to the pane as its stream would hand them, on frozen clocks (see
:mod:`tests.tui.test_conversation`). Update with ``pytest --snapshot-update`` and review the
report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from server_client.models import TaskStatus
from tests.support.tui_helpers import SIZE
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
