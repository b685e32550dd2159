"""Provides TaskList: the caller's tasks in attention groups with live status, refreshed by
polling the server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from codex_tui.deferred_client import client_ready
from codex_tui.events.view import shown_line, status_icon
from codex_tui.failures import describe_poll_failure, poll_forever, poll_retry_delays
from codex_tui.keys import NEW_TASK_ID, NEW_TASK_KEYS, key_hint
from codex_tui.textual_internals import replace_option_prompt_in_place
from server_client.clock import utcnow
from server_client.enums import TaskStatus

if TYPE_CHECKING:
    from server_client.client import CodexTuiClient
    from server_client.models import Task

__all__ = ["TaskCounts", "TaskList", "format_age", "short_prompt", "worker_text"]

#: Theme variable of each status icon.
_STATUS_VARIABLES: dict[TaskStatus, str] = {
    TaskStatus.QUEUED: "$foreground-muted",
    TaskStatus.RUNNING: "$accent",
    TaskStatus.WAITING: "$warning",
    TaskStatus.IDLE: "$primary",
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
    """The prompt on one line with whitespace collapsed, cut to ``limit`` characters, control
    characters shown visibly (docs/reliability.md T1)."""
    return shown_line(" ".join(prompt[: limit * 4].split()), limit)


def worker_text(task: Task) -> str:
    """Who runs the task: its worker's name; for a queued routed task, where it waits to go
    (``→ gpu-box``, ``→ [gpu, linux]`` or both); ``—`` when nobody yet."""
    if task.status is TaskStatus.QUEUED and (task.target_worker or task.labels):
        target = task.target_worker or ""
        if task.labels:
            target = f"{target} [{', '.join(task.labels)}]".strip()
        return f"→ {shown_line(target, 200)}"
    return shown_line(task.worker_name or "—", 200)


@dataclass(frozen=True)
class TaskCounts:
    """How many of the listed tasks each attention group holds."""

    running: int = 0
    """Queued or running."""
    attention: int = 0
    """Waiting for an approval, failed or lost: worth a look."""
    idle: int = 0
    """Conversations whose turn is done: ready for a reply."""
    done: int = 0
    """Completed or canceled."""

    @property
    def total(self) -> int:
        """All listed tasks."""
        return self.running + self.attention + self.idle + self.done


@dataclass(frozen=True)
class _Group:
    """One attention group: a header row, then its tasks newest first."""

    key: str
    """The group's field in :class:`TaskCounts`; its header's option id is ``group-KEY``."""
    title: str
    statuses: frozenset[TaskStatus]

    @property
    def option_id(self) -> str:
        return f"group-{self.key}"

    def header(self, count: int) -> Content:
        return Content.from_markup("[b]$title[/b] · $count", title=self.title, count=str(count))


#: The groups, in display order.
_GROUPS = (
    _Group("running", "Running", frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING})),
    _Group(
        "attention",
        "Needs attention",
        frozenset({TaskStatus.WAITING, TaskStatus.FAILED, TaskStatus.LOST}),
    ),
    _Group("idle", "Ready for a reply", frozenset({TaskStatus.IDLE})),
    _Group("done", "Done", frozenset({TaskStatus.COMPLETED, TaskStatus.CANCELED})),
)

#: The status word of a row, where it differs from the status's value.
_STATUS_WORDS: dict[TaskStatus, str] = {
    TaskStatus.WAITING: "waiting for approval",
    TaskStatus.IDLE: "idle, ready for a reply",
}


@dataclass(frozen=True)
class _Row:
    """What one task's row shows; rows are redrawn only when this changes."""

    status: TaskStatus
    prompt: str
    worker: str
    age: str
    canceling: bool
    diff: tuple[int, int] | None = None
    """Lines added and removed in the task's workspace, once its worker reported a diff."""
    waiting: str | None = None
    """What a queued task no online worker can take waits for (``waiting for a worker with
    label gpu``: :func:`server_client.routing.waiting_for`); it replaces the target, which
    it names."""

    def content(self) -> Content:
        status_word = (
            "canceling" if self.canceling else _STATUS_WORDS.get(self.status, self.status.value)
        )
        counts = " · [$success]+$added[/] [$error]−$removed[/]" if self.diff is not None else ""
        added, removed = self.diff if self.diff is not None else (0, 0)
        if self.waiting is not None and not self.canceling:
            second = "$status · [$warning]$waiting[/] · $age"
        else:
            second = f"$status · $worker · $age{counts}"
        return Content.from_markup(
            f"[{_STATUS_VARIABLES[self.status]}]$icon[/] $prompt\n[$foreground-muted]  {second}[/]",
            icon=status_icon(self.status),
            prompt=self.prompt,
            status=status_word,
            worker=self.worker,
            age=self.age,
            added=str(added),
            removed=str(removed),
            waiting=self.waiting or "",
        )


