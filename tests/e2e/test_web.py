"""Provides the tests of ``codex-tui web``: the TUI served to a browser behind a sign-in.

A real ``codex-tui server`` (its local worker runs the fake codex in ``stamped`` mode, whose
events carry numbered messages), a real ``codex-tui web`` process, and for the browser test a
real headless Chromium (Debian's ``chromium``, driven by Playwright without a browser
download). Unauthenticated requests, the WebSocket included, get nothing and start no app;
after signing in, the dashboard renders, and a task typed into the page is submitted and
followed.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from codex_tui.web import COOKIE_NAME
from tests.conftest import LiveServer, ServerFactory, free_port, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page


@dataclass
class WebProcess:
    """A running ``codex-tui web`` and where it logs."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace")

    def apps(self) -> list[psutil.Process]:
        """The app processes it runs now (its children)."""
        return psutil.Process(self.proc.pid).children()


WebFactory = Callable[..., WebProcess]


@pytest.fixture
def web_factory(tmp_path: Path) -> Iterator[WebFactory]:
    """Start ``codex-tui web --server SERVER ARGS`` beside a live server; stopped at the end
    (SIGTERM: its apps are asked to quit, then it exits)."""
    started: list[WebProcess] = []

    def start(server: LiveServer, *args: str) -> WebProcess:
        port = free_port()
        log_path = tmp_path / f"web{len(started)}.log"
        env = dict(server.env)
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "codex_tui", "web", "--server", server.url]
                + ["--port", str(port), *args],
                env=env,
                cwd=server.workdir,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        web = WebProcess(f"http://127.0.0.1:{port}", proc, log_path)
        started.append(web)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"codex-tui web exited {proc.returncode}:\n{web.log()}")
            try:
                return httpx.get(f"{web.url}/login", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "codex-tui web to answer /login")
        return web

    yield start
    for web in started:
        if web.proc.poll() is None:
            children = web.apps()
            web.proc.terminate()
            try:
                web.proc.wait(20)
            except subprocess.TimeoutExpired:
                web.proc.kill()
                web.proc.wait()
            for child in children:
                try:
                    child.kill()
                except psutil.Error:
                    pass


def gone(proc: psutil.Process) -> bool:
    """True once ``proc`` exited (a zombie counts: its parent reaps it when it can)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def sign_in(web: WebProcess, token: str) -> httpx.Response:
    """POST the sign-in form as a browser on the served origin would."""
    return httpx.post(
        f"{web.url}/login", data={"token": token}, headers={"Origin": web.url}, timeout=15
    )


class Handshake:
    """A raw WebSocket opening handshake on a socket of its own (kept open while it lasts)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        lines = [
            "GET /ws?width=120&height=40 HTTP/1.1",
            f"Host: {parts.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        self.status = int(head.split(b" ", 2)[1])

    def close(self) -> None:
        """Drop the connection (as a closed browser tab would)."""
        self.sock.close()


def test_nothing_without_a_session_then_one_app_per_session(
    server_factory: ServerFactory, web_factory: WebFactory
) -> None:
    server = server_factory()
    web = web_factory(server, "--max-sessions", "1")
    token = server.token

    # Without a session: the page sends to the sign-in form; the rest is a 401.
    page = httpx.get(f"{web.url}/", timeout=10)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    for path in ("/static/js/textual.js", "/static/css/xterm.css", "/download/abc"):
        assert httpx.get(f"{web.url}{path}", timeout=10).status_code == 401, path
    assert Handshake(web.url, {"Origin": web.url}).status == 401
    assert sign_in(web, "ctu_not-a-real-token").status_code == 401
    forged = httpx.get(f"{web.url}/", cookies={COOKIE_NAME: "forged"}, timeout=10)
    assert forged.status_code == 303
    assert web.apps() == []

    # Signing in: a random HttpOnly, SameSite=Strict cookie; the token is in no answer.
    answer = sign_in(web, token)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    set_cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    cookie = answer.cookies[COOKIE_NAME]
    assert token not in set_cookie and token not in cookie
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"}
    page = httpx.get(f"{web.url}/", headers=headers, timeout=10)
    assert page.status_code == 200 and token not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert httpx.get(f"{web.url}/static/js/textual.js", headers=headers).status_code == 200

    # The WebSocket of a signed-in browser from another origin, or with none, is refused.
    assert Handshake(web.url, {**headers, "Origin": "http://evil.example"}).status == 403
    assert Handshake(web.url, headers).status == 403
    assert web.apps() == []

    # From the served origin it runs one app, with the token in its environment only.
    first = Handshake(web.url, {**headers, "Origin": web.url})
    assert first.status == 101
    wait_until(web.apps, 30, "the session's app")
    (app,) = web.apps()
    assert app.environ()["CODEX_TUI_TOKEN"] == token
    assert app.environ()["CODEX_TUI_SERVER"] == server.url
    assert not any(token in arg for arg in app.cmdline())

    # Another session beyond --max-sessions 1 is refused before any app starts ...
    other = sign_in(web, token).cookies[COOKIE_NAME]
    other_headers = {"Cookie": f"{COOKIE_NAME}={other}", "Origin": web.url}
    assert Handshake(web.url, other_headers).status == 503
    assert [proc.pid for proc in web.apps()] == [app.pid]
    # ... while the same session reconnecting (a reload) replaces its own app.
    second = Handshake(web.url, {**headers, "Origin": web.url})
    assert second.status == 101
    wait_until(lambda: gone(app), 30, "the replaced app to end")
    wait_until(lambda: len(web.apps()) == 1, 30, "one app again")
    first.close()
    second.close()
    wait_until(lambda: web.apps() == [], 30, "the app to end with its WebSocket")

    # Signing out ends the session.
    out = httpx.post(f"{web.url}/logout", headers={**headers, "Origin": web.url}, timeout=10)
    assert out.status_code == 303
    assert httpx.get(f"{web.url}/static/js/textual.js", headers=headers).status_code == 401
    assert token not in web.log()


# -- the browser --------------------------------------------------------------------------

#: Installed in the page before its scripts: records the text the terminal's WebSocket
#: receives (its escape sequences and controls removed) in ``window.screenText()``. The
#: page's own scripts cannot read the pixels xterm.js draws, so the test reads this.
RECORDER = r"""
(() => {
  const Native = window.WebSocket;
  let received = "";
  const decoder = new TextDecoder();
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        if (event.data instanceof ArrayBuffer) {
          received += decoder.decode(event.data, { stream: true });
        }
      });
    }
  };
  const ansi = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]|[\x00-\x1f]/g;
  window.screenText = () => received.replace(ansi, "");
})();
"""


def chromium() -> str:
    """Debian's Chromium (``apt-get install chromium``); skips without it, fails in CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    return found


def shows(page: Page, text: str, timeout_s: float = 60.0) -> None:
    """Wait until the page's terminal was sent ``text`` (polled inside the browser)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "text => window.screenText().includes(text)", arg=text, timeout=timeout_s * 1000
        )
    except PlaywrightTimeout:
        screen = page.evaluate("() => window.screenText()")
        message = f"{text!r} never reached the page; it got:\n{screen[-3000:]}"
        raise AssertionError(message) from None


