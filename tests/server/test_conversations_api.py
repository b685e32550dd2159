"""Conversations over HTTP (issue 13) on a real server process (uvicorn on loopback, a SQLite
file): the test plays the worker through the worker protocol and the owner through the SDK.
Approvals go round (asked, listed, answered once, delivered in the signals until acknowledged,
audited, hidden from another owner) and survive a server restart; replies steer a running
turn, queue an idle one for its worker only, and are refused for exec tasks; interrupts; a
silent worker leaves a started conversation idle and explained; the admission rules."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from server_client.client import ApiError, CodexTuiClient, NotFoundError
from server_client.models import (
    Acks,
    Approval,
    ApprovalKind,
    ApprovalRequest,
    ApprovalState,
    Claim,
    EventBatch,
    FinishRequest,
    Runtime,
    Task,
    TaskStatus,
    Worker,
    WorkerHello,
)
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory
from tests.server.test_audit import audit_rows
from tests.support.waits import bounded
from tests.support.worker_procs import add_user

#: A long poll the answer must cut short (s).
LONG_POLL_S = 20.0


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server without a local worker (the test is the worker)."""
    return server_factory(local_worker=False)


class Owner:
    """The owner's SDK client and the test's worker (its protocol calls) on one server."""

    def __init__(self, server: LiveServer, token: str) -> None:
        self.client = CodexTuiClient(server.url, token)
        self.api = WorkerApi(server.url, token)
        self.http = httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=30,
        )

    async def worker(
        self, name: str = "w1", runtime: Runtime | None = Runtime.APP_SERVER
    ) -> Worker:
        return await self.api.connect(WorkerHello(name=name, workdir_roots=["/"], runtime=runtime))

    async def claim(self, worker: Worker, wait_s: float = 5.0) -> Claim:
        claim = await self.api.claim(worker.id, wait_s)
        assert claim is not None, f"{worker.name} claimed nothing"
        return claim

    async def ask(self, worker: Worker, claim: Claim, item: str = "item-1") -> httpx.Response:
        body = ApprovalRequest(
            lease_id=claim.lease_id,
            item_id=item,
            kind=ApprovalKind.COMMAND,
            command="make deploy",
            cwd="/srv",
        )
        return await self.http.post(
            f"/api/workers/{worker.id}/tasks/{claim.task.id}/approvals",
            content=body.model_dump_json(),
        )

    async def ack(self, worker: Worker, acks: Acks) -> None:
        response = await self.http.post(
            f"/api/workers/{worker.id}/acks", content=acks.model_dump_json()
        )
        assert response.status_code == 204, response.text

    async def idle(self, worker: Worker, claim: Claim, **extra: Any) -> Task:
        body = FinishRequest(
            lease_id=claim.lease_id, status=TaskStatus.IDLE, event_count=0, **extra
        )
        return await self.api.finish(worker.id, claim.task.id, body)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.api.aclose()
        await self.http.aclose()


@asynccontextmanager
async def owner(server: LiveServer, token: str | None = None) -> AsyncIterator[Owner]:
    me = Owner(server, token or server.token)
    try:
        yield me
    finally:
        await me.aclose()


async def _statuses_until_idle(client: CodexTuiClient, task_id: str) -> list[dict[str, Any]]:
    """The task's status events up to its first idle one (the stream stays open past it)."""
    seen: list[dict[str, Any]] = []
    async with bounded(60, f"task {task_id}'s first idle status"):
        async for event in client.stream_events(task_id):
            if event.status is not None:
                seen.append(event.data)
                if event.status is TaskStatus.IDLE:
                    return seen
    raise AssertionError(f"the stream ended without idle: {seen}")


