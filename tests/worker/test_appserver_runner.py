"""AppServerRunner (server_client/worker/appserver_runner.py) driving the real ``codex app-server``
0.169.0 against tests/fakes/mock_model_server.py: streamed deltas, a reply resuming the thread in
a new process, approvals (accept, decline, cancel), steering, interrupt, cancel and stop."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from server_client.models import (
    ApprovalDecision,
    ApprovalKind,
    ApprovalPolicy,
    EventIn,
    EventKind,
    Sandbox,
    TaskStatus,
)
from server_client.worker.appserver_runner import ApprovalAsk, AppServerRunner, AppServerSpec
from server_client.worker.procs import TASK_ENV
from server_client.worker.runner import RunOutcome
from tests.conftest import FAKE_CODEX, wait_until_async
from tests.fakes.codex_home import codex_env
from tests.fakes.mock_model_server import (
    MockModel,
    apply_patch,
    call_shell,
    say,
    say_streamed,
    user_texts,
)

pytestmark = pytest.mark.timeout(90)

#: exec_command's yield time in the model's calls: an approval wait counts against it.
YIELD_MS = 120_000


class Run:
    """One runner with what it emitted and asked."""

    def __init__(self, runner: AppServerRunner, events: list[EventIn], asks: list[ApprovalAsk]):
        self.runner = runner
        self.events = events
        self.asks = asks
        self.task: asyncio.Task[RunOutcome] = asyncio.create_task(runner.run())

    def codex(self) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.kind is EventKind.CODEX]

    def types(self) -> list[str]:
        return [d.get("type", "") for d in self.codex()]

    async def outcome(self, limit_s: float = 60) -> RunOutcome:
        return await asyncio.wait_for(self.task, limit_s)

    async def ask(self, n: int = 1) -> ApprovalAsk:
        await wait_until_async(lambda: len(self.asks) >= n, 30, f"approval #{n}")
        return self.asks[n - 1]

    def completed(self, item_type: str) -> list[dict[str, Any]]:
        return [
            d["item"]
            for d in self.codex()
            if d.get("type") == "item.completed" and d["item"].get("type") == item_type
        ]


@pytest.fixture
def start(codex_bin: str, codex_home: Path, tmp_path: Path) -> Callable[..., Run]:
    workdir = tmp_path / "work"
    workdir.mkdir()

    def start(
        *inputs: str,
        thread_id: str | None = None,
        policy: ApprovalPolicy = ApprovalPolicy.NEVER,
        sandbox: Sandbox = Sandbox.WORKSPACE_WRITE,
        task_id: str | None = None,
    ) -> Run:
        task_id = task_id or uuid.uuid4().hex
        env = codex_env(codex_home, extra={TASK_ENV: task_id})
        spec = AppServerSpec(
            task_id=task_id,
            inputs=list(inputs),
            workdir=str(workdir),
            sandbox=sandbox,
            approval_policy=policy,
            model=None,
            thread_id=thread_id,
            codex_bin=codex_bin,
            env=env,
        )
        events: list[EventIn] = []
        asks: list[ApprovalAsk] = []

        async def on_approval(ask: ApprovalAsk) -> None:
            asks.append(ask)

        runner = AppServerRunner(spec, events.append, on_approval=on_approval, grace_s=1.0)
        return Run(runner, events, asks)

    return start


def workdir_of(run: Run) -> Path:
    return Path(run.runner.spec.workdir)


async def test_deltas_stream_before_the_item_completes_and_the_turn_ends_idle(
    start: Callable[..., Run], mock_model: MockModel
) -> None:
    mock_model.script([say_streamed("Hel", "lo ", "world", pause_s=0.4)])
    run = start("greet me")
    outcome = await run.outcome()
    assert outcome.status is TaskStatus.IDLE and outcome.error is None
    assert outcome.thread_id and run.runner.thread_id == outcome.thread_id
    types = run.types()
    assert types[0] == "thread.started" and types[-1] == "turn.completed"
    deltas = [
        (i, e)
        for i, e in enumerate(run.events)
        if e.kind is EventKind.CODEX
        and e.data.get("type") == "item.delta"
        and e.data["stream"] == "agent_message"
    ]
    assert [e.data["delta"] for _, e in deltas] == ["Hel", "lo ", "world"]
    done = next(
        (i, e)
        for i, e in enumerate(run.events)
        if e.kind is EventKind.CODEX
        and e.data.get("type") == "item.completed"
        and e.data["item"].get("type") == "agentMessage"
    )
    assert deltas[-1][0] < done[0]
    # the first chunk was emitted well before the message completed: it streamed live
    assert (done[1].ts - deltas[0][1].ts).total_seconds() >= 0.6
    assert done[1].data["item"]["text"] == "Hello world"
    assert "usage.updated" in types


async def test_a_reply_resumes_the_thread_in_a_new_app_server(
    start: Callable[..., Run], mock_model: MockModel
) -> None:
    mock_model.script([call_shell("echo first-output", yield_time_ms=YIELD_MS), say("one")])
    first = await start("the first prompt").outcome()
    assert first.status is TaskStatus.IDLE and first.thread_id
    mock_model.script(
        [call_shell("echo first-output", yield_time_ms=YIELD_MS), say("one"), say("two")]
    )
    run = start("the reply", thread_id=first.thread_id)
    second = await run.outcome()
    assert second.status is TaskStatus.IDLE and second.thread_id == first.thread_id
    assert [m["text"] for m in run.completed("agentMessage")] == ["two"]
    # the resume asks for no history (no deprecationNotice) and its bookkeeping stays quiet
    assert not {"deprecationNotice", "thread/goal/cleared"} & set(run.types()), run.types()
    stderr = [e.data["line"] for e in run.events if e.kind is EventKind.STDERR]
    assert not any("\x1b" in line for line in stderr), stderr
    last = mock_model.requests[-1]
    texts = user_texts(last)
    assert any("the first prompt" in t for t in texts) and any("the reply" in t for t in texts)
    assert any("first-output" in out for out in mock_model.function_call_outputs())
    assert "first-output" in str(last["input"])


@pytest.mark.parametrize(
    ("decision", "file_made", "item_status", "turn_end"),
    [
        (ApprovalDecision.ACCEPT, True, "completed", "turn.completed"),
        (ApprovalDecision.DECLINE, False, "declined", "turn.completed"),
        (ApprovalDecision.CANCEL, False, "declined", "turn.interrupted"),
        (ApprovalDecision.ACCEPT_FOR_SESSION, True, "completed", "turn.completed"),
    ],
)
async def test_an_escalated_command_waits_for_the_answer(
    start: Callable[..., Run],
    mock_model: MockModel,
    decision: ApprovalDecision,
    file_made: bool,
    item_status: str,
    turn_end: str,
) -> None:
    mock_model.script(
        [
            call_shell(
                "echo escalated > made.txt",
                yield_time_ms=YIELD_MS,
                sandbox_permissions="require_escalated",
                justification="to write made.txt",
            ),
            say("finished"),
        ]
    )
    run = start("make it", policy=ApprovalPolicy.ON_REQUEST)
    ask = await run.ask()
    assert ask.kind is ApprovalKind.COMMAND and ask.reason == "to write made.txt"
    assert ask.command and "made.txt" in ask.command and ask.cwd == str(workdir_of(run))
    # what codex 0.169.0 offers, plus acceptForSession and decline, which it takes although
    # it does not list them
    assert ask.available_decisions == [
        ApprovalDecision.ACCEPT,
        ApprovalDecision.CANCEL,
        ApprovalDecision.ACCEPT_FOR_SESSION,
        ApprovalDecision.DECLINE,
    ]
    assert run.runner.pending_item_ids == [ask.item_id]
    assert not run.task.done()
    assert await run.runner.answer(ask.item_id, decision)
    assert await run.runner.answer(ask.item_id, decision)  # again: already passed on
    outcome = await run.outcome()
    assert outcome.status is TaskStatus.IDLE
    assert (workdir_of(run) / "made.txt").exists() is file_made
    commands = run.completed("commandExecution")
    assert commands and commands[0]["status"] == item_status
    assert run.types()[-1] == turn_end


async def test_accept_for_session_lets_the_same_command_run_again_unasked(
    start: Callable[..., Run], mock_model: MockModel
) -> None:
    # codex 0.169.0 does not list acceptForSession for commands, yet takes it (like decline)
    mock_model.script(
        [call_shell("ls", yield_time_ms=YIELD_MS), call_shell("ls", yield_time_ms=YIELD_MS)]
        + [say("listed twice")]
    )
    run = start("list twice", policy=ApprovalPolicy.UNTRUSTED)
    ask = await run.ask()
    assert ApprovalDecision.ACCEPT_FOR_SESSION in ask.available_decisions
    assert await run.runner.answer(ask.item_id, ApprovalDecision.ACCEPT_FOR_SESSION)
    assert (await run.outcome()).status is TaskStatus.IDLE
    assert len(run.asks) == 1
    commands = run.completed("commandExecution")
    assert [c["status"] for c in commands] == ["completed", "completed"]


async def test_untrusted_asks_even_for_a_plain_command(
    start: Callable[..., Run], mock_model: MockModel
) -> None:
    mock_model.script([call_shell("ls", yield_time_ms=YIELD_MS), say("listed")])
    run = start("list", policy=ApprovalPolicy.UNTRUSTED)
    ask = await run.ask()
    assert ask.kind is ApprovalKind.COMMAND and ask.command and "ls" in ask.command
    assert await run.runner.answer(ask.item_id, ApprovalDecision.ACCEPT)
    assert (await run.outcome()).status is TaskStatus.IDLE
    assert run.completed("commandExecution")[0]["status"] == "completed"


async def test_apply_patch_under_read_only_asks_with_its_diff(
    start: Callable[..., Run], mock_model: MockModel
) -> None:
    patch = "*** Begin Patch\n*** Add File: patched.txt\n+patched line\n*** End Patch\n"
    mock_model.script([apply_patch(patch), say("patched")])
    run = start("patch it", policy=ApprovalPolicy.ON_REQUEST, sandbox=Sandbox.READ_ONLY)
    ask = await run.ask()
    assert ask.kind is ApprovalKind.FILE_CHANGE
    assert ask.diff and "patched.txt" in ask.diff and "patched line" in ask.diff
    assert await run.runner.answer(ask.item_id, ApprovalDecision.ACCEPT)
    assert (await run.outcome()).status is TaskStatus.IDLE
    assert (workdir_of(run) / "patched.txt").read_text() == "patched line\n"


LONG = "for i in $(seq 1 600); do echo tick $i; sleep 0.1; done"


def live_processes(run: Run) -> list[psutil.Process]:
    """Processes (but app-server) carrying the run's task marker."""
    found = []
    for proc in psutil.process_iter(["pid", "environ"]):
        try:
            env = proc.info["environ"] or {}
        except (psutil.Error, KeyError):
            continue
        if env.get(TASK_ENV) == run.runner.spec.task_id and proc.pid != run.runner.pid:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


