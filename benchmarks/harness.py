"""Provides the benchmark harness: real servers on loopback, robust cleanup, process metrics,
throwaway PostgreSQL databases and small statistics helpers.

Every process a run starts (servers, their local workers, fake codex processes, TUIs) carries
the environment variable :data:`RUN_ENV` with this run's id, so :func:`kill_run_processes`
finds and kills all of them, even after Ctrl-C or a crash of the harness itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from server_client.models import Sandbox
from server_client.worker.runner import RunSpec, build_argv

ROOT = Path(__file__).resolve().parent.parent
FAKE_CODEX = ROOT / "tests" / "fakes" / "fake_codex.py"

#: Marks every process of one benchmark run (value: :data:`RUN_ID`).
RUN_ENV = "CODEX_TUI_BENCH_RUN"
RUN_ID = secrets.token_hex(6)

#: Server limits high enough for the benchmarks (server_client/server/settings.py).
BENCH_LIMITS = {
    "CODEX_TUI_SERVER_RATE_TASK_CREATIONS": "100000/minute",
    "CODEX_TUI_SERVER_MAX_ACTIVE_TASKS": "100000",
    "CODEX_TUI_SERVER_MAX_STREAMS": "100000",
    "CODEX_TUI_SERVER_RATE_PAIRING": "100000/minute",
}

#: The fake codex's settings, passed through the worker's environment allow-list.
FAKE_ENV = ("FAKE_CODEX_MODE", "FAKE_CODEX_EVENTS", "FAKE_CODEX_RATE", "FAKE_CODEX_SLEEP")

#: Default admin database for PostgreSQL runs (any existing database on the server).
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


class BenchError(RuntimeError):
    """A benchmark could not run (a server did not start, a task never ran, ...)."""


# -- cleanup -------------------------------------------------------------------------------


class Cleanup:
    """Actions run in reverse order at the end of the run, whatever happens (Ctrl-C too)."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, action: Callable[[], None]) -> Callable[[], None]:
        """Register ``action``; returns a function that runs it now and unregisters it."""
        entry = (what, action)
        self._actions.append(entry)

        def run_now() -> None:
            if entry in self._actions:
                self._actions.remove(entry)
                action()

        return run_now

    def run_all(self) -> None:
        """Run every registered action, newest first; errors are printed, not raised."""
        while self._actions:
            what, action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                print(f"cleanup of {what} failed: {exc!r}", file=sys.stderr)


CLEANUP = Cleanup()


def kill_run_processes() -> int:
    """SIGKILL every process of this run (found by :data:`RUN_ENV`) but this one.

    Returns:
        How many processes were killed.
    """
    me = os.getpid()
    victims = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(RUN_ENV) == RUN_ID:
                victims.append(proc)
        except (psutil.Error, OSError):
            continue
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(victims, timeout=5)
    return len(victims)


def install_signal_handlers() -> None:
    """Raise KeyboardInterrupt on SIGINT, SIGTERM and SIGHUP, so cleanup runs.

    A handler of our own for SIGINT also keeps ``asyncio.run`` from installing its own, which
    only cancels the main task: a cancellation that a library swallows would let the run go
    on after Ctrl-C.
    """

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def ignore_signals() -> None:
    """Ignore SIGINT, SIGTERM and SIGHUP from now on (while cleaning up)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def raise_fd_limit() -> None:
    """Raise the soft open-file limit to the hard one (500 streams need many sockets);
    child processes (servers, workers) inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_run_dir() -> Path:
    """A temporary folder for this run (homes, workdirs, logs), removed at the end."""
    path = Path(tempfile.mkdtemp(prefix=f"codex-tui-bench-{RUN_ID}-"))
    CLEANUP.push(f"run folder {path}", lambda: shutil.rmtree(path, ignore_errors=True))
    return path


