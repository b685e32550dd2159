"""Provides ExecRunner: one ``codex exec --json`` process for one task, from spawn to cleanup.

The runner spawns the native codex binary directly (no shell) in its own session, with stdin
from ``/dev/null`` and an allow-listed environment (docs/reliability.md C2, S3), turns every
output line into an :class:`~server_client.models.EventIn` (E6, E7, T2: how a line becomes
event data is :mod:`server_client.codex.lines`), and decides the task's outcome. Facts about
codex's behaviour are in ``docs/codex-facts.md``.

Argv (docs/reliability.md S5)::

    <codex> exec --json --skip-git-repo-check --sandbox=<mode> --cd=<workdir> [--model=<m>]
            -- <prompt>

``--`` ends option parsing, so a prompt such as ``-h`` or
``--dangerously-bypass-approvals-and-sandbox`` stays prompt text (checked against codex-cli
0.169.0: the model receives it verbatim). Options use the ``--name=value`` form so that a value
starting with ``-`` can never be taken for a flag. The one prompt codex still interprets is a
lone ``-`` ("read the prompt from stdin"); it is refused with :class:`PromptError`.

Cancel (docs/reliability.md C1): SIGINT to codex's process group at once; if codex is still alive
after ``grace_s`` seconds, SIGKILL to the group. Codex runs its commands in their own sessions, so
after codex exits (cancelled or not) the runner also SIGKILLs every process codex started that is
still alive, found by a :class:`~server_client.worker.procs.ProcessWatch` shared by every runner of
the event loop: descendants of codex recorded while it ran (one pass per second for all runs, one at
cancel time and one just before the SIGKILL), codex's process group, and processes whose environment
carries ``CODEX_TUI_TASK_ID=<task id>`` (:data:`TASK_ENV`, set by :func:`build_child_env`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from server_client.codex import ThreadStarted, TurnCompleted, TurnFailed, event_type, parse_event
from server_client.codex.lines import parse_line
from server_client.models import EventIn, EventKind, Sandbox, TaskStatus, utcnow
from server_client.text import truncate
from server_client.worker.codex_bin import INSTALL_HINT
from server_client.worker.procs import (
    ACTIVE_CODEX_PIDS,
    TASK_ENV,
    ProcessWatch,
    WatchedRun,
    become_subreaper,
    reap_orphan_zombies,
    shared_watch,
    spawning,
)

__all__ = [
    "ALLOWED_ENV",
    "DEFAULT_MAX_LINE_BYTES",
    "ExitAwareProtocol",
    "TASK_ENV",
    "ExecRunner",
    "PromptError",
    "RunOutcome",
    "RunSpec",
    "become_subreaper",
    "build_argv",
    "build_child_env",
    "die_with_parent",
    "preflight",
    "reap_orphan_zombies",
]

log = logging.getLogger(__name__)

#: Environment variables copied from the worker's environment into codex's (S3).
ALLOWED_ENV: tuple[str, ...] = ("PATH", "HOME", "CODEX_HOME", "LANG", "USER", "LOGNAME", "TMPDIR")

#: Longest output line kept, in bytes; the rest of a longer line is dropped and counted (E6).
DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024

#: Largest ``error`` text of an outcome, in characters (``FinishRequest.error`` allows 10,000).
MAX_ERROR_CHARS = 4000

_READ_CHUNK = 256 * 1024
_STREAM_LIMIT = 1024 * 1024
_STDERR_TAIL_LINES = 8

_OutputKind = Literal[EventKind.CODEX, EventKind.STDOUT, EventKind.STDERR]

#: The event types that decide a run's outcome (:meth:`ExecRunner._observe`).
_OBSERVED = frozenset(("thread.started", "turn.completed", "turn.failed"))


class ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's subprocess protocol that also sets ``exited`` when the process exits."""

    def __init__(
        self, exited: asyncio.Event, *, limit: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(limit=limit, loop=loop)
        self._exited_event = exited

    def process_exited(self) -> None:
        super().process_exited()
        self._exited_event.set()


class PromptError(ValueError):
    """The prompt cannot be passed to codex as plain text (a lone ``-`` or a NUL character)."""


@dataclass(frozen=True)
class RunSpec:
    """What to run: one task's prompt and codex options.

    Attributes:
        task_id: the task's id; also the value of :data:`TASK_ENV` in ``env``.
        prompt: the prompt text, passed as one argv element after ``--``.
        workdir: absolute, already validated real path; codex's ``--cd`` and the child's cwd.
        sandbox: codex's ``--sandbox`` mode.
        model: codex's ``--model``; None keeps codex's configured default.
        codex_bin: path of the native codex binary (see ``codex_bin.resolve_codex_bin``).
        env: the child's complete environment (see :func:`build_child_env`).
    """

    task_id: str
    prompt: str
    workdir: str
    sandbox: Sandbox
    model: str | None
    codex_bin: str
    env: Mapping[str, str]


@dataclass
class RunOutcome:
    """How a run ended.

    Attributes:
        status: ``COMPLETED``, ``FAILED`` or ``CANCELED``.
        exit_code: codex's exit code; negative when killed by that signal; None if never started.
        error: a human-readable reason when ``status`` is ``FAILED``, else None.
        thread_id: the ``thread.started.thread_id`` codex printed, if any.
        event_count: how many events were passed to ``emit``.
    """

    status: TaskStatus
    exit_code: int | None
    error: str | None
    thread_id: str | None
    event_count: int


def build_argv(spec: RunSpec) -> list[str]:
    """Build codex's argv for ``spec`` (see the module docstring); never goes through a shell.

    Returns:
        ``[codex_bin, "exec", "--json", "--skip-git-repo-check", "--sandbox=<mode>",
        "--cd=<workdir>", ("--model=<model>",) "--", prompt]``.

    Raises:
        PromptError: the prompt is a lone ``-`` (codex would read stdin) or contains NUL.
        ValueError: ``workdir`` is not absolute.
    """
    if spec.prompt == "-":
        raise PromptError(
            'a prompt of just "-" is not allowed: codex reads the prompt from stdin then'
        )
    if "\x00" in spec.prompt:
        raise PromptError("the prompt contains a NUL character, which cannot be passed to codex")
    if not os.path.isabs(spec.workdir):
        raise ValueError(f"workdir must be an absolute path, got {spec.workdir!r}")
    argv = [
        spec.codex_bin,
        "exec",
        "--json",
        "--skip-git-repo-check",
        f"--sandbox={Sandbox(spec.sandbox).value}",
        f"--cd={spec.workdir}",
    ]
    if spec.model:
        argv.append(f"--model={spec.model}")
    argv += ["--", spec.prompt]
    return argv


def build_child_env(
    passthrough: Iterable[str] = (),
    *,
    task_id: str,
    source: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """Build codex's environment from an allow-list (docs/reliability.md S3).

    Args:
        passthrough: extra variable names to copy (e.g. ``OPENAI_API_KEY`` if the admin wants it).
        task_id: value of the :data:`TASK_ENV` marker that tags the task's processes.
        source: where values come from (default: the worker's environment).

    Returns:
        The variables of :data:`ALLOWED_ENV` and ``passthrough`` that exist in ``source``, plus
        ``CODEX_TUI_TASK_ID=<task_id>``. Nothing else (the worker's ``CODEX_TUI_TOKEN`` never).
    """
    names = dict.fromkeys([*ALLOWED_ENV, *passthrough])
    env = {name: source[name] for name in names if name in source and name != TASK_ENV}
    env[TASK_ENV] = task_id
    return env


def die_with_parent() -> None:
    """In the child before exec: SIGKILL codex if the worker dies (Linux ``PR_SET_PDEATHSIG``),
    so a worker killed with ``kill -9`` does not leave codex editing files for a task that the
    server ends ``lost``. Commands codex started run in their own sessions and are not covered.
    """
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def preflight(workdir: str, codex_bin: str) -> str | None:
    """Check the workdir and the binary before spawning; returns the problem or None."""
    if not os.path.isdir(workdir):
        return f"workdir {workdir} does not exist or is not a folder"
    if not os.access(workdir, os.R_OK | os.X_OK):
        return f"workdir {workdir} is not accessible"
    if not os.path.isfile(codex_bin) or not os.access(codex_bin, os.X_OK):
        return f"codex binary {codex_bin} does not exist or is not executable. " + INSTALL_HINT
    return None


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "codex did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"codex was killed by signal {name} before the turn finished"
    return f"codex exited with code {code} before the turn finished"


class ExecRunner:
    """Runs one ``codex exec --json`` for one task and reports its events and outcome.

    ``emit`` is called, in the event loop's thread, once per event in output order. Create one
    runner per run; :meth:`run` may be awaited once. :meth:`cancel` may be called at any time
    from the event loop's thread.

    Events: a stdout line that parses as a JSON object is a ``codex`` event (data: the object,
    repaired by :func:`server_client.codex.lines.parse_line`); any other non-blank stdout line
    is ``stdout`` ``{"line": text}``; each stderr line is ``stderr`` ``{"line": text}``. Text is
    decoded as UTF-8 with replacement. A line longer than ``max_line_bytes`` keeps its first
    ``max_line_bytes`` bytes and becomes ``{"line": head, "truncated_bytes": dropped}``
    (``stdout`` or ``stderr``).

    Outcome, in this order: a ``turn.failed`` seen (before any cancel) → ``FAILED`` with its
    ``error.message``; a ``turn.completed`` seen (before any cancel) → ``COMPLETED`` if codex
    exited 0 or was cancelled afterwards, else ``FAILED``; cancel requested → ``CANCELED``;
    otherwise ``FAILED`` with the exit code or signal and the tail of stderr. A top-level
    ``error`` event is not fatal (docs/codex-facts.md: it can be a "Reconnecting..." notice).

    Args:
        spec: what to run.
        emit: receives each event (kinds ``codex``, ``stdout``, ``stderr``).
        grace_s: seconds between SIGINT and SIGKILL on cancel (docs/codex-facts.md: 2 s).
        max_line_bytes: longest output line kept, in bytes; longer lines are truncated
            (docs/reliability.md E6).
        watch: records codex's descendants and sweeps them up (default: the one
            :func:`~server_client.worker.procs.shared_watch` of the running loop, one pass per
            second for all runners).
        drain_timeout_s: seconds to wait for the output pipes to close after codex exited.
        on_thread: called once with codex's thread id when ``thread.started`` is seen.
    """

    def __init__(
        self,
        spec: RunSpec,
        emit: Callable[[EventIn], None],
        *,
        on_thread: Callable[[str], None] | None = None,
        grace_s: float = 2.0,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        watch: ProcessWatch | None = None,
        drain_timeout_s: float = 2.0,
    ) -> None:
        self.spec = spec
        self._emit_cb = emit
        self._on_thread = on_thread
        self._grace_s = grace_s
        self._max_line = max(1, max_line_bytes)
        self._watch = watch
        self._watched: WatchedRun | None = None
        self._drain_timeout_s = drain_timeout_s
        self._cancel_requested = False
        self._cancel_event = asyncio.Event()
        self._result_at_cancel: str | None = None
        self._started = False
        self._proc: asyncio.subprocess.Process | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._exited = asyncio.Event()
        self._thread_id: str | None = None
        self._turn_result: str | None = None  # "completed" | "failed"
        self._turn_error: str | None = None
        self._event_count = 0
        self._stderr_tail: list[str] = []
        self._internal_error: BaseException | None = None

    # ---- public ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """codex's pid once spawned (also its process group and session id), else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def processes(self) -> WatchedRun | None:
        """What the process watch recorded of this run (codex's descendants seen while it ran,
        the leftovers it killed), once codex started; else None."""
        return self._watched

    @property
    def thread_id(self) -> str | None:
        """The thread id from codex's ``thread.started`` event, once seen."""
        return self._thread_id

    @property
    def cancel_requested(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancel_requested

    def cancel(self) -> None:
        """Ask the run to stop: SIGINT now, SIGKILL after ``grace_s``. Idempotent.

        Before :meth:`run` the run ends ``CANCELED`` without starting codex; after it, a no-op.
        """
        if self._cancel_requested:
            return
        self._cancel_requested = True
        self._result_at_cancel = self._turn_result
        self._cancel_event.set()

    async def run(self) -> RunOutcome:
        """Run codex to the end and return the outcome.

        Never raises for codex's failures: a missing binary, an unusable workdir or a bad
        prompt give a ``FAILED`` outcome with the reason. If the task awaiting ``run`` is
        cancelled, codex and its processes get SIGKILL before ``CancelledError`` propagates.

        Raises:
            RuntimeError: ``run`` was already called on this runner.
        """
        if self._started:
            raise RuntimeError("ExecRunner.run() may only be called once")
        self._started = True
        if self._cancel_requested:
            return self._outcome(TaskStatus.CANCELED, None, None)
        spec = self.spec
        try:
            argv = build_argv(spec)
        except ValueError as exc:
            return self._outcome(TaskStatus.FAILED, None, str(exc))
        problem = preflight(spec.workdir, spec.codex_bin)
        if problem is not None:
            return self._outcome(TaskStatus.FAILED, None, problem)
        try:
            with spawning():
                proc = await self._spawn(argv)
                ACTIVE_CODEX_PIDS.add(proc.pid)
        except (OSError, ValueError) as exc:
            return self._outcome(
                TaskStatus.FAILED, None, f"could not start codex ({spec.codex_bin}): {exc}"
            )
        if self._watch is None:
            self._watch = shared_watch()
        self._watched = self._watch.watch(spec.task_id, proc.pid)
        try:
            return await self._supervise(proc, self._watch, self._watched)
        finally:
            if proc.returncode is not None:
                ACTIVE_CODEX_PIDS.discard(proc.pid)

    # ---- supervision -------------------------------------------------------------------

    async def _spawn(self, argv: list[str]) -> asyncio.subprocess.Process:
        """Start codex like ``asyncio.create_subprocess_exec``, with an exit notification.

        ``Process.wait()`` also waits for the output pipes to close, which a leftover process
        holding codex's stdout can delay forever; ``self._exited`` is set when codex itself exits.
        """
        loop = asyncio.get_running_loop()
        exited = self._exited

        def factory() -> ExitAwareProtocol:
            return ExitAwareProtocol(exited, limit=_STREAM_LIMIT, loop=loop)

        transport, protocol = await loop.subprocess_exec(
            factory,
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.spec.workdir,
            env=dict(self.spec.env),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._transport = transport
        self._proc = asyncio.subprocess.Process(transport, protocol, loop)
        return self._proc

    async def _supervise(
        self, proc: asyncio.subprocess.Process, watch: ProcessWatch, watched: WatchedRun
    ) -> RunOutcome:
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            asyncio.create_task(self._pump(proc.stdout, self._on_stdout_line)),
            asyncio.create_task(self._pump(proc.stderr, self._on_stderr_line)),
        ]
        helper = asyncio.create_task(self._cancel_flow(proc, watch))
        try:
            await self._exited.wait()
        except asyncio.CancelledError:
            self._cancel_requested = True
            try:
                await watch.refresh()  # record what codex started, before it dies
            finally:
                self._signal_group(proc, signal.SIGKILL)
            raise
        finally:
            helper.cancel()
            await asyncio.gather(helper, return_exceptions=True)
            if not self._exited.is_set():  # only when run() itself was cancelled
                with contextlib.suppress(asyncio.CancelledError):
                    await self._exited.wait()
            await watch.sweep(watched)
            _, pending = await asyncio.wait(readers, timeout=self._drain_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            if pending and self._transport is not None:
                log.warning(
                    "task %s: codex's output pipes stayed open after it exited; closing them",
                    self.spec.task_id,
                )
                self._transport.close()
        return self._final_outcome(proc.returncode)

    async def _cancel_flow(self, proc: asyncio.subprocess.Process, watch: ProcessWatch) -> None:
        await self._cancel_event.wait()
        if self._exited.is_set():
            return
        await watch.refresh()  # record what codex started, before it can die
        self._signal_group(proc, signal.SIGINT)
        try:
            async with asyncio.timeout(self._grace_s):
                await self._exited.wait()
        except TimeoutError:
            await watch.refresh()
            self._signal_group(proc, signal.SIGKILL)

    def _signal_group(self, proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        """Send ``sig`` to codex's process group (its pgid is its pid: own session)."""
        if self._exited.is_set():
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    # ---- output ------------------------------------------------------------------------

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
        except Exception as exc:  # e.g. a pipe error: stop codex rather than leave it blocked
            self._fail_internally(exc)

    def _deliver(self, on_line: Callable[[bytes, int], None], raw: bytes, dropped: int) -> None:
        """Pass one line on; after a failure in ``emit``, keep draining but drop the output."""
        if self._internal_error is not None:
            return
        try:
            on_line(raw, dropped)
        except Exception as exc:  # a bug in emit must not leave codex running or blocked
            self._fail_internally(exc)

    def _fail_internally(self, exc: BaseException) -> None:
        log.error("task %s: handling codex output failed: %r", self.spec.task_id, exc)
        if self._internal_error is None:
            self._internal_error = exc
        self.cancel()

    def _emit(self, kind: _OutputKind, data: Any) -> None:
        self._emit_cb(EventIn(ts=utcnow(), kind=kind, data=data))
        self._event_count += 1

    def _on_stdout_line(self, raw: bytes, dropped: int) -> None:
        text = raw.decode("utf-8", errors="replace")
        if dropped:
            self._emit(EventKind.STDOUT, {"line": text, "truncated_bytes": dropped})
            return
        parsed = parse_line(text)
        if parsed is None:
            return
        kind, data = parsed
        if kind is EventKind.CODEX:
            self._observe(data)
        self._emit(kind, data)

    def _on_stderr_line(self, raw: bytes, dropped: int) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        data: dict[str, Any] = {"line": text}
        if dropped:
            data["truncated_bytes"] = dropped
        if text.strip():
            self._stderr_tail.append(text[:500])
            del self._stderr_tail[:-_STDERR_TAIL_LINES]
        self._emit(EventKind.STDERR, data)

    def _observe(self, data: dict[str, Any]) -> None:
        """Note what decides the outcome: the thread id and how the turn ended. Only the few
        event types that matter are read in full (most lines are items)."""
        if event_type(data) not in _OBSERVED:
            return
        match parse_event(data):
            case ThreadStarted(thread_id=thread_id) if thread_id:
                self._thread_id = thread_id
                if self._on_thread is not None:
                    self._on_thread(thread_id)
            case TurnCompleted():
                self._turn_result = "completed"
                self._turn_error = None
            case TurnFailed(message=message):
                self._turn_result = "failed"
                self._turn_error = message or "codex reported turn.failed"
            case _:
                pass

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

    def _final_outcome(self, code: int | None) -> RunOutcome:
        if self._internal_error is not None:
            return self._outcome(
                TaskStatus.FAILED,
                code,
                f"worker error while reading codex output: {self._internal_error!r}",
            )
        result = self._result_at_cancel if self._cancel_requested else self._turn_result
        if result == "failed":
            return self._outcome(TaskStatus.FAILED, code, self._turn_error)
        if result == "completed":
            if code == 0 or self._cancel_requested:
                return self._outcome(TaskStatus.COMPLETED, code, None)
            return self._outcome(
                TaskStatus.FAILED, code, f"codex exited with code {code} after the turn completed"
            )
        if self._cancel_requested:
            return self._outcome(TaskStatus.CANCELED, code, None)
        reason = _exit_reason(code)
        if self._stderr_tail:
            reason += "; stderr: " + " | ".join(self._stderr_tail)
        return self._outcome(TaskStatus.FAILED, code, reason)