async def output_seen(run: Run, text: str) -> None:
    await wait_until_async(
        lambda: any(
            d.get("type") == "item.delta" and text in d.get("delta", "") for d in run.codex()
        ),
        30,
        f"output {text!r}",
    )


async def test_interrupt_kills_the_running_command_and_ends_idle(
    start: Callable[..., Run], mock_model: MockModel
) -> None:
    mock_model.script([call_shell(LONG, yield_time_ms=YIELD_MS), say("never")])
    run = start("loop")
    await output_seen(run, "tick 3")
    assert live_processes(run)
    started = time.monotonic()
    run.runner.interrupt()
    outcome = await run.outcome()
    assert time.monotonic() - started < 10
    assert outcome.status is TaskStatus.IDLE and outcome.thread_id
    assert "turn.interrupted" in run.types()
    assert not live_processes(run)
    # the thread goes on in a new process
    # (the interrupted turn left one model output in the history: the command's call)
    mock_model.script([call_shell(LONG, yield_time_ms=YIELD_MS), say("after")])
    again = start("go on", thread_id=outcome.thread_id)
    assert (await again.outcome()).status is TaskStatus.IDLE
    assert [m["text"] for m in again.completed("agentMessage")] == ["after"]


async def test_interrupt_cancels_a_pending_approval(
    start: Callable[..., Run], mock_model: MockModel
) -> None:
    mock_model.script([call_shell("ls", yield_time_ms=YIELD_MS), say("never")])
    run = start("list", policy=ApprovalPolicy.UNTRUSTED)
    ask = await run.ask()
    run.runner.interrupt()
    outcome = await run.outcome()
    assert outcome.status is TaskStatus.IDLE
    assert run.types()[-1] == "turn.interrupted"
    # the interrupt answered it (cancel): a late answer is not passed on again
    assert ask.item_id not in run.runner.pending_item_ids
    assert await run.runner.answer(ask.item_id, ApprovalDecision.ACCEPT)


