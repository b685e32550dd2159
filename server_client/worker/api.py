"""Provides ``WorkerApi``: the worker's side of the worker protocol.

Every call is outbound from the worker (docs/design.md) and a POST, over httpx, except the
event uploads, which go over one WebSocket to the server where it can be opened (one message
each way per upload instead of a request: a tenth of the client's CPU per upload, measured in
benchmarks/) and as POSTs where it cannot. Network errors surface as ``httpx.TransportError``
(:class:`SocketLost` for the socket); refusals as :class:`server_client.errors.ApiError` (409
carries ``problem.next_index`` for uploads and finishes), over the socket too.

Connections: the long polls (claim, signals) hold their own; uploads, finishes and connects
wait for one of ``max_requests`` slots in a FIFO of ours, and an upload's body is built once
its slot is free, so that events arriving meanwhile join it. Idle connections are kept
alive, so a busy worker opens no new ones. (httpx's pool walks every pooled connection for
each request and every queued request for each change, so it is kept small and never
queues.)
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
from collections.abc import Callable, Sequence
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from server_client.errors import ApiError, raise_for_problem
from server_client.models import (
    Acks,
    Approval,
    ApprovalRequest,
    Claim,
    DiffUpload,
    FinishRequest,
    Problem,
    Signals,
    SignalsRequest,
    Task,
    UploadResult,
    Worker,
    WorkerHello,
    WorkerUploadResult,
    WorkspaceOrders,
    WorkspaceReport,
    WorkspaceSync,
)

#: Default number of uploads, finishes and connects in flight at once.
DEFAULT_MAX_REQUESTS = 16


_JSON = {"Content-Type": "application/json"}

log = logging.getLogger(__name__)

#: After the upload socket could not be opened (or gave no answer before it broke), uploads
#: go as requests for this long before it is tried again (s); not when no connection could
#: be made or a proxy answered 502-504 (the server is restarting: the socket is tried again
#: at the next upload).
SOCKET_RETRY_S = 60.0

#: RFC 6455's close code "message too big": the server's limit cut off an upload.
_TOO_BIG = 1009


def _server_away(exc: BaseException) -> bool:
    """Whether opening the socket failed because the server cannot be reached now (no
    connection could be made: refused, reset, unreachable; a proxy's 502, 503 or 504), as
    while it restarts, when a request would fail as well, rather than because the socket
    cannot work where a request does (no WebSocket support on the way, TLS, a path that
    hangs: TimeoutError and ssl.SSLError are OSErrors too)."""
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code in (502, 503, 504)
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError | ssl.SSLError)


class SocketLost(httpx.TransportError):
    """The upload socket broke, or its answer did not come in time, after an upload was sent:
    the server may have stored it (uploads are idempotent by ``first_index``: send it again).
    """


class UploadSocket:
    """One worker's upload WebSocket (the server's ``upload_socket`` route): one upload
    message out, its answer in, one at a time (the worker's upload stream has one upload in
    flight).

    Args:
        url: The socket's ``ws://`` or ``wss://`` URL.
        token: The bearer token for the handshake (never logged).
        timeout_s: Longest wait (s) to open the socket, and for an upload's answer.
        ssl_context: The TLS settings of a ``wss://`` URL: the worker's HTTP client's, so
            both trust the same authorities (None: Python's defaults).
    """

    def __init__(
        self, url: str, token: str, timeout_s: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._url = url
        self._ssl = ssl_context if url.startswith("wss://") else None
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout_s = timeout_s
        self._conn: ClientConnection | None = None
        self._answered = False
        self._unavailable_until = float("-inf")

    async def upload(self, data: bytes) -> WorkerUploadResult | None:
        """Send one encoded :class:`~server_client.models.WorkerUpload` and return its answer;
        None when the socket cannot be opened now (send the upload as a request instead).

        Raises:
            ApiError: the server refused the upload (its problem body), or cut it off as too
                large (413).
            SocketLost: the socket broke or timed out once the upload was on its way.
        """
        now = asyncio.get_running_loop().time()
        if self._conn is None:
            if now < self._unavailable_until:
                return None
            try:
                async with asyncio.timeout(self._timeout_s):
                    self._conn = await connect(
                        self._url,
                        ssl=self._ssl,
                        additional_headers=self._headers,
                        open_timeout=None,
                        max_size=None,
                        compression=None,
                    )
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if _server_away(exc):
                    # Down or restarting: a request would fail as well, and the socket is
                    # wanted again as soon as the server is back.
                    log.debug("the upload socket could not be opened: %s", exc)
                    return None
                self._unavailable(now, f"could not be opened ({type(exc).__name__}: {exc})")
                return None
            self._answered = False
        conn = self._conn
        try:
            async with asyncio.timeout(self._timeout_s):
                await conn.send(data.decode())
                answer = await conn.recv(decode=False)
        except ConnectionClosed as exc:
            self._lost(now)
            if exc.rcvd is not None and exc.rcvd.code == _TOO_BIG:
                raise ApiError(
                    Problem(title="Content Too Large", status=413, detail=exc.rcvd.reason or None)
                ) from None
            raise SocketLost(f"the upload socket closed ({exc})") from None
        except (OSError, TimeoutError) as exc:
            self._lost(now)
            conn.transport.abort()  # no closing handshake on a socket that failed
            raise SocketLost(f"the upload socket failed ({type(exc).__name__})") from None
        self._answered = True
        parsed = json.loads(answer)
        if isinstance(parsed, dict) and "tasks" in parsed:
            return WorkerUploadResult.model_validate(parsed)
        problem = Problem.model_validate(parsed)
        if problem.status == 401:  # the server closes the socket after a refused token
            self._conn = None
            await conn.close()
        raise ApiError(problem)

    def _lost(self, now: float) -> None:
        self._conn = None
        if not self._answered:  # opened, but it never carried an upload: requests for a while
            self._unavailable(now, "gave no answer")

    def _unavailable(self, now: float, why: str) -> None:
        self._unavailable_until = now + SOCKET_RETRY_S
        log.info(
            "the upload socket %s; uploading by requests, trying it again in %.0f s",
            why,
            SOCKET_RETRY_S,
        )

    async def aclose(self) -> None:
        """Close the socket (if open)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


@functools.lru_cache(maxsize=4096)
def _task_path(worker_id: str, task_id: str, action: str) -> str:
    """``/api/workers/<worker>/tasks/<task>/<action>`` with both ids percent-encoded (cached:
    a task uploads many times)."""
    return f"/api/workers/{quote(worker_id, safe='')}/tasks/{quote(task_id, safe='')}/{action}"


class WorkerApi:
    """HTTP calls of one worker.

    Args:
        base_url: Server URL.
        token: The owner's token (sent as a bearer token; never logged).
        timeout_s: Timeout of ordinary calls (s); long polls add their wait to it. An upload's
            timeout starts once it has a slot.
        max_requests: Uploads, finishes and connects in flight at once (the others wait, in
            order); long polls are not counted.
        upload_socket: Send :meth:`upload_all`'s uploads over an :class:`UploadSocket` where
            it opens (False: as requests only).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 15.0,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        upload_socket: bool = True,
    ) -> None:
        self._timeout_s = timeout_s
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._upload_socket = upload_socket
        self._sockets: dict[str, UploadSocket] = {}
        self._slots = asyncio.Semaphore(max(1, max_requests))
        # One TLS context for the requests and the upload socket: httpx's own (certifi's
        # authorities, or SSL_CERT_FILE / SSL_CERT_DIR), where the socket alone would take
        # Python's (the system's store), and fall back to requests where the two differ.
        self._ssl = httpx.create_ssl_context()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            verify=self._ssl,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            # Long polls hold a connection each, the other calls at most max_requests.
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=max(1, max_requests) + 2
            ),
        )

    async def aclose(self) -> None:
        """Close every connection."""
        for sock in self._sockets.values():
            await sock.aclose()
        await self._http.aclose()

    async def connect(self, hello: WorkerHello) -> Worker:
        """Register this worker; returns its record (with the id used by every other call)."""
        async with self._slots:
            _, content = await self._post("/api/workers/connect", hello.model_dump_json().encode())
        return Worker.model_validate_json(content)

    async def claim(self, worker_id: str, wait_s: float) -> Claim | None:
        """Long poll for a task; None when nothing was queued within ``wait_s``."""
        status, content = await self._post(
            f"/api/workers/{quote(worker_id, safe='')}/claim", b"", wait_s=wait_s
        )
        if status == 204:
            return None
        return Claim.model_validate_json(content)

    async def signals(self, worker_id: str, task_ids: Sequence[str], wait_s: float) -> Signals:
        """Long poll for cancel requests of the running ``task_ids`` (also a heartbeat)."""
        body = SignalsRequest(task_ids=list(task_ids)).model_dump_json().encode()
        _, content = await self._post(
            f"/api/workers/{quote(worker_id, safe='')}/signals", body, wait_s=wait_s
        )
        return Signals.model_validate_json(content)

    async def upload(
        self, worker_id: str, task_id: str, body: bytes | Callable[[], bytes]
    ) -> UploadResult:
        """Post an already-encoded :class:`server_client.models.EventBatch`.

        Args:
            worker_id: This worker's id.
            task_id: The task.
            body: The encoded batch, or a function that encodes it, called once this request
                has a slot (so that it takes the events that arrived while it waited).
        """
        path = _task_path(worker_id, task_id, "events")
        async with self._slots:
            _, content = await self._post(path, body() if callable(body) else body)
        return UploadResult.model_validate_json(content)

    async def upload_all(self, worker_id: str, body: Callable[[], bytes]) -> WorkerUploadResult:
        """Post an encoded :class:`server_client.models.WorkerUpload`: the new events of every
        task the worker runs (and the ends of their leases).

        Args:
            worker_id: This worker's id.
            body: A function that encodes the request, called once it has a slot (so that it
                takes the events that arrived while it waited).
        """
        path = f"/api/workers/{quote(worker_id, safe='')}/events"
        async with self._slots:
            data = body()
            if self._upload_socket:
                answer = await self._socket(worker_id, path).upload(data)
                if answer is not None:
                    return answer
            _, content = await self._post(path, data)
        return WorkerUploadResult.model_validate_json(content)

    def _socket(self, worker_id: str, path: str) -> UploadSocket:
        sock = self._sockets.get(worker_id)
        if sock is None:
            scheme, _, rest = self._base_url.partition("://")
            url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}/socket"
            sock = self._sockets[worker_id] = UploadSocket(
                url, self._token, self._timeout_s, self._ssl
            )
        return sock

    async def finish(self, worker_id: str, task_id: str, body: FinishRequest) -> Task:
        """Report the task's end (idempotent)."""
        path = _task_path(worker_id, task_id, "finish")
        async with self._slots:
            _, content = await self._post(path, body.model_dump_json().encode())
        return Task.model_validate_json(content)

    async def create_approval(
        self, worker_id: str, task_id: str, body: ApprovalRequest
    ) -> Approval:
        """Report an approval codex asks for (idempotent by ``item_id``); returns the stored
        approval. 409: the lease is lost."""
        path = _task_path(worker_id, task_id, "approvals")
        async with self._slots:
            _, content = await self._post(path, body.model_dump_json().encode())
        return Approval.model_validate_json(content)

    async def acks(self, worker_id: str, body: Acks) -> None:
        """Acknowledge replies handed to codex and approval answers passed on to it
        (idempotent), so that the signals stop repeating them."""
        async with self._slots:
            await self._post(
                f"/api/workers/{quote(worker_id, safe='')}/acks", body.model_dump_json().encode()
            )

    async def report_workspace(self, worker_id: str, task_id: str, body: WorkspaceReport) -> Task:
        """Report the workspace made (or reused) for a task held under ``body.lease_id``.
        409: the lease is lost; 400: the task has no repository or another base commit."""
        path = _task_path(worker_id, task_id, "workspace")
        async with self._slots:
            _, content = await self._post(path, body.model_dump_json().encode(), method="PUT")
        return Task.model_validate_json(content)

    async def upload_diff(self, worker_id: str, task_id: str, body: DiffUpload) -> None:
        """Upload a task's whole diff (the server keeps the latest). 409: the lease is lost or
        the task ended."""
        path = _task_path(worker_id, task_id, "diff")
        async with self._slots:
            await self._post(path, body.model_dump_json().encode(), method="PUT")

    async def sync_workspaces(self, worker_id: str, body: WorkspaceSync) -> WorkspaceOrders:
        """Report every workspace this worker holds; the answer names those to remove."""
        path = f"/api/workers/{quote(worker_id, safe='')}/workspaces"
        async with self._slots:
            _, content = await self._post(path, body.model_dump_json().encode())
        return WorkspaceOrders.model_validate_json(content)

    async def _post(
        self, path: str, body: bytes, *, wait_s: float | None = None, method: str = "POST"
    ) -> tuple[int, bytes]:
        """POST (or ``method``) a JSON ``body``; ``wait_s`` makes it a long poll (``?wait=``,
        longer timeout).

        Returns:
            The status (< 400) and the body.

        Raises:
            ApiError: a 4xx or 5xx answer.
            httpx.TransportError: no answer.
        """
        timeout_s = self._timeout_s + (wait_s or 0.0)
        response = await self._http.request(
            method,
            path,
            content=body,
            params={"wait": wait_s} if wait_s is not None else None,
            headers=_JSON,
            timeout=timeout_s,
        )
        raise_for_problem(response)
        return response.status_code, response.content
