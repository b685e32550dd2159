"""Provides paired worker processes for tests: each ``codex-tui worker`` runs as its own process
with its own CODEX_TUI_HOME, as if on another machine, and reaches the server over loopback.

``start_paired_worker`` asks the server for a pairing code through the API, runs ``codex-tui
worker --server URL --pair CODE --name NAME ...`` and waits until the worker has connected.
A :class:`WorkerPool` (one per test, see the ``workers`` fixtures of the test modules) starts
them and, at the end, kills every worker and every codex process they started.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import psutil

from server_client.client import CodexTuiClient
from server_client.models import PairingCode, Worker
from tests.conftest import FAKE_CODEX, FAKE_ENV, LiveServer, wait_until

T = TypeVar("T")

#: Marks every process a test worker starts (passed through to codex), for clean-up.
MARK_ENV = "CTU_TEST_WORKER_HOME"
#: The fake codex's settings a test worker passes through to it.
WORKER_FAKE_ENV = (*FAKE_ENV, "FAKE_CODEX_INTERVAL")
#: The task marker the worker puts in codex's environment (server_client.worker.runner).
TASK_ENV = "CODEX_TUI_TASK_ID"


def run_sdk(url: str, token: str, work: Callable[[CodexTuiClient], Awaitable[T]]) -> T:
    """Run ``work`` with a fresh SDK client on its own event loop (in a thread), so sync helpers
    work from inside async tests too."""
    box: dict[str, Any] = {}

    async def main() -> None:
        async with CodexTuiClient(url, token) as client:
            box["value"] = await work(client)

    def thread() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    runner = threading.Thread(target=thread, name="sdk")
    runner.start()
    runner.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose environment has ``name=value``."""
    found = []
    for proc in psutil.process_iter(["environ", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if (proc.info["environ"] or {}).get(name) == value:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def task_processes(task_id: str) -> list[psutil.Process]:
    """The live processes of a task (codex and what it started carry CODEX_TUI_TASK_ID)."""
    return processes_with_env(TASK_ENV, task_id)


@dataclass
class WorkerProc:
    """One ``codex-tui worker`` process with its own CODEX_TUI_HOME.

    Attributes:
        server: The server it works for. owner_token: The user token that paired it.
        name: Worker name. home: Its CODEX_TUI_HOME. workroot: Its only workdir root.
        args: The worker options (codex bin, pass-env, workdir root, labels, extra).
        env: Its environment. proc: The running process. log_path: Its stdout and stderr.
        worker_id: Its id on the server, once connected.
    """

    server: LiveServer
    owner_token: str
    name: str
    home: Path
    workroot: Path
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    worker_id: str = ""
    runs: int = 0
    codes: list[str] = field(default_factory=list)

    # ---- process -------------------------------------------------------------------

    def launch(self, *extra: str) -> subprocess.Popen[bytes]:
        """Start ``codex-tui worker [extra] <options>`` (appending to the log)."""
        self.runs += 1
        argv = [sys.executable, "-m", "codex_tui", "worker", *extra, *self.args]
        with open(self.log_path, "ab") as log_file:
            how = "paired with a code" if "--pair" in extra else "plain codex-tui worker"
            log_file.write(f"--- run {self.runs}: {how}\n".encode())
            log_file.flush()
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workroot,
            )
        return self.proc

    @property
    def pid(self) -> int:
        """The worker process's pid."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """True while the worker process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker process (its codex processes keep running, like a crash)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP the worker process (only it: codex runs in its own session)."""
        os.kill(self.pid, signal.SIGSTOP)
        wait_until(
            lambda: psutil.Process(self.pid).status() == psutil.STATUS_STOPPED,
            5,
            "the worker to stop",
        )

    def resume(self) -> None:
        """SIGCONT the worker process."""
        os.kill(self.pid, signal.SIGCONT)

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM the worker (it cancels and reports its tasks); returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def wait(self, timeout_s: float = 20.0) -> int:
        """Wait for the worker process to exit on its own; returns its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def processes(self) -> list[psutil.Process]:
        """Every live process this worker started (marked through its environment)."""
        return processes_with_env(MARK_ENV, str(self.home))

    def cleanup(self) -> None:
        """Kill the worker and everything it started."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait(10)
        for proc in self.processes():
            try:
                proc.kill()
            except psutil.Error:
                pass

    # ---- what it knows and says ----------------------------------------------------

    @property
    def config_path(self) -> Path:
        """``<CODEX_TUI_HOME>/config/worker.json``: the saved pairing."""
        return self.home / "config" / "worker.json"

    @property
    def token(self) -> str:
        """The worker token saved by pairing."""
        return str(json.loads(self.config_path.read_text())["token"])

    def log(self) -> str:
        """Everything the worker printed so far (all its runs)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def describe(self) -> str:
        """The worker's log and the server's, for failure messages."""
        return f"--- worker {self.name} ---\n{self.log()}\n--- server ---\n{self.server.log()}"

    def record(self) -> Worker | None:
        """The worker as the server lists it to its owner (None when not listed)."""
        listed = run_sdk(self.server.url, self.owner_token, lambda c: c.list_workers())
        return next((w for w in listed if w.name == self.name), None)

    def wait_connected(self, *, after: datetime | None = None, timeout_s: float = 30.0) -> Worker:
        """Wait until the process has connected (it reported its workdir roots and is online).

        With ``after`` (a ``connected_at`` datetime), wait for a newer connection.
        """

        def connected() -> Worker | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"worker {self.name} exited {self.proc.returncode}\n{self.describe()}"
                )
            worker = self.record()
            if worker is None or not worker.online:
                return None
            if worker.workdir_roots != [str(self.workroot)]:
                return None  # paired, but the process has not connected yet
            if after is not None and not worker.connected_at > after:
                return None
            return worker

        worker = wait_until(connected, timeout_s, f"worker {self.name} to connect")
        assert isinstance(worker, Worker)
        self.worker_id = worker.id
        return worker

    def restart_plain(self, *extra: str) -> Worker:
        """Start it again with plain ``codex-tui worker`` (no code: the saved pairing)."""
        before = self.record()
        assert self.proc is None or self.proc.poll() is not None, "stop it first"
        self.launch(*extra)
        return self.wait_connected(after=before.connected_at if before else None)


