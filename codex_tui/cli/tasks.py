"""Provides the task verbs: ``submit``, ``ls``, ``logs``, ``rerun``, ``cancel`` and ``pair``.

Exit codes: 0 success (for ``--follow``: the task completed, or a conversation's turn ended
and it is idle, waiting for a reply), 1 the task ended otherwise (failed, canceled, lost),
2 usage or connection problems.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from codex_tui.cli.common import (
    APPROVAL_POLICIES,
    DEFAULT_APPROVAL_POLICY,
    DEFAULT_SANDBOX,
    EXIT_TASK_NOT_COMPLETED,
    ID,
    RUNTIMES,
    SANDBOXES,
    TASK_STATUSES,
    connection,
    connection_options,
    fail,
    run_client,
)
from server_client.enums import ACTIVE_STATUSES, TaskStatus
from server_client.text import json_safe, one_line

if TYPE_CHECKING:
    from codex_tui.events.plain import EventPrinter, JsonLinePrinter
    from server_client.client import CodexTuiClient
    from server_client.models import Task

__all__ = ["cancel", "list_tasks", "logs", "pair", "rerun", "submit"]


def _printer(as_json: bool, *, turns: int = 0) -> EventPrinter | JsonLinePrinter:
    """Print events as JSON lines (the envelope) or rendered for people (on a terminal with
    what runs live below them; ``close`` takes that down), the first turn printed numbered
    ``turns + 1``."""
    if as_json:
        from codex_tui.events.plain import JsonLinePrinter

        return JsonLinePrinter()
    from codex_tui.events.plain import EventPrinter  # Rich Markdown, Pygments: only to print

    return EventPrinter(turns=turns)


async def follow_turn(
    client: CodexTuiClient,
    task_id: str,
    after: int,
    as_json: bool,
    *,
    reply_id: str | None = None,
    turns: int = 0,
) -> int:
    """Print the task's events with ``seq > after`` until it ends, or until its turn ends
    (an ``idle`` status event: the conversation waits for a reply, which a line on stderr
    says how to send). With ``reply_id``, only a turn end after that reply's status event
    counts. ``turns`` is how many turns came before ``after`` (so the next is numbered
    ``turns + 1``). Returns the exit code: 0 when the task completed or its turn ended, else 1."""
    printer = _printer(as_json, turns=turns)
    try:
        return await _print_turn(client, task_id, after, printer, reply_id)
    finally:
        printer.close()


async def _print_turn(
    client: CodexTuiClient,
    task_id: str,
    after: int,
    printer: EventPrinter | JsonLinePrinter,
    reply_id: str | None,
) -> int:
    """:func:`follow_turn`'s loop, printing with ``printer``."""
    seen_reply = reply_id is None
    async for event in client.stream_events(task_id, after=after):
        printer.print(event)
        if event.is_terminal:
            return 0 if event.status is TaskStatus.COMPLETED else EXIT_TASK_NOT_COMPLETED
        data = event.data if isinstance(event.data, dict) else {}
        reply = data.get("reply")
        if not seen_reply and isinstance(reply, dict) and reply.get("id") == reply_id:
            seen_reply = True
        if seen_reply and event.status is TaskStatus.IDLE:
            turns = data.get("turns")
            done = f"turn {turns} done" if turns else "turn done"
            printer.close()  # the live view goes before the line under it
            click.echo(
                f"codex-tui: task {task_id} is idle ({done}); continue with: "
                f"codex-tui reply {task_id} PROMPT",
                err=True,
            )
            return 0
    return EXIT_TASK_NOT_COMPLETED  # (the stream only ends at a terminal event)


async def _follow(client: CodexTuiClient, task_id: str, as_json: bool) -> int:
    """Print all of the task's events until it ends or its current (or next) turn ends;
    the exit code: 0 only if it completed or is idle."""
    task = await client.get_task(task_id)
    # An idle task's last event is its turn's end: stop there. Otherwise stop at the end of
    # the turn that runs or comes next.
    idle_from = task.last_seq - 1 if task.status is TaskStatus.IDLE else task.last_seq
    printer = _printer(as_json)
    try:
        if idle_from > 0:
            async for event in client.iter_events(task_id):
                if event.seq > idle_from:
                    break
                printer.print(event)
                if event.is_terminal:
                    return 0 if event.status is TaskStatus.COMPLETED else EXIT_TASK_NOT_COMPLETED
        return await _print_turn(client, task_id, max(0, idle_from), printer, None)
    finally:
        printer.close()


