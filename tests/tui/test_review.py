"""Provides Pilot tests of the review screen at 80×24 (codex_tui.screens.review) on patches made
by real git: moving by file and by hunk, binary files, export of the exact bytes, a branch made
in a real repository, the messages when there is no diff, a too-large diff, a live task whose
diff moves, and ``f`` on the dashboard; its snapshot; and a task whose diff a real server
keeps, reviewed from its row.

The app is the real one; but for the last test, its client is the SDK's with the task, diff
and patch calls answered from memory (:class:`ReviewClient`), so each test decides what the
server holds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.segment import Segment
from textual.pilot import Pilot
from textual.widgets import Input

from codex_tui.app import CodexTuiApp
from codex_tui.events.patch import FilePatch
from codex_tui.screens.dashboard import DashboardScreen
from codex_tui.screens.review import AskModal, ReviewScreen
from server_client.client import STREAM_READ_TIMEOUT_S, ApiError, CodexTuiClient, NotFoundError
from server_client.models import (
    Event,
    FileChange,
    Problem,
    Sandbox,
    Task,
    TaskDiff,
    TaskPage,
    TaskStatus,
)
from tests.conftest import ServerFactory
from tests.server.test_conversations_api import owner
from tests.server.test_review_cli import run_task
from tests.support.tui_helpers import (
    SIZE,
    FrozenClock,
    dashboard_ready,
    row_texts,
    running_app,
    task_list,
    wait_for,
)

SnapCompare = Callable[..., bool]

TS = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
TASK_ID = "3f2a9c1d7e4b"
#: Rows of keep.py: enough that each of its hunks can scroll to the top of an 80×24 view.
ROWS = 200
BINARY = bytes(range(256)) * 4


def git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """Run git in ``repo`` (no user or system config; fixed dates); its stdout."""
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_DATE": "2026-11-21T06:00:00Z",
        "GIT_COMMITTER_DATE": "2026-11-21T06:00:00Z",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, env=env, input=stdin
    ).stdout


@dataclass
class Change:
    """A repository with changes in its working tree, and their diff as the worker takes it."""

    repo: Path
    base: str
    patch: bytes
    diff: TaskDiff


def make_change(tmp_path: Path) -> Change:
    """A repository, one commit, then a change of every kind in its working tree (left
    uncommitted, as codex leaves it; staged); the patch is ``git diff --binary`` of it all."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "keep.py").write_text("".join(f"row {n}\n" for n in range(1, ROWS + 1)))
    (repo / "gone.txt").write_text("bye\n")
    (repo / "logo.png").write_bytes(BINARY)
    (repo / "run.sh").write_text("echo hi\n")
    git(repo, "add", "--all")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD").decode().strip()
    rows = [f"row {n}\n" for n in range(1, ROWS + 1)]
    for first in (10, 90, 170):  # three hunks, far apart, each taller than the view
        for n in range(first, first + 15):
            rows[n] = f"changed {n}\n"
    (repo / "keep.py").write_text("".join(rows))
    (repo / "gone.txt").unlink()
    (repo / "logo.png").write_bytes(BINARY[::-1])
    (repo / "run.sh").chmod(0o755)
    (repo / "new file.txt").write_text("hello\nworld\n")
    git(repo, "add", "--all")  # the worker stages into a scratch index; the patch is the same
    patch = git(repo, "diff", "--cached", "--binary", "--no-renames", base)
    numstat = git(repo, "diff", "--cached", "--numstat", "-z", "--no-renames", base)
    files = []
    for record in numstat.split(b"\0"):
        if record:
            added, removed, path = record.split(b"\t", 2)
            files.append(
                FileChange(
                    path=path.decode(),
                    added=None if added == b"-" else int(added),
                    removed=None if removed == b"-" else int(removed),
                )
            )
    diff = TaskDiff(
        task_id=TASK_ID,
        base_commit=base,
        files=files,
        added=sum(f.added or 0 for f in files),
        removed=sum(f.removed or 0 for f in files),
        patch_bytes=len(patch),
        updated_at=TS,
        final=True,
    )
    return Change(repo, base, patch, diff)


