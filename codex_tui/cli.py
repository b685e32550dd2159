"""Provides the ``codex-tui`` command: the TUI (no subcommand), server, worker and script verbs.

Exit codes of the client verbs: 0 success (for ``--follow``: the task completed), 1 the task
ended otherwise (failed, canceled, lost), 2 usage or connection problems.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from codex_tui.config import ResolvedConnection
    from server_client.client import CodexTuiClient
    from server_client.models import Event, Task

# Start-up time: this module imports only click. Each command imports what it uses (the
# TUI Textual, `server` the server, the client verbs the SDK, ...) inside its callback, so
# that `--help` and the TUI pay for nothing else (tests/test_tui_startup.py checks it).

T = TypeVar("T")

EXIT_TASK_NOT_COMPLETED = 1
EXIT_USAGE = 2

#: The values below are spelled out so that building the commands needs no pydantic; the
#: tests check that they match their sources.
#: ``codex_tui.config.DEFAULT_PORT``: the local server's port.
DEFAULT_PORT = 8765
#: The values of ``server_client.models.Sandbox``, and its default for a new task.
SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
DEFAULT_SANDBOX = "workspace-write"
#: The values of ``server_client.models.TaskStatus``.
TASK_STATUSES = ("queued", "running", "completed", "failed", "canceled", "lost")


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"codex-tui: {message}", err=True)
    raise SystemExit(code)


def _connection(ctx: click.Context, server: str | None, token: str | None, *, start: bool) -> Any:
    from codex_tui.config import ConfigError, resolve_connection

    parent = ctx.find_root().params
    try:
        conn = resolve_connection(server or parent.get("server"), token or parent.get("token"))
    except ConfigError as exc:
        _fail(str(exc))
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
    import asyncio

    import httpx

    from server_client.client import ApiError, CodexTuiClient

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
        from codex_tui.events.plain import JsonLinePrinter

        return JsonLinePrinter().print
    from codex_tui.events.plain import EventPrinter  # Rich Markdown, Pygments: only to print

    return EventPrinter().print


async def _follow(client: CodexTuiClient, task_id: str, after: int, as_json: bool) -> int:
    from server_client.models import TaskStatus

    show = _printer(as_json)
    final: TaskStatus | None = None
    async for event in client.stream_events(task_id, after=after):
        show(event)
        if event.is_terminal:
            final = event.status
    return 0 if final is TaskStatus.COMPLETED else EXIT_TASK_NOT_COMPLETED


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@connection_options
@click.option(
    "--theme",
    metavar="NAME",
    help="TUI theme: codex-dark, codex-light or codex-high-contrast (default: the last one "
    "chosen in the TUI, else config.toml's).",
)
@click.option("--no-bell", is_flag=True, help="TUI: no terminal bell when a task finishes.")
@click.option(
    "--no-desktop-notify",
    is_flag=True,
    help="TUI: no desktop notification (OSC 9) when a task finishes.",
)
@click.version_option(package_name="codex-tui")
@click.pass_context
def main(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    theme: str | None,
    no_bell: bool,
    no_desktop_notify: bool,
) -> None:
    """Run and watch OpenAI Codex agents on remote machines.

    With no command, opens the TUI (starting a local server in the background when none is
    configured or running). Its settings (theme, [keymap], [notify]) are read from
    config.toml in the config folder; see the README's Configuration section.
    """
    if ctx.invoked_subcommand is not None:
        return
    from codex_tui.config import ConfigError, load_tui_settings
    from codex_tui.state import default_state_path

    try:
        settings = load_tui_settings(
            theme=theme,
            bell=False if no_bell else None,
            desktop=False if no_desktop_notify else None,
        )
        conn = _connection(ctx, server, token, start=True)
    except ConfigError as exc:
        _fail(str(exc))
    from codex_tui.app import CodexTuiApp
    from server_client.client import CodexTuiClient

    client = CodexTuiClient(conn.server, conn.token)
    CodexTuiApp(
        client,
        default_workdir=os.getcwd(),
        close_client=True,
        settings=settings,
        state_path=default_state_path(),
    ).run()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port to bind.")
@click.option(
    "--db",
    "db_url",
    envvar="CODEX_TUI_SERVER_DB_URL",
    help="Database URL: sqlite:///PATH or postgresql://USER@HOST/DB "
    "(default: a SQLite file in the data folder).",
)
@click.option("--no-local-worker", is_flag=True, help="Do not start a worker beside the server.")
@worker_options
@click.option(
    "--lease-ttl",
    default=None,
    type=click.FloatRange(1, 3600),
    help="Seconds without a heartbeat after which a worker's running tasks end lost [default: 30].",
)
@click.option(
    "--sweep-interval",
    default=None,
    type=click.FloatRange(0.1, 600),
    help="Seconds between looks for lost leases [default: 5].",
)
@click.option(
    "--pairing-ttl",
    default=None,
    type=click.FloatRange(1, 86400),
    help="Seconds a pairing code stays valid [default: 600].",
)
@click.option(
    "--redis-url",
    envvar="CODEX_TUI_SERVER_REDIS_URL",
    help="Redis for rate-limit counters shared by replicas (default: in memory).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text or as one JSON object each (default: text; "
    "CODEX_TUI_SERVER_LOG_JSON=1 for json).",
)
@click.option(
    "--forwarded-allow-ips",
    envvar="FORWARDED_ALLOW_IPS",
    default=None,
    help="Proxies (comma-separated addresses, or *) whose X-Forwarded-For and "
    "X-Forwarded-Proto are trusted [default: 127.0.0.1,::1].",
)
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
    lease_ttl: float | None,
    sweep_interval: float | None,
    pairing_ttl: float | None,
    redis_url: str | None,
    log_format: str | None,
    forwarded_allow_ips: str | None,
    log_level: str,
) -> None:
    """Run the server (and, by default, one local worker).

    Everything else (guardrails, rate limits, metrics token) is set by CODEX_TUI_SERVER_*
    environment variables; see docs/deployment.md.
    """
    import pydantic
    from pydantic_settings import SettingsError

    from server_client.paths import AppDirs
    from server_client.server.logs import configure_logging
    from server_client.server.main import LocalWorkerOptions, run_server
    from server_client.server.settings import ServerSettings

    dirs = AppDirs.resolve().ensure()
    url = db_url or f"sqlite:///{dirs.data / 'codex-tui.db'}"
    roots = [os.path.abspath(os.path.expanduser(r)) for r in workdir_roots]
    overrides: dict[str, Any] = {"db_url": url}
    for key, value in (
        ("lease_ttl_s", lease_ttl),
        ("sweep_interval_s", sweep_interval),
        ("pairing_ttl_s", pairing_ttl),
    ):
        if value is not None:
            overrides[key] = value
    if roots:
        overrides["workdir_roots"] = roots
    if redis_url:
        overrides["redis_url"] = redis_url
    if log_format is not None:
        overrides["log_json"] = log_format == "json"
    try:
        settings = ServerSettings(**overrides)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        _fail(f"server setting {where} (CODEX_TUI_SERVER_{where.upper()}): {first['msg']}")
    except SettingsError as exc:
        _fail(f"server settings: {exc} (lists are JSON, e.g. '[\"gpt-5-codex\"]')")
    configure_logging(log_level, json_lines=settings.log_json)
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
        run_server(
            settings,
            host=host,
            port=port,
            local_worker=worker,
            log_level=log_level,
            forwarded_allow_ips=forwarded_allow_ips,
        )
    except ValueError as exc:
        _fail(str(exc))


@main.command()
@click.option("--server", "server_url", help="Server URL (default: the one it was paired with).")
@click.option("--pair", "code", help="Pairing code from `codex-tui pair` or the TUI (key w).")
@click.option(
    "--token",
    envvar="CODEX_TUI_TOKEN",
    help="A user token instead of pairing (or CODEX_TUI_TOKEN).",
)
@click.option("--name", default=None, help="Worker name (default: this host's name).")
@click.option("--label", "labels", multiple=True, help="A label for routing (repeatable).")
@worker_options
def worker(
    server_url: str | None,
    code: str | None,
    token: str | None,
    name: str | None,
    labels: tuple[str, ...],
    workdir_roots: tuple[str, ...],
    codex_bin: str | None,
    max_tasks: int,
    pass_env: tuple[str, ...],
    grace_s: float,
) -> None:
    """Run a worker: claim your tasks from the server and run codex for them.

    The first time, pair it with a code: `codex-tui worker --server URL --pair CODE`. Its
    token is saved (0600) in the config folder, so later a plain `codex-tui worker` (after a
    reboot, say) reconnects without a new code.
    """
    import socket

    from server_client.credentials import (
        WorkerCredentials,
        load_worker_credentials,
        save_worker_credentials,
    )
    from server_client.worker.main import WorkerSettings, run_worker

    saved = load_worker_credentials()
    if code:
        if not server_url:
            _fail("--pair needs --server URL (the command shown with the code has it)")
        assert server_url is not None
        import asyncio

        import httpx

        from server_client.client import ApiError, redeem_pairing_code

        hostname = socket.gethostname()
        try:
            result = asyncio.run(
                redeem_pairing_code(
                    server_url, code, name=name or hostname, hostname=hostname, labels=labels
                )
            )
        except ApiError as exc:
            _fail(f"pairing failed: {exc.problem.detail}; ask for a new code with `codex-tui pair`")
        except httpx.TransportError as exc:
            _fail(f"cannot reach the server at {server_url} ({type(exc).__name__})")
        path = save_worker_credentials(
            WorkerCredentials(
                server=server_url,
                token=result.token,
                name=result.worker.name,
                labels=tuple(labels),
            )
        )
        click.echo(f"paired as worker {result.worker.name!r}; token saved in {path}", err=True)
        token, name = result.token, result.worker.name
    elif token is None:
        if saved is None:
            _fail(
                "this worker is not paired: run `codex-tui pair` where you use codex-tui, "
                "then the command it prints here (codex-tui worker --server URL --pair CODE)"
            )
        assert saved is not None
        if server_url and server_url.rstrip("/") != saved.server.rstrip("/"):
            _fail(f"this worker is paired with {saved.server}; pair it again for {server_url}")
        server_url, token, name = saved.server, saved.token, name or saved.name
        labels = labels or saved.labels
    if not server_url:
        _fail("--token needs --server URL")
    assert server_url is not None and token is not None
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
        labels=list(labels),
    )
    run_worker(settings)


@main.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print the code as JSON.")
@click.pass_context
def pair(ctx: click.Context, server: str | None, token: str | None, as_json: bool) -> None:
    """Create a one-time pairing code (valid 10 minutes) for a worker on another machine."""
    conn = _connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        code = await client.create_pairing_code()
        if as_json:
            click.echo(code.model_dump_json())
            return
        expires = code.expires_at.astimezone().strftime("%H:%M")
        click.echo(f"Pairing code {code.code} (single use, expires at {expires}).")
        click.echo("On the other machine, run:")
        click.echo(f"  {code.command}")

    _run(conn, work)


@main.command()
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
        _fail("the prompt is empty")
    conn = _connection(ctx, server, token, start=True)
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
        _fail("--search takes at most 200 characters")
    conn = _connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        page = await client.list_tasks(status=statuses, q=search, worker=worker_name, limit=limit)
        for task in page.items:
            click.echo(task.model_dump_json() if as_json else _task_row(task))

    _run(conn, work)


@main.command()
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
    conn = _connection(ctx, server, token, start=True)

    async def work(client: CodexTuiClient) -> int:
        task = await client.rerun_task(task_id)
        click.echo(task.id)
        sys.stdout.flush()
        if not follow:
            return 0
        return await _follow(client, task.id, 0, as_json)

    raise SystemExit(_run(conn, work))


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
    from server_client.models import TaskStatus

    conn = _connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        task = await client.cancel_task(task_id)
        state = "cancel requested" if task.status is TaskStatus.RUNNING else task.status.value
        click.echo(f"{task.id} {state}")

    _run(conn, work)


def _default_db() -> str:
    from server_client.paths import AppDirs

    return f"sqlite:///{AppDirs.resolve().data / 'codex-tui.db'}"


def _admin_run(work: Coroutine[Any, Any, T]) -> T:
    import asyncio

    from server_client.server.store import StoreError

    try:
        return asyncio.run(work)
    except StoreError as exc:
        _fail(str(exc), 1)
    raise AssertionError("unreachable")


db_option = click.option(
    "--db",
    "db_url",
    default=None,
    envvar="CODEX_TUI_SERVER_DB_URL",
    help="Database URL (default: the local server's SQLite file).",
)


@main.group()
def admin() -> None:
    """Manage users, tokens and workers and read the audit log (on the server's machine,
    directly in its store)."""


@admin.group(name="user")
def admin_user() -> None:
    """Users."""


@admin_user.command(name="add")
@db_option
@click.argument("name")
def admin_user_add(db_url: str | None, name: str) -> None:
    """Create user NAME and print their token (shown only this once)."""
    from server_client.server import admin as ops

    user, token = _admin_run(ops.add_user(db_url or _default_db(), name))
    click.echo(f"created user {user.name}; their token (shown once):", err=True)
    click.echo(token)


@admin_user.command(name="list")
@db_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def admin_user_list(db_url: str | None, as_json: bool) -> None:
    """List users."""
    import json

    from server_client.server import admin as ops

    for user, created, live in _admin_run(ops.list_users(db_url or _default_db())):
        if as_json:
            row = {"id": user.id, "name": user.name, "created_at": created.isoformat()}
            click.echo(json.dumps({**row, "tokens": live}))
        else:
            click.echo(
                f"{user.name:<20} {user.id}  created {created:%Y-%m-%d %H:%M}  tokens {live}"
            )


@admin.group(name="token")
def admin_token() -> None:
    """Tokens (stored only as hashes: a lost token is revoked and replaced, never shown)."""


@admin_token.command(name="add")
@db_option
@click.argument("user")
def admin_token_add(db_url: str | None, user: str) -> None:
    """Create a new token for USER and print it (shown only this once)."""
    from server_client.server import admin as ops

    click.echo(_admin_run(ops.add_token(db_url or _default_db(), user)))


@admin_token.command(name="list")
@db_option
@click.option("--user", "user_name", help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def admin_token_list(db_url: str | None, user_name: str | None, as_json: bool) -> None:
    """List tokens: id, user, kind (user or worker), worker, created, revoked."""
    import dataclasses
    import json

    from server_client.server import admin as ops

    for info in _admin_run(ops.list_tokens(db_url or _default_db(), user_name)):
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(info), default=str))
            continue
        revoked = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
        worker = f" worker {info.worker}" if info.worker else ""
        click.echo(f"{info.id:>5}  {info.user:<16} {info.kind:<6}{worker}  {revoked}")


@admin_token.command(name="revoke")
@db_option
@click.option("--user", "user_name", help="Revoke every token of this user.")
@click.argument("token_ids", nargs=-1, type=int)
def admin_token_revoke(
    db_url: str | None, user_name: str | None, token_ids: tuple[int, ...]
) -> None:
    """Revoke tokens by id (see `admin token list`) or all of --user's; they fail at once."""
    from server_client.server import admin as ops

    if bool(token_ids) == bool(user_name):
        _fail("give token ids or --user NAME (one of the two)")
    count = _admin_run(ops.revoke_tokens(db_url or _default_db(), token_ids, user_name))
    click.echo(f"revoked {count} token(s)")
    if count == 0:
        raise SystemExit(1)