async def test_a_reply_during_the_turn_steers_it(
    start: Callable[..., Run], mock_model: MockModel
) -> None:
    mock_model.script([call_shell("sleep 2; echo slept", yield_time_ms=YIELD_MS), say("steered")])
    run = start("sleep a bit")
    await wait_until_async(lambda: run.runner.turn_id is not None, 30, "the turn")
    await wait_until_async(
        lambda: any(
            d.get("type") == "item.started" and d["item"].get("type") == "commandExecution"
            for d in run.codex()
        ),
        30,
        "the command",
    )
    assert await run.runner.steer("also mention bananas", reply_id="r1")
    assert await run.runner.steer("also mention bananas", reply_id="r1")  # delivered once
    assert (await run.outcome()).status is TaskStatus.IDLE
    assert any("also mention bananas" in t for t in user_texts(mock_model.requests[-1]))
    assert sum("bananas" in t for t in user_texts(mock_model.requests[-1])) == 1
    assert not await run.runner.steer("too late")


async def test_cancel_kills_everything_and_ends_canceled(
    start: Callable[..., Run], mock_model: MockModel
) -> None:
    mock_model.script([call_shell(LONG, yield_time_ms=YIELD_MS), say("never")])
    run = start("loop")
    await output_seen(run, "tick 2")
    pid = run.runner.pid
    run.runner.cancel()
    outcome = await run.outcome()
    assert outcome.status is TaskStatus.CANCELED
    assert not live_processes(run)
    assert (
        pid is not None
        and not psutil.pid_exists(pid)
        or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    )