@click.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print the code as JSON.")
@click.pass_context
def pair(ctx: click.Context, server: str | None, token: str | None, as_json: bool) -> None:
    """Create a one-time pairing code (valid 10 minutes) for a worker on another machine,
    and print the command that runs it there: it names the server's public URL
    (CODEX_TUI_SERVER_PUBLIC_URL on the server), else the URL this command used."""
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        import shlex

        code = await client.create_pairing_code()
        server_url = code.public_url or conn.server
        command = f"codex-tui worker --server {shlex.quote(server_url)} --pair {code.code}"
        if as_json:
            click.echo(json_safe(code.model_copy(update={"command": command}).model_dump_json()))
            return
        expires = code.expires_at.astimezone().strftime("%H:%M")
        click.echo(f"Pairing code {code.code} (single use, expires at {expires}).")
        click.echo("On the other machine, run:")
        click.echo(f"  {one_line(command)}")
        if code.public_url is None:
            click.echo(
                f"codex-tui: the server has no public URL set, so this names {conn.server}, "
                "the address you reached it at; if the other machine cannot reach that, set "
                "CODEX_TUI_SERVER_PUBLIC_URL=http(s)://HOST:PORT on the server (README: "
                "Workers on other machines)",
                err=True,
            )

    run_client(conn, work)


@click.command()
@connection_options
@click.option(
    "--workdir",
    help="Folder codex works in, on the worker's machine (default: the current folder; with "
    "--worker or --label, that worker's first workdir root).",
)
@click.option(
    "--repo",
    metavar="PATH_OR_URL",
    help="Run in a checkout of its own of this git repository (a path on the worker, or a "
    "URL it may clone); review it with `codex-tui diff`. Not with --workdir.",
)
@click.option("--ref", metavar="REF", help="With --repo: the branch, tag or commit to start from.")
@click.option("--sandbox", type=click.Choice(SANDBOXES), default=DEFAULT_SANDBOX, show_default=True)
@click.option("--model", help="Model (default: codex's configured one).")
@click.option("--worker", "worker_name", help="Run on the worker with this name.")
@click.option(
    "--label", "labels", multiple=True, help="Run on a worker with this label (repeatable)."
)
@click.option(
    "--ask-for-approval",
    "-a",
    "approval_policy",
    type=click.Choice(APPROVAL_POLICIES),
    default=DEFAULT_APPROVAL_POLICY,
    show_default=True,
    help="When codex asks you before it acts (codex's -a): untrusted (every command), "
    "on-request (when the model asks), never. See `codex-tui approvals`.",
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    help="app-server: a conversation that takes replies; exec: one run (default: the worker's).",
)
@click.option(
    "--follow", "-f", is_flag=True, help="Stream the events until the task or its turn ends."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the task as JSON; with --follow, only the events, one JSON envelope per line "
    "(the task id goes to stderr).",
)
@click.argument("prompt")
@click.pass_context
def submit(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    workdir: str | None,
    repo: str | None,
    ref: str | None,
    sandbox: str,
    model: str | None,
    worker_name: str | None,
    labels: tuple[str, ...],
    approval_policy: str,
    runtime: str | None,
    follow: bool,
    as_json: bool,
    prompt: str,
) -> None:
    """Submit PROMPT (`-` reads it from stdin); prints the task id alone on stdout (with
    --json the task as JSON; with --follow --json only the events, the id on stderr). With
    --follow, exits 0 when it completed or its turn ended (idle: `codex-tui reply` goes on).
    With --repo it runs in a checkout of its own: see `codex-tui diff`, `apply`, `branch`."""
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        fail("the prompt is empty")
    if repo is not None and workdir is not None:
        fail(
            "--repo and --workdir do not go together: a task on a repository runs in a "
            "checkout of its own; drop --workdir"
        )
    if repo is not None and not repo.strip():
        fail("--repo is empty: give a repository's path or URL")
    if ref is not None and repo is None:
        fail("--ref needs --repo: it names a branch, tag or commit of that repository")
    conn = connection(ctx, server, token, start=True)
    source = _repository(repo) if repo is not None else None
    folder = None if source else os.path.abspath(workdir) if workdir else None
    if not source and folder is None and not (worker_name or labels):
        # Unrouted, the task goes to a worker whose roots hold this folder: the local one
        # when it runs here. A routed task goes elsewhere, where this folder means nothing.
        folder = os.getcwd()

    async def work(client: CodexTuiClient) -> int:
        task = await client.create_task(
            prompt,
            repo=source,
            ref=ref,
            workdir=folder,
            model=model,
            sandbox=sandbox,
            worker=worker_name,
            labels=labels,
            approval_policy=approval_policy,
            runtime=runtime,
        )
        _announce(task, follow=follow, as_json=as_json)
        await _warn_if_unroutable(client, task)
        if not follow:
            return 0
        return await follow_turn(client, task.id, 0, as_json)

    raise SystemExit(run_client(conn, work))


