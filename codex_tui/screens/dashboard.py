"""Provides DashboardScreen: the task list on the left, a grid of live task panes on the right."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.widgets import OptionList

from codex_tui import failures
from codex_tui.deferred_client import client_ready
from codex_tui.failures import describe_action_failure
from codex_tui.keys import NEW_TASK_ID, NEW_TASK_KEYS
from codex_tui.state import PaneLayout
from codex_tui.widgets.connection_banner import ConnectionBanner
from codex_tui.widgets.event_view import EventView
from codex_tui.widgets.keys_footer import KeysFooter
from codex_tui.widgets.pane_grid import PaneGrid
from codex_tui.widgets.task_list import TaskCounts, TaskList, short_prompt

if TYPE_CHECKING:
    from server_client.client import CodexTuiClient
    from server_client.models import Task

__all__ = ["DashboardScreen", "tasks_title"]


def tasks_title(counts: TaskCounts) -> Content:
    """The task list's title with its attention counts, e.g. ``Tasks ●2 ✗1 ✓5``."""
    parts = ["Tasks"]
    if counts.running:
        parts.append(f"[$accent]●{counts.running}[/]")
    if counts.attention:
        parts.append(f"[$error]✗{counts.attention}[/]")
    if counts.idle:
        parts.append(f"[$primary]◇{counts.idle}[/]")
    if counts.done:
        parts.append(f"[$success]✓{counts.done}[/]")
    return Content.from_markup(" ".join(parts))


