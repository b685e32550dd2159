"""End to end through `codex-tui server`, its local worker process and the SDK/CLI, with the
fake codex for deterministic edge cases (tests/fakes/fake_codex.py)."""

from __future__ import annotations

import json
import time

import psutil

from server_client.models import Event, EventKind, TaskStatus
from tests.conftest import LiveServer, ServerFactory, wait_until
from tests.support.waits import bounded


async def _run(server: LiveServer, prompt: str = "do the thing", **kwargs: str) -> list[Event]:
    async with server.client() as client:
        task = await client.create_task(prompt, workdir=str(server.workdir), **kwargs)
        async with bounded(90, f"task {task.id}'s stream to end"):
            return [event async for event in client.stream_events(task.id)]


def _codex_types(events: list[Event]) -> list[str]:
    return [e.codex_type or "" for e in events if e.kind is EventKind.CODEX]


async def test_a_task_streams_codex_events_in_order_and_completes(live_server: LiveServer) -> None:
    events = await _run(live_server)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].status is TaskStatus.QUEUED
    assert events[1].status is TaskStatus.RUNNING
    assert events[1].data["worker"] == "local"
    types = _codex_types(events)
    assert types[0] == "thread.started"
    assert "turn.completed" in types
    assert any(
        e.data.get("item", {}).get("type") == "command_execution"
        for e in events
        if e.kind is EventKind.CODEX and e.codex_type == "item.completed"
    )
    stderr = [e.data["line"] for e in events if e.kind is EventKind.STDERR]
    assert "Reading additional input from stdin..." in stderr
    assert events[-1].status is TaskStatus.COMPLETED
    async with live_server.client() as client:
        task = (await client.list_tasks()).items[0]
    assert task.status is TaskStatus.COMPLETED
    assert task.exit_code == 0
    started = next(e for e in events if e.codex_type == "thread.started")
    assert task.thread_id and task.thread_id == started.data["thread_id"]
    assert task.worker_name == "local"


async def test_codex_gets_the_prompt_as_plain_text_and_no_secrets(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        fake_mode="echo-argv",
        extra_env={"CODEX_TUI_CANARY": "canary-7d1f", "AWS_SECRET_ACCESS_KEY": "canary-aws"},
    )
    prompt = "--dangerously-bypass-approvals-and-sandbox $(rm -rf ~) `id`"
    events = await _run(server, prompt, sandbox="read-only")
    messages = [
        e.data["item"]["text"]
        for e in events
        if e.codex_type == "item.completed" and e.data["item"]["type"] == "agent_message"
    ]
    report = json.loads(messages[0])
    argv = report["argv"]
    assert argv[-2:] == ["--", prompt]
    assert argv[:3] == ["exec", "--json", "--skip-git-repo-check"]
    assert "--sandbox=read-only" in argv
    assert f"--cd={server.workdir}" in argv
    env_text = json.dumps(report["env"])
    assert "canary" not in env_text
    assert server.token not in env_text
    assert events[-1].status is TaskStatus.COMPLETED


