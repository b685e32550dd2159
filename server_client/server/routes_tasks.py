"""Provides the user-facing task routes: submit, list, read, cancel and the event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import StringConstraints
from sse_starlette import ServerSentEvent

from server_client.models import MAX_INT32, Event, Me, Task, TaskCreate, TaskPage, TaskStatus
from server_client.server import admission
from server_client.server.deps import CurrentUser, HubDep, SettingsDep, StoreDep, TaskIdPath
from server_client.server.hub import cancel_key, queue_key, task_key
from server_client.server.problems import PROBLEM_RESPONSES
from server_client.server.ratelimit import LimiterDep, SlotEventSourceResponse
from server_client.server.store import NotFound, Store

router = APIRouter(prefix="/api", tags=["tasks"], responses=PROBLEM_RESPONSES)

#: How many events one store read fetches while replaying (rows).
REPLAY_PAGE = 500

#: A live stream with no wake-up reads the store again after this long (s).
STORE_RECHECK_S = 5.0

#: The last message of a stream following many tasks once all of them ended.
END_FRAME = b"event: end\r\ndata: {}\r\n\r\n"

#: A task's position in ``GET /api/events``: ``TASK_ID`` or ``TASK_ID:SEQ``.
POSITION_PATTERN = r"^[A-Za-z0-9_-]{1,64}(:[0-9]{1,10})?$"

#: Most tasks one stream follows (``GET /api/events``).
MAX_FOLLOWED = 200


@dataclass
class _Followed:
    """One task of a stream that follows many: where the stream stands in its log."""

    task_id: str
    task_pk: int
    last: int
    ended: bool


@router.get("/me")
async def me(user: CurrentUser) -> Me:
    """Who the bearer token belongs to."""
    return Me(user_id=user.id, name=user.name)


async def limit_task_creation(
    user: CurrentUser, store: StoreDep, limiter: LimiterDep, settings: SettingsDep
) -> None:
    """Dependency of the route that creates tasks: 429 over the user's active-task or
    task-creation limit (:func:`admission.check_limits`), before the body is read."""
    await admission.check_limits(user, store, limiter, settings)


@router.post("/tasks", status_code=201, dependencies=[Depends(limit_task_creation)])
async def create_task(
    body: TaskCreate, user: CurrentUser, store: StoreDep, hub: HubDep, settings: SettingsDep
) -> Task:
    """Queue a prompt for one of the caller's workers.

    The workdir must be absolute and inside a root of the server's settings or of one of the
    caller's workers (of the named worker, when ``worker`` routes the task), 400 otherwise;
    workers check the real path again at spawn. An unknown worker name is a 400.

    A ``repo`` path meets the workdir rule; a ``repo`` URL must fit the server's
    ``repo_url_schemes`` and ``repo_url_hosts`` (400 naming the setting otherwise).

    Server policy (server_client.server.admission): a prompt over ``max_prompt_bytes`` is a
    413; a sandbox mode or model the server does not allow is a 403, and so is
    ``danger-full-access`` when none of the caller's workers (or not the named one) has an
    admin's mark for it.
    """
    workdir, repo = await admission.admit(body, user, store, settings)
    task = await store.create_task(user, body, workdir, repo)
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
    across pages: pass the same ones with the cursor. A malformed cursor or a ``q`` or
    ``worker`` with a NUL character is a 400; a ``q`` over 200 characters or an empty worker
    name a 422.
    """
    for name, value in (("q", q), ("worker", worker)):
        if value is not None and "\x00" in value:
            raise HTTPException(400, f"{name} must not contain NUL characters")
    try:
        return await store.list_tasks(
            user, statuses=status or (), q=q, worker=worker, cursor=cursor, limit=limit
        )
    except ValueError as exc:
        raise HTTPException(400, f"cursor: {exc}") from exc


@router.get("/tasks/{task_id}")
async def get_task(task_id: TaskIdPath, user: CurrentUser, store: StoreDep) -> Task:
    """One task (404 when it does not exist or is not the caller's)."""
    return await store.get_task(user, task_id)


@router.post("/tasks/{task_id}/cancel", status_code=202)
async def cancel_task(task_id: TaskIdPath, user: CurrentUser, store: StoreDep, hub: HubDep) -> Task:
    """Request a cancel: a queued task ends ``canceled`` at once; a running one is stopped by
    its worker (SIGINT, then SIGKILL after a grace period). Idempotent."""
    task, changed = await store.request_cancel(user, task_id)
    if changed:
        hub.notify(task_key(task_id))
        hub.notify(cancel_key(user.id))
    return task


