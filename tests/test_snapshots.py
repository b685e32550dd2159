"""Provides snapshot tests of the dashboard, compose and confirm screens at 80×24.

Every snapshot runs against a real server on loopback. The data is made deterministic by
:func:`tests.tui_helpers.seed_tasks` (fixed prompts and events, uploaded over the real worker
protocol) and a clock frozen relative to the tasks' creation times; nothing random (task ids,
ports, temporary paths) is on screen. Update with ``pytest --snapshot-update`` and review the
report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from codex_tui.app import CodexTuiApp
from codex_tui.screens.compose import ComposeScreen
from codex_tui.screens.confirm import ConfirmModal
from server_client.client import CodexTuiClient
from tests.conftest import LiveServer, ServerFactory, free_port
from tests.tui_helpers import (
    SEED_TS,
    FrozenClock,
    Seeded,
    closing_app,
    dashboard_ready,
    event_view,
    seed_tasks,
    task_list,
    wait_for,
)

SIZE = (80, 24)
SnapCompare = Callable[..., bool]
RunBefore = Callable[[Pilot[Any]], Awaitable[None]]


@pytest.fixture
def seeded(server_factory: ServerFactory) -> tuple[LiveServer, Seeded]:
    """A server without a local worker holding :data:`tests.tui_helpers.SEED_TASKS`."""
    server = server_factory(local_worker=False)
    return server, asyncio.run(seed_tasks(server))


def make_app(server: LiveServer, clock: FrozenClock | None = None) -> CodexTuiApp:
    """The app for a snapshot: its own client (closed in the app's loop) and a frozen clock."""
    return closing_app(
        server.client(),
        clock=clock or FrozenClock(SEED_TS),
        default_workdir="/srv/app",
        poll_interval_s=0.2,
    )


async def settle(pilot: Pilot[Any], app: CodexTuiApp, task_index: int | None = None) -> None:
    """Wait until the list is loaded and the selected task's events are all on screen."""
    await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
    tasks = task_list(app)
    view = event_view(app)
    await wait_for(pilot, lambda: tasks.loaded, "the first poll")
    if task_index is None:
        return
    await wait_for(pilot, lambda: len(tasks.tasks) > task_index, "the tasks")
    wanted = tasks.tasks[task_index]
    await wait_for(
        pilot,
        lambda: view.task_id == wanted.id and view.last_seq == wanted.last_seq and not view.pending,
        f"every event of task {task_index}",
    )


def test_dashboard_completed_task_tail(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]
) -> None:
    """The completed task (third row) is selected: the view follows the end of its log."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        await pilot.press("down", "down")
        await settle(pilot, app, 2)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_dashboard_completed_task_top(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]
) -> None:
    """Tab into the log and press Home: the first events of the completed task."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        await pilot.press("down", "down")
        await settle(pilot, app, 2)
        await pilot.press("tab", "home")
        await wait_for(pilot, lambda: not event_view(app).following, "the view to stop following")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_dashboard_running_task(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]
) -> None:
    """The running task (second row): its command is still running."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        await pilot.press("down")
        await settle(pilot, app, 1)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_confirm_cancel_modal(snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]) -> None:
    """``x`` on the running task asks first."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        await pilot.press("down")
        await settle(pilot, app, 1)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the modal")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compose_screen(snap_compare: SnapCompare, server_factory: ServerFactory) -> None:
    """``n`` opens the compose screen with the default workdir filled in."""
    app = make_app(server_factory(local_worker=False))

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose")
        await pilot.press(*"Add a --json flag")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compose_screen_error(snap_compare: SnapCompare, server_factory: ServerFactory) -> None:
    """ctrl+s with an empty prompt shows the error inline."""
    app = make_app(server_factory(local_worker=False))

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose")
        await pilot.press("ctrl+s")
        screen = app.screen
        await wait_for(pilot, lambda: isinstance(screen, ComposeScreen) and screen.error, "error")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_empty_dashboard(snap_compare: SnapCompare, server_factory: ServerFactory) -> None:
    """No tasks yet: both panes say how to start one."""
    app = make_app(server_factory(local_worker=False))

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_offline_dashboard(snap_compare: SnapCompare) -> None:
    """The server cannot be reached: an error line in the list and a notification."""
    client = CodexTuiClient(f"http://127.0.0.1:{free_port()}", "ctu_nobody")
    app = closing_app(client, clock=FrozenClock(SEED_TS), poll_interval_s=0.2)

    async def run_before(pilot: Pilot[Any]) -> None:
        await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
        await wait_for(pilot, lambda: task_list(app).error is not None, "the error line")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
