"""The server's lifecycle on one state folder (issue 16; docs/reliability.md E5, E7): one server
per folder, a second one refused before it touches anything; ``codex-tui server status|stop``
find and stop that server only; its default port follows ``CODEX_TUI_LOCAL_PORT``; its local
worker outlives a server stop, so a task running there survives a server restart."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from server_client.models import Event, EventKind, TaskStatus
from tests.conftest import LiveServer, ServerFactory, free_port, wait_until
from tests.support.waits import bounded
from tests.support.worker_procs import task_processes


def _worker_pid(server: LiveServer) -> int:
    return int((server.home / "state" / "local-worker.pid").read_text())


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _port(server: LiveServer) -> str:
    return server.url.rsplit(":", 1)[1]


def _run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codex_tui", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _isolated_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_TUI_")}
    env.update(CODEX_TUI_HOME=str(home), CODEX_TUI_KEYRING="0", **extra)
    return env


async def _until_running(server: LiveServer, task_id: str) -> Event:
    async with server.client() as client:
        async with bounded(90, f"task {task_id}'s first item.started"):
            async for event in client.stream_events(task_id):
                if event.codex_type == "item.started":
                    return event
    raise AssertionError(f"task {task_id} ended before it ran:\n{server.log()}")


async def test_a_second_server_on_the_same_state_folder_is_refused_and_touches_nothing(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(fake_mode="sleep")
    worker = _worker_pid(server)
    async with server.client() as client:
        task = await client.create_task("long", workdir=str(server.workdir))
    await _until_running(server, task.id)
    server_pid = server.proc.pid
    for port in (_port(server), str(free_port())):  # the same port, and another one
        second = server.cli("server", "--port", port, "--log-level", "warning", timeout=30)
        assert second.returncode == 2, second.stderr
        assert f"pid {server_pid}, {server.url}" in second.stderr
        assert "codex-tui server stop" in second.stderr
    assert _alive(worker) and _worker_pid(server) == worker, server.log()
    assert task_processes(task.id), "codex still runs"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{server.url}/healthz", timeout=5)).status_code == 200
    async with server.client() as client:
        assert (await client.get_task(task.id)).status is TaskStatus.RUNNING


def test_a_taken_port_is_refused_naming_the_flags_before_any_worker_starts(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(_isolated_env(home), "server", "--port", str(port), "--log-level", "warning")
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr and "CODEX_TUI_LOCAL_PORT" in result.stderr
    assert not (home / "state" / "local-worker.pid").exists()
    assert not (home / "data" / "codex-tui.db").exists(), "the store was not touched"


async def test_status_and_stop_find_the_server_and_stop_it_and_its_worker_only_when_asked(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    worker = _worker_pid(server)
    status = server.cli("server", "status")
    assert status.returncode == 0, status.stderr
    assert f"pid {server.proc.pid}, {server.url}" in status.stdout
    assert f"local worker: pid {worker}" in status.stdout
    as_json = json.loads(server.cli("server", "status", "--json").stdout)
    assert as_json["running"] and as_json["answers"] and as_json["worker_pid"] == worker

    stop = server.cli("server", "stop")
    assert stop.returncode == 0, stop.stderr
    assert f"stopped the server (pid {server.proc.pid}, {server.url})" in stop.stdout
    assert server.proc.wait(5) == 0, server.log()
    assert _alive(worker), "the local worker runs on"
    status = server.cli("server", "status")
    assert status.returncode == 3
    assert "no codex-tui server runs" in status.stdout
    assert f"its local worker still runs (pid {worker})" in status.stdout

    both = server.cli("server", "stop", "--with-worker")
    assert both.returncode == 0, both.stderr
    assert f"stopped the local worker (pid {worker})" in both.stdout
    assert not _alive(worker)
    assert server.cli("server", "status").returncode == 3


def test_stop_never_signals_a_process_that_only_reuses_the_recorded_pid(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "state").mkdir(parents=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        record = {"pid": bystander.pid, "create_time": 1.0, "url": "http://x", "worker_pid": None}
        (home / "state" / "server.json").write_text(json.dumps(record))
        (home / "state" / "local-worker.pid").write_text(f"{bystander.pid}\n")
        env = _isolated_env(home)
        assert _run(env, "server", "status").returncode == 3
        stop = _run(env, "server", "stop", "--with-worker", "--timeout", "1")
        assert stop.returncode == 0, stop.stderr
        assert "no codex-tui server runs" in stop.stdout
        assert bystander.poll() is None, "a process that is not the server was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_the_default_port_is_codex_tui_local_port(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    env = _isolated_env(home, CODEX_TUI_LOCAL_PORT=str(port))
    bad = _run({**env, "CODEX_TUI_LOCAL_PORT": "eighty"}, "server", "--no-local-worker")
    assert bad.returncode == 2
    assert "CODEX_TUI_LOCAL_PORT" in bad.stderr and "'eighty'" in bad.stderr
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codex_tui", "server", "--no-local-worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success
            except httpx.HTTPError:
                return False

        wait_until(up, 30, f"the server to answer on CODEX_TUI_LOCAL_PORT={port}")
        status = _run(env, "server", "status")
        assert f"http://127.0.0.1:{port}" in status.stdout
        assert _run(env, "server", "stop").returncode == 0
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_task_on_the_local_worker_survives_a_server_restart_and_completes(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    options = {
        "fake_mode": "sleep",
        "pass_env": ("FAKE_CODEX_WAIT_FILE",),
        "extra_env": {"FAKE_CODEX_WAIT_FILE": str(gate)},
    }
    server = server_factory(**options)
    worker = _worker_pid(server)
    async with server.client() as client:
        task = await client.create_task("wait for the gate", workdir=str(server.workdir))
    await _until_running(server, task.id)

    stop = server.cli("server", "stop")
    assert stop.returncode == 0, stop.stderr
    assert server.proc.wait(5) == 0, server.log()
    assert _alive(worker) and task_processes(task.id), server.log()

    again = server_factory(**options, reuse=server)
    assert _worker_pid(again) == worker, "the new server adopted the running worker"
    gate.touch()
    async with again.client() as client:
        async with bounded(90, f"task {task.id}'s stream to end on the adopted worker"):
            events = [e async for e in client.stream_events(task.id)]
        final = await client.get_task(task.id)
    statuses = [e.status for e in events if e.kind is EventKind.STATUS]
    assert statuses == [TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.COMPLETED], again.log()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.codex_type for e in events if e.codex_type == "item.completed"] == ["item.completed"]
    assert final.status is TaskStatus.COMPLETED and final.exit_code == 0
