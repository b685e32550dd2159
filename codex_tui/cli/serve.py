"""Provides ``codex-tui server`` and ``codex-tui worker``: where the server and the worker are
put together (they never import each other; the server gets its local worker's settings from
here, as :class:`server_client.server.main.LocalWorker`).

A worker's options are declared once, as :class:`server_client.worker.settings.
WorkerSettings`; :func:`worker_options` gives both commands the flags for them, which fill
the settings (a flag not given leaves the field to its ``CODEX_TUI_WORKER_*`` variable, else
its default). The server's local worker gets the same settings as environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

from codex_tui.cli.common import (
    DEFAULT_PORT,
    default_db_url,
    fail,
    given_token,
    token_file_option,
)

if TYPE_CHECKING:
    from server_client.worker.settings import WorkerSettings

__all__ = ["server", "worker", "worker_options"]

#: ``WorkerSettings``' defaults for the flags that show one, spelled out so that building
#: the commands needs no pydantic; tests/test_worker_settings.py checks that they match.
DEFAULT_MAX_TASKS = 4
DEFAULT_GRACE_S = 2.0

#: The flag of each worker setting that has one (for error messages).
WORKER_FLAGS = {
    "workdir_roots": "--workdir-root",
    "codex_bin": "--codex-bin",
    "max_tasks": "--max-tasks",
    "pass_env": "--pass-env",
    "grace_s": "--cancel-grace",
    "runtime": "--runtime",
    "workspace_root": "--workspace-root",
    "name": "--name",
    "labels": "--label",
    "server": "--server",
    "token": "--token",
}

#: The flag of each server setting that has one (for error messages).
SERVER_FLAGS = {
    "db_url": "--db (or CODEX_TUI_SERVER_DB_URL)",
    "workdir_roots": "--workdir-root",
    "lease_ttl_s": "--lease-ttl",
    "sweep_interval_s": "--sweep-interval",
    "pairing_ttl_s": "--pairing-ttl",
    "redis_url": "--redis-url (or CODEX_TUI_SERVER_REDIS_URL)",
    "log_json": "--log-format",
    "trusted_proxies": "--trusted-proxies (or CODEX_TUI_SERVER_TRUSTED_PROXIES)",
}


def worker_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the flags of :class:`WorkerSettings` that both ``codex-tui worker`` and the
    server's local worker take; each reaches the command as the field's name."""
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
        click.option(
            "--max-tasks", type=int, help=f"Tasks at once.  [default: {DEFAULT_MAX_TASKS}]"
        ),
        click.option(
            "--pass-env", multiple=True, help="Environment variable passed through to codex."
        ),
        click.option(
            "--cancel-grace",
            "grace_s",
            type=float,
            help="Seconds (0-60) between SIGINT and SIGKILL when a task is cancelled.  "
            f"[default: {DEFAULT_GRACE_S}]",
        ),
        click.option(
            "--workspace-root",
            help="Folder for the checkouts of tasks submitted with a repository "
            "[default: the data folder's workspaces].",
        ),
        click.option(
            "--runtime",
            type=click.Choice(["app-server", "exec"]),
            help="How to run a task that does not ask for a runtime: app-server (replies, "
            "approvals, live output) or exec (one-shot).  [default: app-server]",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _worker_settings(flags: Mapping[str, Any], **values: Any) -> WorkerSettings:
    """Build the worker's settings from the flags (field name → value; None or empty: not
    given) and ``values`` (set by the command itself); exits 2 with a message naming the
    flag or variable when one is invalid."""
    import pydantic
    from pydantic_settings import SettingsError

    from codex_tui.config import describe_settings_error
    from server_client.worker.settings import ENV_PREFIX, WorkerSettings

    given = {name: value for name, value in flags.items() if value not in (None, ())}
    try:
        return WorkerSettings.model_validate({**given, **values})
    except (pydantic.ValidationError, SettingsError) as exc:
        named = {name: WORKER_FLAGS[name] for name in given if name in WORKER_FLAGS}
        fail(
            describe_settings_error(exc, env_prefix=ENV_PREFIX, flags=named, what="worker settings")
        )


#: The variable that sets the local server's port, for the TUI and ``submit`` (which look
#: for the server there) and for ``codex-tui server`` (which listens there).
LOCAL_PORT_ENV = "CODEX_TUI_LOCAL_PORT"
#: ``codex-tui server status``'s exit code when no server runs (LSB's "program is not
#: running"); 0 when one runs.
EXIT_NOT_RUNNING = 3


def _default_port() -> int:
    """``CODEX_TUI_LOCAL_PORT`` when set, else :data:`DEFAULT_PORT`; exits 2 with a message
    naming the variable when it is not a port number (1-65535)."""
    raw = os.environ.get(LOCAL_PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        fail(f"environment variable {LOCAL_PORT_ENV}: not a port number 1-65535 (got {raw!r})")
    return port


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65535),
    help=f"Port to bind.  [default: {LOCAL_PORT_ENV}, else {DEFAULT_PORT}]",
)
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
    "--trusted-proxies",
    "--forwarded-allow-ips",
    "trusted_proxies",
    default=None,
    help="Reverse proxies in front of the server (comma-separated addresses or networks, "
    "e.g. 127.0.0.1 for nginx on this machine): only requests from them have their "
    "X-Forwarded-For and X-Forwarded-Proto believed [default: CODEX_TUI_SERVER_TRUSTED_PROXIES, "
    "else none].",
)
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def server(
    ctx: click.Context,
    /,
    host: str,
    port: int | None,
    db_url: str | None,
    no_local_worker: bool,
    lease_ttl: float | None,
    sweep_interval: float | None,
    pairing_ttl: float | None,
    redis_url: str | None,
    log_format: str | None,
    trusted_proxies: str | None,
    log_level: str,
    **worker_flags: Any,
) -> None:
    """Run the server in the foreground (and, by default, one local worker); `server status`
    and `server stop` look after the one that runs.

    One server runs per state folder (CODEX_TUI_HOME): a second one is refused. The local
    worker outlives the server, so that stopping or restarting the server never stops a
    task; the next server adopts it (`server stop --with-worker` stops both).

    Everything else (guardrails, rate limits, metrics token) is set by CODEX_TUI_SERVER_*
    environment variables; see docs/deployment.md.
    """
    if ctx.invoked_subcommand is not None:
        return
    if port is None:
        port = _default_port()
    import pydantic
    from pydantic import SecretStr
    from pydantic_settings import SettingsError

    from codex_tui.config import describe_settings_error
    from server_client.paths import AppDirs
    from server_client.server.logs import configure_logging
    from server_client.server.main import LocalWorker, client_url, run_server
    from server_client.server.settings import ServerSettings

    AppDirs.resolve().ensure()
    overrides: dict[str, Any] = {"db_url": db_url or default_db_url()}
    for key, value in (
        ("lease_ttl_s", lease_ttl),
        ("sweep_interval_s", sweep_interval),
        ("pairing_ttl_s", pairing_ttl),
        ("redis_url", redis_url),
        ("trusted_proxies", trusted_proxies),
    ):
        if value is not None:
            overrides[key] = value
    roots = worker_flags["workdir_roots"]
    if roots:
        overrides["workdir_roots"] = [os.path.abspath(os.path.expanduser(r)) for r in roots]
    if log_format is not None:
        overrides["log_json"] = log_format == "json"
    try:
        settings = ServerSettings.model_validate(overrides)
    except (pydantic.ValidationError, SettingsError) as exc:
        flags = {name: SERVER_FLAGS[name] for name in overrides if db_url or name != "db_url"}
        fail(
            describe_settings_error(
                exc, env_prefix="CODEX_TUI_SERVER_", flags=flags, what="server settings"
            )
        )
    configure_logging(log_level, json_lines=settings.log_json)
    local_worker = None
    if not no_local_worker:
        # The server issues the local worker's token when it starts; until then a stand-in.
        local = _worker_settings(
            worker_flags,
            server=client_url(host, port),
            token="-",
            name="local",
            workdir_roots=list(settings.workdir_roots),
            # The operator's repository policy holds for the worker beside the server too.
            repo_url_schemes=list(settings.repo_url_schemes),
            repo_url_hosts=list(settings.repo_url_hosts),
        )
        local_worker = LocalWorker(
            environ=lambda url, token: local.model_copy(
                update={"server": url, "token": SecretStr(token)}
            ).environ(),
            stop_timeout_s=local.grace_s + 10.0,
        )
    try:
        run_server(
            settings,
            host=host,
            port=port,
            local_worker=local_worker,
            log_level=log_level,
        )
    except ValueError as exc:
        fail(str(exc))