async def test_an_approval_goes_round_once_and_wakes_the_workers_signals(
    server: LiveServer,
) -> None:
    bob_token = await add_user(server, "bob")
    async with owner(server) as alice, owner(server, bob_token) as bob:
        name = (await alice.client.me()).name  # the server's local user
        task = await alice.client.create_task("deploy", approval_policy="untrusted")
        assert (task.approval_policy.value, task.requested_runtime) == ("untrusted", None)
        worker = await alice.worker()
        claim = await alice.claim(worker)
        asked = await alice.ask(worker, claim)
        assert asked.status_code == 200, asked.text
        approval = Approval.model_validate_json(asked.content)
        again = await alice.ask(worker, claim)
        assert Approval.model_validate_json(again.content).id == approval.id
        metrics = (await alice.http.get("/metrics")).text
        assert "codex_tui_pending_approvals 1.0" in metrics.splitlines()
        assert (await alice.client.get_task(task.id)).status is TaskStatus.WAITING

        pending = await alice.client.list_approvals(state="pending")
        assert [a.id for a in pending] == [approval.id] and pending[0].command == "make deploy"
        assert await bob.client.list_approvals() == []
        with pytest.raises(NotFoundError):
            await bob.client.get_approval(approval.id)
        with pytest.raises(NotFoundError):
            await bob.client.answer_approval(approval.id, "accept")

        poll = asyncio.create_task(alice.api.signals(worker.id, [task.id], LONG_POLL_S))
        started = time.monotonic()
        answered = await alice.client.answer_approval(approval.id, "accept")
        assert answered.state is ApprovalState.ANSWERED and answered.answered_by == name
        signals = await asyncio.wait_for(poll, LONG_POLL_S)
        assert time.monotonic() - started < LONG_POLL_S / 2, "the answer woke the long poll"
        assert [a.id for a in signals.answers] == [approval.id]
        assert signals.answers[0].decision and signals.answers[0].decision.value == "accept"
        with pytest.raises(ApiError) as second:
            await alice.client.answer_approval(approval.id, "decline")
        assert second.value.status == 409
        assert f"already answered: accept by {name}" in (second.value.problem.detail or "")
        # Repeated until acknowledged.
        assert (await alice.api.signals(worker.id, [task.id], 0)).answers
        await alice.ack(worker, Acks(approvals=[approval.id]))
        assert (await alice.api.signals(worker.id, [task.id], 0)).answers == []

        # A second approval, left pending, is withdrawn when the turn ends.
        other = Approval.model_validate_json((await alice.ask(worker, claim, "item-2")).content)
        done = await alice.idle(worker, claim, thread_id="thread-1")
        assert done.status is TaskStatus.IDLE and done.worker_name == "w1"
        withdrawn = await alice.client.get_approval(other.id)
        assert withdrawn.state is ApprovalState.WITHDRAWN
        statuses = await _statuses_until_idle(alice.client, task.id)
        assert [s["status"] for s in statuses] == [
            "queued",
            "running",
            "waiting",
            "running",
            "waiting",
            "running",
            "idle",
        ]
        assert statuses[3]["approval"] == {
            "id": approval.id,
            "decision": "accept",
            "answered_by": name,
        }
    rows = audit_rows(server, "--action", "approval.answer")
    assert [(r["target"], r["detail"]["decision"]) for r in rows] == [
        (f"approval:{approval.id}", "accept")
    ]


async def test_a_pending_approval_survives_a_server_restart(
    server: LiveServer, server_factory: ServerFactory
) -> None:
    async with owner(server) as alice:
        task = await alice.client.create_task("deploy", approval_policy="on-request")
        worker = await alice.worker()
        claim = await alice.claim(worker)
        approval = Approval.model_validate_json((await alice.ask(worker, claim)).content)
    server.stop()
    restarted = server_factory(reuse=server, local_worker=False)
    async with owner(restarted) as alice:
        [pending] = await alice.client.list_approvals(state="pending", task_id=task.id)
        assert pending.id == approval.id
        await alice.client.answer_approval(approval.id, "decline")
        signals = await alice.api.signals(worker.id, [task.id], 0)
        assert [(a.id, a.decision and a.decision.value) for a in signals.answers] == [
            (approval.id, "decline")
        ]
        assert (await alice.client.get_task(task.id)).status is TaskStatus.RUNNING


