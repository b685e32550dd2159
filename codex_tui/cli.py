"""Provides the ``codex-tui`` command: the TUI (no subcommand), server, worker and script verbs.

Exit codes of the client verbs: 0 success (for ``--follow``: the task completed), 1 the task
ended otherwise (failed, canceled, lost), 2 usage or connection problems.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import httpx

from codex_tui.config import DEFAULT_PORT, ResolvedConnection, resolve_connection
from codex_tui.plain import EventPrinter
from server_client.client import ApiError, CodexTuiClient
from server_client.models import Event, Sandbox, Task, TaskStatus

T = TypeVar("T")

EXIT_TASK_NOT_COMPLETED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"codex-tui: {message}", err=True)
    raise SystemExit(code)


def _connection(ctx: click.Context, server: str | None, token: str | None, *, start: bool) -> Any:
    parent = ctx.find_root().params
    conn = resolve_connection(server or parent.get("server"), token or parent.get("token"))
    if start:
        from codex_tui.launcher import LauncherError, ensure_local_server

        try:
            conn = ensure_local_server(conn)
        except LauncherError as exc:
            _fail(str(exc))
    if not conn.token:
        _fail(
            f"no token for {conn.server}: pass --token or set CODEX_TUI_TOKEN "
            "(a local server stores one for you on its first start: `codex-tui server`)"
        )
    return conn


def _run(conn: ResolvedConnection, work: Callable[[CodexTuiClient], Awaitable[T]]) -> T:
    async def main() -> T:
        assert conn.token is not None
        async with CodexTuiClient(conn.server, conn.token) as client:
            return await work(client)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        detail = exc.problem.detail or exc.problem.title
        _fail(f"{exc.status} {exc.problem.title}: {detail}")
    except httpx.TransportError as exc:
        _fail(
            f"cannot reach the server at {conn.server} ({type(exc).__name__}); "
            "start one with `codex-tui server` or pass --server URL"
        )
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise AssertionError("unreachable")


def connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--server`` and ``--token`` to a command."""
    func = click.option(
        "--token", envvar="CODEX_TUI_TOKEN", help="User token (default: the stored one)."
    )(func)
    return click.option(
        "--server", envvar="CODEX_TUI_SERVER", help="Server URL (default: the stored one)."
    )(func)


