"""Provides ``login``, ``logout`` and ``status``: which server and user the verbs use.

``login --server URL`` reads a user token (with getpass on a terminal, else one line of
stdin), checks it with ``GET /api/me``, stores it for that URL (server_client.credentials:
the keyring, else a 0600 file) and makes URL the server used when no ``--server`` or
``CODEX_TUI_SERVER`` names one. ``logout`` forgets it. ``status`` says which server, user and
token are in use and where each came from. A token is never printed.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from codex_tui.cli.common import (
    connection_options,
    fail,
    given_option,
    given_token,
    run_client,
)

if TYPE_CHECKING:
    from codex_tui.config import ResolvedConnection
    from server_client.client import CodexTuiClient
    from server_client.models import Me

__all__ = ["login", "logout", "status"]


def _read_token() -> str:
    """The token typed at a hidden prompt (a terminal), else stdin's first line."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("Token (input hidden): ").strip()
    return sys.stdin.readline().strip()


@click.command()
@click.option(
    "--server",
    envvar="CODEX_TUI_SERVER",
    help="Server URL (default: the one in use, see `codex-tui status`).",
)
@click.pass_context
def login(ctx: click.Context, server: str | None) -> None:
    """Store a user token for a server and use that server from now on. The token is read
    hidden from the terminal, or from stdin (`printenv TOKEN | codex-tui login --server URL`),
    and checked with the server before it is stored."""
    from codex_tui.config import ConfigError, resolve_connection
    from server_client.credentials import save_current_server, save_token

    given, named_by = given_option(ctx, "server", server)
    try:
        url = resolve_connection(given, server_from=named_by).server
    except ConfigError as exc:
        fail(str(exc))
    token = _read_token()
    if not token:
        fail("no token given: type it at the prompt, or pipe it in on stdin")
    conn = _checked(url, token)
    me = _whoami(conn)
    where = save_token(url, token)
    save_current_server(url)
    place = "the keyring" if where == "keyring" else "a 0600 file in the config folder"
    click.echo(f"logged in to {url} as {me.name} (token stored in {place})")


def _checked(url: str, token: str) -> ResolvedConnection:
    """A connection to ``url`` with ``token`` (for :func:`run_client`)."""
    from codex_tui.config import ResolvedConnection

    return ResolvedConnection(server=url, token=token, explicit=True, server_from="--server")


def _whoami(conn: ResolvedConnection) -> Me:
    """``GET /api/me`` with ``conn``; a refused token exits 2 naming the fix."""
    from server_client.client import ApiError

    async def work(client: CodexTuiClient) -> Me | None:
        try:
            return await client.me()
        except ApiError as exc:
            if exc.status in (401, 403):
                return None
            raise

    me = run_client(conn, work)
    if me is None:
        fail(
            f"{conn.server} refused the token (from {conn.token_from or 'the prompt'}): check "
            "it, or have the server's admin make one: `codex-tui admin add-token USER`"
        )
    return me


@click.command()
@click.option(
    "--server",
    envvar="CODEX_TUI_SERVER",
    help="Server URL (default: the one in use, see `codex-tui status`).",
)
@click.pass_context
def logout(ctx: click.Context, server: str | None) -> None:
    """Forget the stored token of a server (and stop using it by default)."""
    from codex_tui.config import ConfigError, resolve_connection
    from server_client.credentials import delete_token

    given, named_by = given_option(ctx, "server", server)
    try:
        url = resolve_connection(given, server_from=named_by).server
    except ConfigError as exc:
        fail(str(exc))
    if delete_token(url):
        click.echo(f"logged out of {url} (its stored token is gone)")
    else:
        click.echo(f"codex-tui: no token was stored for {url}", err=True)


@click.command()
@connection_options
@click.pass_context
def status(ctx: click.Context, server: str | None, token: str | None) -> None:
    """Say which server and user the commands use, and where each came from. Exits 2 when
    there is no token, the server cannot be reached or it refuses the token."""
    from codex_tui.config import ConfigError, resolve_connection

    given, server_from = given_option(ctx, "server", server)
    token_given, token_from = given_token(ctx, token)
    try:
        conn = resolve_connection(
            given, token_given, server_from=server_from, token_from=token_from
        )
    except ConfigError as exc:
        fail(str(exc))
    click.echo(f"server: {conn.server} (from {conn.server_from})")
    if not conn.token:
        click.echo("token:  none")
        fail(f"not logged in to {conn.server}: run `codex-tui login --server {conn.server}`")
    click.echo(f"token:  from {conn.token_from}")
    me = _whoami(conn)
    click.echo(f"user:   {me.name}")
