"""Provides Pilot tests of the task list's attention groups, counts and finished-task messages,
against a real server on loopback.

The task list runs in :class:`ListApp`, a bare app that also holds a connection banner wired
the way the dashboard wires it, and records every message the list posts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from textual import on
from textual.app import App, ComposeResult
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from codex_tui.textual_internals import replace_option_prompt_in_place
from codex_tui.widgets.connection_banner import ConnectionBanner
from codex_tui.widgets.task_list import TaskCounts, TaskList
from server_client.client import CodexTuiClient
from server_client.models import Runtime, Sandbox, Task, TaskPage, TaskStatus
from tests.conftest import ServerFactory
from tests.support.tui_helpers import SEED_TS, SIZE, seed_tasks, wait_for

M = TypeVar("M", bound=Message)

#: Polls only at mount and on ``poll_now()``: nothing changes behind a test's back.
NEVER_S = 3600.0


def fast_retries() -> Iterator[float]:
    """Retry delays for tests: 0.05, 0.1, 0.2, then 0.4 s for ever (no jitter)."""
    return itertools.chain([0.05, 0.1, 0.2], itertools.repeat(0.4))


class ListApp(App[None]):
    """A bare app around one :class:`TaskList` and a :class:`ConnectionBanner` fed by its
    ``ConnectionChanged`` (as the dashboard does); records what the list posts."""

    def __init__(
        self,
        client: CodexTuiClient,
        *,
        clock: Callable[[], datetime] | None = None,
        poll_interval_s: float = 0.1,
        retry_delays: Callable[[], Iterator[float]] | None = fast_retries,
    ) -> None:
        super().__init__()
        self.client = client
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.retry_delays = retry_delays
        self.messages: list[Message] = []

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(id="connection-banner")
        yield TaskList(
            self.client,
            clock=self.clock,
            poll_interval_s=self.poll_interval_s,
            retry_delays=self.retry_delays,
            id="task-list",
        )

    def on_mount(self) -> None:
        """The keyboard goes to the list."""
        self.task_list.options.focus()

    @property
    def task_list(self) -> TaskList:
        """The task list."""
        return self.query_one("#task-list", TaskList)

    @property
    def banner(self) -> ConnectionBanner:
        """The connection banner."""
        return self.query_one("#connection-banner", ConnectionBanner)

    def posted(self, kind: type[M]) -> list[M]:
        """The messages of one kind the list posted, oldest first."""
        return [message for message in self.messages if isinstance(message, kind)]

    @on(TaskList.Selected)
    @on(TaskList.CountsChanged)
    @on(TaskList.TaskFinished)
    @on(TaskList.ApprovalNeeded)
    def _record(self, message: Message) -> None:
        self.messages.append(message)

    @on(TaskList.ConnectionChanged)
    def _show_connection(self, message: TaskList.ConnectionChanged) -> None:
        self.messages.append(message)
        self.banner.set_state(message.error, message.retry_in_s, message.since)


def option_text(option: Option) -> str:
    """The plain text of one option (a header or a task row)."""
    prompt = option.prompt
    return prompt.plain if hasattr(prompt, "plain") else str(prompt)


def layout(tasks: TaskList) -> list[str]:
    """What the list shows, one string per option: ``# header``, or a row's status word and
    prompt (``queued: fix it``)."""
    shown = []
    for option in tasks.options.options:
        text = option_text(option)
        if option.disabled:
            shown.append(f"# {text}")
            continue
        first, second = text.split("\n")
        shown.append(f"{second.split(' · ')[0].strip()}: {first.split(' ', 1)[1]}")
    return shown


class PollCounter:
    """Counts the list's completed polls (wraps ``client.list_tasks``)."""

    def __init__(self, client: CodexTuiClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._list_tasks = client.list_tasks
        monkeypatch.setattr(client, "list_tasks", self._counted)

    async def _counted(self, **kwargs: Any) -> TaskPage:
        page = await self._list_tasks(**kwargs)
        self.count += 1  # the list redraws right after this returns, before anything else runs
        return page


# -- groups and counts -----------------------------------------------------------------------


async def test_groups_headers_and_counts_for_a_mix_of_statuses(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    seeded = await seed_tasks(server)  # canceled, failed, completed, running, queued
    async with server.client() as client:
        app = ListApp(client, clock=seeded.clock(), poll_interval_s=NEVER_S)
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.task_list
            await wait_for(pilot, lambda: tasks.loaded, "the first poll")
            assert layout(tasks) == [
                "# Running · 2",
                "queued: Summarise the open issues labelled bug",
                "running: Write a migration guide for v2",
                "# Needs attention · 1",
                "failed: Upgrade httpx and fix the deprecation warnings",
                "# Done · 2",
                "completed: Add a --json flag to the export command and test it",
                "canceled: Fix the flaky test in tests/test_sync.py",
            ]
            assert [option.disabled for option in tasks.options.options] == [
                True,
                False,
                False,
                True,
                False,
                True,
                False,
                False,
            ]
            assert [t.status for t in tasks.tasks] == [
                TaskStatus.QUEUED,
                TaskStatus.RUNNING,
                TaskStatus.FAILED,
                TaskStatus.COMPLETED,
                TaskStatus.CANCELED,
            ]
            assert tasks.counts == TaskCounts(running=2, attention=1, done=2)
            assert tasks.counts.total == 5
            await wait_for(pilot, lambda: app.posted(TaskList.CountsChanged), "the counts")
            assert app.posted(TaskList.CountsChanged)[-1].counts == tasks.counts

            # The running task is lost: it moves to "Needs attention", newest first there;
            # the "Running" group shrinks. An emptied group disappears.
            running = tasks.tasks[1]
            tasks.upsert(running.model_copy(update={"status": TaskStatus.LOST}))
            queued = tasks.tasks[0]
            tasks.upsert(queued.model_copy(update={"status": TaskStatus.CANCELED}))
            assert layout(tasks) == [
                "# Needs attention · 2",
                "lost: Write a migration guide for v2",
                "failed: Upgrade httpx and fix the deprecation warnings",
                "# Done · 3",
                "canceled: Summarise the open issues labelled bug",
                "completed: Add a --json flag to the export command and test it",
                "canceled: Fix the flaky test in tests/test_sync.py",
            ]
            assert tasks.counts == TaskCounts(running=0, attention=2, done=3)
            await wait_for(
                pilot,
                lambda: app.posted(TaskList.CountsChanged)[-1].counts == tasks.counts,
                "the new counts",
            )


async def test_the_cursor_skips_the_headers(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    seeded = await seed_tasks(server)
    async with server.client() as client:
        app = ListApp(client, clock=seeded.clock(), poll_interval_s=NEVER_S)
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.task_list
            await wait_for(pilot, lambda: tasks.loaded, "the first poll")
            shown = tasks.tasks
            assert tasks.options.highlighted == 1  # the first task, not the header above it
            assert tasks.selected_task == shown[0]

            async def press(key: str, expected: Task) -> None:
                await pilot.press(key)
                await wait_for(pilot, lambda: tasks.selected_task == expected, f"{key} → task")
                highlighted = tasks.options.highlighted_option
                assert highlighted is not None and not highlighted.disabled

            await press("down", shown[1])
            await press("down", shown[2])  # over "Needs attention"
            await press("down", shown[3])  # over "Done"
            await press("up", shown[2])
            await press("up", shown[1])
            await press("end", shown[4])
            await press("home", shown[0])
            await press("up", shown[4])  # wraps around, past the first header
            selected = [m.task.id for m in app.posted(TaskList.Selected)]
            assert selected == [shown[i].id for i in (0, 1, 2, 3, 2, 1, 4, 0, 4)]

            # select_task and a re-grouping keep the cursor on the same task.
            tasks.select_task(shown[3].id)
            await wait_for(pilot, lambda: tasks.selected_task == shown[3], "select_task")
            tasks.upsert(shown[1].model_copy(update={"status": TaskStatus.COMPLETED}))
            assert tasks.selected_task is not None and tasks.selected_task.id == shown[3].id
            highlighted = tasks.options.highlighted_option
            assert highlighted is not None and highlighted.id == shown[3].id


async def test_rows_are_redrawn_only_when_they_change(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_factory(local_worker=False)
    seeded = await seed_tasks(server)
    async with server.client() as client:
        polls = PollCounter(client, monkeypatch)
        app = ListApp(client, clock=seeded.clock(), poll_interval_s=NEVER_S)
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.task_list
            await wait_for(pilot, lambda: tasks.loaded, "the first poll")
            options = tasks.options
            rebuilt: list[int] = []
            redrawn: list[str] = []
            set_options = options.set_options

            def spy_set_options(*args: Any) -> Any:
                rebuilt.append(1)
                return set_options(*args)

            def spy_replace(option_list: OptionList, option_id: str, prompt: Any) -> None:
                redrawn.append(option_id)
                replace_option_prompt_in_place(option_list, option_id, prompt)

            monkeypatch.setattr(options, "set_options", spy_set_options)
            monkeypatch.setattr(
                "codex_tui.widgets.task_list.replace_option_prompt_in_place", spy_replace
            )

            # The same answer again: nothing is redrawn.
            tasks.poll_now()
            await wait_for(pilot, lambda: polls.count == 2, "the second poll")
            assert rebuilt == [] and redrawn == []

            # One row changes within its group: only that row is redrawn.
            running = tasks.tasks[1]
            tasks.upsert(running.model_copy(update={"cancel_requested": True}))
            assert rebuilt == [] and redrawn == [running.id]
            assert "canceling" in option_text(options.get_option(running.id))

            # A task changes group: the list is rebuilt, headers and all.
            tasks.upsert(running.model_copy(update={"status": TaskStatus.CANCELED}))
            assert rebuilt == [1] and redrawn == [running.id]
            assert layout(tasks)[0] == "# Running · 1"


async def test_a_poll_that_ends_after_the_rows_are_removed_changes_nothing(
    server_factory: ServerFactory,
) -> None:
    """When the app exits, Textual removes the list's option list before the list itself; a
    poll that answers in between must not fail the app (it did, now and then, in
    test_panes's burst test)."""
    server = server_factory(local_worker=False)
    seeded = await seed_tasks(server)
    async with server.client() as client:
        app = ListApp(client, clock=seeded.clock(), poll_interval_s=NEVER_S)
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.task_list
            await wait_for(pilot, lambda: tasks.loaded, "the first poll")
            shown = [task.id for task in tasks.tasks]
            counts = tasks.counts
            await tasks.options.remove()
            tasks.update_tasks([])
            assert [task.id for task in tasks.tasks] == shown
            assert tasks.counts == counts


# -- finished tasks --------------------------------------------------------------------------


async def test_a_running_task_that_completes_is_reported_once(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_factory(fake_mode="sleep", extra_env={"FAKE_CODEX_SLEEP": "2"})
    async with server.client() as client:
        polls = PollCounter(client, monkeypatch)
        app = ListApp(client)
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.task_list
            await wait_for(pilot, lambda: tasks.loaded, "the first poll")
            created = await client.create_task("sleep a little", workdir=str(server.workdir))
            await wait_for(
                pilot,
                lambda: any(t.status is TaskStatus.RUNNING for t in tasks.tasks),
                "the running task",
            )
            assert app.posted(TaskList.TaskFinished) == []
            await wait_for(pilot, lambda: app.posted(TaskList.TaskFinished), "TaskFinished", 30)
            finished = app.posted(TaskList.TaskFinished)
            assert [m.task.id for m in finished] == [created.id]
            assert finished[0].task.status is TaskStatus.COMPLETED
            assert finished[0].task_list is tasks

            seen = polls.count
            await wait_for(pilot, lambda: polls.count >= seen + 3, "three more polls")
            tasks.upsert(finished[0].task)
            assert len(app.posted(TaskList.TaskFinished)) == 1
            assert tasks.counts == TaskCounts(running=0, attention=0, done=1)


async def test_tasks_first_seen_finished_or_gone_are_not_reported(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_factory(local_worker=False)
    seeded = await seed_tasks(server)
    async with server.client() as client:
        polls = PollCounter(client, monkeypatch)
        app = ListApp(client, clock=seeded.clock(), poll_interval_s=NEVER_S)
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.task_list
            await wait_for(pilot, lambda: polls.count == 1, "the first poll")
            tasks.poll_now()
            await wait_for(pilot, lambda: polls.count == 2, "the second poll")
            tasks.poll_now()
            await wait_for(pilot, lambda: polls.count == 3, "the third poll")
            assert tasks.counts.done == 2
            assert app.posted(TaskList.TaskFinished) == []

            # The running task drops out of the list: no message; when it comes back ended,
            # the list had not seen it unfinished the last time, so still none.
            running = next(t for t in tasks.tasks if t.status is TaskStatus.RUNNING)
            tasks.update_tasks([t for t in tasks.tasks if t.id != running.id])
            assert running.id not in [t.id for t in tasks.tasks]
            tasks.upsert(running.model_copy(update={"status": TaskStatus.COMPLETED}))
            await pilot.pause()
            assert app.posted(TaskList.TaskFinished) == []

            # The queued one, seen unfinished, ends: one message.
            queued = next(t for t in tasks.tasks if t.status is TaskStatus.QUEUED)
            tasks.upsert(queued.model_copy(update={"status": TaskStatus.FAILED}))
            await wait_for(pilot, lambda: app.posted(TaskList.TaskFinished), "TaskFinished")
            assert [m.task.id for m in app.posted(TaskList.TaskFinished)] == [queued.id]


# -- conversations -----------------------------------------------------------------------------


def conversation(task_id: str, status: TaskStatus, prompt: str, minute: int) -> Task:
    """A conversation task record created ``minute`` minutes after the seed time."""
    return Task(
        id=task_id,
        prompt=prompt,
        workdir=None,
        model=None,
        sandbox=Sandbox.WORKSPACE_WRITE,
        status=status,
        created_at=SEED_TS + timedelta(minutes=minute),
        runtime=Runtime.APP_SERVER,
    )


async def test_waiting_needs_attention_first_and_idle_is_ready_for_a_reply(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        app = ListApp(client, poll_interval_s=NEVER_S)
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.task_list
            await wait_for(pilot, lambda: tasks.loaded, "the first poll")
            running = conversation("t1", TaskStatus.RUNNING, "refactor the parser", 1)
            failed = conversation("t2", TaskStatus.FAILED, "bump the deps", 4)
            idle = conversation("t3", TaskStatus.IDLE, "explain the cache", 2)
            tasks.update_tasks([running, failed, idle])
            await pilot.pause()
            assert app.posted(TaskList.ApprovalNeeded) == []
            waiting = running.model_copy(update={"status": TaskStatus.WAITING})
            tasks.update_tasks([waiting, failed, idle])
            await pilot.pause()
            assert layout(tasks) == [
                "# Needs attention · 2",
                "waiting for approval: refactor the parser",  # first, though older
                "failed: bump the deps",
                "# Ready for a reply · 1",
                "idle, ready for a reply: explain the cache",
            ]
            assert tasks.counts == TaskCounts(attention=2, idle=1)
            assert [m.task.id for m in app.posted(TaskList.ApprovalNeeded)] == ["t1"]
            assert app.posted(TaskList.TaskFinished) == [], "waiting and idle are not ends"
            tasks.update_tasks([waiting, failed, idle])  # still the same wait
            await pilot.pause()
            assert len(app.posted(TaskList.ApprovalNeeded)) == 1
