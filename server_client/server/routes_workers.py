"""Provides the worker protocol routes: connect, claim and signal long polls, event upload,
finish. Workers only ever call out to these (design.md: outbound only)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response

from server_client.models import (
    Claim,
    EventBatch,
    FinishRequest,
    Signals,
    SignalsRequest,
    Task,
    UploadResult,
    Worker,
    WorkerHello,
)
from server_client.server.deps import CurrentUser, HubDep, SettingsDep, StoreDep
from server_client.server.hub import Hub, cancel_key, queue_key, task_key

router = APIRouter(prefix="/api/workers", tags=["workers"])

WaitQuery = Annotated[float, Query(ge=0, le=60, description="Longest wait (s).")]


def _deadline(wait: float, settings_max: float) -> float:
    return asyncio.get_running_loop().time() + min(wait, settings_max)


def _left(deadline: float) -> float:
    return deadline - asyncio.get_running_loop().time()


@router.post("/connect")
async def connect(hello: WorkerHello, user: CurrentUser, store: StoreDep) -> Worker:
    """Register the calling worker (by name, per owner) with its capabilities."""
    return await store.connect_worker(user, hello)


@router.post(
    "/{worker_id}/claim",
    response_model=Claim,
    responses={204: {"description": "Nothing was queued within the wait."}},
)
async def claim(
    worker_id: str,
    user: CurrentUser,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
    wait: WaitQuery = 25.0,
) -> Claim | Response:
    """Long poll: the owner's oldest queued task as soon as there is one, else 204 after
    ``wait`` seconds. Each queued task is handed to exactly one worker (R7)."""
    worker = await store.get_worker(user, worker_id)
    await store.touch_worker(worker.id)
    deadline = _deadline(wait, settings.max_wait_s)
    while True:
        if hub.closing:
            return Response(status_code=204)
        wake = hub.current(queue_key(user.id))
        got = await store.claim(user, worker)
        if got is not None:
            pk, _ = await store.task_pk(user, got.task.id)
            hub.notify(task_key(pk))
            return got
        if not await Hub.wait(wake, _left(deadline)):
            return Response(status_code=204)


@router.post("/{worker_id}/signals")
async def signals(
    worker_id: str,
    body: SignalsRequest,
    user: CurrentUser,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
    wait: WaitQuery = 25.0,
) -> Signals:
    """Long poll (and heartbeat): returns as soon as one of the listed running tasks has a
    cancel request, else an empty answer after ``wait`` seconds."""
    worker = await store.get_worker(user, worker_id)
    await store.touch_worker(worker.id)
    deadline = _deadline(wait, settings.max_wait_s)
    while True:
        wake = hub.current(cancel_key(user.id))
        cancel = await store.cancel_requested(user, worker.id, body.task_ids)
        if cancel or hub.closing or not await Hub.wait(wake, _left(deadline)):
            return Signals(cancel=cancel)


@router.post("/{worker_id}/tasks/{task_id}/events")
async def upload_events(
    worker_id: str,
    task_id: str,
    batch: EventBatch,
    user: CurrentUser,
    store: StoreDep,
    hub: HubDep,
) -> UploadResult:
    """Append a batch of events; idempotent by ``first_index`` (R4); 409 with ``next_index``
    on a gap, 409 when the worker no longer holds the lease (R3)."""
    worker = await store.get_worker(user, worker_id)
    result, task_pk = await store.append_events(user, worker.id, task_id, batch)
    hub.notify(task_key(task_pk))
    return result


@router.post("/{worker_id}/tasks/{task_id}/finish")
async def finish(
    worker_id: str,
    task_id: str,
    body: FinishRequest,
    user: CurrentUser,
    store: StoreDep,
    hub: HubDep,
) -> Task:
    """Record the task's end (idempotent); refused with 409 and ``next_index`` until every
    event the worker produced has been uploaded."""
    worker = await store.get_worker(user, worker_id)
    task, changed = await store.finish(user, worker.id, task_id, body)
    if changed:
        pk, _ = await store.task_pk(user, task_id)
        hub.notify(task_key(pk))
    return task
