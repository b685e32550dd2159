"""Provides ``WorkerApi``: the worker's side of the worker protocol, over httpx.

Every call is outbound from the worker (design.md). Network errors surface as
``httpx.TransportError``; refusals as :class:`server_client.client.ApiError` (409 carries
``problem.next_index`` for uploads and finishes).
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from server_client.client import raise_for_problem
from server_client.models import (
    Claim,
    FinishRequest,
    Signals,
    SignalsRequest,
    Task,
    UploadResult,
    Worker,
    WorkerHello,
)


class WorkerApi:
    """HTTP calls of one worker.

    Args:
        base_url: Server URL.
        token: The owner's token (sent as a bearer token; never logged).
        timeout_s: Timeout of ordinary calls (s); long polls add their wait to it.
    """

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 15.0) -> None:
        self._timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def connect(self, hello: WorkerHello) -> Worker:
        """Register this worker; returns its record (with the id used by every other call)."""
        response = await self._http.post("/api/workers/connect", json=hello.model_dump())
        raise_for_problem(response)
        return Worker.model_validate_json(response.content)

    async def claim(self, worker_id: str, wait_s: float) -> Claim | None:
        """Long poll for a task; None when nothing was queued within ``wait_s``."""
        response = await self._http.post(
            f"/api/workers/{worker_id}/claim",
            params={"wait": wait_s},
            timeout=wait_s + self._timeout_s,
        )
        raise_for_problem(response)
        if response.status_code == 204:
            return None
        return Claim.model_validate_json(response.content)

    async def signals(self, worker_id: str, task_ids: Sequence[str], wait_s: float) -> Signals:
        """Long poll for cancel requests of the running ``task_ids`` (also a heartbeat)."""
        response = await self._http.post(
            f"/api/workers/{worker_id}/signals",
            params={"wait": wait_s},
            json=SignalsRequest(task_ids=list(task_ids)).model_dump(),
            timeout=wait_s + self._timeout_s,
        )
        raise_for_problem(response)
        return Signals.model_validate_json(response.content)

    async def upload(self, worker_id: str, task_id: str, body: bytes) -> UploadResult:
        """Post an already-encoded :class:`server_client.models.EventBatch`."""
        response = await self._http.post(
            f"/api/workers/{worker_id}/tasks/{task_id}/events",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        raise_for_problem(response)
        return UploadResult.model_validate_json(response.content)

    async def finish(self, worker_id: str, task_id: str, body: FinishRequest) -> Task:
        """Report the task's end (idempotent)."""
        response = await self._http.post(
            f"/api/workers/{worker_id}/tasks/{task_id}/finish",
            json=body.model_dump(mode="json"),
        )
        raise_for_problem(response)
        return Task.model_validate_json(response.content)