async def _follow(
    request: Request, store: Store, hub: HubDep, task: Task, task_pk: int, after: int
) -> AsyncIterator[ServerSentEvent | bytes]:
    yield ServerSentEvent(comment="codex-tui event stream")
    if task.status.is_terminal and after >= task.last_seq:
        return  # already past the terminal event: nothing will ever come
    last = after
    with hub.watch(task_key(task.id)) as watch:  # dropped with the key's last stream
        while True:
            wake = watch.current()  # before reading: a write landing meanwhile still wakes us
            # What this process just committed comes from memory; anything else (other
            # replicas' writes, status events, a stream behind the tail) from the store.
            rows = watch.tail(last)
            if rows is None:
                # Shielded: a client that resets mid-read cancels only our wait, not the
                # query, so its pooled connection is returned cleanly instead of being
                # force-closed (which costs CPU and logs "Task was destroyed but it is
                # pending!").
                rows = await asyncio.shield(store.read_events(task_pk, last, REPLAY_PAGE))
            # One write for all the rows at hand (sse-starlette passes bytes through): a
            # batch of events costs one send, not one each.
            chunk = bytearray()
            ended = False
            for row in rows:
                chunk += row.sse_frame()  # the stored text spliced in, not encoded again
                last = row.seq
                if row.is_terminal:
                    ended = True
                    break
            if chunk:
                yield bytes(chunk)
            if ended:
                return
            if hub.closing:  # also mid-replay: the rest would hold the shutdown up
                return  # the client reconnects with Last-Event-ID once a server is back
            if len(rows) >= REPLAY_PAGE:
                continue
            # Waking is a hint: a wake-up lost between replicas (a NOTIFY dropped with its
            # connection) delays the stream by at most this long, since the store is read
            # again.
            if not await hub.wait(wake, STORE_RECHECK_S) and await request.is_disconnected():
                return


