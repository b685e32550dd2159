"""Provides a task's own git checkout (its workspace) and the complete diff of what changed in
it, with git's command line (docs/reliability.md W1–W5; the git facts behind it are in
docs/codex-facts.md, "Git workspaces").

A workspace of a local repository is a ``git worktree add --detach`` of it at the requested
commit, under the worker's workspace root: it shares the repository's objects, never touches the
user's own working tree or index, and several tasks on one repository each get their own. Codex
cannot write ``.git`` under its ``workspace-write`` sandbox, so whatever it changes stays
uncommitted in the workspace; the diff against the base commit is taken with a throw-away copy
of the workspace's index, so that untracked files, deletions and binary files are all in it and
no index anyone uses is modified (docs/codex-facts.md, "Git workspaces").

The worker makes and reads workspaces with these; clients use the same git layer to take a
task's patch home (:func:`apply_patch`, :func:`commit_patch`). The worker's zombie reaper
(``server_client.worker.procs.reap_orphan_zombies``) leaves the git processes started here to
asyncio, which needs their exit status (:data:`RUNNING_GIT_PIDS`, :func:`git_starting`).

Every git command runs with the worker's own environment (an SSH agent, a credential helper),
never prompts (``GIT_TERMINAL_PROMPT=0``), and its errors are reported with any credentials in
URLs masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from server_client.paths import WorkdirError, is_within, resolve_workdir
from server_client.text import one_line

__all__ = [
    "FALLBACK_IDENTITY",
    "RUNNING_GIT_PIDS",
    "FileStat",
    "GitError",
    "RemotePolicy",
    "Workspace",
    "WorkspaceError",
    "apply_patch",
    "check_remote_url",
    "clone_workspace",
    "commit_patch",
    "create_worktree",
    "default_branch_name",
    "diff_stat",
    "disk_usage",
    "full_diff",
    "git_starting",
    "has_commit",
    "mask_credentials",
    "remove_workspace",
    "url_scheme_and_host",
]

#: Longest time one git command may take (s) before it is killed.
GIT_TIMEOUT_S = 300.0

#: ``user:password@`` (or ``token@``) in a URL: masked in every message.
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")

#: pids of the git commands running now, until asyncio has their exit status: a zombie reaper
#: must leave them alone (``server_client.worker.procs.reap_orphan_zombies`` does).
RUNNING_GIT_PIDS: set[int] = set()

#: git commands being started (their pid not yet in :data:`RUNNING_GIT_PIDS`).
_starting = 0


def git_starting() -> bool:
    """True while a git command of this module is being started: a zombie reaper must wait,
    since its pid is not yet in :data:`RUNNING_GIT_PIDS`."""
    return _starting > 0


#: Settings every git command gets: no prompts, no pager, no optional index refreshes.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_OPTIONAL_LOCKS": "0"}


class WorkspaceError(RuntimeError):
    """A workspace cannot be made, read or removed; the message says why and is safe to show
    (credentials masked)."""


class GitError(WorkspaceError):
    """A git command failed: ``args`` (without credentials), its exit code and its stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = mask_credentials(stderr.strip())
        shown = mask_credentials(" ".join(args))
        super().__init__(f"git {shown} failed (exit {returncode}): {self.stderr}")


@dataclass(frozen=True)
class Workspace:
    """A task's checkout.

    Attributes:
        path: The checkout codex runs in (absolute).
        base_commit: The commit it was made at (40 hex digits): what its diff is against.
        source: The repository it was made from: the real path of a local repository, or the
            URL a clone was made from.
        kind: ``worktree`` (of a local repository) or ``clone`` (of a remote one).
    """

    path: Path
    base_commit: str
    source: str
    kind: Literal["worktree", "clone"] = "worktree"


@dataclass(frozen=True)
class RemotePolicy:
    """Which remote repositories a worker may clone (docs/reliability.md W5).

    Attributes:
        schemes: URL schemes allowed (``https``, ``ssh``, ``git``, ``http``); an scp-like
            address (``git@host:owner/repo.git``) counts as ``ssh``. ``file`` is allowed only
            through ``file_roots``. Git's other transports (``ext::``, ``fd::``) never are.
        hosts: Hosts allowed (lower case); None: any host.
        file_roots: Folders whose repositories may be cloned by ``file://`` URL (real paths);
            empty: none.
    """

    schemes: frozenset[str] = frozenset({"https", "ssh"})
    hosts: frozenset[str] | None = None
    file_roots: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileStat:
    """One changed file of a diff: lines added and removed (None for a binary file)."""

    path: str
    added: int | None
    removed: int | None