@admin.group(name="worker")
def admin_worker() -> None:
    """Workers: what they may run."""


@admin_worker.command(name="allow-danger")
@db_option
@click.option("--revoke", is_flag=True, help="Take the permission away again.")
@click.argument("user")
@click.argument("worker")
def admin_worker_allow_danger(db_url: str | None, revoke: bool, user: str, worker: str) -> None:
    """Let USER's worker WORKER run danger-full-access tasks (no sandbox at all).

    The server must also allow the mode: CODEX_TUI_SERVER_ALLOWED_SANDBOXES.
    """
    from server_client.server import admin as ops

    got = _admin_run(ops.set_worker_danger(db_url or _default_db(), user, worker, not revoke))
    verb = "may" if got.allow_danger else "may no longer"
    click.echo(f"worker {got.name} of {user} {verb} run danger-full-access tasks")


def _since(value: str | None) -> datetime | None:
    """``--since``: an ISO 8601 time (UTC when no zone) or an age such as 30m, 2h, 7d."""
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"--since {value!r}: give an ISO time (2026-11-21T09:00) or an age (30m, 2h, 7d)")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@admin.command(name="audit")
@db_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--user", "user_name", help="Only rows of this user.")
@click.option("--action", help="Only this action, e.g. task.create, task.cancel, pairing.redeem.")
@click.option("--task", "task_id", help="Only rows about this task.")
@click.option("--since", help="Only rows since an ISO time or an age (30m, 2h, 7d).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
def admin_audit(
    db_url: str | None,
    as_json: bool,
    user_name: str | None,
    action: str | None,
    task_id: str | None,
    since: str | None,
    limit: int,
) -> None:
    """Print the audit log: one row per state-changing call, oldest of the newest LIMIT first.

    Columns: time, actor, owner, action, target, request id, client address, detail.
    """
    import json

    from server_client.server import admin as ops

    rows = _admin_run(
        ops.read_audit(
            db_url or _default_db(),
            user_name=user_name,
            action=action,
            target=f"task:{task_id}" if task_id else None,
            since=_since(since),
            limit=limit,
        )
    )
    for row in rows:
        if as_json:
            click.echo(json.dumps(row.as_dict()))
            continue
        detail = " ".join(f"{k}={v}" for k, v in row.detail.items() if v is not None)
        click.echo(
            f"{row.at:%Y-%m-%d %H:%M:%S} {row.actor:<22} {row.owner or '-':<12} "
            f"{row.action:<18} {row.target or '-':<26} {row.request_id or '-':<16} "
            f"{row.client_addr or '-':<15} {detail}".rstrip()
        )