@server.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def status(as_json: bool) -> None:
    """Whether a server runs for this state folder: its pid, URL and local worker's pid.

    Exits 0 when one runs, 3 when none does (LSB's "program is not running"; a local worker
    left running is reported then too).
    """
    import json

    from codex_tui.launcher import server_is_up
    from server_client.paths import AppDirs
    from server_client.server.main import local_worker_pid, running_server

    dirs = AppDirs.resolve()
    record = running_server(dirs)
    worker_pid = local_worker_pid(dirs)
    answers = record is not None and server_is_up(record.url)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "running": record is not None,
                    "pid": record.pid if record else None,
                    "url": record.url if record else None,
                    "answers": answers,
                    "worker_pid": worker_pid,
                    "state": str(dirs.state),
                }
            )
        )
    elif record is None:
        click.echo(f"no codex-tui server runs for the state folder {dirs.state}")
        if worker_pid is not None:
            click.echo(
                f"its local worker still runs (pid {worker_pid}): the next `codex-tui server` "
                "adopts it; `codex-tui server stop --with-worker` stops it"
            )
    else:
        click.echo(
            f"codex-tui server running: pid {record.pid}, {record.url}"
            + ("" if answers else " (not answering yet)")
        )
        click.echo(
            f"local worker: pid {worker_pid}" if worker_pid is not None else "local worker: none"
        )
    raise SystemExit(0 if record is not None else EXIT_NOT_RUNNING)


