"""Provides HistoryScreen: every task of the user, searchable and filterable, paged from the
server, to open one again or to re-run it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import httpx
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Input, Select, Static

from codex_tui.events.palette import Palette
from codex_tui.events.view import shown_line, status_icon
from codex_tui.failures import (
    REQUEST_ERRORS,
    describe_action_failure,
    describe_poll_failure,
)
from codex_tui.screens.confirm import ConfirmModal
from codex_tui.widgets.keys_footer import KeysFooter
from codex_tui.widgets.task_list import format_age, short_prompt, worker_text
from server_client.client import ApiError, CodexTuiClient
from server_client.models import Task, TaskPage, TaskStatus, utcnow

__all__ = ["HistoryFilters", "HistoryScreen", "HistoryTable"]

#: Tasks fetched per request (the server allows 1..200).
PAGE_SIZE = 100
#: Most tasks held at once; past this, older tasks are reached by narrowing the search.
MAX_ROWS = 2000
#: The next page is fetched when the cursor comes this close to the last loaded row.
PREFETCH_ROWS = 20
#: Seconds the search waits after the last keystroke before it asks the server.
SEARCH_DEBOUNCE_S = 0.3
#: Longest search the server takes, in characters.
MAX_QUERY_CHARS = 200

#: Width of the fixed columns, in cells (the prompt takes the rest of the line).
STATUS_WIDTH = 11
AGE_WIDTH = 5
WORKER_WIDTH = 14
#: Cells around the columns: the pane's border (2), the scrollbar (1) and each column's
#: padding (1 on either side of each of the four columns).
_CHROME = 2 + 1 + 4 * 2
#: The prompt column is never narrower than this, however small the terminal.
MIN_PROMPT_WIDTH = 12

#: The status filter's choices, in menu order: value and label ("" is every state).
_STATUS_CHOICES: tuple[tuple[str, str], ...] = (
    ("", "all states"),
    (TaskStatus.RUNNING.value, "running"),
    (TaskStatus.WAITING.value, "waiting for approval"),
    (TaskStatus.IDLE.value, "idle (ready for a reply)"),
    (TaskStatus.QUEUED.value, "queued"),
    (TaskStatus.COMPLETED.value, "completed"),
    (TaskStatus.FAILED.value, "failed"),
    (TaskStatus.CANCELED.value, "canceled"),
    (TaskStatus.LOST.value, "lost"),
)
#: The worker filter's value for "any worker" (worker names are never empty).
ANY_WORKER = ""


@dataclass(frozen=True)
class HistoryFilters:
    """What the history lists: tasks whose prompt contains ``query`` (ignoring case), in
    ``status``, run by or routed to ``worker``; empty or None means no filter."""

    query: str = ""
    status: TaskStatus | None = None
    worker: str | None = None

    @property
    def active(self) -> bool:
        """True when any filter narrows the list."""
        return bool(self.query or self.status or self.worker)

    def describe(self) -> str:
        """The filters in words, e.g. ``“fix”, status failed, worker gpu-box``."""
        parts = []
        if self.query:
            parts.append(f"“{shown_line(self.query, 40)}”")
        if self.status is not None:
            parts.append(f"status {self.status.value}")
        if self.worker:
            parts.append(f"worker {self.worker}")
        return ", ".join(parts)


class HistoryTable(DataTable[Text]):
    """The history's table: one row per task; Enter opens the highlighted one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", id="history-open"),
    ]