def make_task(**fields: Any) -> Task:
    """A task of the reviewer's, completed, on a repository, unless ``fields`` say otherwise."""
    values: dict[str, Any] = {
        "id": TASK_ID,
        "prompt": "Tidy the build script and the logo",
        "workdir": None,
        "model": None,
        "sandbox": Sandbox.WORKSPACE_WRITE,
        "status": TaskStatus.COMPLETED,
        "created_at": TS - timedelta(minutes=10),
        "repo": "/srv/app",
        "base_commit": "0" * 40,
        "diff_updated_at": TS,
        "diff_files": 5,
    }
    values.update(fields)
    return Task(**values)


class ReviewClient(CodexTuiClient):
    """The SDK client with the calls the dashboard and the review screen make answered from
    memory: ``tasks``, ``diffs`` and ``patches`` by task id (a patch None: too large, 409);
    event streams stay open and quiet. Counts the diff fetches."""

    def __init__(
        self,
        tasks: Iterable[Task],
        diffs: Mapping[str, TaskDiff] | None = None,
        patches: Mapping[str, bytes | None] | None = None,
    ) -> None:
        super().__init__("http://127.0.0.1:9", "ctu_nobody")
        self.tasks = {task.id: task for task in tasks}
        self.diffs = dict(diffs or {})
        self.patches = dict(patches or {})
        self.diff_fetches = 0

    async def list_tasks(self, **_filters: Any) -> TaskPage:
        return TaskPage(items=list(self.tasks.values()))

    async def get_task(self, task_id: str) -> Task:
        if task_id not in self.tasks:
            raise NotFoundError(Problem(title="Not Found", status=404))
        return self.tasks[task_id]

    async def get_diff(self, task_id: str) -> TaskDiff:
        self.diff_fetches += 1
        if task_id not in self.diffs:
            raise NotFoundError(Problem(title="Not Found", status=404, detail="no diff yet"))
        return self.diffs[task_id]

    async def get_patch(self, task_id: str) -> bytes:
        patch = self.patches.get(task_id)
        if patch is None:
            raise ApiError(Problem(title="Conflict", status=409, detail="too large"))
        return patch

    async def follow_tasks(
        self,
        positions: Mapping[str, int],
        *,
        read_timeout: float = STREAM_READ_TIMEOUT_S,
        max_attempts: int | None = None,
    ) -> AsyncIterator[Event]:
        await asyncio.Event().wait()
        yield  # type: ignore[misc]  # never reached: the stream stays quiet

    async def stream_events(
        self,
        task_id: str,
        *,
        after: int = 0,
        read_timeout: float = STREAM_READ_TIMEOUT_S,
        max_attempts: int | None = None,
    ) -> AsyncIterator[Event]:
        await asyncio.Event().wait()
        yield  # type: ignore[misc]  # never reached: the stream stays quiet


def make_app(client: CodexTuiClient) -> CodexTuiApp:
    """The app on ``client``, its clock a minute after :data:`TS`."""
    return CodexTuiApp(client, clock=FrozenClock(TS + timedelta(minutes=1)), poll_interval_s=0.2)


async def open_review(
    pilot: Pilot[None], app: CodexTuiApp, task: Task, **kwargs: Any
) -> ReviewScreen:
    """Push the review screen of ``task`` over the dashboard; wait until it shows something."""
    await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
    kwargs.setdefault("clock", FrozenClock(TS + timedelta(minutes=1)))
    kwargs.setdefault("poll_interval_s", 0.05)
    screen = ReviewScreen(app.client, task, **kwargs)
    await app.push_screen(screen)
    await wait_for(
        pilot, lambda: screen.loads > 0 or screen.message not in (None, "Loading the diff…")
    )
    return screen


def header(screen: ReviewScreen) -> str:
    """The header's text."""
    return str(screen.query_one("#review-header").render())


def shown_kinds(screen: ReviewScreen) -> list[str]:
    """The kinds of the diff view's lines."""
    return [line.kind for line in screen.diff_view.lines]


@pytest.fixture
def change(tmp_path: Path) -> Change:
    """A real repository with a change of every kind."""
    return make_change(tmp_path)


def reviewing(change: Change, **task_fields: Any) -> tuple[ReviewClient, Task]:
    """A client holding ``change``'s diff and patch for the task, and the task."""
    task = make_task(**task_fields)
    client = ReviewClient([task], {task.id: change.diff}, {task.id: change.patch})
    return client, task


# -- moving around -----------------------------------------------------------------------------