def base_env() -> dict[str, str]:
    """This process's environment without codex-tui settings, marked with the run id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_TUI_")}
    env[RUN_ENV] = RUN_ID
    env["CODEX_TUI_KEYRING"] = "0"
    env["CODEX_TUI_WORKER_RUNTIME"] = "exec"  # the fake codex's one-shot dialect
    return env


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CpuSample:
    """CPU seconds (user + system) used so far by each part of a server run."""

    server: float
    worker: float
    codex: float

    def minus(self, other: CpuSample) -> CpuSample:
        """The CPU used between ``other`` and this sample."""
        return CpuSample(
            self.server - other.server, self.worker - other.worker, self.codex - other.codex
        )


@dataclass
class Server:
    """A running ``codex-tui server`` with its local worker, started by :func:`start_server`."""

    url: str
    home: Path
    workdir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    _worker: psutil.Process | None = None

    @property
    def token(self) -> str:
        """The local user's token the server stored for clients (a 0600 file here)."""
        return (self.home / "config" / "token").read_text().strip()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's and its worker's logs."""
        text = self.log_path.read_text(errors="replace")
        worker_log = self.home / "state" / "local-worker.log"
        if worker_log.exists():
            text += "\n--- local worker ---\n" + worker_log.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def worker(self) -> psutil.Process | None:
        """The local worker process (a child of the server), if it runs."""
        if self._worker is not None and self._worker.is_running():
            return self._worker
        pidfile = self.home / "state" / "local-worker.pid"
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            self._worker = psutil.Process(int(pidfile.read_text().strip()))
            return self._worker
        return None

    def codex_processes(self) -> list[psutil.Process]:
        """The worker's live child processes (codex)."""
        worker = self.worker()
        if worker is None:
            return []
        with contextlib.suppress(psutil.Error):
            return [p for p in worker.children() if p.status() != psutil.STATUS_ZOMBIE]
        return []

    def rss_bytes(self) -> int:
        """Resident memory of the server plus its worker, codex processes excluded."""
        total = 0
        for proc in (psutil.Process(self.proc.pid), self.worker()):
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
        return total

    def cpu(self) -> CpuSample:
        """CPU seconds so far: server, worker (itself), codex (the worker's children, live
        and reaped)."""
        server = psutil.Process(self.proc.pid).cpu_times()
        worker_cpu = codex_cpu = 0.0
        worker = self.worker()
        if worker is not None:
            with contextlib.suppress(psutil.Error):
                times = worker.cpu_times()
                worker_cpu = times.user + times.system
                codex_cpu = times.children_user + times.children_system
                for child in worker.children():
                    with contextlib.suppress(psutil.Error):
                        ct = child.cpu_times()
                        codex_cpu += ct.user + ct.system
        return CpuSample(server.user + server.system, worker_cpu, codex_cpu)

    def pids(self) -> dict[str, int]:
        """The pids of the server and its worker."""
        out = {"server": self.proc.pid}
        worker = self.worker()
        if worker is not None:
            out["worker"] = worker.pid
        return out

    def stop(self) -> None:
        """SIGTERM the server (its local worker outlives it, as it would a restart), then
        SIGKILL every process left of this run's home: the local worker, its codex children."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.environ().get("CODEX_TUI_HOME") == str(self.home):
                    proc.kill()
            except (psutil.Error, OSError):
                continue


def wait_healthy(
    http: httpx.Client,
    url: str,
    proc: subprocess.Popen[bytes],
    deadline: float,
    what: str,
    log_tail: Callable[[], str],
) -> None:
    """Poll ``GET url`` every 0.1 s until it answers 200.

    Args:
        http: The client to poll with.
        url: The health URL.
        proc: The process that serves it.
        deadline: ``time.monotonic()`` after which to give up (s).
        what: Names the process in errors (``server main``).
        log_tail: The end of the process's log, for errors.

    Raises:
        BenchError: ``proc`` exited, or ``url`` did not answer 200 before ``deadline``.
    """
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited {proc.returncode}:\n{log_tail()}")
        try:
            if http.get(url).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not answer {url}:\n{log_tail()}")
        time.sleep(0.1)


def start_server(
    run_dir: Path,
    *,
    name: str,
    fake_mode: str | None = "stamped",
    codex_bin: str | None = str(FAKE_CODEX),
    max_tasks: int = 4,
    db_url: str | None = None,
    grace_s: float | None = None,
    extra_env: dict[str, str] | None = None,
    pass_env: Sequence[str] = (),
    local_worker: bool = True,
    runtime: str = "exec",
    timeout_s: float = 60.0,
) -> Server:
    """Start ``codex-tui server`` as the tests do, wait until it and its worker are up.

    Args:
        run_dir: This run's folder; the server gets ``<name>-home``, ``<name>-work`` and a log.
        name: A short name for the server's files.
        fake_mode: ``FAKE_CODEX_MODE`` (None: not set, e.g. for the real codex).
        codex_bin: The codex binary of the local worker.
        max_tasks: The local worker's concurrency (``--max-tasks``).
        db_url: ``--db`` (default: a SQLite file in the server's home).
        grace_s: ``--cancel-grace``.
        extra_env: More environment variables for the server (and so its worker).
        pass_env: More names passed through to codex.
        local_worker: Start the local worker (and wait until it is online).
        runtime: The local worker's runtime for tasks that ask for none (``--runtime``):
            ``exec`` (one-shot ``codex exec``, what the sections written before conversations
            measure) or ``app-server``.
        timeout_s: How long to wait for the server and worker.

    Raises:
        BenchError: the server exited or did not answer in time.
    """
    home = run_dir / f"{name}-home"
    workdir = run_dir / f"{name}-work"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = base_env()
    env["CODEX_TUI_HOME"] = str(home)
    if fake_mode is not None:
        env["FAKE_CODEX_MODE"] = fake_mode
    env.update(BENCH_LIMITS)
    env.update(extra_env or {})
    argv = [
        sys.executable,
        "-m",
        "codex_tui",
        "server",
        "--port",
        str(port),
        "--workdir-root",
        str(run_dir),
        "--log-level",
        "warning",
        "--max-tasks",
        str(max_tasks),
    ]
    if not local_worker:
        argv.append("--no-local-worker")
    if codex_bin:
        argv += ["--codex-bin", codex_bin]
    if local_worker:
        argv += ["--runtime", runtime]
    for var in (*FAKE_ENV, RUN_ENV, *pass_env):
        argv += ["--pass-env", var]
    if grace_s is not None:
        argv += ["--cancel-grace", str(grace_s)]
    if db_url is not None:
        argv += ["--db", db_url]
    log_path = run_dir / f"{name}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir
        )
    server = Server(
        url=f"http://127.0.0.1:{port}",
        home=home,
        workdir=workdir,
        proc=proc,
        log_path=log_path,
        env=env,
    )
    CLEANUP.push(f"server {name}", server.stop)
    deadline = time.monotonic() + timeout_s
    # One client for all the polls: creating one per poll costs an SSL context each time.
    with httpx.Client(timeout=2) as http:
        wait_healthy(
            http, f"{server.url}/healthz", proc, deadline, f"server {name}", server.log_tail
        )
        if local_worker:
            headers = {"Authorization": f"Bearer {server.token}"}
            while True:
                try:
                    workers = http.get(f"{server.url}/api/workers", headers=headers)
                    if any(w["online"] and w["name"] == "local" for w in workers.json()):
                        break
                except (httpx.HTTPError, ValueError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"server {name}'s worker did not connect:\n{server.log_tail()}"
                    )
                time.sleep(0.1)
    return server


# -- PostgreSQL ----------------------------------------------------------------------------


async def spawn_codex_pipe(
    codex_bin: str | Path,
    prompt: str,
    workdir: Path,
    env: dict[str, str],
    *,
    limit: int = 1 << 16,
) -> asyncio.subprocess.Process:
    """Start codex exactly as the worker would (its argv from ``runner.build_argv``, its own
    session, stdin from /dev/null), with stdout on a pipe for a baseline reader; ``limit`` is
    the pipe reader's line limit (bytes)."""
    spec = RunSpec(
        task_id="baseline",
        prompt=prompt,
        workdir=str(workdir),
        sandbox=Sandbox.WORKSPACE_WRITE,
        model=None,
        codex_bin=str(codex_bin),
        env=env,
    )
    argv = build_argv(spec)
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=workdir,
        env=env,
        start_new_session=True,
        limit=limit,
    )


