"""Provides Pilot tests of the dashboard's pane grid against a real server on loopback: opening,
closing, focusing and maximising panes, panes that follow their tasks independently, the
history and re-run keys, and a 10,000-event task that stays bounded beside a responsive pane.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from textual.pilot import Pilot
from textual.widget import Widget

from codex_tui.app import CodexTuiApp
from codex_tui.events.view import Annotation
from codex_tui.screens.confirm import ConfirmModal
from codex_tui.screens.dashboard import DashboardScreen
from codex_tui.screens.history import HistoryScreen
from codex_tui.widgets.event_view import EventView
from codex_tui.widgets.pane_grid import PaneGrid
from codex_tui.widgets.task_list import TaskList
from server_client.client import CodexTuiClient
from server_client.models import (
    EventBatch,
    EventIn,
    EventKind,
    FinishRequest,
    Task,
    TaskStatus,
    WorkerHello,
)
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory
from tests.support.tui_helpers import (
    dashboard,
    log_text,
    running_app,
    seed_tasks,
    task_list,
    wait_for,
)

#: The name of the worker a test plays itself (the local worker never claims its tasks).
PLAYED_WORKER = "pane-test-worker"


# -- helpers --------------------------------------------------------------------------------


def grid(app: CodexTuiApp) -> PaneGrid:
    """The dashboard's pane grid."""
    return dashboard(app).pane_grid


def focused(app: CodexTuiApp) -> Widget | None:
    """The focused widget (a function, so that type checkers do not narrow it)."""
    return app.focused


def stream_workers(app: CodexTuiApp, pane: EventView) -> list[str]:
    """Names of the running stream workers owned by ``pane``."""
    return [
        worker.name
        for worker in app.workers
        if worker.group == "stream" and worker.node is pane and worker.is_running
    ]


def own_stream(app: CodexTuiApp, pane: EventView) -> Callable[[], bool]:
    """A condition: ``pane`` runs exactly one stream worker, named after its task."""
    return lambda: stream_workers(app, pane) == [f"stream:{pane.task_id}"]


def replayed_queued(pane: EventView) -> Callable[[], bool]:
    """A condition: ``pane`` shows its task's queued status."""
    return lambda: "○ queued" in log_text(pane)


def toasts(app: CodexTuiApp) -> list[str]:
    """The messages of the notifications shown."""
    return [notification.message for notification in app._notifications]


def warnings(app: CodexTuiApp) -> list[str]:
    """The messages of the warning notifications shown."""
    return [n.message for n in app._notifications if n.severity == "warning"]


def active_panes(app: CodexTuiApp) -> list[EventView]:
    """The panes that carry the ``-active`` class."""
    return [pane for pane in grid(app).panes if pane.has_class("-active")]


async def create_tasks(client: CodexTuiClient, server: LiveServer, count: int) -> list[Task]:
    """``count`` queued tasks, oldest first."""
    return [
        await client.create_task(f"pane task {n}", workdir=str(server.workdir))
        for n in range(count)
    ]


async def open_panes(app: CodexTuiApp, pilot: Pilot[None], count: int) -> list[EventView]:
    """Open ``count`` panes with ``o``, moving the list's highlight down after each, so the
    panes follow the first ``count`` tasks of the list, one each; returns the panes."""
    tasks = task_list(app)
    await wait_for(pilot, lambda: len(tasks.tasks) >= count, f"{count} tasks in the list")
    first = tasks.tasks[0]
    await wait_for(pilot, lambda: grid(app).panes[0].task_id == first.id, "the first pane")

    def has_panes(number: int) -> Callable[[], bool]:
        return lambda: len(grid(app).panes) == number

    def active_follows(task_id: str) -> Callable[[], bool]:
        return lambda: grid(app).active.task_id == task_id

    for index in range(1, count):
        await pilot.press("o")
        await wait_for(pilot, has_panes(index + 1), "a new pane")
        await pilot.press("down")
        await wait_for(pilot, active_follows(tasks.tasks[index].id), "the new pane to follow")
    return grid(app).panes


