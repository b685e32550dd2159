"""The worker's side of task workspaces (server_client.worker.task_workspaces) with real git: a
task's workspace is made once and found again by a worker that restarted (its record), a
removed one is never silently made anew for a conversation's later turn, the disk's
workspaces are listed with their sizes, removal makes git forget a worktree, which codex
events may have changed files, and the diff reporter's pace."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server_client.models import EventIn, EventKind, Sandbox, Task, TaskStatus
from server_client.worker.task_workspaces import (
    Diff,
    DiffReporter,
    WorkspaceKeeper,
    changes_files,
)
from server_client.workspaces import RemotePolicy, WorkspaceError

TS = datetime(2026, 12, 6, tzinfo=UTC)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "roots" / "repo"
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "t")
    (path / "a.txt").write_text("a\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "base")
    return path


def keeper(tmp_path: Path) -> WorkspaceKeeper:
    """A keeper of workspaces under ``tmp_path/ws``, local repositories in ``tmp_path/roots``."""
    return WorkspaceKeeper(tmp_path / "ws", [str(tmp_path / "roots")], RemotePolicy())


def task(repo: str | None, **fields: object) -> Task:
    values: dict[str, object] = {
        "id": "t1",
        "prompt": "p",
        "workdir": None,
        "model": None,
        "sandbox": Sandbox.WORKSPACE_WRITE,
        "status": TaskStatus.RUNNING,
        "created_at": TS,
        "repo": repo,
    }
    values.update(fields)
    return Task.model_validate(values)


async def test_a_workspace_is_made_once_and_found_again_after_a_restart(
    repo: Path, tmp_path: Path
) -> None:
    made, fresh = await keeper(tmp_path).prepare(task(str(repo)))
    assert fresh and made.path == tmp_path / "ws" / "t1"
    assert made.base_commit == git(repo, "rev-parse", "HEAD")
    (made.path / "b.txt").write_text("b\n")
    # A new keeper (the worker restarted) finds it from its record, changes and all.
    again, fresh_again = await keeper(tmp_path).prepare(
        task(str(repo), workspace_path=str(made.path), base_commit=made.base_commit)
    )
    assert not fresh_again and again == made
    assert (again.path / "b.txt").read_text() == "b\n"
    held = await keeper(tmp_path).held()
    assert [(h.task_id, h.path) for h in held] == [("t1", str(made.path))]
    assert held[0].bytes >= len("a\nb\n")


async def test_a_removed_workspace_is_not_made_anew_for_a_later_turn(
    repo: Path, tmp_path: Path
) -> None:
    keep = keeper(tmp_path)
    made, _ = await keep.prepare(task(str(repo)))
    assert await keep.remove("t1")
    assert not made.path.exists()
    assert str(made.path) not in git(repo, "worktree", "list", "--porcelain")
    assert await keep.held() == []
    assert not await keep.remove("t1"), "nothing left to remove"
    with pytest.raises(WorkspaceError, match="gone"):
        await keep.prepare(
            task(str(repo), workspace_path=str(made.path), base_commit=made.base_commit)
        )


async def test_a_repository_outside_the_roots_or_none_is_refused(
    repo: Path, tmp_path: Path
) -> None:
    outside = WorkspaceKeeper(tmp_path / "ws", [str(tmp_path / "elsewhere")], RemotePolicy())
    with pytest.raises(WorkspaceError, match="outside the allowed roots"):
        await outside.prepare(task(str(repo)))
    with pytest.raises(WorkspaceError, match="no repository"):
        await keeper(tmp_path).prepare(task(None))
    with pytest.raises(WorkspaceError, match="not allowed"):
        await keeper(tmp_path).prepare(task("http://example.com/r.git"))
    assert not (tmp_path / "ws" / "t1").exists()


def codex(item_type: str, kind: str = "item.completed") -> EventIn:
    return EventIn(ts=TS, kind=EventKind.CODEX, data={"type": kind, "item": {"type": item_type}})


def test_completed_file_changes_and_commands_may_change_files() -> None:
    assert changes_files(codex("file_change")) and changes_files(codex("fileChange"))
    assert changes_files(codex("command_execution")) and changes_files(codex("commandExecution"))
    assert not changes_files(codex("command_execution", kind="item.started"))
    assert not changes_files(codex("agent_message"))
    assert not changes_files(EventIn(ts=TS, kind=EventKind.STDOUT, data={"line": "x"}))
    assert not changes_files(EventIn(ts=TS, kind=EventKind.CODEX, data=[1, 2]))


async def test_touches_coalesce_into_paced_uploads_and_final_sends_the_last(
    repo: Path, tmp_path: Path
) -> None:
    made, _ = await keeper(tmp_path).prepare(task(str(repo)))
    sent: list[list[str]] = []
    first = asyncio.Event()

    async def upload(diff: Diff) -> None:
        sent.append([f.path for f in diff.files])
        first.set()

    reporter = DiffReporter(made, upload, interval_s=3600)
    (made.path / "one.txt").write_text("1\n")
    reporter.touch()
    await asyncio.wait_for(first.wait(), 30)
    # Within the interval, more touches wait: nothing is sent until the turn's end.
    (made.path / "two.txt").write_text("2\n")
    for _ in range(5):
        reporter.touch()
    assert sent == [["one.txt"]]
    await reporter.final()
    assert sent == [["one.txt"], ["one.txt", "two.txt"]]
    assert reporter.uploads == 2


async def test_final_returns_even_when_the_pump_loses_its_cancel(
    repo: Path, tmp_path: Path
) -> None:
    # An upload path that drops a cancel (as Python 3.11's wait_for does when its work
    # finishes at that moment) must not keep the turn's end waiting for the pump forever.
    made, _ = await keeper(tmp_path).prepare(task(str(repo)))
    sent: list[list[str]] = []
    uploading = asyncio.Event()
    release = asyncio.Event()

    async def upload(diff: Diff) -> None:
        sent.append([f.path for f in diff.files])
        if len(sent) == 1:
            uploading.set()
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # the cancel is lost here, as wait_for loses it

    reporter = DiffReporter(made, upload, interval_s=3600)
    (made.path / "one.txt").write_text("1\n")
    reporter.touch()
    async with asyncio.timeout(30):
        await uploading.wait()
    (made.path / "two.txt").write_text("2\n")
    reporter.touch()  # more changes: the pump would go round again
    try:
        async with asyncio.timeout(30):
            await reporter.final()
    except TimeoutError:
        raise AssertionError("final() still waits for a pump that lost its cancel") from None
    assert sent == [["one.txt"], ["one.txt", "two.txt"]]
