"""Provides the server of ``codex-tui web``: the TUI served to a browser, behind a sign-in.

The page is textual-serve's terminal (xterm.js, its ``textual.js`` and static files, run by
its :class:`~textual_serve.app_service.AppService`); the HTTP server around it is this
module's own, because textual-serve's has no authentication and no origin check.

Security model (docs/deployment.md, "The TUI in a browser"):

- **Sign-in with the codex-tui server's own tokens.** ``GET /login`` is a form where the user
  pastes a user token; ``POST /login`` checks it against the server's ``GET /api/me`` and, when
  the server accepts it, opens a session: a random 256-bit id in an ``HttpOnly``,
  ``SameSite=Strict`` cookie (``Secure`` when the public URL is https). The token stays in this
  process's memory, in a session map keyed by the id's SHA-256; it is never put in a URL, a
  cookie, a page or a log.
- **Nothing without a session.** The page redirects to ``/login``; every other request (the
  static files, the WebSocket, downloads) is a 401. A WebSocket must also come from the served
  origin (its ``Origin`` matches ``--public-url``, else the ``Host`` it was sent to), else 403;
  both checks happen before the upgrade, so a refused connection never starts an app.
- **One app process per session, at most ``max_sessions`` at once.** Each WebSocket runs
  ``python -m codex_tui`` with the session's server and token in its environment
  (``CODEX_TUI_SERVER``, ``CODEX_TUI_TOKEN``), never on its command line. A second connection
  of the same session (a reload, a second tab) ends the first one's app; a new session's
  connection beyond the limit is refused with 503. When the token is revoked, the next
  connection finds out (the token is checked again) and the session ends.
- Sessions end after ``idle_s`` seconds without a request, on ``POST /logout``, and when this
  process stops (they live in memory only).
- Every response forbids framing (``frame-ancestors 'none'``) and caching; the page's content
  security policy allows only this origin's scripts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import html
import logging
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import httpx
import textual_serve
from aiohttp import WSMsgType, web
from textual_serve.app_service import AppService
from textual_serve.download_manager import DownloadManager

__all__ = [
    "COOKIE_NAME",
    "WebConfig",
    "WebServer",
]

log = logging.getLogger("codex_tui.web")

#: Name of the session cookie.
COOKIE_NAME: Final = "codex_tui_web"
#: textual-serve's static files (xterm.js and its glue, fonts).
STATICS: Final = Path(textual_serve.__file__).parent / "static"
#: Variables of this process that never reach an app (each app gets its own session's).
_STRIPPED_ENV: Final = ("CODEX_TUI_TOKEN", "CODEX_TUI_SERVER")
#: Longest accepted token (user tokens are ``ctu_`` plus 43 characters).
_MAX_TOKEN_CHARS: Final = 512
#: Failed sign-ins allowed per client address per minute (429 above).
_FAILED_LOGINS_PER_MINUTE: Final = 10
#: Seconds an app gets to quit after being asked before it is killed.
_APP_STOP_S: Final = 10.0


@dataclass(frozen=True)
class WebConfig:
    """What ``codex-tui web`` serves and to whom.

    Attributes:
        server: The codex-tui server's URL; tokens are checked there and apps connect to it.
        max_sessions: Most app processes running at once (one per signed-in session).
        public_url: The URL the browser uses (``https://codex.example.com/tui`` behind a
            proxy; its path prefix is not supported); None: the ``Host`` each request names.
            It sets the WebSocket URL of the page, the expected ``Origin``, and ``Secure``
            on the cookie when https.
        idle_s: Seconds without a request after which a session ends.
        app_argv: The command an app runs (default: this Python's ``-m codex_tui``).
        verify: TLS verification for the server check (an httpx ``verify`` value).
    """

    server: str
    max_sessions: int = 4
    public_url: str | None = None
    idle_s: float = 12 * 3600.0
    app_argv: Sequence[str] = (sys.executable, "-m", "codex_tui")
    verify: bool | str = True


class _SessionApp(AppService):
    """textual-serve's app process, started without a shell, with its session's connection
    in its environment."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        write_bytes: Callable[[bytes], Awaitable[None]],
        write_str: Callable[[str], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        download_manager: DownloadManager,
    ) -> None:
        super().__init__(
            " ".join(argv),
            write_bytes=write_bytes,
            write_str=write_str,
            close=close,
            download_manager=download_manager,
        )
        self._argv = tuple(argv)
        self._env = dict(env)

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        environment = super()._build_environment(width=width, height=height)
        for name in _STRIPPED_ENV:
            environment.pop(name, None)
        environment.update(self._env)
        return environment

    async def _open_app_process(
        self, width: int = 80, height: int = 24
    ) -> asyncio.subprocess.Process:
        environment = self._build_environment(width=width, height=height)
        self._process = process = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
        )
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    @property
    def pid(self) -> int | None:
        """The app process's id (None before it started)."""
        return self._process.pid if self._process is not None else None

    async def shut(self) -> None:
        """Ask the app to quit and wait for it; kill it after :data:`_APP_STOP_S` seconds."""
        try:
            async with asyncio.timeout(_APP_STOP_S):
                await self.stop()
        except TimeoutError:
            if self._process is not None and self._process.returncode is None:
                self._process.kill()
                await self._process.wait()


