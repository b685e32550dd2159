"""Provides what the ``codex-tui`` verbs share: exit codes, failing with a message, the
``--server``/``--token`` options, running an SDK call, and the choices spelled out cheaply.

Start-up time: this module imports only click and :mod:`server_client.enums` (no pydantic);
whatever else a verb needs it imports inside its callback (tests/test_tui_startup.py).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from server_client.enums import ApprovalPolicy, Runtime, Sandbox, TaskStatus

if TYPE_CHECKING:
    from codex_tui.config import ResolvedConnection
    from server_client.client import CodexTuiClient

__all__ = [
    "APPROVAL_POLICIES",
    "DEFAULT_APPROVAL_POLICY",
    "DEFAULT_PORT",
    "DEFAULT_SANDBOX",
    "EXIT_TASK_NOT_COMPLETED",
    "EXIT_USAGE",
    "ID",
    "RUNTIMES",
    "SANDBOXES",
    "TASK_STATUSES",
    "ConnectionProblem",
    "GivenConnection",
    "PipeSafeGroup",
    "connection",
    "connection_options",
    "default_db_url",
    "fail",
    "given_connection",
    "given_option",
    "given_token",
    "open_connection",
    "read_token_file",
    "run_client",
]

T = TypeVar("T")

#: Exit code of ``--follow`` (and ``logs -f``) when the task ended but did not complete.
EXIT_TASK_NOT_COMPLETED = 1
#: Exit code of usage and connection problems.
EXIT_USAGE = 2

#: ``codex_tui.config.DEFAULT_PORT`` (the local server's port), spelled out so that building
#: the commands needs no pydantic; tests/test_tui_startup.py checks that they match.
DEFAULT_PORT = 8765
#: The values of :class:`server_client.enums.Sandbox`, and the default for a new task.
SANDBOXES = tuple(sandbox.value for sandbox in Sandbox)
DEFAULT_SANDBOX = Sandbox.WORKSPACE_WRITE.value
#: The values of :class:`server_client.enums.ApprovalPolicy` (codex's ``-a``), and the default.
APPROVAL_POLICIES = tuple(policy.value for policy in ApprovalPolicy)
DEFAULT_APPROVAL_POLICY = ApprovalPolicy.NEVER.value
#: The values of :class:`server_client.enums.Runtime`.
RUNTIMES = tuple(runtime.value for runtime in Runtime)
#: The values of :class:`server_client.enums.TaskStatus`.
TASK_STATUSES = tuple(status.value for status in TaskStatus)


class IdType(click.ParamType[str, Any]):
    """A task's or an approval's id: letters, digits, ``-`` and ``_``, 1 to 64 of them. An
    empty or malformed id is a usage error naming the argument, not a request that the
    server answers 404 (or that lands on another route: ``logs ""``)."""

    name = "id"
    _SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """``value`` when it has an id's shape, else a usage error (exit 2)."""
        text = str(value)
        if not text.strip():
            self.fail("is empty: give an id, as `codex-tui ls` lists them", param, ctx)
        if not self._SHAPE.fullmatch(text):
            self.fail(
                f"{text[:64]!r} is not an id (letters, digits, - and _): copy one from "
                "`codex-tui ls`",
                param,
                ctx,
            )
        return text


#: The type of every task id and approval id argument.
ID = IdType()


class PipeSafeGroup(click.Group):
    """A group whose commands stop quietly, exit 0, when their reader goes away
    (``codex-tui ls | head -1``): a closed stdout pipe is the reader saying it has enough.

    Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError; click's own
    handling of it exits 1. Here it is caught around every subcommand, once, and stdout is
    pointed at /dev/null so that the interpreter's last flush does not fail again.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; a BrokenPipeError ends it with exit 0 and nothing printed."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _silence_stdout()
            raise SystemExit(0) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null (what is still buffered for the closed pipe is dropped)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (a test's capture): nothing to flush
        pass
    finally:
        os.close(devnull)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``codex-tui: MESSAGE`` on stderr and exit with ``code``."""
    click.echo(f"codex-tui: {message}", err=True)
    raise SystemExit(code)


