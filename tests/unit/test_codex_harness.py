"""Provides tests that pin down the real codex ``exec --json`` contract against the mock model.

These tests are the ground truth the worker's codex runtime is built on: event shapes, exit
codes, failure reporting and what SIGINT does to the commands codex started. They need the
pinned codex binary (see ``tests/fakes/codex_home.py``) and fail, never skip, without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from tests.fakes.codex_home import codex_env
from tests.fakes.mock_model_server import MockModel, call_shell, fail_http, say, think
from tests.support.waits import within

pytestmark = pytest.mark.timeout(60)

TASK_ENV = "CODEX_TUI_TASK_ID"
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@dataclass
class CodexRun:
    """The outcome of one ``codex exec --json`` process."""

    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    events: list[dict[str, Any]] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def items(self, event_type: str, item_type: str) -> list[dict[str, Any]]:
        return [e["item"] for e in self.of_type(event_type) if e["item"].get("type") == item_type]

    def describe(self) -> str:
        return f"rc={self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def codex_argv(
    codex_bin: str, workdir: Path, prompt: str, sandbox: str, resume: str | None = None
) -> list[str]:
    """``codex exec --json ...``; options go before ``resume <thread_id>``."""
    argv = [codex_bin, "exec", "--json", "--skip-git-repo-check", "-s", sandbox, "-C", str(workdir)]
    if resume is not None:
        argv += ["resume", resume]
    return [*argv, prompt]


async def spawn_codex(
    codex_bin: str,
    codex_home: Path,
    workdir: Path,
    prompt: str,
    *,
    sandbox: str = "danger-full-access",
    extra_env: dict[str, str] | None = None,
    resume: str | None = None,
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *codex_argv(codex_bin, workdir, prompt, sandbox, resume),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=codex_env(codex_home, extra=extra_env),
        start_new_session=True,
        limit=16 * 1024 * 1024,
    )


def parse_events(stdout: str) -> list[dict[str, Any]]:
    events = []
    for line in stdout.splitlines():
        if line.strip():
            events.append(json.loads(line))  # stdout must be pure JSONL
    return events


async def run_codex(
    codex_bin: str,
    codex_home: Path,
    workdir: Path,
    prompt: str,
    *,
    sandbox: str = "danger-full-access",
    extra_env: dict[str, str] | None = None,
    resume: str | None = None,
    within: float = 20.0,
) -> CodexRun:
    start = time.monotonic()
    proc = await spawn_codex(
        codex_bin, codex_home, workdir, prompt, sandbox=sandbox, extra_env=extra_env, resume=resume
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode is not None
    stdout, stderr = out.decode(), err.decode()
    return CodexRun(proc.returncode, stdout, stderr, time.monotonic() - start, parse_events(stdout))


def processes_marked(marker: str, exclude: Collection[int] = ()) -> list[psutil.Process]:
    """Live processes whose command line contains ``marker`` or whose env has TASK_ENV=marker."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        if proc.pid in exclude or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if marker in " ".join(proc.info["cmdline"] or ()) or (
                proc.environ().get(TASK_ENV) == marker
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


