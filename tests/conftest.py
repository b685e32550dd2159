"""Provides the shared fixtures: a real server (uvicorn on loopback, SQLite file) with a real
local worker process, run by ``codex-tui server`` exactly as a user runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from server_client.client import CodexTuiClient
from tests.fakes.codex_home import CodexBinaryNotFound, find_test_codex_bin, write_codex_home
from tests.fakes.mock_model_server import MockModel
from tests.support.pg import fresh_database

TESTS = Path(__file__).parent
FAKE_CODEX = TESTS / "fakes" / "fake_codex.py"
#: The fake codex's settings, passed through the worker's environment allow-list.
FAKE_ENV = (
    "FAKE_CODEX_MODE",
    "FAKE_CODEX_EVENTS",
    "FAKE_CODEX_SLEEP",
    "FAKE_CODEX_SIZE_MB",
    "FAKE_CODEX_ERROR",
    "FAKE_CODEX_RECORD",
)

#: Rate limits of test servers (docs/reliability.md S8): high, so that tests making many tasks,
#: streams or pairings in a burst are not refused. Tests of the limits set their own through
#: ``extra_env``, which is applied after these (tests/server/test_ratelimits.py).
TEST_LIMITS = {
    "CODEX_TUI_SERVER_RATE_TASK_CREATIONS": "100000/minute",
    "CODEX_TUI_SERVER_MAX_ACTIVE_TASKS": "100000",
    "CODEX_TUI_SERVER_MAX_STREAMS": "100000",
    "CODEX_TUI_SERVER_RATE_PAIRING": "100000/minute",
}


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], object], timeout_s: float = 15.0, what: str = "condition"
) -> object:
    """Poll ``condition`` until it returns a truthy value; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


async def wait_until_async(
    condition: Callable[[], object], timeout_s: float = 15.0, what: str = "condition"
) -> object:
    """Like :func:`wait_until`, without blocking the event loop."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    for _ in range(1_000_000):
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class LiveServer:
    """A running ``codex-tui server`` (and its local worker) for one test."""

    url: str
    home: Path
    workdir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str:
        """The local user's token the server stored for clients (a 0600 file here)."""
        return (self.home / "config" / "token").read_text().strip()

    def client(self) -> CodexTuiClient:
        """A new SDK client for this server (close it with ``aclose``)."""
        return CodexTuiClient(self.url, self.token)

    def cli(
        self, *args: str, timeout: float = 60.0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``codex-tui ARGS`` as a user on this machine would (same CODEX_TUI_HOME)."""
        return subprocess.run(
            [sys.executable, "-m", "codex_tui", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
            cwd=self.workdir,
        )

    def log(self) -> str:
        """Server and local worker output so far."""
        text = self.log_path.read_text(errors="replace")
        worker_log = self.home / "state" / "local-worker.log"
        if worker_log.exists():
            text += "\n--- local worker ---\n" + worker_log.read_text(errors="replace")
        return text

    def stop(self) -> None:
        """SIGTERM the server, then SIGKILL whatever of this home is left (its local worker
        outlives it, docs/reliability.md R10)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for proc in psutil.process_iter(["pid", "environ"]):
            try:
                env = proc.info["environ"] or {}
            except (psutil.Error, KeyError):
                continue
            if env.get("CODEX_TUI_HOME") == str(self.home):
                try:
                    proc.kill()
                except psutil.Error:
                    pass


ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start real servers: ``server_factory(codex_bin=..., fake_mode=..., local_worker=True)``.

    The local worker runs ``tests/fakes/fake_codex.py`` unless ``codex_bin`` says otherwise; the
    fake's behaviour comes from ``fake_mode`` (FAKE_CODEX_MODE, passed through to codex).
    """
    started: list[LiveServer] = []

    def start(
        *,
        codex_bin: str | None = str(FAKE_CODEX),
        fake_mode: str | None = "ok",
        local_worker: bool = True,
        extra_env: dict[str, str] | None = None,
        pass_env: tuple[str, ...] = (),
        grace_s: float | None = None,
        server_args: tuple[str, ...] = (),
        reuse: LiveServer | None = None,
        db_url: str | None = None,
    ) -> LiveServer:
        """Start a server; ``reuse`` restarts on the home, workdir and port of a stopped one;
        ``db_url`` is its ``--db`` (default: a SQLite file in its own home)."""
        index = len(started)
        home = reuse.home if reuse else tmp_path / f"home{index}"
        workdir = reuse.workdir if reuse else tmp_path / f"work{index}"
        workdir.mkdir(exist_ok=True)
        port = int(reuse.url.rsplit(":", 1)[1]) if reuse else free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_TUI_")}
        env["CODEX_TUI_HOME"] = str(home)
        env["CODEX_TUI_KEYRING"] = "0"
        if fake_mode is not None:
            env["FAKE_CODEX_MODE"] = fake_mode
        env.update(TEST_LIMITS)
        # The tests written before conversations run the one-shot runtime; a test of the
        # app-server runtime asks for it in extra_env.
        env["CODEX_TUI_WORKER_RUNTIME"] = "exec"
        env.update(extra_env or {})
        argv = [
            sys.executable,
            "-m",
            "codex_tui",
            "server",
            "--port",
            str(port),
            "--workdir-root",
            str(tmp_path),
            "--log-level",
            "warning",
        ]
        if not local_worker:
            argv.append("--no-local-worker")
        if codex_bin:
            argv += ["--codex-bin", codex_bin]
        for name in (*FAKE_ENV, *pass_env):
            argv += ["--pass-env", name]
        if grace_s is not None:
            argv += ["--cancel-grace", str(grace_s)]
        if db_url is not None:
            argv += ["--db", db_url]
        argv += list(server_args)
        log_path = tmp_path / f"server{index}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir
            )
        url = f"http://127.0.0.1:{port}"
        server = LiveServer(
            url=url, home=home, workdir=workdir, proc=proc, log_path=log_path, env=env
        )
        started.append(server)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}:\n{server.log()}")
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the server to answer /healthz")
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (dropped afterwards), on the server
    named by ``CODEX_TUI_TEST_PG_URL``; skips without it, fails without it in CI
    (tests/support/pg.py)."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def live_server(server_factory: ServerFactory) -> LiveServer:
    """A real server whose local worker runs the fake codex in its default mode."""
    return server_factory()


@pytest.fixture(scope="session")
def codex_bin() -> str:
    """The pinned real codex binary; a missing binary fails (never skips) with install steps."""
    try:
        return find_test_codex_bin()
    except CodexBinaryNotFound as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture
def mock_model() -> Iterator[MockModel]:
    """A scripted mock of the OpenAI Responses API on loopback
    (tests/fakes/mock_model_server.py)."""
    with MockModel() as model:
        yield model


@pytest.fixture
def codex_home(tmp_path: Path, mock_model: MockModel) -> Path:
    """A CODEX_HOME whose config points the real codex at ``mock_model`` (no login)."""
    return write_codex_home(tmp_path / "codex-home", mock_model.base_url)