class DashboardScreen(Screen[None]):
    """The main screen: the live task list and a grid of panes, each streaming one task.

    The highlighted task shows in the active pane (the last focused). Keys: ``n`` (or
    ``ctrl+n``, which works in a pane too, where ``n`` is the next search match) opens the
    compose screen, ``o`` opens the highlighted task in a new pane, ``c`` closes the active
    pane, ``m`` maximises it; ``x`` cancels, ``r`` re-runs (each after a confirmation) and
    ``f`` reviews the task of the focused pane, or the highlighted one when the list has the
    focus; ``h`` opens the history, ``w`` the workers screen; Enter on a task moves into its
    pane, Tab cycles the focus through the list and the panes. A pane's export (``e``) asks
    for a file here.

    Args:
        client: The SDK client.
        default_workdir: Prefill for the compose screen's workdir.
        clock: Current UTC time for the task list's ages.
        poll_interval_s: Seconds between task-list polls (and workers-screen polls).
        layout: The panes to bring back (what :class:`PaneGrid.LayoutChanged` reported when
            the TUI last ran against this server): each task is fetched again (``GET
            /api/tasks/{id}``) and replays its events in its own pane, in order, the active one
            focused (and maximised if it was). A task the server no longer has or shows to this
            user (a 4xx) is skipped, with one toast naming how many; while the server cannot
            be reached it is tried again (when the list's polls get through, or after growing
            waits). Until it is done the list's highlight moves no pane and no layout change
            is reported, so the remembered layout is never overwritten.
        remember_layout: Called with each new layout of the panes
            (:class:`PaneGrid.LayoutChanged`); the app writes it down. A call, not the message
            itself: Textual stops a message at the node that was handling a message when it
            was posted (here the screen, for a pane shown from the list's highlight).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        # ctrl+n too: in a focused pane n is the next search match.
        Binding(NEW_TASK_KEYS, "new_task", "New", id=NEW_TASK_ID),
        Binding("o", "open_pane", "Open pane", id="open-pane"),
        Binding("c", "close_pane", "Close pane", id="close-pane"),
        Binding("m", "maximize_pane", "Maximise", show=False, id="maximize-pane"),
        Binding("x", "cancel_task", "Cancel", id="cancel-task"),
        Binding("r", "rerun_task", "Re-run", show=False, id="rerun-task"),
        Binding("f", "review", "Review the diff", show=False, id="review-diff"),
        Binding("h", "history", "History", id="history"),
        Binding("w", "workers", "Workers", id="workers"),
    ]

    DEFAULT_CSS = """
    DashboardScreen > #dashboard-panes {
        height: 1fr;
    }
    """

    def __init__(
        self,
        client: CodexTuiClient,
        *,
        default_workdir: str | None = None,
        clock: Callable[[], datetime] | None = None,
        poll_interval_s: float = 1.5,
        layout: PaneLayout | None = None,
        remember_layout: Callable[[PaneLayout], None] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.default_workdir = default_workdir
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self._layout = layout if layout is not None and layout.tasks else None
        self.restoring = self._layout is not None
        """True while the panes of :attr:`_layout` are being brought back."""
        # Set when the task list's polls reach the server again after failing.
        self._reconnected = asyncio.Event()
        self._remember_layout = remember_layout

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(clock=self.clock, id="connection-banner")
        with Horizontal(id="dashboard-panes"):
            task_list = TaskList(
                self.client,
                clock=self.clock,
                poll_interval_s=self.poll_interval_s,
                id="task-list",
            )
            task_list.border_title = "Tasks"
            yield task_list
            yield PaneGrid(self.client, now=self.clock, id="pane-grid")
        yield KeysFooter()

    def on_mount(self) -> None:
        """Put the keyboard in the task list; bring the remembered panes back."""
        self.task_list.options.focus()
        if self._layout is not None:
            self.restore(self._layout)

    def restore(self, layout: PaneLayout) -> None:
        """Bring back the panes of ``layout`` (as the ``layout`` argument does), when the
        server they belong to became known after the screen was made; a layout without
        tasks leaves the panes as they are."""
        if not layout.tasks:
            return
        self._layout = layout
        self.restoring = True
        self.run_worker(self._restore_panes(layout), group="restore-panes", exit_on_error=False)

    @property
    def task_list(self) -> TaskList:
        """The task list pane."""
        return self.query_one("#task-list", TaskList)

    @property
    def pane_grid(self) -> PaneGrid:
        """The grid of task panes."""
        return self.query_one("#pane-grid", PaneGrid)

    @property
    def event_view(self) -> EventView:
        """The active task pane."""
        return self.pane_grid.active

    @property
    def banner(self) -> ConnectionBanner:
        """The banner shown while the server cannot be reached."""
        return self.query_one("#connection-banner", ConnectionBanner)

    # -- actions ----------------------------------------------------------------------------

    # The screens these actions open are imported when first opened, not at start: the
    # first frame shows only this screen.

    def action_new_task(self) -> None:
        """Open the compose screen; select the task it creates."""
        from codex_tui.screens.compose import ComposeScreen

        self.app.push_screen(
            ComposeScreen(self.client, default_workdir=self.default_workdir),
            self._task_created,
        )

    def action_workers(self) -> None:
        """Open the workers screen (pair, inspect and revoke workers)."""
        from codex_tui.screens.workers import WorkersScreen

        self.app.push_screen(
            WorkersScreen(self.client, clock=self.clock, poll_interval_s=self.poll_interval_s)
        )

    async def action_open_pane(self) -> None:
        """Split: a new pane follows the highlighted task and takes over following the
        list's highlight; the pane that had it keeps its task (PaneGrid.open)."""
        task = self.task_list.selected_task
        if task is None:
            self.notify("No task selected.", severity="warning")
            return
        if await self.pane_grid.open(task) is None:
            self.notify(
                f"No room for another pane ({self.pane_grid.capacity} at this size); "
                "close one with c.",
                severity="warning",
            )

    async def action_close_pane(self) -> None:
        """Close the active pane (the last one is only cleared)."""
        await self.pane_grid.close()

    def action_maximize_pane(self) -> None:
        """Maximise the active pane, or restore it."""
        self.pane_grid.toggle_maximize()

    def action_history(self) -> None:
        """Open the history of all tasks; the task picked there opens in a pane."""
        from codex_tui.screens.history import HistoryScreen

        self.app.push_screen(HistoryScreen(self.client, clock=self.clock), self._open_from_history)

    def target_task(self) -> Task | None:
        """The task a key acts on: the focused pane's, else the one highlighted in the list
        (the newest record the list has of it)."""
        focused = self.focused
        chain = focused.ancestors_with_self if focused is not None else []
        pane = next((node for node in chain if isinstance(node, EventView)), None)
        task = pane.followed_task if pane is not None else None
        if task is None:
            return self.task_list.selected_task
        listed = next((t for t in self.task_list.tasks if t.id == task.id), None)
        return listed or task

    def action_review(self) -> None:
        """Open the review screen on the focused pane's task, else on the highlighted one."""
        from codex_tui.screens.review import ReviewScreen

        task = self.target_task()
        if task is None:
            self.notify("No task selected.", severity="warning")
            return
        self.app.push_screen(
            ReviewScreen(self.client, task, clock=self.clock, poll_interval_s=self.poll_interval_s)
        )

    def action_rerun_task(self) -> None:
        """Ask, then queue the focused pane's task (else the highlighted one) again with the
        same prompt and options."""
        from codex_tui.screens.confirm import ConfirmModal

        task = self.target_task()
        if task is None:
            self.notify("No task selected.", severity="warning")
            return
        task_id = task.id

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.run_worker(self._rerun(task_id), group="rerun", exit_on_error=False)

        self.app.push_screen(
            ConfirmModal(
                f"Run this task again, as a new task?\n\n{short_prompt(task.prompt, 160)}",
                confirm_label="Re-run",
                cancel_label="Keep as is",
            ),
            answered,
        )

    def action_cancel_task(self) -> None:
        """Ask, then cancel the focused pane's task (else the highlighted one)."""
        from codex_tui.screens.confirm import ConfirmModal

        task = self.target_task()
        if task is None:
            self.notify("No task selected.", severity="warning")
            return
        if task.status.is_terminal:
            self.notify(f"The task already ended ({task.status.value}).", severity="warning")
            return
        task_id = task.id

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.run_worker(
                    self._cancel(task_id),
                    name=f"cancel:{task_id}",
                    group="cancel",
                    exit_on_error=False,
                )

        self.app.push_screen(
            ConfirmModal(
                f"Cancel this task?\n\n{short_prompt(task.prompt, 160)}",
                confirm_label="Cancel task",
                cancel_label="Keep running",
            ),
            answered,
        )

    # -- message handlers -------------------------------------------------------------------

    @on(TaskList.Selected)
    def _show_selected(self, message: TaskList.Selected) -> None:
        if not self.restoring:
            self.pane_grid.show(message.task)

    @on(PaneGrid.LayoutChanged)
    def _layout_changed(self, message: PaneGrid.LayoutChanged) -> None:
        message.stop()
        self._show_waiting()
        if not self.restoring and self._remember_layout is not None:
            # While restoring: the start-up pane, not what the user arranged.
            self._remember_layout(message.layout)

    @on(OptionList.OptionSelected, "#task-options")
    def _focus_events(self) -> None:
        self.pane_grid.focus_pane(self.pane_grid.active)

    @on(EventView.StatusChanged)
    def _refresh_list(self) -> None:
        self.task_list.poll_now()

    @on(EventView.ExportRequested)
    def _export(self, message: EventView.ExportRequested) -> None:
        from codex_tui.screens.export import export_transcript  # imported when first used

        export_transcript(self, self.client, message.task)

    @on(TaskList.ConnectionChanged)
    def _show_connection(self, message: TaskList.ConnectionChanged) -> None:
        if message.connected:
            self._reconnected.set()  # a restore waiting for the server tries again at once
        self.task_list.border_subtitle = (
            Content.from_markup("[$error]offline[/]") if message.error else None
        )
        self.banner.set_state(message.error, message.retry_in_s, message.since)

    @on(TaskList.WaitingChanged)
    def _show_waiting(self) -> None:
        """Each pane's queued task says what it waits for when no online worker can take
        it (the task list's last poll): at 80 columns the list's row cuts it short."""
        for pane in self.pane_grid.panes:
            pane.waiting_for = self.task_list.waiting_for(pane.task_id)

    @on(TaskList.CountsChanged)
    def _show_counts(self, message: TaskList.CountsChanged) -> None:
        self.task_list.border_title = tasks_title(message.counts)

    # -- internals --------------------------------------------------------------------------

    async def _fetch_layout_tasks(self, layout: PaneLayout) -> tuple[list[Task], int, int]:
        """The tasks of ``layout`` the server still shows this user, the index of the active
        one among them and how many were skipped (a 4xx).

        Raises:
            One of :data:`codex_tui.failures.REQUEST_ERRORS`: the server did not answer.
        """
        await client_ready(self.client)
        from server_client.client import ApiError  # the SDK: imported by now

        tasks: list[Task] = []
        active = 0
        skipped = 0
        for index, task_id in enumerate(layout.tasks):
            try:
                task = await self.client.get_task(task_id)
            except ApiError as error:
                if not 400 <= error.status < 500:
                    raise
                skipped += 1
                continue
            if index <= layout.active:
                active = len(tasks)
            tasks.append(task)
        return tasks, active, skipped

    async def _restore_panes(self, layout: PaneLayout) -> None:
        """Fetch the tasks of ``layout`` and follow them in panes (see the class's ``layout``).

        While the server does not answer, it tries again after growing waits
        (:func:`codex_tui.failures.poll_retry_delays`), or at once when the task list's polls
        reach the server again; meanwhile the list's highlight moves no pane, so the layout
        the user left is neither lost nor overwritten (one toast says so)."""
        delays = failures.poll_retry_delays()
        told = False
        while True:
            self._reconnected.clear()
            try:
                tasks, active, skipped = await self._fetch_layout_tasks(layout)
                break
            except failures.REQUEST_ERRORS as error:
                if not told:
                    told = True
                    self.notify(
                        f"The panes come back when the server answers: "
                        f"{failures.describe_poll_failure(error)}",
                        title="Panes",
                        severity="warning",
                        markup=False,
                    )
            with contextlib.suppress(TimeoutError):  # not wait_for (3.11 loses cancels)
                async with asyncio.timeout(next(delays)):
                    await self._reconnected.wait()
        try:
            if tasks:
                await self.pane_grid.restore(tasks, active, layout.maximized)
                shown = self.pane_grid.active.followed_task
                if shown is not None:  # the list's highlight drives this pane from now on
                    self.task_list.upsert(shown)
                    self.task_list.select_task(shown.id)
        finally:
            self.restoring = False
        if skipped:
            gone = "task is" if skipped == 1 else "tasks are"
            self.notify(
                f"{skipped} of the panes' {gone} gone or not yours; left out.",
                title="Panes",
                markup=False,
            )

    async def _open_from_history(self, task: Task | None) -> None:
        if task is None:
            return
        self.task_list.poll_now()
        grid = self.pane_grid
        pane = grid.pane_for(task.id) or await grid.open(task) or grid.show(task)
        grid.focus_pane(pane)

    async def _rerun(self, task_id: str) -> None:
        try:
            task = await self.client.rerun_task(task_id)
        except failures.ACTION_ERRORS as error:
            self.notify(describe_action_failure(error), title="Re-run failed", severity="error")
            return
        self.notify(f"Re-run queued: {short_prompt(task.prompt, 60)}")
        self._task_created(task)

    def _task_created(self, task: Task | None) -> None:
        if task is None:
            return
        self.task_list.upsert(task)
        self.task_list.select_task(task.id)
        self.task_list.options.focus()
        self.task_list.poll_now()

    async def _cancel(self, task_id: str) -> None:
        try:
            task = await self.client.cancel_task(task_id)
        except failures.ACTION_ERRORS as error:
            self.notify(describe_action_failure(error), title="Cancel failed", severity="error")
            return
        self.task_list.upsert(task)
        self.task_list.poll_now()
        self.notify("Cancel requested." if not task.status.is_terminal else "Task canceled.")
