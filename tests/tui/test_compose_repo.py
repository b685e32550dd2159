"""Provides Pilot tests of the compose screen's repository and ref fields at 80×24: a task on a
repository is submitted with ``repo`` and ``ref`` and without the workdir (greyed out while a
repository is given), a ref alone is refused inline, and a real server keeps both."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from codex_tui.app import CodexTuiApp
from codex_tui.screens.compose import ComposeScreen
from codex_tui.screens.dashboard import DashboardScreen
from server_client.models import ApprovalPolicy, Runtime, Sandbox, Task, TaskStatus
from tests.conftest import ServerFactory
from tests.support.tui_helpers import (
    SIZE,
    FrozenClock,
    dashboard_ready,
    running_app,
    task_list,
    type_text,
    wait_for,
)
from tests.tui.test_review import TS, ReviewClient, make_task


class RecordingClient(ReviewClient):
    """Answers from memory (:class:`ReviewClient`) and records each task submitted."""

    def __init__(self) -> None:
        super().__init__([])
        self.submitted: list[dict[str, Any]] = []

    async def create_task(
        self,
        prompt: str,
        *,
        workdir: str | None = None,
        model: str | None = None,
        sandbox: Sandbox | str = Sandbox.WORKSPACE_WRITE,
        worker: str | None = None,
        labels: Sequence[str] = (),
        approval_policy: ApprovalPolicy | str = ApprovalPolicy.NEVER,
        runtime: Runtime | str | None = None,
        repo: str | None = None,
        ref: str | None = None,
    ) -> Task:
        self.submitted.append(
            {"prompt": prompt, "workdir": workdir, "repo": repo, "ref": ref, "model": model}
        )
        task = make_task(
            id=f"t{len(self.submitted)}",
            prompt=prompt,
            workdir=workdir,
            repo=repo,
            ref=ref,
            status=TaskStatus.QUEUED,
            diff_updated_at=None,
            diff_files=None,
        )
        self.tasks[task.id] = task
        return task


async def open_compose(pilot: Pilot[None], app: CodexTuiApp) -> ComposeScreen:
    """Press ``n`` on the dashboard; the compose screen."""
    await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "the compose screen")
    screen = app.screen
    assert isinstance(screen, ComposeScreen)
    return screen


async def test_a_repository_and_ref_are_sent_instead_of_the_workdir() -> None:
    client = RecordingClient()
    app = CodexTuiApp(
        client, default_workdir="/srv/app", clock=FrozenClock(TS), poll_interval_s=0.2
    )
    async with app.run_test(size=SIZE) as pilot:
        compose = await open_compose(pilot, app)
        workdir = compose.query_one("#workdir-input", Input)
        repo = compose.query_one("#repo-input", Input)
        ref = compose.query_one("#ref-input", Input)
        assert workdir.value == "/srv/app" and not workdir.disabled
        await type_text(pilot, "tidy the build")
        await pilot.press("tab", "tab")  # prompt → workdir → repo, by keyboard only
        assert app.focused is repo
        await type_text(pilot, "/srv/repos/app")
        assert workdir.disabled  # greyed out: a task runs in one or the other
        await pilot.press("tab")
        assert app.focused is ref
        await type_text(pilot, "release-2.1")
        request = compose.build_request()
        assert (request.workdir, request.repo, request.ref) == (
            None,
            "/srv/repos/app",
            "release-2.1",
        )
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        assert client.submitted == [
            {
                "prompt": "tidy the build",
                "workdir": None,
                "repo": "/srv/repos/app",
                "ref": "release-2.1",
                "model": None,
            }
        ]
        await wait_for(pilot, lambda: task_list(app).selected_task is not None, "the new task")


async def test_clearing_the_repository_brings_the_workdir_back() -> None:
    client = RecordingClient()
    app = CodexTuiApp(client, default_workdir="/srv/app", clock=FrozenClock(TS))
    async with app.run_test(size=SIZE) as pilot:
        compose = await open_compose(pilot, app)
        workdir = compose.query_one("#workdir-input", Input)
        await type_text(pilot, "x")
        await pilot.press("tab", "tab", "g", "i", "t")
        assert workdir.disabled
        await pilot.press("backspace", "backspace", "backspace")
        assert not workdir.disabled
        assert compose.build_request().workdir == "/srv/app"
        assert compose.build_request().repo is None


async def test_a_ref_without_a_repository_is_refused_inline() -> None:
    client = RecordingClient()
    app = CodexTuiApp(client, clock=FrozenClock(TS))
    async with app.run_test(size=SIZE) as pilot:
        compose = await open_compose(pilot, app)
        await type_text(pilot, "fix it")
        compose.query_one("#ref-input", Input).value = "main"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: compose.error is not None, "the inline error")
        assert compose.error is not None and "fill in Repo" in compose.error
        assert client.submitted == [] and app.screen is compose


async def test_a_real_server_keeps_the_repository_and_ref(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client, running_app(client, server) as (app, pilot):
        compose = await open_compose(pilot, app)
        await type_text(pilot, "work on the repository")
        compose.query_one("#repo-input", Input).value = str(server.workdir)
        compose.query_one("#ref-input", Input).value = "main"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        tasks = task_list(app)
        await wait_for(pilot, lambda: tasks.selected_task is not None, "the new task")
        created = tasks.selected_task
        assert created is not None
        assert (created.repo, created.ref, created.workdir) == (str(server.workdir), "main", None)