#: ``--token``'s help, for every command that takes one: a flag's value is visible to
#: every user of the machine (``ps``, ``/proc/PID/cmdline``), so it says what to use instead.
TOKEN_HELP = (
    "Token (default: the stored one, from `codex-tui login`). A flag's value is visible to "
    "every user of this machine in `ps`: prefer CODEX_TUI_TOKEN or --token-file."
)
#: ``--token-file``'s help.
TOKEN_FILE_HELP = (
    "Read the token from the first line of this file (or of stdin with `-`); or "
    "CODEX_TUI_TOKEN_FILE. Kept out of `ps`, unlike --token."
)
#: Where :func:`take_token_file` leaves the token it read, in ``click.Context.meta`` (shared
#: by a command and its group): ``(token, what named it)``.
_TOKEN_FILE_META = "codex_tui.token_file"


def read_token_file(path: str, named_by: str = "--token-file") -> str:
    """The token on the first line of the file ``path`` (``-``: stdin), without surrounding
    blanks; exits 2 naming ``named_by`` and the path when it cannot be read or is empty."""
    try:
        if path == "-":
            line = sys.stdin.readline()
        else:
            with open(path, encoding="utf-8") as file:
                line = file.readline()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        fail(f"{named_by}: cannot read the token from {path} ({reason})")
    token = line.strip()
    if not token:
        where = "stdin" if path == "-" else path
        fail(f"{named_by}: no token in {where} (its first line is empty)")
    return token


def take_token_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--token-file``'s callback: leave ``(token, named_by, path)`` in ``ctx.meta``. The flag's
    file is read now (``-`` is stdin, read once); ``CODEX_TUI_TOKEN_FILE``'s only when it is
    the token used (:func:`given_token`), so a ``--token`` flag works beside a variable naming
    a file that cannot be read."""
    if not value:
        return
    source = ctx.get_parameter_source(param.name or "token_file")
    if source is ParameterSource.ENVIRONMENT:
        ctx.meta.setdefault(_TOKEN_FILE_META, (None, "CODEX_TUI_TOKEN_FILE", value))
    else:
        ctx.meta[_TOKEN_FILE_META] = (read_token_file(value, "--token-file"), "--token-file", value)


#: ``--token-file PATH`` (or ``CODEX_TUI_TOKEN_FILE``): read at parse time into ``ctx.meta``
#: (:func:`take_token_file`), where :func:`given_token` finds it; not passed to the command.
token_file_option = click.option(
    "--token-file",
    envvar="CODEX_TUI_TOKEN_FILE",
    metavar="PATH",
    expose_value=False,
    callback=take_token_file,
    help=TOKEN_FILE_HELP,
)


def connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--server``, ``--token`` and ``--token-file`` to a command (the last one is read
    at parse time; :func:`given_token` finds its token)."""
    func = token_file_option(func)
    func = click.option("--token", envvar="CODEX_TUI_TOKEN", help=TOKEN_HELP)(func)
    return click.option(
        "--server", envvar="CODEX_TUI_SERVER", help="Server URL (default: the stored one)."
    )(func)


def given_token(ctx: click.Context, token: str | None) -> tuple[str | None, str]:
    """The token given to the command or its group and what gave it, highest first:
    ``--token`` or ``--token-file`` (both at once: a usage error, exit 2),
    ``CODEX_TUI_TOKEN_FILE``, ``CODEX_TUI_TOKEN``; ``(None, "--token")`` when none is."""
    found, named_by = given_option(ctx, "token", token)
    from_file = ctx.meta.get(_TOKEN_FILE_META)
    if from_file is None:
        return found, named_by
    filed, file_named_by, path = from_file
    if found and named_by == "--token":
        if file_named_by == "--token-file":
            fail("give the token once: --token or --token-file, not both")
        return found, named_by
    if filed is None:
        filed = read_token_file(path, file_named_by)
        ctx.meta[_TOKEN_FILE_META] = (filed, file_named_by, path)
    return filed, file_named_by


