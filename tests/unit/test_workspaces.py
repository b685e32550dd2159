"""Provides tests of task workspaces with real git (server_client.workspaces): a worktree per
task at a base commit, apart from the user's working tree and index and from other tasks; the
complete diff (edits, untracked files, deletions, binary files, modes) round-trips through ``git
apply`` onto a fresh checkout at the base, byte for byte; removal makes git forget it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from server_client.workspaces import (
    RUNNING_GIT_PIDS,
    FileStat,
    GitError,
    RemotePolicy,
    Workspace,
    WorkspaceError,
    apply_patch,
    check_remote_url,
    clone_workspace,
    commit_patch,
    create_worktree,
    default_branch_name,
    diff_stat,
    disk_usage,
    full_diff,
    mask_credentials,
    remove_workspace,
)


def worktree(repo: str, ref: str | None, root: Path, name: str, *, roots: list[str]) -> Workspace:
    """:func:`create_worktree`, run to its end."""
    return asyncio.run(create_worktree(repo, ref, root, name, roots=roots))


def diff(workspace: Workspace) -> bytes:
    """:func:`full_diff`, run to its end."""
    return asyncio.run(full_diff(workspace))


def stat(workspace: Workspace) -> list[FileStat]:
    """:func:`diff_stat`, run to its end."""
    return asyncio.run(diff_stat(workspace))


def remove(workspace: Workspace) -> None:
    """:func:`remove_workspace`, run to its end."""
    asyncio.run(remove_workspace(workspace))


#: Bytes no text codec reads: a NUL, invalid UTF-8, every byte value.
BINARY = bytes(range(256)) * 4


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` (a test identity); its stdout."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with two commits (tag ``v1`` on the first), a user edit in its working
    tree and a staged file in its index."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "keep.txt").write_text("one\ntwo\nthree\n")
    (path / "gone.txt").write_text("to be deleted\n")
    (path / "logo.bin").write_bytes(BINARY)
    (path / "run.sh").write_text("echo hi\n")
    (path / ".gitignore").write_text("build/\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    git(path, "tag", "v1")
    (path / "keep.txt").write_text("one\ntwo\nthree\nfour\n")
    git(path, "commit", "-q", "-am", "second")
    (path / "keep.txt").write_text("the user's own edit\n")
    (path / "staged.txt").write_text("staged by the user\n")
    git(path, "add", "staged.txt")
    return path


def tree_of(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file under ``root`` but ``.git`` and ignored ``build/``: bytes and executable bit."""
    files = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", "build")]
        for name in names:
            if name == ".git":
                continue
            path = Path(folder) / name
            files[str(path.relative_to(root))] = (
                path.read_bytes(),
                os.access(path, os.X_OK),
            )
    return files


def user_state(repo: Path) -> tuple[str, bytes]:
    """What the user has: ``git status`` and the index file's bytes."""
    return git(repo, "status", "--porcelain=v1"), (repo / ".git" / "index").read_bytes()


def test_a_workspace_is_a_detached_checkout_at_the_base_commit(repo: Path, tmp_path: Path) -> None:
    before = user_state(repo)
    head = git(repo, "rev-parse", "HEAD").strip()
    first = git(repo, "rev-parse", "v1").strip()
    root = tmp_path / "workspaces"

    at_head = worktree(str(repo), None, root, "task-a", roots=[str(tmp_path)])
    at_tag = worktree(
        str(repo / "keep.txt").rsplit("/", 1)[0], "v1", root, "task-b", roots=[str(tmp_path)]
    )

    assert (at_head.path, at_head.base_commit, at_head.source) == (
        root / "task-a",
        head,
        str(repo),
    )
    assert at_tag.base_commit == first
    assert (at_head.path / "keep.txt").read_text() == "one\ntwo\nthree\nfour\n"
    assert (at_tag.path / "keep.txt").read_text() == "one\ntwo\nthree\n"
    assert not (at_head.path / "staged.txt").exists()  # the user's index stays theirs
    assert git(at_head.path, "status", "--porcelain=v1") == ""
    assert user_state(repo) == before


