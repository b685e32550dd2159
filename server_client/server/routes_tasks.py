"""Provides the user-facing task routes: submit, list, read, cancel and the event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from server_client.models import Event, Me, Task, TaskCreate, TaskPage, TaskStatus
from server_client.paths import WorkdirError, check_workdir_lexically
from server_client.server.deps import CurrentUser, HubDep, SettingsDep, StoreDep
from server_client.server.hub import cancel_key, queue_key, task_key
from server_client.server.store import Store

router = APIRouter(prefix="/api", tags=["tasks"])

#: How many events one store read fetches while replaying (rows).
REPLAY_PAGE = 500


@router.get("/me")
async def me(user: CurrentUser) -> Me:
    """Who the bearer token belongs to."""
    return Me(user_id=user.id, name=user.name)


@router.post("/tasks", status_code=201)
async def create_task(
    body: TaskCreate, user: CurrentUser, store: StoreDep, hub: HubDep, settings: SettingsDep
) -> Task:
    """Queue a prompt for one of the caller's workers.

    The workdir must be absolute and inside a root of the server's settings or of one of the
    caller's workers (of the named worker, when ``worker`` routes the task), 400 otherwise;
    workers check the real path again at spawn. An unknown worker name is a 400.
    """
    target = None
    if body.worker is not None:
        target = await store.worker_by_name(user, body.worker)
        if target is None:
            names = ", ".join(w.name for w in await store.list_workers(user)) or "none yet"
            raise HTTPException(400, f"you have no worker named {body.worker!r} (yours: {names})")
    workdir = None
    if body.workdir is not None:
        if target is not None and target.workdir_roots:
            roots = list(target.workdir_roots)
        else:
            roots = list(settings.workdir_roots)
            roots += [r for r in await store.workdir_roots(user) if r not in roots]
        try:
            workdir = check_workdir_lexically(body.workdir, roots)
        except WorkdirError as exc:
            raise HTTPException(400, str(exc)) from exc
    task = await store.create_task(user, body, workdir)
    hub.notify(queue_key(user.id))
    return task


@router.get("/tasks")
async def list_tasks(
    user: CurrentUser,
    store: StoreDep,
    status: Annotated[list[TaskStatus] | None, Query(description="Only these states.")] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Only prompts containing this text (ignoring case; % and _ are "
            "literal, not wildcards).",
        ),
    ] = None,
    worker: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            description="Only tasks run by, or routed to, the worker of this name.",
        ),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TaskPage:
    """The caller's tasks, newest first; follow ``next_cursor`` for older ones.

    The filters (``status``, repeatable; ``q``; ``worker``) combine with AND and stay in force
    across pages: pass the same ones with the cursor. A malformed cursor or a ``q`` with a NUL
    character is a 400; a ``q`` over 200 characters or an empty worker name a 422.
    """
    if q is not None and "\x00" in q:
        raise HTTPException(400, "q must not contain NUL characters")
    try:
        return await store.list_tasks(
            user, statuses=status or (), q=q, worker=worker, cursor=cursor, limit=limit
        )
    except ValueError as exc:
        raise HTTPException(400, f"cursor: {exc}") from exc


@router.get("/tasks/{task_id}")
async def get_task(task_id: str, user: CurrentUser, store: StoreDep) -> Task:
    """One task (404 when it does not exist or is not the caller's)."""
    return await store.get_task(user, task_id)


@router.post("/tasks/{task_id}/cancel", status_code=202)
async def cancel_task(task_id: str, user: CurrentUser, store: StoreDep, hub: HubDep) -> Task:
    """Request a cancel: a queued task ends ``canceled`` at once; a running one is stopped by
    its worker (SIGINT, then SIGKILL after a grace period). Idempotent."""
    task, changed = await store.request_cancel(user, task_id)
    if changed:
        pk, _ = await store.task_pk(user, task_id)
        hub.notify(task_key(pk))
        hub.notify(cancel_key(user.id))
    return task


async def _follow(
    request: Request, store: Store, hub: HubDep, task_pk: int, after: int
) -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(comment="codex-tui event stream")
    last = after
    key = task_key(task_pk)
    while True:
        wake = hub.current(key)
        rows = await store.read_events(task_pk, last, REPLAY_PAGE)
        for row in rows:
            yield ServerSentEvent(data=row.envelope_json(), id=str(row.seq))
            last = row.seq
            if row.is_terminal:
                return
        if len(rows) == REPLAY_PAGE:
            continue
        if hub.closing:
            return  # the client reconnects with Last-Event-ID once a server is back
        while not await hub.wait(wake, 5.0):
            if await request.is_disconnected():
                return


@router.get(
    "/tasks/{task_id}/events",
    responses={
        200: {
            "description": "An SSE stream (`text/event-stream`): `id:` is the seq, `data:` the "
            "event envelope; or, with `Accept: application/json`, one page of events.",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}},
                "application/json": {
                    "schema": {"type": "array", "items": Event.model_json_schema()}
                },
            },
        }
    },
    response_model=None,
)
async def task_events(
    task_id: str,
    request: Request,
    user: CurrentUser,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, description="Only events with a larger seq.")] = 0,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            description="JSON only: the `limit` events with the largest seqs below this one, "
            "in ascending order (paging backwards); with `after`, only events between the two.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000, description="Page size (JSON only).")] = 1000,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> Response:
    """The task's events: replayed from the store after ``Last-Event-ID`` (or ``?after=``),
    then live; a heartbeat comment at least every 15 s; ends after the terminal status.

    With ``Accept: application/json``: one page, ascending by seq: the first ``limit`` events
    after ``after``, or with ``before`` the last ``limit`` events before it (above ``after``).
    ``before`` on an SSE request is a 400.
    """
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            raise HTTPException(400, "Last-Event-ID must be an event seq (a whole number)")
        after = int(last_event_id)
    accept = request.headers.get("accept", "")
    as_json = "application/json" in accept and "text/event-stream" not in accept
    if before is not None and not as_json:
        raise HTTPException(
            400,
            "before only applies to JSON pages (Accept: application/json); "
            "an event stream always runs forwards from after / Last-Event-ID",
        )
    task_pk, _task = await store.task_pk(user, task_id)
    if as_json:
        if before is None:
            rows = await store.read_events(task_pk, after, limit)
        else:
            rows = await store.read_events_before(task_pk, before, limit, after=after)
        body = "[" + ",".join(row.envelope_json() for row in rows) + "]"
        return Response(body, media_type="application/json")
    return EventSourceResponse(
        _follow(request, store, hub, task_pk, after),
        ping=settings.heartbeat_s,
        headers={"Cache-Control": "no-store"},
    )
