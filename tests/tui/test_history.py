"""Provides Pilot tests of the history screen against a real server: search, filters, paging,
opening and re-running a task, and an unreachable server.

The screen runs in :class:`HistoryHost`, a bare app with codex-tui's themes and stylesheet
that pushes one :class:`~codex_tui.screens.history.HistoryScreen` and records what it
dismisses with (the dashboard does the same with the result).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from textual.app import App
from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import Static

import codex_tui.screens.history as history_module
from codex_tui.screens.confirm import ConfirmModal
from codex_tui.screens.history import (
    HistoryFilters,
    HistoryScreen,
    HistoryTable,
)
from server_client.client import CodexTuiClient
from server_client.models import Task, TaskStatus, WorkerHello
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory, free_port
from tests.support.tui_helpers import SIZE, Seeded, seed_tasks, type_text, wait_for
from themes import APP_CSS_PATH, DEFAULT_THEME, THEMES

#: Stand-in for "no result yet" (a dismissal with None is a result).
NO_RESULT = object()


class HistoryHost(App[None]):
    """A bare app with codex-tui's look that shows one history screen.

    Args:
        client: The SDK client.
        clock: The screen's clock.
        close_client: Close ``client`` when the app exits (for snapshot tests, whose app runs
            in its own event loop).
        screen_kwargs: Passed on to :class:`HistoryScreen`.
    """

    CSS_PATH = APP_CSS_PATH

    def __init__(
        self,
        client: CodexTuiClient,
        clock: Callable[[], datetime] | None = None,
        *,
        close_client: bool = False,
        **screen_kwargs: Any,
    ) -> None:
        super().__init__()
        self.client = client
        self.clock = clock
        self.close_client = close_client
        self.screen_kwargs = screen_kwargs
        self.result: object = NO_RESULT
        """What the history screen dismissed with (a Task or None)."""
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = DEFAULT_THEME

    def on_mount(self) -> None:
        """Show the history screen."""
        self.push_screen(
            HistoryScreen(self.client, self.clock, **self.screen_kwargs), self._dismissed
        )

    async def on_unmount(self) -> None:
        """Close the client if asked to."""
        if self.close_client:
            await self.client.aclose()

    def _dismissed(self, result: Task | None) -> None:
        self.result = result

    @property
    def history(self) -> HistoryScreen:
        """The history screen (while it is shown)."""
        screen = self.screen
        assert isinstance(screen, HistoryScreen), screen
        return screen


@asynccontextmanager
async def running_history(
    client: CodexTuiClient, **kwargs: Any
) -> AsyncIterator[tuple[HistoryHost, Pilot[None], HistoryScreen]]:
    """Run :class:`HistoryHost` at 80×24; yield it once its first page is in (or failed)."""
    app = HistoryHost(client, **kwargs)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "the screen")
        screen = app.history
        await wait_for(pilot, lambda: settled(screen) or screen.error is not None, "the first page")
        yield app, pilot, screen


def settled(screen: HistoryScreen) -> bool:
    """True when the rows shown are those of the current filters and nothing is loading."""
    return screen.loaded and not screen.fetching


def prompts(screen: HistoryScreen) -> list[str]:
    """The prompts of the loaded tasks, in order."""
    return [task.prompt for task in screen.tasks]


def focused_id(screen: HistoryScreen) -> str | None:
    """The id of the focused widget."""
    return screen.focused.id if screen.focused is not None else None


def static_text(widget: Static) -> str:
    """The plain text a Static shows."""
    return str(widget.render())


async def create(server: LiveServer, prompts: list[str], **options: Any) -> list[Task]:
    """Create tasks in order (the last is the newest)."""
    async with server.client() as client:
        return [
            await client.create_task(p, workdir=str(server.workdir), **options) for p in prompts
        ]


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server without a worker, so tasks stay queued unless a test claims them."""
    return server_factory(local_worker=False)


@pytest.fixture
async def seeded(server: LiveServer) -> Seeded:
    """:data:`tests.support.tui_helpers.SEED_TASKS`: canceled, failed, completed, running,
    queued."""
    return await seed_tasks(server)


