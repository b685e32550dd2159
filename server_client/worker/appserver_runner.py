"""Provides AppServerRunner: one ``codex app-server`` process for one turn of a conversation task.

The worker runs a conversation (the ``app-server`` runtime) one lease at a time: for each claim
it starts ``codex app-server`` (stdio JSON-RPC; server_client/codex/appserver.py), loads the
thread (``thread/start`` the first time, ``thread/resume`` when the task already has a
``thread_id``: codex keeps it under this machine's ``CODEX_HOME``), starts one turn with the
prompt texts, streams codex's notifications as ``codex`` events, and stops app-server when the
turn ends. The outcome is ``IDLE`` then (the task waits for a reply), whatever the turn's end:
completed, failed (its message as ``error``) or interrupted. Facts about codex: docs/codex-facts.md.

Process handling is the exec runner's (server_client/worker/runner.py): the native binary
without a shell, an allow-listed environment carrying the task marker, its own session, SIGKILL
if the worker dies, and a sweep of every process codex started once it exited. App-server's stdin
is a pipe: closing it makes app-server exit within moments, aborting the turn.

While the turn runs:

- :meth:`steer` sends a reply as ``turn/start`` on the live thread, which codex adds to the
  running turn; it returns once codex took it (then the caller acknowledges the reply).
- An approval request of codex's (``item/commandExecution/requestApproval``,
  ``item/fileChange/requestApproval``, ``item/tool/requestUserInput``) is passed to
  ``on_approval`` as the fields of an :class:`~server_client.models.ApprovalRequest` (the
  caller posts it to the server) and left pending: codex has no timeout. :meth:`answer` sends
  the owner's answer as the JSON-RPC response. Other server requests get a JSON-RPC error.
  Since app-server lives for one turn, an ``acceptForSession`` lasts until the turn ends.
- :meth:`interrupt`: pending approvals are answered ``cancel``, ``turn/interrupt`` is sent,
  every process app-server started is killed (codex's interrupt leaves commands running), and
  the run ends ``IDLE`` once codex reports the turn interrupted (or after ``grace_s``).
- :meth:`cancel`: app-server's stdin is closed (it aborts the turn and exits; SIGKILL after
  ``grace_s``) and every process it started is killed; the run ends ``CANCELED``.
- :meth:`stop` (the worker stops): like cancel, but a task with a thread ends ``IDLE`` with an
  ``error`` saying so (a reply continues it), one without ends ``CANCELED``.

If app-server exits before the turn ended, the run ends ``IDLE`` with an ``error`` when a thread
exists (the conversation can go on), else ``FAILED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from server_client.codex.appserver import (
    NOISY,
    ClientInfo,
    CommandApprovalParams,
    EventTranslator,
    FileChangeApprovalParams,
    InitializeCapabilities,
    InitializeParams,
    Notification,
    Response,
    ServerRequest,
    TextInput,
    ThreadResumeParams,
    ThreadStartParams,
    TurnInterruptParams,
    TurnStartParams,
    UserInputParams,
    encode_request,
    encode_response,
    parse_message,
)
from server_client.models import (
    ApprovalDecision,
    ApprovalKind,
    ApprovalPolicy,
    EventIn,
    EventKind,
    Sandbox,
    TaskStatus,
    utcnow,
)
from server_client.text import truncate
from server_client.worker.procs import (
    ACTIVE_CODEX_PIDS,
    ProcessWatch,
    WatchedRun,
    shared_watch,
    spawning,
)
from server_client.worker.runner import (
    DEFAULT_MAX_LINE_BYTES,
    MAX_ERROR_CHARS,
    ExitAwareProtocol,
    RunOutcome,
    die_with_parent,
    preflight,
)

__all__ = ["AppServerRunner", "AppServerSpec", "ApprovalAsk"]

log = logging.getLogger(__name__)

_READ_CHUNK = 256 * 1024
_STREAM_LIMIT = 1024 * 1024
_STDERR_TAIL_LINES = 8
#: JSON-RPC error code for a server request the worker does not handle.
_METHOD_NOT_FOUND = -32601
#: How long a request to app-server may take (initialize, thread/start|resume, turn/start), s.
REQUEST_TIMEOUT_S = 60.0

_OutputKind = Literal[EventKind.CODEX, EventKind.STDOUT, EventKind.STDERR]


@dataclass(frozen=True)
class AppServerSpec:
    """What to run: one turn of a conversation task.

    Attributes:
        task_id: the task's id (also the value of the task marker in ``env``).
        inputs: the turn's texts, in order (the first prompt and/or the replies); at least one.
        workdir: absolute, validated real path: the thread's ``cwd`` and app-server's cwd.
        sandbox: codex's sandbox mode for the thread.
        approval_policy: when codex asks (``untrusted``, ``on-request``, ``never``).
        model: the model, or None for codex's configured default.
        thread_id: the thread to resume (None: start a new one).
        codex_bin: path of the native codex binary.
        env: the child's complete environment (``runner.build_child_env``).
    """

    task_id: str
    inputs: Sequence[str]
    workdir: str
    sandbox: Sandbox
    approval_policy: ApprovalPolicy
    model: str | None
    thread_id: str | None
    codex_bin: str
    env: Mapping[str, str]


@dataclass
class ApprovalAsk:
    """codex asks for an approval: the fields of an ``ApprovalRequest`` but the lease
    (``kind``, ``item_id``, ``turn_id``, ``command``, ``cwd``, ``reason``, ``diff``,
    ``questions``, ``available_decisions``)."""

    kind: ApprovalKind
    item_id: str
    turn_id: str | None = None
    command: str | None = None
    cwd: str | None = None
    reason: str | None = None
    diff: str | None = None
    questions: list[dict[str, Any]] | None = None
    available_decisions: list[ApprovalDecision] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``ApprovalRequest`` (without ``lease_id``)."""
        return {
            "kind": self.kind,
            "item_id": self.item_id,
            "turn_id": self.turn_id,
            "command": self.command,
            "cwd": self.cwd,
            "reason": self.reason,
            "diff": self.diff,
            "questions": self.questions,
            "available_decisions": self.available_decisions,
        }


