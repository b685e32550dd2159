"""Provides the review verbs of tasks run in a workspace of their own (``submit --repo``):
``diff``, ``apply``, ``branch`` and ``workspaces`` (with ``workspaces rm``).

A task's diff is everything that changed in its workspace since its base commit, as its worker
last reported it (after each turn). ``diff`` prints the patch byte for byte when its output is
not a terminal (so ``codex-tui diff ID | git apply`` works), and with control characters shown
visibly when it is (docs/reliability.md T1); ``apply`` applies it to a checkout here, three-way
where it can (:func:`server_client.workspaces.apply_patch`); ``branch`` commits it onto a new
branch at the task's base commit without touching the working tree
(:func:`server_client.workspaces.commit_patch`).

Exit codes: 0 success; 1 the task has no diff (no repository, none reported yet, too large to
keep), the patch does not apply or conflicts, a branch cannot be made, a workspace cannot be
removed; 2 usage or connection problems and other refusals of the server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from codex_tui.cli.common import ID, connection, connection_options, fail, run_client
from server_client.enums import ACTIVE_STATUSES
from server_client.text import json_safe, one_line, truncate, visible

if TYPE_CHECKING:
    from codex_tui.config import ResolvedConnection
    from server_client.client import CodexTuiClient
    from server_client.models import Task, TaskDiff

T = TypeVar("T")

__all__ = ["apply", "branch", "diff", "workspaces"]

#: Exit code when the task has no usable diff, or it does not apply.
EXIT_NO_DIFF = 1


class Refused(Exception):
    """A review verb cannot do what was asked; ``str()`` says why and what to do."""


async def _why_no_diff(client: CodexTuiClient, task_id: str) -> Refused:
    """Why the server has no diff of ``task_id``: no repository, or none reported yet.

    Raises:
        NotFoundError: there is no such task (of the caller's).
    """
    task = await client.get_task(task_id)
    if task.repo is None:
        return Refused(
            f"task {task_id} has no diff: it was not submitted with a repository "
            "(`codex-tui submit --repo PATH_OR_URL` runs a task in a checkout of its own)"
        )
    return Refused(
        f"task {task_id} has no diff yet: its worker has not reported one "
        f"(the task is {task.status.value}; workers report after each turn)"
    )


async def _patch(client: CodexTuiClient, task_id: str) -> bytes:
    """The task's latest patch (``git diff --binary`` bytes).

    Raises:
        Refused: no diff (why), or it was too large for the server to keep.
        ApiError: another refusal (no such task: 404).
    """
    from server_client.client import ApiError, NotFoundError

    try:
        return await client.get_patch(task_id)
    except NotFoundError:
        raise await _why_no_diff(client, task_id) from None
    except ApiError as exc:
        if exc.status != 409:
            raise
        task = await client.get_task(task_id)
        where = f" at {one_line(task.workspace_path)}" if task.workspace_path else ""
        worker = f" on {one_line(task.worker_name)}" if task.worker_name else ""
        raise Refused(
            f"task {task_id}'s diff was too large for the server to keep (only its counts: "
            f"`codex-tui diff --stat {task_id}`); take it from its workspace{worker}{where}"
        ) from None


async def _diff(client: CodexTuiClient, task_id: str) -> TaskDiff:
    """The task's latest diff summary.

    Raises:
        Refused: no diff (why).
        ApiError: another refusal (no such task: 404).
    """
    from server_client.client import NotFoundError

    try:
        return await client.get_diff(task_id)
    except NotFoundError:
        raise await _why_no_diff(client, task_id) from None


def _run(conn: ResolvedConnection, work: Callable[[CodexTuiClient], Awaitable[T]]) -> T:
    """:func:`run_client`, with a :class:`Refused` ending the command: exit 1 with its
    message (control characters shown visibly)."""
    try:
        return run_client(conn, work)
    except Refused as exc:
        fail(visible(str(exc)), EXIT_NO_DIFF)


def stat_lines(diff: TaskDiff) -> list[str]:
    """``diff --stat``'s lines: ``+A -R path`` per file (``bin path`` for a binary file), the
    path made safe for a terminal (control characters visible, one line), then a total:
    ``N files changed, +A -R``."""
    width = max(
        (len(f"+{f.added} -{f.removed}") for f in diff.files if f.added is not None), default=3
    )
    lines = []
    for change in diff.files:
        counts = "bin" if change.added is None else f"+{change.added} -{change.removed}"
        lines.append(f"{counts:<{width}}  {one_line(change.path)}")
    count = len(diff.files)
    lines.append(f"{count} file{'' if count == 1 else 's'} changed, +{diff.added} -{diff.removed}")
    return lines


def _write_file(output: str, data: bytes) -> None:
    """Write ``data`` to the file ``output``; a failure ends the command (exit 2, why)."""
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {one_line(output)}: {exc.strerror or exc}")


def _write_patch(patch: bytes, output: str | None) -> None:
    """Write ``patch`` to the file ``output``, or to stdout: as bytes when stdout is not a
    terminal, made visible when it is (a patch holds untrusted text)."""
    if output is not None:
        _write_file(output, patch)
        return
    if sys.stdout.isatty():
        click.echo(visible(patch.decode("utf-8", "replace")), nl=False)
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(patch)
    sys.stdout.buffer.flush()


@click.command()
@connection_options
@click.option("--stat", "as_stat", is_flag=True, help="One line per file: +added -removed path.")
@click.option(
    "--output",
    "-o",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Write to FILE instead of stdout.",
)
@click.argument("task_id", type=ID)
@click.pass_context
def diff(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    as_stat: bool,
    output: str | None,
    task_id: str,
) -> None:
    """Print what TASK_ID changed in its workspace, as a patch (`codex-tui diff ID | git apply`
    applies it) or with --stat as a list of files. Exits 1 when the task has no diff."""
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> bytes:
        if not as_stat:
            return await _patch(client, task_id)
        summary = await _diff(client, task_id)
        if not summary.final:
            when = summary.updated_at.astimezone().strftime("%H:%M:%S")
            click.echo(f"codex-tui: task {task_id} is still running; as of {when}", err=True)
        return ("\n".join(stat_lines(summary)) + "\n").encode()

    out = _run(conn, work)
    if as_stat:
        if output is not None:
            _write_file(output, out)
        else:
            click.echo(out.decode(), nl=False)
        return
    _write_patch(out, output)
    if not out:
        click.echo(f"codex-tui: task {task_id} changed nothing", err=True)


@click.command()
@connection_options
@click.option("--check", is_flag=True, help="Only say whether it applies; change nothing.")
@click.option(
    "-C",
    "directory",
    metavar="DIR",
    default=".",
    type=click.Path(file_okay=False),
    help="The checkout to apply to (default: the current folder).",
)
@click.argument("task_id", type=ID)
@click.pass_context
def apply(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    check: bool,
    directory: str,
    task_id: str,
) -> None:
    """Apply TASK_ID's diff to the checkout in DIR (git apply --3way: files that changed
    since the task's base commit are merged). On a conflict the files hold conflict
    markers to resolve; exits 1 and says what to do."""
    conn = connection(ctx, server, token, start=False)
    checkout = Path(os.path.abspath(directory))

    async def work(client: CodexTuiClient) -> None:
        from server_client.workspaces import WorkspaceError, apply_patch

        patch = await _patch(client, task_id)
        try:
            paths = await apply_patch(checkout, patch, check_only=check)
        except WorkspaceError as exc:
            raise Refused(str(exc)) from None
        count = f"{len(paths)} file{'' if len(paths) == 1 else 's'}"
        said = "applies to" if check else "applied to"
        click.echo(f"{task_id}: the patch {said} {one_line(str(checkout))} ({count})")
        for path in paths:
            click.echo(f"  {one_line(path)}")

    _run(conn, work)


def commit_message(task: Task) -> str:
    """The message of ``branch``'s commit: the prompt's first line (whitespace collapsed,
    control characters visible, at most 72 characters), a blank line, ``codex-tui task ID``."""
    lines = task.prompt.strip().splitlines()
    first = one_line(" ".join(lines[0].split())) if lines else ""
    return f"{truncate(first, 72) or 'codex-tui task'}\n\ncodex-tui task {task.id}\n"


async def _branch_repo(task: Task, given: Path | None, here: Path) -> Path:
    """Where ``branch`` commits: ``given``; else the task's repository when it is a local
    folder here that has the base commit; else ``here`` (the current folder)."""
    from server_client.workspaces import has_commit

    if given is not None:
        return given
    local = task.repo is not None and task.repo.startswith("/")
    if local and task.base_commit and await has_commit(Path(str(task.repo)), task.base_commit):
        return Path(str(task.repo))
    return here


@click.command()
@connection_options
@click.option(
    "--repo",
    "repo",
    metavar="PATH",
    type=click.Path(file_okay=False),
    help="The repository to make the branch in (default: the task's own when it is here, "
    "else the current folder's).",
)
@click.argument("task_id", type=ID)
@click.argument("name", required=False)
@click.pass_context
def branch(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    repo: str | None,
    task_id: str,
    name: str | None,
) -> None:
    """Commit TASK_ID's diff onto a new branch NAME (default: codex/TASK_ID) at the task's
    base commit. Your working tree, index and HEAD stay as they are; an existing branch is
    never overwritten."""
    conn = connection(ctx, server, token, start=False)
    given = Path(os.path.abspath(repo)) if repo is not None else None
    here = Path.cwd()

    async def work(client: CodexTuiClient) -> None:
        from server_client.workspaces import WorkspaceError, commit_patch, default_branch_name

        task = await client.get_task(task_id)
        patch = await _patch(client, task_id)
        if task.base_commit is None:
            raise Refused(f"task {task_id} has no base commit yet: its worker has not reported")
        where = await _branch_repo(task, given, here)
        new = name or default_branch_name(task.id)
        try:
            made = await commit_patch(where, task.base_commit, patch, new, commit_message(task))
        except WorkspaceError as exc:
            raise Refused(str(exc)) from None
        if task.status in ACTIVE_STATUSES:
            when = (
                task.diff_updated_at.astimezone().strftime("%H:%M:%S")
                if task.diff_updated_at
                else "its last report"
            )
            click.echo(
                f"codex-tui: task {task_id} is still running: the branch holds its diff as of "
                f"{when}",
                err=True,
            )
        click.echo(f"branch {one_line(new)} at {made[:12]} in {one_line(str(where))}")

    _run(conn, work)


def human_size(size: int | None) -> str:
    """Bytes as ``du -h`` shows them: ``512B``, ``4.0K``, ``1.3M``, ``2.0G`` (1024-based);
    ``-`` for unknown."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{size}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _age(then: datetime | None, now: datetime) -> str:
    """A short age: ``42s``, ``5m``, ``3h``, ``2d``; ``-`` for unknown."""
    if then is None:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def workspace_row(task: Task, now: datetime) -> str:
    """One line of ``workspaces``: task id, worker, task status, workspace state, size, age
    (since the task started), repository and path; untrusted text shown safely."""
    worker = one_line(truncate(task.worker_name or "-", 20))
    state = task.workspace_state.value if task.workspace_state else "-"
    repo = one_line(task.repo or "-")
    path = one_line(task.workspace_path or "-")
    age = _age(task.started_at or task.created_at, now)
    return (
        f"{task.id}  {worker:<12}  {task.status.value:<9}  {state:<8}  "
        f"{human_size(task.workspace_bytes):>6}  {age:>4}  {repo}  {path}"
    )


@click.group(invoke_without_command=True)
@connection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON task per line.")
@click.pass_context
def workspaces(ctx: click.Context, server: str | None, token: str | None, as_json: bool) -> None:
    """List the workspaces your tasks have on workers: task, worker, status, state, size,
    age, repository, path. `codex-tui workspaces rm TASK_ID...` removes them."""
    if ctx.invoked_subcommand is not None:
        return
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        from datetime import UTC

        now = datetime.now(UTC)
        for task in await client.list_workspaces():
            click.echo(json_safe(task.model_dump_json()) if as_json else workspace_row(task, now))

    _run(conn, work)


@workspaces.command(name="rm")
@connection_options
@click.argument("task_ids", metavar="TASK_ID...", nargs=-1, required=True, type=ID)
@click.pass_context
def remove(
    ctx: click.Context, server: str | None, token: str | None, task_ids: tuple[str, ...]
) -> None:
    """Remove the workspaces of TASK_IDs from their workers (an active task's is refused:
    cancel it first). Exits 1 when one could not be removed."""
    group = ctx.parent.params if ctx.parent is not None else {}
    conn = connection(ctx, server or group.get("server"), token or group.get("token"), start=False)

    async def work(client: CodexTuiClient) -> int:
        from server_client.client import ApiError, NotFoundError

        failed = 0
        for task_id in task_ids:
            try:
                task = await client.remove_workspace(task_id)
            except NotFoundError:
                failed += 1
                click.echo(f"codex-tui: {task_id}: no such task, or it has no workspace", err=True)
                continue
            except ApiError as exc:
                failed += 1
                if exc.status == 409:
                    said = f"the task is still active: cancel it first (codex-tui cancel {task_id})"
                else:
                    said = f"{exc.status} {exc.problem.title}: {exc.problem.detail or ''}"
                click.echo(f"codex-tui: {task_id}: {visible(said)}", err=True)
                continue
            state = task.workspace_state.value if task.workspace_state else "removing"
            click.echo(f"{task.id} {state}")
        return EXIT_NO_DIFF if failed else 0

    raise SystemExit(_run(conn, work))