def test_the_tui_in_a_headless_browser(
    server_factory: ServerFactory, web_factory: WebFactory
) -> None:
    from playwright.sync_api import sync_playwright

    browser_path = chromium()
    # The fake's stamped mode: "message 0" .. "message N-1", N from an events= word of the
    # prompt, else FAKE_CODEX_EVENTS (the typed prompt has no such word: 7 messages).
    server = server_factory(fake_mode="stamped", extra_env={"FAKE_CODEX_EVENTS": "7"})
    listed = server.cli("submit", "--follow", "alpha from the sdk events=2")
    assert listed.returncode == 0, listed.stderr
    web = web_factory(server)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=browser_path, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.add_init_script(RECORDER)
            page.goto(f"{web.url}/")
            assert urlsplit(page.url).path == "/login"
            page.fill("#token", server.token)
            page.click("button[type=submit]")
            page.wait_for_url(f"{web.url}/")
            assert server.token not in page.url
            page.wait_for_selector("body.-first-byte", timeout=60_000)
            page.wait_for_function(
                "() => document.cookie === ''", timeout=5_000
            )  # HttpOnly: the page's scripts cannot read it

            shows(page, "alpha from the sdk")  # the task list

            # Keys go to xterm.js's input element (a click would also move Textual's focus).
            page.focus(".xterm-helper-textarea")
            page.keyboard.press("n")
            shows(page, "New task")  # the compose screen
            page.keyboard.type("beta typed in the browser", delay=20)  # as a person types
            page.keyboard.press("Control+s")

            try:
                shows(page, "✓ beta typed")  # listed (cut to the column), completed, highlighted
            except AssertionError:
                listing = server.cli("ls", "--json").stdout
                beta_id = re.search(r'"id": ?"([^"]+)"[^}]*beta typed', listing)
                logs = server.cli("logs", beta_id[1]).stdout if beta_id else ""
                raise AssertionError(f"{listing}\n{logs}") from None
            page.keyboard.press("o")  # opened in a pane of its own
            shows(page, "message 6")  # its last event, in that pane
            tasks = server.cli("ls", "--json")
            assert '"beta typed in the browser"' in tasks.stdout, tasks.stdout
        finally:
            browser.close()
    assert server.token not in web.log()
