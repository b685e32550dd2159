"""Provides the worker's side of task workspaces (docs/design.md, "Workspaces"): making or
reusing a task's checkout before codex starts, remembering it across restarts, reporting its
diff while codex works and after each turn, and listing and removing what the disk holds.

A workspace lives at ``<workspace root>/<task id>``; beside the workspaces, in
``<workspace root>/.codex-tui/<task id>.json``, a small record keeps what the git checkout
itself does not say: the repository it came from, its kind and its base commit. The record is
written once the checkout exists and deleted once the checkout is gone, so the records are the
list of the worker's workspaces (also after a restart).

The git work is :mod:`server_client.workspaces`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from server_client.codex.events import event_type
from server_client.codex.items import snake_case
from server_client.models import (
    MAX_PATCH_BYTES,
    EventIn,
    EventKind,
    FileChange,
    Task,
    WorkspaceHeld,
)
from server_client.workspaces import (
    RemotePolicy,
    Workspace,
    WorkspaceError,
    clone_workspace,
    create_worktree,
    diff_stat,
    disk_usage,
    full_diff,
    remove_workspace,
)

__all__ = ["DIFF_INTERVAL_S", "Diff", "DiffReporter", "WorkspaceKeeper", "changes_files"]

log = logging.getLogger(__name__)

#: Shortest time between two diffs of one task uploaded while a turn runs (s).
DIFF_INTERVAL_S = 3.0

#: Codex items whose completion may have changed files: its patches and its commands (a shell
#: edit shows nowhere else; docs/codex-facts.md, "Git workspaces").
_CHANGING_ITEMS = frozenset({"file_change", "command_execution"})

#: The folder of the records, inside the workspace root.
_RECORDS = ".codex-tui"


def changes_files(event: EventIn) -> bool:
    """True for a codex event after which the workspace may hold new changes: a completed
    file change or command."""
    if event.kind is not EventKind.CODEX or event_type(event.data) != "item.completed":
        return False
    item = event.data.get("item") if isinstance(event.data, dict) else None
    kind = item.get("type") if isinstance(item, dict) else None
    return isinstance(kind, str) and snake_case(kind) in _CHANGING_ITEMS


class WorkspaceKeeper:
    """The workspaces of one worker, under ``root``.

    Args:
        root: The workspace root (absolute; created when the first workspace is made).
        roots: The worker's workdir roots: a local repository must lie inside one.
        policy: Which remote repositories it may clone.
    """

    def __init__(self, root: Path, roots: list[str], policy: RemotePolicy) -> None:
        self.root = root
        self.roots = roots
        self.policy = policy

    def _record_path(self, task_id: str) -> Path:
        return self.root / _RECORDS / f"{task_id}.json"

    def _read_record(self, task_id: str) -> Workspace | None:
        """The recorded workspace of ``task_id`` whose checkout still exists, else None."""
        try:
            data = json.loads(self._record_path(task_id).read_text())
            workspace = Workspace(
                path=Path(data["path"]),
                base_commit=data["base_commit"],
                source=data["source"],
                kind=data["kind"],
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return workspace if workspace.path.is_dir() else None

    def _write_record(self, task_id: str, workspace: Workspace) -> None:
        folder = self.root / _RECORDS
        folder.mkdir(parents=True, exist_ok=True)
        data = {
            "task_id": task_id,
            "path": str(workspace.path),
            "base_commit": workspace.base_commit,
            "source": workspace.source,
            "kind": workspace.kind,
        }
        scratch = folder / f".{task_id}.json.tmp"
        scratch.write_text(json.dumps(data))
        os.replace(scratch, self._record_path(task_id))

    async def prepare(self, task: Task) -> tuple[Workspace, bool]:
        """The task's workspace: the one made for an earlier turn, else a new one made from
        ``task.repo`` at ``task.ref`` (a worktree of a local repository inside the roots, or a
        clone of a URL the policy allows), recorded.

        Returns:
            The workspace and whether it was made now.

        Raises:
            WorkspaceError: the task has no repository; its workspace was removed after an
                earlier turn; or the checkout cannot be made (the message says why, without
                credentials).
        """
        if task.repo is None:
            raise WorkspaceError(f"task {task.id} has no repository")
        known = await asyncio.to_thread(self._read_record, task.id)
        if known is not None:
            if task.base_commit is not None and task.base_commit != known.base_commit:
                raise WorkspaceError(
                    f"workspace {known.path} is at {known.base_commit}, the task at "
                    f"{task.base_commit}"
                )
            return known, False
        if task.workspace_path is not None:
            raise WorkspaceError(
                f"the task's workspace {task.workspace_path} is gone (removed); its "
                "conversation cannot go on without it: submit a new task"
            )
        if os.path.isabs(task.repo):
            made = await create_worktree(task.repo, task.ref, self.root, task.id, roots=self.roots)
        else:
            made = await clone_workspace(
                task.repo, task.ref, self.root, task.id, policy=self.policy
            )
        await asyncio.to_thread(self._write_record, task.id, made)
        return made, True

    def _held(self) -> list[tuple[str, Workspace]]:
        """The recorded workspaces whose checkouts exist (a record without one is dropped)."""
        out = []
        folder = self.root / _RECORDS
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(folder.iterdir()):
                if entry.suffix != ".json" or entry.name.startswith("."):
                    continue
                task_id = entry.stem
                workspace = self._read_record(task_id)
                if workspace is None:
                    with contextlib.suppress(OSError):
                        entry.unlink()
                    continue
                out.append((task_id, workspace))
        return out

    def _report(self) -> list[WorkspaceHeld]:
        return [
            WorkspaceHeld(task_id=task_id, path=str(ws.path), bytes=disk_usage(ws.path))
            for task_id, ws in self._held()
        ]

    async def held(self) -> list[WorkspaceHeld]:
        """Every workspace on the disk with its size (bytes), read in a thread."""
        return await asyncio.to_thread(self._report)

    async def remove(self, task_id: str) -> bool:
        """Delete the task's workspace and its record (a worktree's repository forgets it).

        Returns:
            False when there was none.

        Raises:
            WorkspaceError: git failed and the checkout is still there.
        """
        workspace = await asyncio.to_thread(self._read_record, task_id)
        record = self._record_path(task_id)
        if workspace is None:
            await asyncio.to_thread(record.unlink, missing_ok=True)
            return False
        await remove_workspace(workspace)
        await asyncio.to_thread(record.unlink, missing_ok=True)
        return True


class Diff:
    """One computed diff of a workspace: ``files`` with their counts, the ``patch`` bytes
    (empty and ``truncated`` when over :data:`~server_client.models.MAX_PATCH_BYTES`)."""

    def __init__(self, files: list[FileChange], patch: bytes, truncated: bool) -> None:
        self.files = files
        self.patch = patch
        self.truncated = truncated


async def compute_diff(workspace: Workspace) -> Diff:
    """The workspace's whole diff against its base commit.

    Raises:
        WorkspaceError: the workspace is gone, or git failed.
    """
    stats = await diff_stat(workspace)
    patch = await full_diff(workspace)
    files = [FileChange(path=s.path, added=s.added, removed=s.removed) for s in stats]
    if len(patch) > MAX_PATCH_BYTES:
        return Diff(files, b"", True)
    return Diff(files, patch, False)


class DiffReporter:
    """Keeps the server's copy of one task's diff current while codex works in its workspace.

    :meth:`touch` after codex may have changed files; a diff is then computed and handed to
    ``upload`` at most every ``interval_s`` seconds, one at a time. :meth:`final` computes
    and uploads the diff at the end of a turn, after any in flight.

    Args:
        workspace: The task's workspace.
        upload: Sends a diff to the server (retrying as it sees fit); its errors are logged.
        interval_s: Shortest time between two uploads while a turn runs (s).
    """

    def __init__(
        self,
        workspace: Workspace,
        upload: Callable[[Diff], Awaitable[None]],
        *,
        interval_s: float = DIFF_INTERVAL_S,
    ) -> None:
        self.workspace = workspace
        self._upload = upload
        self._interval_s = interval_s
        self._dirty = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self._lock = asyncio.Lock()
        #: Diffs uploaded (for tests and logs).
        self.uploads = 0

    def touch(self) -> None:
        """Codex may have changed files: a diff goes out within ``interval_s``."""
        self._dirty.set()
        if self._pump is None and not self._closed:
            self._pump = asyncio.get_running_loop().create_task(self._run(), name="diff")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            if self._closed:
                return
            started = loop.time()
            self._dirty.clear()
            await self._send()
            if self._closed:
                return
            await asyncio.sleep(max(0.0, started + self._interval_s - loop.time()))

    async def _send(self) -> None:
        async with self._lock:
            try:
                diff = await compute_diff(self.workspace)
            except WorkspaceError as exc:
                log.warning("diff of %s: %s", self.workspace.path, exc)
                return
            try:
                await self._upload(diff)
            except Exception as exc:  # the turn goes on without it
                log.warning("diff of %s not uploaded: %s", self.workspace.path, _said(exc))
                return
            self.uploads += 1

    async def final(self) -> None:
        """Stop the live updates, then compute and upload the diff as it stands now."""
        await self.aclose()
        await self._send()

    async def aclose(self) -> None:
        """Stop the live updates (an upload in flight is cancelled).

        The pump also stops by itself once it sees the reporter closed: a cancel that
        something on its way swallows (Python 3.11's ``asyncio.wait_for`` drops one that
        comes as its work finishes) must not leave the turn's end waiting for it forever.
        """
        self._closed = True
        self._dirty.set()  # a pump that lost its cancel finds the reporter closed
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None


def _said(exc: BaseException) -> Any:
    """What to log of an upload's failure."""
    return str(exc) or type(exc).__name__
