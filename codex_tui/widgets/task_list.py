"""Provides TaskList: the caller's tasks with live status, refreshed by polling the server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from textual import on
from textual.app import ComposeResult
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from codex_tui.failures import REQUEST_ERRORS, describe_poll_failure, poll_forever
from codex_tui.widgets.render import status_icon
from server_client.client import CodexTuiClient
from server_client.models import Task, TaskStatus

__all__ = ["TaskList", "format_age", "short_prompt", "worker_text"]

#: Theme variable of each status icon.
_STATUS_VARIABLES: dict[TaskStatus, str] = {
    TaskStatus.QUEUED: "$foreground-muted",
    TaskStatus.RUNNING: "$accent",
    TaskStatus.COMPLETED: "$success",
    TaskStatus.FAILED: "$error",
    TaskStatus.CANCELED: "$warning",
    TaskStatus.LOST: "$error",
}


def format_age(created_at: datetime, now: datetime) -> str:
    """A compact age such as ``12s``, ``5m``, ``3h`` or ``2d``."""
    seconds = max(int((now - created_at).total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def short_prompt(prompt: str, limit: int = 200) -> str:
    """The prompt on one line with whitespace collapsed, cut to ``limit`` characters."""
    text = " ".join(prompt[: limit * 4].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def worker_text(task: Task) -> str:
    """Who runs the task: its worker's name; for a queued routed task, where it waits to go
    (``→ gpu-box``, ``→ [gpu, linux]`` or both); ``—`` when nobody yet."""
    if task.status is TaskStatus.QUEUED and (task.target_worker or task.labels):
        target = task.target_worker or ""
        if task.labels:
            target = f"{target} [{', '.join(task.labels)}]".strip()
        return f"→ {target}"
    return task.worker_name or "—"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Row:
    """What one task's row shows; rows are redrawn only when this changes."""

    status: TaskStatus
    prompt: str
    worker: str
    age: str
    canceling: bool

    def content(self) -> Content:
        status_word = "canceling" if self.canceling else self.status.value
        return Content.from_markup(
            f"[{_STATUS_VARIABLES[self.status]}]$icon[/] $prompt\n"
            "[$foreground-muted]  $status · $worker · $age[/]",
            icon=status_icon(self.status),
            prompt=self.prompt,
            status=status_word,
            worker=self.worker,
            age=self.age,
        )


