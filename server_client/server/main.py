"""Provides ``run_server``: bootstrap the store, start the local worker, serve with uvicorn;
and :func:`running_server` / :func:`stop_process`, which ``codex-tui server status|stop`` use.

On the first start with an empty store the server creates a local user for the OS user that
runs it and stores that user's token for the local client (server_client.credentials), so
``codex-tui`` commands of the same OS user on the same machine connect with no flags.

One server per state folder: a running server holds an exclusive lock on
``<state>/server.lock`` (released by the kernel when it exits, however it exits) and describes
itself in ``<state>/server.json`` (pid, start time, URL, local worker's pid). A second server
on the same folder is refused before it touches anything (the store, the local worker, the
port). The local worker outlives the server (a server stop or restart never stops a task,
docs/reliability.md R1): the next server adopts it from ``<state>/local-worker.pid``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import getpass
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psutil
import uvicorn
from sse_starlette.sse import AppStatus

from server_client.credentials import load_connection, save_connection
from server_client.paths import AppDirs
from server_client.server.app import create_app
from server_client.server.db import BOOTSTRAP_LOCK_KEY, advisory_lock, create_engine, migrate
from server_client.server.edge import guarded_protocol
from server_client.server.hub import Hub
from server_client.server.logs import UVICORN_LOG_CONFIG
from server_client.server.settings import ServerSettings
from server_client.server.store import Store

log = logging.getLogger(__name__)

LOCAL_WORKER_PIDFILE = "local-worker.pid"
#: Held (``flock``) by the running server of a state folder.
SERVER_LOCKFILE = "server.lock"
#: The running server of a state folder: :class:`ServerRecord` as JSON.
SERVER_RECORD = "server.json"


class ServerAlreadyRunning(ValueError):
    """Another server holds this state folder; the message names it and how to stop it."""


class PortInUse(ValueError):
    """The port is taken by another program; the message names the flag that changes it."""


@dataclass(frozen=True)
class ServerRecord:
    """A running ``codex-tui server``, as it recorded itself in ``<state>/server.json``.

    Attributes:
        pid: Its process id.
        create_time: Its process's start time (s since the epoch, as psutil reports it):
            with ``pid`` it names that one process, never a later one given the same pid.
        url: The URL local clients use for it.
        worker_pid: Its local worker's pid (None: it runs without one).
    """

    pid: int
    create_time: float
    url: str
    worker_pid: int | None

    def to_json(self) -> str:
        """This record as one JSON object."""
        return json.dumps(self.__dict__) + "\n"


def _own_process(pid: int, create_time: float | None = None) -> psutil.Process | None:
    """The live process ``pid`` when it belongs to this OS user (and started at
    ``create_time``, when given, to 10 ms), else None."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.uids().real != os.getuid():
            return None
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return None
    except psutil.Error:
        return None
    return proc