class HistoryScreen(Screen[Task | None]):
    """Every task of the user, newest first, searched and filtered on the server.

    Columns: status, age (from the injectable clock), worker and prompt. Tasks are fetched a
    page at a time (``client.list_tasks`` with the filters and the cursor) in a worker of
    the exclusive group ``history-load``; the next page is fetched when the cursor comes
    within :data:`PREFETCH_ROWS` of the last loaded row, up to ``max_rows`` tasks (past that,
    narrowing the search finds older ones). A new search, filter or refresh cancels whatever
    load is running and starts from the newest task again; the rows shown stay until the new
    ones arrive. When the server cannot be reached an error line appears and what was loaded
    stays.

    Keys: ``/`` focuses the search (typing filters after :data:`SEARCH_DEBOUNCE_S`; Enter
    or Escape goes back to the table), ``s`` and ``w`` open the status and worker filters,
    Enter dismisses the screen with the highlighted task, ``r`` asks, then re-runs
    it (``client.rerun_task``) and dismisses with the new task, ``ctrl+r`` reloads, Escape
    dismisses with None.

    Args:
        client: The SDK client.
        clock: Returns the current UTC time (injectable for deterministic ages).
        page_size: Tasks per request (1..200).
        max_rows: Most tasks held at once.
        search_debounce_s: Seconds between the last keystroke of a search and the request.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_search", "Search", id="history-search"),
        Binding("s", "pick_status", "Status", id="history-status"),
        Binding("w", "pick_worker", "Worker", id="history-worker"),
        Binding("r", "rerun", "Re-run", id="history-rerun"),
        Binding("ctrl+r", "refresh", "Reload", show=False, id="history-refresh"),
        Binding("escape", "back", "Back", id="history-back"),
    ]

    AUTO_FOCUS = "#history-table"

    DEFAULT_CSS = """
    HistoryScreen {
        layout: vertical;
    }
    HistoryScreen > #history-pane {
        height: 1fr;
        border: round $border;
        border-title-color: $primary;
        border-subtitle-color: $foreground-muted;
        background: $surface;
    }
    HistoryScreen #history-filters {
        height: auto;
    }
    HistoryScreen #history-search {
        width: 1fr;
    }
    HistoryScreen #history-status {
        width: 18;
    }
    HistoryScreen #history-worker {
        width: 22;
    }
    HistoryScreen #history-error {
        display: none;
        height: auto;
        max-height: 3;
        padding: 0 1;
        color: $error;
    }
    HistoryScreen.-offline #history-error {
        display: block;
    }
    HistoryScreen #history-empty {
        display: none;
        height: auto;
        padding: 0 1;
        color: $foreground-muted;
    }
    HistoryScreen.-empty #history-empty {
        display: block;
    }
    HistoryScreen #history-table {
        height: 1fr;
        background: $surface;
        overflow-x: hidden;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(
        self,
        client: CodexTuiClient,
        clock: Callable[[], datetime] | None = None,
        *,
        page_size: int = PAGE_SIZE,
        max_rows: int = MAX_ROWS,
        search_debounce_s: float = SEARCH_DEBOUNCE_S,
    ) -> None:
        super().__init__()
        self.client = client
        self.clock: Callable[[], datetime] = clock or utcnow
        self.page_size = max(1, min(page_size, 200))
        self.max_rows = max(1, max_rows)
        self.search_debounce_s = search_debounce_s
        self._filters = HistoryFilters()
        self._tasks: list[Task] = []
        self._by_id: dict[str, Task] = {}
        self._next_cursor: str | None = None
        self._loading = False
        self._shown: HistoryFilters | None = None
        self._error: str | None = None
        self._rerunning = False
        self._prompt_width = MIN_PROMPT_WIDTH
        self._worker_names: list[str] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="history-pane") as pane:
            pane.border_title = "Task history"
            with Horizontal(id="history-filters"):
                yield Input(
                    placeholder="Search prompts  (/)",
                    max_length=MAX_QUERY_CHARS,
                    id="history-search",
                )
                yield Select(
                    [(label, value) for value, label in _STATUS_CHOICES],
                    value="",
                    allow_blank=False,
                    id="history-status",
                )
                yield Select(
                    [("any worker", ANY_WORKER)],
                    value=ANY_WORKER,
                    allow_blank=False,
                    id="history-worker",
                )
            yield Static(id="history-error")
            yield Static(id="history-empty")
            table = HistoryTable(id="history-table", cursor_type="row", zebra_stripes=False)
            self._add_columns(table)
            yield table
        yield KeysFooter()

    def on_mount(self) -> None:
        """Load the first page and the worker names; the keyboard goes to the table."""
        self._prompt_width = self._fit_prompt_width()
        self.table.focus()
        self.app.theme_changed_signal.subscribe(self, self._redraw_rows)
        self._show_counts()
        self._reload()
        self.run_worker(
            self._load_worker_names(),
            name="history-workers",
            group="history-workers",
            exclusive=True,
            exit_on_error=False,
        )

    # -- public API -------------------------------------------------------------------------

    @property
    def table(self) -> HistoryTable:
        """The table of tasks."""
        return self.query_one("#history-table", HistoryTable)

    @property
    def search_input(self) -> Input:
        """The search field."""
        return self.query_one("#history-search", Input)

    @property
    def status_select(self) -> Select[str]:
        """The status filter (value ``""`` is every state)."""
        return self.query_one("#history-status", Select)

    @property
    def worker_select(self) -> Select[str]:
        """The worker filter (value :data:`ANY_WORKER` is any worker)."""
        return self.query_one("#history-worker", Select)

    @property
    def filters(self) -> HistoryFilters:
        """The filters of the rows shown (or being loaded)."""
        return self._filters

    @property
    def tasks(self) -> list[Task]:
        """The loaded tasks, newest first, as listed."""
        return list(self._tasks)

    @property
    def selected_task(self) -> Task | None:
        """The highlighted task, if any."""
        row = self.table.cursor_row
        if not 0 <= row < len(self._tasks):
            return None
        return self._tasks[row]

    @property
    def loaded(self) -> bool:
        """True once the rows on screen are those of the current filters."""
        return self._shown == self._filters

    @property
    def fetching(self) -> bool:
        """True while a page is being fetched."""
        return self._loading

    @property
    def exhausted(self) -> bool:
        """True when every task that matches the current filters is loaded."""
        return self.loaded and not self._loading and self._next_cursor is None

    @property
    def error(self) -> str | None:
        """Why the last request failed, or None after a success."""
        return self._error

    @property
    def worker_names(self) -> list[str] | None:
        """The names the worker filter offers, or None until they are loaded."""
        return self._worker_names

    def row_text(self, index: int) -> list[str]:
        """The plain text of each cell of a row (for tests and screen readers)."""
        if not 0 <= index < len(self._tasks):
            return []
        return [cell.plain for cell in self._cells(self._tasks[index], Palette())]

    def set_filters(self, filters: HistoryFilters) -> None:
        """Show the tasks that match ``filters``, from the newest (no debounce); the search
        field and the filter menus show them too (a worker not offered is added)."""
        filters = HistoryFilters(filters.query.strip(), filters.status, filters.worker)
        self._filters = filters
        self.search_input.value = filters.query
        self.status_select.value = filters.status.value if filters.status else ""
        worker = self.worker_select
        if filters.worker and filters.worker not in (self._worker_names or []):
            self._worker_names = [*(self._worker_names or []), filters.worker]
            worker.set_options(self._worker_options())
        worker.value = filters.worker or ANY_WORKER
        self._reload()

    # -- actions ----------------------------------------------------------------------------

    def action_focus_search(self) -> None:
        """Put the keyboard in the search field."""
        self.search_input.focus()

    def action_pick_status(self) -> None:
        """Open the status filter's menu."""
        self._open_select(self.status_select)

    def action_pick_worker(self) -> None:
        """Open the worker filter's menu."""
        self._open_select(self.worker_select)

    def action_rerun(self) -> None:
        """Ask, as the dashboard's ``r`` does, then submit the highlighted task again with the
        same options and dismiss with the new one."""

        task = self.selected_task
        if task is None:
            self.notify("No task selected.", severity="warning")
            return
        if self._rerunning:
            return
        task_id = task.id

        def answered(confirmed: bool | None) -> None:
            if not confirmed or self._rerunning:
                return
            self._rerunning = True
            self.run_worker(
                self._rerun(task_id),
                name=f"rerun:{task_id}",
                group="history-rerun",
                exit_on_error=False,
            )

        self.app.push_screen(
            ConfirmModal(
                f"Run this task again, as a new task?\n\n{short_prompt(task.prompt, 160)}",
                confirm_label="Re-run",
                cancel_label="Keep as is",
            ),
            answered,
        )

    def action_refresh(self) -> None:
        """Load the list again from the newest task."""
        self._reload()

    def action_back(self) -> None:
        """From a filter, back to the table; from the table, close with no task."""
        if self.focused is not self.table:
            self.table.focus()
            return
        self.dismiss(None)

    # -- message handlers -------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        """Fit the prompt column to the new width."""
        width = self._fit_prompt_width(event.size.width)
        if width != self._prompt_width:
            self._prompt_width = width
            self._rebuild_table()

    @on(Input.Changed, "#history-search")
    def _search_changed(self, message: Input.Changed) -> None:
        query = message.value.strip()
        if query == self._filters.query:
            return
        self._filters = HistoryFilters(query, self._filters.status, self._filters.worker)
        self._reload(delay_s=self.search_debounce_s)

    @on(Input.Submitted, "#history-search")
    def _search_submitted(self) -> None:
        self.table.focus()

    @on(Select.Changed, "#history-status")
    def _status_changed(self) -> None:
        value = self.status_select.value  # not the message's: set_options posts stale ones
        status = TaskStatus(value) if isinstance(value, str) and value else None
        if status == self._filters.status:
            return
        self._filters = HistoryFilters(self._filters.query, status, self._filters.worker)
        self._reload()

    @on(Select.Changed, "#history-worker")
    def _worker_changed(self) -> None:
        value = self.worker_select.value  # not the message's: set_options posts stale ones
        worker = value if isinstance(value, str) and value != ANY_WORKER else None
        if worker == self._filters.worker:
            return
        self._filters = HistoryFilters(self._filters.query, self._filters.status, worker)
        self._reload()

    @on(DataTable.RowHighlighted, "#history-table")
    def _highlight_changed(self) -> None:
        self._maybe_load_more()

    @on(DataTable.RowSelected, "#history-table")
    def _open_task(self, message: DataTable.RowSelected) -> None:
        task = self._by_id.get(str(message.row_key.value))
        if task is not None:
            self.dismiss(task)

    # -- loading ----------------------------------------------------------------------------

    def _reload(self, delay_s: float = 0.0) -> None:
        """Fetch the first page for the current filters, cancelling any load under way."""
        self._loading = True
        self._show_counts()
        self.run_worker(
            self._load_first(self._filters, delay_s),
            name="history-load",
            group="history-load",
            exclusive=True,
            exit_on_error=False,
        )

    def _maybe_load_more(self) -> None:
        """Fetch the next page when the cursor nears the end of what is loaded."""
        if self._loading or not self.loaded or self._next_cursor is None:
            return
        if len(self._tasks) >= self.max_rows:
            return
        if self.table.cursor_row < len(self._tasks) - PREFETCH_ROWS:
            return
        self._loading = True
        self._show_counts()
        self.run_worker(
            self._load_next(self._filters, self._next_cursor),
            name="history-load-more",
            group="history-load",
            exclusive=True,
            exit_on_error=False,
        )

    async def _fetch(self, filters: HistoryFilters, cursor: str | None, room: int) -> TaskPage:
        """One page, never more than ``room`` tasks (so ``next_cursor`` stays exact)."""
        return await self.client.list_tasks(
            status=[filters.status] if filters.status else (),
            q=filters.query or None,
            worker=filters.worker,
            cursor=cursor,
            limit=max(1, min(self.page_size, room)),
        )

    async def _load_first(self, filters: HistoryFilters, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)  # a newer keystroke cancels this worker meanwhile
        try:
            page = await self._fetch(filters, None, self.max_rows)
        except REQUEST_ERRORS as error:
            self._loading = False
            self._set_error(describe_poll_failure(error))
            self._show_counts()
            return
        selected = self.selected_task
        self._tasks = list(page.items)[: self.max_rows]
        self._by_id = {task.id: task for task in self._tasks}
        self._next_cursor = page.next_cursor
        self._loading = False
        self._shown = filters
        self._set_error(None)
        self._rebuild_table(keep=selected.id if selected else None)
        self._maybe_load_more()

    async def _load_next(self, filters: HistoryFilters, cursor: str) -> None:
        try:
            page = await self._fetch(filters, cursor, self.max_rows - len(self._tasks))
        except REQUEST_ERRORS as error:
            self._loading = False
            self._set_error(describe_poll_failure(error))
            self._show_counts()
            return
        room = self.max_rows - len(self._tasks)
        fresh = [task for task in page.items if task.id not in self._by_id][:room]
        self._tasks.extend(fresh)
        self._by_id.update((task.id, task) for task in fresh)
        self._next_cursor = page.next_cursor
        self._loading = False
        self._set_error(None)
        palette = self._palette()
        table = self.table
        for task in fresh:
            table.add_row(*self._cells(task, palette), key=task.id)
        self._show_counts()
        self._maybe_load_more()

    async def _load_worker_names(self) -> None:
        try:
            workers = await self.client.list_workers()
        except REQUEST_ERRORS as error:
            if self._error is None:
                self._set_error(describe_poll_failure(error))
            return
        names = sorted({worker.name for worker in workers}, key=str.casefold)
        current = self._filters.worker
        if current and current not in names:
            names.append(current)
        self._worker_names = names
        select = self.worker_select
        select.set_options(self._worker_options())
        select.value = current or ANY_WORKER

    def _worker_options(self) -> list[tuple[str, str]]:
        names = self._worker_names or []
        return [("any worker", ANY_WORKER), *((shown_line(name, 20), name) for name in names)]

    async def _rerun(self, task_id: str) -> None:
        try:
            task = await self.client.rerun_task(task_id)
        except REQUEST_ERRORS as error:
            if isinstance(error, ApiError | httpx.HTTPError):
                message = describe_action_failure(error)
            else:
                message = describe_poll_failure(error)
            self.notify(
                message,
                title="Re-run failed",
                severity="error",
                markup=False,
            )
            return
        finally:
            self._rerunning = False
        self.notify(f"Re-run as {task.id}: {short_prompt(task.prompt, 60)}", markup=False)
        self.dismiss(task)

    # -- drawing ----------------------------------------------------------------------------

    def _add_columns(self, table: DataTable[Text]) -> None:
        table.add_column("Status", width=STATUS_WIDTH, key="status")
        table.add_column("Age", width=AGE_WIDTH, key="age")
        table.add_column("Worker", width=WORKER_WIDTH, key="worker")
        table.add_column("Prompt", width=self._prompt_width, key="prompt")

    def _fit_prompt_width(self, screen_width: int | None = None) -> int:
        width = self.size.width if screen_width is None else screen_width
        fixed = STATUS_WIDTH + AGE_WIDTH + WORKER_WIDTH + _CHROME
        return max(MIN_PROMPT_WIDTH, width - fixed)

    def _palette(self) -> Palette:
        return Palette.from_theme_variables(self.app.theme_variables)

    def _cells(self, task: Task, palette: Palette) -> tuple[Text, Text, Text, Text]:
        canceling = task.status is TaskStatus.RUNNING and task.cancel_requested
        word = "canceling" if canceling else task.status.value
        return (
            Text(f"{status_icon(task.status)} {word}", style=palette.for_status(task.status)),
            Text(format_age(task.created_at, self.clock()), style=palette.muted),
            Text(shown_line(worker_text(task), WORKER_WIDTH)),
            Text(short_prompt(task.prompt, self._prompt_width), no_wrap=True),
        )

    def _rebuild_table(self, keep: str | None = None) -> None:
        """Redraw every row (new rows, a new width or a new theme); the cursor stays on the
        task ``keep`` (or the highlighted one) while it is listed."""
        table = self.table
        if keep is None:
            selected = self.selected_task
            keep = selected.id if selected else None
        row = table.cursor_row
        table.clear(columns=True)
        self._add_columns(table)
        palette = self._palette()
        for task in self._tasks:
            table.add_row(*self._cells(task, palette), key=task.id)
        ids = [task.id for task in self._tasks]
        if keep in self._by_id:
            table.move_cursor(row=ids.index(keep), animate=False)
        elif ids:
            table.move_cursor(row=min(max(row, 0), len(ids) - 1), animate=False)
        self._show_counts()

    def _redraw_rows(self, _theme: object = None) -> None:
        self._rebuild_table()

    def _show_counts(self) -> None:
        """The pane's subtitle (how many tasks, or loading) and the empty state."""
        count = len(self._tasks)
        if self._loading:
            subtitle = "loading…"
        elif self._shown is None:
            subtitle = ""
        elif self._next_cursor is None:
            subtitle = f"{count} task{'s' if count != 1 else ''}"
        elif count >= self.max_rows:
            subtitle = f"newest {count} shown · search to narrow"
        else:
            subtitle = f"{count}+ tasks"
        pane = self.query_one("#history-pane")
        if self._error is not None:
            pane.border_subtitle = Content.from_markup(
                "[$error]offline[/]" + (" · $counts" if subtitle else ""), counts=subtitle
            )
        else:
            pane.border_subtitle = subtitle or None
        empty = self._shown is not None and not self._loading and count == 0
        if empty and self._shown is not None:
            if self._shown.active:
                text = f"No tasks match {self._shown.describe()}."
            else:
                text = "No tasks yet. Press escape, then n to start one."
            self.query_one("#history-empty", Static).update(Content(text))
        self.set_class(empty, "-empty")

    def _set_error(self, error: str | None) -> None:
        if error is not None:
            error = f"{error} — ctrl+r retries"
        if error != self._error:
            self.query_one("#history-error", Static).update(Content(error or ""))
        self._error = error
        self.set_class(error is not None, "-offline")
        self._show_counts()

    def _open_select(self, select: Select[Any]) -> None:
        select.focus()
        select.expanded = True