@dataclass
class _Live:
    """A session's running app and its WebSocket."""

    websocket: web.WebSocketResponse
    app: _SessionApp | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Session:
    """A signed-in browser; ``token`` never leaves this process."""

    key: str
    token: str = field(repr=False)
    user: str
    last_seen: float
    live: _Live | None = None


class WebServer:
    """The aiohttp application of ``codex-tui web`` (see the module's security model)."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self._sessions: dict[str, _Session] = {}
        self._admission = asyncio.Lock()
        self._failures: dict[str, collections.deque[float]] = {}
        self._downloads = DownloadManager()

    # The application -----------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application: routes, the session guard and the security headers."""
        app = web.Application(middlewares=[self._guard])
        app.add_routes(
            [
                web.get("/login", self._login_page),
                web.post("/login", self._login),
                web.post("/logout", self._logout),
                web.get("/", self._index),
                web.get("/ws", self._websocket),
                web.get("/download/{key}", self._download),
                web.static("/static", STATICS, show_index=False),
            ]
        )
        app.on_response_prepare.append(self._headers)
        app.on_shutdown.append(self._shutdown)
        return app

    @property
    def running_apps(self) -> int:
        """How many app processes run now."""
        return sum(1 for s in self._sessions.values() if s.live is not None)

    # Sessions ------------------------------------------------------------------------

    @staticmethod
    def _key(cookie: str) -> str:
        return hashlib.sha256(cookie.encode()).hexdigest()

    def _session(self, request: web.Request) -> _Session | None:
        """The request's live session (its idle clock restarted), else None."""
        cookie = request.cookies.get(COOKIE_NAME)
        if not cookie or len(cookie) > 128:
            return None
        session = self._sessions.get(self._key(cookie))
        now = time.monotonic()
        if session is None:
            return None
        if now - session.last_seen > self.config.idle_s and session.live is None:
            del self._sessions[session.key]
            return None
        session.last_seen = now
        return session

    def _purge(self) -> None:
        """Forget the sessions idle for longer than ``idle_s`` (and their tokens)."""
        now = time.monotonic()
        for key, session in list(self._sessions.items()):
            if session.live is None and now - session.last_seen > self.config.idle_s:
                del self._sessions[key]

    def _secure(self) -> bool:
        return (self.config.public_url or "").startswith("https:")

    def _expected_origin(self, request: web.Request) -> str:
        if self.config.public_url:
            parts = urlsplit(self.config.public_url)
            return f"{parts.scheme}://{parts.netloc}".lower()
        return f"{request.scheme}://{request.host}".lower()

    def _same_origin(self, request: web.Request, *, required: bool) -> bool:
        """True when the request's ``Origin`` is the served one (or, unless ``required``,
        absent: a non-browser client)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return not required
        return origin.rstrip("/").lower() == self._expected_origin(request)

    async def _check_token(self, token: str) -> str | None:
        """The user name the server gives ``token`` (GET /api/me), None when it refuses it.

        Raises:
            httpx.HTTPError: The server cannot be reached or answered something else.
        """
        async with httpx.AsyncClient(
            base_url=self.config.server, verify=self.config.verify, timeout=10.0
        ) as client:
            response = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        if response.status_code in (401, 403):
            return None
        response.raise_for_status()
        body = response.json()
        name = body.get("name") if isinstance(body, dict) else None
        return str(name) if name else "?"

    # Middleware and signals ------------------------------------------------------------

    @web.middleware
    async def _guard(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Let ``/login`` through; everything else needs a session."""
        if request.path == "/login":
            return await handler(request)
        session = self._session(request)
        if session is None:
            if request.method == "GET" and request.path == "/":
                raise web.HTTPSeeOther("/login")
            raise web.HTTPUnauthorized(text="sign in first: /login\n")
        request["session"] = session
        return await handler(request)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """No framing, no caching, no sniffing; the page may run this origin's scripts only."""
        headers = response.headers
        headers["Cache-Control"] = "no-store"
        headers["X-Frame-Options"] = "DENY"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "same-origin"  # "no-referrer" makes Origin "null"
        ws = self._websocket_url(request)
        headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data:; font-src 'self' data:; connect-src 'self' {ws}; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        )

    async def _shutdown(self, app: web.Application) -> None:  # noqa: ARG002
        """Close every WebSocket (their apps quit) and forget every session."""
        lives = [s.live for s in self._sessions.values() if s.live is not None]
        for live in lives:
            await live.websocket.close()
        for live in lives:
            await live.done.wait()
        self._sessions.clear()

    # Sign-in -------------------------------------------------------------------------

    async def _login_page(self, request: web.Request) -> web.Response:  # noqa: ARG002
        return _login_form()

    def _throttled(self, address: str) -> bool:
        now = time.monotonic()
        failures = self._failures.setdefault(address, collections.deque())
        while failures and now - failures[0] > 60:
            failures.popleft()
        return len(failures) >= _FAILED_LOGINS_PER_MINUTE

    async def _login(self, request: web.Request) -> web.StreamResponse:
        """Check the pasted token with the server; open a session when it accepts it."""
        if not self._same_origin(request, required=False):
            raise web.HTTPForbidden(text="cross-origin sign-in refused\n")
        address = request.remote or "?"
        if self._throttled(address):
            return _login_form("Too many failed sign-ins; try again in a minute.", 429)
        form = await request.post()
        token = str(form.get("token", "")).strip()
        user: str | None = None
        if token and len(token) <= _MAX_TOKEN_CHARS and token.isprintable():
            try:
                user = await self._check_token(token)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("sign-in: the server cannot check tokens (%s)", type(exc).__name__)
                return _login_form(
                    f"The codex-tui server at {self.config.server} cannot be reached.", 502
                )
        if user is None:
            self._failures[address].append(time.monotonic())
            log.info("sign-in refused from %s", address)
            return _login_form("That token was not accepted.", 401)
        self._purge()
        cookie = secrets.token_urlsafe(32)
        key = self._key(cookie)
        self._sessions[key] = _Session(key, token, user, time.monotonic())
        log.info("signed in: %s from %s", user, address)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE_NAME,
            cookie,
            httponly=True,
            samesite="Strict",
            secure=self._secure(),
            path="/",
        )
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        """End the session and its app."""
        if not self._same_origin(request, required=True):
            raise web.HTTPForbidden(text="cross-origin request refused\n")
        session: _Session = request["session"]
        self._sessions.pop(session.key, None)
        if session.live is not None:
            await session.live.websocket.close()
            await session.live.done.wait()
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE_NAME, path="/")
        return response

    # The terminal --------------------------------------------------------------------

    def _websocket_url(self, request: web.Request) -> str:
        base = self.config.public_url or f"{request.scheme}://{request.host}"
        parts = urlsplit(base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}/ws"

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            text=_PAGE.format(ws=html.escape(self._websocket_url(request), quote=True)),
            content_type="text/html",
        )

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """A file the session's app delivers (Textual's ``deliver_text``/``deliver_binary``)."""
        session: _Session = request["session"]
        key = request.match_info["key"]
        try:
            meta = await self._downloads.get_download_metadata(key)
        except KeyError:
            raise web.HTTPNotFound() from None
        if session.live is None or meta.app_service is not session.live.app:
            raise web.HTTPNotFound()
        response = web.StreamResponse()
        response.content_type = meta.mime_type
        if meta.encoding:
            response.charset = meta.encoding
        disposition = "inline" if meta.open_method == "browser" else "attachment"
        name = meta.file_name.replace('"', "")
        response.headers["Content-Disposition"] = f'{disposition}; filename="{name}"'
        await response.prepare(request)
        async for chunk in self._downloads.download(key):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _admit(self, session: _Session, websocket: web.WebSocketResponse) -> _Live | None:
        """Make room for the session's app: end its previous one; None when
        ``max_sessions`` apps of other sessions run."""
        async with self._admission:
            previous = session.live
            if previous is not None:
                await previous.websocket.close()
                await previous.done.wait()
            if self.running_apps >= self.config.max_sessions:
                return None
            session.live = _Live(websocket)
            return session.live

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        """The terminal's WebSocket: refused (before the upgrade) across origins, for a
        revoked token and beyond ``max_sessions``; else runs the session's app."""
        session: _Session = request["session"]
        if not self._same_origin(request, required=True):
            log.warning("WebSocket from another origin refused")
            raise web.HTTPForbidden(text="cross-origin WebSocket refused\n")
        try:
            user = await self._check_token(session.token)
        except (httpx.HTTPError, ValueError):
            raise web.HTTPBadGateway(text="the codex-tui server cannot be reached\n") from None
        if user is None:
            self._sessions.pop(session.key, None)
            raise web.HTTPUnauthorized(text="the token was revoked; sign in again\n")
        websocket = web.WebSocketResponse(heartbeat=15)
        live = await self._admit(session, websocket)
        if live is None:
            raise web.HTTPServiceUnavailable(text="too many sessions; try again later\n")
        try:
            await websocket.prepare(request)
            width = _int(request.query.get("width"), 80)
            height = _int(request.query.get("height"), 24)
            live.app = _SessionApp(
                self.config.app_argv,
                {"CODEX_TUI_SERVER": self.config.server, "CODEX_TUI_TOKEN": session.token},
                write_bytes=websocket.send_bytes,
                write_str=websocket.send_str,
                close=partial(_close, websocket),
                download_manager=self._downloads,
            )
            await live.app.start(width, height)
            log.info("app started for %s (pid %s)", session.user, live.app.pid)
            await _relay(websocket, live.app)
        finally:
            if live.app is not None:
                await live.app.shut()
                log.info("app ended for %s", session.user)
            if session.live is live:
                session.live = None
            live.done.set()
        return websocket