async def test_files_and_header_then_next_and_previous_file(change: Change) -> None:
    client, task = reviewing(change)
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, app, task)
        assert [f.path for f in screen.files] == [
            "gone.txt",
            "keep.py",
            "logo.png",
            "new file.txt",
            "run.sh",
        ]
        text = header(screen)
        assert f"Review {TASK_ID} · base {change.base[:7]} · 5 files +47 −46" in text
        assert "computed 1m ago" in text and "live" not in text
        assert screen.selected_path == "gone.txt"
        assert shown_kinds(screen)[-2:] == ["hunk", "removed"]
        await pilot.press("right_square_bracket")
        assert screen.selected_path == "keep.py"
        assert screen.diff_view.border_title == "keep.py"
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert screen.selected_path == "new file.txt"
        await pilot.press("left_square_bracket")
        assert screen.selected_path == "logo.png"
        # The list follows the keys, and picking in the list shows that file.
        assert screen.file_list.highlighted == 2
        await pilot.press("tab")
        assert app.focused is screen.file_list
        await pilot.press("down")
        assert screen.selected_path == "new file.txt"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")


def drawn(screen: ReviewScreen, kind: str) -> list[Segment]:
    """The segments the diff view draws for its first line of ``kind``, scrolled into view."""
    view = screen.diff_view
    index = [str(line.kind) for line in view.lines].index(kind)
    view.scroll_to(y=index, animate=False, immediate=True)
    return list(view.render_line(index - round(view.scroll_y)))


async def test_code_is_highlighted_in_its_language_on_the_lines_tint(change: Change) -> None:
    client, task = reviewing(change)
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, app, task)
        await pilot.press("right_square_bracket")
        assert screen.selected_path == "keep.py"
        added = drawn(screen, "added")  # "+changed 10": a name and a number in Python
        assert "".join(s.text for s in added).startswith("+changed 10")
        code = [s for s in added[1:] if s.text.strip()]
        assert len({s.style.color for s in code if s.style}) >= 2, "tokens differ in colour"
        tints = {s.style.bgcolor for s in code if s.style}
        assert len(tints) == 1 and None not in tints
        context = [s for s in drawn(screen, "context") if s.text.strip()]
        assert {s.style.bgcolor for s in context if s.style} != tints, "only changes are tinted"
        removed = [s for s in drawn(screen, "removed")[1:] if s.text.strip()]
        assert {s.style.bgcolor for s in removed if s.style} not in ({None}, tints)
        # A plain text file is not highlighted: its line is one run of its kind's colour.
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert screen.selected_path == "new file.txt"
        assert [s.text for s in drawn(screen, "added") if s.text.strip()] == ["+hello"]


async def test_hunk_keys_scroll_each_hunk_to_the_top_and_cross_files(change: Change) -> None:
    client, task = reviewing(change)
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, app, task)
        view = screen.diff_view
        await pilot.press("right_square_bracket")  # keep.py: three hunks
        starts = view.hunk_starts
        assert len(starts) == 3 and view.scroll_y == 0
        for index in range(3):
            await pilot.press("n")
            assert view.current_hunk == starts[index]
            assert view.scroll_y == min(starts[index], view.max_scroll_y)
            assert view.border_subtitle == f"hunk {index + 1} of 3"
        assert view.scroll_y > 0
        await pilot.press("p")
        assert view.current_hunk == starts[1] and view.scroll_y == starts[1] > 0
        await pilot.press("p", "p")  # before keep.py's first hunk: gone.txt's last one
        assert screen.selected_path == "gone.txt"
        assert view.current_hunk == view.hunk_starts[-1]
        await pilot.press("n")  # and forward again into keep.py's first
        assert screen.selected_path == "keep.py" and view.current_hunk == starts[0]
        # Scrolled by hand, n goes on from what is on screen.
        await pilot.press("end")
        await pilot.pause()
        assert view.scroll_y == view.max_scroll_y
        await pilot.press("n")  # past the last hunk of keep.py: the next file with hunks
        assert screen.selected_path == "logo.png"
        await pilot.press("n")  # logo.png has none: new file.txt's first
        assert screen.selected_path == "new file.txt" and view.current_hunk is not None


async def test_a_binary_file_reads_as_such(change: Change) -> None:
    client, task = reviewing(change)
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, app, task)
        logo = next(f for f in screen.files if f.path == "logo.png")
        assert isinstance(logo, FilePatch) and logo.binary
        assert "binary" in str(screen.file_list.get_option_at_index(2).prompt)
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert screen.selected_path == "logo.png"
        lines = screen.diff_view.lines
        assert lines[-1] == ("binary", "binary file changed (1,024 → 1,024 bytes)")
        assert not any("literal" in line.text or "GIT binary" in line.text for line in lines)
        assert b"GIT binary patch" in change.patch


