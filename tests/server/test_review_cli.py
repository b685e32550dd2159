"""The review verbs of ``codex-tui`` (issue 15) as a person runs them, against a real server;
the test plays the worker (it claims the task, makes its workspace with real git, reports it
and uploads its diff through the worker routes): ``submit --repo/--ref``, ``diff`` (the patch
byte for byte, ``--stat`` with file names made safe, ``-o``), ``apply`` (clean, ``--check``,
a conflict), ``branch`` (the patch on a new branch, nothing of the user's touched, never over
an existing branch, a warning while the task runs), ``workspaces`` and ``workspaces rm``, and
the reasons a task has no diff."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from server_client.models import (
    DiffUpload,
    FileChange,
    Task,
    TaskStatus,
    Worker,
    WorkspaceHeld,
    WorkspaceReport,
    WorkspaceSync,
)
from server_client.workspaces import Workspace, create_worktree, diff_stat, full_diff
from tests.conftest import LiveServer, ServerFactory
from tests.server.test_conversations_api import Owner, owner
from tests.support.protocol import finish_completed
from tests.unit.test_workspaces import BINARY, git, tree_of


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server without a local worker (the test is the worker)."""
    return server_factory(local_worker=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The user's repository (inside the server's workdir root): text, a binary file, a file
    to delete; the user has an edit of their own in its working tree and one staged."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "keep.txt").write_text("one\ntwo\nthree\n")
    (path / "gone.txt").write_text("to be deleted\n")
    (path / "logo.bin").write_bytes(BINARY)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    (path / "notes.txt").write_text("the user's own, untracked\n")
    (path / "keep.txt").write_text("one\ntwo\nthree\nthe user's edit\n")
    return path


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


def cli_bytes(server: LiveServer, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``codex-tui ARGS`` as :meth:`LiveServer.cli`, its output as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "codex_tui", *args],
        env=server.env,
        capture_output=True,
        timeout=60,
        cwd=server.workdir,
    )