# -- pure helpers ----------------------------------------------------------------------------


def test_filters_describe_themselves() -> None:
    assert not HistoryFilters().active
    assert HistoryFilters().describe() == ""
    filters = HistoryFilters("fix", TaskStatus.FAILED, "gpu-box")
    assert filters.active
    assert filters.describe() == "“fix”, status failed, worker gpu-box"
    assert HistoryFilters(worker="devbox").describe() == "worker devbox"


# -- listing and searching -------------------------------------------------------------------


async def test_lists_every_task_newest_first_with_status_age_worker_prompt(
    server: LiveServer, seeded: Seeded
) -> None:
    async with server.client() as client:
        async with running_history(client, clock=seeded.clock()) as (_app, _pilot, screen):
            assert prompts(screen) == [task.prompt for task in seeded.tasks]
            assert screen.exhausted
            assert screen.row_text(0) == [
                "○ queued",
                "5m",
                "—",
                "Summarise the open issues labelled bug",
            ]
            assert screen.row_text(2)[:3] == ["✓ completed", "5m", "devbox"]
            assert focused_id(screen) == "history-table"
            assert screen.query_one("#history-pane").border_subtitle == "5 tasks"
            assert not screen.has_class("-empty")


async def test_search_filters_rows_on_the_server(server: LiveServer) -> None:
    await create(server, ["Fix the build", "add a 50% test", "rebuild docs", "fix lint"])
    async with server.client() as client:
        async with running_history(client, search_debounce_s=0.05) as (_app, pilot, screen):
            assert len(screen.tasks) == 4
            await pilot.press("slash")
            assert focused_id(screen) == "history-search"
            await type_text(pilot, "BUILD")
            await wait_for(pilot, lambda: settled(screen) and screen.filters.query == "BUILD")
            assert prompts(screen) == ["rebuild docs", "Fix the build"]

            # A literal %, and Enter puts the keyboard back in the table.
            screen.search_input.value = ""
            await type_text(pilot, "50%\n")
            await wait_for(pilot, lambda: settled(screen) and screen.filters.query == "50%")
            assert prompts(screen) == ["add a 50% test"]
            assert focused_id(screen) == "history-table"

            await pilot.press("slash")
            screen.search_input.value = "no such task"
            await wait_for(pilot, lambda: settled(screen) and screen.filters.query != "50%")
            assert screen.tasks == []
            assert screen.has_class("-empty")
            empty = static_text(screen.query_one("#history-empty", Static))
            assert empty == "No tasks match “no such task”."
            await pilot.press("escape")
            assert focused_id(screen) == "history-table"
            assert isinstance(_app.screen, HistoryScreen)  # escape in the field only leaves it