@router.get(
    "/tasks/{task_id}/events",
    responses={
        200: {
            "description": "An SSE stream (`text/event-stream`): `id:` is the seq, `data:` the "
            "event envelope; or, with `Accept: application/json`, one page of events.",
            "model": list[Event],
            "content": {
                "text/event-stream": {
                    # One SSE event, as OpenAPI 3.2 documents sequential media types.
                    "itemSchema": {
                        "type": "object",
                        "required": ["id", "data"],
                        "properties": {
                            "id": {"type": "string", "pattern": "^[0-9]+$"},
                            "event": {"type": "string"},
                            "data": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": {"$ref": "#/components/schemas/Event"},
                            },
                        },
                    }
                }
            },
        }
    },
    response_model=None,
)
async def task_events(
    task_id: TaskIdPath,
    request: Request,
    user: CurrentUser,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_INT32, description="Only events with a larger seq.")
    ] = 0,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_INT32,
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
    ``before`` on an SSE request is a 400. A stream beyond the caller's ``max_streams`` open
    ones is a 429 (server_client.server.ratelimit).
    """
    if last_event_id is not None and last_event_id.strip():
        seq = last_event_id.strip()
        if not (seq.isascii() and seq.isdigit()) or int(seq) > MAX_INT32:
            raise HTTPException(400, "Last-Event-ID must be an event seq (a whole number)")
        after = int(seq)
    accept = request.headers.get("accept", "")
    as_json = "application/json" in accept and "text/event-stream" not in accept
    if before is not None and not as_json:
        raise HTTPException(
            400,
            "before only applies to JSON pages (Accept: application/json); "
            "an event stream always runs forwards from after / Last-Event-ID",
        )
    task_pk, task = await store.task_pk(user, task_id)
    if as_json:
        if before is None:
            rows = await store.read_events(task_pk, after, limit)
        else:
            rows = await store.read_events_before(task_pk, before, limit, after=after)
        body = "[" + ",".join(row.envelope_json() for row in rows) + "]"
        return Response(body, media_type="application/json")
    slot = await limiter.open_stream(user.id)  # 429 over max_streams; released at the end
    return SlotEventSourceResponse(
        _follow(request, store, hub, task, task_pk, after),
        release=lambda: limiter.close_stream(slot),
        ping=settings.heartbeat_s,
        headers={"Cache-Control": "no-store"},
    )


async def _follow_many(
    request: Request, store: Store, hub: HubDep, followed: list[_Followed]
) -> AsyncIterator[ServerSentEvent | bytes]:
    """The events of every task of ``followed`` after where each stands, replayed then live,
    in one stream; ends once every one of them has sent its terminal event."""
    yield ServerSentEvent(comment="codex-tui event stream")
    if all(f.ended for f in followed):
        yield END_FRAME
        return
    by_key = {task_key(f.task_id): f for f in followed}
    with hub.watch_many(list(by_key)) as watch:
        while True:
            # Before reading: a write landing meanwhile still wakes us.
            woken = watch.take_woken()
            chunk = bytearray()
            behind = False
            for key in woken:
                f = by_key[key]
                if f.ended:
                    continue
                rows = watch.tail(key, f.last)
                if rows is None:  # shielded, as in _follow
                    rows = await asyncio.shield(store.read_events(f.task_pk, f.last, REPLAY_PAGE))
                for row in rows:
                    chunk += row.sse_frame_of(f.task_id)
                    f.last = row.seq
                    if row.is_terminal:
                        f.ended = True
                        break
                if len(rows) >= REPLAY_PAGE and not f.ended:
                    behind = True
                    watch.woke(key)  # the next round reads its next page
            if chunk:
                yield bytes(chunk)
            if all(f.ended for f in followed):
                yield END_FRAME  # done: the client does not reconnect
                return
            if hub.closing:  # also mid-replay, as in _follow
                return
            if behind:
                continue
            if not await hub.wait(watch.event, STORE_RECHECK_S):
                if await request.is_disconnected():
                    return
                for key, f in by_key.items():  # a lost wake-up costs at most this long
                    if not f.ended:
                        watch.woke(key)


def _position(given: str) -> tuple[str, int]:
    """``ID`` or ``ID:SEQ`` as (task id, after seq). Raises HTTPException 400."""
    task_id, _, seq = given.partition(":")
    if not task_id or (seq and not (seq.isascii() and seq.isdigit() and int(seq) <= MAX_INT32)):
        raise HTTPException(400, f"{given!r} is not a task position: use TASK_ID or TASK_ID:SEQ")
    return task_id, int(seq) if seq else 0


def _positions(task: list[str], last_event_id: str | None) -> dict[str, int]:
    """Where the stream starts in each task: ``ID`` (from the first event) or ``ID:SEQ``
    (after SEQ); a ``Last-Event-ID`` of ``ID:SEQ`` moves that task further on.

    Raises:
        HTTPException: 400 for a malformed position, or a task named twice.
    """
    positions: dict[str, int] = {}
    for given in task:
        task_id, after = _position(given)
        if task_id in positions:
            raise HTTPException(400, f"task {task_id} is named twice")
        positions[task_id] = after
    if last_event_id and last_event_id.strip():
        task_id, after = _position(last_event_id.strip())
        if task_id in positions:
            positions[task_id] = max(positions[task_id], after)
    return positions


@router.get(
    "/events",
    responses={
        200: {
            "description": "An SSE stream (`text/event-stream`) of several tasks' events: "
            "`id:` is `<task_id>:<seq>`, `data:` the event envelope with `task_id`.",
            "content": {"text/event-stream": {}},
        }
    },
    response_model=None,
)
async def events_of_tasks(
    request: Request,
    user: CurrentUser,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    task: Annotated[
        list[Annotated[str, StringConstraints(pattern=POSITION_PATTERN)]],
        Query(
            min_length=1,
            max_length=MAX_FOLLOWED,
            description="A task to follow, as `TASK_ID` (its whole log) or `TASK_ID:SEQ` "
            "(after that seq); repeat for each task.",
        ),
    ],
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> Response:
    """Several tasks' events in one stream (a TUI's panes, a dashboard): each task replayed
    from its position, then live, each event once; a heartbeat comment at least every 15 s;
    ends once every task has sent its terminal event.

    Resuming: a client keeps each task's last seq and reconnects with every task's
    ``TASK_ID:SEQ`` (a ``Last-Event-ID`` of ``TASK_ID:SEQ`` moves that one task on). A task
    the caller does not have is a 404, as on every route; the stream takes one of the
    caller's ``max_streams`` slots (429 beyond).
    """
    positions = _positions(task, last_event_id)
    found = await store.task_pks(user, list(positions))
    missing = [task_id for task_id in positions if task_id not in found]
    if missing:
        raise NotFound(f"no task {missing[0]}")
    followed = []
    for task_id, after in positions.items():
        task_pk, current = found[task_id]
        done = current.status.is_terminal and after >= current.last_seq
        followed.append(_Followed(task_id, task_pk, after, done))
    slot = await limiter.open_stream(user.id)  # 429 over max_streams; released at the end
    return SlotEventSourceResponse(
        _follow_many(request, store, hub, followed),
        release=lambda: limiter.close_stream(slot),
        ping=settings.heartbeat_s,
        headers={"Cache-Control": "no-store"},
    )