# -- export and branch ------------------------------------------------------------------------


async def test_export_writes_the_exact_bytes(change: Change, tmp_path: Path) -> None:
    client, task = reviewing(change)
    app = make_app(client)
    target = tmp_path / "out" / "task.patch"
    target.parent.mkdir()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, app, task, cwd=tmp_path)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, AskModal), "the question")
        field = app.screen.query_one(Input)
        assert field.value == str(tmp_path / f"{TASK_ID}.patch")
        field.value = str(tmp_path / "missing" / "x.patch")
        await pilot.press("enter")
        modal = app.screen
        assert isinstance(modal, AskModal) and modal.error is not None
        assert "does not exist" in modal.error
        field.value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.outcome is not None, "the export")
        assert target.read_bytes() == change.patch
        assert screen.outcome == f"Wrote the patch ({len(change.patch):,} bytes) to {target}"
    # What was written is what git applies.
    git(change.repo, "apply", "--check", "--binary", "-R", str(target))


async def test_branch_is_made_in_the_task_s_repository(change: Change) -> None:
    client, task = reviewing(change, repo=str(change.repo), base_commit=change.base)
    app = make_app(client)
    repo = change.repo
    status_before = git(repo, "status", "--porcelain")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, app, task)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, AskModal), "the question")
        modal = app.screen
        assert str(repo) in str(modal.query_one("#ask-title").render())
        assert modal.query_one(Input).value == f"codex/{TASK_ID}"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.outcome is not None, "the branch")
        assert screen.outcome is not None and screen.outcome.startswith(f"Branch codex/{TASK_ID}")
        # The same name again: refused, with the reason.
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, AskModal), "the question")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "No branch made" in (screen.outcome or ""), "the refusal")
        assert "exists" in (screen.outcome or "")
    commit = git(repo, "rev-parse", f"codex/{TASK_ID}").decode().strip()
    assert screen.outcome is not None
    assert git(repo, "rev-parse", f"{commit}^").decode().strip() == change.base
    # The branch holds the working tree's changes; the working tree and HEAD are untouched.
    assert git(repo, "diff", "--binary", "--no-renames", change.base, commit) == change.patch
    assert git(repo, "status", "--porcelain") == status_before
    assert git(repo, "rev-parse", "HEAD").decode().strip() == change.base


async def test_branch_goes_to_the_current_directory_for_a_remote_repository(
    change: Change, tmp_path: Path
) -> None:
    client, task = reviewing(change, repo="https://example.com/app.git")
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, app, task, cwd=change.repo)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, AskModal), "the question")
        assert str(change.repo) in str(app.screen.query_one("#ask-title").render())
        app.screen.query_one(Input).value = "review/tidy"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.outcome is not None, "the branch")
    assert git(change.repo, "rev-parse", "--verify", "review/tidy")


# -- when there is nothing to show -----------------------------------------------------------


async def test_a_task_without_a_repository_says_why(change: Change) -> None:
    task = make_task(repo=None, workdir="/srv/app", diff_updated_at=None, diff_files=None)
    client = ReviewClient([task])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, app, task)
        assert screen.message is not None and "no repository" in screen.message
        assert screen.has_class("-message") and client.diff_fetches == 0
        await pilot.press("e")
        assert not isinstance(app.screen, AskModal)


async def test_no_diff_yet_then_it_comes_while_the_task_runs(change: Change) -> None:
    task = make_task(status=TaskStatus.RUNNING, diff_updated_at=None, diff_files=None)
    client = ReviewClient([task])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, app, task)
        assert screen.message is not None and screen.message.startswith("No diff reported yet")
        assert "live" in header(screen)
        # The worker uploads a diff: the task's diff_updated_at moves, the screen fetches it.
        client.diffs[task.id] = change.diff
        client.patches[task.id] = change.patch
        client.tasks[task.id] = make_task(status=TaskStatus.RUNNING)
        await wait_for(pilot, lambda: screen.loads == 1, "the diff")
        assert screen.message is None and screen.selected_path == "gone.txt"
        await pilot.press("right_square_bracket", "n", "n")
        scrolled = screen.diff_view.scroll_y
        assert scrolled > 0
        # A newer diff: the file shown stays, and so does the scroll.
        client.diffs[task.id] = change.diff.model_copy(update={"updated_at": TS + timedelta(1)})
        client.tasks[task.id] = make_task(
            status=TaskStatus.RUNNING, diff_updated_at=TS + timedelta(1)
        )
        await wait_for(pilot, lambda: screen.loads == 2, "the newer diff")
        assert screen.selected_path == "keep.py" and screen.diff_view.scroll_y == scrolled


