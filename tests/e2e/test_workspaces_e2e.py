"""Workspaces end to end with the real codex 0.169.0 (``codex app-server``) against
tests/fakes/mock_model_server.py, real git and `codex-tui server` on loopback
(docs/reliability.md W1–W5): a task on a repository runs in a checkout of its own, its diff
holds what codex changed by ``apply_patch`` and by the shell (binary files and deletions
included) and round-trips through ``codex-tui diff`` + ``git apply`` byte for byte, two
tasks on one repository stay apart, a reply's turn sees the first turn's changes, the user's
own checkout is never touched, and workspaces are removed on request and by age with git
forgetting them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from server_client.client import CodexTuiClient, NotFoundError
from server_client.models import Task, TaskStatus, WorkspaceState
from tests.conftest import LiveServer, ServerFactory
from tests.e2e.test_conversations import conversation_env, until_turn_ends
from tests.fakes.mock_model_server import MockModel, apply_patch, call_shell, say

pytestmark = pytest.mark.timeout(180)

#: exec_command's yield time in the model's calls: the command runs to its end.
YIELD_MS = 60_000

#: Bytes no text file has: NUL, high bytes, an invalid UTF-8 sequence.
BLOB = bytes(range(256)) + b"\xff\xfe\x00tail"


async def poll_async(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0
) -> None:
    """Await ``check()`` until it is True; fail the test after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def read_text(path: Path) -> str:
    """The text of ``path`` (a file the test looks at after the fact)."""
    return path.read_text()


def exists(path: Path) -> bool:
    """Whether ``path`` exists."""
    return path.exists()


def git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """Run git in ``repo``; its stdout (fails the test on an error)."""
    done = subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def make_repo(path: Path) -> str:
    """A repository with two committed files (``keep.txt``, ``gone.txt``) and an ignored
    pattern; returns its HEAD commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    (path / "keep.txt").write_text("line one\nline two\n")
    (path / "gone.txt").write_text("to be deleted\n")
    (path / ".gitignore").write_text("*.log\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "base")
    return git(path, "rev-parse", "HEAD").decode().strip()


def checkout_state(repo: Path) -> tuple[bytes, bytes, bytes]:
    """What a user's checkout looks like to them: status, index bytes and HEAD."""
    return (
        git(repo, "status", "--porcelain", "--untracked-files=all"),
        (repo / ".git" / "index").read_bytes(),
        git(repo, "rev-parse", "HEAD"),
    )


def cli_bytes(server: LiveServer, *args: str, cwd: Path | None = None) -> bytes:
    """Run ``codex-tui ARGS`` and return its stdout as bytes (fails on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "-m", "codex_tui", *args],
        env=server.env,
        capture_output=True,
        timeout=60,
        cwd=cwd or server.workdir,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@pytest.fixture
def ws_server(
    server_factory: ServerFactory, codex_bin: str, codex_home: Path, tmp_path: Path
) -> LiveServer:
    """A server whose local worker runs conversations on the real codex, syncing its
    workspaces every half second, keeping a finished task's workspace 1 s."""
    env = conversation_env(codex_home, tmp_path)
    env["CODEX_TUI_WORKER_WORKSPACE_SYNC_S"] = "0.5"
    env["CODEX_TUI_SERVER_WORKSPACE_RETENTION_S"] = "1"
    return server_factory(codex_bin=codex_bin, fake_mode=None, extra_env=env)


async def one_turn(
    client: CodexTuiClient, task_id: str, server: LiveServer, after: int = 0
) -> Task:
    """Wait for the task's running turn to end; the task then.

    Raises:
        AssertionError: the turn did not end within the bounded wait of
            :func:`until_turn_ends` (the message holds the task, its last events and the
            ``server``'s log).
    """
    seen = await until_turn_ends(client, task_id, after=after, server_log=server.log)
    assert seen, "the stream ended without events"
    return await client.get_task(task_id)


