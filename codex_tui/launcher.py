"""Provides ``ensure_local_server``: start a background local server when none runs.

Like a tmux server, the local server (and its worker) keeps running after the command that
started it exits. Its output goes to ``<state>/server.log``.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from codex_tui.config import ResolvedConnection, resolve_connection
from server_client.paths import AppDirs

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class LauncherError(RuntimeError):
    """The local server could not be started or reached; the message says what to do."""


def server_is_up(url: str, timeout_s: float = 0.5) -> bool:
    """True when ``GET /healthz`` answers 200 within ``timeout_s``.

    A plain ``http`` URL (the local server's) is asked with the standard library: about a
    millisecond, where httpx first builds a client and its TLS context (some 40 ms, before
    the TUI's first frame). Other URLs are asked with httpx.
    """
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        try:
            connection.request("GET", f"{parts.path.rstrip('/')}/healthz")
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def _why_it_exited(log_path: Path, start: int) -> str:
    """The server's own message from what it wrote to ``log_path`` after byte ``start``
    (its ``codex-tui: ...`` line, else its last line)."""
    try:
        with open(log_path, "rb") as log_file:
            log_file.seek(start)
            lines = log_file.read().decode(errors="replace").splitlines()
    except OSError:
        return "it exited"
    said = [line.removeprefix("codex-tui: ") for line in lines if line.startswith("codex-tui: ")]
    return said[-1] if said else (lines[-1].strip() if lines else "it exited")


def ensure_local_server(conn: ResolvedConnection, wait_s: float = 20.0) -> ResolvedConnection:
    """Return a connection to a running server, starting a local one when needed.

    Only when no server was configured (flag, environment or config.toml) and the resolved
    URL is on this machine's loopback. Waits up to ``wait_s`` for it to answer and to store
    the local token.

    Raises:
        LauncherError: the server did not come up; the message names its log file, and
            gives the server's own reason at once when it exited (another server of this
            state folder runs on another port, the port is taken, ...).
    """
    parts = urlsplit(conn.server)
    if conn.explicit or parts.hostname not in LOOPBACK:
        return conn  # not ours to start (nor to probe: the client reports what it finds)
    if server_is_up(conn.server):
        return conn
    dirs = AppDirs.resolve().ensure()
    log_path = dirs.state / "server.log"
    argv = [sys.executable, "-m", "codex_tui", "server", "--port", str(parts.port or 80)]
    with open(log_path, "ab") as log_file:
        start = log_file.tell()
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ),
        )
    deadline = time.monotonic() + wait_s
    delay = 0.05
    exited: str | None = None  # what the server said when it exited, if it did
    while time.monotonic() < deadline:
        if server_is_up(conn.server):
            fresh = resolve_connection()
            if fresh.token:
                return fresh
        if exited is None and proc.poll() is not None:
            exited = _why_it_exited(log_path, start)
            # Refused because a server of this state folder runs elsewhere, or the port is
            # taken: say why at once. (One that is starting for this URL, from a command run
            # at the same moment: wait for it.)
            if conn.server not in exited and "starting or stopping" not in exited:
                raise LauncherError(
                    f"the local server for {conn.server} did not start: {exited} (log: {log_path})"
                )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise LauncherError(
        f"started a local server for {conn.server} but it did not answer within "
        f"{wait_s:.0f} s; see {log_path}"
    )
