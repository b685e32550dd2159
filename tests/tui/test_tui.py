"""Provides Pilot tests of the TUI driving a real server (and its local worker) on loopback."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Input, TextArea

from codex_tui.app import CodexTuiApp
from codex_tui.screens.compose import ComposeScreen
from codex_tui.screens.confirm import ConfirmModal
from codex_tui.screens.dashboard import DashboardScreen
from server_client.client import CodexTuiClient
from server_client.models import TaskStatus
from tests.conftest import ServerFactory, free_port
from tests.support.tui_helpers import (
    SIZE,
    event_view,
    log_text,
    row_texts,
    running_app,
    task_list,
    type_text,
    wait_for,
)


def focused(app: CodexTuiApp) -> Widget | None:
    """The focused widget (a function, so that type checkers do not narrow it)."""
    return app.focused


def stream_workers(app: CodexTuiApp) -> list[str]:
    """Names of the event view's running stream workers."""
    view = event_view(app)
    return [
        worker.name
        for worker in app.workers
        if worker.group == "stream" and worker.node is view and worker.is_running
    ]


async def submit(pilot: Pilot[None], app: CodexTuiApp, prompt: str) -> None:
    """Open the compose screen with ``n``, type ``prompt`` and submit with ctrl+s."""
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "the compose screen")
    await type_text(pilot, prompt)
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")


# -- without a worker: tasks stay queued ----------------------------------------------------


