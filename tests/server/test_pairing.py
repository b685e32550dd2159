"""Pairing (issue 3, docs/reliability.md S2, S7): short single-use codes that expire, exchanged
atomically for a worker token that a worker process on "another machine" (its own
CODEX_TUI_HOME) saves 0600 and reuses after a restart without a new code."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from server_client.client import ApiError, redeem_pairing_code
from server_client.models import PairingCode, PairResult, TaskStatus, utcnow
from tests.conftest import LiveServer, ServerFactory, wait_until
from tests.support.waits import bounded
from tests.support.worker_procs import WorkerPool, create_pairing_code, run_sdk

#: Crockford base32 without I, L, O, U: ``K7PQ-3MZD``.
CODE_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")
TOKEN_RE = re.compile(r"^ctu_[A-Za-z0-9_-]{43}$")
USED_MESSAGE = "pairing failed: invalid, used or expired pairing code"


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    """Paired worker processes of this test (killed at the end)."""
    with WorkerPool(tmp_path) as pool:
        yield pool


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server without a local worker: only paired workers run tasks."""
    return server_factory(local_worker=False)


def _pair_in(
    tmp_path: Path, server: LiveServer, code: str, home: str
) -> subprocess.CompletedProcess[str]:
    """Run ``codex-tui worker --server URL --pair CODE`` in a fresh home (it must fail fast)."""
    env = {k: v for k, v in server.env.items() if not k.startswith("CODEX_TUI_")}
    env.update({"CODEX_TUI_HOME": str(tmp_path / home), "CODEX_TUI_KEYRING": "0"})
    return subprocess.run(
        [sys.executable, "-m", "codex_tui", "worker", "--server", server.url, "--pair", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _status(url: str, token: str, method: str = "GET", path: str = "/api/me") -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.request(method, url + path, headers=headers, json={"name": "probe"}).status_code


def test_pair_prints_a_short_code_and_the_command_that_pairs_a_worker_which_survives_restarts(
    server: LiveServer, workers: WorkerPool, tmp_path: Path
) -> None:
    printed = server.cli("pair")
    assert printed.returncode == 0, printed.stderr
    command = next(line.strip() for line in printed.stdout.splitlines() if "--pair" in line)
    argv = shlex.split(command)
    assert argv[:4] == ["codex-tui", "worker", "--server", server.url], command
    assert argv[4] == "--pair" and len(argv) == 6
    code = argv[5]
    assert CODE_RE.match(code) and len(code) <= 9, code
    assert f"Pairing code {code}" in printed.stdout

    as_json = PairingCode.model_validate_json(server.cli("pair", "--json").stdout)
    assert CODE_RE.match(as_json.code) and as_json.code != code
    lifetime = as_json.expires_at - utcnow()
    assert timedelta(minutes=9) < lifetime <= timedelta(minutes=10)

    # Run the printed command on "another machine" (its own home).
    remote = workers.start(server, "remote-1", code=code, labels=("gpu",), max_tasks=3)
    assert "paired as worker 'remote-1'" in remote.log()
    first = remote.wait_connected()
    assert first.labels == ["gpu"] and first.max_tasks == 3 and first.hostname

    # The saved pairing: 0600, in <CODEX_TUI_HOME>/config/worker.json, a worker token only.
    saved = remote.config_path
    assert saved == remote.home / "config" / "worker.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) & 0o077 == 0
    body = json.loads(saved.read_text())
    assert set(body) == {"server", "token", "name", "labels"}
    assert body["server"] == server.url and body["name"] == "remote-1"
    assert body["labels"] == ["gpu"]
    assert TOKEN_RE.match(body["token"])
    assert server.token not in saved.read_text()
    assert _status(server.url, body["token"]) == 403  # a worker token, not a user token
    assert body["token"] not in " ".join(psutil.Process(remote.pid).cmdline())

    # Restart with plain `codex-tui worker`: same worker, no new code.
    assert remote.terminate() == 0, remote.describe()
    again = remote.restart_plain()
    assert again.id == first.id and again.connected_at > first.connected_at
    assert again.labels == ["gpu"], "the labels given at pairing are kept"
    done = server.cli(
        "submit", "--worker", "remote-1", "--workdir", str(remote.workroot), "-f", "hello remote"
    )
    assert done.returncode == 0, done.stderr + remote.describe()
    task_id = done.stdout.splitlines()[0]
    task = run_sdk(server.url, server.token, lambda c: c.get_task(task_id))
    assert task.status is TaskStatus.COMPLETED and task.worker_id == first.id

    # The used code fails, clearly, and saves nothing.
    reused = _pair_in(tmp_path, server, code, "thief")
    assert reused.returncode != 0
    assert USED_MESSAGE in reused.stderr and "codex-tui pair" in reused.stderr, reused.stderr
    assert not (tmp_path / "thief" / "config" / "worker.json").exists()
    # A worker that was never paired says how to pair it.
    unpaired = subprocess.run(
        [sys.executable, "-m", "codex_tui", "worker"],
        env={**remote.env, "CODEX_TUI_HOME": str(tmp_path / "fresh")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unpaired.returncode != 0 and "--pair CODE" in unpaired.stderr, unpaired.stderr


async def test_an_expired_code_is_refused(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory(local_worker=False, server_args=("--pairing-ttl", "1"))
    async with server.client() as client:
        code = await client.create_pairing_code()
    assert code.expires_at - utcnow() <= timedelta(seconds=1)
    await asyncio.to_thread(
        wait_until,
        lambda: utcnow() > code.expires_at + timedelta(milliseconds=50),
        10,
        "the code to expire",
    )
    with pytest.raises(ApiError) as refused:
        await redeem_pairing_code(server.url, code.code, name="late")
    assert refused.value.status == 400
    assert code.code not in str(refused.value.problem)
    late = _pair_in(tmp_path, server, code.code, "late")
    assert late.returncode != 0 and USED_MESSAGE in late.stderr, late.stderr
    async with server.client() as client:
        assert await client.list_workers() == []


async def test_twenty_concurrent_redemptions_of_one_code_exactly_one_wins(
    server: LiveServer,
) -> None:
    async with server.client() as client:
        code = await client.create_pairing_code()
    # Typed by a person: lower case and no dash work too (and count as the same code).
    spellings = [code.code, code.code.lower(), code.code.replace("-", "")]
    results = await asyncio.gather(
        *(redeem_pairing_code(server.url, spellings[i % 3], name=f"racer-{i}") for i in range(20)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, PairResult)]
    losses = [r for r in results if isinstance(r, ApiError)]
    assert len(wins) == 1, results
    assert len(losses) == 19 and {e.status for e in losses} == {400}, results
    winner = wins[0]
    async with server.client() as client:
        listed = await client.list_workers()
    assert [w.name for w in listed] == [winner.worker.name]
    assert _status(server.url, winner.token, "POST", "/api/workers/connect") == 200

    # Pairing the same name again with a new code replaces the old token: it fails at once.
    fresh = create_pairing_code(server)
    again = await redeem_pairing_code(server.url, fresh.code, name=winner.worker.name)
    assert again.worker.id == winner.worker.id and again.token != winner.token
    assert _status(server.url, winner.token, "POST", "/api/workers/connect") == 401
    assert _status(server.url, again.token, "POST", "/api/workers/connect") == 200


async def test_codes_and_tokens_never_appear_in_logs_or_error_bodies(
    server_factory: ServerFactory, workers: WorkerPool, tmp_path: Path
) -> None:
    server = server_factory(local_worker=False, server_args=("--log-level", "debug"))
    remote = workers.start(server, "chatty")
    async with server.client() as client:
        task = await client.create_task("talk", worker="chatty")
        async with bounded(60, f"task {task.id}'s stream to end on worker chatty"):
            events = [e async for e in client.stream_events(task.id)]
        assert events[-1].status is TaskStatus.COMPLETED, remote.describe()
        unused = await client.create_pairing_code()
    async with httpx.AsyncClient(base_url=server.url) as http:
        bad = await http.post("/api/pair", json={"code": unused.code + "X", "name": "x"})
        assert bad.status_code == 400 and unused.code not in bad.text
        wrong = await http.get("/api/me", headers={"Authorization": f"Bearer {remote.token}x"})
        assert wrong.status_code == 401 and remote.token not in wrong.text
    used = remote.codes[0]
    secrets = {
        "pairing code": used,
        "pairing code (bare)": used.replace("-", ""),
        "unused code": unused.code,
        "unused code (bare)": unused.code.replace("-", ""),
        "worker token": remote.token,
        "user token": server.token,
    }
    server_log = server.log()
    assert '"POST /api/pair HTTP/1.1" 200' in server_log, "the log should show each request"
    for where, text in (("server", server_log), ("worker", remote.log())):
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} appears in the {where} log"