async def test_a_diff_too_large_to_keep_lists_the_counts(change: Change) -> None:
    task = make_task()
    diff = change.diff.model_copy(update={"truncated": True, "patch_bytes": 9_500_000})
    client = ReviewClient([task], {task.id: diff}, {task.id: None})
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, app, task)
        assert "too large for the server to keep (9.1 MB)" in header(screen)
        assert [f.path for f in screen.files] == [f.path for f in change.diff.files]
        assert screen.patch is None
        assert shown_kinds(screen) == ["note", "note"]
        await pilot.press("e")
        await pilot.pause()
        assert not isinstance(app.screen, AskModal)


# -- from the dashboard ------------------------------------------------------------------------


async def test_f_on_the_dashboard_reviews_the_highlighted_task(change: Change) -> None:
    client, task = reviewing(change)
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
        tasks = task_list(app)
        await wait_for(pilot, lambda: tasks.selected_task is not None, "the task")
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), "the review")
        screen = app.screen
        assert isinstance(screen, ReviewScreen) and screen.review_task.id == task.id
        await wait_for(pilot, lambda: screen.loads == 1, "the diff")
        await pilot.press("f")  # the same key goes back
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        await pilot.press("enter", "f")  # from the task's pane too
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), "the review")


# -- snapshot ---------------------------------------------------------------------------------


def test_review_screen_snapshot(snap_compare: SnapCompare, change: Change) -> None:
    """keep.py's second hunk, at 80×24, the file list beside it."""
    diff = change.diff.model_copy(update={"base_commit": "1a2b3c4d" * 5})
    task = make_task()
    client = ReviewClient([task], {task.id: diff}, {task.id: change.patch})
    app = CodexTuiApp(
        client, clock=FrozenClock(TS + timedelta(minutes=1)), poll_interval_s=0.2, close_client=True
    )

    async def run_before(pilot: Pilot[Any]) -> None:
        await open_review(pilot, app, task)
        await pilot.press("right_square_bracket", "n", "n")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


# -- on a real server ------------------------------------------------------------------------


async def test_a_task_run_on_a_real_server_reviewed_from_its_row(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The test is the worker (tests/server/test_review_cli.py): a real workspace, its diff
    uploaded; the row shows the counts, ``f`` the files, and ``e`` writes the server's patch
    byte for byte."""
    server = server_factory(local_worker=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "keep.txt").write_text("one\ntwo\nthree\n")
    (repo / "gone.txt").write_text("to be deleted\n")
    (repo / "logo.bin").write_bytes(BINARY)
    git(repo, "add", "--all")
    git(repo, "commit", "-q", "-m", "first")
    async with owner(server) as alice:
        ran = await run_task(server, alice, repo)
    target = tmp_path / "task.patch"
    async with server.client() as client, running_app(client, server) as (app, pilot):
        tasks = task_list(app)
        await wait_for(pilot, lambda: tasks.selected_task is not None, "the task")
        row = row_texts(tasks)[0]
        assert row.endswith("· +3 −2"), row
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), "the review")
        screen = app.screen
        assert isinstance(screen, ReviewScreen)
        await wait_for(pilot, lambda: screen.loads == 1, "the diff")
        assert screen.patch == ran.patch
        paths = [f.path for f in screen.files]
        assert paths[:4] == ["evil\x1b]0;pwned\x07.txt", "gone.txt", "keep.txt", "logo.bin"]
        shown = [str(screen.file_list.get_option_at_index(i).prompt) for i in range(len(paths))]
        assert "evil␛]0;pwned␇.txt" in shown[0] and "\x1b" not in "".join(shown)
        assert f"base {ran.workspace.base_commit[:7]} · 5 files +3 −2" in header(screen)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, AskModal), "the question")
        app.screen.query_one(Input).value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.outcome is not None, "the export")
    assert target.read_bytes() == ran.patch