def worker_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options of a worker (``codex-tui worker`` and the server's local worker)."""
    options = [
        click.option(
            "--workdir-root",
            "workdir_roots",
            multiple=True,
            help="Allowed workdir root (repeatable; default: your home folder).",
        ),
        click.option(
            "--codex-bin", help="Codex binary (default: CODEX_TUI_CODEX_BIN, else codex on PATH)."
        ),
        click.option("--max-tasks", default=4, show_default=True, type=int, help="Tasks at once."),
        click.option(
            "--pass-env", multiple=True, help="Environment variable passed through to codex."
        ),
        click.option(
            "--cancel-grace",
            "grace_s",
            default=2.0,
            show_default=True,
            type=click.FloatRange(0, 60),
            help="Seconds between SIGINT and SIGKILL when a task is cancelled.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _printer(as_json: bool) -> Callable[[Event], None]:
    """Print events as JSON lines (the envelope) or rendered for people."""
    if as_json:
        return lambda event: click.echo(event.model_dump_json())
    return EventPrinter().print


async def _follow(client: CodexTuiClient, task_id: str, after: int, as_json: bool) -> int:
    show = _printer(as_json)
    final: TaskStatus | None = None
    async for event in client.stream_events(task_id, after=after):
        show(event)
        if event.is_terminal:
            final = event.status
    return 0 if final is TaskStatus.COMPLETED else EXIT_TASK_NOT_COMPLETED


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@connection_options
@click.version_option(package_name="codex-tui")
@click.pass_context
def main(ctx: click.Context, server: str | None, token: str | None) -> None:
    """Run and watch OpenAI Codex agents on remote machines.

    With no command, opens the TUI (starting a local server in the background when none is
    configured or running).
    """
    if ctx.invoked_subcommand is not None:
        return
    conn = _connection(ctx, server, token, start=True)
    from codex_tui.app import CodexTuiApp

    client = CodexTuiClient(conn.server, conn.token)
    CodexTuiApp(client, default_workdir=os.getcwd(), close_client=True).run()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port to bind.")
@click.option("--db", "db_url", help="Database URL (default: a SQLite file in the data folder).")
@click.option("--no-local-worker", is_flag=True, help="Do not start a worker beside the server.")
@worker_options
@click.option("--log-level", default="info", show_default=True)
def server(
    host: str,
    port: int,
    db_url: str | None,
    no_local_worker: bool,
    workdir_roots: tuple[str, ...],
    codex_bin: str | None,
    max_tasks: int,
    pass_env: tuple[str, ...],
    grace_s: float,
    log_level: str,
) -> None:
    """Run the server (and, by default, one local worker)."""
    import logging

    from server_client.paths import AppDirs
    from server_client.server.main import LocalWorkerOptions, run_server
    from server_client.server.settings import ServerSettings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    dirs = AppDirs.resolve().ensure()
    url = db_url or f"sqlite:///{dirs.data / 'codex-tui.db'}"
    roots = [os.path.abspath(os.path.expanduser(r)) for r in workdir_roots]
    settings = ServerSettings.model_validate(
        {"db_url": url, **({"workdir_roots": roots} if roots else {})}
    )
    worker = None
    if not no_local_worker:
        worker = LocalWorkerOptions(
            workdir_roots=list(settings.workdir_roots),
            codex_bin=codex_bin,
            max_tasks=max_tasks,
            pass_env=list(pass_env),
            grace_s=grace_s,
        )
    try:
        run_server(settings, host=host, port=port, local_worker=worker, log_level=log_level)
    except ValueError as exc:
        _fail(str(exc))


@main.command()
@click.option(
    "--server", "server_url", envvar="CODEX_TUI_SERVER", required=True, help="Server URL."
)
@click.option(
    "--token", envvar="CODEX_TUI_TOKEN", required=True, help="Token (or CODEX_TUI_TOKEN)."
)
@click.option("--name", default=None, help="Worker name (default: this host's name).")
@worker_options
def worker(
    server_url: str,
    token: str,
    name: str | None,
    workdir_roots: tuple[str, ...],
    codex_bin: str | None,
    max_tasks: int,
    pass_env: tuple[str, ...],
    grace_s: float,
) -> None:
    """Run a worker: claim tasks from the server and run codex for them."""
    import socket

    from server_client.worker.main import WorkerSettings, run_worker

    settings = WorkerSettings(
        server=server_url,
        token=token,
        name=name or socket.gethostname(),
        workdir_roots=[os.path.abspath(os.path.expanduser(r)) for r in workdir_roots]
        or [os.path.expanduser("~")],
        codex_bin=codex_bin,
        max_tasks=max_tasks,
        pass_env=list(pass_env),
        grace_s=grace_s,
    )
    run_worker(settings)


@main.command()
@connection_options
@click.option("--workdir", help="Folder codex works in (default: the current folder).")
@click.option(
    "--sandbox",
    type=click.Choice([s.value for s in Sandbox]),
    default=Sandbox.WORKSPACE_WRITE.value,
    show_default=True,
)
@click.option("--model", help="Model (default: codex's configured one).")
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
    follow: bool,
    as_json: bool,
    prompt: str,
) -> None:
    """Submit PROMPT (`-` reads it from stdin); prints the task id alone on stdout."""
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        _fail("the prompt is empty")
    conn = _connection(ctx, server, token, start=True)
    folder = os.path.abspath(workdir) if workdir else os.getcwd()

    async def work(client: CodexTuiClient) -> int:
        task = await client.create_task(prompt, workdir=folder, model=model, sandbox=sandbox)
        click.echo(task.id)
        sys.stdout.flush()
        if not follow:
            return 0
        return await _follow(client, task.id, 0, as_json)

    raise SystemExit(_run(conn, work))


def _task_row(task: Task) -> str:
    prompt = " ".join(task.prompt.split())
    if len(prompt) > 60:
        prompt = prompt[:59] + "…"
    created = task.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
    return f"{task.id}  {task.status.value:<9}  {created}  {task.worker_name or '-':<12}  {prompt}"


@main.command(name="ls")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON task per line.")
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice([s.value for s in TaskStatus])
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.pass_context
def list_tasks(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    as_json: bool,
    statuses: tuple[str, ...],
    limit: int,
) -> None:
    """List your tasks, newest first."""
    conn = _connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        page = await client.list_tasks(status=statuses, limit=limit)
        for task in page.items:
            click.echo(task.model_dump_json() if as_json else _task_row(task))

    _run(conn, work)


@main.command()
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
    conn = _connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> int:
        if follow:
            return await _follow(client, task_id, 0, as_json)
        show = _printer(as_json)
        after = 0
        while True:
            page = await client.get_events(task_id, after=after, limit=1000)
            for event in page:
                show(event)
            if len(page) < 1000:
                return 0
            after = page[-1].seq

    raise SystemExit(_run(conn, work))


@main.command()
@connection_options
@click.argument("task_id")
@click.pass_context
def cancel(ctx: click.Context, server: str | None, token: str | None, task_id: str) -> None:
    """Cancel a task (a running one gets SIGINT, then SIGKILL after a grace period)."""
    conn = _connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        task = await client.cancel_task(task_id)
        state = "cancel requested" if task.status is TaskStatus.RUNNING else task.status.value
        click.echo(f"{task.id} {state}")

    _run(conn, work)