async def test_typing_fast_sends_one_search_after_the_pause(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each keystroke restarts the pause; only the last one's search goes out.

    The pause is held open by the test until the typing is done (a 0.3 s timer raced the
    key presses: under load two keys can be more than 0.3 s apart, and the search of the
    first letters went out as well).
    """
    await create(server, ["alpha", "alphabet", "beta"])
    paused: list[float] = []
    typed = asyncio.Event()

    async def pause_until_typed(delay_s: float) -> None:
        paused.append(delay_s)
        await typed.wait()

    monkeypatch.setattr(history_module, "asyncio", SimpleNamespace(sleep=pause_until_typed))
    async with server.client() as client:
        calls: list[str | None] = []
        original = client.list_tasks

        async def counting(**kwargs: Any) -> Any:
            calls.append(kwargs.get("q"))
            return await original(**kwargs)

        client.list_tasks = counting  # type: ignore[method-assign]
        async with running_history(client, search_debounce_s=0.3) as (_app, pilot, screen):
            await pilot.press("slash")
            await type_text(pilot, "alphab")
            await wait_for(pilot, lambda: len(paused) == 6, "a pause for each of the 6 keys")
            assert paused == [0.3] * 6
            assert calls == [None], "no search goes out while the pause runs"
            typed.set()
            await wait_for(pilot, lambda: settled(screen) and screen.filters.query == "alphab")
            assert prompts(screen) == ["alphabet"]
            assert calls == [None, "alphab"]


def filtered_by(screen: HistoryScreen, status: TaskStatus) -> bool:
    """True once the table shows the tasks of ``status`` alone."""
    return settled(screen) and screen.filters.status is status


async def test_status_filter(server: LiveServer, seeded: Seeded) -> None:
    async with server.client() as client:
        async with running_history(client, clock=seeded.clock()) as (_app, pilot, screen):
            await pilot.press("s")
            assert screen.status_select.expanded
            # all states, running, waiting for approval, idle, queued, completed, failed
            await pilot.press(*["down"] * 6, "enter")
            await wait_for(
                pilot, lambda: settled(screen) and screen.filters.status is TaskStatus.FAILED
            )
            assert prompts(screen) == ["Upgrade httpx and fix the deprecation warnings"]
            assert [t.status for t in screen.tasks] == [TaskStatus.FAILED]

            screen.status_select.value = TaskStatus.RUNNING.value
            await wait_for(
                pilot, lambda: settled(screen) and screen.filters.status is TaskStatus.RUNNING
            )
            assert prompts(screen) == ["Write a migration guide for v2"]

            for state in (TaskStatus.WAITING, TaskStatus.IDLE):  # a conversation's states
                screen.status_select.value = state.value
                await wait_for(pilot, partial(filtered_by, screen, state))
                assert prompts(screen) == []

            await pilot.press("escape")  # out of the filter, back to the table
            assert focused_id(screen) == "history-table"
            screen.status_select.value = ""
            await wait_for(pilot, lambda: settled(screen) and screen.filters.status is None)
            assert len(screen.tasks) == 5


async def test_worker_filter_offers_the_users_workers(server: LiveServer) -> None:
    api = WorkerApi(server.url, server.token)
    try:
        alpha = await api.connect(WorkerHello(name="alpha", workdir_roots=[str(server.workdir)]))
        await api.connect(WorkerHello(name="beta", workdir_roots=[str(server.workdir)]))
        async with server.client() as client:
            ran = await client.create_task("ran on alpha", workdir=str(server.workdir))
            claim = await api.claim(alpha.id, wait_s=5)
            assert claim is not None and claim.task.id == ran.id
            await client.create_task("waits for beta", worker="beta")
            await client.create_task("anyone")
            async with running_history(client) as (_app, pilot, screen):
                await wait_for(pilot, lambda: screen.worker_names == ["alpha", "beta"])
                await pilot.press("w")
                assert screen.worker_select.expanded
                await pilot.press("down", "enter")  # any worker → alpha
                await wait_for(pilot, lambda: settled(screen) and screen.filters.worker == "alpha")
                assert prompts(screen) == ["ran on alpha"]
                assert screen.row_text(0)[2] == "alpha"

                screen.worker_select.value = "beta"
                await wait_for(pilot, lambda: settled(screen) and screen.filters.worker == "beta")
                assert prompts(screen) == ["waits for beta"]
                assert screen.row_text(0)[2] == "→ beta"

                screen.set_filters(HistoryFilters("nothing", TaskStatus.LOST, "beta"))
                await wait_for(pilot, lambda: settled(screen) and screen.filters.query)
                assert screen.tasks == []
                assert screen.search_input.value == "nothing"
                assert screen.status_select.value == "lost"
                empty = static_text(screen.query_one("#history-empty", Static))
                assert empty == "No tasks match “nothing”, status lost, worker beta."
    finally:
        await api.aclose()


async def test_paging_loads_older_rows_as_the_cursor_moves_down(server: LiveServer) -> None:
    await create(server, [f"task number {n:03}" for n in range(120)])
    async with server.client() as client:
        async with running_history(client, page_size=50) as (_app, pilot, screen):
            assert len(screen.tasks) == 50
            assert prompts(screen)[0] == "task number 119"
            assert not screen.exhausted
            assert screen.query_one("#history-pane").border_subtitle == "50+ tasks"

            await pilot.press(*["down"] * 29)
            await pilot.pause()
            assert len(screen.tasks) == 50  # not yet near the end
            await pilot.press("down")  # row 30: 20 rows before the end
            await wait_for(pilot, lambda: len(screen.tasks) == 100 and not screen.fetching)
            assert screen.table.cursor_row == 30
            assert screen.selected_task is not None
            assert screen.selected_task.prompt == "task number 089"

            await pilot.press("ctrl+end")
            await wait_for(pilot, lambda: screen.exhausted, "every page")
            assert prompts(screen) == [f"task number {n:03}" for n in reversed(range(120))]
            assert screen.table.row_count == 120
            assert screen.query_one("#history-pane").border_subtitle == "120 tasks"


async def test_paging_stops_at_the_row_cap(server: LiveServer) -> None:
    await create(server, [f"capped {n:02}" for n in range(30)])
    async with server.client() as client:
        async with running_history(client, page_size=10, max_rows=25) as (_app, pilot, screen):
            # A small page under a tall table: pages load until the cursor is far enough.
            await wait_for(pilot, lambda: len(screen.tasks) == 25 and not screen.fetching)
            await pilot.press("ctrl+end")
            await pilot.pause()
            assert len(screen.tasks) == 25
            assert screen.table.row_count == 25
            subtitle = screen.query_one("#history-pane").border_subtitle
            assert subtitle == "newest 25 shown · search to narrow"


async def test_search_after_paging_starts_from_the_newest(server: LiveServer) -> None:
    await create(server, [f"{'odd' if n % 2 else 'even'} {n:02}" for n in range(40)])
    async with server.client() as client:
        async with running_history(client, page_size=10, search_debounce_s=0.0) as (
            _app,
            pilot,
            screen,
        ):
            await pilot.press("ctrl+end")
            await wait_for(pilot, lambda: screen.exhausted)
            assert len(screen.tasks) == 40
            screen.search_input.value = "odd"
            await wait_for(pilot, lambda: settled(screen) and screen.filters.query == "odd")
            assert prompts(screen)[:2] == ["odd 39", "odd 37"]
            assert all(p.startswith("odd") for p in prompts(screen))


# -- opening, re-running, leaving ------------------------------------------------------------


async def test_enter_returns_the_highlighted_task(server: LiveServer) -> None:
    tasks = await create(server, ["older", "newer"])
    async with server.client() as client:
        async with running_history(client) as (app, pilot, _screen):
            await pilot.press("down", "enter")
            await wait_for(pilot, lambda: app.result is not NO_RESULT, "the dismissal")
            assert isinstance(app.result, Task)
            assert app.result.id == tasks[0].id
            assert not isinstance(app.screen, HistoryScreen)


async def test_escape_returns_none(server: LiveServer) -> None:
    await create(server, ["something"])
    async with server.client() as client:
        async with running_history(client) as (app, pilot, _screen):
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.result is not NO_RESULT, "the dismissal")
            assert app.result is None


async def test_r_asks_then_reruns_the_highlighted_task(server: LiveServer) -> None:
    api = WorkerApi(server.url, server.token)
    try:
        await api.connect(WorkerHello(name="gpu-box", workdir_roots=[str(server.workdir)]))
    finally:
        await api.aclose()
    old, _newer = await create(
        server, ["train the model", "something newer"], model="m1", worker="gpu-box"
    )
    async with server.client() as client:
        async with running_history(client) as (app, pilot, screen):
            await pilot.press("down", "r")  # asks first, like the dashboard's r
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is screen, "back in the history")
            assert app.result is NO_RESULT
            assert len((await client.list_tasks()).items) == 2, "nothing re-run"
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
            await pilot.press("y")
            await wait_for(pilot, lambda: app.result is not NO_RESULT, "the dismissal")
            new = app.result
            assert isinstance(new, Task)
            assert new.id != old.id
            assert (new.prompt, new.model, new.target_worker) == (
                "train the model",
                "m1",
                "gpu-box",
            )
            assert any(f"Re-run as {new.id}" in str(n.message) for n in app._notifications)
        listed = await client.list_tasks(q="train the model")
        assert [t.id for t in listed.items] == [new.id, old.id]


async def test_rerun_failure_is_shown_and_the_screen_stays(server: LiveServer) -> None:
    api = WorkerApi(server.url, server.token)
    try:
        worker = await api.connect(WorkerHello(name="gone-soon"))
    finally:
        await api.aclose()
    async with server.client() as client:
        await client.create_task("routed", worker="gone-soon")
        await client.revoke_worker(worker.id)
        async with running_history(client) as (app, pilot, screen):
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
            await pilot.press("y")
            await wait_for(
                pilot,
                lambda: any("gone-soon" in str(n.message) for n in app._notifications),
                "the error notification",
            )
            assert app.result is NO_RESULT
            assert app.screen is screen
            assert len((await client.list_tasks()).items) == 1


async def test_a_filter_key_typed_in_the_search_is_text(server: LiveServer) -> None:
    await create(server, ["swr"])
    async with server.client() as client:
        async with running_history(client, search_debounce_s=0.0) as (app, pilot, screen):
            await pilot.press("slash")
            await type_text(pilot, "swr")
            assert screen.search_input.value == "swr"
            assert not screen.status_select.expanded and not screen.worker_select.expanded
            await wait_for(pilot, lambda: settled(screen) and screen.filters.query == "swr")
            assert prompts(screen) == ["swr"]
            assert app.result is NO_RESULT


# -- failures --------------------------------------------------------------------------------


async def test_an_unreachable_server_shows_the_error_line() -> None:
    client = CodexTuiClient(f"http://127.0.0.1:{free_port()}", "ctu_nobody", timeout=2)
    async with client:
        async with running_history(client) as (_app, pilot, screen):
            await wait_for(pilot, lambda: screen.error is not None)
            assert screen.has_class("-offline")
            line = static_text(screen.query_one("#history-error", Static))
            assert line.startswith("Cannot reach the server")
            assert "ctrl+r" in line
            assert screen.tasks == [] and not screen.has_class("-empty")
            await pilot.press("ctrl+r")  # retrying fails the same way, and says so
            await wait_for(pilot, lambda: not screen.fetching and screen.error is not None)


async def test_rows_stay_when_the_server_goes_away(server: LiveServer) -> None:
    await create(server, ["kept on screen", "me too"])
    async with server.client() as client:
        async with running_history(client) as (_app, pilot, screen):
            assert len(screen.tasks) == 2
            await asyncio.to_thread(server.stop)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: screen.error is not None and not screen.fetching)
            assert prompts(screen) == ["me too", "kept on screen"]
            assert screen.table.row_count == 2
            assert screen.has_class("-offline")


def test_every_binding_has_an_id() -> None:
    bindings = [*HistoryScreen.BINDINGS, *HistoryTable.BINDINGS]
    assert all(isinstance(binding, Binding) and binding.id for binding in bindings)
    assert {binding.id for binding in bindings if isinstance(binding, Binding)} == {
        "history-search",
        "history-status",
        "history-worker",
        "history-open",
        "history-rerun",
        "history-refresh",
        "history-back",
    }


async def test_the_prompt_column_fits_the_terminal_width(server: LiveServer) -> None:
    long = "refactor " * 30
    await create(server, [long])
    async with server.client() as client:
        async with running_history(client) as (_app, pilot, screen):
            narrow = screen.row_text(0)[3]
            assert narrow.endswith("…") and len(narrow) == 80 - 41
            await pilot.resize_terminal(120, 30)
            await wait_for(pilot, lambda: len(screen.row_text(0)[3]) == 120 - 41, "the resize")
            assert screen.table.columns["prompt"].width == 120 - 41  # type: ignore[index]
            assert screen.table.virtual_size.width <= screen.table.size.width