class TaskList(Widget, can_focus=False):
    """The caller's newest tasks, one two-line row each: status icon and prompt, then the
    status word, worker (or, while a routed task is queued, its target: ``→ gpu-box``) and
    age.

    A worker polls ``client.list_tasks()`` every ``poll_interval_s`` (and at once after
    :meth:`poll_now`); a row is redrawn only when what it shows changed. When the server cannot
    be reached an error line appears above the list and polling goes on.

    Args:
        client: The SDK client.
        clock: Returns the current UTC time (injectable for deterministic ages).
        poll_interval_s: Seconds between polls.
        page_size: How many of the newest tasks to show.
    """

    DEFAULT_CSS = """
    TaskList {
        height: 1fr;
        layout: vertical;
    }
    TaskList > #task-list-error {
        display: none;
        color: $error;
        height: auto;
        padding: 0 1;
    }
    TaskList.-offline > #task-list-error {
        display: block;
    }
    TaskList > #task-list-empty {
        display: none;
        color: $foreground-muted;
        padding: 0 1;
    }
    TaskList.-empty > #task-list-empty {
        display: block;
    }
    TaskList > OptionList {
        height: 1fr;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    @dataclass
    class Selected(Message):
        """The highlighted task changed."""

        task_list: TaskList
        task: Task

        @property
        def control(self) -> TaskList:
            """The task list that posted the message."""
            return self.task_list

    @dataclass
    class ConnectionChanged(Message):
        """Polling the server started failing (``error`` set) or recovered (``error`` None)."""

        task_list: TaskList
        error: str | None

        @property
        def connected(self) -> bool:
            """True when the last poll succeeded."""
            return self.error is None

    def __init__(
        self,
        client: CodexTuiClient,
        *,
        clock: Callable[[], datetime] | None = None,
        poll_interval_s: float = 1.5,
        page_size: int = 50,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's naming
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.client = client
        self.clock: Callable[[], datetime] = clock or _utcnow
        self.poll_interval_s = poll_interval_s
        self.page_size = page_size
        self._tasks: dict[str, Task] = {}
        self._rows: dict[str, _Row] = {}
        self._order: list[str] = []
        self._selected_id: str | None = None
        self._pending_select: str | None = None
        self._error: str | None = None
        self._loaded = False
        self._wake = asyncio.Event()

    def compose(self) -> ComposeResult:
        yield Static(id="task-list-error")
        yield Static("No tasks yet. Press n to start one.", id="task-list-empty")
        yield OptionList(id="task-options")

    def on_mount(self) -> None:
        """Start polling."""
        self.run_worker(
            poll_forever(self._poll_once, self._wake, self.poll_interval_s),
            name="task-list-poll",
            group="poll",
            exclusive=True,
        )

    # -- public API -------------------------------------------------------------------------

    @property
    def options(self) -> OptionList:
        """The option list that shows the rows (it holds the keyboard focus)."""
        return self.query_one("#task-options", OptionList)

    @property
    def tasks(self) -> list[Task]:
        """The tasks shown, in display order (newest first)."""
        return [self._tasks[task_id] for task_id in self._order]

    @property
    def selected_task(self) -> Task | None:
        """The highlighted task, if any."""
        if self._selected_id is None:
            return None
        return self._tasks.get(self._selected_id)

    @property
    def loaded(self) -> bool:
        """True once a poll has succeeded."""
        return self._loaded

    @property
    def error(self) -> str | None:
        """Why the last poll failed, or None after a success."""
        return self._error

    def poll_now(self) -> None:
        """Poll at once instead of waiting for the interval."""
        self._wake.set()

    def select_task(self, task_id: str) -> None:
        """Highlight a task; if it is not listed yet, highlight it when it appears."""
        if task_id in self._tasks:
            self._pending_select = None
            self.options.highlighted = self._order.index(task_id)
        else:
            self._pending_select = task_id

    def upsert(self, task: Task) -> None:
        """Add or update one task now (e.g. one just created or canceled)."""
        if task.id in self._tasks:
            tasks = [task if t.id == task.id else t for t in self.tasks]
        else:
            tasks = [task, *self.tasks]
        self.update_tasks(tasks)

    def update_tasks(self, tasks: Iterable[Task]) -> None:
        """Show ``tasks`` (newest first), redrawing only the rows that changed."""
        tasks = list(tasks)
        if self._selected_id is not None and all(t.id != self._selected_id for t in tasks):
            # Keep the task the user is looking at, even when it drops off the first page.
            selected = self._tasks.get(self._selected_id)
            if selected is not None:
                tasks.append(selected)
        self._tasks = {task.id: task for task in tasks}
        now = self.clock()
        rows = {task.id: self._row(task, now) for task in tasks}
        order = [task.id for task in tasks]
        options = self.options
        if order != self._order:
            options.set_options(Option(rows[task_id].content(), id=task_id) for task_id in order)
            self._order = order
            self._rows = rows
            target = self._pending_select or self._selected_id
            if target in rows:
                self._pending_select = None
                options.highlighted = order.index(target)
            elif order:
                options.highlighted = 0
        else:
            for task_id, row in rows.items():
                if self._rows.get(task_id) != row:
                    options.replace_option_prompt(task_id, row.content())
            self._rows = rows
            if self._pending_select in rows:
                self.select_task(self._pending_select)
        self.set_class(not order, "-empty")

    # -- internals --------------------------------------------------------------------------

    def _row(self, task: Task, now: datetime) -> _Row:
        return _Row(
            status=task.status,
            prompt=short_prompt(task.prompt),
            worker=worker_text(task),
            age=format_age(task.created_at, now),
            canceling=task.cancel_requested and not task.status.is_terminal,
        )

    async def _poll_once(self) -> None:
        try:
            page = await self.client.list_tasks(limit=self.page_size)
        except REQUEST_ERRORS as error:
            self._set_error(describe_poll_failure(error))
            return
        self._loaded = True
        self._set_error(None)
        self.update_tasks(page.items)

    def _set_error(self, error: str | None) -> None:
        if error is not None:
            error = f"{error} — retrying"
        changed = error != self._error
        self._error = error
        self.set_class(error is not None, "-offline")
        if changed:
            self.query_one("#task-list-error", Static).update(Content(error or ""))
            self.post_message(self.ConnectionChanged(self, error))

    @on(OptionList.OptionHighlighted, "#task-options")
    def _highlight_changed(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        task_id = event.option.id
        if task_id is None or task_id == self._selected_id:
            return
        self._selected_id = task_id
        task = self._tasks.get(task_id)
        if task is not None:
            self.post_message(self.Selected(self, task))