class PlayedWorker:
    """A worker the test plays over the real worker protocol, for tasks routed to it by name.

    Args:
        server: The server to connect to.
    """

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.api = WorkerApi(server.url, server.token)
        self.worker_id = ""
        self.lease_id = ""
        self.sent = 0

    async def connect(self) -> None:
        """Register the worker (tasks can be routed to it from now on)."""
        worker = await self.api.connect(
            WorkerHello(
                name=PLAYED_WORKER, hostname=PLAYED_WORKER, workdir_roots=[str(self.server.workdir)]
            )
        )
        self.worker_id = worker.id

    async def claim(self, task_id: str) -> None:
        """Claim the task routed to this worker (it becomes running)."""
        claim = await self.api.claim(self.worker_id, wait_s=5)
        assert claim is not None and claim.task.id == task_id
        self.lease_id = claim.lease_id

    async def upload(self, task_id: str, lines: list[str]) -> None:
        """Upload one stdout event per line (one entry each: a pane folds stderr runs)."""
        events = [
            EventIn(ts=datetime.now(UTC), kind=EventKind.STDOUT, data={"line": line})
            for line in lines
        ]
        batch = EventBatch(lease_id=self.lease_id, first_index=self.sent, events=events)
        await self.api.upload(self.worker_id, task_id, batch.model_dump_json().encode())
        self.sent += len(events)

    async def finish(self, task_id: str) -> None:
        """End the task as completed."""
        await self.api.finish(
            self.worker_id,
            task_id,
            FinishRequest(
                lease_id=self.lease_id,
                status=TaskStatus.COMPLETED,
                event_count=self.sent,
                exit_code=0,
            ),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.api.aclose()


# -- opening, closing, focusing, maximising ---------------------------------------------------


async def test_o_opens_panes_up_to_the_capacity_each_with_its_own_stream(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await create_tasks(client, server, 5)
        async with running_app(client, server) as (app, pilot):
            panes_grid = grid(app)
            assert panes_grid.capacity == 4  # 80×24: the base number of panes
            panes = await open_panes(app, pilot, 4)
            listed = task_list(app).tasks

            assert [pane.task_id for pane in panes] == [task.id for task in listed[:4]]
            for pane in panes:
                await wait_for(pilot, own_stream(app, pane), f"the stream worker of {pane.id}")
                await wait_for(pilot, replayed_queued(pane), f"the replay in {pane.id}")
                assert pane.status is TaskStatus.QUEUED
            assert panes_grid.active is panes[3]
            assert active_panes(app) == [panes[3]]

            # The list's highlight drives the newest pane; the others keep their tasks.
            await pilot.press("down")
            await wait_for(pilot, lambda: panes[3].task_id == listed[4].id, "the fifth task")
            assert [pane.task_id for pane in panes[:3]] == [task.id for task in listed[:3]]

            assert not warnings(app)
            await pilot.press("o")
            await wait_for(pilot, lambda: bool(warnings(app)), "the no-room warning")
            assert len(panes_grid.panes) == 4
            assert any("No room for another pane (4" in message for message in warnings(app))
            assert [pane.task_id for pane in panes_grid.panes] == [
                *(task.id for task in listed[:3]),
                listed[4].id,
            ]
            assert isinstance(app.screen, DashboardScreen)


async def test_c_closes_the_active_pane_and_clears_the_last_one(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await create_tasks(client, server, 3)
        async with running_app(client, server) as (app, pilot):
            panes_grid = grid(app)
            first, second, third = await open_panes(app, pilot, 3)
            assert panes_grid.active is third

            await pilot.press("c")
            await wait_for(pilot, lambda: len(panes_grid.panes) == 2, "the pane to close")
            assert panes_grid.panes == [first, second]
            assert not third.is_attached
            assert stream_workers(app, third) == []
            assert panes_grid.active is second  # its neighbour takes over, with the focus
            assert focused(app) is second.transcript
            assert active_panes(app) == [second]

            await pilot.press("c")
            await wait_for(pilot, lambda: len(panes_grid.panes) == 1, "the second pane to close")
            assert panes_grid.panes == [first]
            assert panes_grid.active is first
            assert first.task_id is not None

            await pilot.press("c")  # the last pane is cleared, not removed
            await wait_for(pilot, lambda: first.task_id is None, "the last pane to clear")
            assert panes_grid.panes == [first]
            assert first.is_attached
            assert "No task selected" in log_text(first)
            assert stream_workers(app, first) == []
            assert not first.streaming


async def test_tab_cycles_focus_through_the_list_and_each_pane(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await create_tasks(client, server, 3)
        async with running_app(client, server) as (app, pilot):
            panes_grid = grid(app)
            panes = await open_panes(app, pilot, 3)
            options = task_list(app).options
            assert focused(app) is options

            for pane in panes:
                await pilot.press("tab")
                assert focused(app) is pane.transcript
                assert panes_grid.active is pane
                assert active_panes(app) == [pane]
            await pilot.press("tab")
            assert focused(app) is options
            assert panes_grid.active is panes[-1]  # the list does not change the active pane

            for pane in reversed(panes):
                await pilot.press("shift+tab")
                assert focused(app) is pane.transcript
                assert panes_grid.active is pane
                assert active_panes(app) == [pane]
            await pilot.press("shift+tab")
            assert focused(app) is options
            assert panes_grid.active is panes[0]

            # The highlighted task now shows in the active (first) pane only.
            await pilot.press("up")  # from the third task to the second
            listed = task_list(app).tasks
            await wait_for(pilot, lambda: panes[0].task_id == listed[1].id, "the first pane")
            assert panes[1].task_id == listed[1].id and panes[2].task_id == listed[2].id


async def test_m_maximises_the_active_pane_and_m_or_escape_restores_it(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await create_tasks(client, server, 2)
        async with running_app(client, server) as (app, pilot):
            first, second = await open_panes(app, pilot, 2)
            screen = dashboard(app)
            await pilot.press("tab")  # into the first pane: it becomes active
            assert grid(app).active is first

            await pilot.press("m")
            assert screen.maximized is first
            await pilot.press("m")
            assert screen.maximized is None

            await pilot.press("m")
            assert screen.maximized is first
            await pilot.press("escape")
            assert screen.maximized is None
            assert focused(app) is first.transcript
            assert second.is_attached


async def test_m_in_the_task_list_maximises_the_active_pane(server_factory: ServerFactory) -> None:
    # README and DashboardScreen list m among the dashboard's keys, beside o and c, which
    # work wherever the focus is on the dashboard.
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await create_tasks(client, server, 2)
        async with running_app(client, server) as (app, pilot):
            first, second = await open_panes(app, pilot, 2)
            screen = dashboard(app)
            assert focused(app) is task_list(app).options
            assert grid(app).active is second

            await pilot.press("m")
            assert screen.maximized is second
            await pilot.press("m")
            assert screen.maximized is None
            assert first.is_attached and second.is_attached


async def test_a_task_ending_in_a_pane_in_view_gets_no_toast(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pane's border and bar say that its task ended; a toast would cover the pane (the
    # bell and the desktop notification still go: tests/unit/test_notify.py). A task no pane
    # shows, or one behind a maximised pane, still gets its toast.
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await create_tasks(client, server, 3)
        async with running_app(client, server) as (app, pilot):
            bells: list[str] = []  # one per announcement
            assert app.notifier is not None  # settings given: there from the start
            announce = app.notifier.task_finished

            def counted(task: Task, **kwargs: bool) -> None:
                bells.append(task.id)
                announce(task, **kwargs)

            monkeypatch.setattr(app.notifier, "task_finished", counted)
            first, second = await open_panes(app, pilot, 2)
            listed = task_list(app).tasks
            unseen = next(t for t in listed if t.id not in (first.task_id, second.task_id))

            def finish(task_id: str) -> None:
                task = next(t for t in task_list(app).tasks if t.id == task_id)
                done = task.model_copy(update={"status": TaskStatus.COMPLETED})
                task_list(app).post_message(TaskList.TaskFinished(task_list(app), done))

            def toasts() -> list[str]:
                return [n.message for n in app._notifications if n.title.endswith("completed")]

            finish(second.task_id or "")
            await wait_for(pilot, lambda: len(bells) == 1, "the announcement")
            assert toasts() == []

            finish(unseen.id)
            await wait_for(pilot, lambda: len(bells) == 2, "the second announcement")
            assert toasts() == [unseen.prompt]

            await pilot.press("m")  # the second pane fills the grid: the first is out of view
            assert dashboard(app).maximized is second
            finish(first.task_id or "")
            await wait_for(pilot, lambda: len(bells) == 3, "the third announcement")
            assert len(toasts()) == 2


# -- independent panes --------------------------------------------------------------------------


async def test_scrolling_one_pane_up_does_not_stop_the_other_following(
    server_factory: ServerFactory,
) -> None:
    # Both tasks print an event every 30 ms for far longer than the test runs.
    server = server_factory(
        fake_mode="slow-burst",
        extra_env={"FAKE_CODEX_EVENTS": "100000", "FAKE_CODEX_INTERVAL": "0.03"},
        pass_env=("FAKE_CODEX_INTERVAL",),
    )
    async with server.client() as client:
        created = await create_tasks(client, server, 2)
        async with running_app(client, server) as (app, pilot):
            pane_a, pane_b = await open_panes(app, pilot, 2)
            log_b = pane_b.transcript
            await wait_for(
                pilot,
                lambda: pane_a.status is TaskStatus.RUNNING and pane_b.status is TaskStatus.RUNNING,
                "both tasks to run",
                30,
            )
            await wait_for(pilot, lambda: log_b.max_scroll_y > 5, "pane B to overflow", 30)
            assert pane_a.following and pane_b.following

            await pilot.press("enter")  # from the list into the active pane (B)
            assert focused(app) is log_b
            await pilot.press("home")
            await wait_for(pilot, lambda: not pane_b.following, "pane B to stop following")
            assert log_b.scroll_y == 0
            seen_a = pane_a.events_seen
            seen_b = pane_b.events_seen

            await wait_for(
                pilot,
                lambda: pane_a.events_seen >= seen_a + 20 and pane_b.events_seen >= seen_b + 20,
                "more events in both panes",
                30,
            )
            await wait_for(pilot, lambda: pane_b.unseen > 0, "pane B to count new events")
            assert pane_a.following, "pane A keeps following"
            log_a = pane_a.transcript
            await wait_for(pilot, lambda: log_a.scroll_y == log_a.max_scroll_y, "pane A at its end")
            assert log_b.scroll_y == 0, "pane B stays where its reader is"
            assert not pane_b.following
            assert "new (end)" in str(pane_b.border_subtitle)
            assert "new (end)" not in str(pane_a.border_subtitle)

            await pilot.press("end")
            await wait_for(pilot, lambda: pane_b.following, "pane B to follow again")
            await wait_for(pilot, lambda: log_b.scroll_y == log_b.max_scroll_y, "pane B at its end")
            assert pane_b.unseen == 0
            assert pane_a.following
            assert pane_a.streaming and pane_b.streaming
            for task in created:
                await client.cancel_task(task.id)
            await wait_for(
                pilot,
                lambda: (
                    pane_a.status is TaskStatus.CANCELED and pane_b.status is TaskStatus.CANCELED
                ),
                "both tasks to end",
                30,
            )


# -- history and re-run -------------------------------------------------------------------------


async def test_history_enter_opens_the_task_in_a_pane_that_replays_it(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    seeded = await seed_tasks(server)
    completed = next(t for t in seeded.tasks if t.status is TaskStatus.COMPLETED)
    async with server.client() as client, running_app(client, server) as (app, pilot):
        panes_grid = grid(app)
        first = panes_grid.panes[0]
        await wait_for(pilot, lambda: first.task_id is not None, "the first pane's task")
        shown = first.task_id
        assert shown != completed.id

        await pilot.press("h")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "the history")
        history = app.screen
        assert isinstance(history, HistoryScreen)
        await wait_for(pilot, lambda: history.loaded and not history.fetching, "the rows")
        ids = [task.id for task in history.tasks]
        for _ in range(ids.index(completed.id)):
            await pilot.press("down")
        selected = history.selected_task
        assert selected is not None and selected.id == completed.id
        await pilot.press("enter")

        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        await wait_for(pilot, lambda: panes_grid.pane_for(completed.id) is not None, "a pane")
        pane = panes_grid.pane_for(completed.id)
        assert pane is not None and pane is not first
        assert first.task_id == shown  # the pane that was there keeps its task
        assert panes_grid.active is pane
        assert focused(app) is pane.transcript
        await wait_for(pilot, lambda: not pane.streaming and not pane.pending, "the replay")
        text = log_text(pane)
        assert "✓ completed" in text
        assert "Added --json to export" in text
        assert pane.events_seen == (await client.get_task(completed.id)).last_seq


async def test_r_reruns_the_highlighted_task_and_selects_the_new_one(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        [original] = await create_tasks(client, server, 1)
        async with running_app(client, server) as (app, pilot):
            tasks = task_list(app)
            await wait_for(pilot, lambda: tasks.selected_task is not None, "the task")
            await pilot.press("r")  # asks first
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
            await pilot.press("y")

            await wait_for(pilot, lambda: len(tasks.tasks) == 2, "the new task in the list")
            rerun = [task for task in (await client.list_tasks()).items if task.id != original.id]
            assert len(rerun) == 1, "one new task on the server"
            new = rerun[0]
            assert new.prompt == original.prompt
            assert new.workdir == original.workdir
            assert new.sandbox == original.sandbox
            await wait_for(
                pilot,
                lambda: tasks.selected_task is not None and tasks.selected_task.id == new.id,
                "the new task to be selected",
            )
            await wait_for(pilot, lambda: grid(app).active.task_id == new.id, "the pane")
            assert (await client.get_task(original.id)).status is TaskStatus.QUEUED
            assert any("Re-run queued" in message for message in toasts(app))


# -- a huge stream beside a quiet pane ----------------------------------------------------------


async def test_ten_thousand_events_stay_bounded_and_the_other_pane_stays_responsive(
    server_factory: ServerFactory,
) -> None:
    # slow-burst prints one event per item, about a thousand a second here; there are far
    # more items than the test waits for, so the burst is still streaming whatever the
    # machine's speed until the test cancels it after 10,000 events.
    server = server_factory(
        fake_mode="slow-burst",
        extra_env={"FAKE_CODEX_EVENTS": "1000000", "FAKE_CODEX_INTERVAL": "0.001"},
        pass_env=("FAKE_CODEX_INTERVAL",),
    )
    played = PlayedWorker(server)
    try:
        await played.connect()
        async with server.client() as client:
            quiet = await client.create_task(
                "quiet task", workdir=str(server.workdir), worker=PLAYED_WORKER
            )
            await played.claim(quiet.id)
            async with running_app(client, server) as (app, pilot):
                tasks = task_list(app)
                await wait_for(pilot, lambda: tasks.selected_task is not None, "the quiet task")
                quiet_pane = grid(app).panes[0]
                await wait_for(pilot, lambda: quiet_pane.task_id == quiet.id, "quiet pane")

                burst = await client.create_task("burst task", workdir=str(server.workdir))
                await wait_for(pilot, lambda: len(tasks.tasks) == 2, "both tasks listed")
                await pilot.press("o")
                await wait_for(pilot, lambda: len(grid(app).panes) == 2, "a second pane")
                burst_pane = grid(app).panes[1]
                index = [task.id for task in tasks.tasks].index(burst.id)
                await pilot.press("up" if index == 0 else "down")
                await wait_for(pilot, lambda: burst_pane.task_id == burst.id, "the burst pane")
                burst_log = burst_pane.transcript
                limit = burst_pane.max_entries
                assert limit == 2000  # the default window
                most = 0
                positions: set[int] = set()

                def bounded(condition: bool) -> bool:
                    """Record the window's size and check its order, then report
                    ``condition``."""
                    nonlocal most
                    positions.add(burst_pane.events_seen)
                    most = max(most, len(burst_log.entries))
                    held = [entry.seq for entry in burst_log.entries]
                    assert held == sorted(set(held)), "seqs strictly increasing"
                    return condition

                await wait_for(
                    pilot, lambda: bounded(burst_pane.events_seen > 1000), "1,000 events", 60
                )
                await wait_for(
                    pilot, lambda: bounded(len(burst_log.entries) >= limit), "a full window", 60
                )

                # The quiet pane gets its events and keys while the burst streams.
                lines = [f"quiet line {n}" for n in range(40)]
                await played.upload(quiet.id, lines)
                await wait_for(
                    pilot,
                    lambda: bounded("quiet line 39" in log_text(quiet_pane)),
                    "the quiet pane's events",
                )
                quiet_log = quiet_pane.transcript
                await wait_for(
                    pilot, lambda: bounded(quiet_log.max_scroll_y > 0), "a scrollable pane"
                )
                await pilot.press("tab")  # from the list into the quiet pane (the first)
                assert focused(app) is quiet_log
                await pilot.press("home")
                await wait_for(
                    pilot, lambda: bounded(not quiet_pane.following), "the quiet pane to scroll"
                )
                assert quiet_log.scroll_y == 0
                await pilot.press("end")
                await wait_for(
                    pilot, lambda: bounded(quiet_pane.following), "the quiet pane to follow"
                )
                assert quiet_log.scroll_y == quiet_log.max_scroll_y
                await played.finish(quiet.id)
                await wait_for(
                    pilot,
                    lambda: bounded(quiet_pane.status is TaskStatus.COMPLETED),
                    "the quiet pane's status",
                )
                assert "✓ completed" in log_text(quiet_pane)
                assert burst_pane.streaming and burst_pane.status is TaskStatus.RUNNING
                assert burst_pane.following  # the burst pane kept following meanwhile

                await wait_for(
                    pilot,
                    lambda: bounded(burst_pane.events_seen >= 10_000),
                    "10,000 events",
                    120,
                )
                assert burst_pane.streaming
                await client.cancel_task(burst.id)
                await wait_for(
                    pilot,
                    lambda: bounded(
                        burst_pane.status is TaskStatus.CANCELED
                        and not burst_pane.streaming
                        and not burst_pane.pending
                    ),
                    "the burst to end",
                    60,
                )
                await pilot.pause()
                bounded(True)
                assert len(positions) >= 5, "the window was checked as the burst streamed"
                last_seq = (await client.get_task(burst.id)).last_seq
                assert last_seq >= 10_000
                assert burst_pane.events_seen == last_seq  # each event exactly once
                assert burst_pane.last_seq == last_seq
                assert most <= limit, f"the window held {most} entries"
                assert len(burst_log.entries) == limit

                # The window is the newest shown events, without a gap.
                first = burst_log.first_seq
                assert first is not None and burst_log.last_seq == last_seq
                stored = await client.get_events(burst.id, after=first - 1, limit=5000)
                shown = burst_log.make_entries((event, Annotation()) for event in stored)
                assert [entry.seq for entry in burst_log.entries] == [e.seq for e in shown]
                assert burst_pane.following
                assert burst_log.scroll_y == burst_log.max_scroll_y
                assert "⊘ canceled" in log_text(burst_pane)
    finally:
        await played.aclose()
