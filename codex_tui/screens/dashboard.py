"""Provides DashboardScreen: the task list on the left, the selected task's events on the right."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

import httpx
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, OptionList

from codex_tui.failures import describe_action_failure
from codex_tui.screens.compose import ComposeScreen
from codex_tui.screens.confirm import ConfirmModal
from codex_tui.screens.workers import WorkersScreen
from codex_tui.widgets.event_view import EventView
from codex_tui.widgets.task_list import TaskList, short_prompt
from server_client.client import ApiError, CodexTuiClient
from server_client.models import Task

__all__ = ["DashboardScreen"]


class DashboardScreen(Screen[None]):
    """The main screen: live task list and the selected task's live event stream.

    Keys: ``n`` opens the compose screen, ``x`` cancels the selected task after a confirm,
    ``w`` opens the workers screen, Enter on a task moves into its events, Tab moves between
    the two panes.

    Args:
        client: The SDK client.
        default_workdir: Prefill for the compose screen's workdir.
        clock: Current UTC time for the task list's ages.
        poll_interval_s: Seconds between task-list polls (and workers-screen polls).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_task", "New task", id="new-task"),
        Binding("x", "cancel_task", "Cancel task", id="cancel-task"),
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
    ) -> None:
        super().__init__()
        self.client = client
        self.default_workdir = default_workdir
        self.clock = clock
        self.poll_interval_s = poll_interval_s

    def compose(self) -> ComposeResult:
        with Horizontal(id="dashboard-panes"):
            task_list = TaskList(
                self.client,
                clock=self.clock,
                poll_interval_s=self.poll_interval_s,
                id="task-list",
            )
            task_list.border_title = "Tasks"
            yield task_list
            yield EventView(self.client, id="event-view")
        yield Footer()

    def on_mount(self) -> None:
        """Put the keyboard in the task list."""
        self.task_list.options.focus()

    @property
    def task_list(self) -> TaskList:
        """The task list pane."""
        return self.query_one("#task-list", TaskList)

    @property
    def event_view(self) -> EventView:
        """The event stream pane."""
        return self.query_one("#event-view", EventView)

    # -- actions ----------------------------------------------------------------------------

    def action_new_task(self) -> None:
        """Open the compose screen; select the task it creates."""
        self.app.push_screen(
            ComposeScreen(self.client, default_workdir=self.default_workdir),
            self._task_created,
        )

    def action_workers(self) -> None:
        """Open the workers screen (pair, inspect and revoke workers)."""
        self.app.push_screen(
            WorkersScreen(self.client, clock=self.clock, poll_interval_s=self.poll_interval_s)
        )

    def action_cancel_task(self) -> None:
        """Ask, then cancel the selected task."""
        task = self.task_list.selected_task
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
        self.event_view.follow(message.task)

    @on(OptionList.OptionSelected, "#task-options")
    def _focus_events(self) -> None:
        self.event_view.log_widget.focus()

    @on(EventView.StatusChanged)
    def _refresh_list(self) -> None:
        self.task_list.poll_now()

    @on(TaskList.ConnectionChanged)
    def _show_connection(self, message: TaskList.ConnectionChanged) -> None:
        self.task_list.border_subtitle = (
            Content.from_markup("[$error]offline[/]") if message.error else None
        )

    # -- internals --------------------------------------------------------------------------

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
        except (ApiError, httpx.HTTPError) as error:
            self.notify(describe_action_failure(error), title="Cancel failed", severity="error")
            return
        self.task_list.upsert(task)
        self.task_list.poll_now()
        self.notify("Cancel requested." if not task.status.is_terminal else "Task canceled.")