async def test_stop_with_a_thread_ends_idle_with_an_explanation(
    start: Callable[..., Run], mock_model: MockModel
) -> None:
    mock_model.script([call_shell("ls", yield_time_ms=YIELD_MS), say("never")])
    run = start("list", policy=ApprovalPolicy.UNTRUSTED)
    await run.ask()
    run.runner.stop()
    outcome = await run.outcome()
    assert outcome.status is TaskStatus.IDLE and outcome.thread_id
    assert outcome.error and "reply to continue" in outcome.error


# ---- edge cases, with the fake app-server (tests/fakes/fake_codex.py) -----------------------


def fake_run(tmp_path: Path, mode: str, thread_id: str | None = None) -> Run:
    task_id = uuid.uuid4().hex
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "FAKE_CODEX_MODE": mode,
        TASK_ENV: task_id,
    }
    spec = AppServerSpec(
        task_id=task_id,
        inputs=["hello"],
        workdir=str(tmp_path),
        sandbox=Sandbox.WORKSPACE_WRITE,
        approval_policy=ApprovalPolicy.NEVER,
        model=None,
        thread_id=thread_id,
        codex_bin=str(FAKE_CODEX),
        env=env,
    )
    events: list[EventIn] = []
    asks: list[ApprovalAsk] = []

    async def on_approval(ask: ApprovalAsk) -> None:
        asks.append(ask)

    runner = AppServerRunner(spec, events.append, on_approval=on_approval, grace_s=0.5)
    return Run(runner, events, asks)


async def test_malformed_lines_are_kept_and_the_turn_goes_on(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "as-ok")
    outcome = await run.outcome()
    assert outcome.status is TaskStatus.IDLE and outcome.error is None
    lines = [e.data["line"] for e in run.events if e.kind is EventKind.STDOUT]
    assert lines == ["this is not JSON {", "[1, 2]"]
    assert run.types() == [
        "thread.started",
        "turn.started",
        "item.delta",
        "item.delta",
        "item.completed",
        "turn.completed",
    ]


async def test_a_crash_mid_turn_ends_idle_with_the_reason(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "as-crash")
    outcome = await run.outcome()
    assert outcome.status is TaskStatus.IDLE and outcome.thread_id
    assert outcome.exit_code == 3
    assert outcome.error and "exited with code 3 during the turn" in outcome.error
    assert "crashing mid-turn" in outcome.error and "reply to continue" in outcome.error
    assert run.types()[-1] == "item.delta"


async def test_a_crash_before_the_thread_fails(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "as-crash-early")
    outcome = await run.outcome()
    assert outcome.status is TaskStatus.FAILED and outcome.thread_id is None
    assert outcome.error and "exited with code 4 while starting" in outcome.error


async def test_a_crash_while_resuming_keeps_the_thread(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "as-crash-early", thread_id="thread-9")
    outcome = await run.outcome()
    assert outcome.status is TaskStatus.IDLE and outcome.thread_id == "thread-9"
    assert outcome.error and "exited with code 4" in outcome.error


async def test_codex_questions_are_asked_and_answered(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "as-ask")
    ask = await run.ask()
    assert ask.kind is ApprovalKind.USER_INPUT and ask.item_id == "ui_1"
    assert ask.questions == [
        {
            "id": "color",
            "header": "Color",
            "question": "Which color?",
            "options": [{"label": "Red", "description": "warm"}],
            "is_other": True,
            "is_secret": False,
        }
    ]
    assert await run.runner.answer("ui_1", ApprovalDecision.ACCEPT, {"color": ["Blue"]})
    assert (await run.outcome()).status is TaskStatus.IDLE
    texts = [m["text"] for m in run.completed("agentMessage")]
    assert texts == ['{"answers": {"color": {"answers": ["Blue"]}}}']