async def _close(websocket: web.WebSocketResponse) -> None:
    """Close the browser's WebSocket (the app exited)."""
    await websocket.close()


async def _relay(websocket: web.WebSocketResponse, app: AppService) -> None:
    """Pass the browser's messages to the app until either side closes
    (textual-serve's protocol: ``["stdin", text]``, ``["resize", {width, height}]``,
    ``["ping", data]``, ``["blur"]``, ``["focus"]``)."""
    async for message in websocket:
        if message.type != WSMsgType.TEXT:
            continue
        try:
            envelope = message.json()
        except ValueError:
            continue
        if not isinstance(envelope, list) or not envelope:
            continue
        kind, data = envelope[0], envelope[1] if len(envelope) > 1 else None
        if kind == "stdin" and isinstance(data, str):
            await app.send_bytes(data.encode("utf-8"))
        elif kind == "resize" and isinstance(data, dict):
            width, height = _int(data.get("width"), 80), _int(data.get("height"), 24)
            await app.set_terminal_size(width, height)
        elif kind == "ping":
            await websocket.send_json(["pong", data])
        elif kind == "blur":
            await app.blur()
        elif kind == "focus":
            await app.focus()


def _int(value: object, default: int) -> int:
    """``value`` as a terminal dimension in 1..1000 cells, else ``default``."""
    with contextlib.suppress(TypeError, ValueError):
        number = int(str(value))
        if 1 <= number <= 1000:
            return number
    return default