def mask_credentials(text: str) -> str:
    """``text`` with the user-info part of every URL in it (``user:token@``) replaced by
    ``***@``."""
    return _CREDENTIALS.sub("***@", text)


async def _git(
    *args: str,
    cwd: Path | str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = GIT_TIMEOUT_S,
    stdin: bytes | None = None,
) -> bytes:
    """Run ``git args`` in ``cwd``; its stdout. ``stdin`` is fed to its stdin (then closed);
    None: stdin is ``/dev/null``, so git can never wait for it.

    Raises:
        GitError: it exited non-zero.
        WorkspaceError: git is not installed, or it ran longer than ``timeout_s`` (killed).
    """
    returncode, out, err = await _run_git(*args, cwd=cwd, env=env, timeout_s=timeout_s, stdin=stdin)
    if returncode != 0:
        raise GitError(args, returncode, err.decode("utf-8", "replace"))
    return out


async def _run_git(
    *args: str,
    cwd: Path | str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = GIT_TIMEOUT_S,
    stdin: bytes | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``git args`` in ``cwd`` as :func:`_git` does: its exit code (negative: killed by
    that signal), stdout and stderr, whatever the exit code.

    Raises:
        WorkspaceError: git is not installed, or it ran longer than ``timeout_s`` (killed).
    """
    global _starting
    full_env = {**os.environ, **_GIT_ENV, **(env or {})}
    _starting += 1
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=str(cwd),
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        RUNNING_GIT_PIDS.add(proc.pid)
    except FileNotFoundError:
        raise WorkspaceError("git is not installed here (install git)") from None
    finally:
        _starting -= 1
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result and drops
        # a cancel that comes as git exits, so a caller stopping this work (the diff
        # reporter at a turn's end) would wait for it forever.
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise WorkspaceError(
            f"git {mask_credentials(' '.join(args))} took longer than {timeout_s:.0f} s"
        ) from None
    finally:
        RUNNING_GIT_PIDS.discard(proc.pid)
    return 0 if proc.returncode == 0 else (proc.returncode or 1), out, err


async def _commit_of(repo: Path, ref: str) -> str:
    """The commit ``ref`` names in ``repo`` (40 hex digits).

    Raises:
        WorkspaceError: no such commit.
    """
    if ref.startswith("-"):
        raise WorkspaceError(f"ref {ref!r} is not a branch, tag or commit")
    try:
        out = await _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=repo)
    except GitError:
        raise WorkspaceError(f"{repo} has no branch, tag or commit named {ref!r}") from None
    return out.decode().strip()


async def create_worktree(
    repo: str, ref: str | None, workspace_root: Path, name: str, *, roots: list[str]
) -> Workspace:
    """Make a workspace of the local repository ``repo`` at ``ref``: ``git worktree add
    --detach`` at ``workspace_root/name``.

    Args:
        repo: An absolute path inside the repository (its top level is used).
        ref: A branch, tag or commit; None: the repository's HEAD.
        workspace_root: Where workspaces go (created if missing).
        name: The workspace's folder name (the task id): letters, digits, ``-`` and ``_``.
        roots: The worker's allowed workdir roots; ``repo`` must lie inside one.

    Returns:
        The new workspace (``source`` is the repository's real top level).

    Raises:
        WorkspaceError: ``repo`` is outside the roots, not a git repository, ``ref`` names no
            commit, the folder exists already, or git failed.
    """
    _check_name(name)
    try:
        real = resolve_workdir(repo, roots, label="repository")
    except WorkdirError as exc:
        raise WorkspaceError(str(exc)) from None
    try:
        top = Path((await _git("rev-parse", "--show-toplevel", cwd=real)).decode().strip())
    except GitError:
        raise WorkspaceError(f"{repo} is not inside a git repository") from None
    commit = await _commit_of(top, ref or "HEAD")
    path = workspace_root / name
    if not await asyncio.to_thread(_claim_folder, workspace_root, path):
        raise WorkspaceError(f"workspace {path} exists already")
    await _git("worktree", "add", "--detach", "--quiet", str(path), commit, cwd=top)
    return Workspace(path=path, base_commit=commit, source=str(top))


#: An scp-like git address: ``[user@]host:path`` (no scheme, no slash before the colon).
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s]+):(?!//)(?P<path>.+)$")

#: Settings of every clone: git's command transports off, no submodules.
_CLONE_CONFIG = (
    "-c", "protocol.ext.allow=never",
    "-c", "protocol.fd.allow=never",
    "-c", "submodule.recurse=false",
)  # fmt: skip


def url_scheme_and_host(url: str) -> tuple[str, str]:
    """The scheme and host (both lower case; either may be empty) of a repository URL; an
    scp-like ``[user@]host:path`` address has the scheme ``ssh``."""
    scp = _SCP_LIKE.match(url) if "://" not in url else None
    if scp is not None:
        return "ssh", scp["host"].lower()
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "")


def check_remote_url(url: str, policy: RemotePolicy) -> str:
    """``url`` if ``policy`` lets the worker clone it.

    Raises:
        WorkspaceError: why not, naming the rule (the scheme, the host, the folder, a
            password or token in the URL, or a transport git must never use).
    """
    if not url or url != url.strip() or url.startswith("-") or any(c < " " for c in url):
        raise WorkspaceError(
            "repository URL is empty, starts with '-' or has spaces or control characters"
        )
    if "::" in url.split("/", 1)[0]:
        raise WorkspaceError(
            f"repository URL {mask_credentials(url)!r} names a git transport (ext::, fd::); "
            "only plain URLs can be cloned"
        )
    scheme, host = url_scheme_and_host(url)
    if _SCP_LIKE.match(url) is None or "://" in url:
        parts = urlsplit(url)
        password = parts.password
        if not scheme:
            raise WorkspaceError(
                f"{url!r} is neither a URL nor a local repository path (use an absolute path "
                "for a repository on the worker)"
            )
        if password is not None or (scheme in ("https", "http") and parts.username):
            raise WorkspaceError(
                "repository URL carries credentials; give them to the worker instead (its SSH "
                "agent or git credential helper), so they never reach the server"
            )
    if scheme == "file":
        path = os.path.realpath(urlsplit(url).path)
        roots = [os.path.realpath(root) for root in policy.file_roots]
        if not any(is_within(path, root) for root in roots):
            raise WorkspaceError(
                f"file:// repository {path} is outside the folders this worker may clone from"
            )
        return url
    if scheme not in policy.schemes:
        allowed = ", ".join(sorted(policy.schemes)) or "none"
        raise WorkspaceError(
            f"repository URL scheme {scheme!r} is not allowed on this worker (allowed: {allowed})"
        )
    if host.startswith("-"):
        raise WorkspaceError(f"repository host {host!r} is not a host name")
    if policy.hosts is not None and host not in policy.hosts:
        raise WorkspaceError(f"repository host {host!r} is not allowed on this worker")
    return url


async def clone_workspace(
    url: str, ref: str | None, workspace_root: Path, name: str, *, policy: RemotePolicy
) -> Workspace:
    """Make a workspace by cloning ``url`` (after :func:`check_remote_url`) and checking out
    ``ref`` detached: a branch or tag of the remote, or a commit; None: the remote's HEAD.

    Submodules are not cloned; git asks for no password (the worker's SSH agent or
    credential helper must have what a private remote needs).

    Raises:
        WorkspaceError: the policy refuses ``url``, the clone failed (credentials masked in
            the message), ``ref`` names no commit, or the folder exists already.
    """
    _check_name(name)
    check_remote_url(url, policy)
    path = workspace_root / name
    if not await asyncio.to_thread(_claim_folder, workspace_root, path):
        raise WorkspaceError(f"workspace {path} exists already")
    try:
        await _git(*_CLONE_CONFIG, "clone", "--no-checkout", "--quiet", "--", url, str(path),
                   cwd=workspace_root)  # fmt: skip
        commit = await _remote_commit(path, ref)
        await _git("checkout", "--detach", "--quiet", commit, cwd=path)
    except WorkspaceError:
        await asyncio.to_thread(_delete_folder, path)
        raise
    return Workspace(path=path, base_commit=commit, source=mask_credentials(url), kind="clone")


async def _remote_commit(clone: Path, ref: str | None) -> str:
    """The commit ``ref`` names in a fresh clone: the remote's HEAD for None, else a remote
    branch (``origin/REF``), a tag or a commit."""
    if ref is None:
        return await _commit_of(clone, "HEAD")
    if ref.startswith("-"):
        raise WorkspaceError(f"ref {ref!r} is not a branch, tag or commit")
    for candidate in (f"origin/{ref}", ref):
        with contextlib.suppress(WorkspaceError):
            return await _commit_of(clone, candidate)
    raise WorkspaceError(f"the repository has no branch, tag or commit named {ref!r}")


def _check_name(name: str) -> None:
    """Refuse a workspace folder name that is not letters, digits, ``-`` and ``_``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", name):
        raise WorkspaceError(f"workspace name {name!r} must be letters, digits, - and _")


def _claim_folder(root: Path, path: Path) -> bool:
    """Make ``root`` if missing; False when ``path`` exists already (git makes it)."""
    root.mkdir(parents=True, exist_ok=True)
    return not path.exists()


def _copy_index(real_index: Path, scratch: str) -> None:
    """Copy ``real_index`` to ``scratch``, or remove ``scratch`` when there is no index yet
    (git then starts an empty one)."""
    if real_index.exists():
        shutil.copyfile(real_index, scratch)
    else:
        os.unlink(scratch)


@contextlib.asynccontextmanager
async def _scratch_index(workspace: Path):  # type: ignore[no-untyped-def]
    """A temporary copy of ``workspace``'s index, every change of the work tree added to it
    (``git add --all``: files ``.gitignore`` names stay out, as in ``git status``): the
    environment that points git at it. The real index is never written."""
    index = (await _git("rev-parse", "--git-path", "index", cwd=workspace)).decode().strip()
    real_index = Path(index) if os.path.isabs(index) else workspace / index
    fd, scratch = tempfile.mkstemp(prefix="codex-tui-index-")
    os.close(fd)
    try:
        await asyncio.to_thread(_copy_index, real_index, scratch)
        env = {"GIT_INDEX_FILE": scratch}
        await _git("add", "--all", "--", ".", cwd=workspace, env=env)
        yield env
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)


async def _diff_against_base(workspace: Workspace, *options: str) -> bytes:
    """``git diff --cached --no-renames OPTIONS BASE`` of every change in ``workspace``,
    through a scratch index (:func:`_scratch_index`).

    Raises:
        WorkspaceError: the workspace is gone, or git failed.
    """
    if not await asyncio.to_thread(workspace.path.is_dir):
        raise WorkspaceError(f"workspace {workspace.path} does not exist")
    async with _scratch_index(workspace.path) as env:
        return await _git(
            "diff", "--cached", "--no-renames", *options, workspace.base_commit, "--",
            cwd=workspace.path, env=env,
        )  # fmt: skip


async def full_diff(workspace: Workspace) -> bytes:
    """Everything that changed in ``workspace`` since its base commit, as a patch ``git apply
    --binary`` accepts: edits, new (untracked) files, deletions, modes and binary files.

    Raises:
        WorkspaceError: the workspace is gone, or git failed.
    """
    return await _diff_against_base(workspace, "--binary", "--no-color", "--no-ext-diff")


async def diff_stat(workspace: Workspace) -> list[FileStat]:
    """Per changed file of :func:`full_diff`, lines added and removed (None for binary).

    Raises:
        WorkspaceError: the workspace is gone, or git failed.
    """
    out = await _diff_against_base(workspace, "--numstat", "-z")
    stats = []
    for record in out.split(b"\0"):
        if not record:
            continue
        added, removed, path = record.split(b"\t", 2)
        stats.append(
            FileStat(
                path=path.decode("utf-8", "replace"),
                added=None if added == b"-" else int(added),
                removed=None if removed == b"-" else int(removed),
            )
        )
    return stats


async def remove_workspace(workspace: Workspace) -> None:
    """Delete ``workspace``; a worktree's repository forgets it (``git worktree remove
    --force``, then ``git worktree prune``; a worktree already deleted is only pruned).

    Raises:
        WorkspaceError: git failed and the folder is still there.
    """
    if workspace.kind == "clone":  # nothing outside the folder knows it
        if not await asyncio.to_thread(_delete_folder, workspace.path):
            raise WorkspaceError(f"workspace {workspace.path} could not be deleted")
        return
    source = Path(workspace.source)
    if await asyncio.to_thread(workspace.path.exists):
        try:
            await _git("worktree", "remove", "--force", "--force", str(workspace.path), cwd=source)
        except GitError:
            if not await asyncio.to_thread(_delete_folder, workspace.path):
                raise
    if await asyncio.to_thread(source.is_dir):
        await _git("worktree", "prune", cwd=source)


def _delete_folder(path: Path) -> bool:
    """Delete ``path`` and what it holds; True when it is gone."""
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()


def disk_usage(path: Path) -> int:
    """Bytes the files under ``path`` take (their sizes; links not followed; 0 if missing)."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for file in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, file)).st_size
    return total


# -- taking a task's patch home ------------------------------------------------------------------

#: Who commits when the repository names nobody (``user.name``/``user.email`` unset).
FALLBACK_IDENTITY = ("codex-tui", "codex-tui@localhost")

#: A full commit id (SHA-1 or SHA-256).
_COMMIT_ID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")

#: How many file names a message lists before it says how many more there are.
_LISTED_FILES = 20


def default_branch_name(task_id: str) -> str:
    """The branch :func:`commit_patch` makes for a task when the user names none:
    ``codex/<task_id>``."""
    return f"codex/{task_id}"


def _shown(path: str) -> str:
    """A path read with ``surrogateescape`` as text safe to show: bytes that are not UTF-8
    as U+FFFD, control characters visible."""
    return one_line(path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def _listing(paths: Sequence[str]) -> str:
    """``paths`` for a message: comma-separated, control characters shown visibly, at most
    :data:`_LISTED_FILES` of them and then how many more."""
    shown = ", ".join(_shown(path) for path in paths[:_LISTED_FILES])
    more = len(paths) - _LISTED_FILES
    return f"{shown} and {more} more" if more > 0 else shown


def _shell_words(paths: Sequence[str]) -> str:
    """``paths`` quoted for a shell command in a message (control characters visible)."""
    return " ".join(shlex.quote(_shown(path)) for path in paths)


async def _patch_paths(patch: bytes, cwd: Path) -> list[str]:
    """The paths ``patch`` touches, in its order (``git apply --numstat -z``: nothing is
    applied). A rename or copy gives its new path.

    Raises:
        WorkspaceError: ``patch`` is empty, or not a patch git can read.
    """
    if not patch.strip():
        raise WorkspaceError("the task changed nothing: its patch is empty")
    try:
        out = await _git("apply", "--numstat", "-z", "-", cwd=cwd, stdin=patch)
    except GitError as exc:
        raise WorkspaceError(f"the patch is not one git can read: {exc.stderr}") from None
    records = out.split(b"\0")
    paths: list[str] = []
    i = 0
    while i < len(records):
        record = records[i]
        i += 1
        if not record:
            continue
        path = record.split(b"\t", 2)[2]
        if not path:  # a rename or copy: "added\tremoved\t\0from\0to\0"
            path = records[i + 1]
            i += 2
        paths.append(path.decode("utf-8", "surrogateescape"))
    return paths


async def _checkout_top(checkout: Path) -> Path | None:
    """The top level of the git working tree ``checkout`` is in; None when it is in none.

    Raises:
        WorkspaceError: ``checkout`` is not a folder, or it is inside a ``.git`` folder or a
            bare repository (no working tree to apply to).
    """
    if not await asyncio.to_thread(checkout.is_dir):
        raise WorkspaceError(f"{checkout} is not a folder (give the checkout to apply to)")
    try:
        out = await _git("rev-parse", "--is-inside-work-tree", "--show-toplevel", cwd=checkout)
    except GitError:
        try:
            await _git("rev-parse", "--git-dir", cwd=checkout)
        except GitError:
            return None  # a plain folder
        raise WorkspaceError(
            f"{checkout} is inside a git folder or a bare repository, not a checkout"
        ) from None
    lines = out.decode("utf-8", "surrogateescape").splitlines()
    if lines[0] != "true":
        raise WorkspaceError(
            f"{checkout} is inside a git folder or a bare repository, not a checkout"
        )
    return Path(lines[1])


async def _unmerged(top: Path, paths: Sequence[str]) -> list[str]:
    """Those of ``paths`` that have unmerged (conflicted) entries in ``top``'s index."""
    out = await _git("ls-files", "--unmerged", "-z", cwd=top)
    conflicted = set()
    for record in out.split(b"\0"):
        if record:
            conflicted.add(record.split(b"\t", 1)[1].decode("utf-8", "surrogateescape"))
    return [path for path in paths if path in conflicted]


async def _in_head(top: Path, paths: Sequence[str]) -> set[str]:
    """Those of ``paths`` that HEAD of ``top`` has (none when there is no commit yet)."""
    try:
        out = await _git(
            "ls-tree", "-r", "-z", "--name-only", "HEAD", "--", *paths,
            cwd=top, env={"GIT_LITERAL_PATHSPECS": "1"},
        )  # fmt: skip
    except GitError:
        return set()
    return {name.decode("utf-8", "surrogateescape") for name in out.split(b"\0") if name}


async def _conflict_error(top: Path, paths: list[str], conflicted: list[str]) -> WorkspaceError:
    """The error for a three-way apply that left ``conflicted`` files: which, and what to do
    (resolve, or undo the whole apply file by file)."""
    count = f"{len(conflicted)} file{'s' if len(conflicted) != 1 else ''}"
    message = (
        f"the patch conflicts with your checkout {top} in {count}: {_listing(conflicted)}. "
        "Those files now hold conflict markers (<<<<<<< ours ... >>>>>>> theirs) and the rest "
        "of the patch is applied and staged. Resolve the markers and `git add` the files; or "
        "undo the whole apply"
    )
    if len(paths) > _LISTED_FILES:
        return WorkspaceError(
            f"{message} with `git checkout HEAD -- FILE...` for each file it touched "
            "(`git status` lists them), deleting the ones it added"
        )
    had = await _in_head(top, paths)
    steps = []
    if old := [path for path in paths if path in had]:
        steps.append(f"`git checkout HEAD -- {_shell_words(old)}`")
    if new := [path for path in paths if path not in had]:
        steps.append(f"`git rm -f -- {_shell_words(new)}`")
    return WorkspaceError(f"{message} with {' and '.join(steps)}")


async def apply_patch(checkout: Path, patch: bytes, *, check_only: bool = False) -> list[str]:
    """Apply a task's patch (``git diff --binary`` bytes, as :func:`full_diff` makes) to the
    user's ``checkout``; the paths it touches, relative to the checkout's top level.

    In a git checkout it is ``git apply --3way --binary`` at the top level: a file that
    changed since the task's base commit is merged three-way when the repository has the
    base's blobs, and the result is staged, as ``git apply --3way`` does. When that cannot
    be done without a conflict (a touched file has changes that are not staged, the
    repository lacks the blobs, or ``checkout`` is a plain folder), it is a plain ``git apply
    --binary`` to the files: all of it or nothing. git refuses paths that leave the checkout
    (``..``, ``.git``, through a symbolic link).

    Args:
        checkout: A folder: a git checkout (any folder inside it) or a plain folder.
        patch: The patch.
        check_only: Only say whether it applies (``git apply --check``); nothing is written.

    Returns:
        The touched paths, in the patch's order, to show (bytes that are not UTF-8 read as
        U+FFFD; control characters left as they are).

    Raises:
        WorkspaceError: the patch is empty ("the task changed nothing") or unreadable,
            ``checkout`` is not a folder or is a bare repository, the patch does not apply
            (git's reason), or it conflicts: then the conflicted files hold conflict markers,
            and the message lists them and says how to resolve them or undo the apply.
    """
    top = await _checkout_top(checkout)
    where = top or checkout
    paths = await _patch_paths(patch, where)
    plain = ("apply", "--binary", "--whitespace=nowarn")
    if check_only:
        try:
            await _git(*plain, "--check", "-", cwd=where, stdin=patch)
            return _for_showing(paths)
        except GitError as exc:
            if top is None:
                raise _does_not_apply(where, exc) from None
            direct = exc
        # git's --check --3way exits 0 even when the merge would conflict; its stderr says.
        try:
            err = await _git_stderr(*plain, "--3way", "--check", "-", cwd=where, stdin=patch)
        except GitError:
            raise _does_not_apply(where, direct) from None
        conflicts = re.findall(r"^Applied patch to '(.*)' with conflicts\.$", err, re.M)
        if conflicts:
            raise WorkspaceError(
                f"the patch would conflict with your checkout {where} in {_listing(conflicts)}"
                " (applying it leaves conflict markers in them to resolve)"
            )
        return _for_showing(paths)
    if top is not None:
        try:
            await _git(*plain, "--3way", "-", cwd=top, stdin=patch)
            return _for_showing(paths)
        except GitError:
            conflicted = await _unmerged(top, paths)
            if conflicted:
                raise await _conflict_error(top, paths, conflicted) from None
    try:
        await _git(*plain, "-", cwd=where, stdin=patch)
    except GitError as exc:
        raise _does_not_apply(where, exc) from None
    return _for_showing(paths)


def _for_showing(paths: list[str]) -> list[str]:
    """``paths`` read with ``surrogateescape`` as plain text (U+FFFD for bytes not UTF-8)."""
    return [path.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for path in paths]


def _does_not_apply(where: Path, exc: GitError) -> WorkspaceError:
    """The error for a patch git refuses to apply to ``where``: git's reason and the fix."""
    return WorkspaceError(
        f"the patch does not apply to {where}: {one_line(' '.join(exc.stderr.split()))}. "
        "Is it a checkout of the "
        "task's repository? `codex-tui branch` puts the change on a branch at the task's base "
        "commit instead"
    )


async def _git_stderr(*args: str, cwd: Path, stdin: bytes) -> str:
    """Run ``git args`` with ``stdin`` fed to it; what it wrote on stderr (decoded), which
    ``git apply --check --3way`` says a conflict on while it exits 0.

    Raises:
        GitError: it exited non-zero.
        WorkspaceError: git is not installed, or it timed out.
    """
    returncode, _out, err = await _run_git(*args, cwd=cwd, stdin=stdin)
    if returncode != 0:
        raise GitError(args, returncode, err.decode("utf-8", "replace"))
    return err.decode("utf-8", "replace")


async def _identity_env(repo: Path) -> dict[str, str]:
    """``GIT_AUTHOR_*``/``GIT_COMMITTER_*`` of :data:`FALLBACK_IDENTITY` for what neither the
    environment nor ``repo``'s configuration (``user.*``, ``author.*``, ``committer.*``)
    gives, so that a commit never fails for want of a name."""
    returncode, out, _err = await _run_git(
        "config", "--get-regexp", r"^(user|author|committer)\.(name|email)$", cwd=repo
    )
    configured = (
        {line.split(" ", 1)[0].lower() for line in out.decode("utf-8", "replace").splitlines()}
        if returncode == 0
        else set()
    )
    env = {}
    for role in ("author", "committer"):
        for field, fallback in zip(("name", "email"), FALLBACK_IDENTITY, strict=True):
            variable = f"GIT_{role.upper()}_{field.upper()}"
            if variable in os.environ:
                continue
            if {f"user.{field}", f"{role}.{field}"} & configured:
                continue
            env[variable] = fallback
    return env


async def commit_patch(
    repo: Path, base_commit: str, patch: bytes, branch: str, message: str
) -> str:
    """Make the new branch ``branch`` in ``repo`` whose one commit, on top of
    ``base_commit``, holds ``patch``; the new commit's id.

    Nothing the user works with is touched: not the working tree, not the index, not HEAD.
    The tree is built in a scratch index (``git read-tree BASE``, ``git apply --cached
    --binary``, ``git write-tree``), committed with ``git commit-tree -p BASE`` and the branch
    is created only if it does not exist (``git update-ref refs/heads/BRANCH NEW ""``), so an
    existing branch is never moved. When neither the environment nor the repository names
    an author or committer, :data:`FALLBACK_IDENTITY` does.

    Args:
        repo: A folder of the repository (a checkout, anywhere in it, or a bare repository).
        base_commit: The task's base commit (40 or 64 hex digits).
        patch: The task's patch (``git diff --binary`` against ``base_commit``).
        branch: The new branch's name, short (``codex/abc``, not ``refs/heads/...``).
        message: The commit message.

    Returns:
        The new commit's id (hex).

    Raises:
        WorkspaceError: ``repo`` is not a git repository; ``base_commit`` is not a commit id
            or ``repo`` lacks it (the message says to fetch it); ``branch`` is not a valid
            name or exists already; the patch is empty or does not apply to the base.
    """
    if not _COMMIT_ID.fullmatch(base_commit):
        raise WorkspaceError(f"base commit {base_commit!r} is not a full commit id")
    if not await asyncio.to_thread(repo.is_dir):
        raise WorkspaceError(f"{repo} is not a folder (give the repository to make the branch in)")
    try:
        await _git("rev-parse", "--git-dir", cwd=repo)
    except GitError:
        raise WorkspaceError(f"{repo} is not in a git repository") from None
    ref = await _branch_ref(repo, branch)
    short = base_commit[:12]
    if not await has_commit(repo, base_commit):
        raise WorkspaceError(
            f"{repo} does not have the task's base commit {short}: `git fetch <remote>` there "
            f"first, or run this in a clone that has commit {short}"
        )
    await _patch_paths(patch, repo)  # empty or unreadable: say so before anything is made
    with tempfile.TemporaryDirectory(prefix="codex-tui-commit-") as scratch:
        env = {"GIT_INDEX_FILE": os.path.join(scratch, "index")}
        await _git("read-tree", base_commit, cwd=repo, env=env)
        try:
            await _git("apply", "--cached", "--binary", "--whitespace=nowarn", "-",
                       cwd=repo, env=env, stdin=patch)  # fmt: skip
        except GitError as exc:
            raise WorkspaceError(
                f"the patch does not apply to its base commit {short}: {exc.stderr}"
            ) from None
        tree = (await _git("write-tree", cwd=repo, env=env)).decode().strip()
    env = await _identity_env(repo)
    made = await _git(
        "commit-tree", tree, "-p", base_commit, "-F", "-", cwd=repo, env=env, stdin=message.encode()
    )
    commit = made.decode().strip()
    returncode, _out, err = await _run_git(
        "update-ref", "-m", "codex-tui branch", ref, commit, "", cwd=repo
    )
    if returncode != 0:
        if await _ref_exists(repo, ref):
            raise _branch_exists(repo, branch)
        raise GitError(("update-ref", ref), returncode, err.decode("utf-8", "replace"))
    return commit


async def _branch_ref(repo: Path, branch: str) -> str:
    """``refs/heads/BRANCH`` for a new branch of ``repo``.

    Raises:
        WorkspaceError: ``branch`` is not a valid branch name, or the branch exists.
    """
    if (
        not branch
        or branch == "HEAD"
        or branch.startswith(("-", "refs/", "@"))
        or (await _run_git("check-ref-format", "--branch", branch, cwd=repo))[0] != 0
    ):
        raise WorkspaceError(
            f"{one_line(branch)!r} is not a valid branch name (see `git check-ref-format`: "
            "no spaces, '..', '~', '^', ':', '?', '*', '[' or leading '-'); pick another"
        )
    ref = f"refs/heads/{branch}"
    if await _ref_exists(repo, ref):
        raise _branch_exists(repo, branch)
    return ref


async def _ref_exists(repo: Path, ref: str) -> bool:
    """True when ``ref`` (a full ref name) exists in ``repo``."""
    returncode, _out, _err = await _run_git("rev-parse", "--verify", "--quiet", ref, cwd=repo)
    return returncode == 0


def _branch_exists(repo: Path, branch: str) -> WorkspaceError:
    """The error for a branch that exists already: it is never overwritten."""
    return WorkspaceError(
        f"branch {branch!r} exists already in {repo}; it is left as it is: name another branch, "
        f"or delete that one first (`git branch -D {shlex.quote(branch)}`)"
    )


async def has_commit(repo: Path, commit: str) -> bool:
    """True when ``repo`` (a folder of a git repository) has the commit ``commit`` (a full
    commit id); False when it does not, or is no repository, or is no folder."""
    if not _COMMIT_ID.fullmatch(commit) or not await asyncio.to_thread(repo.is_dir):
        return False
    returncode, _out, _err = await _run_git("cat-file", "-e", f"{commit}^{{commit}}", cwd=repo)
    return returncode == 0
