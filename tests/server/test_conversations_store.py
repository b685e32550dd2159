"""The store's conversation contract (issue 13), the same on SQLite and on PostgreSQL: a turn
ends idle and keeps its worker, a reply queues it again pinned to that worker (no other
worker of the owner takes it, an exec-only worker never does), replies steer a running turn
through the signals until acknowledged, approvals are asked under the lease, answered once
(a second answer names the first), scoped by owner, audited, and withdrawn when the turn
ends; a lost lease leaves a started conversation idle with an explanation; interrupts and
cancels in every state."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from server_client.models import (
    Acks,
    ApprovalAnswer,
    ApprovalDecision,
    ApprovalKind,
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalState,
    Claim,
    EventBatch,
    EventIn,
    EventKind,
    FinishRequest,
    Runtime,
    TaskCreate,
    TaskStatus,
    UserInputQuestion,
    Worker,
    WorkerHello,
    utcnow,
)
from server_client.server.db import workers
from server_client.server.store import Conflict, Invalid, LeaseLost, NotFound, Store, User
from tests.server import test_store_contract as contract
from tests.server.test_store_contract import _events, _statuses

#: The contract's fixtures: a migrated store on SQLite and on PostgreSQL.
db_url = contract.db_url
store = contract.store

APP = Runtime.APP_SERVER


async def _worker(store: Store, owner: User, name: str, runtime: Runtime | None = APP) -> Worker:
    return await store.connect_worker(owner, WorkerHello(name=name, runtime=runtime))


async def _conversation(store: Store, owner: User, **body: Any) -> str:
    body.setdefault("runtime", APP)
    return (await store.create_task(owner, TaskCreate(prompt="talk", **body), None)).id


async def _claim(store: Store, owner: User, worker: Worker) -> Claim:
    claim = await store.claim(owner, worker)
    assert claim is not None
    return claim


def _ask(claim: Claim, item: str = "item-1", **fields: Any) -> ApprovalRequest:
    fields.setdefault("kind", ApprovalKind.COMMAND)
    fields.setdefault("command", "rm -rf build")
    return ApprovalRequest(lease_id=claim.lease_id, item_id=item, **fields)


async def _idle(store: Store, owner: User, worker: Worker, claim: Claim, **extra: Any) -> None:
    extra.setdefault("event_count", 0)
    body = FinishRequest(lease_id=claim.lease_id, status=TaskStatus.IDLE, **extra)
    await store.finish(owner, worker.id, claim.task.id, body)


async def _status_data(store: Store, owner: User, task_id: str) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in await _events(store, owner, task_id) if e.kind == "status"]


async def test_a_turn_ends_idle_and_a_reply_queues_it_again_for_its_worker_only(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    holder = await _worker(store, alice, "holder")
    other = await _worker(store, alice, "other")
    task_id = await _conversation(store, alice)
    claim = await _claim(store, alice, holder)
    assert claim.task.turns == 1 and claim.task.runtime is APP and claim.replies == []
    await _idle(store, alice, holder, claim, thread_id="thread-1")
    task = await store.get_task(alice, task_id)
    assert task.status is TaskStatus.IDLE
    assert (task.worker_id, task.worker_name, task.thread_id) == (holder.id, "holder", "thread-1")
    assert task.finished_at is None
    # Retried idle finish: idempotent.
    await _idle(store, alice, holder, claim)

    reply, task = await store.add_reply(alice, task_id, "and now the tests")
    assert task.status is TaskStatus.QUEUED and task.pending_replies == 1
    assert await store.claim(alice, other) is None, "pinned to the worker holding the thread"
    again = await _claim(store, alice, holder)
    assert again.task.id == task_id and again.task.turns == 2
    assert [r.id for r in again.replies] == [reply.id]
    assert again.replies[0].prompt == "and now the tests"
    await store.ack(alice, holder.id, Acks(replies=[reply.id]))
    assert (await store.get_task(alice, task_id)).pending_replies == 0
    # Event indexes start again at 0 under the new lease.
    event = EventIn(ts=utcnow(), kind=EventKind.CODEX, data={"type": "turn.started"})
    batch = EventBatch(lease_id=again.lease_id, first_index=0, events=[event])
    appended = await store.append_events(alice, holder.id, task_id, batch)
    assert appended.fresh == 1 and appended.result.next_index == 1
    await _idle(store, alice, holder, again, event_count=1)
    data = await _status_data(store, alice, task_id)
    assert [d["status"] for d in data] == ["queued", "running", "idle", "queued", "running", "idle"]
    assert data[2] == {"status": "idle", "turns": 1}
    assert data[3] == {"status": "queued", "reply": {"id": reply.id, "prompt": "and now the tests"}}
    assert data[-1] == {"status": "idle", "turns": 2}


async def test_a_reply_to_an_idle_task_whose_worker_is_offline_says_it_waits(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    holder = await _worker(store, alice, "holder")
    task_id = await _conversation(store, alice)
    claim = await _claim(store, alice, holder)
    await _idle(store, alice, holder, claim)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(workers)
            .where(workers.c.id == holder.id)
            .values(last_seen_at=utcnow() - timedelta(seconds=120))
        )
    await store.add_reply(alice, task_id, "still there?")
    data = await _status_data(store, alice, task_id)
    assert data[-1] == {"status": "queued", "waiting_for_worker": "holder"}
    assert (await store.get_task(alice, task_id)).status is TaskStatus.QUEUED


async def test_replies_to_a_running_turn_repeat_in_signals_until_acked_and_requeue_if_unsent(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    holder = await _worker(store, alice, "holder")
    task_id = await _conversation(store, alice)
    claim = await _claim(store, alice, holder)
    first, task = await store.add_reply(alice, task_id, "steer left")
    assert task.status is TaskStatus.RUNNING
    for _ in range(2):  # repeated until acknowledged
        signals = await store.signals(alice, holder.id, [task_id])
        assert [r.id for r in signals.replies] == [first.id] and signals.cancel == []
    # Another worker's ack is ignored; the holder's counts.
    other = await _worker(store, alice, "other")
    await store.ack(alice, other.id, Acks(replies=[first.id]))
    assert [r.id for r in (await store.signals(alice, holder.id, [task_id])).replies]
    await store.ack(alice, holder.id, Acks(replies=[first.id]))
    assert (await store.signals(alice, holder.id, [task_id])).replies == []

    second, _ = await store.add_reply(alice, task_id, "too late for this turn")
    await _idle(store, alice, holder, claim)
    task = await store.get_task(alice, task_id)
    assert task.status is TaskStatus.QUEUED, "an undelivered reply starts the next turn at once"
    assert (await _status_data(store, alice, task_id))[-1] == {
        "status": "queued",
        "turns": 1,
        "replies": 1,
    }
    again = await _claim(store, alice, holder)
    assert [r.id for r in again.replies] == [second.id]


async def test_replies_are_refused_for_exec_and_ended_tasks(store: Store) -> None:
    alice = await store.create_user("alice")
    exec_id = await _conversation(store, alice, runtime=Runtime.EXEC)
    with pytest.raises(Conflict, match="exec runtime"):
        await store.add_reply(alice, exec_id, "hello")
    task_id = await _conversation(store, alice)
    await store.request_cancel(alice, task_id)
    with pytest.raises(Conflict, match="already ended canceled"):
        await store.add_reply(alice, task_id, "hello")
    bob = await store.create_user("bob")
    with pytest.raises(NotFound):
        await store.add_reply(bob, exec_id, "hello")


async def test_an_exec_only_worker_never_takes_a_conversation_it_cannot_run(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    old = await _worker(store, alice, "old", runtime=None)
    new = await _worker(store, alice, "new", runtime=Runtime.EXEC)
    asks = await _conversation(store, alice, runtime=None, approval_policy=ApprovalPolicy.UNTRUSTED)
    app = await _conversation(store, alice)
    plain = await _conversation(store, alice, runtime=None)
    claim = await _claim(store, alice, old)
    assert claim.task.id == plain and claim.task.runtime is Runtime.EXEC
    assert await store.claim(alice, old) is None
    first = await _claim(store, alice, new)
    assert (first.task.id, first.task.runtime) == (asks, APP), "a policy needs app-server"
    second = await _claim(store, alice, new)
    assert (second.task.id, second.task.runtime) == (app, APP)


async def test_approvals_are_asked_under_the_lease_answered_once_and_scoped_by_owner(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    bob = await store.create_user("bob")
    holder = await _worker(store, alice, "holder")
    task_id = await _conversation(store, alice, approval_policy=ApprovalPolicy.UNTRUSTED)
    claim = await _claim(store, alice, holder)
    offered = [ApprovalDecision.ACCEPT, ApprovalDecision.DECLINE, ApprovalDecision.CANCEL]
    approval, task, created = await store.request_approval(
        alice, holder.id, task_id, _ask(claim, available_decisions=offered, cwd="/srv")
    )
    assert created and task.status is TaskStatus.WAITING and task.pending_approvals == 1
    assert approval.state is ApprovalState.PENDING and approval.command == "rm -rf build"
    again, _, created = await store.request_approval(alice, holder.id, task_id, _ask(claim))
    assert (again.id, created) == (approval.id, False), "idempotent by item id"
    with pytest.raises(LeaseLost):
        bad = ApprovalRequest(lease_id="nope", item_id="x", kind=ApprovalKind.COMMAND)
        await store.request_approval(alice, holder.id, task_id, bad)

    assert [a.id for a in await store.list_approvals(alice, state=ApprovalState.PENDING)] == [
        approval.id
    ]
    assert await store.list_approvals(bob) == []
    with pytest.raises(NotFound):
        await store.get_approval(bob, approval.id)
    with pytest.raises(NotFound):
        await store.answer_approval(
            bob, approval.id, ApprovalAnswer(decision=ApprovalDecision.ACCEPT)
        )
    with pytest.raises(Invalid, match="did not offer acceptForSession"):
        await store.answer_approval(
            alice, approval.id, ApprovalAnswer(decision=ApprovalDecision.ACCEPT_FOR_SESSION)
        )

    answered, task = await store.answer_approval(
        alice, approval.id, ApprovalAnswer(decision=ApprovalDecision.ACCEPT)
    )
    assert answered.state is ApprovalState.ANSWERED and answered.answered_by == "alice"
    assert task.status is TaskStatus.RUNNING and task.pending_approvals == 0
    with pytest.raises(Conflict, match="already answered: accept by alice at"):
        await store.answer_approval(
            alice, approval.id, ApprovalAnswer(decision=ApprovalDecision.DECLINE)
        )
    for _ in range(2):
        signals = await store.signals(alice, holder.id, [task_id])
        assert [a.id for a in signals.answers] == [approval.id]
        assert signals.answers[0].decision is ApprovalDecision.ACCEPT
    await store.ack(alice, holder.id, Acks(approvals=[approval.id]))
    assert (await store.signals(alice, holder.id, [task_id])).answers == []

    audit = await store.list_audit(action="approval.answer")
    assert [(r.target, r.detail["decision"]) for r in audit] == [
        (f"approval:{approval.id}", "accept")
    ]
    data = await _status_data(store, alice, task_id)
    assert data[-2]["status"] == "waiting" and data[-2]["approval"]["id"] == approval.id
    assert data[-1] == {
        "status": "running",
        "approval": {"id": approval.id, "decision": "accept", "answered_by": "alice"},
    }


async def test_user_input_needs_answers_and_the_turns_end_withdraws_pending_ones(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    holder = await _worker(store, alice, "holder")
    task_id = await _conversation(store, alice, approval_policy=ApprovalPolicy.ON_REQUEST)
    claim = await _claim(store, alice, holder)
    question = UserInputQuestion(id="color", question="Which color?")
    ask = _ask(claim, "q-1", kind=ApprovalKind.USER_INPUT, command=None, questions=[question])
    approval, _, _ = await store.request_approval(alice, holder.id, task_id, ask)
    assert approval.questions == [question]
    with pytest.raises(Invalid, match="questions: color"):
        await store.answer_approval(
            alice, approval.id, ApprovalAnswer(decision=ApprovalDecision.ACCEPT)
        )
    with pytest.raises(Invalid):
        await store.answer_approval(
            alice, approval.id, ApprovalAnswer(decision=ApprovalDecision.DECLINE)
        )
    other, _, _ = await store.request_approval(alice, holder.id, task_id, _ask(claim, "c-2"))
    answered, task = await store.answer_approval(
        alice,
        approval.id,
        ApprovalAnswer(decision=ApprovalDecision.ACCEPT, answers={"color": ["blue"]}),
    )
    assert answered.answers == {"color": ["blue"]}
    assert task.status is TaskStatus.WAITING, "another approval is still pending"

    await _idle(store, alice, holder, claim)
    withdrawn = await store.get_approval(alice, other.id)
    assert withdrawn.state is ApprovalState.WITHDRAWN and withdrawn.withdrawn_reason
    task = await store.get_task(alice, task_id)
    assert task.status is TaskStatus.IDLE and task.pending_approvals == 0
    data = await _status_data(store, alice, task_id)
    assert data[-2] == {
        "status": "running",
        "approval": {"id": other.id, "state": "withdrawn", "reason": withdrawn.withdrawn_reason},
    }
    with pytest.raises(Conflict, match="withdrawn"):
        await store.answer_approval(
            alice, other.id, ApprovalAnswer(decision=ApprovalDecision.ACCEPT)
        )


async def test_a_lost_lease_leaves_a_started_conversation_idle_and_explained(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    holder = await _worker(store, alice, "holder")
    started = await _conversation(store, alice, approval_policy=ApprovalPolicy.UNTRUSTED)
    fresh = await _conversation(store, alice)
    claim = await _claim(store, alice, holder)
    assert claim.task.id == started
    await store.append_events(
        alice,
        holder.id,
        started,
        EventBatch(lease_id=claim.lease_id, first_index=0, events=[], thread_id="thread-9"),
    )
    approval, _, _ = await store.request_approval(alice, holder.id, started, _ask(claim))
    await _claim(store, alice, holder)  # fresh: no thread yet
    async with store.engine.begin() as conn:
        await conn.execute(
            update(workers)
            .where(workers.c.id == holder.id)
            .values(last_seen_at=utcnow() - timedelta(seconds=120))
        )
    assert sorted(t for t, _ in await store.sweep_lost()) == sorted([started, fresh])
    task = await store.get_task(alice, started)
    assert task.status is TaskStatus.IDLE and task.worker_id == holder.id
    assert task.error and "holder stopped responding" in task.error and "turn 1" in task.error
    assert "reply to continue" in task.error
    assert (await store.get_approval(alice, approval.id)).state is ApprovalState.WITHDRAWN
    assert (await _status_data(store, alice, started))[-1] == {
        "status": "idle",
        "turns": 1,
        "error": task.error,
    }
    assert (await store.get_task(alice, fresh)).status is TaskStatus.LOST
    # A later reply resumes it on its worker.
    await store.add_reply(alice, started, "go on")
    holder = await _worker(store, alice, "holder")
    assert (await _claim(store, alice, holder)).task.id == started


async def test_a_worker_restart_mid_turn_leaves_the_conversation_idle(store: Store) -> None:
    alice = await store.create_user("alice")
    holder = await _worker(store, alice, "holder")
    task_id = await _conversation(store, alice)
    claim = await _claim(store, alice, holder)
    await store.append_events(
        alice,
        holder.id,
        task_id,
        EventBatch(lease_id=claim.lease_id, first_index=0, events=[], thread_id="t"),
    )
    holder = await _worker(store, alice, "holder")
    assert await store.end_previous_runs(alice, holder) == [task_id]
    task = await store.get_task(alice, task_id)
    assert task.status is TaskStatus.IDLE
    assert task.error and task.error.startswith("worker holder restarted during turn 1")


async def test_interrupt_is_flagged_while_the_turn_runs_and_cleared_when_it_ends(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    holder = await _worker(store, alice, "holder")
    task_id = await _conversation(store, alice)
    with pytest.raises(Conflict, match="queued"):
        await store.request_interrupt(alice, task_id)
    claim = await _claim(store, alice, holder)
    task, changed = await store.request_interrupt(alice, task_id)
    assert changed and task.interrupt_requested
    assert not (await store.request_interrupt(alice, task_id))[1], "idempotent"
    for _ in range(2):
        assert (await store.signals(alice, holder.id, [task_id])).interrupt == [task_id]
    await _idle(store, alice, holder, claim)
    task = await store.get_task(alice, task_id)
    assert task.status is TaskStatus.IDLE and not task.interrupt_requested
    assert (await _status_data(store, alice, task_id))[2] == {
        "status": "running",
        "interrupt": "requested",
    }
    with pytest.raises(Conflict, match="idle"):
        await store.request_interrupt(alice, task_id)


async def test_cancel_ends_an_idle_task_at_once_and_revoke_ends_its_conversations(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    holder = await _worker(store, alice, "holder")
    first = await _conversation(store, alice)
    second = await _conversation(store, alice)
    for _ in range(2):
        claim = await _claim(store, alice, holder)
        await _idle(store, alice, holder, claim)
    task, changed = await store.request_cancel(alice, first)
    assert changed and task.status is TaskStatus.CANCELED
    assert task.error == "canceled between turns (after turn 1)"
    assert await store.revoke_worker(alice, holder.id) == [second]
    assert (await store.get_task(alice, second)).status is TaskStatus.LOST
    assert _statuses(await _events(store, alice, second))[-1] == "lost"


async def test_a_late_ack_of_the_replies_that_requeued_a_task_leaves_it_idle(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    holder = await _worker(store, alice, "holder")
    task_id = await _conversation(store, alice)
    claim = await _claim(store, alice, holder)
    reply, _ = await store.add_reply(alice, task_id, "steer")
    await _idle(store, alice, holder, claim)  # the worker acks only after finishing
    assert (await store.get_task(alice, task_id)).status is TaskStatus.QUEUED
    assert await store.ack(alice, holder.id, Acks(replies=[reply.id])) == [task_id]
    task = await store.get_task(alice, task_id)
    assert task.status is TaskStatus.IDLE and task.pending_replies == 0
    assert (await _status_data(store, alice, task_id))[-1] == {"status": "idle", "turns": 1}
    assert await store.claim(alice, holder) is None