PATCH = """*** Begin Patch
*** Update File: keep.txt
@@
 line one
-line two
+line two, patched
*** Add File: added.txt
+added by apply_patch
*** End Patch
"""

SHELL_EDIT = (
    "echo shell line >> keep.txt && rm gone.txt && mkdir -p sub && "
    'cp "$BLOB_SOURCE" sub/blob.bin && echo noise > build.log'
)


async def test_the_diff_holds_patch_and_shell_edits_and_applies_byte_for_byte(
    ws_server: LiveServer, mock_model: MockModel, tmp_path: Path
) -> None:
    repo = ws_server.workdir / "repo"
    base = make_repo(repo)
    blob_source = tmp_path / "blob-source.bin"
    blob_source.write_bytes(BLOB)
    before = checkout_state(repo)
    mock_model.script(
        [
            apply_patch(PATCH),
            call_shell(
                SHELL_EDIT.replace("$BLOB_SOURCE", str(blob_source)), yield_time_ms=YIELD_MS
            ),
            say("changed"),
        ]
    )
    async with ws_server.client() as client:
        task = await client.create_task("change the repository", repo=str(repo))
        assert task.repo == str(repo) and task.workdir is None
        done = await one_turn(client, task.id, ws_server)
        assert done.status is TaskStatus.IDLE, ws_server.log()
        diff = await client.get_diff(task.id)
        patch = await client.get_patch(task.id)

    # The workspace: a checkout of its own at the repository's HEAD, outside the repository.
    assert done.base_commit == base and done.workspace_state is WorkspaceState.PRESENT
    assert done.workspace_path is not None
    workspace = Path(done.workspace_path)
    assert workspace.name == task.id and not workspace.is_relative_to(repo)
    assert (workspace / "keep.txt").read_text() == "line one\nline two, patched\nshell line\n"

    # Everything codex changed, whichever way: the patch tool's and the shell's edits, a new
    # binary file and a deletion; the ignored file stays out.
    counts = {f.path: (f.added, f.removed) for f in diff.files}
    assert counts == {
        "keep.txt": (2, 1),
        "added.txt": (1, 0),
        "gone.txt": (0, 1),
        "sub/blob.bin": (None, None),
    }
    assert (done.diff_files, done.diff_added, done.diff_removed) == (4, 3, 2)
    assert diff.final and diff.base_commit == base and diff.patch_bytes == len(patch)

    # `codex-tui diff` prints the patch exactly; `git apply` of it onto a fresh checkout at the
    # base commit gives the workspace's files byte for byte.
    assert cli_bytes(ws_server, "diff", task.id) == patch
    stat = cli_bytes(ws_server, "diff", task.id, "--stat").decode()
    assert "sub/blob.bin" in stat and "keep.txt" in stat
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(repo), str(fresh))
    git(fresh, "checkout", "-q", "--detach", base)
    git(fresh, "apply", "--binary", "-", stdin=patch)
    for name in ("keep.txt", "added.txt", "sub/blob.bin"):
        assert (fresh / name).read_bytes() == (workspace / name).read_bytes(), name
    assert (fresh / "sub" / "blob.bin").read_bytes() == BLOB
    assert not (fresh / "gone.txt").exists() and not (fresh / "build.log").exists()

    # The user's own checkout: same status, index and HEAD; git knows the workspace.
    assert checkout_state(repo) == before
    assert str(workspace) in git(repo, "worktree", "list", "--porcelain").decode()


