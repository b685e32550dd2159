"""Provides the conversation routes: replies and interrupts of a task, the owner's approvals
(list, read, answer), and the worker's side: asking for an approval and acknowledging what it
handed to codex.

Everything is owner-scoped like the tasks: another owner's task or approval is a 404. Every
change wakes what waits on it: the task's event streams, the owner's workers' signals long
polls (a reply, an interrupt, an answer) and their claims (a task queued again).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from server_client.models import (
    Acks,
    Approval,
    ApprovalAnswer,
    ApprovalRequest,
    ApprovalState,
    Reply,
    ReplyCreate,
    Task,
    TaskStatus,
)
from server_client.server.admission import check_prompt_size
from server_client.server.deps import (
    ID_PATTERN,
    CurrentPrincipal,
    CurrentUser,
    HubDep,
    SettingsDep,
    StoreDep,
    TaskIdPath,
    WorkerIdPath,
)
from server_client.server.hub import cancel_key, queue_key, task_key
from server_client.server.problems import PROBLEM_RESPONSES
from server_client.server.routes_workers import _worker

router = APIRouter(prefix="/api", tags=["conversations"], responses=PROBLEM_RESPONSES)

ApprovalIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="An approval id.")]


@router.post("/tasks/{task_id}/replies", status_code=202)
async def reply(
    task_id: TaskIdPath,
    body: ReplyCreate,
    user: CurrentUser,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
) -> Reply:
    """Send a follow-up prompt to a conversation: a running or waiting turn gets it at once
    (codex steers the turn with it); an idle task is queued again for the worker that holds
    its thread (it waits, visibly, while that worker is offline); a queued one takes it with
    its claim. 409 for a task that ended or runs on the exec runtime; 413 over
    ``max_prompt_bytes``."""
    check_prompt_size(body.prompt, settings)
    stored, task = await store.add_reply(user, task_id, body.prompt)
    hub.notify(task_key(task_id))
    if task.status is TaskStatus.QUEUED:
        hub.notify(queue_key(user.id))
    else:
        hub.notify(cancel_key(user.id))
    return stored


@router.post("/tasks/{task_id}/interrupt", status_code=202)
async def interrupt(task_id: TaskIdPath, user: CurrentUser, store: StoreDep, hub: HubDep) -> Task:
    """Interrupt the running turn (the task stays, and takes a reply once idle; cancel ends
    it): the worker declines pending approvals, interrupts codex's turn and stops what it
    started, then the task becomes ``idle``. Idempotent; 409 unless running or waiting."""
    task, changed = await store.request_interrupt(user, task_id)
    if changed:
        hub.notify(task_key(task_id))
        hub.notify(cancel_key(user.id))
    return task


@router.get("/approvals")
async def list_approvals(
    user: CurrentUser,
    store: StoreDep,
    state: Annotated[ApprovalState | None, Query(description="Only this state.")] = None,
    task_id: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="Only this task's approvals.")
    ] = None,
) -> list[Approval]:
    """The caller's approvals, newest first (at most 200)."""
    return await store.list_approvals(user, state=state, task_id=task_id)


@router.get("/approvals/{approval_id}")
async def get_approval(approval_id: ApprovalIdPath, user: CurrentUser, store: StoreDep) -> Approval:
    """One approval (404 when it does not exist or is not the caller's)."""
    return await store.get_approval(user, approval_id)


@router.post("/approvals/{approval_id}")
async def answer_approval(
    approval_id: ApprovalIdPath,
    body: ApprovalAnswer,
    user: CurrentUser,
    store: StoreDep,
    hub: HubDep,
) -> Approval:
    """Answer a pending approval, once: 409 for a second answer (naming the first decision,
    who gave it and when) or a withdrawn approval; 400 for a decision codex did not offer,
    or for a ``user_input`` approval without its answers. The worker passes the answer on to
    codex."""
    approval, _ = await store.answer_approval(user, approval_id, body)
    hub.notify(task_key(approval.task_id))
    hub.notify(cancel_key(user.id))
    return approval


@router.post("/workers/{worker_id}/tasks/{task_id}/approvals", tags=["workers"])
async def request_approval(
    worker_id: WorkerIdPath,
    task_id: TaskIdPath,
    body: ApprovalRequest,
    principal: CurrentPrincipal,
    store: StoreDep,
    hub: HubDep,
) -> Approval:
    """Worker: codex asks for the owner's say during the turn the worker runs under
    ``lease_id``; the task becomes ``waiting``. Idempotent by ``item_id``; 409 when the
    worker no longer holds the lease."""
    worker = await _worker(principal, store, worker_id)
    approval, _, created = await store.request_approval(principal.user, worker.id, task_id, body)
    if created:
        hub.notify(task_key(task_id))
    return approval


@router.post("/workers/{worker_id}/acks", status_code=204, tags=["workers"])
async def acks(
    worker_id: WorkerIdPath,
    body: Acks,
    principal: CurrentPrincipal,
    store: StoreDep,
    hub: HubDep,
) -> Response:
    """Worker: the replies it handed to codex and the approval answers it passed on; they
    stop coming in its signals. Idempotent; ids of tasks it does not hold are ignored."""
    worker = await _worker(principal, store, worker_id)
    for changed in await store.ack(principal.user, worker.id, body):
        hub.notify(task_key(changed))
    return Response(status_code=204)
