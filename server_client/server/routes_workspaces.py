"""Provides the workspace routes (docs/design.md, "Workspaces"): a task's diff and patch, the
owner's workspaces and their removal, and the worker's side: reporting the workspace it made
for a task, uploading its diff, and syncing what its disk holds.

Everything is owner-scoped like the tasks: another owner's task is a 404. The worker's
reports of a task are fenced by its lease (409 once lost).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from server_client.models import (
    DiffUpload,
    Task,
    TaskDiff,
    WorkspaceOrders,
    WorkspaceReport,
    WorkspaceSync,
)
from server_client.server.deps import (
    CurrentPrincipal,
    CurrentUser,
    HubDep,
    SettingsDep,
    StoreDep,
    TaskIdPath,
    WorkerIdPath,
)
from server_client.server.hub import cancel_key
from server_client.server.problems import PROBLEM_RESPONSES
from server_client.server.routes_workers import _worker

router = APIRouter(prefix="/api", tags=["workspaces"], responses=PROBLEM_RESPONSES)

#: Media type of ``GET /api/tasks/{id}/patch``.
PATCH_MEDIA_TYPE = "text/x-diff"


@router.get("/tasks/{task_id}/diff")
async def get_diff(task_id: TaskIdPath, user: CurrentUser, store: StoreDep) -> TaskDiff:
    """The latest diff of the task's workspace against its base commit: the changed files
    with lines added and removed (binary files with none), without the patch. 404 when the
    task has no diff (it has no repository, or its worker has not reported one yet)."""
    return await store.get_diff(user, task_id)


@router.get(
    "/tasks/{task_id}/patch",
    response_class=Response,
    responses={200: {"content": {PATCH_MEDIA_TYPE: {}}, "description": "The patch."}},
)
async def get_patch(task_id: TaskIdPath, user: CurrentUser, store: StoreDep) -> Response:
    """The latest diff of the task's workspace as a patch, byte for byte as ``git diff
    --binary`` wrote it on the worker (``git apply`` takes it). 404 when there is no diff;
    409 when it was too large to keep (the detail says where to read it)."""
    patch = await store.get_patch(user, task_id)
    return Response(
        content=patch,
        # Set as a header: Starlette would add "charset=utf-8" to a text/* media type, and a
        # patch is bytes (binary files, other encodings).
        headers={
            "Content-Type": PATCH_MEDIA_TYPE,
            "Content-Disposition": f'attachment; filename="{task_id}.patch"',
        },
    )


@router.get("/workspaces")
async def list_workspaces(user: CurrentUser, store: StoreDep) -> list[Task]:
    """The caller's tasks whose workspaces are on a worker's disk (``present``, or
    ``removing`` until the worker has done it), newest first, with their disk use in bytes
    as the worker last reported it (``workspace_bytes``)."""
    return await store.list_workspaces(user)


@router.delete("/tasks/{task_id}/workspace", status_code=202)
async def remove_workspace(
    task_id: TaskIdPath, user: CurrentUser, store: StoreDep, hub: HubDep
) -> Task:
    """Ask the task's worker to delete its workspace (idempotent): the task's
    ``workspace_state`` is ``removing`` until the worker has, then ``removed``; the diff the
    server keeps stays. 404 when the task never had a workspace; 409 while a turn runs in it
    or the task is queued (cancel it first)."""
    task, changed = await store.request_workspace_removal(user, task_id)
    if changed:
        hub.notify(cancel_key(user.id))  # wakes the workers' signals long polls
    return task


@router.put("/workers/{worker_id}/tasks/{task_id}/workspace", tags=["workers"])
async def report_workspace(
    worker_id: WorkerIdPath,
    task_id: TaskIdPath,
    body: WorkspaceReport,
    principal: CurrentPrincipal,
    store: StoreDep,
) -> Task:
    """Worker: the workspace it made (or reused) for the task it holds under
    ``body.lease_id``, before codex starts in it. 409 when it no longer holds the lease; 400
    when the task has no repository or a workspace at another base commit."""
    worker = await _worker(principal, store, worker_id)
    return await store.report_workspace(principal.user, worker.id, task_id, body)


@router.put("/workers/{worker_id}/tasks/{task_id}/diff", status_code=204, tags=["workers"])
async def upload_diff(
    worker_id: WorkerIdPath,
    task_id: TaskIdPath,
    body: DiffUpload,
    principal: CurrentPrincipal,
    store: StoreDep,
) -> Response:
    """Worker: the task's whole diff against its base commit, replacing the one kept before
    (after each turn, and every few seconds while codex changes files). 409 when it no
    longer holds the lease or the task ended; 400 when the base commit is not the
    workspace's."""
    worker = await _worker(principal, store, worker_id)
    await store.store_diff(principal.user, worker.id, task_id, body)
    return Response(status_code=204)


@router.post("/workers/{worker_id}/workspaces", tags=["workers"])
async def sync_workspaces(
    worker_id: WorkerIdPath,
    body: WorkspaceSync,
    principal: CurrentPrincipal,
    store: StoreDep,
    settings: SettingsDep,
) -> WorkspaceOrders:
    """Worker: every workspace its disk holds, with its size. The answer lists those to
    remove: their owner asked, or their task ended more than the server's
    ``workspace_retention_s`` ago. The tasks it ran whose workspaces it no longer holds are
    recorded ``removed``."""
    worker = await _worker(principal, store, worker_id)
    orders, _gone = await store.sync_workspaces(
        principal.user,
        worker.id,
        body.workspaces,
        retention_s=settings.workspace_retention_s,
    )
    return orders