def running_server(dirs: AppDirs) -> ServerRecord | None:
    """The server recorded in ``dirs.state``'s ``server.json`` when that very process still
    runs as this OS user (same pid and start time); None otherwise (no record, an unreadable
    one, or a stale one left by a server that died)."""
    try:
        raw = json.loads((dirs.state / SERVER_RECORD).read_text())
        record = ServerRecord(
            pid=int(raw["pid"]),
            create_time=float(raw["create_time"]),
            url=str(raw["url"]),
            worker_pid=None if raw.get("worker_pid") is None else int(raw["worker_pid"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if _own_process(record.pid, record.create_time) is not None else None


def local_worker_pid(dirs: AppDirs) -> int | None:
    """The pid of the local worker recorded in ``dirs.state`` when it still runs as this OS
    user and is a codex-tui worker (its command line says so); else None."""
    return _live_local_worker(dirs.state / LOCAL_WORKER_PIDFILE)


def stop_process(pid: int, timeout_s: float, create_time: float | None = None) -> str:
    """SIGTERM the process ``pid`` of this OS user and wait up to ``timeout_s`` (s) for it
    to exit; SIGKILL it then.

    Returns:
        ``"stopped"``, ``"killed"`` (it outlived ``timeout_s``), or ``"not running"`` (gone
        already, another user's, or started at another time than ``create_time``).
    """
    proc = _own_process(pid, create_time)
    if proc is None:
        return "not running"
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
    if _exited(proc, timeout_s):
        return "stopped"
    with contextlib.suppress(psutil.Error):
        proc.kill()
    _exited(proc, 5.0)
    return "killed"


def _exited(proc: psutil.Process, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` (s) for ``proc`` to exit; True when it did. A zombie counts
    as exited: a process that is not our child (the TUI started the server, say) stays one
    until its parent reaps it."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _claim_state_folder(dirs: AppDirs) -> int:
    """Take this state folder's server lock (an open file descriptor, held until closed or
    this process exits).

    Raises:
        ServerAlreadyRunning: another process holds it.
    """
    fd = os.open(dirs.state / SERVER_LOCKFILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        record = running_server(dirs)
        who = f"(pid {record.pid}, {record.url})" if record else "(starting or stopping)"
        raise ServerAlreadyRunning(
            f"a codex-tui server already runs for the state folder {dirs.state} {who}; "
            "stop it with `codex-tui server stop` (add --with-worker to stop its local worker "
            "too), or give this one other folders with CODEX_TUI_HOME"
        ) from None
    return fd


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet; uvicorn listens on it).

    Raises:
        PortInUse: the address is taken (or cannot be bound); the message names ``--port``
            and ``CODEX_TUI_LOCAL_PORT``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); another program uses it: "
            "choose another port with --port (or CODEX_TUI_LOCAL_PORT, which the TUI and "
            "`codex-tui submit` use to find the local server too)"
        ) from None
    return sock


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


def is_loopback(host: str) -> bool:
    """True when binding ``host`` (an address or a name) exposes the server to this machine
    only: ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warnings(host: str, settings: ServerSettings) -> list[str]:
    """What to tell the operator of a server bound to ``host``: nothing on loopback; bound
    elsewhere, that tokens cross the network in plain HTTP unless TLS is in front (taken to
    be there when ``settings.public_url`` is https or ``settings.trusted_proxies`` names a
    proxy), and that ``/metrics`` is open without ``settings.metrics_token``."""
    if is_loopback(host):
        return []
    warnings = []
    tls_in_front = bool(settings.trusted_proxies) or (
        settings.public_url is not None and settings.public_url.startswith("https://")
    )
    if not tls_in_front:
        warnings.append(
            f"listening on {host} in plain HTTP: bearer tokens (users' and workers') cross the "
            "network readable by anyone on the path. Put TLS in front (nginx, "
            "docs/deployment.md; then set CODEX_TUI_SERVER_PUBLIC_URL=https://... and "
            "CODEX_TUI_SERVER_TRUSTED_PROXIES), or keep --host 127.0.0.1 and reach the server "
            "through an SSH tunnel (ssh -L 8765:127.0.0.1:8765 HOST)"
        )
    if not settings.metrics_token:
        warnings.append(
            f"GET /metrics is open to whoever reaches {host} (task counts by state, workers "
            "online, requests by route): set CODEX_TUI_SERVER_METRICS_TOKEN to require a token"
        )
    return warnings


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
    except (OSError, ValueError):
        return None
    proc = _own_process(pid)
    try:
        if proc is not None and "server_client.worker" in " ".join(proc.cmdline()):
            return pid
    except psutil.Error:
        pass
    return None


def _serves(pid: int, expected: Mapping[str, str], url: str) -> bool:
    """True when the worker ``pid`` was started for ``url`` (each of its variables that
    ``expected`` sets to ``url`` has that value in its environment)."""
    keys = [key for key, value in expected.items() if value == url]
    try:
        environ = psutil.Process(pid).environ()
    except psutil.Error:
        return False
    return all(environ.get(key) == url for key in keys)


def start_local_worker(url: str, token: str, worker: LocalWorker, dirs: AppDirs) -> int:
    """Start the local worker as its own process (own session); returns its pid.

    Adopts the local worker that still runs from an earlier server start (pid file in the
    state folder; it outlives its server so that its tasks go on, docs/reliability.md R1)
    when it serves this ``url``; one started for another URL (the server moved to another
    port) is stopped first (its running tasks end cancelled) and a new one started. The
    token goes through the environment, never the command line.
    """
    pidfile = dirs.state / LOCAL_WORKER_PIDFILE
    expected = worker.environ(url, token)
    existing = _live_local_worker(pidfile)
    if existing is not None:
        if _serves(existing, expected, url):
            log.info("adopted the local worker that still runs (pid %d)", existing)
            return existing
        log.warning(
            "the local worker (pid %d) serves another URL than %s; stopping it", existing, url
        )
        stop_local_worker(existing, worker.stop_timeout_s)
    env = dict(os.environ)
    env.update(expected)
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
    stop_process(pid, timeout_s)


class _Server(uvicorn.Server):
    """uvicorn's server with an orderly exit.

    On the first SIGINT/SIGTERM it first runs ``before_exit`` while still serving (work that
    must reach the server before it goes), then ends long polls and
    event streams (docs/reliability.md E5) and shuts down. A second signal forces the exit. Unlike
    plain uvicorn it does not re-raise the signal afterwards, so the caller's cleanup runs.

    Event streams end by closing the hub: each stream's generator sends what it has read and
    returns, so its chunked response is completed and the client sees a clean end (and
    reconnects elsewhere). sse-starlette's own shutdown drain is turned off for the process:
    it cancels every stream within 0.5 s of the exit flag, whatever it is doing, which cut a
    stream still sending its replay mid-response (the client read an incomplete chunked
    body). A stream that does not end by itself is bounded by uvicorn's
    ``timeout_graceful_shutdown``.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        hub: Hub,
        before_exit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config)
        # The hub ends the streams (see above); what disable_automatic_graceful_drain() sets.
        AppStatus.enable_automatic_graceful_drain = False
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
            if self._loop is not None:  # a signal handler: the loop closes the hub, not it
                self._loop.call_soon_threadsafe(self._hub.close)
            else:
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
) -> None:
    """Serve until interrupted (blocking). Starts the local worker, or adopts the one that
    still runs; on exit leaves it running (``codex-tui server stop --with-worker`` stops
    both), so that a restart never stops a task.

    Only ``settings.trusted_proxies`` have their ``X-Forwarded-For``/``-Proto`` believed
    (none by default: uvicorn's own default, 127.0.0.1 or ``FORWARDED_ALLOW_IPS``, is never
    used, docs/reliability.md S11). Bound off loopback, the server logs a warning for each
    of :func:`exposure_warnings`.

    Raises:
        ServerAlreadyRunning: another server runs on this state folder (nothing was touched).
        PortInUse: ``host:port`` cannot be bound (nothing was touched but the lock).
    """
    dirs = AppDirs.resolve().ensure()
    lock = _claim_state_folder(dirs)
    try:
        sock = _bind(host, port)
        with sock:
            _serve(settings, sock, host, port, local_worker, log_level, dirs)
    finally:
        os.close(lock)


def _serve(
    settings: ServerSettings,
    sock: socket.socket,
    host: str,
    port: int,
    local_worker: LocalWorker | None,
    log_level: str,
    dirs: AppDirs,
) -> None:
    """:func:`run_server`'s work once it holds the state folder and its socket."""
    for warning in exposure_warnings(host, settings):
        log.warning("%s", warning)
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        log.warning(
            "FORWARDED_ALLOW_IPS is ignored: name the proxies whose X-Forwarded-For is "
            "trusted with --trusted-proxies or CODEX_TUI_SERVER_TRUSTED_PROXIES"
        )
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
        # Forwarded headers from the configured proxies only; uvicorn's default would trust
        # 127.0.0.1, i.e. any local client (docs/reliability.md S11).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
        # uvicorn bounds no request read: the header deadline (docs/reliability.md S12).
        http=guarded_protocol(settings.request_read_timeout_s),
        # The workers' upload sockets (routes_workers.upload_socket): a message over
        # max_body_bytes is answered 413 there; one far larger is cut off by the protocol.
        ws="websockets-sansio",
        ws_max_size=2 * settings.max_body_bytes,
    )
    me = psutil.Process()
    record = ServerRecord(pid=me.pid, create_time=me.create_time(), url=url, worker_pid=worker_pid)
    record_path = dirs.state / SERVER_RECORD
    record_path.write_text(record.to_json())
    try:
        _Server(config, app.state.hub).run(sockets=[sock])
    finally:
        record_path.unlink(missing_ok=True)
        if worker_pid is not None:
            log.info(
                "the local worker (pid %d) runs on with its tasks; the next server adopts it "
                "(`codex-tui server stop --with-worker` stops it)",
                worker_pid,
            )
