"""Provides a task's own git checkout (its workspace) and the complete diff of what changed in
it, with git's command line (docs/reliability.md W1–W3; the git facts behind it are in
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
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from server_client.paths import WorkdirError, is_within, resolve_workdir

__all__ = [
    "RUNNING_GIT_PIDS",
    "FileStat",
    "GitError",
    "RemotePolicy",
    "Workspace",
    "WorkspaceError",
    "check_remote_url",
    "clone_workspace",
    "create_worktree",
    "diff_stat",
    "disk_usage",
    "full_diff",
    "git_starting",
    "mask_credentials",
    "remove_workspace",
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
    """Which remote repositories a worker may clone (docs/reliability.md W4).

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
) -> bytes:
    """Run ``git args`` in ``cwd``; its stdout.

    Raises:
        GitError: it exited non-zero.
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
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        RUNNING_GIT_PIDS.add(proc.pid)
    except FileNotFoundError:
        raise WorkspaceError("git is not installed here (install git)") from None
    finally:
        _starting -= 1
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise WorkspaceError(
            f"git {mask_credentials(' '.join(args))} took longer than {timeout_s:.0f} s"
        ) from None
    finally:
        RUNNING_GIT_PIDS.discard(proc.pid)
    if proc.returncode != 0:
        raise GitError(args, proc.returncode or 1, err.decode("utf-8", "replace"))
    return out


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
        real = resolve_workdir(repo, roots)
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
    scp = _SCP_LIKE.match(url) if "://" not in url else None
    if scp is not None:
        scheme, host, password = "ssh", scp["host"].lower(), None
    else:
        parts = urlsplit(url)
        scheme, host, password = parts.scheme.lower(), (parts.hostname or ""), parts.password
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