async def test_a_crash_without_turn_completed_fails_with_the_reason(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(fake_mode="crash")
    events = await _run(server)
    assert events[-1].status is TaskStatus.FAILED
    assert "exited with code 3" in events[-1].data["reason"]


async def test_turn_failed_fails_with_codex_message(server_factory: ServerFactory) -> None:
    server = server_factory(fake_mode="fail", extra_env={"FAKE_CODEX_ERROR": "model melted"})
    events = await _run(server)
    assert events[-1].status is TaskStatus.FAILED
    assert "model melted" in events[-1].data["reason"]


def test_a_worker_without_codex_says_so_with_the_install_hint_and_claims_nothing(
    server_factory: ServerFactory,
) -> None:
    import httpx

    server = server_factory(codex_bin="/nonexistent/codex")
    auth = {"Authorization": f"Bearer {server.token}"}

    def workers() -> list[dict[str, object]]:
        answer = httpx.get(f"{server.url}/api/workers", headers=auth).json()
        assert isinstance(answer, list)
        return answer

    said = wait_until(lambda: [w for w in workers() if w["cannot_run"]], what="its hello")
    assert isinstance(said, list) and "npm install -g @openai/codex" in said[0]["cannot_run"]
    queued = server.cli("submit", "hello")
    task_id = queued.stdout.strip()
    seen = said[0]["last_seen_at"]
    wait_until(lambda: workers()[0]["last_seen_at"] != seen, 30, "its next poll")
    task = httpx.get(f"{server.url}/api/tasks/{task_id}", headers=auth).json()
    assert task["status"] == "queued"
    assert "claiming no task until it is installed" in server.log()


async def test_a_burst_arrives_complete_and_in_order(server_factory: ServerFactory) -> None:
    server = server_factory(fake_mode="burst", extra_env={"FAKE_CODEX_EVENTS": "3000"})
    events = await _run(server)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    ids = [
        e.data["item"]["id"]
        for e in events
        if e.codex_type == "item.completed" and "item" in e.data
    ]
    assert len(ids) >= 3000
    assert events[-1].status is TaskStatus.COMPLETED


def _processes_of(server: LiveServer, task_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["environ"]):
        try:
            if (proc.info["environ"] or {}).get("CODEX_TUI_TASK_ID") == task_id:
                found.append(proc)
        except psutil.Error:
            continue
    return found


async def test_cancel_stops_codex_and_every_process_it_started(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(fake_mode="fork", grace_s=1.0)
    async with server.client() as client:
        task = await client.create_task("fork and sleep", workdir=str(server.workdir))
        seen: list[Event] = []
        async with bounded(90, f"task {task.id}'s first item.started"):
            async for event in client.stream_events(task.id):
                seen.append(event)
                if event.codex_type == "item.started":
                    break
        wait_until(lambda: len(_processes_of(server, task.id)) >= 2, what="codex and its child")
        asked = time.monotonic()
        canceled = await client.cancel_task(task.id)
        assert canceled.cancel_requested
        async with bounded(90, f"canceled task {task.id}'s stream to end"):
            rest = [e async for e in client.stream_events(task.id, after=seen[-1].seq)]
        took = time.monotonic() - asked
    assert rest[-1].status is TaskStatus.CANCELED
    assert any(e.data.get("cancel_requested") for e in rest if e.kind is EventKind.STATUS)
    assert took < 1.0 + 2.0
    assert _processes_of(server, task.id) == []


async def test_cancel_of_codex_that_ignores_sigint_kills_it_after_the_grace(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(fake_mode="ignore-sigint", grace_s=0.5)
    async with server.client() as client:
        task = await client.create_task("stubborn", workdir=str(server.workdir))
        wait_until(lambda: _processes_of(server, task.id), what="codex to start")
        await client.cancel_task(task.id)
        async with bounded(90, f"canceled task {task.id}'s stream to end"):
            events = [e async for e in client.stream_events(task.id)]
    assert events[-1].status is TaskStatus.CANCELED
    assert _processes_of(server, task.id) == []


def test_cli_submit_follow_json_and_ls_logs_cancel(server_factory: ServerFactory) -> None:
    server = server_factory()
    result = server.cli("submit", "--follow", "--json", "-f", "say hi")
    assert result.returncode == 0, result.stderr
    task_id = result.stderr.strip().rsplit(" ", 1)[-1]  # stdout holds the envelopes only
    envelopes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in envelopes] == list(range(1, len(envelopes) + 1))
    assert set(envelopes[0]) == {"seq", "ts", "kind", "data"}
    assert envelopes[-1]["data"]["status"] == "completed"

    plain = server.cli("logs", task_id)
    assert plain.returncode == 0, plain.stderr
    assert "completed" in plain.stdout

    listed = server.cli("ls", "--json")
    assert json.loads(listed.stdout.splitlines()[0])["id"] == task_id

    quiet = server.cli("submit", "-")
    assert quiet.returncode == 2 and "empty" in quiet.stderr
    only_id = server.cli("submit", "--", "-h")
    assert only_id.returncode == 0, only_id.stderr
    assert len(only_id.stdout.split()) == 1

    missing = server.cli("cancel", "nope")
    assert missing.returncode == 2
    assert "404" in missing.stderr


def test_cli_follow_exits_nonzero_when_the_task_fails(server_factory: ServerFactory) -> None:
    server = server_factory(fake_mode="fail")
    result = server.cli("submit", "--follow", "break it")
    assert result.returncode == 1
    assert "failed" in result.stdout


def test_cli_without_token_names_the_fix(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    env = dict(server.env)
    env["CODEX_TUI_TOKEN"] = "ctu_wrong"
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "codex_tui", "ls", "--server", server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "401" in result.stderr and "ctu_wrong" not in result.stderr


async def test_server_stop_with_worker_stops_its_worker_which_reports_its_tasks(
    server_factory: ServerFactory,
) -> None:
    """`codex-tui server stop --with-worker` stops the local worker first, while the server
    still serves, so that its running tasks end cancelled (a plain stop leaves both running:
    tests/e2e/test_server_lifecycle.py)."""
    from server_client.server.db import create_engine
    from server_client.server.store import Store, User

    server = server_factory(fake_mode="sleep", grace_s=0.5)
    async with server.client() as client:
        me = await client.me()
        task = await client.create_task("long", workdir=str(server.workdir))
        async with bounded(90, f"task {task.id}'s first item.started"):
            async for event in client.stream_events(task.id):
                if event.codex_type == "item.started":
                    break
    # It exits promptly: nothing has to be killed after the --timeout.
    stop = server.cli("server", "stop", "--with-worker", "--timeout", "10")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert server.proc.wait(20) == 0, server.log()
    assert _processes_of(server, task.id) == []
    assert not (server.home / "state" / "local-worker.pid").exists()
    engine = create_engine(f"sqlite:///{server.home / 'data' / 'codex-tui.db'}")
    try:
        stored = await Store(engine).get_task(User(id=me.user_id, name=me.name), task.id)
    finally:
        await engine.dispose()
    assert stored.status is TaskStatus.CANCELED
    assert stored.error == "the worker was stopped"


async def test_revoking_the_local_worker_stops_it_and_it_does_not_come_back(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(fake_mode="sleep", grace_s=0.5)
    pid = int((server.home / "state" / "local-worker.pid").read_text())
    async with server.client() as client:
        task = await client.create_task("long", workdir=str(server.workdir))
        async with bounded(90, f"task {task.id}'s first item.started"):
            async for event in client.stream_events(task.id):
                if event.codex_type == "item.started":
                    break
        local = next(w for w in await client.list_workers() if w.name == "local")
        await client.revoke_worker(local.id)
        async with bounded(90, f"task {task.id} to end lost after its worker was revoked"):
            events = [e async for e in client.stream_events(task.id, after=event.seq)]
        assert events[-1].status is TaskStatus.LOST
        wait_until(
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
            15,
            "the local worker to exit",
        )
        assert [w.name for w in await client.list_workers()] == []
    assert _processes_of(server, task.id) == []
    assert "the server refused this worker" in server.log()