async def cli(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    """:meth:`LiveServer.cli` off the event loop (the test's worker keeps answering)."""
    return await asyncio.to_thread(server.cli, *args)


@dataclass
class Ran:
    """A task the test ran as its worker: the task, the worker, its lease, its workspace
    and the patch it uploaded."""

    task_id: str
    worker: Worker
    lease_id: str
    workspace: Workspace
    patch: bytes


#: A file name with a terminal escape sequence in it (OSC 0: retitle the window).
EVIL_NAME = "evil\x1b]0;pwned\x07.txt"


async def run_task(
    server: LiveServer,
    alice: Owner,
    repo: Path,
    prompt: str = "Tidy the files\nand more detail",
    *,
    finish: bool = True,
) -> Ran:
    """Submit ``prompt`` on ``repo`` with the CLI (a relative ``--repo``), claim it, make its
    workspace with real git, change files as codex would (an edit, a deletion, a binary
    rewrite, a new file in a new folder, a file with an escape sequence in its name), report
    the workspace and upload the diff; with ``finish``, the task then completes."""
    relative = await asyncio.to_thread(os.path.relpath, repo, server.workdir)
    task_id = ok(await cli(server, "submit", "--repo", relative, prompt)).strip()
    worker = await alice.worker()
    claim = await alice.claim(worker)
    assert claim.task.id == task_id
    ws = await create_worktree(
        str(repo), None, repo.parent / "workspaces", task_id, roots=[str(repo.parent)]
    )
    path = f"/api/workers/{worker.id}/tasks/{task_id}"
    report = WorkspaceReport(lease_id=claim.lease_id, path=str(ws.path), base_commit=ws.base_commit)
    reported = await alice.http.put(f"{path}/workspace", content=report.model_dump_json())
    assert reported.status_code == 200, reported.text

    (ws.path / "keep.txt").write_text("one\n2\nthree\n")
    (ws.path / "gone.txt").unlink()
    (ws.path / "logo.bin").write_bytes(BINARY[::-1])
    (ws.path / "src").mkdir()
    (ws.path / "src" / "new.py").write_text("print('new')\n")
    (ws.path / EVIL_NAME).write_text("\x1b]0;pwned\x07\n")
    patch = await full_diff(ws)
    files = [FileChange(path=s.path, added=s.added, removed=s.removed) for s in await diff_stat(ws)]
    upload = DiffUpload(
        lease_id=claim.lease_id,
        base_commit=ws.base_commit,
        files=files,
        patch=base64.b64encode(patch),
    )
    uploaded = await alice.http.put(f"{path}/diff", content=upload.model_dump_json())
    assert uploaded.status_code == 204, uploaded.text
    if finish:
        await finish_completed(alice.api, worker, claim, 0)
    return Ran(task_id, worker, claim.lease_id, ws, patch)


def on_a_terminal(server: LiveServer, *args: str) -> bytes:
    """What ``codex-tui ARGS`` writes when its stdout is a terminal (a pseudo-terminal)."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codex_tui", *args],
            env=server.env,
            stdout=follower,
            stderr=subprocess.PIPE,
            cwd=server.workdir,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else b""
    finally:
        os.close(leader)
    return b"".join(chunks)


def clone_at(repo: Path, commit: str, where: Path) -> Path:
    """The user's other clone of ``repo``, at ``commit`` on a branch of its own."""
    git(where.parent, "clone", "-q", str(repo), str(where))
    git(where, "checkout", "-q", "-b", "mine", commit)
    return where


async def test_diff_prints_the_patch_byte_for_byte_and_a_safe_stat(
    server: LiveServer, repo: Path, tmp_path: Path
) -> None:
    async with owner(server) as alice:
        ran = await run_task(server, alice, repo)
        task = await alice.client.get_task(ran.task_id)
    assert task.repo == str(repo)  # the relative --repo, made absolute

    printed = await asyncio.to_thread(cli_bytes, server, "diff", ran.task_id)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == ran.patch
    ok(await cli(server, "diff", ran.task_id, "-o", str(tmp_path / "t.patch")))
    assert (tmp_path / "t.patch").read_bytes() == ran.patch
    # `codex-tui diff ID | git apply` in a clone at the base gives the workspace's files.
    fresh = clone_at(repo, ran.workspace.base_commit, tmp_path / "fresh")
    await asyncio.to_thread(
        subprocess.run, ["git", "apply"], cwd=fresh, input=printed.stdout, check=True
    )
    assert tree_of(fresh) == tree_of(ran.workspace.path)

    # On a terminal, the escape sequence in a file's content is shown, not sent.
    shown = await asyncio.to_thread(on_a_terminal, server, "diff", ran.task_id)
    assert b"\x1b" not in shown and "+␛]0;pwned␇".encode() in shown

    stat = ok(await cli(server, "diff", "--stat", ran.task_id)).splitlines()
    assert sorted(line.split(None, 2)[-1] for line in stat[:-1]) == sorted(
        ["evil␛]0;pwned␇.txt", "gone.txt", "keep.txt", "src/new.py", "logo.bin"]
    )
    assert [line.split() for line in stat if line.endswith("logo.bin")] == [["bin", "logo.bin"]]
    assert [line.split() for line in stat if line.endswith("keep.txt")] == [
        ["+1", "-1", "keep.txt"]
    ]
    assert stat[-1] == "5 files changed, +3 -2"
    assert "\x1b" not in "\n".join(stat)


async def test_apply_applies_checks_and_names_a_conflict(
    server: LiveServer, repo: Path, tmp_path: Path
) -> None:
    async with owner(server) as alice:
        ran = await run_task(server, alice, repo)
    mine = clone_at(repo, ran.workspace.base_commit, tmp_path / "mine")
    before = tree_of(mine)

    checked = ok(await cli(server, "apply", "--check", "-C", str(mine), ran.task_id))
    assert checked.splitlines()[0] == f"{ran.task_id}: the patch applies to {mine} (5 files)"
    assert tree_of(mine) == before
    applied = ok(await cli(server, "apply", "-C", str(mine), ran.task_id))
    assert "  src/new.py" in applied.splitlines() and "\x1b" not in applied
    assert tree_of(mine) == tree_of(ran.workspace.path)

    other = clone_at(repo, ran.workspace.base_commit, tmp_path / "other")
    (other / "keep.txt").write_text("one\nTWO, mine\nthree\n")
    git(other, "commit", "-q", "-am", "mine")
    conflict = await cli(server, "apply", "-C", str(other), ran.task_id)
    assert conflict.returncode == 1
    assert "conflicts with your checkout" in conflict.stderr and "in 1 file: keep.txt" in (
        conflict.stderr
    )
    assert "Resolve the markers" in conflict.stderr
    assert "<<<<<<< ours" in (other / "keep.txt").read_text()


async def test_branch_commits_the_patch_and_leaves_the_user_alone(
    server: LiveServer, repo: Path, tmp_path: Path
) -> None:
    async with owner(server) as alice:
        ran = await run_task(server, alice, repo)
        running = await run_task(server, alice, repo, "Still going", finish=False)
        status, head = git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD")
        index = (repo / ".git" / "index").read_bytes()

        made = ok(await cli(server, "branch", ran.task_id))
        branch = f"codex/{ran.task_id}"
        commit = git(repo, "rev-parse", branch).strip()
        assert made.strip() == f"branch {branch} at {commit[:12]} in {repo}"
        assert git(repo, "log", "-1", "--format=%B", branch).strip() == (
            f"Tidy the files\n\ncodex-tui task {ran.task_id}"
        )
        assert git(repo, "rev-parse", f"{branch}^").strip() == ran.workspace.base_commit
        assert git(
            repo, "diff", "--binary", "--no-renames", ran.workspace.base_commit, branch
        ).encode() == (ran.patch)
        assert git(repo, "status", "--porcelain") == status
        assert git(repo, "rev-parse", "HEAD") == head
        assert (repo / ".git" / "index").read_bytes() == index

        again = await cli(server, "branch", ran.task_id)
        assert again.returncode == 1 and f"branch '{branch}' exists already" in again.stderr
        assert git(repo, "rev-parse", branch).strip() == commit
        bad = await cli(server, "branch", ran.task_id, "no..dots")
        assert bad.returncode == 1 and "is not a valid branch name" in bad.stderr

        elsewhere = clone_at(repo, ran.workspace.base_commit, tmp_path / "elsewhere")
        ok(await cli(server, "branch", ran.task_id, "review/it", "--repo", str(elsewhere)))
        assert git(elsewhere, "rev-parse", "review/it^").strip() == ran.workspace.base_commit

        live = await cli(server, "branch", running.task_id)
        assert live.returncode == 0, live.stderr
        assert f"task {running.task_id} is still running: the branch holds its diff as of" in (
            live.stderr
        )

        unrelated = tmp_path / "unrelated"
        unrelated.mkdir()
        git(unrelated, "init", "-q")
        missing = await cli(server, "branch", ran.task_id, "x", "--repo", str(unrelated))
        assert missing.returncode == 1
        assert "`git fetch <remote>` there first" in missing.stderr


async def test_a_task_without_a_diff_says_why(server: LiveServer, repo: Path) -> None:
    plain = ok(await cli(server, "submit", "no repository")).strip()
    for args in (("diff",), ("diff", "--stat"), ("apply",), ("branch",)):
        said = await cli(server, *args, plain)
        assert said.returncode == 1, (args, said.stderr)
        assert f"task {plain} has no diff: it was not submitted with a repository" in said.stderr
    waiting = ok(await cli(server, "submit", "--repo", str(repo), "later")).strip()
    said = await cli(server, "diff", waiting)
    assert said.returncode == 1
    assert "has no diff yet: its worker has not reported one (the task is queued" in said.stderr
    missing = await cli(server, "diff", "no-such-task")
    assert missing.returncode == 2 and "404" in missing.stderr


async def test_submit_checks_repo_and_ref(server: LiveServer, repo: Path) -> None:
    both = await cli(server, "submit", "--repo", str(repo), "--workdir", str(repo), "x")
    assert both.returncode == 2 and "--repo and --workdir do not go together" in both.stderr
    alone = await cli(server, "submit", "--ref", "main", "x")
    assert alone.returncode == 2 and "--ref needs --repo" in alone.stderr
    task_id = ok(await cli(server, "submit", "--repo", str(repo), "--ref", "main", "x")).strip()
    async with owner(server) as alice:
        task = await alice.client.get_task(task_id)
    assert (task.repo, task.ref, task.workdir) == (str(repo), "main", None)


def listed(text: str) -> dict[str, list[str]]:
    """``workspaces``' rows by task id, split on whitespace."""
    return {line.split()[0]: line.split() for line in text.splitlines()}


async def test_workspaces_are_listed_and_removed(server: LiveServer, repo: Path) -> None:
    async with owner(server) as alice:
        done = await run_task(server, alice, repo)
        running = await run_task(server, alice, repo, "busy", finish=False)
        sync = WorkspaceSync(
            workspaces=[
                WorkspaceHeld(task_id=done.task_id, path=str(done.workspace.path), bytes=3 << 20),
                WorkspaceHeld(task_id=running.task_id, path=str(running.workspace.path), bytes=10),
            ]
        )
        synced = await alice.http.post(
            f"/api/workers/{done.worker.id}/workspaces", content=sync.model_dump_json()
        )
        assert synced.status_code == 200, synced.text

        rows = listed(ok(await cli(server, "workspaces")))
        assert set(rows) == {done.task_id, running.task_id}
        assert rows[done.task_id][1:5] == ["w1", "completed", "present", "3.0M"]
        assert rows[done.task_id][-2:] == [str(repo), str(done.workspace.path)]
        assert rows[running.task_id][1:5] == ["w1", "running", "present", "10B"]
        lines = ok(await cli(server, "workspaces", "--json")).splitlines()
        as_json = [Task.model_validate(json.loads(line)) for line in lines]
        assert {t.id: t.workspace_bytes for t in as_json} == {
            done.task_id: 3 << 20,
            running.task_id: 10,
        }

        refused = await cli(server, "workspaces", "rm", running.task_id, done.task_id)
        assert refused.returncode == 1
        assert f"{running.task_id}: the task is still active: cancel it first" in refused.stderr
        assert refused.stdout.split() == [done.task_id, "removing"]
        rows = listed(ok(await cli(server, "workspaces")))
        assert rows[done.task_id][3] == "removing"
        assert (await alice.client.get_task(running.task_id)).status is TaskStatus.RUNNING
        unknown = await cli(server, "workspaces", "rm", "no-such-task")
        assert unknown.returncode == 1 and "no such task, or it has no workspace" in (
            unknown.stderr
        )