def pg_admin_url() -> str:
    """The admin URL: ``CODEX_TUI_BENCH_PG_URL``, else ``CODEX_TUI_TEST_PG_URL``, else
    :data:`DEFAULT_PG_ADMIN_URL`."""
    for var in ("CODEX_TUI_BENCH_PG_URL", "CODEX_TUI_TEST_PG_URL"):
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return DEFAULT_PG_ADMIN_URL


async def _pg_exec_async(admin_url: str, *statements: str) -> None:
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    plain = make_url(admin_url).set(drivername="postgresql").render_as_string(False)
    conn = await asyncpg.connect(plain, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _pg_exec(admin_url: str, *statements: str) -> None:
    """Run ``statements`` on their own event loop in a helper thread (callable from sync code
    and from inside a running loop alike)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _pg_exec_async(admin_url, *statements)).result()


def create_pg_database(admin_url: str | None = None) -> str:
    """Create a fresh database ``bench_<run id>_<random>`` and register its drop.

    Returns:
        Its URL (same server, user and options as the admin URL).

    Raises:
        BenchError: PostgreSQL cannot be reached.
    """
    from sqlalchemy.engine import make_url

    admin = admin_url or pg_admin_url()
    name = f"bench_{RUN_ID}_{secrets.token_hex(3)}"
    try:
        _pg_exec(admin, f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - any failure means: no PostgreSQL here
        raise BenchError(f"PostgreSQL at {admin} is not usable: {exc!r}") from exc

    def drop() -> None:
        _pg_exec(
            admin,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        )

    CLEANUP.push(f"PostgreSQL database {name}", drop)
    return make_url(admin).set(database=name).render_as_string(hide_password=False)


# -- statistics ----------------------------------------------------------------------------


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, linearly interpolated (NaN if
    there are none)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """``{"n", "p50", "p90", "p99", "max", "mean"}`` of ``values`` (NaN when empty)."""
    data = sorted(values)
    if not data:
        return {"n": 0, "p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan}
    return {
        "n": len(data),
        "p50": quantile(data, 0.5),
        "p90": quantile(data, 0.9),
        "p99": quantile(data, 0.99),
        "max": data[-1],
        "mean": sum(data) / len(data),
    }


def median(values: Sequence[float]) -> float:
    """The median (NaN when empty)."""
    return quantile(sorted(values), 0.5)


def rounded(value: float, digits: int = 2) -> float | None:
    """``value`` rounded for the JSON file; None for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(value, digits)
