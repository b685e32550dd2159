"""Provides ``codex-tui web``: the TUI served to a browser (codex_tui.web), behind a sign-in
with the codex-tui server's own tokens."""

from __future__ import annotations

import click

from codex_tui.cli.common import fail

#: Default port of ``codex-tui web``.
DEFAULT_WEB_PORT = 8780
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@click.command("web")
@click.option(
    "--server",
    envvar="CODEX_TUI_SERVER",
    help="The codex-tui server the browser's TUI uses and checks tokens with "
    "(default: the stored one, else the local server).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; keep loopback and put a TLS proxy in front for remote use.",
)
@click.option("--port", default=DEFAULT_WEB_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--max-sessions",
    default=4,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Most TUI processes at once (one per signed-in browser session).",
)
@click.option(
    "--public-url",
    metavar="URL",
    help="The URL browsers use, e.g. https://tui.example.com behind a proxy: the expected "
    "WebSocket origin, and Secure cookies when https (default: the Host of each request).",
)
@click.option(
    "--idle-timeout",
    default=12 * 3600,
    show_default=True,
    type=click.IntRange(60),
    metavar="SECONDS",
    help="A session without a request for this long ends.",
)
def web(
    server: str | None,
    host: str,
    port: int,
    max_sessions: int,
    public_url: str | None,
    idle_timeout: int,
) -> None:
    """Serve the TUI to a web browser.

    Browsers sign in by pasting their codex-tui token (checked with the server); each
    signed-in session runs its own TUI with that token. See the README, "The TUI in a
    browser", and docs/deployment.md for the security model.
    """
    import logging
    from urllib.parse import urlsplit

    from aiohttp import web as aiohttp_web

    from codex_tui.config import ConfigError, resolve_connection
    from codex_tui.web import WebConfig, WebServer

    try:
        conn = resolve_connection(server, None)
    except ConfigError as exc:
        fail(str(exc))
    if public_url is not None:
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            fail(f"--public-url must be http(s)://HOST[:PORT] without a path (got {public_url})")
    if host not in _LOOPBACK and not (public_url or "").startswith("https:"):
        click.echo(
            f"codex-tui web: warning: listening on {host} without TLS; tokens and the session "
            "cookie cross the network in clear (put it behind an https proxy, --public-url)",
            err=True,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = WebConfig(
        server=conn.server,
        max_sessions=max_sessions,
        public_url=public_url,
        idle_s=float(idle_timeout),
    )
    shown = public_url or f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    click.echo(
        f"codex-tui web: serving {conn.server}'s TUI on {shown}/ "
        "(sign in with your codex-tui token)",
        err=True,
    )
    aiohttp_web.run_app(
        WebServer(config).make_app(), host=host, port=port, print=None, shutdown_timeout=15
    )