@dataclass
class _Pending:
    """A server request of codex's waiting for the owner's answer."""

    request_id: int | str
    kind: ApprovalKind


class AppServerError(RuntimeError):
    """app-server refused a request or exited while we waited for its answer."""


class AppServerRunner:
    """Runs one turn of a conversation task in a fresh ``codex app-server`` (module docstring).

    Create one runner per lease; :meth:`run` may be awaited once. The other methods are called
    from the event loop's thread at any time.

    Args:
        spec: what to run.
        emit: receives each event (kinds ``codex``, ``stdout`` for a line that is not a
            JSON-RPC message, ``stderr``), in order.
        on_thread: called once with the thread id when it is known.
        on_approval: called for each approval codex asks (awaited in a task of its own; an
            exception is logged and the request stays pending).
        on_started: called with True once codex has the turn's inputs (the caller acknowledges
            the claimed replies), or never.
        grace_s: seconds to wait for app-server to exit after its stdin closed, and for the
            interrupted turn's end, before SIGKILL.
        max_line_bytes: longest line kept from app-server's output.
        watch: the process watch (default: the loop's shared one).
    """

    def __init__(
        self,
        spec: AppServerSpec,
        emit: Callable[[EventIn], None],
        *,
        on_thread: Callable[[str], None] | None = None,
        on_approval: Callable[[ApprovalAsk], Awaitable[None]] | None = None,
        on_started: Callable[[], None] | None = None,
        grace_s: float = 2.0,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        watch: ProcessWatch | None = None,
    ) -> None:
        self.spec = spec
        self._emit_cb = emit
        self._on_thread = on_thread
        self._on_approval = on_approval
        self._on_started = on_started
        self._grace_s = grace_s
        self._max_line = max(1, max_line_bytes)
        self._watch = watch
        self._watched: WatchedRun | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._exited = asyncio.Event()
        self._translator = EventTranslator()
        self._next_id = 1
        self._calls: dict[int, asyncio.Future[Response]] = {}
        self._write_lock = asyncio.Lock()
        self._pending: dict[str, _Pending] = {}
        self._file_changes: dict[str, str] = {}
        self._answered: set[str] = set()
        self._steered: set[str] = set()
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._thread_id: str | None = spec.thread_id
        self._turn_id: str | None = None
        self._turn_end: dict[str, Any] | None = None
        self._turn_done = asyncio.Event()
        self._stop_reason: Literal["cancel", "stop", "interrupt"] | None = None
        self._stop_event = asyncio.Event()
        self._interrupt_event = asyncio.Event()
        self._event_count = 0
        self._stderr_tail: list[str] = []
        self._started = False
        self._internal_error: BaseException | None = None

    # ---- public ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """app-server's pid once spawned (also its process group), else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def thread_id(self) -> str | None:
        """The thread's id once known (at once when resuming)."""
        return self._thread_id

    @property
    def turn_id(self) -> str | None:
        """The running turn's id once codex started it."""
        return self._turn_id

    @property
    def pending_item_ids(self) -> list[str]:
        """Item ids of the approvals codex waits for."""
        return list(self._pending)

    @property
    def processes(self) -> WatchedRun | None:
        """What the process watch recorded of app-server, once it started."""
        return self._watched

    def cancel(self) -> None:
        """Kill app-server and what it started; the run ends ``CANCELED``. Idempotent."""
        self._request_stop("cancel")

    def stop(self) -> None:
        """The worker stops: kill app-server and what it started; the run ends ``IDLE`` with an
        explanation when a thread exists, else ``CANCELED``."""
        self._request_stop("stop")

    def interrupt(self) -> None:
        """Interrupt the running turn (see the module docstring); the run ends ``IDLE``."""
        if self._stop_reason is None:
            self._interrupt_event.set()

    def _request_stop(self, reason: Literal["cancel", "stop"]) -> None:
        if self._stop_reason in ("cancel", "stop"):
            return
        self._stop_reason = reason
        self._stop_event.set()

    async def steer(self, text: str, reply_id: str | None = None) -> bool:
        """Send ``text`` to the running turn (``turn/start`` on the live thread).

        Returns:
            True once codex took it (also for a ``reply_id`` already delivered), False when
            there is no running turn to add it to (not started yet, ended, stopping): the
            reply then stays undelivered and starts the next turn.
        """
        if reply_id is not None and reply_id in self._steered:
            return True
        if (
            self._turn_id is None
            or self._turn_done.is_set()
            or self._stop_reason is not None
            or self._interrupt_event.is_set()
            or self._thread_id is None
        ):
            return False
        params = TurnStartParams(threadId=self._thread_id, input=[TextInput(text=text)])
        try:
            response = await self._call("turn/start", params)
        except (AppServerError, OSError) as exc:
            log.warning("task %s: steering failed: %s", self.spec.task_id, exc)
            return False
        if response.error is not None:
            log.warning("task %s: codex refused steering: %s", self.spec.task_id, response.error)
            return False
        turn_id = _turn_id_of(response.result)
        if turn_id and turn_id != self._turn_id:
            # the turn had ended meanwhile: codex started a new one, which the run now waits for
            self._turn_id = turn_id
            self._turn_done.clear()
            self._turn_end = None
        if reply_id is not None:
            self._steered.add(reply_id)
        return True

    async def answer(
        self,
        item_id: str,
        decision: ApprovalDecision,
        answers: Mapping[str, Sequence[str]] | None = None,
    ) -> bool:
        """Pass the owner's answer to the approval of ``item_id`` on to codex.

        Returns:
            True when codex has it (also when it was already answered); False when codex does
            not wait for it (unknown item: the turn moved on, or app-server restarted).
        """
        if item_id in self._answered:
            return True
        pending = self._pending.pop(item_id, None)
        if pending is None:
            return False
        self._answered.add(item_id)
        await self._respond(pending, decision, answers)
        if pending.kind is ApprovalKind.USER_INPUT and decision is ApprovalDecision.CANCEL:
            self.interrupt()
        return True

    async def run(self) -> RunOutcome:
        """Run the turn to its end and return the outcome (see the module docstring).

        Never raises for codex's failures. If the task awaiting ``run`` is cancelled,
        app-server and its processes get SIGKILL before ``CancelledError`` propagates.

        Raises:
            RuntimeError: ``run`` was already called on this runner.
        """
        if self._started:
            raise RuntimeError("AppServerRunner.run() may only be called once")
        self._started = True
        spec = self.spec
        if self._stop_reason is not None:
            return self._stopped_outcome(None)
        if not spec.inputs or any("\x00" in text for text in spec.inputs):
            return self._outcome(TaskStatus.FAILED, None, "no prompt text to send to codex")
        problem = preflight(spec.workdir, spec.codex_bin)
        if problem is not None:
            return self._outcome(TaskStatus.FAILED, None, problem)
        try:
            with spawning():
                proc = await self._spawn([spec.codex_bin, "app-server"])
                ACTIVE_CODEX_PIDS.add(proc.pid)
        except (OSError, ValueError) as exc:
            return self._outcome(
                TaskStatus.FAILED,
                None,
                f"could not start codex app-server ({spec.codex_bin}): {exc}",
            )
        if self._watch is None:
            self._watch = shared_watch()
        watch = self._watch
        self._watched = watched = watch.watch(spec.task_id, proc.pid)
        readers = [
            asyncio.create_task(self._pump(proc.stdout, self._on_stdout_line)),  # type: ignore[arg-type]
            asyncio.create_task(self._pump(proc.stderr, self._on_stderr_line)),  # type: ignore[arg-type]
        ]
        try:
            outcome = await self._drive(proc, watch, watched)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await watch.refresh()
            self._kill_group(proc)
            raise
        finally:
            await self._shutdown(proc, watch, watched, readers)
            if proc.returncode is not None:
                ACTIVE_CODEX_PIDS.discard(proc.pid)
        return outcome

    # ---- the turn ----------------------------------------------------------------------

    async def _drive(
        self, proc: asyncio.subprocess.Process, watch: ProcessWatch, watched: WatchedRun
    ) -> RunOutcome:
        """Initialize, load the thread, start the turn and wait for its end."""
        setup = asyncio.create_task(self._setup())
        exited = asyncio.create_task(self._exited.wait())
        stopping = asyncio.create_task(self._stop_event.wait())
        try:
            await asyncio.wait({setup, exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not setup.done():
                setup.cancel()
                await asyncio.gather(setup, return_exceptions=True)
                if self._stop_reason is not None:
                    return self._stopped_outcome(proc.returncode)
                return self._crash_outcome(proc.returncode, "while starting")
            try:
                setup.result()
            except AppServerError as exc:
                if self._stop_reason is not None:
                    return self._stopped_outcome(proc.returncode)
                if self._exited.is_set():
                    return self._crash_outcome(proc.returncode, "while starting")
                status = TaskStatus.IDLE if self._thread_id else TaskStatus.FAILED
                return self._outcome(status, proc.returncode, str(exc))
            interrupting = asyncio.create_task(self._interrupt_event.wait())
            turn_done = asyncio.create_task(self._turn_done.wait())
            try:
                while True:
                    await asyncio.wait(
                        {turn_done, exited, stopping, interrupting},
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if stopping.done():
                        return self._stopped_outcome(proc.returncode)
                    if interrupting.done() and not self._turn_done.is_set():
                        await self._interrupt(watch, watched)
                        return self._turn_outcome(proc.returncode)
                    if turn_done.done():
                        if self._turn_done.is_set():
                            return self._turn_outcome(proc.returncode)
                        turn_done = asyncio.create_task(self._turn_done.wait())  # a new turn
                        continue
                    if exited.done():
                        if self._turn_done.is_set():
                            return self._turn_outcome(proc.returncode)
                        return self._crash_outcome(proc.returncode, "during the turn")
                    if interrupting.done():
                        return self._turn_outcome(proc.returncode)
            finally:
                for task in (interrupting, turn_done):
                    task.cancel()
        finally:
            for task in (exited, stopping):
                task.cancel()

    async def _setup(self) -> None:
        """``initialize``, ``thread/start`` or ``thread/resume``, ``turn/start``."""
        spec = self.spec
        init = InitializeParams(
            clientInfo=ClientInfo(name="codex-tui-worker", version="1"),
            capabilities=InitializeCapabilities(optOutNotificationMethods=list(NOISY)),
        )
        self._check(await self._call("initialize", init), "initialize")
        await self._write(encode_request(-1, "initialized", None))
        sandbox = Sandbox(spec.sandbox).value
        policy = ApprovalPolicy(spec.approval_policy).value
        if spec.thread_id:
            resume = ThreadResumeParams(
                threadId=spec.thread_id,
                cwd=spec.workdir,
                sandbox=sandbox,
                approvalPolicy=policy,
                model=spec.model,
            )
            result = self._check(await self._call("thread/resume", resume), "thread/resume")
        else:
            start = ThreadStartParams(
                cwd=spec.workdir, sandbox=sandbox, approvalPolicy=policy, model=spec.model
            )
            result = self._check(await self._call("thread/start", start), "thread/start")
        thread = result.get("thread") if isinstance(result, dict) else None
        thread_id = thread.get("id") if isinstance(thread, dict) else None
        if not isinstance(thread_id, str) or not thread_id:
            raise AppServerError("codex app-server answered thread/start without a thread id")
        self._set_thread(thread_id)
        turn = TurnStartParams(
            threadId=thread_id, input=[TextInput(text=text) for text in spec.inputs]
        )
        result = self._check(await self._call("turn/start", turn), "turn/start")
        turn_id = _turn_id_of(result)
        if turn_id and self._turn_id is None:
            self._turn_id = turn_id
        if self._on_started is not None:
            self._on_started()

    def _set_thread(self, thread_id: str) -> None:
        if self._thread_id == thread_id and self._thread_id != self.spec.thread_id:
            return
        first = self._thread_id is None or self._thread_id == self.spec.thread_id
        self._thread_id = thread_id
        if first and self._on_thread is not None:
            self._on_thread(thread_id)

    async def _interrupt(self, watch: ProcessWatch, watched: WatchedRun) -> None:
        """Cancel pending approvals, ``turn/interrupt``, kill what app-server started, and wait
        (up to ``grace_s``, at least 2 s) for codex's ``turn/completed``."""
        log.info("task %s: interrupting turn %s", self.spec.task_id, self._turn_id)
        for item_id in list(self._pending):
            pending = self._pending.pop(item_id)
            self._answered.add(item_id)
            with contextlib.suppress(OSError):
                await self._respond(pending, ApprovalDecision.CANCEL, None)
        if self._thread_id and self._turn_id and not self._turn_done.is_set():
            params = TurnInterruptParams(threadId=self._thread_id, turnId=self._turn_id)
            with contextlib.suppress(AppServerError, OSError):
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    await self._call("turn/interrupt", params)
        await watch.kill_descendants(watched)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(self._grace_s, 2.0)):
                await self._turn_done.wait()
        await watch.kill_descendants(watched)
        if self._turn_end is None:
            self._emit(
                EventKind.CODEX, {"type": "turn.interrupted", "turn_id": self._turn_id or ""}
            )
            self._turn_end = {"type": "turn.interrupted"}

    # ---- JSON-RPC ----------------------------------------------------------------------

    async def _write(self, line: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or self._exited.is_set():
            raise OSError("codex app-server is not running")
        async with self._write_lock:
            proc.stdin.write(line)
            await proc.stdin.drain()

    async def _call(self, method: str, params: Any) -> Response:
        """Send a request and wait for its response.

        Raises:
            AppServerError: app-server exited first, or did not answer within
                :data:`REQUEST_TIMEOUT_S`.
        """
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._calls[request_id] = future
        try:
            try:
                await self._write(encode_request(request_id, method, params))
            except (OSError, ConnectionError) as exc:
                raise AppServerError(f"could not send {method} to codex app-server: {exc}") from exc
            exited: asyncio.Future[Any] = asyncio.ensure_future(self._exited.wait())
            waited: set[asyncio.Future[Any]] = {future, exited}
            try:
                done, _ = await asyncio.wait(
                    waited, timeout=REQUEST_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                exited.cancel()
            if future in done:
                return future.result()
            if exited in done:
                raise AppServerError(f"codex app-server exited before answering {method}")
            raise AppServerError(
                f"codex app-server did not answer {method} within {REQUEST_TIMEOUT_S:.0f} s"
            )
        finally:
            self._calls.pop(request_id, None)

    @staticmethod
    def _check(response: Response, method: str) -> Any:
        if response.error is not None:
            raise AppServerError(f"codex app-server refused {method}: {response.error_message}")
        return response.result

    async def _respond(
        self,
        pending: _Pending,
        decision: ApprovalDecision,
        answers: Mapping[str, Sequence[str]] | None,
    ) -> None:
        if pending.kind is ApprovalKind.USER_INPUT:
            given = answers if decision is not ApprovalDecision.CANCEL else None
            result: dict[str, Any] = {
                "answers": {qid: {"answers": list(texts)} for qid, texts in (given or {}).items()}
            }
        else:
            result = {"decision": ApprovalDecision(decision).value}
        await self._write(encode_response(pending.request_id, result))

    # ---- output ------------------------------------------------------------------------

    async def _spawn(self, argv: list[str]) -> asyncio.subprocess.Process:
        loop = asyncio.get_running_loop()
        exited = self._exited

        def factory() -> ExitAwareProtocol:
            return ExitAwareProtocol(exited, limit=_STREAM_LIMIT, loop=loop)

        transport, protocol = await loop.subprocess_exec(
            factory,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.spec.workdir,
            # codex app-server colours its stderr log lines unless told not to
            env={**self.spec.env, "NO_COLOR": "1"},
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._transport = transport
        self._proc = asyncio.subprocess.Process(transport, protocol, loop)
        return self._proc

    async def _pump(
        self, stream: asyncio.StreamReader, on_line: Callable[[bytes, int], None]
    ) -> None:
        """Split ``stream`` into lines of at most ``max_line_bytes`` and pass them on."""
        limit = self._max_line
        buf = bytearray()
        dropped = 0
        try:
            while True:
                chunk = await stream.read(_READ_CHUNK)
                if not chunk:
                    break
                start = 0
                while True:
                    end = chunk.find(b"\n", start)
                    piece = chunk[start:] if end < 0 else chunk[start:end]
                    room = limit - len(buf)
                    if len(piece) <= room:
                        buf += piece
                    else:
                        buf += piece[:room]
                        dropped += len(piece) - room
                    if end < 0:
                        break
                    self._deliver(on_line, bytes(buf), dropped)
                    buf.clear()
                    dropped = 0
                    start = end + 1
            if buf or dropped:
                self._deliver(on_line, bytes(buf), dropped)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail_internally(exc)

    def _deliver(self, on_line: Callable[[bytes, int], None], raw: bytes, dropped: int) -> None:
        if self._internal_error is not None:
            return
        try:
            on_line(raw, dropped)
        except Exception as exc:  # a bug here must not leave codex running
            self._fail_internally(exc)

    def _fail_internally(self, exc: BaseException) -> None:
        log.error("task %s: handling codex app-server output failed: %r", self.spec.task_id, exc)
        if self._internal_error is None:
            self._internal_error = exc
        self.cancel()

    def _emit(self, kind: _OutputKind, data: Any) -> None:
        self._emit_cb(EventIn(ts=utcnow(), kind=kind, data=data))
        self._event_count += 1

    def _on_stderr_line(self, raw: bytes, dropped: int) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        data: dict[str, Any] = {"line": text}
        if dropped:
            data["truncated_bytes"] = dropped
        if text.strip():
            self._stderr_tail.append(text[:500])
            del self._stderr_tail[:-_STDERR_TAIL_LINES]
        self._emit(EventKind.STDERR, data)

    def _on_stdout_line(self, raw: bytes, dropped: int) -> None:
        text = raw.decode("utf-8", errors="replace")
        if dropped:
            self._emit(EventKind.STDOUT, {"line": text, "truncated_bytes": dropped})
            return
        if not text.strip():
            return
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        message = parse_message(data)
        if message is None:
            self._emit(EventKind.STDOUT, {"line": text.rstrip("\r")})
        elif isinstance(message, Response):
            future = self._calls.get(message.id) if isinstance(message.id, int) else None
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Notification):
            self._on_notification(message)
        else:
            self._on_server_request(message)

    def _on_notification(self, note: Notification) -> None:
        method, params = note.method, note.params
        thread_id = params.get("threadId")
        if isinstance(thread_id, str) and self._thread_id and thread_id != self._thread_id:
            return  # another thread's (a subagent's): not this task's
        if method == "thread/started":
            thread = params.get("thread")
            if isinstance(thread, dict) and isinstance(thread.get("id"), str):
                if self._thread_id and thread["id"] != self._thread_id:
                    return
        elif method == "item/started":
            self._remember_file_change(params.get("item"))
        elif method == "turn/started":
            turn_id = _turn_id_of(params)
            if turn_id and self._turn_id is None:
                self._turn_id = turn_id
        event = self._translator.event(method, params)
        if event is not None:
            self._emit(EventKind.CODEX, event)
        if method == "turn/completed":
            turn_id = _turn_id_of(params)
            if self._turn_id is None or turn_id in (None, self._turn_id):
                self._turn_end = event or {"type": "turn.completed"}
                self._turn_done.set()

    def _remember_file_change(self, item: object) -> None:
        """Keep the diff of a fileChange item: its approval request carries none."""
        if not isinstance(item, dict) or item.get("type") != "fileChange":
            return
        item_id = item.get("id")
        if not isinstance(item_id, str):
            return
        parts = []
        for change in item.get("changes") or []:
            if not isinstance(change, dict):
                continue
            kind = change.get("kind")
            kind = kind.get("type") if isinstance(kind, dict) else kind
            parts.append(f"{kind or 'update'} {change.get('path', '')}\n{change.get('diff', '')}")
        self._file_changes[item_id] = "\n".join(parts)

    def _on_server_request(self, request: ServerRequest) -> None:
        try:
            ask = self._ask_of(request)
        except ValidationError as exc:
            log.warning("task %s: unreadable %s: %s", self.spec.task_id, request.method, exc)
            ask = None
        if ask is None:
            message = f"codex-tui does not handle {request.method}"
            line = json.dumps(
                {"id": request.id, "error": {"code": _METHOD_NOT_FOUND, "message": message}}
            )
            self._spawn_side(self._write((line + "\n").encode()))
            self._emit(
                EventKind.CODEX, {"type": request.method, **request.params, "refused": message}
            )
            return
        if self._stop_reason is not None or self._interrupt_event.is_set():
            self._spawn_side(
                self._respond(_Pending(request.id, ask.kind), ApprovalDecision.CANCEL, None)
            )
            return
        self._pending[ask.item_id] = _Pending(request.id, ask.kind)
        if self._on_approval is not None:
            self._spawn_side(self._on_approval(ask))

    def _ask_of(self, request: ServerRequest) -> ApprovalAsk | None:
        method, params = request.method, request.params
        if method == "item/commandExecution/requestApproval":
            cmd = CommandApprovalParams.model_validate(params)
            return ApprovalAsk(
                kind=ApprovalKind.COMMAND,
                item_id=cmd.itemId,
                turn_id=cmd.turnId,
                command=cmd.command,
                cwd=cmd.cwd,
                reason=cmd.reason,
                available_decisions=_decisions(cmd.availableDecisions),
            )
        if method == "item/fileChange/requestApproval":
            change = FileChangeApprovalParams.model_validate(params)
            return ApprovalAsk(
                kind=ApprovalKind.FILE_CHANGE,
                item_id=change.itemId,
                turn_id=change.turnId,
                reason=change.reason,
                diff=self._file_changes.get(change.itemId),
            )
        if method == "item/tool/requestUserInput":
            asked = UserInputParams.model_validate(params)
            return ApprovalAsk(
                kind=ApprovalKind.USER_INPUT,
                item_id=asked.itemId,
                turn_id=asked.turnId,
                questions=[
                    {
                        "id": q.id,
                        "header": q.header,
                        "question": q.question,
                        "options": (
                            [{"label": o.label, "description": o.description} for o in q.options]
                            if q.options is not None
                            else None
                        ),
                        "is_other": q.isOther,
                        "is_secret": q.isSecret,
                    }
                    for q in asked.questions
                ],
            )
        return None

    def _spawn_side(self, work: Awaitable[Any]) -> None:
        """Run ``work`` beside the run (errors logged)."""

        async def guarded() -> None:
            try:
                await work
            except Exception as exc:
                log.warning("task %s: %r", self.spec.task_id, exc)

        task = asyncio.ensure_future(guarded())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # ---- shutdown ----------------------------------------------------------------------

    async def _shutdown(
        self,
        proc: asyncio.subprocess.Process,
        watch: ProcessWatch,
        watched: WatchedRun,
        readers: list[asyncio.Task[None]],
    ) -> None:
        """Close app-server's stdin (it aborts a running turn and exits), SIGKILL its group
        after ``grace_s``, sweep what it left (commands it started), drain its output."""
        if not self._exited.is_set():
            with contextlib.suppress(Exception):
                await watch.refresh()
            # closing stdin makes app-server abort the turn and exit at once, leaving its
            # thread's rollout whole; SIGKILL only if it does not
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            try:
                async with asyncio.timeout(self._grace_s):
                    await self._exited.wait()
            except TimeoutError:
                with contextlib.suppress(Exception):
                    await watch.refresh()
                self._kill_group(proc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await self._exited.wait()
        await watch.sweep(watched)
        _, pending = await asyncio.wait(readers, timeout=2.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        if pending and self._transport is not None:
            self._transport.close()
        for task in list(self._side_tasks):
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)

    def _kill_group(self, proc: asyncio.subprocess.Process) -> None:
        if self._exited.is_set():
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)

    # ---- outcome -----------------------------------------------------------------------

    def _outcome(self, status: TaskStatus, code: int | None, error: str | None) -> RunOutcome:
        if error is not None:
            error = truncate(error, MAX_ERROR_CHARS)
        return RunOutcome(
            status=status,
            exit_code=code,
            error=error,
            thread_id=self._thread_id,
            event_count=self._event_count,
        )

    def _turn_outcome(self, code: int | None) -> RunOutcome:
        if self._internal_error is not None:
            return self._outcome(
                TaskStatus.IDLE if self._thread_id else TaskStatus.FAILED,
                code,
                f"worker error while reading codex output: {self._internal_error!r}",
            )
        end = self._turn_end or {}
        error = None
        if end.get("type") == "turn.failed":
            message = (
                end.get("error", {}).get("message") if isinstance(end.get("error"), dict) else None
            )
            error = f"the turn failed: {message or 'codex reported turn.failed'}"
        return self._outcome(TaskStatus.IDLE, code, error)

    def _stopped_outcome(self, code: int | None) -> RunOutcome:
        if self._internal_error is not None:
            return self._turn_outcome(code)
        if self._stop_reason == "stop" and self._thread_id:
            return self._outcome(
                TaskStatus.IDLE,
                code,
                "the worker stopped during the turn; codex interrupted it — reply to continue",
            )
        error = "the worker was stopped" if self._stop_reason == "stop" else None
        return self._outcome(TaskStatus.CANCELED, code, error)

    def _crash_outcome(self, code: int | None, when: str) -> RunOutcome:
        if self._internal_error is not None:
            return self._turn_outcome(code)
        reason = f"codex app-server {_exit_words(code)} {when}"
        if self._stderr_tail:
            reason += "; stderr: " + " | ".join(self._stderr_tail)
        if self._thread_id:
            return self._outcome(TaskStatus.IDLE, code, reason + " — reply to continue")
        return self._outcome(TaskStatus.FAILED, code, reason)


def _exit_words(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by signal {name}"
    return f"exited with code {code}"


def _turn_id_of(result: object) -> str | None:
    """``{turn: {id}}`` → the id."""
    turn = result.get("turn") if isinstance(result, dict) else None
    turn_id = turn.get("id") if isinstance(turn, dict) else None
    return turn_id if isinstance(turn_id, str) and turn_id else None


def _decisions(offered: list[Any] | None) -> list[ApprovalDecision]:
    """The decisions the owner may give, from codex's ``availableDecisions``.

    Codex 0.169.0 offers ``["accept", {"acceptWithExecpolicyAmendment": …}, "cancel"]`` for a
    command, yet takes ``decline`` and ``acceptForSession`` too (its protocol documents both
    for every approval: a declined item ends declined and the turn goes on; a command accepted
    for the session runs again unasked while the app-server keeps the thread; tested in
    tests/worker/test_appserver_runner.py), so both are added to a non-empty offer. Objects
    such as the execpolicy amendment are not offered to the owner. Empty (codex offered
    nothing): every decision.
    """
    values = {d.value for d in ApprovalDecision}
    plain = [ApprovalDecision(d) for d in offered or [] if isinstance(d, str) and d in values]
    if plain and ApprovalDecision.ACCEPT in plain:
        for implied in (ApprovalDecision.ACCEPT_FOR_SESSION, ApprovalDecision.DECLINE):
            if implied not in plain:
                plain.append(implied)
    elif plain and ApprovalDecision.DECLINE not in plain:
        plain.append(ApprovalDecision.DECLINE)
    return plain