async def test_two_tasks_on_one_repository_stay_apart(
    ws_server: LiveServer, mock_model: MockModel
) -> None:
    repo = ws_server.workdir / "repo"
    make_repo(repo)
    before = checkout_state(repo)
    # Both tasks run the same script: each writes its own workspace's name into note.txt.
    mock_model.script(
        [call_shell('basename "$PWD" > note.txt', yield_time_ms=YIELD_MS), say("noted")]
    )
    async with ws_server.client() as client:
        first = await client.create_task("note it", repo=str(repo))
        second = await client.create_task("note it", repo=str(repo))
        for task in (first, second):
            assert (await one_turn(client, task.id, ws_server)).status is TaskStatus.IDLE, (
                ws_server.log()
            )
        patches = {task.id: await client.get_patch(task.id) for task in (first, second)}
        paths = {
            task.id: (await client.get_task(task.id)).workspace_path for task in (first, second)
        }
    assert paths[first.id] != paths[second.id]
    for mine, other in ((first.id, second.id), (second.id, first.id)):
        assert f"+{mine}".encode() in patches[mine] and other.encode() not in patches[mine]
        assert read_text(Path(paths[mine] or "", "note.txt")) == f"{mine}\n"
    assert not (repo / "note.txt").exists()
    assert checkout_state(repo) == before


async def test_a_reply_works_on_the_first_turns_changes(
    ws_server: LiveServer, mock_model: MockModel
) -> None:
    repo = ws_server.workdir / "repo"
    make_repo(repo)
    mock_model.script(
        [
            call_shell("echo first turn > one.txt", yield_time_ms=YIELD_MS),
            say("one"),
            call_shell("cat one.txt && echo second turn > two.txt", yield_time_ms=YIELD_MS),
            say("two"),
        ]
    )
    async with ws_server.client() as client:
        task = await client.create_task("first", repo=str(repo))
        turn1 = await one_turn(client, task.id, ws_server)
        assert turn1.status is TaskStatus.IDLE, ws_server.log()
        assert [f.path for f in (await client.get_diff(task.id)).files] == ["one.txt"]
        await client.reply(task.id, "second")
        turn2 = await one_turn(client, task.id, ws_server, after=turn1.last_seq)
        assert turn2.status is TaskStatus.IDLE, ws_server.log()
        diff = await client.get_diff(task.id)
    # The same workspace, and codex read what the first turn wrote.
    assert turn2.workspace_path == turn1.workspace_path
    outputs = mock_model.function_call_outputs()
    assert any("first turn" in output for output in outputs), outputs
    assert sorted(f.path for f in diff.files) == ["one.txt", "two.txt"]


async def test_workspaces_are_removed_on_request_and_by_age(
    ws_server: LiveServer, mock_model: MockModel
) -> None:
    repo = ws_server.workdir / "repo"
    make_repo(repo)
    mock_model.script([call_shell("echo x > x.txt", yield_time_ms=YIELD_MS), say("done")])
    async with ws_server.client() as client:
        asked = await client.create_task("one", repo=str(repo))
        aged = await client.create_task("two", repo=str(repo))
        for task in (asked, aged):
            assert (await one_turn(client, task.id, ws_server)).status is TaskStatus.IDLE, (
                ws_server.log()
            )
        tasks = {t.id: await client.get_task(t.id) for t in (asked, aged)}
        listed = cli_bytes(ws_server, "workspaces").decode()
        assert asked.id in listed and aged.id in listed

        # On request (an idle conversation may lose its workspace; a running one may not).
        cli_bytes(ws_server, "workspaces", "rm", asked.id)

        async def removed(task_id: str) -> bool:
            return (await client.get_task(task_id)).workspace_state is WorkspaceState.REMOVED

        await poll_async(lambda: removed(asked.id), "the asked-for removal")
        # By age: the idle conversation keeps it; once the task ends it goes after 1 s.
        assert (await client.get_task(aged.id)).workspace_state is WorkspaceState.PRESENT
        await client.cancel_task(aged.id)
        await poll_async(lambda: removed(aged.id), "the removal by age")
        assert await client.list_workspaces() == []
        # The diff stays with the server.
        assert (await client.get_diff(asked.id)).files[0].path == "x.txt"

    worktrees = git(repo, "worktree", "list", "--porcelain").decode()
    for task in tasks.values():
        assert task.workspace_path is not None
        assert not exists(Path(task.workspace_path))
        assert task.workspace_path not in worktrees