async def test_replies_steer_a_running_turn_and_queue_an_idle_one_for_its_worker(
    server: LiveServer,
) -> None:
    async with owner(server) as alice:
        task = await alice.client.create_task("talk", runtime="app-server")
        holder = await alice.worker("holder")
        other = await alice.worker("other")
        claim = await alice.claim(holder)
        poll = asyncio.create_task(alice.api.signals(holder.id, [task.id], LONG_POLL_S))
        steer = await alice.client.reply(task.id, "also update the docs")
        signals = await asyncio.wait_for(poll, LONG_POLL_S)
        assert [r.id for r in signals.replies] == [steer.id]
        await alice.ack(holder, Acks(replies=[steer.id]))
        assert (await alice.client.get_task(task.id)).pending_replies == 0
        await alice.idle(holder, claim)

        nxt = await alice.client.reply(task.id, "now the changelog")
        queued = await alice.client.get_task(task.id)
        assert queued.status is TaskStatus.QUEUED and queued.pending_replies == 1
        assert await alice.api.claim(other.id, 0.5) is None, "only the thread's worker takes it"
        again = await alice.claim(holder)
        assert again.task.id == task.id and [r.id for r in again.replies] == [nxt.id]
        assert again.task.turns == 2

        exec_task = await alice.client.create_task("once", runtime="exec")
        with pytest.raises(ApiError) as refused:
            await alice.client.reply(exec_task.id, "more")
        assert refused.value.status == 409
        assert "--runtime app-server" in (refused.value.problem.detail or "")


async def test_interrupt_is_refused_unless_a_turn_runs_and_reaches_the_worker(
    server: LiveServer,
) -> None:
    async with owner(server) as alice:
        task = await alice.client.create_task("talk", runtime="app-server")
        with pytest.raises(ApiError) as refused:
            await alice.client.interrupt(task.id)
        assert refused.value.status == 409
        worker = await alice.worker()
        claim = await alice.claim(worker)
        poll = asyncio.create_task(alice.api.signals(worker.id, [task.id], LONG_POLL_S))
        flagged = await alice.client.interrupt(task.id)
        assert flagged.interrupt_requested
        assert (await asyncio.wait_for(poll, LONG_POLL_S)).interrupt == [task.id]
        idle = await alice.idle(worker, claim)
        assert idle.status is TaskStatus.IDLE and not idle.interrupt_requested
        canceled = await alice.client.cancel_task(task.id)
        assert canceled.status is TaskStatus.CANCELED, "an idle task cancels at once"


async def test_a_silent_worker_leaves_a_started_conversation_idle_and_explained(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        local_worker=False, server_args=("--lease-ttl", "2", "--sweep-interval", "0.2")
    )
    async with owner(server) as alice:
        task = await alice.client.create_task("talk", approval_policy="untrusted")
        worker = await alice.worker()
        claim = await alice.claim(worker)
        batch = EventBatch(lease_id=claim.lease_id, first_index=0, events=[], thread_id="th-1")
        await alice.api.upload(worker.id, task.id, batch.model_dump_json().encode())
        approval = Approval.model_validate_json((await alice.ask(worker, claim)).content)

        async def idle() -> Task | None:
            got = await alice.client.get_task(task.id)
            return got if got.status is TaskStatus.IDLE else None

        # The worker goes silent: no signals poll.
        deadline = time.monotonic() + 30
        found = None
        while found is None and time.monotonic() < deadline:
            found = await idle()
            if found is None:
                await asyncio.sleep(0.2)
        assert found is not None, "the sweep never ended the turn"
        assert found.error and "w1 stopped responding" in found.error
        assert "reply to continue" in found.error and found.worker_id == worker.id
        assert (await alice.client.get_approval(approval.id)).state is ApprovalState.WITHDRAWN


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"approval_policy": "untrusted", "runtime": "exec"}, 400, "needs the app-server"),
        ({"approval_policy": "on-request"}, 403, "CODEX_TUI_SERVER_ALLOWED_APPROVAL_POLICIES"),
    ],
)
async def test_admission_of_approval_policies(
    server_factory: ServerFactory, body: dict[str, str], status: int, words: str
) -> None:
    server = server_factory(
        local_worker=False,
        extra_env={
            "CODEX_TUI_SERVER_ALLOWED_APPROVAL_POLICIES": json.dumps(["never", "untrusted"])
        },
    )
    async with owner(server) as alice:
        response = await alice.http.post("/api/tasks", json={"prompt": "x", **body})
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]
        ok = await alice.http.post(
            "/api/tasks", json={"prompt": "x", "approval_policy": "untrusted"}
        )
        assert ok.status_code == 201, ok.text