def _login_form(error: str | None = None, status: int = 200) -> web.Response:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return web.Response(text=_LOGIN.format(error=message), content_type="text/html", status=status)


_STYLE = """<style>
html, body { margin: 0; height: 100%; background: #0c181f; color: #e6edf3;
  font-family: menlo, "Roboto Mono", monospace; }
form.login { max-width: 32rem; margin: 15vh auto; display: flex; flex-direction: column;
  gap: 0.75rem; }
input, button { font: inherit; padding: 0.5rem; }
.error { color: #ff7b72; }
.textual-terminal { width: 100vw; height: 100vh; }
.ended { display: none; position: absolute; top: 1rem; right: 1rem; z-index: 10; }
body.-closed .ended { display: block; }
</style>"""

_LOGIN = (
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>codex-tui: sign in</title>"""
    + _STYLE.replace("{", "{{").replace("}", "}}")
    + """</head><body>
<form class="login" method="post" action="/login">
<h1>codex-tui</h1>
<label for="token">Your codex-tui token</label>
<input id="token" name="token" type="password" autocomplete="off" autofocus required>
{error}
<button type="submit">Sign in</button>
</form></body></html>
"""
)

_PAGE = (
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>codex-tui</title>
<link rel="stylesheet" href="/static/css/xterm.css">
<script src="/static/js/textual.js"></script>"""
    + _STYLE.replace("{", "{{").replace("}", "}}")
    + """</head><body>
<form class="ended" method="post" action="/logout">
<a href="/">The session ended: reload</a> <button type="submit">Sign out</button></form>
<div id="terminal" class="textual-terminal" data-session-websocket-url="{ws}"
 data-font-size="16"></div>
</body></html>
"""
)
