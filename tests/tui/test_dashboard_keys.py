"""Provides tests of the dashboard's task keys from a focused pane (cancel, re-run, new task)
and of the compose screen's draft and workdir prefill."""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from codex_tui.app import CodexTuiApp
from codex_tui.commands import binding_commands
from codex_tui.screens.compose import ComposeScreen
from codex_tui.screens.confirm import ConfirmModal
from codex_tui.screens.dashboard import DashboardScreen
from codex_tui.screens.export import _export
from server_client.models import TaskStatus, WorkerHello
from server_client.worker.api import WorkerApi
from tests.conftest import ServerFactory
from tests.support.tui_helpers import (
    SIZE,
    dashboard_ready,
    running_app,
    seed_tasks,
    task_list,
    type_text,
    wait_for,
)
from tests.tui.test_panes import create_tasks, grid, open_panes


async def test_x_and_r_act_on_the_focused_panes_task_after_a_confirmation(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await create_tasks(client, server, 2)
        async with running_app(client, server) as (app, pilot):
            first, second = await open_panes(app, pilot, 2)
            tasks = task_list(app)
            highlighted = tasks.selected_task
            assert highlighted is not None and second.task_id == highlighted.id
            target = first.task_id
            assert target is not None and target != highlighted.id
            grid(app).focus_pane(first)
            await pilot.pause()

            await pilot.press("r")  # asks, naming the pane's task
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "back")
            assert len((await client.list_tasks()).items) == 2, "nothing re-run"

            grid(app).focus_pane(first)
            await pilot.press("x")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
            await pilot.press("y")
            await wait_for(pilot, lambda: first.status is TaskStatus.CANCELED, "canceled")
            assert (await client.get_task(target)).status is TaskStatus.CANCELED
            assert (await client.get_task(highlighted.id)).status is TaskStatus.QUEUED

            grid(app).focus_pane(first)
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
            await pilot.press("y")
            await wait_for(pilot, lambda: len(tasks.tasks) == 3, "the re-run in the list")
            rerun = [
                t for t in (await client.list_tasks()).items if t.id not in {target, highlighted.id}
            ]
            assert [t.prompt for t in rerun] == [(await client.get_task(target)).prompt]


async def test_new_task_is_reachable_from_a_pane_with_ctrl_n(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await create_tasks(client, server, 1)
        async with running_app(client, server) as (app, pilot):
            await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
            pane = grid(app).active
            await wait_for(pilot, lambda: pane.task_id is not None, "the pane's task")
            grid(app).focus_pane(pane)
            await pilot.pause()
            await pilot.press("n")  # the next search match here: no compose screen
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen)
            shown = {key: b.binding.action for key, b in app.screen.active_bindings.items()}
            assert shown["ctrl+n"] == "new_task" and shown["n"] == "search_next"
            assert app.screen.active_bindings["ctrl+n"].binding.show  # in the footer
            await pilot.press("ctrl+n")
            await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose")


async def test_escape_asks_before_throwing_a_prompt_away(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client, running_app(client, server) as (app, pilot):
        await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose")
        compose = app.screen
        await pilot.press("escape")  # nothing written: closes at once
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")

        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose")
        compose = app.screen
        await type_text(pilot, "half a thought")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        await pilot.press("escape")  # keep writing
        await wait_for(pilot, lambda: app.screen is compose, "compose again")
        assert compose.query_one("#prompt-input", TextArea).text == "half a thought"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")


async def test_the_workdir_prefill_is_a_root_a_worker_allows(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    api = WorkerApi(server.url, server.token)
    try:
        await api.connect(
            WorkerHello(name="box", hostname="box", workdir_roots=[str(server.workdir)])
        )
    finally:
        await api.aclose()
    async with server.client() as client:
        for default, expected in (
            ("/not/allowed", str(server.workdir)),
            (str(server.workdir / "sub"), str(server.workdir / "sub")),
        ):
            async with running_app(client, default_workdir=default) as (app, pilot):
                await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
                await pilot.press("n")
                await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose")
                compose = app.screen
                assert isinstance(compose, ComposeScreen)
                field = compose.query_one("#workdir-input", Input)
                screen = compose
                await wait_for(pilot, lambda: screen.worker_names is not None, "the workers")  # noqa: B023
                assert field.value == expected


async def test_the_palette_lists_each_pane_action_once(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await create_tasks(client, server, 3)
        async with running_app(client, server) as (app, pilot):
            panes = await open_panes(app, pilot, 3)
            assert len(panes) == 3
            titles = [command.title for command in binding_commands(app, app.screen)]
            assert titles.count("Search") == 1
            assert len(titles) == len(set(titles)), sorted(titles)


async def test_export_writes_the_tasks_current_state(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """A pane that followed a task from its submission holds its queued record; the export's
    header says what the task is now."""
    server = server_factory(local_worker=False)
    data = await seed_tasks(server)
    completed = next(t for t in data.tasks if t.status is TaskStatus.COMPLETED)
    stale = completed.model_copy(update={"status": TaskStatus.QUEUED, "finished_at": None})
    async with server.client() as client, running_app(client, server) as (app, pilot):
        await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
        out = tmp_path / "t.md"
        app.screen.run_worker(_export(app.screen, client, stale, out))
        await wait_for(pilot, lambda: "# Prompt" in read(out), "the export")
        assert "- **status:** completed" in read(out)


def read(path: Path) -> str:
    """The file's text ('' while it does not exist)."""
    return path.read_text() if path.exists() else ""


async def test_toasts_leave_the_bottom_of_the_panes_alone(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        app = CodexTuiApp(client, poll_interval_s=0.2)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await toast_placement(app, pilot)


async def toast_placement(app: CodexTuiApp, pilot: Pilot[None]) -> None:
    """A toast ends in the upper half of the active pane."""
    await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
    app.notify("A task finished, with a long message that wraps over a few lines.")
    await wait_for(pilot, lambda: bool(app.screen.query("Toast")), "the toast")
    toast = app.screen.query("Toast").first()
    await wait_for(pilot, lambda: toast.region.height > 0, "the toast laid out")
    pane = grid(app).active
    assert toast.region.bottom <= pane.region.y + pane.region.height // 2
