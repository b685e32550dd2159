"""Provides ``run_server``: bootstrap the store, start the local worker, serve with uvicorn.

On the first start with an empty store the server creates a local user for the OS user that
runs it and stores that user's token for the local client (server_client.credentials), so
``codex-tui`` commands of the same OS user on the same machine connect with no flags.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psutil
import uvicorn

from server_client.credentials import load_connection, save_connection
from server_client.paths import AppDirs
from server_client.server.app import create_app
from server_client.server.db import BOOTSTRAP_LOCK_KEY, advisory_lock, create_engine, migrate
from server_client.server.hub import Hub
from server_client.server.logs import UVICORN_LOG_CONFIG
from server_client.server.settings import ServerSettings
from server_client.server.store import Store

log = logging.getLogger(__name__)

LOCAL_WORKER_PIDFILE = "local-worker.pid"


@dataclass(frozen=True)
class LocalWorker:
    """The worker ``codex-tui server`` starts beside itself, as the command configured it
    (the server knows no worker settings: server and worker never import each other).

    Attributes:
        environ: Given the URL local clients use for this server and the local user's token,
            the environment variables the worker process reads its settings from (on top of
            this process's environment).
        stop_timeout_s: How long its exit may take after SIGTERM before SIGKILL (s): its
            cancel grace plus time to report the cancelled tasks.
    """

    environ: Callable[[str, str], Mapping[str, str]]
    stop_timeout_s: float = 12.0


def client_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to ``host:port``."""
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - mapping a bind address, not binding
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def bootstrap(settings: ServerSettings, url: str, dirs: AppDirs) -> str:
    """Migrate the store, ensure the local user, and return a valid local token.

    The token stored for the local client is reused when it still authenticates; otherwise a
    new one is issued and stored (never when the stored connection names another server:
    then the token is only returned, for the local worker).
    """
    engine = create_engine(settings.db_url)
    try:
        await migrate(engine)
        store = Store(engine)
        # Replicas starting at once on one database must agree on one local user.
        async with advisory_lock(engine, BOOTSTRAP_LOCK_KEY):
            local = await store.local_user()
            if local is None:
                name = getpass.getuser()
                if await store.count_users():
                    name = f"{name}-local"
                local = await store.create_user(name, is_local=True)
                log.info("created local user %s", local.name)
        stored = load_connection(dirs)
        if stored is not None and stored.server == url:
            principal = await store.authenticate(stored.token)
            if principal is not None and principal.user.id == local.id:
                return stored.token
        token = await store.issue_token(local.id)
        if stored is None or stored.server == url:
            where = save_connection(url, token, dirs)
            log.info("stored the local client's token (%s)", where)
        return token
    finally:
        await engine.dispose()


def _live_local_worker(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        proc = psutil.Process(pid)
        if proc.is_running() and "server_client.worker" in " ".join(proc.cmdline()):
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def start_local_worker(url: str, token: str, worker: LocalWorker, dirs: AppDirs) -> int:
    """Start the local worker as its own process (own session); returns its pid.

    Reuses a local worker that still runs from an earlier server start (pid file in the state
    folder). The token goes through the environment, never the command line.
    """
    pidfile = dirs.state / LOCAL_WORKER_PIDFILE
    existing = _live_local_worker(pidfile)
    if existing is not None:
        log.info("local worker already running (pid %d)", existing)
        return existing
    env = dict(os.environ)
    env.update(worker.environ(url, token))
    log_path = dirs.state / "local-worker.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-m", "server_client.worker"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    pidfile.write_text(f"{proc.pid}\n")
    log.info("started local worker (pid %d), log %s", proc.pid, log_path)
    return proc.pid


def stop_local_worker(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM the local worker (it cancels its tasks and exits); SIGKILL after ``timeout_s``."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout_s)
    except psutil.TimeoutExpired:
        proc.kill()
    except psutil.Error:
        pass


class _Server(uvicorn.Server):
    """uvicorn's server with an orderly exit.

    On the first SIGINT/SIGTERM it first runs ``before_exit`` while still serving (the local
    worker is stopped then, so it can report its cancelled tasks), then ends long polls and
    event streams (docs/reliability.md E5) and shuts down. A second signal forces the exit. Unlike
    plain uvicorn it does not re-raise the signal afterwards, so the caller's cleanup runs.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        hub: Hub,
        before_exit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config)
        self._hub = hub
        self._before_exit = before_exit
        self._exiting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:  # noqa: ARG002
        if self._exiting or self._before_exit is None or self._loop is None:
            self.force_exit = self._exiting
            self._exiting = True
            self._hub.close()
            self.should_exit = True
            return
        self._exiting = True
        self._loop.call_soon_threadsafe(self._start_draining)

    def _start_draining(self) -> None:
        self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        assert self._before_exit is not None
        try:
            await self._before_exit()
        except Exception:  # noqa: BLE001 - the exit must go on whatever happened
            log.exception("error while stopping before exit")
        self._hub.close()
        self.should_exit = True


def run_server(
    settings: ServerSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    local_worker: LocalWorker | None = None,
    log_level: str = "info",
    forwarded_allow_ips: str | None = None,
) -> None:
    """Serve until interrupted (blocking). Starts and, on exit, stops the local worker.

    ``forwarded_allow_ips`` (comma-separated, or ``*``) are the proxies whose
    ``X-Forwarded-For``/``-Proto`` uvicorn trusts for the client address (rate limits per
    address, audit rows); None keeps uvicorn's default (127.0.0.1, or FORWARDED_ALLOW_IPS).
    """
    dirs = AppDirs.resolve().ensure()
    url = client_url(host, port)
    token = asyncio.run(bootstrap(settings, url, dirs))
    worker_pid = None
    if local_worker is not None:
        worker_pid = start_local_worker(url, token, local_worker, dirs)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=UVICORN_LOG_CONFIG,
        timeout_graceful_shutdown=5,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
    )

    async def stop_worker() -> None:
        if worker_pid is not None:
            await asyncio.to_thread(stop_local_worker, worker_pid, timeout_s)
            (dirs.state / LOCAL_WORKER_PIDFILE).unlink(missing_ok=True)

    timeout_s = local_worker.stop_timeout_s if local_worker else 10.0
    try:
        _Server(config, app.state.hub, stop_worker).run()
    finally:
        if worker_pid is not None and psutil.pid_exists(worker_pid):
            stop_local_worker(worker_pid, timeout_s)
            (dirs.state / LOCAL_WORKER_PIDFILE).unlink(missing_ok=True)
