"""Provides the worker protocol routes: connect, claim and signal long polls, event upload,
finish. Workers only ever call out to these (docs/design.md: outbound only)."""

from __future__ import annotations

import asyncio
from typing import Annotated, NoReturn

from fastapi import (
    APIRouter,
    Depends,
    HTTPException,
    Query,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from pydantic import AfterValidator, TypeAdapter, ValidationError

from server_client.codex.lines import scrub_surrogates
from server_client.models import (
    Claim,
    EventBatch,
    FinishRequest,
    Problem,
    Signals,
    SignalsRequest,
    Task,
    TaskEvents,
    TaskStatus,
    TurnEnd,
    UploadResult,
    Worker,
    WorkerHello,
    WorkerUpload,
    WorkerUploadResult,
    reject_non_finite,
    reject_non_finite_upload,
)
from server_client.server.deps import (
    MISSING_TOKEN,
    BearerToken,
    CurrentPrincipal,
    CurrentUser,
    HubDep,
    SettingsDep,
    StoreDep,
    TaskIdPath,
    WorkerIdPath,
    set_principal,
    upload_principal,
)
from server_client.server.edge import BodyTooLarge
from server_client.server.hub import Hub, cancel_key, queue_key, task_key
from server_client.server.metrics import Metrics, MetricsDep
from server_client.server.problems import PROBLEM_RESPONSES, problem_of, validation_problem
from server_client.server.settings import ServerSettings
from server_client.server.store import NotFound, Principal, Store, TokenRevoked


def _utf8(text: str | None) -> str | None:
    """``text`` with each lone surrogate (valid in JSON, which UTF-8 and so the store cannot
    hold) replaced by ``?``, as the worker does with codex's lines (server_client.codex.lines);
    the same string when it has none (the usual case, checked by encoding it)."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return str(scrub_surrogates(text))
    return text


def _scrub_end(end: TurnEnd | None) -> None:
    """Make the texts of a finish storable (:func:`_utf8`), in place."""
    if end is not None:
        end.error = _utf8(end.error)
        end.thread_id = _utf8(end.thread_id)


def storable_batch(batch: EventBatch) -> EventBatch:
    """An upload's texts made storable in place: its thread ids and a finish's error through
    :func:`_utf8`; the events' data is scrubbed when it is encoded
    (server_client.server.policy). Ids with a lone surrogate never get here: pydantic refuses
    them (422 naming the field). docs/reliability.md S10."""
    batch.thread_id = _utf8(batch.thread_id)
    if isinstance(batch, TaskEvents):
        _scrub_end(batch.finish)
    return batch


def storable_upload(upload: WorkerUpload) -> WorkerUpload:
    """:func:`storable_batch` for every part of a worker's upload."""
    for part in upload.tasks:
        storable_batch(part)
    return upload


def storable_finish(body: FinishRequest) -> FinishRequest:
    """A finish's texts made storable in place (:func:`_utf8`)."""
    _scrub_end(body)
    return body


router = APIRouter(prefix="/api/workers", tags=["workers"], responses=PROBLEM_RESPONSES)

WaitQuery = Annotated[float, Query(ge=0, le=60, description="Longest wait (s).")]


def _deadline(wait: float, settings_max: float) -> float:
    return asyncio.get_running_loop().time() + min(wait, settings_max)


def _left(deadline: float) -> float:
    return deadline - asyncio.get_running_loop().time()


async def _worker(principal: Principal, store: Store, worker_id: str) -> Worker:
    """The worker a request acts as; a worker token may act only as its own worker (404)."""
    if principal.kind == "worker" and principal.worker_id != worker_id:
        raise NotFound(f"no worker {worker_id}")
    return await store.get_worker(principal.user, worker_id)


async def _refused(store: Store, token: str, worker_id: str, task_id: str) -> NoReturn:
    """Say why a by-token store call found nothing, as any other route would: 401 for the
    token (forgotten from the known-token memory), 404 for the worker, else 404 for the
    task."""
    store.forget_token(token)
    principal = set_principal(await store.authenticate(token))
    await _worker(principal, store, worker_id)
    raise NotFound(f"no task {task_id}")


@router.get("")
async def list_workers(user: CurrentUser, store: StoreDep) -> list[Worker]:
    """The caller's workers with online state, labels, running tasks and last contact."""
    return await store.list_workers(user)


@router.delete("/{worker_id}", status_code=204)
async def revoke_worker(
    worker_id: WorkerIdPath, user: CurrentUser, store: StoreDep, hub: HubDep
) -> Response:
    """Revoke a worker: its token fails from the next request on and its running tasks end
    ``lost`` (they are not re-run)."""
    for task_id in await store.revoke_worker(user, worker_id):
        hub.notify(task_key(task_id))
    hub.notify(cancel_key(user.id))
    return Response(status_code=204)


@router.post("/connect")
async def connect(
    hello: WorkerHello, principal: CurrentPrincipal, store: StoreDep, hub: HubDep
) -> Worker:
    """Register the calling worker with its capabilities: a worker token updates its own
    worker; a user token registers one of the user's workers by name. A worker connects once
    per process start, so tasks still running under it were its old process's: they end
    ``lost`` (docs/reliability.md R2), they are not re-run."""
    worker = await store.connect_worker(principal.user, hello, worker_id=principal.worker_id)
    ended = await store.end_previous_runs(principal.user, worker)
    for task_id in ended:
        hub.notify(task_key(task_id))
    if ended:
        hub.notify(cancel_key(principal.user.id))
        hub.notify(queue_key(principal.user.id))  # a conversation with replies queues again
    return worker


@router.post(
    "/{worker_id}/claim",
    response_model=Claim,
    responses={204: {"description": "Nothing was queued within the wait."}},
)
async def claim(
    worker_id: WorkerIdPath,
    request: Request,
    principal: CurrentPrincipal,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    wait: WaitQuery = 25.0,
) -> Claim | Response:
    """Long poll: the owner's oldest queued task this worker may run (routing by name and
    labels), as soon as there is one, else 204 after ``wait`` seconds. Each queued task is
    handed to exactly one worker (docs/reliability.md R7). A poll whose worker has hung up
    claims nothing: the task would go to a process that is gone (e.g. a worker restarted
    mid-poll)."""
    user = principal.user
    worker = await _worker(principal, store, worker_id)
    await store.touch_worker(worker.id)
    deadline = _deadline(wait, settings.max_wait_s)
    while True:
        if hub.closing or await request.is_disconnected():
            return Response(status_code=204)
        wake = hub.current(queue_key(user.id))
        got = await store.claim(user, worker)
        if got is not None:
            if got.task.turns <= 1:  # a conversation's later turns did not wait in a queue
                metrics.observe_claim(got.task)
            hub.notify(task_key(got.task.id))
            return got
        if not await Hub.wait(wake, _left(deadline)):
            return Response(status_code=204)


@router.post("/{worker_id}/signals")
async def signals(
    worker_id: WorkerIdPath,
    body: SignalsRequest,
    principal: CurrentPrincipal,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
    wait: WaitQuery = 10.0,
) -> Signals:
    """Long poll and heartbeat: returns as soon as the worker has something to act on for
    one of the listed tasks: a stop (a cancel request, or it no longer holds the task), an
    interrupt of the running turn, replies or approval answers not yet acknowledged (they
    repeat until ``POST /api/workers/{wid}/acks``), a workspace of the worker's to remove
    (asked for during the poll; ``workspaces`` is then set in every answer until its sync
    reports it gone); else an empty answer after ``wait``
    seconds (at most the worker's ``heartbeat_s``, so its leases stay fresh).

    The worker counts as heard from when the poll ARRIVES, never when it ends: a worker killed
    during the poll must lose its leases one TTL after its last poll began, not one TTL after
    the poll's end (docs/reliability.md R2). The poll lasts at most ``heartbeat_s`` (a third
    of the TTL), so a live worker's next poll refreshes it in time."""
    user = principal.user
    worker = await _worker(principal, store, worker_id)
    await store.touch_worker(worker.id)
    deadline = _deadline(min(wait, worker.heartbeat_s), settings.max_wait_s)
    removals_before: bool | None = None
    while True:
        wake = hub.current(cancel_key(user.id))
        found = await store.signals(user, worker.id, body.task_ids)
        found.workspaces = await store.workspaces_to_remove(user, worker.id)
        if removals_before is None:
            removals_before = found.workspaces
        # A removal asked for during the poll ends it; one pending before rides along.
        news = (found.cancel or found.interrupt or found.replies or found.answers) or (
            found.workspaces and not removals_before
        )
        if news or hub.closing or not await Hub.wait(wake, _left(deadline)):
            return found


#: The upload and the finish check the token again in their own statement.
KnownTokenAuth = Depends(upload_principal)

#: A worker upload as both its transports take it (the upload route and the upload socket):
#: no NaN or infinite number, its texts made storable.
CheckedUpload = Annotated[
    WorkerUpload, AfterValidator(reject_non_finite_upload), AfterValidator(storable_upload)
]


@router.post("/{worker_id}/events")
async def upload(
    worker_id: WorkerIdPath,
    body: CheckedUpload,
    token: BearerToken,
    principal: Annotated[Principal, KnownTokenAuth],
    store: StoreDep,
    hub: HubDep,
    metrics: MetricsDep,
) -> WorkerUploadResult:
    """Append the new events of every task the worker runs, and end the leases whose
    ``finish`` is given, in one transaction: the worker's one upload stream (issue 14).

    Each part is answered on its own, as the per-task routes would answer it (idempotent by
    ``first_index``; a 409 problem with ``next_index`` on a gap; 409 once the lease is lost;
    404 for a task the owner does not have), and a refused part never refuses the others
    (docs/reliability.md R3, R4). The whole request is refused only for the token (401) or the
    worker (404).
    """
    return await _append_uploads(store, hub, metrics, principal, token, worker_id, body)


async def _append_uploads(
    store: Store,
    hub: Hub,
    metrics: Metrics,
    principal: Principal,
    token: str,
    worker_id: str,
    body: WorkerUpload,
) -> WorkerUploadResult:
    """Store one worker upload and wake what follows its tasks (the upload route's and the
    upload socket's work).

    Raises:
        HTTPException: 401 when the token was revoked meanwhile.
        NotFound: no such worker of the token's owner (404).
    """
    try:
        outcome = await store.append_uploads(principal, token, worker_id, body.tasks)
    except TokenRevoked:
        store.forget_token(token)
        raise HTTPException(401, "invalid or revoked token") from None
    metrics.events_ingested.inc(outcome.fresh)
    published = {task_id for task_id, _ in outcome.published}
    for task_id, written in outcome.published:
        hub.publish(task_key(task_id), written)
    for task_id, status, ran_s in outcome.ended:
        if task_id not in published:
            hub.notify(task_key(task_id))
        if status is TaskStatus.QUEUED:  # replies came that codex never got: next turn
            hub.notify(queue_key(principal.user.id))
        if ran_s is not None:
            metrics.observe_run(ran_s)
    return WorkerUploadResult(tasks=outcome.results)


#: The upload route's body, validated the same way for the socket's messages.
_UPLOAD = TypeAdapter(CheckedUpload)


@router.websocket("/{worker_id}/events/socket")
async def upload_socket(websocket: WebSocket, worker_id: WorkerIdPath) -> None:
    """The event upload over one WebSocket a worker keeps open (issue 14: one stream per
    worker, without a request's fixed cost per upload).

    Each text message from the worker is a :class:`WorkerUpload`, answered, in order, by
    one message: the :class:`WorkerUploadResult` the upload route would send, or the problem
    body of its refusal (``status`` 401, 404, 413, 422, 507, ...), stored or refused exactly
    as the route would (idempotent by ``first_index``, fenced by the lease). The token comes
    in the handshake's ``Authorization: Bearer`` header and is checked again for each
    message, so a revoked token is refused from its next upload on (401, then the socket is
    closed). A message larger than ``max_body_bytes`` is refused with 413.
    """
    app = websocket.app
    store: Store = app.state.store
    hub: Hub = app.state.hub
    metrics: Metrics = app.state.metrics
    settings: ServerSettings = app.state.settings
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    await websocket.accept()
    metrics.upload_sockets.inc()
    try:
        while True:
            text = await websocket.receive_text()
            problem: Problem | None = None
            answer = ""
            try:
                if scheme.lower() != "bearer" or not token:
                    raise HTTPException(401, MISSING_TOKEN)
                principal = set_principal(await store.authenticate_known(token))
                # The limit is in bytes, as for a request body; a character is 1-4 of them.
                limit = settings.max_body_bytes
                if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
                    raise BodyTooLarge(limit)
                try:
                    body = _UPLOAD.validate_json(text)
                except ValidationError as exc:
                    problem = validation_problem(exc.errors())
                else:
                    result = await _append_uploads(
                        store, hub, metrics, principal, token, worker_id, body
                    )
                    answer = result.model_dump_json()
            except Exception as exc:  # noqa: BLE001 - each is answered as the route would
                problem = problem_of(exc)
            if problem is not None:
                metrics.upload_messages.labels(str(problem.status)).inc()
                await websocket.send_text(problem.model_dump_json(exclude_none=True))
                if problem.status == 401:
                    await websocket.close(code=SOCKET_REFUSED)
                    return
            else:
                metrics.upload_messages.labels("200").inc()
                await websocket.send_text(answer)
    except WebSocketDisconnect:
        return
    finally:
        metrics.upload_sockets.dec()


#: The close code of an upload socket whose token is refused (the application's range of
#: RFC 6455's codes, 4000-4999: 4000 + the HTTP status).
SOCKET_REFUSED = 4401


@router.post("/{worker_id}/tasks/{task_id}/events", dependencies=[KnownTokenAuth])
async def upload_events(
    worker_id: WorkerIdPath,
    task_id: TaskIdPath,
    batch: Annotated[EventBatch, AfterValidator(reject_non_finite), AfterValidator(storable_batch)],
    token: BearerToken,
    store: StoreDep,
    hub: HubDep,
    metrics: MetricsDep,
) -> UploadResult:
    """Append a batch of events; idempotent by ``first_index``; 409 with ``next_index`` on a
    gap, 409 when the worker no longer holds the lease (docs/reliability.md R4, R3).

    The hot path of the server: the token, the worker and the lease are checked in the one
    read of the task row, and the committed events go to this process's streams from memory.
    """
    got = await store.append_events_by_token(token, worker_id, task_id, batch)
    if got is None:
        await _refused(store, token, worker_id, task_id)
    appended = got[1]  # (a worker token for another worker was refused in the store)
    metrics.events_ingested.inc(appended.fresh)
    hub.publish(task_key(task_id), appended.events)
    return appended.result


@router.post("/{worker_id}/tasks/{task_id}/finish", dependencies=[KnownTokenAuth])
async def finish(
    worker_id: WorkerIdPath,
    task_id: TaskIdPath,
    body: Annotated[FinishRequest, AfterValidator(storable_finish)],
    token: BearerToken,
    principal: Annotated[Principal, KnownTokenAuth],
    store: StoreDep,
    hub: HubDep,
    metrics: MetricsDep,
) -> Task:
    """Record the task's end (idempotent); refused with 409 and ``next_index`` until every
    event the worker produced has been uploaded, and with 409 once the lease is lost.

    Like the upload, the token, the worker and the lease are checked in the finish's own
    transaction.
    """
    got = await store.finish_by_token(token, worker_id, task_id, body)
    if got is None:
        await _refused(store, token, worker_id, task_id)
    task, changed = got
    if changed:
        metrics.observe_finish(task)
        hub.notify(task_key(task_id))
        if task.status is TaskStatus.QUEUED:  # replies came that codex never got: next turn
            hub.notify(queue_key(principal.user.id))
    return task
