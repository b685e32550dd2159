"""Conversations end to end with the real codex 0.169.0 (``codex app-server``, the worker's default
runtime) against tests/fakes/mock_model_server.py: `codex-tui server` on loopback → a real worker
→ SSE → the SDK. Deltas stream live, replies continue the thread, approvals are answered by the
owner, interrupts leave nothing running, and a turn survives a worker restart (idle thread) or
a server kill -9 (pending approval)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server_client.client import CodexTuiClient
from server_client.models import (
    Approval,
    ApprovalDecision,
    ApprovalState,
    Event,
    EventKind,
    TaskStatus,
)
from tests.conftest import LiveServer, ServerFactory, wait_until
from tests.fakes.mock_model_server import (
    MockModel,
    call_shell,
    say,
    say_streamed,
    user_texts,
)
from tests.support.worker_procs import WorkerPool, task_processes

pytestmark = pytest.mark.timeout(180)

#: exec_command's yield time in the model's calls: an approval wait counts against it.
YIELD_MS = 300_000
LONG = "for i in $(seq 1 900); do echo tick $i; sleep 0.1; done"


def conversation_env(codex_home: Path, tmp_path: Path) -> dict[str, str]:
    """A worker environment: the app-server runtime, the mock model's CODEX_HOME and a HOME
    of its own (codex runs commands in a login shell that reads the profile there)."""
    home = tmp_path / "user-home"
    home.mkdir(exist_ok=True)
    return {
        "CODEX_HOME": str(codex_home),
        "HOME": str(home),
        "CODEX_TUI_WORKER_RUNTIME": "app-server",
    }


@pytest.fixture
def conv_server(
    server_factory: ServerFactory, codex_bin: str, codex_home: Path, tmp_path: Path
) -> LiveServer:
    """A server whose local worker runs conversations on the real codex."""
    return server_factory(
        codex_bin=codex_bin, fake_mode=None, extra_env=conversation_env(codex_home, tmp_path)
    )


#: How long a test waits for a turn to end (seconds): well under the 180 s limit, so a hang
#: fails here with what the stream delivered rather than at pytest-timeout's limit.
TURN_TIMEOUT_S = 75.0


def _brief(event: Event) -> str:
    """One line for an event in a failure message: its seq, kind and a cut of its data."""
    text = str(event.data)
    return f"  #{event.seq} {event.kind.value}: {text[:160]}{'…' if len(text) > 160 else ''}"


async def until_turn_ends(
    client: CodexTuiClient,
    task_id: str,
    after: int = 0,
    *,
    timeout_s: float = TURN_TIMEOUT_S,
    server_log: Callable[[], str] | None = None,
) -> list[tuple[float, Event]]:
    """The task's events after seq ``after`` with the time each arrived here, up to the
    status event that ends the turn (idle or terminal).

    Raises:
        AssertionError: no turn end arrived within ``timeout_s`` seconds; the message holds
            the task as the server has it, the last events the stream delivered and (given
            ``server_log``) the server's log.
    """
    seen: list[tuple[float, Event]] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for event in client.stream_events(task_id, after=after):
                seen.append((time.monotonic(), event))
                if event.status is TaskStatus.IDLE or event.is_terminal:
                    break
    except TimeoutError:
        try:
            async with asyncio.timeout(10):
                task: object = await client.get_task(task_id)
        except Exception as error:  # the report must not hide the hang behind another error
            task = f"(could not read the task: {error!r})"
        last = "\n".join(_brief(e) for _, e in seen[-15:]) or "  (none)"
        log = server_log() if server_log is not None else "(no server log given)"
        raise AssertionError(
            f"no turn end (idle or terminal status event) of task {task_id} after seq {after}"
            f" within {timeout_s} s; the server has it as {task!r}\n"
            f"the stream delivered {len(seen)} events, the last:\n{last}\n"
            f"server log:\n{log}"
        ) from None
    return seen


def codex_of(seen: list[tuple[float, Event]]) -> list[dict[str, Any]]:
    return [e.data for _, e in seen if e.kind is EventKind.CODEX]


def completed(seen: list[tuple[float, Event]], item_type: str) -> list[dict[str, Any]]:
    return [
        d["item"]
        for d in codex_of(seen)
        if d.get("type") == "item.completed" and d["item"].get("type") == item_type
    ]


async def pending_approval(client: CodexTuiClient, task_id: str) -> Approval:
    found: list[Approval] = []

    async def asked() -> bool:
        found[:] = await client.list_approvals(state="pending", task_id=task_id)
        return bool(found)

    deadline = time.monotonic() + 60
    while not await asked():
        assert time.monotonic() < deadline, "no approval was asked within 60 s"
        await asyncio.sleep(0.1)
    return found[0]


async def test_deltas_arrive_before_the_item_completes(
    conv_server: LiveServer, mock_model: MockModel
) -> None:
    mock_model.script([say_streamed("The ", "answer ", "is ", "42.", pause_s=0.5)])
    async with conv_server.client() as client:
        task = await client.create_task("stream it", workdir=str(conv_server.workdir))
        seen = await until_turn_ends(client, task.id, server_log=conv_server.log)
        final = await client.get_task(task.id)
    assert seen[-1][1].status is TaskStatus.IDLE, conv_server.log()
    assert final.status is TaskStatus.IDLE and final.runtime == "app-server"
    deltas = [
        (t, e.data["delta"])
        for t, e in seen
        if e.kind is EventKind.CODEX
        and e.data.get("type") == "item.delta"
        and e.data["stream"] == "agent_message"
    ]
    done_at = next(
        t
        for t, e in seen
        if e.kind is EventKind.CODEX
        and e.data.get("type") == "item.completed"
        and e.data["item"].get("type") == "agentMessage"
    )
    assert "".join(d for _, d in deltas) == "The answer is 42."
    # the first words reached the client while the model was still writing (1.5 s of pauses)
    assert done_at - deltas[0][0] >= 1.0
    assert completed(seen, "agentMessage")[0]["text"] == "The answer is 42."


async def test_a_reply_continues_the_thread_with_its_history(
    conv_server: LiveServer, mock_model: MockModel
) -> None:
    mock_model.script(
        [call_shell("echo first-turn-output", yield_time_ms=YIELD_MS), say("one"), say("two")]
    )
    async with conv_server.client() as client:
        task = await client.create_task("the first prompt", workdir=str(conv_server.workdir))
        first = await until_turn_ends(client, task.id, server_log=conv_server.log)
        assert first[-1][1].status is TaskStatus.IDLE, conv_server.log()
        thread_id = (await client.get_task(task.id)).thread_id
        await client.reply(task.id, "the second prompt")
        second = await until_turn_ends(
            client, task.id, after=first[-1][1].seq, server_log=conv_server.log
        )
        final = await client.get_task(task.id)
    assert second[-1][1].status is TaskStatus.IDLE, conv_server.log()
    assert [m["text"] for m in completed(second, "agentMessage")] == ["two"]
    assert final.thread_id == thread_id and final.turns == 2
    last = mock_model.requests[-1]
    texts = user_texts(last)
    assert any("the first prompt" in t for t in texts)
    assert any("the second prompt" in t for t in texts)
    assert "first-turn-output" in str(last["input"])


@pytest.mark.parametrize(
    ("decision", "file_made", "item_status", "turn_end"),
    [
        (ApprovalDecision.ACCEPT, True, "completed", "turn.completed"),
        (ApprovalDecision.DECLINE, False, "declined", "turn.completed"),
        (ApprovalDecision.CANCEL, False, "declined", "turn.interrupted"),
    ],
)
async def test_an_approval_is_answered_by_the_owner(
    conv_server: LiveServer,
    mock_model: MockModel,
    decision: ApprovalDecision,
    file_made: bool,
    item_status: str,
    turn_end: str,
) -> None:
    mock_model.script(
        [
            call_shell(
                "echo approved > approved.txt",
                yield_time_ms=YIELD_MS,
                sandbox_permissions="require_escalated",
                justification="to write approved.txt",
            ),
            say("finished"),
        ]
    )
    async with conv_server.client() as client:
        task = await client.create_task(
            "write it", workdir=str(conv_server.workdir), approval_policy="on-request"
        )
        approval = await pending_approval(client, task.id)
        assert approval.reason == "to write approved.txt"
        assert approval.command and "approved.txt" in approval.command
        assert (await client.get_task(task.id)).status is TaskStatus.WAITING
        answered = await client.answer_approval(approval.id, decision)
        assert answered.state is ApprovalState.ANSWERED
        seen = await until_turn_ends(client, task.id, server_log=conv_server.log)
    assert seen[-1][1].status is TaskStatus.IDLE, conv_server.log()
    assert (conv_server.workdir / "approved.txt").exists() is file_made
    commands = completed(seen, "commandExecution")
    assert commands and commands[0]["status"] == item_status
    ends = [d["type"] for d in codex_of(seen) if d["type"].startswith("turn.")]
    assert ends[-1] == turn_end


async def test_an_interrupt_leaves_no_process_and_the_next_reply_works(
    conv_server: LiveServer, mock_model: MockModel
) -> None:
    mock_model.script([call_shell(LONG, yield_time_ms=YIELD_MS), say("after the interrupt")])
    async with conv_server.client() as client:
        task = await client.create_task("loop", workdir=str(conv_server.workdir))

        async def ticking() -> bool:
            events = []
            async for event in client.stream_events(task.id):
                events.append(event)
                if any(
                    e.kind is EventKind.CODEX and "tick 3" in str(e.data.get("delta", ""))
                    for e in events[-1:]
                ):
                    return True
            return False

        assert await asyncio.wait_for(ticking(), 60)
        commands = [p for p in task_processes(task.id) if "tick" in " ".join(p.cmdline())]
        assert commands, "the long command runs"
        await client.interrupt(task.id)
        seen = await until_turn_ends(client, task.id, server_log=conv_server.log)
        assert seen[-1][1].status is TaskStatus.IDLE, conv_server.log()
        assert "turn.interrupted" in [d["type"] for d in codex_of(seen)]
        wait_until(lambda: not task_processes(task.id), 10, "no process of the task")
        await client.reply(task.id, "go on")
        after = await until_turn_ends(
            client, task.id, after=seen[-1][1].seq, server_log=conv_server.log
        )
    assert after[-1][1].status is TaskStatus.IDLE, conv_server.log()
    assert [m["text"] for m in completed(after, "agentMessage")] == ["after the interrupt"]


async def test_a_restarted_worker_resumes_an_idle_thread(
    server_factory: ServerFactory,
    codex_bin: str,
    codex_home: Path,
    tmp_path: Path,
    mock_model: MockModel,
) -> None:
    env = conversation_env(codex_home, tmp_path)
    server = server_factory(codex_bin=codex_bin, fake_mode=None, extra_env=env)
    mock_model.script([say("first answer"), say("second answer")])
    async with server.client() as client:
        task = await client.create_task("remember this", workdir=str(server.workdir))
        first = await until_turn_ends(client, task.id, server_log=server.log)
        assert first[-1][1].status is TaskStatus.IDLE, server.log()
    server.stop()  # the server and its local worker (and codex) stop
    server = server_factory(codex_bin=codex_bin, fake_mode=None, extra_env=env, reuse=server)
    async with server.client() as client:
        await client.reply(task.id, "and now?")
        second = await until_turn_ends(
            client, task.id, after=first[-1][1].seq, server_log=server.log
        )
    assert second[-1][1].status is TaskStatus.IDLE, server.log()
    assert [m["text"] for m in completed(second, "agentMessage")] == ["second answer"]
    assert any("remember this" in t for t in user_texts(mock_model.requests[-1]))


async def test_a_pending_approval_survives_a_server_kill(
    server_factory: ServerFactory,
    codex_bin: str,
    codex_home: Path,
    tmp_path: Path,
    mock_model: MockModel,
) -> None:
    server = server_factory(local_worker=False)
    mock_model.script(
        [call_shell("echo survived > survived.txt", yield_time_ms=YIELD_MS), say("ok")]
    )
    with WorkerPool(tmp_path) as pool:
        worker = pool.start(
            server,
            "remote",
            codex_bin=codex_bin,
            fake_mode=None,
            extra_env=conversation_env(codex_home, tmp_path),
        )
        async with server.client() as client:
            task = await client.create_task(
                "write it", workdir=str(worker.workroot), approval_policy="untrusted"
            )
            approval = await pending_approval(client, task.id)
        server.proc.kill()  # kill -9: no goodbye to the worker
        server.proc.wait()
        server = server_factory(local_worker=False, reuse=server)
        async with server.client() as client:
            await client.answer_approval(approval.id, ApprovalDecision.ACCEPT)
            seen = await until_turn_ends(client, task.id, server_log=server.log)
        assert seen[-1][1].status is TaskStatus.IDLE, server.log() + pool.describe()
        assert (worker.workroot / "survived.txt").read_text() == "survived\n"
        assert worker.alive()


async def test_a_reply_during_the_turn_steers_it(
    conv_server: LiveServer, mock_model: MockModel
) -> None:
    mock_model.script(
        [call_shell("sleep 3; echo slept", yield_time_ms=YIELD_MS), say("steered answer")]
    )
    async with conv_server.client() as client:
        task = await client.create_task("sleep a bit", workdir=str(conv_server.workdir))

        async def command_started() -> None:
            async for event in client.stream_events(task.id):
                data = event.data if event.kind is EventKind.CODEX else {}
                item = data.get("item") or {}
                if data.get("type") == "item.started" and item.get("type") == "commandExecution":
                    return

        await asyncio.wait_for(command_started(), 60)
        await client.reply(task.id, "also mention bananas")
        seen = await until_turn_ends(client, task.id, server_log=conv_server.log)
        final = await client.get_task(task.id)
    assert seen[-1][1].status is TaskStatus.IDLE, conv_server.log()
    assert [m["text"] for m in completed(seen, "agentMessage")] == ["steered answer"]
    # codex took the reply into the running turn: the model saw it, once, in that turn
    texts = user_texts(mock_model.requests[-1])
    assert sum("also mention bananas" in t for t in texts) == 1
    assert final.pending_replies == 0 and final.status is TaskStatus.IDLE
    assert len(mock_model.requests) == 2, "no second turn was started for the reply"


async def test_a_stopped_worker_ends_the_turn_idle_and_a_reply_continues(
    server_factory: ServerFactory,
    codex_bin: str,
    codex_home: Path,
    tmp_path: Path,
    mock_model: MockModel,
) -> None:
    server = server_factory(local_worker=False)
    mock_model.script([call_shell("echo never > never.txt", yield_time_ms=YIELD_MS), say("ok")])
    with WorkerPool(tmp_path) as pool:
        env = conversation_env(codex_home, tmp_path)
        worker = pool.start(server, "stopped", codex_bin=codex_bin, fake_mode=None, extra_env=env)
        async with server.client() as client:
            task = await client.create_task(
                "write it", workdir=str(worker.workroot), approval_policy="untrusted"
            )
            approval = await pending_approval(client, task.id)
            assert worker.terminate() == 0  # SIGTERM: the worker stops, the turn ends
            seen = await until_turn_ends(client, task.id, server_log=server.log)
            stopped = await client.get_task(task.id)
            assert seen[-1][1].status is TaskStatus.IDLE, server.log() + pool.describe()
            assert stopped.error and "reply to continue" in stopped.error
            assert (await client.get_approval(approval.id)).state is ApprovalState.WITHDRAWN
            assert not task_processes(task.id)
            assert not (worker.workroot / "never.txt").exists()
            worker.restart_plain()
            # (the stopped turn left the command's call in the history: the next step is "ok")
            await client.reply(task.id, "go on")
            after = await until_turn_ends(
                client, task.id, after=seen[-1][1].seq, server_log=server.log
            )
        assert after[-1][1].status is TaskStatus.IDLE, server.log() + pool.describe()
        assert [m["text"] for m in completed(after, "agentMessage")] == ["ok"]
