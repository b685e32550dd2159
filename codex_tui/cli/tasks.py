"""Provides the task verbs: ``submit``, ``ls``, ``logs``, ``rerun``, ``cancel`` and ``pair``.

Exit codes: 0 success (for ``--follow``: the task completed), 1 the task ended otherwise
(failed, canceled, lost), 2 usage or connection problems.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from codex_tui.cli.common import (
    DEFAULT_SANDBOX,
    EXIT_TASK_NOT_COMPLETED,
    SANDBOXES,
    TASK_STATUSES,
    connection,
    connection_options,
    fail,
    run_client,
)
from server_client.enums import TaskStatus
from server_client.text import json_safe

if TYPE_CHECKING:
    from server_client.client import CodexTuiClient
    from server_client.models import Event, Task

__all__ = ["cancel", "list_tasks", "logs", "pair", "rerun", "submit"]


def _printer(as_json: bool) -> Callable[[Event], None]:
    """Print events as JSON lines (the envelope) or rendered for people."""
    if as_json:
        from codex_tui.events.plain import JsonLinePrinter

        return JsonLinePrinter().print
    from codex_tui.events.plain import EventPrinter  # Rich Markdown, Pygments: only to print

    return EventPrinter().print


async def _follow(client: CodexTuiClient, task_id: str, after: int, as_json: bool) -> int:
    """Print the task's events until it ends; the exit code: 0 only if it completed."""
    show = _printer(as_json)
    final: TaskStatus | None = None
    async for event in client.stream_events(task_id, after=after):
        show(event)
        if event.is_terminal:
            final = event.status
    return 0 if final is TaskStatus.COMPLETED else EXIT_TASK_NOT_COMPLETED


@click.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print the code as JSON.")
@click.pass_context
def pair(ctx: click.Context, server: str | None, token: str | None, as_json: bool) -> None:
    """Create a one-time pairing code (valid 10 minutes) for a worker on another machine."""
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        code = await client.create_pairing_code()
        if as_json:
            click.echo(json_safe(code.model_dump_json()))
            return
        expires = code.expires_at.astimezone().strftime("%H:%M")
        click.echo(f"Pairing code {code.code} (single use, expires at {expires}).")
        click.echo("On the other machine, run:")
        click.echo(f"  {code.command}")

    run_client(conn, work)


@click.command()
@connection_options
@click.option("--workdir", help="Folder codex works in (default: the current folder).")
@click.option("--sandbox", type=click.Choice(SANDBOXES), default=DEFAULT_SANDBOX, show_default=True)
@click.option("--model", help="Model (default: codex's configured one).")
@click.option("--worker", "worker_name", help="Run on the worker with this name.")
@click.option(
    "--label", "labels", multiple=True, help="Run on a worker with this label (repeatable)."
)
@click.option("--follow", "-f", is_flag=True, help="Stream the events until the task ends.")
@click.option("--json", "as_json", is_flag=True, help="With --follow: one JSON event per line.")
@click.argument("prompt")
@click.pass_context
def submit(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    workdir: str | None,
    sandbox: str,
    model: str | None,
    worker_name: str | None,
    labels: tuple[str, ...],
    follow: bool,
    as_json: bool,
    prompt: str,
) -> None:
    """Submit PROMPT (`-` reads it from stdin); prints the task id alone on stdout."""
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        fail("the prompt is empty")
    conn = connection(ctx, server, token, start=True)
    folder = os.path.abspath(workdir) if workdir else os.getcwd()

    async def work(client: CodexTuiClient) -> int:
        task = await client.create_task(
            prompt,
            workdir=folder,
            model=model,
            sandbox=sandbox,
            worker=worker_name,
            labels=labels,
        )
        click.echo(task.id)
        sys.stdout.flush()
        if not follow:
            return 0
        return await _follow(client, task.id, 0, as_json)

    raise SystemExit(run_client(conn, work))


def _task_row(task: Task) -> str:
    """One line of ``ls``: id, status, created, worker and the prompt's start, control
    characters shown visibly (docs/reliability.md T1)."""
    from codex_tui.events.view import shown_line

    prompt = shown_line(" ".join(task.prompt.split()), 60)
    worker = shown_line(task.worker_name or "-", 100)
    created = task.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
    return f"{task.id}  {task.status.value:<9}  {created}  {worker:<12}  {prompt}"


@click.command(name="ls")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON task per line.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(TASK_STATUSES))
@click.option(
    "--search",
    "-q",
    "search",
    help="Only prompts containing TEXT (ignoring case; % and _ are literal).",
    metavar="TEXT",
)
@click.option("--worker", "worker_name", help="Only tasks run by or routed to this worker.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.pass_context
def list_tasks(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    as_json: bool,
    statuses: tuple[str, ...],
    search: str | None,
    worker_name: str | None,
    limit: int,
) -> None:
    """List your tasks, newest first."""
    if search is not None and len(search) > 200:
        fail("--search takes at most 200 characters")
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        page = await client.list_tasks(status=statuses, q=search, worker=worker_name, limit=limit)
        for task in page.items:
            click.echo(json_safe(task.model_dump_json()) if as_json else _task_row(task))

    run_client(conn, work)


@click.command()
@connection_options
@click.option("--follow", "-f", is_flag=True, help="Stream the events until the task ends.")
@click.option("--json", "as_json", is_flag=True, help="With --follow: one JSON event per line.")
@click.argument("task_id")
@click.pass_context
def rerun(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    follow: bool,
    as_json: bool,
    task_id: str,
) -> None:
    """Submit TASK_ID's prompt again with the same workdir, model, sandbox and routing;
    prints the new task's id alone on stdout."""
    conn = connection(ctx, server, token, start=True)

    async def work(client: CodexTuiClient) -> int:
        task = await client.rerun_task(task_id)
        click.echo(task.id)
        sys.stdout.flush()
        if not follow:
            return 0
        return await _follow(client, task.id, 0, as_json)

    raise SystemExit(run_client(conn, work))


@click.command()
@connection_options
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the task ends.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.argument("task_id")
@click.pass_context
def logs(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    follow: bool,
    as_json: bool,
    task_id: str,
) -> None:
    """Print a task's events (with --follow, until it ends; exit 0 only if it completed)."""
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> int:
        if follow:
            return await _follow(client, task_id, 0, as_json)
        show = _printer(as_json)
        async for event in client.iter_events(task_id):
            show(event)
        return 0

    raise SystemExit(run_client(conn, work))


@click.command()
@connection_options
@click.argument("task_id")
@click.pass_context
def cancel(ctx: click.Context, server: str | None, token: str | None, task_id: str) -> None:
    """Cancel a task (a running one gets SIGINT, then SIGKILL after a grace period)."""
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        task = await client.cancel_task(task_id)
        state = "cancel requested" if task.status is TaskStatus.RUNNING else task.status.value
        click.echo(f"{task.id} {state}")

    run_client(conn, work)