@server.command()
@click.option(
    "--with-worker",
    is_flag=True,
    help="Stop the local worker too (first, so that it reports its cancelled tasks); without "
    "it the worker and its tasks go on and the next server adopts them.",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1, 600),
    help="Seconds each process may take to exit after SIGTERM before it is killed.",
)
def stop(with_worker: bool, timeout_s: float) -> None:
    """Stop the server that runs for this state folder (SIGTERM, then wait).

    Only that process: the one the server recorded in the state folder, checked by its pid,
    start time and user. Exits 0 when what was asked is stopped (or was not running), 1 when
    a process had to be killed after --timeout.
    """
    from server_client.paths import AppDirs
    from server_client.server.main import (
        LOCAL_WORKER_PIDFILE,
        local_worker_pid,
        running_server,
        stop_process,
    )

    dirs = AppDirs.resolve()
    record = running_server(dirs)
    worker_pid = local_worker_pid(dirs)
    code = 0
    if with_worker and worker_pid is not None:
        outcome = stop_process(worker_pid, timeout_s)
        (dirs.state / LOCAL_WORKER_PIDFILE).unlink(missing_ok=True)
        if outcome == "killed":
            code = 1
            click.echo(
                f"the local worker (pid {worker_pid}) did not exit in {timeout_s:g} s: killed"
            )
        else:
            click.echo(f"stopped the local worker (pid {worker_pid}) and cancelled its tasks")
    if record is None:
        click.echo(f"no codex-tui server runs for the state folder {dirs.state}")
    else:
        outcome = stop_process(record.pid, timeout_s, record.create_time)
        if outcome == "killed":
            code = 1
            click.echo(f"the server (pid {record.pid}) did not exit in {timeout_s:g} s: killed")
        else:
            click.echo(f"stopped the server (pid {record.pid}, {record.url})")
    if not with_worker and worker_pid is not None:
        click.echo(
            f"its local worker (pid {worker_pid}) runs on with its tasks; the next "
            "`codex-tui server` adopts it (`codex-tui server stop --with-worker` stops it)"
        )
    raise SystemExit(code)


@click.command()
@click.option("--server", "server_url", help="Server URL (default: the one it was paired with).")
@click.option("--pair", "code", help="Pairing code from `codex-tui pair` or the TUI (key w).")
@click.option(
    "--token",
    envvar="CODEX_TUI_TOKEN",
    help="A user token instead of pairing (or CODEX_TUI_TOKEN). A flag's value is visible to "
    "every user of this machine in `ps`: prefer CODEX_TUI_TOKEN or --token-file.",
)
@token_file_option
@click.pass_context
@click.option("--name", default=None, help="Worker name (default: this host's name).")
@click.option("--label", "labels", multiple=True, help="A label for routing (repeatable).")
@worker_options
def worker(
    ctx: click.Context,
    /,
    server_url: str | None,
    code: str | None,
    token: str | None,
    name: str | None,
    labels: tuple[str, ...],
    **worker_flags: Any,
) -> None:
    """Run a worker: claim your tasks from the server and run codex for them.

    The first time, pair it with a code: `codex-tui worker --server URL --pair CODE`. Its
    token is saved (0600) in the config folder, so later a plain `codex-tui worker` (after a
    reboot, say) reconnects without a new code.
    """
    import socket

    # Highest first: --token or --token-file (not both), CODEX_TUI_TOKEN_FILE, CODEX_TUI_TOKEN,
    # as for every other command.
    token, _named_by = given_token(ctx, token)

    from server_client.credentials import (
        WorkerCredentials,
        load_worker_credentials,
        save_worker_credentials,
    )
    from server_client.worker.main import run_worker

    saved = load_worker_credentials()
    if code:
        if not server_url:
            fail("--pair needs --server URL (the command shown with the code has it)")
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
            fail(f"pairing failed: {exc.problem.detail}; ask for a new code with `codex-tui pair`")
        except httpx.TransportError as exc:
            fail(f"cannot reach the server at {server_url} ({type(exc).__name__})")
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
            fail(
                "this worker is not paired: run `codex-tui pair` where you use codex-tui, "
                "then the command it prints here (codex-tui worker --server URL --pair CODE)"
            )
        if server_url and server_url.rstrip("/") != saved.server.rstrip("/"):
            fail(f"this worker is paired with {saved.server}; pair it again for {server_url}")
        server_url, token, name = saved.server, saved.token, name or saved.name
        labels = labels or saved.labels
    if not server_url:
        fail("--token needs --server URL")
    flags = {"server": server_url, "token": token, "name": name, "labels": labels}
    settings = _worker_settings({**worker_flags, **flags})
    run_worker(settings)