async def wait_until(
    probe: Callable[[], T], *, within: float, interval: float = 0.02, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


def kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


async def test_shell_turn_emits_full_event_stream(
    codex_bin: str, mock_model: MockModel, codex_home: Path, workdir: Path
) -> None:
    marker = f"codex-tui-marker-{uuid.uuid4().hex}"
    mock_model.script(
        [call_shell(f"echo {marker}"), think("checking the output", say("The marker was echoed."))]
    )

    run = await run_codex(codex_bin, codex_home, workdir, "echo the marker")

    assert run.returncode == 0, run.describe()
    types = [e["type"] for e in run.events]
    assert types[0] == "thread.started", run.describe()
    assert run.events[0]["thread_id"]
    assert types[1] == "turn.started"
    assert types[-1] == "turn.completed"

    started = run.items("item.started", "command_execution")
    completed = run.items("item.completed", "command_execution")
    assert len(started) == 1 and len(completed) == 1, run.describe()
    assert started[0]["status"] == "in_progress"
    assert started[0]["id"] == completed[0]["id"]
    assert marker in completed[0]["command"]
    assert marker in completed[0]["aggregated_output"]
    assert completed[0]["exit_code"] == 0
    assert completed[0]["status"] == "completed"
    assert types.index("item.started") < types.index("item.completed")

    assert [i["text"] for i in run.items("item.completed", "reasoning")] == ["checking the output"]
    assert [i["text"] for i in run.items("item.completed", "agent_message")] == [
        "The marker was echoed."
    ]

    usage = run.of_type("turn.completed")[0]["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0

    # The command's output made it back to the model.
    assert len(mock_model.requests) == 2
    assert any(marker in out for out in mock_model.function_call_outputs())
    assert all(r["stream"] is True for r in mock_model.requests)
    assert {r.path for r in mock_model.all_requests} == {"/v1/responses"}


async def test_http_500_fails_the_turn(
    codex_bin: str, mock_model: MockModel, codex_home: Path, workdir: Path
) -> None:
    mock_model.script([fail_http(500)])

    run = await run_codex(codex_bin, codex_home, workdir, "anything")

    assert run.returncode == 1, run.describe()
    assert run.events[0]["type"] == "thread.started"
    failed = run.of_type("turn.failed")
    assert len(failed) == 1, run.describe()
    assert failed[0]["error"]["message"]
    assert run.events[-1]["type"] == "turn.failed"
    assert not run.of_type("turn.completed")
    assert len(mock_model.requests) == 1  # request_max_retries = 0


async def test_resume_continues_the_script(
    codex_bin: str, mock_model: MockModel, codex_home: Path, workdir: Path
) -> None:
    marker = f"resume-marker-{uuid.uuid4().hex}"
    mock_model.script(
        [say("first answer"), fail_http(500), call_shell(f"echo {marker}"), say("second answer")]
    )

    first = await run_codex(codex_bin, codex_home, workdir, "one")
    assert first.returncode == 0, first.describe()
    thread_id = first.events[0]["thread_id"]

    # A failure step is served exactly once ...
    failed = await run_codex(codex_bin, codex_home, workdir, "two", resume=thread_id)
    assert failed.returncode == 1, failed.describe()
    assert failed.events[0] == {"type": "thread.started", "thread_id": thread_id}
    assert failed.of_type("turn.failed")

    # ... so retrying the follow-up continues with the steps after it.
    second = await run_codex(codex_bin, codex_home, workdir, "two again", resume=thread_id)
    assert second.returncode == 0, second.describe()
    assert second.events[0] == {"type": "thread.started", "thread_id": thread_id}
    (cmd,) = second.items("item.completed", "command_execution")
    assert marker in cmd["aggregated_output"]
    assert [i["text"] for i in second.items("item.completed", "agent_message")] == ["second answer"]
    assert [r.step_index for r in mock_model.all_requests] == [0, 1, 2, 3]


@pytest.mark.parametrize("sandbox", ["danger-full-access", "workspace-write", "read-only"])
async def test_sandbox_modes_run_commands(
    codex_bin: str, mock_model: MockModel, codex_home: Path, workdir: Path, sandbox: str
) -> None:
    marker = f"sandbox-marker-{uuid.uuid4().hex}"
    # Ends with exit code 0 either way: see test_sandbox_denied_command_emits_no_item.
    mock_model.script(
        [call_shell(f"echo {marker}; touch written.txt && echo wrote-ok || echo write-refused")]
    )

    run = await run_codex(codex_bin, codex_home, workdir, "go", sandbox=sandbox)

    assert run.returncode == 0, run.describe()
    commands = run.items("item.completed", "command_execution")
    assert len(commands) == 1, run.describe()
    cmd = commands[0]
    assert marker in cmd["aggregated_output"], run.describe()
    if sandbox == "read-only":
        assert "write-refused" in cmd["aggregated_output"]
        assert "Read-only file system" in cmd["aggregated_output"]
        assert not (workdir / "written.txt").exists()
    else:
        assert "wrote-ok" in cmd["aggregated_output"], run.describe()
        assert (workdir / "written.txt").exists()


async def test_sandbox_denied_command_emits_no_item(
    codex_bin: str, mock_model: MockModel, codex_home: Path, workdir: Path
) -> None:
    """A command that fails on a sandbox denial runs, but codex prints no item for it."""
    mock_model.script([call_shell("touch denied.txt"), say("gave up")])

    run = await run_codex(codex_bin, codex_home, workdir, "go", sandbox="read-only")

    assert run.returncode == 0, run.describe()
    assert not run.items("item.started", "command_execution"), run.describe()
    assert not run.items("item.completed", "command_execution"), run.describe()
    assert [i["text"] for i in run.items("item.completed", "agent_message")] == ["gave up"]
    # The denial still went back to the model.
    (output,) = mock_model.function_call_outputs()
    assert "Read-only file system" in output
    assert "exited with code 1" in output


async def test_codex_env_reaches_commands(
    codex_bin: str, mock_model: MockModel, codex_home: Path, workdir: Path
) -> None:
    task_id = f"task-{uuid.uuid4().hex}"
    mock_model.script([call_shell(f'echo "task=${TASK_ENV}"')])

    run = await run_codex(codex_bin, codex_home, workdir, "go", extra_env={TASK_ENV: task_id})

    assert run.returncode == 0, run.describe()
    (cmd,) = run.items("item.completed", "command_execution")
    assert f"task={task_id}" in cmd["aggregated_output"]


@pytest.mark.parametrize("sandbox", ["danger-full-access", "workspace-write"])
async def test_sigint_stops_codex_and_its_command(
    codex_bin: str, mock_model: MockModel, codex_home: Path, workdir: Path, sandbox: str
) -> None:
    marker = f"codex-tui-sleeper-{uuid.uuid4().hex}"
    # An outer shell and a grandchild `sleep` renamed to the marker; both carry the env marker.
    mock_model.script(
        [
            call_shell(
                f"bash -c 'exec -a {marker} sleep 30' & wait; echo {marker}", yield_time_ms=30000
            )
        ]
    )
    proc = await spawn_codex(
        codex_bin, codex_home, workdir, "sleep", sandbox=sandbox, extra_env={TASK_ENV: marker}
    )
    try:

        def sleeper() -> list[psutil.Process]:
            return [p for p in processes_marked(marker, {proc.pid}) if p.info["name"] == "sleep"]

        await wait_until(sleeper, within=15, what="the scripted sleep command to start")
        command_procs = processes_marked(marker, {proc.pid})
        codex_sid = os.getsid(proc.pid)
        # Commands run in their own session, not codex's.
        sleepers = [p for p in command_procs if p.info["name"] == "sleep"]
        assert all(os.getsid(p.pid) != codex_sid for p in sleepers)

        proc.send_signal(signal.SIGINT)
        # codex exits by itself within about 0.05 s (docs/codex-facts.md); the bound is for a
        # loaded box, and still far short of the command's 30 s sleep.
        out, err = await within(proc.communicate(), 15, "codex to exit after SIGINT")
        assert proc.returncode == 1, "codex ended by its own SIGINT handling, not killed"
        events = parse_events(out.decode())
        types = [e["type"] for e in events]
        assert types[:2] == ["thread.started", "turn.started"]
        assert "turn.failed" not in types and "turn.completed" not in types

        # No process started by the command survives.
        await wait_until(
            lambda: not processes_marked(marker, {proc.pid}),
            within=15,
            what="the command's processes to exit",
        )
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        kill_all(processes_marked(marker, {proc.pid}))
