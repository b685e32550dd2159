"""With no server configured or running, codex-tui starts a local server and worker in the
background; they keep running after the command exits, and later commands reuse them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from codex_tui.config import ResolvedConnection
from codex_tui.launcher import ensure_local_server, server_is_up
from tests.conftest import FAKE_CODEX, free_port


def _procs_of(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["environ"]):
        try:
            if (proc.info["environ"] or {}).get("CODEX_TUI_HOME") == str(home):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_TUI_")}
    env.update(
        CODEX_TUI_HOME=str(home),
        CODEX_TUI_KEYRING="0",
        CODEX_TUI_LOCAL_PORT=str(free_port()),
        CODEX_TUI_CODEX_BIN=str(FAKE_CODEX),
        CODEX_TUI_WORKER_RUNTIME="exec",  # the fake codex's one-shot dialect
        HOME=str(tmp_path),
    )
    yield env, work
    for proc in _procs_of(home):
        try:
            proc.kill()
        except psutil.Error:
            pass


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codex_tui", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_submit_starts_a_background_server_that_outlives_it(
    isolated: tuple[dict[str, str], Path],
) -> None:
    env, work = isolated
    url = f"http://127.0.0.1:{env['CODEX_TUI_LOCAL_PORT']}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")

    first = _cli(env, work, "submit", "--follow", "--json", "hello")
    assert first.returncode == 0, first.stderr
    envelopes = [json.loads(line) for line in first.stdout.splitlines()]  # the id: stderr
    assert envelopes[-1]["data"]["status"] == "completed"

    # The server and its worker still run after the command exited; `ls` needs no flags.
    assert httpx.get(f"{url}/healthz").status_code == 200
    home = Path(env["CODEX_TUI_HOME"])
    assert (home / "config" / "token").stat().st_mode & 0o777 == 0o600
    listed = _cli(env, work, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert f"task {json.loads(listed.stdout.splitlines()[0])['id']}" in first.stderr
    servers = [p for p in _procs_of(home) if "server" in p.cmdline()]
    assert len(servers) == 1


def test_ls_without_a_server_names_the_fix(isolated: tuple[dict[str, str], Path]) -> None:
    env, work = isolated
    env["CODEX_TUI_SERVER"] = f"http://127.0.0.1:{free_port()}"
    env["CODEX_TUI_TOKEN"] = "ctu_anything"
    result = _cli(env, work, "ls")
    assert result.returncode == 2
    assert f"cannot connect to {env['CODEX_TUI_SERVER']}" in result.stderr
    assert "codex-tui server" in result.stderr


class _Health(BaseHTTPRequestHandler):
    """Answers ``GET /healthz`` with 200 and anything else with 404."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet."""


@pytest.fixture
def health_server() -> Iterator[str]:
    """A local HTTP server whose /healthz answers 200; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_server_is_up_asks_healthz(health_server: str) -> None:
    assert server_is_up(health_server)
    assert server_is_up(health_server + "/")
    assert not server_is_up(health_server + "/elsewhere")  # /elsewhere/healthz: 404
    assert not server_is_up(f"http://127.0.0.1:{free_port()}")


def test_a_configured_server_is_neither_probed_nor_started(tmp_path: Path) -> None:
    # A server named by a flag, the environment or config.toml is the user's: ensure_local_server
    # hands it back at once, up or not, and the client reports what it finds.
    conn = ResolvedConnection(f"http://127.0.0.1:{free_port()}", "t", explicit=True)
    started = time.monotonic()
    assert ensure_local_server(conn, wait_s=5) is conn
    assert time.monotonic() - started < 1
    remote = ResolvedConnection("http://192.0.2.1:8765", "t", explicit=False)  # TEST-NET-1
    assert ensure_local_server(remote, wait_s=5) is remote


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """``codex-tui server --port PORT --no-local-worker``, once it answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "codex_tui", "server", "--port", str(port), "--no-local-worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not server_is_up(f"http://127.0.0.1:{port}"):
        assert proc.poll() is None and time.monotonic() < deadline, "the server to start"
        time.sleep(0.05)
    return proc


def test_a_server_that_cannot_start_is_reported_at_once_with_its_reason(
    isolated: tuple[dict[str, str], Path],
) -> None:
    """The stored connection names the local server's usual port, but the state folder's
    server runs on another one: the server `submit` starts is refused, and `submit` says
    why at once instead of waiting for it to answer (issue 16)."""
    env, work = isolated
    usual, other = int(env["CODEX_TUI_LOCAL_PORT"]), free_port()
    first = _serve(env, usual)  # stores the connection for the usual port
    assert _cli(env, work, "server", "stop").returncode == 0
    first.wait(15)
    running = _serve(env, other)  # another port: the stored connection stays
    try:
        started = time.monotonic()
        result = _cli(env, work, "submit", "hello")
        took = time.monotonic() - started
        assert result.returncode == 2, result.stderr
        assert "did not start: a codex-tui server already runs" in result.stderr
        assert f"http://127.0.0.1:{other}" in result.stderr
        assert "codex-tui server stop" in result.stderr
        assert took < 15, f"it waited {took:.1f} s for a server that had exited"
        assert running.poll() is None, "the running server was left alone"
    finally:
        running.terminate()
        running.wait(15)