async def test_empty_dashboard_then_submit_selects_the_new_task(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client, running_app(client, server) as (app, pilot):
        tasks = task_list(app)
        view = event_view(app)
        await wait_for(pilot, lambda: tasks.loaded, "the first poll")
        assert tasks.has_class("-empty")
        assert "No task selected" in log_text(view)

        await submit(pilot, app, "add a test for parse")

        created = tasks.selected_task
        assert created is not None and created.prompt == "add a test for parse"
        assert created.workdir == str(server.workdir)
        assert not tasks.has_class("-empty")
        assert view.task_id == created.id
        assert stream_workers(app) == [f"stream:{created.id}"]
        # The stream replays the queued status event.
        await wait_for(pilot, lambda: "○ queued" in log_text(view), "the queued status event")
        assert view.status is TaskStatus.QUEUED
        assert "add a test for parse" in row_texts(tasks)[0]
        assert "queued" in row_texts(tasks)[0]
        assert app.screen.focused is tasks.options


async def test_compose_shows_server_error_inline_and_keeps_what_was_typed(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client, running_app(client, server) as (app, pilot):
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        compose = app.screen
        assert isinstance(compose, ComposeScreen)
        await type_text(pilot, "first line\nsecond line")
        workdir = compose.query_one("#workdir-input", Input)
        workdir.value = "/definitely/not/an/allowed/root"
        model = compose.query_one("#model-input", Input)
        model.value = "gpt-test"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: compose.error is not None, "the inline error")

        assert isinstance(app.screen, ComposeScreen)
        assert compose.error is not None
        assert "outside the allowed roots" in compose.error
        assert compose.has_class("-error")
        assert compose.query_one("#prompt-input", TextArea).text == "first line\nsecond line"
        assert workdir.value == "/definitely/not/an/allowed/root"
        assert model.value == "gpt-test"
        assert (await client.list_tasks()).items == []

        # Fix the workdir and submit again: the task is created as typed.
        workdir.value = str(server.workdir)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        [task] = (await client.list_tasks()).items
        assert task.prompt == "first line\nsecond line"
        assert task.model == "gpt-test"
        selected = task_list(app).selected_task
        assert selected is not None and selected.id == task.id


async def test_compose_validates_empty_prompt_and_escape_goes_back(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client, running_app(client, server) as (app, pilot):
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        compose = app.screen
        assert isinstance(compose, ComposeScreen)
        await pilot.press("ctrl+s")
        assert compose.error == "Write a prompt first."
        await type_text(pilot, "quit quietly")  # q types into the prompt, it does not quit
        assert compose.query_one("#prompt-input", TextArea).text == "quit quietly"
        # On the sandbox select (prompt -> workdir -> repo -> ref -> sandbox), q does nothing
        # either.
        await pilot.press("tab", "tab", "tab", "tab", "q")
        assert app.is_running and app.screen is compose
        await pilot.press("escape")  # the prompt holds text: asks first
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert (await client.list_tasks()).items == []
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "the app to quit")


async def test_compose_picks_the_sandbox_by_keyboard(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client, running_app(client, server) as (app, pilot):
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        await type_text(pilot, "look only")
        # prompt -> workdir -> repo -> ref -> sandbox; open it, move to read-only (the first),
        # choose it.
        await pilot.press("tab", "tab", "tab", "tab", "enter", "up", "enter")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        [task] = (await client.list_tasks()).items
        assert task.sandbox == "read-only"


async def test_compose_picks_the_approval_policy_and_runtime_by_keyboard(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client, running_app(client, server) as (app, pilot):
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        await type_text(pilot, "ask me first")
        # prompt -> workdir -> repo -> ref -> sandbox -> model -> worker -> labels -> approval
        # -> runtime
        await pilot.press(*["tab"] * 8, "enter", "down", "enter")  # never -> on-request
        await pilot.press("tab", "enter", "down", "enter")  # worker's default -> app-server
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        [task] = (await client.list_tasks()).items
        assert task.approval_policy == "on-request"
        assert task.requested_runtime == "app-server"


async def test_cancel_asks_first(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        queued = await client.create_task("wait in the queue")
        async with running_app(client, server) as (app, pilot):
            tasks = task_list(app)
            view = event_view(app)
            await wait_for(pilot, lambda: tasks.selected_task is not None, "the task")
            assert tasks.selected_task is not None and tasks.selected_task.id == queued.id

            await pilot.press("x")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
            assert (await client.get_task(queued.id)).status is TaskStatus.QUEUED

            await pilot.press("x")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
            await pilot.press("enter")  # Enter on the focused, safe button: keep it
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
            assert (await client.get_task(queued.id)).status is TaskStatus.QUEUED

            await pilot.press("x")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
            await pilot.press("y")
            await wait_for(pilot, lambda: view.status is TaskStatus.CANCELED, "canceled")
            assert (await client.get_task(queued.id)).status is TaskStatus.CANCELED
            await wait_for(pilot, lambda: "canceled" in row_texts(tasks)[0], "the row")
            assert "⊘ canceled" in log_text(view)
            await wait_for(pilot, lambda: not view.streaming, "the stream to end")

            # A task that already ended is not asked about again.
            await pilot.press("x")
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen)


async def test_moving_the_cursor_follows_another_task_exclusively(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        older = await client.create_task("older task")
        newer = await client.create_task("newer task")
        async with running_app(client, server) as (app, pilot):
            tasks = task_list(app)
            view = event_view(app)
            await wait_for(pilot, lambda: view.task_id == newer.id, "the newest task")
            await pilot.press("down")
            await wait_for(pilot, lambda: view.task_id == older.id, "the older task")
            assert stream_workers(app) == [f"stream:{older.id}"]
            await wait_for(pilot, lambda: "queued" in log_text(view))
            await pilot.press("up")
            await wait_for(pilot, lambda: view.task_id == newer.id)
            assert stream_workers(app) == [f"stream:{newer.id}"]
            assert [t.id for t in tasks.tasks] == [newer.id, older.id]
            await pilot.press("enter")  # into the task's events
            assert focused(app) is view.transcript
            await pilot.press("shift+tab")
            assert focused(app) is tasks.options


async def test_unreachable_server_shows_an_error_line_and_keeps_retrying() -> None:
    async with CodexTuiClient(f"http://127.0.0.1:{free_port()}", "ctu_nobody") as client:
        async with running_app(client) as (app, pilot):
            tasks = task_list(app)
            await wait_for(pilot, lambda: tasks.error is not None, "the error line")
            assert tasks.has_class("-offline")
            assert tasks.error is not None and "Cannot reach the server" in tasks.error
            assert app.connection_error == tasks.error
            assert any("Cannot reach" in n.message for n in app._notifications)
            assert app.is_running
            assert not tasks.loaded


async def test_the_app_closes_its_client_only_when_asked(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)

    async def run_until_loaded(app: CodexTuiApp) -> None:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: task_list(app).loaded, "the first poll")

    for close_client in (False, True):
        client = server.client()
        await run_until_loaded(CodexTuiApp(client, close_client=close_client))
        assert client._http.is_closed is close_client
        await client.aclose()


async def test_a_refused_token_shows_an_error_line(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with CodexTuiClient(server.url, "ctu_wrong") as client:
        async with running_app(client) as (app, pilot):
            tasks = task_list(app)
            await wait_for(pilot, lambda: tasks.error is not None, "the error line")
            assert tasks.error is not None and "refused" in tasks.error and "401" in tasks.error


# -- with the local worker running the fake codex -------------------------------------------


async def test_submit_stream_and_cancel_a_running_task(server_factory: ServerFactory) -> None:
    server = server_factory(fake_mode="sleep")
    async with server.client() as client, running_app(client, server) as (app, pilot):
        tasks = task_list(app)
        view = event_view(app)
        await wait_for(pilot, lambda: tasks.loaded, "the first poll")

        await submit(pilot, app, "sleep for a while")
        created = tasks.selected_task
        assert created is not None and created.prompt == "sleep for a while"
        assert view.task_id == created.id

        await wait_for(pilot, lambda: view.status is TaskStatus.RUNNING, "running")
        await wait_for(pilot, lambda: "running…" in log_text(view), "the running command")
        await wait_for(pilot, lambda: "running" in row_texts(tasks)[0], "the running row")

        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_for(pilot, lambda: view.status is TaskStatus.CANCELED, "canceled", 30)
        await wait_for(pilot, lambda: "canceled" in row_texts(tasks)[0], "the canceled row")
        assert (await client.get_task(created.id)).status is TaskStatus.CANCELED
        await wait_for(pilot, lambda: not view.streaming and not view.pending, "the last flush")
        assert "⊘ canceled" in log_text(view)
        assert view.last_seq == (await client.get_task(created.id)).last_seq


async def test_completed_task_renders_every_event(server_factory: ServerFactory) -> None:
    server = server_factory(fake_mode="ok")
    async with server.client() as client, running_app(client, server) as (app, pilot):
        view = event_view(app)
        await wait_for(pilot, lambda: task_list(app).loaded)
        await submit(pilot, app, "say hello")
        await wait_for(pilot, lambda: view.status is TaskStatus.COMPLETED, "completed", 30)
        await wait_for(pilot, lambda: not view.streaming and not view.pending, "the last flush")
        task = await client.get_task(view.task_id or "")
        assert view.last_seq == task.last_seq
        assert view.events_seen == task.last_seq  # each event exactly once
        text = log_text(view)
        assert "✓ completed" in text
        assert "thread " in text
        assert "tokens in" in text
        assert text.index("○ queued") < text.index("● running") < text.index("✓ completed")


async def test_burst_is_batched_bounded_and_sticky(server_factory: ServerFactory) -> None:
    server = server_factory(fake_mode="burst")
    async with server.client() as client:
        app = CodexTuiApp(client, poll_interval_s=0.2)
        async with app.run_test(size=SIZE) as pilot:
            view = event_view(app)
            await wait_for(pilot, lambda: task_list(app).loaded)
            log = view.transcript
            writes = 0
            original_append = log.append

            def counting_append(*args: Any, **kwargs: Any) -> Any:
                nonlocal writes
                writes += 1
                return original_append(*args, **kwargs)

            log.append = counting_append  # type: ignore[method-assign]
            await submit(pilot, app, "burst")
            await wait_for(
                pilot, lambda: view.status is not None and view.status.is_terminal, "end", 60
            )
            await wait_for(pilot, lambda: not view.streaming and not view.pending, "last flush")
            task = await client.get_task(view.task_id or "")
            assert view.events_seen == task.last_seq
            assert task.last_seq > 200, "burst mode should produce many events"
            assert writes < task.last_seq / 5, "events are written in batches"
            assert len(log.entries) <= view.max_entries
            assert view.following and log.scroll_y == log.max_scroll_y


async def test_tail_is_sticky_only_while_at_the_bottom(server_factory: ServerFactory) -> None:
    server = server_factory(fake_mode="sleep")
    async with server.client() as client:
        task = await client.create_task("sleep and scroll", workdir=str(server.workdir))
        app = CodexTuiApp(client, poll_interval_s=0.2)
        # A short terminal, so that the few events of a sleeping task overflow the log.
        async with app.run_test(size=(80, 8)) as pilot:
            view = event_view(app)
            log = view.transcript
            await wait_for(pilot, lambda: "running…" in log_text(view), "the running command")
            await wait_for(pilot, lambda: log.max_scroll_y > 0, "a log taller than the view")
            await wait_for(pilot, lambda: log.scroll_y == log.max_scroll_y, "the tail")
            assert view.following

            await pilot.press("tab", "home")  # into the log, then up to the first line
            await wait_for(pilot, lambda: not view.following, "the view to stop following")
            assert log.scroll_y == 0

            await client.cancel_task(task.id)
            await wait_for(pilot, lambda: view.status is TaskStatus.CANCELED, "canceled", 30)
            await wait_for(pilot, lambda: not view.pending and view.unseen > 0, "unseen lines")
            assert log.scroll_y == 0, "new output must not move a reader who scrolled up"
            assert "new (end)" in str(view.border_subtitle)

            await pilot.press("end")
            await wait_for(pilot, lambda: view.following, "following again")
            assert log.scroll_y == log.max_scroll_y
            assert view.unseen == 0
            assert "new" not in str(view.border_subtitle)