def _announce(task: Task, *, follow: bool, as_json: bool) -> None:
    """Say which task was made, keeping stdout one format: plain, the id alone on stdout;
    ``--json`` alone, the task as one JSON object; ``--follow --json``, nothing but the event
    envelopes on stdout (so ``| jq .kind`` reads every line) and the id on stderr."""
    if as_json and follow:
        click.echo(f"codex-tui: task {task.id}", err=True)
        return
    click.echo(json_safe(task.model_dump_json()) if as_json else task.id)
    sys.stdout.flush()


async def _warn_if_unroutable(client: CodexTuiClient, task: Task) -> None:
    """Say on stderr when no online worker can take the new task (``no online worker has
    label gpu; the task waits for one``, or none whose roots hold its folder): it stays
    queued until one comes."""
    from server_client.routing import missing_worker

    workers = await client.list_workers()
    if task.target_worker is None and not task.labels and not any(w.online for w in workers):
        return  # an unrouted task waits for any worker: a local one may still be starting
    missing = missing_worker(task, workers)
    if missing is not None:
        click.echo(f"codex-tui: {missing}; the task waits for one", err=True)


def _repository(repo: str) -> str:
    """``submit --repo``'s value as the task carries it: a URL (``scheme://...``) or an
    scp-like address (``user@host:path``) as given, a local path made absolute (``~``
    expanded). A path with a colon before its first slash is read as a path only when it
    exists here."""
    if "://" in repo:
        return repo
    head = repo.split("/", 1)[0]
    if ":" in head and not os.path.exists(repo):
        return repo
    return os.path.abspath(os.path.expanduser(repo))


def _task_row(task: Task, waiting: str | None = None) -> str:
    """One line of ``ls``: id, status, created, worker and the prompt's start, control
    characters shown visibly (docs/reliability.md T1), then ``waiting`` (what a queued task
    waits for, :func:`server_client.routing.waiting_for`) in parentheses."""
    from codex_tui.events.view import shown_line

    prompt = shown_line(" ".join(task.prompt.split()), 60)
    worker = shown_line(task.worker_name or "-", 100)
    created = task.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
    row = f"{task.id}  {task.status.value:<9}  {created}  {worker:<12}  {prompt}"
    return f"{row}  ({shown_line(waiting, 200)})" if waiting else row


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
        if as_json:
            for task in page.items:
                click.echo(json_safe(task.model_dump_json()))
            return
        from server_client.routing import waiting_for

        queued = any(task.status is TaskStatus.QUEUED for task in page.items)
        workers = await client.list_workers() if queued else []
        for task in page.items:
            click.echo(_task_row(task, waiting_for(task, workers)))

    run_client(conn, work)


@click.command()
@connection_options
@click.option("--follow", "-f", is_flag=True, help="Stream the events until the task ends.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the new task as JSON; with --follow, only the events (the id on stderr).",
)
@click.argument("task_id", type=ID)
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
    prints the new task's id alone on stdout (--json: as with `submit`)."""
    conn = connection(ctx, server, token, start=True)

    async def work(client: CodexTuiClient) -> int:
        task = await client.rerun_task(task_id)
        _announce(task, follow=follow, as_json=as_json)
        if not follow:
            return 0
        return await follow_turn(client, task.id, 0, as_json)

    raise SystemExit(run_client(conn, work))


@click.command()
@connection_options
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep streaming until the task ends or its turn ends (idle).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.argument("task_id", type=ID)
@click.pass_context
def logs(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    follow: bool,
    as_json: bool,
    task_id: str,
) -> None:
    """Print a task's events (with --follow, until it ends or its turn ends; exit 0 only if
    it completed or is idle, waiting for a reply)."""
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> int:
        if follow:
            return await _follow(client, task_id, as_json)
        printer = _printer(as_json)
        try:
            async for event in client.iter_events(task_id):
                printer.print(event)
        finally:
            printer.close()
        return 0

    raise SystemExit(run_client(conn, work))


@click.command()
@connection_options
@click.argument("task_id", type=ID)
@click.pass_context
def cancel(ctx: click.Context, server: str | None, token: str | None, task_id: str) -> None:
    """Cancel a task (a running one gets SIGINT, then SIGKILL after a grace period)."""
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        task = await client.cancel_task(task_id)
        state = "cancel requested" if task.status in ACTIVE_STATUSES else task.status.value
        click.echo(f"{task.id} {state}")

    run_client(conn, work)