async def add_user(server: LiveServer, name: str) -> str:
    """Create user ``name`` directly in the server's store (as ``codex-tui admin user add``
    does, without its start-up cost); returns their token."""
    from server_client.server.admin import add_user as store_add_user

    _user, token = await store_add_user(db_url(server), name)
    return token


def db_url(server: LiveServer) -> str:
    """The server's SQLite store."""
    return f"sqlite:///{server.home / 'data' / 'codex-tui.db'}"


def create_pairing_code(server: LiveServer, token: str | None = None) -> PairingCode:
    """A pairing code of the user whose token is given (default: the local user)."""
    return run_sdk(server.url, token or server.token, lambda c: c.create_pairing_code())


def start_paired_worker(
    server: LiveServer,
    tmp_path: Path,
    name: str,
    labels: Sequence[str] = (),
    fake_mode: str | None = "ok",
    extra_args: Iterable[str] = (),
    *,
    owner_token: str | None = None,
    codex_bin: str | None = str(FAKE_CODEX),
    extra_env: dict[str, str] | None = None,
    max_tasks: int | None = None,
    code: str | None = None,
    wait: bool = True,
) -> WorkerProc:
    """Pair a new worker process with ``server`` and start it (see the module docstring).

    Args:
        server: The server.
        tmp_path: Where the worker's home, workdir root and log go (under ``worker-NAME``).
        name: Worker name (``--name``). labels: ``--label`` values.
        fake_mode: FAKE_CODEX_MODE for the fake codex (None: leave it unset).
        extra_args: More ``codex-tui worker`` options.
        owner_token: The user token that creates the code (default: the server's local user).
        codex_bin: The codex binary (default: tests/fakes/fake_codex.py).
        extra_env: More environment for the worker (e.g. FAKE_CODEX_SLEEP, CODEX_HOME).
        max_tasks: ``--max-tasks``.
        code: Pair with this code (default: a new one from the API).
        wait: Wait until the worker has connected.
    """
    base = tmp_path / f"worker-{name}"
    home = base / "home"
    workroot = base / "work"
    workroot.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_TUI_", "FAKE_CODEX"))}
    env.update({"CODEX_TUI_HOME": str(home), "CODEX_TUI_KEYRING": "0", MARK_ENV: str(home)})
    env["CODEX_TUI_WORKER_RUNTIME"] = "exec"  # the app-server runtime's tests ask for it
    if fake_mode is not None:
        env["FAKE_CODEX_MODE"] = fake_mode
    env.update(extra_env or {})
    args = ["--name", name, "--workdir-root", str(workroot)]
    for label in labels:
        args += ["--label", label]
    if codex_bin:
        args += ["--codex-bin", codex_bin]
    for variable in (*WORKER_FAKE_ENV, MARK_ENV):
        args += ["--pass-env", variable]
    if max_tasks is not None:
        args += ["--max-tasks", str(max_tasks)]
    args += list(extra_args)
    worker = WorkerProc(
        server=server,
        owner_token=owner_token or server.token,
        name=name,
        home=home,
        workroot=workroot,
        args=args,
        env=env,
        log_path=base / "worker.log",
    )
    if code is None:
        code = create_pairing_code(server, owner_token).code
    worker.codes.append(code)
    worker.launch("--server", server.url, "--pair", code)
    if wait:
        worker.wait_connected()
    return worker


class WorkerPool:
    """The worker processes of one test; kills them (and their codex) on exit."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.workers: list[WorkerProc] = []

    def start(
        self, server: LiveServer, name: str, *, wait: bool = True, **kwargs: Any
    ) -> WorkerProc:
        """:func:`start_paired_worker` for this test."""
        worker = start_paired_worker(server, self.tmp_path, name, wait=False, **kwargs)
        self.workers.append(worker)
        if wait:
            worker.wait_connected()
        return worker

    def describe(self) -> str:
        """Every worker's log, for failure messages."""
        return "\n".join(f"--- worker {w.name} ---\n{w.log()}" for w in self.workers)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for worker in self.workers:
            worker.cleanup()