class TaskList(Widget, can_focus=False):
    """The caller's newest tasks in three attention groups, each under a header with its
    count: "Running" (queued and running), "Needs attention" (failed and lost), "Done"
    (completed and canceled); empty groups are left out, and each group lists its tasks newest
    first. Headers cannot be highlighted: the cursor skips them.

    Each task is a two-line row: status icon and prompt, then the status word, worker (or,
    while a routed task is queued, its target: ``→ gpu-box``), age and, once the worker
    reported a diff of the task's workspace, its lines added and removed (``+12 −4``). A
    queued task that no online worker can take says what it waits for instead of its target
    (``queued · waiting for a worker with label gpu``, ``waiting for an online worker``:
    :func:`server_client.routing.waiting_for`, the rule ``codex-tui ls`` shows too).

    A worker polls ``client.list_tasks()`` every ``poll_interval_s`` (and at once after
    :meth:`poll_now`), and ``client.list_workers()`` too while a listed task is queued; a row
    is redrawn only when what it shows changed. When a poll fails the
    server counts as disconnected (the rule is in :mod:`codex_tui.failures`): an error line
    appears above the list, which stays as it was and can still be browsed, and polling goes
    on after growing delays until a poll succeeds.

    Messages: :class:`Selected` when the highlighted task changes, :class:`CountsChanged` when
    the groups' sizes change, :class:`WaitingChanged` when what stuck queued tasks wait for
    changed, :class:`TaskFinished` when a task seen unfinished has ended,
    :class:`ApprovalNeeded` when a task starts waiting for an approval (also for those
    waiting at the first poll), and :class:`ConnectionChanged` after each failed poll and on
    recovery.

    Args:
        client: The SDK client.
        clock: Returns the current UTC time (injectable for deterministic ages).
        poll_interval_s: Seconds between polls while the server answers.
        page_size: How many of the newest tasks to show.
        retry_delays: Returns a new sequence of waits between polls while they fail; the
            default is :func:`codex_tui.failures.poll_retry_delays` (about 1, 2, 4, 8, 15 s).
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
    TaskList > #task-list-empty, TaskList > #task-list-connecting {
        display: none;
        color: $foreground-muted;
        padding: 0 1;
    }
    TaskList.-empty > #task-list-empty, TaskList.-connecting > #task-list-connecting {
        display: block;
    }
    TaskList > OptionList {
        height: 1fr;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    TaskList > OptionList > .option-list--option-disabled {
        color: $foreground-muted;
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
    class CountsChanged(Message):
        """The number of tasks in an attention group changed."""

        task_list: TaskList
        counts: TaskCounts

        @property
        def control(self) -> TaskList:
            """The task list that posted the message."""
            return self.task_list

        def can_replace(self, message: Message) -> bool:
            """Newer counts make older queued ones obsolete."""
            return isinstance(message, TaskList.CountsChanged) and (
                message.task_list is self.task_list
            )

    @dataclass
    class WaitingChanged(Message):
        """What the queued tasks no online worker can take wait for changed
        (:meth:`TaskList.waiting_for`)."""

        task_list: TaskList

        @property
        def control(self) -> TaskList:
            """The task list that posted the message."""
            return self.task_list

    @dataclass
    class TaskFinished(Message):
        """A task this list had seen queued or running has ended (posted once per task)."""

        task_list: TaskList
        task: Task

        @property
        def control(self) -> TaskList:
            """The task list that posted the message."""
            return self.task_list

    @dataclass
    class ApprovalNeeded(Message):
        """A task now waits for an approval (posted once per wait)."""

        task_list: TaskList
        task: Task

        @property
        def control(self) -> TaskList:
            """The task list that posted the message."""
            return self.task_list

    @dataclass
    class ConnectionChanged(Message):
        """A poll failed (``error`` set; posted after each failure) or the first one after
        failures succeeded (``error`` None)."""

        task_list: TaskList
        error: str | None
        retry_in_s: float | None = None
        """Seconds until the next poll, while disconnected."""
        since: datetime | None = None
        """When the first poll of this run of failures failed (the task list's clock)."""

        @property
        def control(self) -> TaskList:
            """The task list that posted the message."""
            return self.task_list

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
        retry_delays: Callable[[], Iterator[float]] | None = None,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's naming
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.client = client
        self.clock: Callable[[], datetime] = clock or utcnow
        self.poll_interval_s = poll_interval_s
        self.page_size = page_size
        self._new_retry_delays = retry_delays or poll_retry_delays
        self._retry_delays = self._new_retry_delays()
        self._tasks: dict[str, Task] = {}
        self._rows: dict[str, _Row] = {}
        self._order: list[str] = []
        self._layout: list[str] = []
        self._counts = TaskCounts()
        self._unfinished: set[str] = set()
        self._waiting: set[str] = set()
        # queued task id -> what it waits for, when no online worker can take it (last poll)
        self._unroutable: dict[str, str] = {}
        self._selected_id: str | None = None
        self._pending_select: str | None = None
        self._error: str | None = None
        self._offline_since: datetime | None = None
        self._loaded = False
        self._wake = asyncio.Event()

    def compose(self) -> ComposeResult:
        yield Static(id="task-list-error")
        yield Static(self._empty_text(), id="task-list-empty")
        yield Static("Connecting to the server…", id="task-list-connecting")
        yield OptionList(id="task-options")

    def on_mount(self) -> None:
        """Start polling once the first frame is drawn (the first request costs the event
        loop tens of milliseconds: httpx imports its connection pool and connects); follow
        the keymap in the empty list's hint."""
        self.add_class("-connecting")  # until the first poll's answer, or its failure
        self.call_after_refresh(self._start_polling)
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def _empty_text(self) -> str:
        return f"No tasks yet. Press {key_hint(self.app, NEW_TASK_ID, NEW_TASK_KEYS)} to start one."

    def _bindings_changed(self, _screen: object) -> None:
        """The keymap may have changed (codex-tui applies config.toml's after the first
        frame): the hint names the key that starts a task now."""
        self.query_one("#task-list-empty", Static).update(self._empty_text())

    def _start_polling(self) -> None:
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
        """The tasks shown, in display order (group by group, newest first in each)."""
        return [self._tasks[task_id] for task_id in self._order]

    @property
    def counts(self) -> TaskCounts:
        """How many tasks each attention group holds."""
        return self._counts

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

    @property
    def offline_since(self) -> datetime | None:
        """When polls started failing, or None while the server answers."""
        return self._offline_since

    def waiting_for(self, task_id: str | None) -> str | None:
        """What a listed queued task waits for when no online worker can take it
        (``waiting for a worker with label gpu``; as of the last poll), else None."""
        return self._unroutable.get(task_id) if task_id is not None else None

    def poll_now(self) -> None:
        """Poll at once instead of waiting for the interval (or the next retry)."""
        self._wake.set()

    def select_task(self, task_id: str) -> None:
        """Highlight a task; if it is not listed yet, highlight it when it appears."""
        if task_id in self._tasks:
            self._pending_select = None
            options = self.options
            options.highlighted = options.get_option_index(task_id)
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
        """Show ``tasks`` in their groups, redrawing only the rows that changed.

        Posts :class:`TaskFinished` for each task that was unfinished when last shown and has
        ended now, and :class:`CountsChanged` when the groups' sizes changed. Does nothing
        once the rows are gone (a poll that ends while the app exits and removes the list).
        """
        options = self.query_one_optional("#task-options", OptionList)
        if options is None:
            return
        tasks = list(tasks)
        if self._selected_id is not None and all(t.id != self._selected_id for t in tasks):
            # Keep the task the user is looking at, even when it drops off the first page.
            selected = self._tasks.get(self._selected_id)
            if selected is not None:
                tasks.append(selected)
        finished = [t for t in tasks if t.status.is_terminal and t.id in self._unfinished]
        self._unfinished = {t.id for t in tasks if not t.status.is_terminal}
        waiting = [t for t in tasks if t.status is TaskStatus.WAITING]
        asking = [t for t in waiting if t.id not in self._waiting]
        self._waiting = {t.id for t in waiting}
        self._tasks = {task.id: task for task in tasks}
        groups = [
            (group, members)
            for group in _GROUPS
            if (members := _newest_first(t for t in tasks if t.status in group.statuses))
        ]
        order = [task_id for _, members in groups for task_id in members]
        layout = [item for group, members in groups for item in (group.option_id, *members)]
        now = self.clock()
        rows = {task_id: self._row(self._tasks[task_id], now) for task_id in order}
        if layout != self._layout:
            # The highlight as drawn: newer than _selected_id while its event is still queued
            # (select_task just moved it), so a rebuild keeps what was asked for last.
            drawn = options.highlighted_option.id if options.highlighted_option else None
            options.set_options(
                option
                for group, members in groups
                for option in (
                    Option(group.header(len(members)), id=group.option_id, disabled=True),
                    *(Option(rows[task_id].content(), id=task_id) for task_id in members),
                )
            )
            target = self._pending_select or drawn or self._selected_id
            if target is not None and target in rows:
                self._pending_select = None
                options.highlighted = options.get_option_index(target)
            elif order:
                options.action_first()
        else:
            for task_id, row in rows.items():
                if self._rows.get(task_id) != row:
                    replace_option_prompt_in_place(options, task_id, row.content())
            if self._pending_select is not None and self._pending_select in rows:
                self.select_task(self._pending_select)
        self._order = order
        self._layout = layout
        self._rows = rows
        self.set_class(not order, "-empty")
        counts = TaskCounts(**{group.key: len(members) for group, members in groups})
        if counts != self._counts:
            self._counts = counts
            self.post_message(self.CountsChanged(self, counts))
        for task in finished:
            self.post_message(self.TaskFinished(self, task))
        for task in asking:
            self.post_message(self.ApprovalNeeded(self, task))

    # -- internals --------------------------------------------------------------------------

    def _row(self, task: Task, now: datetime) -> _Row:
        return _Row(
            status=task.status,
            prompt=short_prompt(task.prompt),
            worker=worker_text(task),
            age=format_age(task.created_at, now),
            canceling=task.cancel_requested and not task.status.is_terminal,
            diff=(
                (task.diff_added, task.diff_removed)
                if task.diff_added is not None and task.diff_removed is not None
                else None
            ),
            waiting=self._unroutable.get(task.id) if task.status is TaskStatus.QUEUED else None,
        )

    async def _poll_once(self) -> float | None:
        """One poll; returns how long to wait before the next one (None: the interval)."""
        await client_ready(self.client)  # the SDK, imported in a thread after the first frame
        from codex_tui.failures import REQUEST_ERRORS  # the SDK's: imported by now

        try:
            page = await self.client.list_tasks(limit=self.page_size)
        except REQUEST_ERRORS as error:
            retry_in_s = next(self._retry_delays)
            self._set_offline(describe_poll_failure(error, self.client.base_url), retry_in_s)
            return retry_in_s
        self._retry_delays = self._new_retry_delays()
        self._loaded = True
        self.remove_class("-connecting")
        self._set_online()
        queued = [task for task in page.items if task.status is TaskStatus.QUEUED]
        before = self._unroutable
        if not queued:
            self._unroutable = {}
        else:
            from server_client.routing import waiting_for

            try:
                workers = await self.client.list_workers()
            except REQUEST_ERRORS:
                pass  # what they wait for stays as last seen; the tasks themselves are fresh
            else:
                self._unroutable = {
                    task.id: waiting
                    for task in queued
                    if (waiting := waiting_for(task, workers)) is not None
                }
        self.update_tasks(page.items)
        if self._unroutable != before:
            self.post_message(self.WaitingChanged(self))
        return None

    def _set_offline(self, error: str, retry_in_s: float) -> None:
        if self._offline_since is None:
            self._offline_since = self.clock()
        if error != self._error:
            self.query_one("#task-list-error", Static).update(Content(f"{error} — retrying"))
        self._error = error
        self.remove_class("-connecting")
        self.add_class("-offline")
        self.post_message(self.ConnectionChanged(self, error, retry_in_s, self._offline_since))

    def _set_online(self) -> None:
        if self._error is None:
            return
        self._error = None
        self._offline_since = None
        self.remove_class("-offline")
        self.query_one("#task-list-error", Static).update(Content(""))
        self.post_message(self.ConnectionChanged(self, None))

    @on(OptionList.OptionHighlighted, "#task-options")
    def _highlight_changed(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        task_id = event.option.id
        if task_id is None or task_id == self._selected_id or task_id not in self._tasks:
            return
        self._selected_id = task_id
        self.post_message(self.Selected(self, self._tasks[task_id]))


def _newest_first(tasks: Iterable[Task]) -> list[str]:
    """The ids of ``tasks``, those waiting for an approval first, then newest first (ties
    keep their order)."""
    ordered = sorted(tasks, key=lambda t: t.created_at, reverse=True)
    return [task.id for task in sorted(ordered, key=lambda t: t.status is not TaskStatus.WAITING)]
