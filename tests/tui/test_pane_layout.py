"""Provides tests of the panes brought back when the TUI reopens: the same tasks in the same
order, the active pane focused (and maximised), per server URL, skipping a task that is gone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import codex_tui.app
from codex_tui.state import PaneLayout, load_layout, save_layout
from tests.conftest import ServerFactory
from tests.support.tui_helpers import running_app, task_list, wait_for
from tests.tui.test_panes import (
    active_panes,
    create_tasks,
    grid,
    open_panes,
    own_stream,
    replayed_queued,
    toasts,
)

#: An id of the server's shape that no task has.
UNKNOWN_TASK = "0000deadbeef"


async def test_reopening_brings_the_panes_back_in_order_with_the_focus(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(local_worker=False)
    state = tmp_path / "state" / "tui-state.json"
    async with server.client() as client:
        await create_tasks(client, server, 3)
        async with running_app(client, server, state_path=state) as (app, pilot):
            panes = await open_panes(app, pilot, 3)
            order = [pane.task_id or "" for pane in panes]
            assert "" not in order and len(set(order)) == 3
            # Written while the app runs, a moment after each change (the list's highlight
            # moving a pane's task among them).
            wanted = PaneLayout(tasks=tuple(order), active=2)
            await wait_for(
                pilot, lambda: load_layout(state, server.url) == wanted, "the layout written"
            )
            grid(app).focus_pane(panes[1])
            await pilot.press("m")  # maximised
            await wait_for(pilot, lambda: app.screen.maximized is panes[1], "the maximised pane")
        # Written when the app exits at the latest, under this server's URL.
        saved = load_layout(state, server.url)
        assert saved == PaneLayout(tasks=tuple(order), active=1, maximized=True)

        # A task the server does not have (deleted, or another user's: both a 404) is left
        # out quietly; another server's panes are kept apart.
        with_unknown = (order[0], UNKNOWN_TASK, order[1], order[2])
        save_layout(state, server.url, PaneLayout(tasks=with_unknown, active=2, maximized=True))
        save_layout(state, "http://127.0.0.1:1", PaneLayout(tasks=("elsewhere",)))

    async with server.client() as client:
        async with running_app(client, server, state_path=state) as (app, pilot):
            tasks = task_list(app)

            def restored() -> bool:
                return [pane.task_id for pane in grid(app).panes] == order

            try:
                await wait_for(pilot, restored, "the three panes in their order")
            except AssertionError as error:
                shown = [pane.task_id for pane in grid(app).panes]
                raise AssertionError(f"{error}: panes {shown}, wanted {order}") from None
            back = grid(app).panes
            await wait_for(pilot, lambda: active_panes(app) == [back[1]], "the second active")
            focused = app.focused
            assert focused is not None and back[1] in focused.ancestors_with_self
            assert app.screen.maximized is back[1]
            await pilot.press("m")  # back to the grid, where every pane draws
            await wait_for(pilot, lambda: app.screen.maximized is None, "the grid")
            for pane in back:  # each replays its task from the server as usual
                await wait_for(pilot, own_stream(app, pane), f"{pane.id}'s stream")
                await wait_for(pilot, replayed_queued(pane), f"{pane.id}'s events")
            await wait_for(pilot, lambda: any("left out" in t for t in toasts(app)), "a toast")
            # The list's first poll moves no pane: its highlight is on the focused pane's task.
            await wait_for(pilot, lambda: tasks.loaded, "the first poll")
            await wait_for(pilot, lambda: tasks.selected_task is not None, "a highlight")
            selected = tasks.selected_task
            assert selected is not None and selected.id == order[1]
            assert restored()
        data = json.loads(state.read_text(encoding="utf-8"))
        assert data["panes"]["http://127.0.0.1:1"]["tasks"] == ["elsewhere"]


async def test_a_layout_of_gone_tasks_leaves_one_empty_pane_and_no_crash(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(local_worker=False)
    state = tmp_path / "tui-state.json"
    save_layout(state, server.url, PaneLayout(tasks=(UNKNOWN_TASK, "not-an-id"), active=1))
    async with server.client() as client:
        [task] = await create_tasks(client, server, 1)
        async with running_app(client, server, state_path=state) as (app, pilot):
            await wait_for(pilot, lambda: any("2 of" in t for t in toasts(app)), "the toast")
            # The dashboard works as on a first start: the list's highlight fills the pane.
            await wait_for(pilot, lambda: grid(app).panes[0].task_id == task.id, "the pane")
            assert len(grid(app).panes) == 1


async def test_starting_writes_no_layout_only_a_change_does(
    server_factory: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a tiny delay the start's own layout (one empty pane) would be written at once, before
    # the list's first poll; a slow start hit this with the usual delay (CI under load).
    written: list[PaneLayout] = []

    def spy(path: Path, server_url: str, layout: PaneLayout) -> None:
        written.append(layout)
        save_layout(path, server_url, layout)

    monkeypatch.setattr(codex_tui.app, "LAYOUT_SAVE_DELAY_S", 0.01)
    monkeypatch.setattr(codex_tui.app, "save_layout", spy)
    server = server_factory(local_worker=False)
    state = tmp_path / "tui-state.json"
    async with server.client() as client:
        async with running_app(client, server, state_path=state) as (app, pilot):
            tasks = task_list(app)
            await wait_for(pilot, lambda: tasks.loaded, "the list's first poll")
            [task] = await create_tasks(client, server, 1)
            # The list's highlight fills the pane: that change is the first layout written.
            await wait_for(pilot, lambda: written, "a layout written")
            assert written[0] == PaneLayout(tasks=(task.id,))
            assert load_layout(state, server.url) == PaneLayout(tasks=(task.id,))


async def test_a_highlight_asked_for_survives_a_poll_that_comes_before_its_event(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    # Restoring panes ends by highlighting the focused pane's task; the list's first poll can
    # land before that highlight's event is handled. The poll must not move the highlight (and
    # with it the active pane's task) to the newest task.
    server = server_factory(local_worker=False)
    async with server.client() as client:
        oldest, _middle, newest = await create_tasks(client, server, 3)
        async with running_app(client, server, state_path=tmp_path / "state.json") as (app, pilot):
            tasks = task_list(app)
            await wait_for(pilot, lambda: tasks.loaded, "the list's first poll")
            listed = list(tasks.tasks)
            assert listed[0].id == newest.id  # newest first: a rebuild starts there
            tasks.update_tasks([oldest])  # a one-row list, as the restore's upsert left it
            tasks.select_task(oldest.id)
            tasks.update_tasks(listed)  # the poll, before the highlight's event is handled

            def on_oldest() -> bool:
                selected = tasks.selected_task
                return selected is not None and selected.id == oldest.id

            await wait_for(pilot, on_oldest, "the highlight on the task asked for")
            await wait_for(pilot, lambda: grid(app).panes[0].task_id == oldest.id, "its pane")
            drawn = tasks.options.highlighted_option
            assert drawn is not None and drawn.id == oldest.id and on_oldest()


def test_a_malformed_state_file_remembers_no_panes(tmp_path: Path) -> None:
    state = tmp_path / "tui-state.json"
    for text in ("not json", '{"panes": []}', '{"panes": {"http://x": {"tasks": "t1"}}}'):
        state.write_text(text, encoding="utf-8")
        assert load_layout(state, "http://x") is None
    state.write_text(
        '{"theme": "codex-light", "panes": {"http://x": '
        '{"tasks": ["a", 3, null, "b"], "active": 7, "maximized": "yes"}}}',
        encoding="utf-8",
    )
    assert load_layout(state, "http://x/") == PaneLayout(tasks=("a", "b"))


async def test_panes_come_back_once_a_server_that_was_down_at_start_answers(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    # Before, a start with the server down gave up on the panes, and the list's first
    # highlight once the server was back overwrote the remembered layout with one pane.
    server = server_factory(local_worker=False)
    state = tmp_path / "tui-state.json"
    async with server.client() as client:
        tasks = await create_tasks(client, server, 2)
    order = tuple(task.id for task in tasks)
    remembered = PaneLayout(tasks=order, active=0)
    save_layout(state, server.url, remembered)
    await asyncio.to_thread(server.stop)
    async with server.client() as client:
        async with running_app(client, server, state_path=state) as (app, pilot):
            await wait_for(
                pilot, lambda: any("come back when" in t for t in toasts(app)), "the toast"
            )
            assert grid(app).panes[0].task_id is None
            await asyncio.to_thread(server_factory, local_worker=False, reuse=server)

            def restored() -> bool:
                return tuple(pane.task_id for pane in grid(app).panes) == order

            await wait_for(pilot, restored, "the two panes in their order", 40)
            await wait_for(pilot, lambda: task_list(app).loaded, "the list's first poll")
            for pane in grid(app).panes:
                await wait_for(pilot, replayed_queued(pane), f"{pane.id}'s events")
            assert restored()
            assert load_layout(state, server.url) == remembered