def test_the_diff_holds_everything_and_applies_byte_for_byte(repo: Path, tmp_path: Path) -> None:
    before = user_state(repo)
    ws = worktree(str(repo), None, tmp_path / "ws", "t1", roots=[str(tmp_path)])
    index_before = (Path(git(ws.path, "rev-parse", "--git-path", "index").strip())).read_bytes()
    # What codex does with apply_patch and with the shell, alike to git:
    (ws.path / "keep.txt").write_text("one\n2\nthree\nfour\nfive\n")
    (ws.path / "gone.txt").unlink()
    (ws.path / "logo.bin").write_bytes(BINARY[::-1] + b"\0tail")
    (ws.path / "new dir").mkdir()
    (ws.path / "new dir" / "added file.py").write_text("print('new')\n")
    (ws.path / "new.bin").write_bytes(BINARY[:300])
    (ws.path / "run.sh").chmod(0o755)
    (ws.path / "build").mkdir()
    (ws.path / "build" / "out.o").write_bytes(b"ignored output")

    patch = diff(ws)
    stats = stat(ws)

    # A fresh checkout at the base, the patch applied: the same tree.
    fresh = tmp_path / "fresh"
    git(repo, "worktree", "add", "-q", "--detach", str(fresh), ws.base_commit)
    (tmp_path / "p.patch").write_bytes(patch)
    git(fresh, "apply", "--binary", str(tmp_path / "p.patch"))
    assert tree_of(fresh) == tree_of(ws.path)
    assert b"build/out.o" not in patch  # ignored, as git status has it
    assert sorted(stats, key=lambda s: s.path) == [
        FileStat("gone.txt", 0, 1),
        FileStat("keep.txt", 2, 1),
        FileStat("logo.bin", None, None),
        FileStat("new dir/added file.py", 1, 0),
        FileStat("new.bin", None, None),
        FileStat("run.sh", 0, 0),
    ]
    # Nobody's index was written: not the workspace's, not the user's.
    index_after = Path(git(ws.path, "rev-parse", "--git-path", "index").strip()).read_bytes()
    assert index_after == index_before
    assert user_state(repo) == before