def given_option(ctx: click.Context, name: str, value: str | None) -> tuple[str | None, str]:
    """The value of the option ``name`` (``server``/``token``) from the command or, failing
    that, the root group, and what set it: the flag, or the variable click read it from."""
    variable = f"CODEX_TUI_{name.upper()}"
    for where in (ctx, ctx.find_root()):
        found = value if where is ctx else where.params.get(name)
        if found:
            source = where.get_parameter_source(name)
            return found, variable if source is ParameterSource.ENVIRONMENT else f"--{name}"
    return None, f"--{name}"


class ConnectionProblem(Exception):
    """Where to connect could not be settled; the message names the fix (what
    :func:`connection` prints before exiting 2)."""


@dataclass(frozen=True)
class GivenConnection:
    """The ``--server``/``--token`` a verb was given (None: not given) and what gave each:
    the flag, the variable click read it from, or the token file (:func:`given_token`).
    Read from click's context before anything else runs: a ``--token-file -`` reads stdin.
    """

    server: str | None
    server_from: str
    token: str | None
    token_from: str


def given_connection(ctx: click.Context, server: str | None, token: str | None) -> GivenConnection:
    """The ``--server``/``--token`` given to the command or its group (the group's count
    too), the token file read if one was named.

    Raises:
        SystemExit: exit 2, the token was given twice or its file cannot be read
            (:func:`given_token`).
    """
    server, server_from = given_option(ctx, "server", server)
    token, token_from = given_token(ctx, token)
    return GivenConnection(server, server_from, token, token_from)


def open_connection(given: GivenConnection, *, start: bool) -> ResolvedConnection:
    """Where a verb connects, by codex_tui.config's precedence applied to ``given``; with
    ``start``, a local server is started when none is configured or running
    (codex_tui.launcher). Needs no click context, so the TUI runs it in a thread after its
    first frame.

    Raises:
        ConnectionProblem: config.toml or a variable is invalid, the URL is malformed, the
            local server could not be started, the server cannot be reached without a token
            to try, or no token is known; the message names the fix.
    """
    from codex_tui.config import ConfigError, resolve_connection

    try:
        conn = resolve_connection(
            given.server,
            given.token,
            server_from=given.server_from,
            token_from=given.token_from,
        )
    except ConfigError as exc:
        raise ConnectionProblem(str(exc)) from None
    if start:
        from codex_tui.launcher import LauncherError, ensure_local_server

        try:
            conn = ensure_local_server(conn)
        except LauncherError as exc:
            raise ConnectionProblem(str(exc)) from None
    if not conn.token:
        from codex_tui.launcher import server_is_up

        if not server_is_up(conn.server, timeout_s=3.0):
            raise ConnectionProblem(
                f"cannot connect to {conn.server} (named by {conn.server_from}): check the "
                "URL, or start a server there with `codex-tui server`"
            )
        raise ConnectionProblem(
            f"no token for {conn.server}: run `codex-tui login --server {conn.server}`, or "
            "pass --token or set CODEX_TUI_TOKEN (a local server stores one for you on its "
            "first start: `codex-tui server`)"
        )
    return conn


def connection(
    ctx: click.Context, server: str | None, token: str | None, *, start: bool
) -> ResolvedConnection:
    """Where a verb connects (:func:`given_connection`, then :func:`open_connection`).
    Exits 2 with a message naming the fix when that fails."""
    try:
        return open_connection(given_connection(ctx, server, token), start=start)
    except ConnectionProblem as exc:
        fail(str(exc))


def run_client(conn: ResolvedConnection, work: Callable[[CodexTuiClient], Awaitable[T]]) -> T:
    """Run ``work`` with an SDK client of ``conn`` and return its result.

    A refusal, an unreachable server and Ctrl-C end the command: exit 2 with the server's
    problem or what to do, 130 on Ctrl-C.
    """
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
        fail(f"{exc.status} {exc.problem.title}: {detail}")
    except httpx.TransportError as exc:
        fail(
            f"cannot connect to {conn.server} (named by {conn.server_from}; "
            f"{type(exc).__name__}): check the URL, or start a server there with "
            "`codex-tui server`"
        )
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def default_db_url() -> str:
    """The local server's store: a SQLite file in the data folder."""
    from server_client.paths import AppDirs

    return f"sqlite:///{AppDirs.resolve().data / 'codex-tui.db'}"
