"""Provides the worker protocol played by hand: a test that acts as a worker connects, claims a
task and finishes it with these instead of repeating the requests."""

from __future__ import annotations

from server_client.models import Claim, FinishRequest, TaskStatus, Worker, WorkerHello
from server_client.worker.api import WorkerApi
from server_client.worker.uploader import EventUploader, UploadStream


async def claim_next(api: WorkerApi, name: str, wait_s: float = 5.0) -> tuple[Worker, Claim]:
    """Connect as the worker ``name`` (workdir root ``/``) and claim the next queued task of
    the token's owner within ``wait_s`` seconds; fails the test when none comes."""
    worker = await api.connect(WorkerHello(name=name, workdir_roots=["/"]))
    claim = await api.claim(worker.id, wait_s)
    assert claim is not None, f"worker {name} claimed nothing within {wait_s} s"
    return worker, claim


def upload_part(
    task_id: str, lease_id: str, first: int, lines: list[str], **more: object
) -> dict[str, object]:
    """One task's part of a worker upload, as JSON: ``lines`` as stderr events from index
    ``first`` under ``lease_id``; ``more`` adds fields (e.g. ``finish``)."""
    events = [
        {"ts": "2026-12-06T00:00:00Z", "kind": "stderr", "data": {"line": line}} for line in lines
    ]
    return {
        "task_id": task_id,
        "lease_id": lease_id,
        "first_index": first,
        "events": events,
        **more,
    }


async def finish_completed(
    api: WorkerApi, worker: Worker, claim: Claim, event_count: int, lease_id: str | None = None
) -> None:
    """Finish the claimed task ``completed`` after ``event_count`` events, under the claim's
    lease or ``lease_id``. Raises ApiError as :meth:`WorkerApi.finish`."""
    body = FinishRequest(
        lease_id=claim.lease_id if lease_id is None else lease_id,
        status=TaskStatus.COMPLETED,
        event_count=event_count,
    )
    await api.finish(worker.id, claim.task.id, body)


async def claim_all(
    api: WorkerApi, name: str, count: int, wait_s: float = 5.0
) -> tuple[UploadStream, dict[str, EventUploader]]:
    """Connect as the worker ``name`` and claim ``count`` queued tasks, each within ``wait_s``
    seconds; returns the worker's upload stream and each claimed task's uploader, by task id."""
    worker = await api.connect(WorkerHello(name=name, workdir_roots=["/"], max_tasks=count))
    stream = UploadStream(api, worker.id)
    uploaders = {}
    for _ in range(count):
        claim = await api.claim(worker.id, wait_s)
        assert claim is not None, f"worker {name} claimed nothing within {wait_s} s"
        uploaders[claim.task.id] = stream.open(claim.task.id, claim.lease_id)
    return stream, uploaders
