"""Provides the async Python SDK for the codex-tui HTTP + SSE contract.

Exceptions::

    CodexTuiError
     └── ApiError            the server answered with a 4xx/5xx problem body
          └── NotFoundError  404: no such task (or not yours)

The exceptions are defined in :mod:`server_client.errors` and importable from here. Network
failures surface as :mod:`httpx` exceptions (``httpx.TransportError`` and its subclasses),
except inside :meth:`CodexTuiClient.stream_events`, which retries them (and 5xx answers) by
the policy of :mod:`server_client.retry`.

Example::

    async with CodexTuiClient("http://127.0.0.1:8765", token) as client:
        task = await client.create_task("add a test for parse()", workdir="/srv/app")
        async for event in client.stream_events(task.id):
            print(event.seq, event.kind, event.data)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, Self

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from server_client.errors import ApiError as ApiError
from server_client.errors import CodexTuiError as CodexTuiError
from server_client.errors import NotFoundError as NotFoundError
from server_client.errors import problem_from_response as problem_from_response
from server_client.errors import raise_for_problem as raise_for_problem
from server_client.models import (
    Approval,
    ApprovalAnswer,
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalState,
    Event,
    Health,
    Me,
    PairingCode,
    PairRequest,
    PairResult,
    Reply,
    ReplyCreate,
    Runtime,
    Sandbox,
    Task,
    TaskCreate,
    TaskDiff,
    TaskPage,
    TaskStatus,
    UserInputAnswers,
    Worker,
)
from server_client.retry import NETWORK_ERRORS, STREAM, Backoff, is_retryable

#: The server sends an SSE heartbeat at least this often (s); docs/design.md.
HEARTBEAT_S = 15.0
#: How many heartbeats in a row a stream may miss before it counts as dead.
MISSED_HEARTBEATS = 3
#: Read timeout of an event stream (s): three missed heartbeats plus a 5 s margin, 50 s.
#:
#: A live stream is never silent for longer than one heartbeat interval, so 45 s without a
#: byte means three heartbeats in a row did not arrive: the connection is dead (a half-open
#: TCP connection after a network change, a hung server or proxy) and
#: :meth:`CodexTuiClient.stream_events` reconnects with ``Last-Event-ID`` (docs/reliability.md
#: E3). One or two late heartbeats on a slow link (SSH over a mobile connection) do not drop
#: a healthy stream; the margin absorbs latency and scheduling delay around the third.
STREAM_READ_TIMEOUT_S = MISSED_HEARTBEATS * HEARTBEAT_S + 5.0


def backoff_delays(base_s: float = 0.25, cap_s: float = 10.0) -> Iterable[float]:
    """Yield retry delays (s): exponential with full jitter, capped at ``cap_s``.

    The n-th delay (n from 0) is drawn from ``[0, min(cap_s, base_s·2ⁿ)]``; this is
    :meth:`server_client.retry.Backoff.delays`, kept here as part of the SDK.
    """
    return Backoff(base_s, cap_s).delays()


async def redeem_pairing_code(
    base_url: str,
    code: str,
    *,
    name: str,
    hostname: str = "",
    labels: Sequence[str] = (),
    transport: httpx.AsyncBaseTransport | None = None,
) -> PairResult:
    """Exchange a pairing code for a worker token (no bearer token needed).

    Raises:
        ApiError: 400 when the code is unknown, used or expired.
    """
    body = PairRequest(code=code, name=name, hostname=hostname, labels=list(labels))
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), transport=transport) as http:
        response = await http.post("/api/pair", json=body.model_dump())
    raise_for_problem(response)
    return PairResult.model_validate_json(response.content)


def turn_ended(event: Event) -> bool:
    """True for the status event after which a client waiting for a task's turn stops: a
    terminal status, or ``idle`` (a conversation's turn ended; it waits for a reply)."""
    return event.is_terminal or event.status is TaskStatus.IDLE


#: Idle keep-alive connections the SDK keeps for reuse.
MAX_IDLE_CONNECTIONS = 20


class CodexTuiClient:
    """Async client for one codex-tui server, authenticated with a user token.

    Args:
        base_url: The server's address, e.g. ``http://127.0.0.1:8765``.
        token: A user token (sent as ``Authorization: Bearer``).
        timeout: Timeout of ordinary requests (s).
        transport: An httpx transport, for tests.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._transport = transport
        self._http_client: httpx.AsyncClient | None = None

    @property
    def _http(self) -> httpx.AsyncClient:
        """The connection pool, made on first use: making it loads httpx's transport and the
        CA bundle (tens of ms), which a TUI would otherwise pay before its first frame."""
        if self._http_client is None:
            self._http_client = httpx.AsyncClient(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self._timeout,
                transport=self._transport,
                # Each open event stream holds a connection: no cap on connections (httpx's
                # default of 100 would stall the 101st stream), a bounded idle pool.
                limits=httpx.Limits(
                    max_connections=None, max_keepalive_connections=MAX_IDLE_CONNECTIONS
                ),
            )
        return self._http_client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await self._http.request(method, url, **kwargs)
        raise_for_problem(response)
        return response

    async def health(self) -> Health:
        """``GET /healthz`` (no token needed). Raises httpx errors when unreachable."""
        return Health.model_validate_json((await self._request("GET", "/healthz")).content)

    async def me(self) -> Me:
        """``GET /api/me``: whom the token belongs to. Raises ApiError 401 for a bad token."""
        return Me.model_validate_json((await self._request("GET", "/api/me")).content)

    async def create_task(
        self,
        prompt: str,
        *,
        workdir: str | None = None,
        model: str | None = None,
        sandbox: Sandbox | str = Sandbox.WORKSPACE_WRITE,
        worker: str | None = None,
        labels: Sequence[str] = (),
        approval_policy: ApprovalPolicy | str = ApprovalPolicy.NEVER,
        runtime: Runtime | str | None = None,
        repo: str | None = None,
        ref: str | None = None,
    ) -> Task:
        """Submit a prompt; returns the queued task.

        ``repo`` (an absolute path of a git repository on the worker, or a URL the server
        allows) runs the task in a workspace of its own, a checkout at ``ref`` (default: the
        repository's HEAD), instead of a ``workdir``; :meth:`get_diff` then shows what it
        changed.

        ``worker`` (a worker name) and ``labels`` route it: it waits queued until a worker of
        the caller with that name and all those labels is online. ``approval_policy`` is
        codex's ``-a`` (``untrusted``, ``on-request`` or ``never``: codex asks before it acts,
        see :meth:`list_approvals`); ``runtime`` (``app-server``: a conversation that takes
        replies; ``exec``: one run) defaults to the worker's.

        Raises:
            ValueError: an unknown sandbox, approval policy or runtime.
            ApiError: 400 for a workdir outside the allowed roots, an unknown worker, an
                approval policy with the exec runtime or a repository URL the server's
                policy refuses (the detail names the setting); 403 for a sandbox, policy or
                model the server does not allow; 422 for an invalid body.
        """
        body = TaskCreate(
            prompt=prompt,
            workdir=workdir,
            model=model,
            sandbox=Sandbox(sandbox),
            worker=worker,
            labels=list(labels),
            approval_policy=ApprovalPolicy(approval_policy),
            runtime=Runtime(runtime) if runtime is not None else None,
            repo=repo,
            ref=ref,
        )
        response = await self._request(
            "POST", "/api/tasks", json=body.model_dump(mode="json", exclude_none=True)
        )
        return Task.model_validate_json(response.content)

    async def list_tasks(
        self,
        *,
        status: Iterable[TaskStatus | str] = (),
        q: str | None = None,
        worker: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> TaskPage:
        """One page of the caller's tasks, newest first.

        The filters combine with AND; pass the same ones again with ``cursor`` (the previous
        page's ``next_cursor``) for the next, older page.

        Args:
            status: Only tasks in one of these states (empty: any).
            q: Only tasks whose prompt contains this text, ignoring case; ``%`` and ``_`` are
                literal (at most 200 characters). None or empty: any prompt.
            worker: Only tasks run by, or routed to, the worker of this name.
            cursor: The previous page's ``next_cursor``.
            limit: Page size, 1..200 tasks.

        Raises:
            ValueError: an unknown status.
            ApiError: 400 for a malformed cursor, 422 for a ``q`` over 200 characters or
                another out-of-range value.
        """
        params: list[tuple[str, str | int]] = [("limit", limit)]
        params += [("status", str(TaskStatus(s))) for s in status]
        if q:
            params.append(("q", q))
        if worker is not None:
            params.append(("worker", worker))
        if cursor:
            params.append(("cursor", cursor))
        response = await self._request("GET", "/api/tasks", params=params)
        return TaskPage.model_validate_json(response.content)

    async def get_task(self, task_id: str) -> Task:
        """One task. Raises NotFoundError when it does not exist or is not the caller's."""
        response = await self._request("GET", f"/api/tasks/{task_id}")
        return Task.model_validate_json(response.content)

    async def cancel_task(self, task_id: str) -> Task:
        """Request a cancel (idempotent); a queued task ends ``canceled`` at once."""
        response = await self._request("POST", f"/api/tasks/{task_id}/cancel")
        return Task.model_validate_json(response.content)

    async def reply(self, task_id: str, prompt: str) -> Reply:
        """Send a follow-up prompt to a conversation: it steers a running turn, or starts
        the next turn of an idle task (on the worker that holds its thread).

        Raises:
            NotFoundError: no such task (or not the caller's).
            ApiError: 409 when the task ended or runs on the exec runtime; 413 for a prompt
                over the server's limit; 422 for a blank prompt.
        """
        body = ReplyCreate(prompt=prompt)
        response = await self._request(
            "POST", f"/api/tasks/{task_id}/replies", json=body.model_dump(mode="json")
        )
        return Reply.model_validate_json(response.content)

    async def interrupt(self, task_id: str) -> Task:
        """Interrupt the task's running turn (idempotent); the task becomes ``idle`` and
        takes a reply (:meth:`cancel_task` ends it instead).

        Raises:
            NotFoundError: no such task (or not the caller's).
            ApiError: 409 unless the task is running or waiting.
        """
        response = await self._request("POST", f"/api/tasks/{task_id}/interrupt")
        return Task.model_validate_json(response.content)

    async def list_approvals(
        self, *, state: ApprovalState | str | None = None, task_id: str | None = None
    ) -> list[Approval]:
        """The caller's approvals, newest first (at most 200): only those in ``state``
        (``pending``, ``answered``, ``withdrawn``) or of ``task_id`` when given.

        Raises:
            ValueError: an unknown state.
        """
        params: dict[str, str] = {}
        if state is not None:
            params["state"] = ApprovalState(state).value
        if task_id is not None:
            params["task_id"] = task_id
        response = await self._request("GET", "/api/approvals", params=params)
        return [Approval.model_validate(item) for item in response.json()]

    async def get_approval(self, approval_id: str) -> Approval:
        """One approval. Raises NotFoundError when it does not exist or is not the caller's."""
        response = await self._request("GET", f"/api/approvals/{approval_id}")
        return Approval.model_validate_json(response.content)

    async def answer_approval(
        self,
        approval_id: str,
        decision: ApprovalDecision | str,
        answers: UserInputAnswers | None = None,
    ) -> Approval:
        """Answer a pending approval, once: ``accept``, ``acceptForSession`` (until the turn
        ends), ``decline`` (the turn goes on) or ``cancel`` (the turn is interrupted); a
        ``user_input`` approval takes ``accept`` with ``answers`` (question id → answers).

        Raises:
            ValueError: an unknown decision.
            NotFoundError: no such approval (or not the caller's).
            ApiError: 409 when it was answered already (the detail names the first answer)
                or withdrawn; 400 for a decision codex did not offer, or missing answers.
        """
        body = ApprovalAnswer(decision=ApprovalDecision(decision), answers=answers)
        response = await self._request(
            "POST",
            f"/api/approvals/{approval_id}",
            json=body.model_dump(mode="json", exclude_none=True),
        )
        return Approval.model_validate_json(response.content)

    async def get_diff(self, task_id: str) -> TaskDiff:
        """The latest diff of a task's workspace: changed files with their line counts.

        Raises:
            NotFoundError: no such task, or it has no diff yet (no repository, or its worker
                has not reported one).
        """
        response = await self._request("GET", f"/api/tasks/{task_id}/diff")
        return TaskDiff.model_validate_json(response.content)

    async def get_patch(self, task_id: str) -> bytes:
        """The latest diff of a task's workspace as a patch (``git diff --binary`` bytes,
        which ``git apply`` takes), exactly as the worker computed it.

        Raises:
            NotFoundError: no such task, or no diff yet.
            ApiError: 409 when the diff was too large to keep (only its counts were).
        """
        response = await self._request("GET", f"/api/tasks/{task_id}/patch")
        return response.content

    async def list_workspaces(self) -> list[Task]:
        """The caller's tasks whose workspaces are on a worker (``present`` or ``removing``),
        newest first, with their disk use (``workspace_bytes``)."""
        response = await self._request("GET", "/api/workspaces")
        return [Task.model_validate(item) for item in response.json()]

    async def remove_workspace(self, task_id: str) -> Task:
        """Ask the worker to delete a task's workspace (idempotent): the task's
        ``workspace_state`` is ``removing`` until the worker has done it, then ``removed``.

        Raises:
            NotFoundError: no such task, or it has no workspace.
            ApiError: 409 while the task is active (cancel it first).
        """
        response = await self._request("DELETE", f"/api/tasks/{task_id}/workspace")
        return Task.model_validate_json(response.content)

    async def list_workers(self) -> list[Worker]:
        """The caller's workers, with online state, labels and running tasks."""
        response = await self._request("GET", "/api/workers")
        return [Worker.model_validate(item) for item in response.json()]

    async def revoke_worker(self, worker_id: str) -> None:
        """Revoke a worker: its token stops working and its running tasks end ``lost``."""
        await self._request("DELETE", f"/api/workers/{worker_id}")

    async def create_pairing_code(self) -> PairingCode:
        """A one-time pairing code (10 minutes) and the command to run on the new machine."""
        response = await self._request("POST", "/api/pairing-codes")
        return PairingCode.model_validate_json(response.content)

    async def get_events(
        self,
        task_id: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        """One page of stored events in ascending seq order (no streaming).

        Without ``before``: the first ``limit`` events with ``seq > after`` (paging
        forwards: pass the last seq as the next ``after``). With ``before``: the last
        ``limit`` events with ``after < seq < before`` (paging backwards: pass the first seq
        as the next ``before``; an empty list means the start was reached).

        Args:
            task_id: The task.
            after: Only events with a larger seq (≥ 0).
            before: Only events with a smaller seq (≥ 1), nearest first when cut by ``limit``.
            limit: Page size, 1..5000 events.

        Raises:
            NotFoundError: no such task (or not the caller's).
            ApiError: 422 for an out-of-range ``after``, ``before`` or ``limit``.
        """
        params: dict[str, int] = {"after": after, "limit": limit}
        if before is not None:
            params["before"] = before
        response = await self._request(
            "GET",
            f"/api/tasks/{task_id}/events",
            params=params,
            headers={"Accept": "application/json"},
        )
        return [Event.model_validate(item) for item in response.json()]

    async def iter_event_pages(
        self,
        task_id: str,
        *,
        after: int = 0,
        before: int | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[list[Event]]:
        """The stored events page by page (no streaming), as :meth:`get_events` pages them.

        Without ``before``: forwards, the events with ``seq > after``, oldest page first.
        With ``before``: backwards, the events with ``after < seq < before``, newest page
        first. Each page is in ascending seq order and not empty; the pages end after the
        first one shorter than ``page_size``. A caller may stop early (``break``): no page
        is fetched before it is asked for.

        Args:
            task_id: The task.
            after: Only events with a larger seq (≥ 0).
            before: Only events with a smaller seq (≥ 1), paging backwards.
            page_size: Events per request, 1..5000.

        Raises:
            NotFoundError: no such task (or not the caller's).
            ApiError: 422 for an out-of-range ``after``, ``before`` or ``page_size``.
        """
        while True:
            page = await self.get_events(task_id, after=after, before=before, limit=page_size)
            if page:
                yield page
            if len(page) < page_size:
                return
            if before is None:
                after = page[-1].seq
            else:
                before = page[0].seq

    async def iter_events(
        self, task_id: str, *, after: int = 0, page_size: int = 1000
    ) -> AsyncIterator[Event]:
        """Every stored event with ``seq > after`` in seq order, fetched ``page_size`` at a
        time (no streaming: it ends with the last stored event; see :meth:`stream_events`
        to follow a running task).

        Raises:
            NotFoundError: no such task (or not the caller's).
            ApiError: 422 for an out-of-range ``after`` or ``page_size``.
        """
        async for page in self.iter_event_pages(task_id, after=after, page_size=page_size):
            for event in page:
                yield event

    async def rerun_task(self, task_id: str) -> Task:
        """Submit a task again: a new queued task with the same prompt, workdir, model,
        sandbox and routing (target worker and labels) as ``task_id``.

        The old task is left as it is (a running one keeps running).

        Raises:
            NotFoundError: no such task (or not the caller's).
            ApiError: 400 when the workdir is no longer allowed or the target worker is gone.
        """
        task = await self.get_task(task_id)
        body = TaskCreate.from_task(task)
        response = await self._request(
            "POST", "/api/tasks", json=body.model_dump(mode="json", exclude_none=True)
        )
        return Task.model_validate_json(response.content)

    async def stream_events(
        self,
        task_id: str,
        *,
        after: int = 0,
        read_timeout: float = STREAM_READ_TIMEOUT_S,
        max_attempts: int | None = None,
    ) -> AsyncIterator[Event]:
        """Yield the task's events with ``seq > after``, replayed then live, each exactly once.

        Reconnects after network errors and 5xx answers (and after the server closes the
        stream early) with ``Last-Event-ID`` and capped, jittered exponential backoff
        (:data:`server_client.retry.STREAM`); stops after the terminal status event. A
        conversation's ``idle`` status event (its turn ended) does not end the stream: the
        task takes replies; a caller that waits for the turn stops there itself
        (:func:`turn_ended`).
        ``max_attempts`` bounds consecutive failed connection attempts (None: retry forever).

        Raises:
            ApiError: the server refused the stream (a 4xx: 401, 404, 429, ...); not retried.
            httpx.TransportError: after ``max_attempts`` consecutive failures.
        """
        last_seq = after

        def target() -> tuple[str, dict[str, Any], dict[str, str]]:
            return f"/api/tasks/{task_id}/events", {}, {"Last-Event-ID": str(last_seq)}

        messages = self._resuming_sse(target, read_timeout, max_attempts)
        async with contextlib.aclosing(messages):
            async for sse in messages:
                if not sse.data:
                    continue
                event = Event.model_validate_json(sse.data)
                if event.seq <= last_seq:
                    continue
                last_seq = event.seq
                yield event
                if event.is_terminal:
                    return

    async def follow_tasks(
        self,
        positions: Mapping[str, int],
        *,
        read_timeout: float = STREAM_READ_TIMEOUT_S,
        max_attempts: int | None = None,
    ) -> AsyncIterator[Event]:
        """Yield the events of several tasks through one stream (``GET /api/events``): for
        each task id of ``positions``, its events with a seq above the one given, replayed
        then live, each exactly once; ``Event.task_id`` says whose. Events of one task come in
        seq order; tasks interleave as their events arrive.

        Reconnects as :meth:`stream_events` does, with every task's last seq; stops once every
        task has sent its terminal status event (a task already ended, and followed past its
        end, ends at once).

        Raises:
            ApiError: the server refused the stream (e.g. 404 for a task the caller does not
                have, 429 over ``max_streams``); not retried.
            httpx.TransportError: after ``max_attempts`` consecutive failures.
        """
        last = dict(positions)
        ended: set[str] = set()

        def target() -> tuple[str, dict[str, Any], dict[str, str]]:
            followed = [f"{t}:{seq}" for t, seq in last.items() if t not in ended]
            return "/api/events", {"task": followed}, {}

        if not last:
            return
        messages = self._resuming_sse(target, read_timeout, max_attempts)
        async with contextlib.aclosing(messages):
            async for sse in messages:
                if sse.event == "end":
                    return
                if not sse.data:
                    continue
                event = Event.model_validate_json(sse.data)
                task_id = event.task_id
                if task_id not in last or event.seq <= last[task_id]:
                    continue
                last[task_id] = event.seq
                yield event
                if event.is_terminal:
                    ended.add(task_id)
                    if len(ended) == len(last):
                        return

    async def _resuming_sse(
        self,
        target: Callable[[], tuple[str, dict[str, Any], dict[str, str]]],
        read_timeout: float,
        max_attempts: int | None,
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """The messages of an SSE stream, connecting again after network errors, 5xx answers
        and early ends with capped, jittered backoff (:data:`server_client.retry.STREAM`);
        ``target()`` gives the path, query and headers of each connection (they say where to
        resume). The caller stops when it has what it wants.

        Raises:
            ApiError: a refusal that is not retried (4xx).
            httpx.TransportError: after ``max_attempts`` consecutive failures.
        """
        delays: Iterator[float] | None = None  # the waits of the current run of failures
        failures = 0
        timeout = httpx.Timeout(10.0, read=read_timeout)
        while True:
            path, params, headers = target()
            try:
                async with aconnect_sse(
                    self._http, "GET", path, params=params, headers=headers, timeout=timeout
                ) as source:
                    response = source.response
                    if response.is_error:
                        await response.aread()
                        error = problem_from_response(response)
                        if not is_retryable(error):
                            raise error
                        # A passing refusal (5xx) counts as a lost connection.
                        raise httpx.RemoteProtocolError(str(error))
                    async for sse in source.aiter_sse():
                        failures, delays = 0, None
                        yield sse
            except NETWORK_ERRORS:
                failures += 1
                if max_attempts is not None and failures >= max_attempts:
                    raise
            if delays is None:
                delays = STREAM.delays()
            await asyncio.sleep(next(delays))
