"""Provides snapshot tests of two panes at 80×24 whose tasks began, as codex does, with a few
stderr lines: each run is folded to one dimmed row; a finish toast at the top right leaves a
scrolled-up pane's ``↓ N new`` counter and the footer in sight.

Runs against a real server on loopback with tasks seeded over the real worker protocol (see
:mod:`tests.tui.test_snapshots` for how the data and the clock are made deterministic).
Update with ``pytest --snapshot-update`` and review the report.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from textual.pilot import Pilot

from codex_tui.widgets.pane_grid import PaneGrid
from server_client.models import EventIn, EventKind, TaskStatus
from tests.conftest import LiveServer, ServerFactory
from tests.support.tui_helpers import (
    SEED_TS,
    Seeded,
    SeedTask,
    seed_tasks,
    task_list,
    wait_for,
)
from tests.tui.test_snapshots import SIZE, SnapCompare, make_app, settle, settle_pane

STARTUP = [
    "Reading additional input from stdin...",
    "OpenAI Codex v0.169.0 (research preview)",
    "workdir: /srv/app",
]


def _events(prompt_word: str) -> list[EventIn]:
    def codex(data: dict[str, Any]) -> EventIn:
        return EventIn(ts=SEED_TS, kind=EventKind.CODEX, data=data)

    command = {
        "id": "item_1",
        "type": "command_execution",
        "command": f"rg -n {prompt_word} src",
        "aggregated_output": "src/app.py:3: found\n",
        "exit_code": 0,
        "status": "completed",
    }
    return [
        *(EventIn(ts=SEED_TS, kind=EventKind.STDERR, data={"line": line}) for line in STARTUP),
        codex({"type": "thread.started", "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53"}),
        codex({"type": "turn.started"}),
        codex({"type": "item.completed", "item": command}),
        codex(
            {
                "type": "item.completed",
                "item": {"id": "item_2", "type": "agent_message", "text": f"Found {prompt_word}."},
            }
        ),
    ]


@pytest.fixture
def startup_tasks(server_factory: ServerFactory) -> tuple[LiveServer, Seeded]:
    """Two completed tasks that begin with codex's start-up stderr lines."""
    server = server_factory(local_worker=False)
    specs = [
        SeedTask("Find the config loader", _events("config"), TaskStatus.COMPLETED, 0),
        SeedTask("Find the retry helper", _events("retry"), TaskStatus.COMPLETED, 0),
    ]
    return server, asyncio.run(seed_tasks(server, specs))


@pytest.mark.parametrize("toast", [False, True], ids=["panes", "finish-toast"])
def test_two_panes_fold_startup_stderr_and_a_toast_leaves_the_counter_in_sight(
    snap_compare: SnapCompare, startup_tasks: tuple[LiveServer, Seeded], toast: bool
) -> None:
    """Each pane's three start-up lines are one row; the left pane, scrolled to its top,
    counts four new events in its border; with ``toast``, a task's finish toast sits at the top
    right, over neither that counter nor the footer."""
    server, data = startup_tasks
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app, "Find the config")
        await pilot.press("o")
        await settle(pilot, app, "Find the retry")
        grid = app.screen.query_one(PaneGrid)
        await wait_for(pilot, lambda: len(grid.panes) == 2, "two panes")
        for task in data.tasks:
            await settle_pane(pilot, app, task.id)
        # The left pane is read from its top while four events came below it.
        left = grid.panes[0]
        grid.focus_pane(left)
        await pilot.press("home")
        await wait_for(pilot, lambda: not left.following, "the left pane scrolled up")
        left.transcript.count_unseen(4)
        await wait_for(pilot, lambda: left.new_below == 4, "the counter")
        if not toast:
            return
        finished = next(t for t in task_list(app).tasks if t.prompt.startswith("Find the retry"))
        app.announce_finished(finished)
        await wait_for(pilot, lambda: bool(app._notifications), "the toast")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