async def test_a_repository_url_is_cloned_when_the_policy_allows_it(
    server_factory: ServerFactory,
    codex_bin: str,
    codex_home: Path,
    mock_model: MockModel,
    tmp_path: Path,
) -> None:
    env = conversation_env(codex_home, tmp_path)
    schemes = '["https", "ssh", "file"]'
    env["CODEX_TUI_SERVER_REPO_URL_SCHEMES"] = schemes
    server = server_factory(codex_bin=codex_bin, fake_mode=None, extra_env=env)
    # What the policy does not allow is refused at submit, naming the setting or the rule.
    for url, named in (
        ("http://example.com/repo.git", "CODEX_TUI_SERVER_REPO_URL_SCHEMES"),
        ("ext::sh -c touch% /tmp/pwned", "git transport"),
        ("https://user:hunter2@example.com/repo.git", "credentials"),
    ):
        refused = server.cli("submit", "--repo", url, "do it")
        assert refused.returncode != 0 and named in refused.stderr, refused.stderr
        assert "hunter2" not in refused.stderr + refused.stdout
    source = server.workdir / "source"
    base = make_repo(source)
    bare = server.workdir / "remote.git"
    git(server.workdir, "clone", "-q", "--bare", str(source), str(bare))
    mock_model.script([call_shell("echo cloned > c.txt", yield_time_ms=YIELD_MS), say("ok")])
    async with server.client() as client:
        task = await client.create_task("in a clone", repo=bare.as_uri(), ref="main")
        done = await one_turn(client, task.id, server)
        assert done.status is TaskStatus.IDLE, server.log()
        diff = await client.get_diff(task.id)
    assert done.base_commit == base and done.workspace_path is not None
    assert (Path(done.workspace_path) / ".git").is_dir()  # a clone, not a worktree
    assert [f.path for f in diff.files] == ["c.txt"]


async def test_the_diff_is_live_while_the_turn_runs(
    ws_server: LiveServer, mock_model: MockModel
) -> None:
    repo = ws_server.workdir / "repo"
    make_repo(repo)
    # The second command runs until the task is cancelled: the diff of the first must be
    # at the server meanwhile.
    mock_model.script(
        [
            call_shell("echo live > live.txt", yield_time_ms=YIELD_MS),
            call_shell("sleep 600", yield_time_ms=YIELD_MS),
            say("never"),
        ]
    )
    async with ws_server.client() as client:
        task = await client.create_task("live", repo=str(repo))

        async def live_diff() -> bool:
            try:
                diff = await client.get_diff(task.id)
            except NotFoundError:
                return False
            return [f.path for f in diff.files] == ["live.txt"]

        await poll_async(live_diff, "a diff while the turn runs")
        running = await client.get_task(task.id)
        assert running.status is TaskStatus.RUNNING, ws_server.log()
        assert not (await client.get_diff(task.id)).final
        await client.cancel_task(task.id)
        ended = await one_turn(client, task.id, ws_server)
    assert ended.status is TaskStatus.CANCELED
    assert ended.diff_files == 1


async def test_an_exec_task_runs_in_a_workspace_too(
    server_factory: ServerFactory,
    codex_bin: str,
    codex_home: Path,
    mock_model: MockModel,
    tmp_path: Path,
) -> None:
    env = conversation_env(codex_home, tmp_path)
    env["CODEX_TUI_WORKER_RUNTIME"] = "exec"
    server = server_factory(codex_bin=codex_bin, fake_mode=None, extra_env=env)
    repo = server.workdir / "repo"
    base = make_repo(repo)
    before = checkout_state(repo)
    mock_model.script(
        [apply_patch(PATCH), call_shell("rm gone.txt", yield_time_ms=YIELD_MS), say("done")]
    )
    async with server.client() as client:
        task = await client.create_task("exec it", repo=str(repo), runtime="exec")
        done = await one_turn(client, task.id, server)
        assert done.status is TaskStatus.COMPLETED, server.log()
        diff = await client.get_diff(task.id)
    assert done.base_commit == base and diff.final
    assert sorted(f.path for f in diff.files) == ["added.txt", "gone.txt", "keep.txt"]
    assert checkout_state(repo) == before