def test_two_workspaces_of_one_repository_stay_apart(repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    a = worktree(str(repo), None, root, "a", roots=[str(tmp_path)])
    b = worktree(str(repo), None, root, "b", roots=[str(tmp_path)])
    (a.path / "keep.txt").write_text("a's edit\n")
    (b.path / "only-b.txt").write_text("b's file\n")

    patch_a, patch_b = diff(a), diff(b)

    assert b"a's edit" in patch_a and b"only-b.txt" not in patch_a
    assert b"only-b.txt" in patch_b and b"a's edit" not in patch_b
    assert (b.path / "keep.txt").read_text() == "one\ntwo\nthree\nfour\n"


def test_an_unchanged_workspace_has_an_empty_diff(repo: Path, tmp_path: Path) -> None:
    ws = worktree(str(repo), None, tmp_path / "ws", "t", roots=[str(tmp_path)])
    assert diff(ws) == b""
    assert stat(ws) == []


def test_removal_deletes_the_checkout_and_git_forgets_it(repo: Path, tmp_path: Path) -> None:
    ws = worktree(str(repo), None, tmp_path / "ws", "t", roots=[str(tmp_path)])
    (ws.path / "dirty.txt").write_text("uncommitted work\n")
    assert disk_usage(ws.path) > len("uncommitted work\n")
    assert str(ws.path) in git(repo, "worktree", "list", "--porcelain")

    remove(ws)

    assert not ws.path.exists()
    assert str(ws.path) not in git(repo, "worktree", "list", "--porcelain")
    assert disk_usage(ws.path) == 0
    remove(ws)  # again: nothing left to do


def test_a_workspace_deleted_by_hand_is_pruned(repo: Path, tmp_path: Path) -> None:
    ws = worktree(str(repo), None, tmp_path / "ws", "t", roots=[str(tmp_path)])
    shutil.rmtree(ws.path)
    remove(ws)
    assert str(ws.path) not in git(repo, "worktree", "list", "--porcelain")


@pytest.mark.parametrize(
    ("where", "ref", "name", "message"),
    [
        ("outside", None, "t", "outside the allowed roots"),
        ("plain", None, "t", "not inside a git repository"),
        ("repo", "no-such-branch", "t", "no branch, tag or commit named 'no-such-branch'"),
        ("repo", "--upload-pack=evil", "t", "is not a branch, tag or commit"),
        ("repo", None, "../escape", "must be letters, digits"),
        ("repo", None, "taken", "exists already"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(
    repo: Path, tmp_path: Path, where: str, ref: str | None, name: str, message: str
) -> None:
    roots = [str(tmp_path / "allowed")]
    (tmp_path / "allowed").mkdir()
    plain = tmp_path / "allowed" / "plain"
    plain.mkdir()
    inside = tmp_path / "allowed" / "repo"
    repo.rename(inside)
    (tmp_path / "ws" / "taken").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    source = {"outside": outside, "plain": plain, "repo": inside}[where]

    with pytest.raises(WorkspaceError, match=message.replace("(", r"\(")):
        worktree(str(source), ref, tmp_path / "ws", name, roots=roots)
    assert git(inside, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_credentials_in_urls_are_masked() -> None:
    text = "fatal: could not read from https://alice:s3cret@example.com/r.git and ssh://tok@h/x"
    assert mask_credentials(text) == (
        "fatal: could not read from https://***@example.com/r.git and ssh://***@h/x"
    )


# -- clones of remote repositories ---------------------------------------------------------------


def clone(url: str, ref: str | None, root: Path, name: str, policy: RemotePolicy) -> Workspace:
    """:func:`clone_workspace`, run to its end."""
    return asyncio.run(clone_workspace(url, ref, root, name, policy=policy))


def test_a_clone_is_checked_out_detached_at_the_ref_and_diffs_like_a_worktree(
    repo: Path, tmp_path: Path
) -> None:
    git(repo, "branch", "feature", "v1")
    policy = RemotePolicy(file_roots=(str(tmp_path),))
    url = repo.as_uri()
    root = tmp_path / "ws"

    at_head = clone(url, None, root, "head", policy)
    at_branch = clone(url, "feature", root, "branch", policy)
    at_tag = clone(url, "v1", root, "tag", policy)

    assert at_head.kind == "clone" and at_head.source == url
    assert at_head.base_commit == git(repo, "rev-parse", "HEAD").strip()
    assert at_branch.base_commit == at_tag.base_commit == git(repo, "rev-parse", "v1").strip()
    assert git(at_head.path, "status", "--porcelain=v1") == ""
    assert not (at_head.path / "staged.txt").exists()
    (at_head.path / "gone.txt").unlink()
    (at_head.path / "new.bin").write_bytes(BINARY)
    assert sorted(s.path for s in stat(at_head)) == ["gone.txt", "new.bin"]

    remove(at_head)
    assert not at_head.path.exists()
    assert at_branch.path.exists()  # the others stay


def test_a_failed_clone_leaves_no_folder_and_says_why(repo: Path, tmp_path: Path) -> None:
    policy = RemotePolicy(file_roots=(str(tmp_path),))
    root = tmp_path / "ws"
    with pytest.raises(WorkspaceError, match="no branch, tag or commit named 'nope'"):
        clone(repo.as_uri(), "nope", root, "t", policy)
    assert not (root / "t").exists()
    with pytest.raises(GitError, match="clone"):
        clone((tmp_path / "missing").as_uri(), None, root, "t", policy)
    assert not (root / "t").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ext::sh -c touch% /tmp/pwned", "names a git transport"),
        ("fd::3", "names a git transport"),
        ("http://example.com/r.git", "scheme 'http' is not allowed on this worker"),
        ("ftp://example.com/r.git", "scheme 'ftp' is not allowed"),
        ("https://alice:s3cret@example.com/r.git", "carries credentials"),
        ("https://ghp_token@github.com/o/r.git", "carries credentials"),
        ("https://elsewhere.org/o/r.git", "host 'elsewhere.org' is not allowed"),
        ("ssh://-oProxyCommand=evil/x", "is not a host name"),
        ("file:///etc/secrets.git", "outside the folders this worker may clone from"),
        ("-u evil", "starts with '-'"),
        (" https://example.com/r.git", "spaces or control characters"),
        ("relative/path", "neither a URL nor a local repository path"),
    ],
)
def test_urls_the_policy_does_not_allow_are_refused_with_the_rule(url: str, message: str) -> None:
    policy = RemotePolicy(hosts=frozenset({"example.com", "github.com"}), file_roots=("/srv",))
    with pytest.raises(WorkspaceError, match=re.escape(message)) as caught:
        check_remote_url(url, policy)
    assert "s3cret" not in str(caught.value) and "ghp_token" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/o/r.git",
        "ssh://git@example.com/o/r.git",
        "git@github.com:o/r.git",
        "file:///srv/repos/r.git",
    ],
)
def test_urls_the_policy_allows_pass(url: str) -> None:
    policy = RemotePolicy(hosts=frozenset({"example.com", "github.com"}), file_roots=("/srv",))
    assert check_remote_url(url, policy) == url


# -- taking a task's patch home: apply_patch, commit_patch -------------------------------------


def apply(checkout: Path, patch: bytes, *, check_only: bool = False) -> list[str]:
    """:func:`apply_patch`, run to its end."""
    return asyncio.run(apply_patch(checkout, patch, check_only=check_only))


def commit(repo: Path, base: str, patch: bytes, branch: str, message: str = "m") -> str:
    """:func:`commit_patch`, run to its end."""
    return asyncio.run(commit_patch(repo, base, patch, branch, message))


def a_task(repo: Path, tmp_path: Path) -> tuple[Workspace, bytes]:
    """A task's workspace of ``repo`` at its HEAD after a turn that edited, deleted, added
    (in a new folder) and rewrote a binary file, and added a binary file; and its patch."""
    ws = worktree(str(repo), None, tmp_path / "ws", "task", roots=[str(tmp_path)])
    (ws.path / "keep.txt").write_text("one\n2\nthree\nfour\nfive\n")
    (ws.path / "gone.txt").unlink()
    (ws.path / "logo.bin").write_bytes(BINARY[::-1] + b"\0tail")
    (ws.path / "new dir").mkdir()
    (ws.path / "new dir" / "added file.py").write_text("print('new')\n")
    (ws.path / "new.bin").write_bytes(BINARY[:300])
    return ws, diff(ws)


TOUCHED = ["gone.txt", "keep.txt", "logo.bin", "new dir/added file.py", "new.bin"]


def clone_at(repo: Path, commit: str, where: Path) -> Path:
    """The user's own clone of ``repo``, checked out at ``commit`` on branch ``mine``."""
    git(where.parent, "clone", "-q", str(repo), str(where))
    git(where, "checkout", "-q", "-b", "mine", commit)
    return where


def test_a_patch_applies_to_a_checkout_at_its_base_byte_for_byte(
    repo: Path, tmp_path: Path
) -> None:
    ws, patch = a_task(repo, tmp_path)
    mine = clone_at(repo, ws.base_commit, tmp_path / "mine")
    untouched = tree_of(mine)

    assert sorted(apply(mine, patch, check_only=True)) == TOUCHED
    assert tree_of(mine) == untouched  # a check writes nothing
    assert sorted(apply(mine, patch)) == TOUCHED

    assert tree_of(mine) == tree_of(ws.path)
    assert not (mine / "gone.txt").exists()
    assert (mine / "new.bin").read_bytes() == BINARY[:300]


def test_a_patch_applies_from_a_subfolder_and_to_a_plain_folder(repo: Path, tmp_path: Path) -> None:
    ws, patch = a_task(repo, tmp_path)
    mine = clone_at(repo, ws.base_commit, tmp_path / "mine")
    (mine / "sub").mkdir()
    assert sorted(apply(mine / "sub", patch)) == TOUCHED  # paths are the top level's
    (mine / "sub").rmdir()
    assert tree_of(mine) == tree_of(ws.path)

    plain = tmp_path / "plain"  # the base's files, no git at all
    shutil.copytree(clone_at(repo, ws.base_commit, tmp_path / "c2"), plain)
    shutil.rmtree(plain / ".git")
    assert sorted(apply(plain, patch)) == TOUCHED
    assert tree_of(plain) == tree_of(ws.path)


LONG = "".join(f"line {n}\n" for n in range(1, 11))


def with_long_file(repo: Path) -> None:
    """Commit ``long.txt`` (ten lines) in ``repo``, its user's edits set aside and back."""
    git(repo, "stash", "-q")
    (repo / "long.txt").write_text(LONG)
    git(repo, "add", "long.txt")
    git(repo, "commit", "-q", "-m", "long")
    git(repo, "stash", "pop", "-q")


def test_a_checkout_that_moved_on_gets_a_three_way_merge(repo: Path, tmp_path: Path) -> None:
    with_long_file(repo)
    ws = worktree(str(repo), None, tmp_path / "ws", "task", roots=[str(tmp_path)])
    (ws.path / "long.txt").write_text(LONG.replace("line 2\n", "line two, by codex\n"))
    patch = diff(ws)
    mine = clone_at(repo, ws.base_commit, tmp_path / "mine")
    # The user changed line 5, which the hunk has as context: a plain apply cannot.
    (mine / "long.txt").write_text(LONG.replace("line 5\n", "line five, mine\n"))
    git(mine, "commit", "-q", "-am", "mine")
    (tmp_path / "p.patch").write_bytes(patch)
    plain = subprocess.run(["git", "apply", "--check", str(tmp_path / "p.patch")], cwd=mine)
    assert plain.returncode != 0

    assert apply(mine, patch, check_only=True) == ["long.txt"]
    assert apply(mine, patch) == ["long.txt"]

    merged = LONG.replace("line 2\n", "line two, by codex\n")
    assert (mine / "long.txt").read_text() == merged.replace("line 5\n", "line five, mine\n")


def test_a_conflict_names_the_files_and_how_to_resolve_or_undo(repo: Path, tmp_path: Path) -> None:
    ws, patch = a_task(repo, tmp_path)
    mine = clone_at(repo, ws.base_commit, tmp_path / "mine")
    (mine / "keep.txt").write_text("one\nTWO, mine\nthree\nfour\n")
    git(mine, "commit", "-q", "-am", "mine")
    before = tree_of(mine)

    with pytest.raises(WorkspaceError, match="would conflict") as checked:
        apply(mine, patch, check_only=True)
    assert "keep.txt" in str(checked.value)
    assert tree_of(mine) == before
    with pytest.raises(WorkspaceError) as caught:
        apply(mine, patch)

    message = str(caught.value)
    assert "conflicts with your checkout" in message and "in 1 file: keep.txt." in message
    assert "Resolve the markers and `git add`" in message
    assert "<<<<<<< ours" in (mine / "keep.txt").read_text()
    assert (mine / "new.bin").read_bytes() == BINARY[:300]  # the rest is applied
    # The undo it names puts the checkout back as it was.
    assert message.endswith(
        "`git checkout HEAD -- gone.txt keep.txt logo.bin` and "
        "`git rm -f -- 'new dir/added file.py' new.bin`"
    )
    git(mine, "checkout", "HEAD", "--", "gone.txt", "keep.txt", "logo.bin")
    git(mine, "rm", "-q", "-f", "--", "new dir/added file.py", "new.bin")
    assert tree_of(mine) == before
    assert git(mine, "status", "--porcelain") == ""


def test_patches_that_cannot_apply_are_refused_with_a_reason(repo: Path, tmp_path: Path) -> None:
    ws, patch = a_task(repo, tmp_path)
    mine = clone_at(repo, ws.base_commit, tmp_path / "mine")
    with pytest.raises(WorkspaceError, match="the task changed nothing"):
        apply(mine, b"")
    with pytest.raises(WorkspaceError, match="not one git can read"):
        apply(mine, b"this is not a patch\n")
    with pytest.raises(WorkspaceError, match="is not a folder"):
        apply(tmp_path / "missing", patch)
    # An edit the user has not committed, where the patch changes: no merge base to merge
    # with, and the plain apply does not fit.
    (mine / "keep.txt").write_text("entirely\ndifferent\n")
    with pytest.raises(WorkspaceError, match="the patch does not apply to .*keep.txt") as caught:
        apply(mine, patch)
    assert "`codex-tui branch`" in str(caught.value)
    assert (mine / "gone.txt").exists() and not (mine / "new.bin").exists()  # all or nothing
    assert git(mine, "status", "--porcelain") == " M keep.txt\n"


def commit_tree(repo: Path, commit: str) -> dict[str, tuple[bytes, bool]]:
    """The files of ``commit`` as :func:`tree_of` has them, checked out in a scratch worktree."""
    where = repo.parent / f"tree-{commit[:8]}"
    git(repo, "worktree", "add", "-q", "--detach", str(where), commit)
    try:
        return tree_of(where)
    finally:
        git(repo, "worktree", "remove", "--force", str(where))


def head_of(repo: Path) -> tuple[str, str]:
    """What HEAD is: the ref it names, and its commit."""
    return (repo / ".git" / "HEAD").read_text(), git(repo, "rev-parse", "HEAD").strip()


def test_a_branch_holds_exactly_the_patch_and_nothing_the_user_has_is_touched(
    repo: Path, tmp_path: Path
) -> None:
    ws, patch = a_task(repo, tmp_path)
    git(repo, "stash", "-q")  # the user goes on: a new commit, then their edits back
    (repo / "later.txt").write_text("after the task started\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "-q", "-m", "later")
    git(repo, "stash", "pop", "-q")
    before, head = user_state(repo), head_of(repo)

    made = commit(repo, ws.base_commit, patch, "codex/task", "add things\n\ncodex-tui task t")

    assert git(repo, "rev-parse", "refs/heads/codex/task").strip() == made
    assert git(repo, "rev-parse", f"{made}^").strip() == ws.base_commit
    assert git(repo, "log", "-1", "--format=%B", made).strip() == "add things\n\ncodex-tui task t"
    assert commit_tree(repo, made) == tree_of(ws.path)
    assert user_state(repo) == before and head_of(repo) == head


def test_a_branch_is_never_overwritten_nor_badly_named(repo: Path, tmp_path: Path) -> None:
    ws, patch = a_task(repo, tmp_path)
    git(repo, "branch", "codex/task", "v1")
    old = git(repo, "rev-parse", "codex/task").strip()

    with pytest.raises(WorkspaceError, match="branch 'codex/task' exists already"):
        commit(repo, ws.base_commit, patch, "codex/task")
    assert git(repo, "rev-parse", "codex/task").strip() == old
    for bad in ("two..dots", "-x", "has space", "ends.lock", "HEAD", "@{-1}", ""):
        with pytest.raises(WorkspaceError, match="is not a valid branch name"):
            commit(repo, ws.base_commit, patch, bad)
    with pytest.raises(WorkspaceError, match="the task changed nothing"):
        commit(repo, ws.base_commit, b"", "codex/empty")
    assert "codex/empty" not in git(repo, "branch", "--list")
    assert default_branch_name("t0123") == "codex/t0123"


def test_a_missing_base_commit_says_to_fetch_it(repo: Path, tmp_path: Path) -> None:
    ws, patch = a_task(repo, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    (other / "x.txt").write_text("x\n")
    git(other, "add", "x.txt")
    git(other, "commit", "-q", "-m", "x")

    with pytest.raises(WorkspaceError) as caught:
        commit(other, ws.base_commit, patch, "codex/task")
    short = ws.base_commit[:12]
    assert f"does not have the task's base commit {short}" in str(caught.value)
    assert f"`git fetch <remote>` there first, or run this in a clone that has commit {short}" in (
        str(caught.value)
    )
    with pytest.raises(WorkspaceError, match="is not a full commit id"):
        commit(other, "HEAD", patch, "codex/task")
    assert git(other, "branch", "--list").split() == ["*", "main"]


def test_commits_fall_back_to_a_codex_tui_identity_only_when_none_is_set(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, patch = a_task(repo, tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # no global configuration
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for role in ("AUTHOR", "COMMITTER"):
        for field in ("NAME", "EMAIL"):
            monkeypatch.delenv(f"GIT_{role}_{field}", raising=False)

    fallback = commit(repo, ws.base_commit, patch, "codex/a")
    git(repo, "config", "user.name", "Ada")
    git(repo, "config", "user.email", "ada@example.com")
    configured = commit(repo, ws.base_commit, patch, "codex/b")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "From Env")
    from_env = commit(repo, ws.base_commit, patch, "codex/c")

    def who(commit: str) -> str:
        return subprocess.run(
            ["git", "log", "-1", "--format=%an <%ae> / %cn <%ce>", commit],
            cwd=repo, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    assert who(fallback) == "codex-tui <codex-tui@localhost> / codex-tui <codex-tui@localhost>"
    assert who(configured) == "Ada <ada@example.com> / Ada <ada@example.com>"
    assert who(from_env) == "From Env <ada@example.com> / Ada <ada@example.com>"


def test_a_branch_can_be_made_in_a_bare_clone(repo: Path, tmp_path: Path) -> None:
    ws, patch = a_task(repo, tmp_path)
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    made = commit(bare, ws.base_commit, patch, "codex/task")
    assert git(bare, "rev-parse", "codex/task").strip() == made


def _has_exited(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie, or gone)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            state = file.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_cancel_that_comes_as_git_exits_is_never_lost(repo: Path, tmp_path: Path) -> None:
    # On the worker's event loop (uvloop), cancel a diff at each of the loop turns around the
    # moment its first git exits; every cancel that lands must end it with CancelledError.
    # Python 3.11's wait_for dropped one that came as git's output was complete: the diff
    # then went on, and the reporter stopping at a turn's end waited for it forever.
    uvloop = pytest.importorskip("uvloop")
    workspace = worktree(str(repo), None, tmp_path / "ws", "t1", roots=[str(tmp_path)])
    (workspace.path / "new.txt").write_text("new\n")

    async def cancel_after(turns: int) -> str:
        work = asyncio.ensure_future(diff_stat(workspace))
        deadline = time.monotonic() + 30
        while not RUNNING_GIT_PIDS:
            assert time.monotonic() < deadline, "git did not start within 30 s"
            await asyncio.sleep(0)
        pid = min(RUNNING_GIT_PIDS)
        while not _has_exited(pid):
            assert time.monotonic() < deadline, f"git (pid {pid}) did not exit within 30 s"
            await asyncio.sleep(0)
        for _ in range(turns):
            await asyncio.sleep(0)
        if not work.cancel():
            return "finished first"
        try:
            await work
        except asyncio.CancelledError:
            return "cancelled"
        return "cancel lost"

    async def sweep() -> list[tuple[int, str]]:
        return [(turns, await cancel_after(turns)) for turns in range(12) for _ in range(3)]

    outcomes = uvloop.run(sweep())
    assert not [o for o in outcomes if o[1] == "cancel lost"], outcomes
    assert any(o[1] == "cancelled" for o in outcomes), outcomes
