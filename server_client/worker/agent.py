"""Provides ``WorkerAgent``: claims its owner's tasks and runs codex for each of them.

Three loops share one HTTP client: the claim long poll (one request waiting at a time, only
while a slot is free: no busy polling, docs/reliability.md R8), the signals long poll
(cancel requests; restarted when a task starts, at most every :data:`SIGNALS_RESTART_S`
seconds, so a cancel arrives within moments while a worker starting hundreds of tasks does
not drop and reopen its connection hundreds of times), and one coroutine per running task
(runner + uploader + finish). Failed calls are retried by :mod:`server_client.retry`
(:data:`~server_client.retry.WORKER` backoff; the refusals that end a call are
:data:`~server_client.retry.WORKER_FINAL` and, for the connect,
:data:`~server_client.retry.CONNECT_FINAL`).

A start first kills what an earlier process of the worker left running (procs.sweep_orphans,
docs/reliability.md C3) and sends what it saved when it stopped; a stop ends the worker within
codex's grace plus :data:`STOP_UPLOAD_S`, whatever the server does, saving what is unsent (T3);
a local worker whose server is gone for good stops by itself (``local_give_up_s``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import psutil

from server_client.errors import ApiError
from server_client.models import (
    Acks,
    Approval,
    ApprovalRequest,
    Claim,
    DiffUpload,
    EventIn,
    EventKind,
    Reply,
    Runtime,
    Signals,
    TaskStatus,
    TurnEnd,
    WorkerHello,
    WorkspaceOrders,
    WorkspaceReport,
    WorkspaceSync,
    utcnow,
)
from server_client.paths import AppDirs, WorkdirError, resolve_workdir
from server_client.retry import (
    CONNECT_FINAL,
    NETWORK_ERRORS,
    WORKER,
    WORKER_FINAL,
    is_retryable,
    retry_call,
)
from server_client.worker.api import WorkerApi
from server_client.worker.appserver_runner import ApprovalAsk, AppServerRunner, AppServerSpec
from server_client.worker.codex_bin import CodexNotFoundError, codex_version, resolve_codex_bin
from server_client.worker.procs import WORKER_ENV, sweep_orphans, worker_marker
from server_client.worker.runner import (
    ExecRunner,
    RunOutcome,
    RunSpec,
    build_child_env,
    reap_orphan_zombies,
)
from server_client.worker.settings import WorkerSettings
from server_client.worker.task_workspaces import (
    Diff,
    DiffReporter,
    WorkspaceKeeper,
    changes_files,
)
from server_client.worker.uploader import (
    EventUploader,
    LeaseLostError,
    SavedUpload,
    UploadStream,
)
from server_client.workspaces import Workspace, WorkspaceError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Failures of a workspace sync that wait for the next one.
_SYNC_ERRORS: tuple[type[Exception], ...] = (ApiError, *NETWORK_ERRORS)

#: After a stop, how long (s) the tasks' last uploads may take once codex had its grace: then
#: what is unsent is saved for the next start and the worker exits (docs/reliability.md T3).
STOP_UPLOAD_S = 1.0

#: Shortest time between two restarts of the signals long poll (s).
SIGNALS_RESTART_S = 0.1

#: After signals that repeat until something changes (an interrupt until the turn ends, a
#: reply or an answer until acknowledged), the longest wait before the next poll (s).
SIGNALS_REPEAT_S = 0.5

Runner = ExecRunner | AppServerRunner


class FatalWorkerError(RuntimeError):
    """The server refused this worker for good (e.g. 401: its token was revoked)."""


class WorkerAgent:
    """One worker process's main object; :meth:`run` until :meth:`stop`."""

    #: How often (s) a worker whose codex is missing looks for it again.
    CODEX_RECHECK_S = 30.0
    #: Why this worker cannot run tasks (its codex is missing), as its hello said; None
    #: when it can. While set it claims nothing (:meth:`_await_codex`).
    _cannot_run: str | None = None

    def __init__(self, config: WorkerSettings) -> None:
        self.config = config
        self.api = WorkerApi(
            config.server, config.token.get_secret_value(), upload_socket=config.upload_socket
        )
        self.worker_id: str | None = None
        #: The upload stream of every task's events (made once connected).
        self.uploads: UploadStream | None = None
        self._runners: dict[str, Runner] = {}
        self._delivering: set[str] = set()
        self._side: set[asyncio.Task[None]] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._fatal: str | None = None
        self._heartbeat_s = 10.0
        #: The workspaces of tasks with a repository, on this machine's disk.
        self.workspaces = WorkspaceKeeper(
            Path(config.workspace_root), config.workdir_roots, config.remote_policy()
        )
        self._sync_now = asyncio.Event()
        self._workspace_lock = asyncio.Lock()
        #: This worker's state folder: the processes it starts are marked with it and this
        #: process (procs.WORKER_ENV), so that the next one can sweep what a crash left.
        self._state_dir = str(AppDirs.resolve().state.absolute())
        self._marker = worker_marker(self._state_dir)
        #: Where a stop leaves the events it could not send, for the next start.
        self.saved_dir = Path(self._state_dir) / "unsent-uploads"
        self._stopped_at: float | None = None
        #: When the server last answered (event loop time, s; set once connected).
        self._heard_at: float | None = None

    def stop(self) -> None:
        """Stop claiming and cancel every running task; :meth:`run` returns once they ended
        and reported, or ``grace_s`` + :data:`STOP_UPLOAD_S` seconds after this call at the
        latest, whatever the server does (what is unsent is then saved to disk)."""
        if self._stopped_at is None:
            self._stopped_at = asyncio.get_running_loop().time()
        self._stopping.set()
        for runner in self._runners.values():
            if isinstance(runner, AppServerRunner):
                runner.stop()  # a conversation ends its turn idle: a reply continues it
            else:
                runner.cancel()

    def _refused(self, exc: ApiError) -> None:
        """The server refused this worker (revoked, or its token was): stop everything, exit
        non-zero."""
        if self._fatal is None:
            log.error("the server refused this worker: %s", exc.problem.detail)
            self._fatal = (
                f"the server refused this worker ({exc.status}: {exc.problem.detail}); "
                "pair it again with a new code: codex-tui worker --server URL --pair CODE"
            )
        self.stop()

    async def connect(self) -> str:
        """Register with the server, retrying with jittered backoff until it answers."""
        version: str | None = None
        self._cannot_run = None
        try:
            version = await asyncio.to_thread(
                codex_version, resolve_codex_bin(self.config.codex_bin)
            )
        except CodexNotFoundError as exc:
            log.warning("%s; claiming no task until it is installed", exc)
            self._cannot_run = f"codex not found: {exc}"[:1000]
        hello = WorkerHello(
            name=self.config.name,
            hostname=socket.gethostname(),
            codex_version=version,
            workdir_roots=self.config.workdir_roots,
            max_tasks=self.config.max_tasks,
            labels=self.config.labels,
            runtime=self.config.runtime,
            cannot_run=self._cannot_run,
        )

        def retrying(exc: BaseException, wait_s: float) -> None:
            if isinstance(exc, ApiError):
                log.warning("connect refused (%s); retrying in %.1f s", exc, wait_s)
            else:
                log.warning(
                    "cannot reach %s (%s); retrying in %.1f s",
                    self.config.server,
                    type(exc).__name__,
                    wait_s,
                )

        try:
            worker = await retry_call(
                lambda: self.api.connect(hello),
                WORKER,
                retry_if=lambda exc: is_retryable(exc, CONNECT_FINAL),
                on_retry=retrying,
                sleep=self._pause_unless_stopping,
            )
        except ApiError as exc:
            raise FatalWorkerError(f"server refused this worker: {exc}") from exc
        self.worker_id = worker.id
        self._heartbeat_s = worker.heartbeat_s
        self._heard_at = asyncio.get_running_loop().time()
        if self.uploads is None:
            self.uploads = UploadStream(
                self.api, worker.id, interval_s=self.config.batch_interval_s
            )
        log.info("connected to %s as worker %s (%s)", self.config.server, worker.name, worker.id)
        return worker.id

    async def _sleep_or_stop(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the worker is told to stop meanwhile."""
        with contextlib.suppress(TimeoutError):  # not wait_for: see _workspace_loop
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _pause_unless_stopping(self, seconds: float) -> None:
        """Sleep as :meth:`_sleep_or_stop`; then, if the worker is stopping, end the caller
        (CancelledError): the connect retries give up when told to stop."""
        await self._sleep_or_stop(seconds)
        if self._stopping.is_set():
            raise asyncio.CancelledError

    async def run(self) -> None:
        """Sweep what an earlier process of this worker left running (procs.sweep_orphans:
        this process holds no task yet, so every such process belongs to a task it does not
        hold), connect, then claim and run tasks until :meth:`stop`; waits for running
        tasks."""
        swept = await asyncio.to_thread(sweep_orphans, self._state_dir)
        if swept:
            log.warning("killed %d process(es) an earlier worker process left", len(swept))
        self._heard_at = asyncio.get_running_loop().time()
        watch = asyncio.create_task(self._local_watch_loop(), name="local-watch")
        connected = False
        try:
            await self._send_saved()
            if not self._stopping.is_set():
                await self.connect()
                connected = not self._stopping.is_set()
        except asyncio.CancelledError:
            if not self._stopping.is_set():  # stopped: what is left waits on disk
                raise
        finally:
            if not connected:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
                await self.api.aclose()
        if not connected:
            return
        background = [
            watch,
            asyncio.create_task(self._signals_loop(), name="signals"),
            asyncio.create_task(self._reaper_loop(), name="reaper"),
            asyncio.create_task(self._workspace_loop(), name="workspaces"),
        ]
        try:
            await self._claim_loop()
            if self._fatal is not None:
                raise FatalWorkerError(self._fatal)
        finally:
            if self._jobs:
                await self._end_jobs()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self.uploads is not None:
                await self.uploads.aclose()
            await self.api.aclose()

    async def _end_jobs(self) -> None:
        """Wait for the running tasks to end and report; once the worker is stopping, only
        until ``grace_s`` + :data:`STOP_UPLOAD_S` after the stop: then the upload stream
        stops, what it has not sent is saved under :attr:`saved_dir` and the tasks' jobs are
        cancelled (docs/reliability.md T3)."""
        loop = asyncio.get_running_loop()
        while self._jobs:
            pending = set(self._jobs)
            if self._stopped_at is None:
                stopping = asyncio.ensure_future(self._stopping.wait())
                await asyncio.wait({*pending, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                continue
            left = self._stopped_at + self.config.grace_s + STOP_UPLOAD_S - loop.time()
            if left > 0:
                await asyncio.wait(pending, timeout=left)
                continue
            await self._save_unsent()
            for job in pending:
                job.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return

    async def _save_unsent(self) -> None:
        """Stop the upload stream and write what it has not sent to :attr:`saved_dir`."""
        if self.uploads is None:
            return
        await self.uploads.aclose()
        for saved in self.uploads.save_unsent():
            path = self.saved_dir / f"{saved.task_id}.jsonl"
            try:
                await asyncio.to_thread(saved.write, path)
            except OSError as exc:
                log.error("task %s: its unsent events are lost: %s", saved.task_id, exc)
                continue
            log.warning(
                "task %s: %d unsent event(s)%s saved to %s for the next start",
                saved.task_id,
                len(saved.events),
                " and its end" if saved.finish is not None else "",
                path,
            )

    async def _send_saved(self) -> None:
        """Send what an earlier process of this worker saved when it stopped (before the
        connect, which ends that process's leases): each task's events and end, idempotent by
        index and fenced by the lease (a lease lost meanwhile drops them, with a log line).
        Retried while the server cannot be reached, until it answers or the worker stops
        (the files then stay for the next start)."""
        paths = sorted(self.saved_dir.glob("*.jsonl")) if self.saved_dir.is_dir() else []
        for path in paths:
            try:
                saved = SavedUpload.read(path)
            except (OSError, ValueError, KeyError) as exc:
                log.error("%s cannot be read (%s); dropped", path, exc)
                path.unlink(missing_ok=True)
                continue
            stream = UploadStream(self.api, saved.worker_id)
            uploader = stream.resume(saved)
            try:
                await self._first_of(uploader.close(saved.finish))
            except LeaseLostError:
                log.warning(
                    "task %s: %d saved event(s) dropped: its lease was lost meanwhile",
                    saved.task_id,
                    len(saved.events),
                )
            finally:
                await stream.aclose()
            if self._stopping.is_set():
                return
            log.info("task %s: %d saved event(s) sent", saved.task_id, len(saved.events))
            path.unlink(missing_ok=True)

    async def _local_watch_loop(self) -> None:
        """A local worker whose server is gone for good stops (as on SIGTERM): once the server
        has not answered for ``local_give_up_s`` while no server runs on the state folder
        (settings.WorkerSettings.local_give_up_s). A worker started by hand never does."""
        give_up_s = self.config.local_give_up_s
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            await self._sleep_or_stop(min(5.0, give_up_s / 4))
            heard_at = self._heard_at
            if heard_at is None or loop.time() - heard_at < give_up_s:
                continue
            if await asyncio.to_thread(self._server_gone_for_good):
                log.warning(
                    "the server has not answered for %.0f s and no server runs on %s: this "
                    "local worker stops (it would poll forever)",
                    loop.time() - heard_at,
                    self._state_dir,
                )
                self.stop()
                return

    def _server_gone_for_good(self) -> bool:
        """True when this process is its state folder's local worker (``local-worker.pid``
        names it) and no server runs on the folder (``server.json``, which a server writes
        while it runs, is gone or names a process, pid and start time, that is gone)."""
        state = Path(self._state_dir)
        try:
            if int((state / "local-worker.pid").read_text().strip()) != os.getpid():
                return False
        except (OSError, ValueError):
            return False
        try:
            record = json.loads((state / "server.json").read_text())
            server = psutil.Process(int(record["pid"]))
            if server.status() == psutil.STATUS_ZOMBIE:
                return True
            return abs(server.create_time() - float(record["create_time"])) > 0.01
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return True

    async def _reaper_loop(self, interval_s: float = 10.0) -> None:
        """Reap orphaned command processes that exited on their own: the worker is their
        subreaper (runner.become_subreaper), so they would stay zombies otherwise."""
        while True:
            await asyncio.sleep(interval_s)
            reap_orphan_zombies()

    async def _claim_loop(self) -> None:
        assert self.worker_id is not None
        worker_id = self.worker_id
        while not self._stopping.is_set():
            if self._cannot_run is not None:
                await self._await_codex()
                continue
            if len(self._jobs) >= self.config.max_tasks:
                self._slot_free.clear()
                await self._first_of(self._slot_free.wait())
                continue
            try:
                # A stop ends the poll (None) and the waits between retries.
                claim = await retry_call(
                    lambda: self._first_of(self.api.claim(worker_id, self.config.poll_wait_s)),
                    WORKER,
                    retry_if=_worker_retryable,
                    on_retry=lambda exc, wait_s: _log_retry("claim", exc, wait_s),
                    sleep=self._sleep_or_stop,
                )
            except ApiError as exc:
                # 401/403: the token was revoked; 404: this worker was revoked (a worker run
                # with a user token keeps a valid token, but must not come back by itself).
                self._refused(exc)
                continue
            if claim is None:
                continue
            job = asyncio.create_task(self._run_task(claim), name=f"task-{claim.task.id}")
            self._jobs.add(job)
            job.add_done_callback(self._job_done)

    async def _await_codex(self) -> None:
        """While codex is missing, claim nothing (the signals poll keeps the worker online,
        and the server shows why it runs nothing): look for codex again every
        :attr:`CODEX_RECHECK_S` and, once it is there, connect again with a hello that no
        longer says ``cannot_run``, so that tasks come again."""
        await self._sleep_or_stop(self.CODEX_RECHECK_S)
        if self._stopping.is_set():
            return
        try:
            await asyncio.to_thread(resolve_codex_bin, self.config.codex_bin)
        except CodexNotFoundError:
            return
        log.info("codex is installed now; claiming tasks again")
        await self.connect()

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        self._slot_free.set()
        self._sync_now.set()
        if not job.cancelled() and job.exception() is not None:
            log.error("task job crashed", exc_info=job.exception())

    async def _first_of(self, awaitable: Awaitable[T]) -> T | None:
        """Await ``awaitable`` unless the worker is told to stop first (then None)."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work.done():
            return work.result()
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        return None

    async def _poll_signals(self) -> Signals | None:
        """One signals long poll; None when it was given up for a newer one because a task
        started. A finished task needs no restart: the server answers for it at its next wake."""
        assert self.worker_id is not None
        loop = asyncio.get_running_loop()
        self._changed.clear()
        polled = set(self._runners)
        started = loop.time()
        poll = asyncio.ensure_future(
            self.api.signals(self.worker_id, list(polled), self._heartbeat_s)
        )
        try:
            while True:
                changed = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait({poll, changed}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if poll.done():
                    return poll.result()
                self._changed.clear()
                if self._runners.keys() <= polled:
                    continue
                wait_s = started + SIGNALS_RESTART_S - loop.time()
                if wait_s > 0:
                    await asyncio.wait({poll}, timeout=wait_s)
                    if poll.done():
                        return poll.result()
                return None
        finally:
            if not poll.done():
                poll.cancel()
                await asyncio.gather(poll, return_exceptions=True)

    async def _signals_loop(self) -> None:
        assert self.worker_id is not None
        while True:
            try:
                answer = await retry_call(
                    self._poll_signals,
                    WORKER,
                    retry_if=_worker_retryable,
                    on_retry=lambda exc, wait_s: _log_retry("signals poll", exc, wait_s),
                )
            except ApiError as exc:
                self._refused(exc)
                return
            self._heard_at = asyncio.get_running_loop().time()
            if answer is None:
                continue
            if answer.workspaces:  # set until a sync reports the workspace gone
                self._sync_now.set()
            running = False
            for task_id in answer.cancel:
                runner = self._runners.get(task_id)
                if runner is not None:
                    running = True
                    log.info("task %s: cancel requested", task_id)
                    runner.cancel()
            if running:
                # The server answers at once while the flag stays set; wait for a change.
                await self._first_of(self._changed.wait())
                continue
            if self._dispatch_conversation_signals(answer):
                # Interrupts repeat until the turn ends, replies and answers until
                # acknowledged: wait for a change, or a moment.
                await self._first_of(self._changed_within(SIGNALS_REPEAT_S))

    async def _changed_within(self, seconds: float) -> None:
        """Return when a runner starts or ends or an acknowledgement went out, or after
        ``seconds``."""
        with contextlib.suppress(TimeoutError):  # not wait_for: see _workspace_loop
            async with asyncio.timeout(seconds):
                await self._changed.wait()

    def _dispatch_conversation_signals(self, answer: Signals) -> bool:
        """Pass interrupts, replies and approval answers to the running conversations;
        returns True when any concerned one of them."""
        concerned = False
        for task_id in answer.interrupt:
            runner = self._runners.get(task_id)
            if isinstance(runner, AppServerRunner):
                concerned = True
                log.info("task %s: interrupt requested", task_id)
                runner.interrupt()
        for reply in answer.replies:
            runner = self._runners.get(reply.task_id)
            if isinstance(runner, AppServerRunner):
                concerned = True
                self._deliver_once(f"reply:{reply.id}", self._steer(runner, reply))
        for approval in answer.answers:
            runner = self._runners.get(approval.task_id)
            if isinstance(runner, AppServerRunner) and approval.decision is not None:
                concerned = True
                self._deliver_once(f"approval:{approval.id}", self._answer(runner, approval))
        return concerned

    def _deliver_once(self, key: str, work: Awaitable[None]) -> None:
        """Run ``work`` unless the same delivery is already under way."""
        if key in self._delivering:
            if asyncio.iscoroutine(work):
                work.close()
            return
        self._delivering.add(key)

        async def deliver() -> None:
            try:
                await work
            except Exception:
                log.exception("delivering %s failed", key)
            finally:
                self._delivering.discard(key)

        task = asyncio.create_task(deliver())
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _steer(self, runner: AppServerRunner, reply: Reply) -> None:
        """A reply to a running turn: steer it, then acknowledge the reply (a reply the
        turn cannot take any more stays unacknowledged: it starts the next turn)."""
        if await runner.steer(reply.prompt, reply.id):
            log.info("task %s: reply %s delivered", reply.task_id, reply.id)
            await self._ack(Acks(replies=[reply.id]))

    async def _answer(self, runner: AppServerRunner, approval: Approval) -> None:
        """An owner's answer: pass it to codex, then acknowledge it."""
        assert approval.decision is not None
        delivered = await runner.answer(approval.item_id, approval.decision, approval.answers)
        if not delivered:
            log.warning(
                "task %s: codex no longer waits for approval %s; acknowledging it",
                approval.task_id,
                approval.id,
            )
        await self._ack(Acks(approvals=[approval.id]))

    async def _ack(self, acks: Acks) -> None:
        """Acknowledge delivered replies and answers (retried; a refusal is logged)."""
        assert self.worker_id is not None
        worker_id = self.worker_id
        try:
            await retry_call(
                lambda: self.api.acks(worker_id, acks),
                WORKER,
                retry_if=_worker_retryable,
                on_retry=lambda exc, wait_s: _log_retry("acks", exc, wait_s),
            )
        except ApiError as exc:
            log.error("acks refused: %s", exc)
        self._changed.set()

    async def _ask(self, claim: Claim, ask: ApprovalAsk, runner: AppServerRunner) -> None:
        """Report an approval codex asks for; a lost lease cancels the run."""
        assert self.worker_id is not None
        worker_id = self.worker_id
        body = ApprovalRequest(lease_id=claim.lease_id, **ask.fields())
        try:
            await retry_call(
                lambda: self.api.create_approval(worker_id, claim.task.id, body),
                WORKER,
                retry_if=_worker_retryable,
                on_retry=lambda exc, wait_s: _log_retry(
                    f"approval of {claim.task.id}", exc, wait_s
                ),
            )
        except ApiError as exc:
            log.error("task %s: approval refused (%s); stopping the turn", claim.task.id, exc)
            runner.cancel()
            return
        log.info("task %s: codex asks for approval of %s", claim.task.id, ask.item_id)

    def _prepare(self, claim: Claim, workspace: Workspace | None = None) -> RunSpec | str:
        """Build the run spec (codex runs in ``workspace`` when the task has one, else in its
        workdir), or return the error that fails the task before codex starts."""
        task = claim.task
        try:
            codex_bin = resolve_codex_bin(self.config.codex_bin)
        except CodexNotFoundError as exc:
            return str(exc)
        if workspace is not None:
            workdir = str(workspace.path)
        else:
            try:
                workdir = resolve_workdir(task.workdir, self.config.workdir_roots)
            except WorkdirError as exc:
                return str(exc)
        env = build_child_env(self.config.pass_env, task_id=task.id)
        env[WORKER_ENV] = self._marker
        return RunSpec(
            task_id=task.id,
            prompt=task.prompt,
            workdir=workdir,
            sandbox=task.sandbox,
            model=task.model,
            codex_bin=codex_bin,
            env=env,
        )

    def runtime_of(self, claim: Claim) -> Runtime:
        """The runtime a claimed task runs with: the one the server recorded, else the one it
        asked for, else this worker's default."""
        task = claim.task
        return task.runtime or task.requested_runtime or self.config.runtime

    def _prepare_conversation(
        self, claim: Claim, workspace: Workspace | None = None
    ) -> AppServerSpec | str:
        """Build a conversation's spec: the first turn gets the prompt and any replies sent
        before the claim; a later one (the task has a thread) the replies."""
        prepared = self._prepare(claim, workspace)
        if isinstance(prepared, str):
            return prepared
        task = claim.task
        replies = [reply.prompt for reply in claim.replies]
        inputs = replies if task.thread_id else [task.prompt, *replies]
        return AppServerSpec(
            task_id=task.id,
            inputs=inputs,
            workdir=prepared.workdir,
            sandbox=task.sandbox,
            approval_policy=task.approval_policy,
            model=task.model,
            thread_id=task.thread_id,
            codex_bin=prepared.codex_bin,
            env=prepared.env,
        )

    async def _run_task(self, claim: Claim) -> None:
        if self.runtime_of(claim) is Runtime.APP_SERVER:
            await self._run_conversation(claim)
        else:
            await self._run_exec(claim)

    async def _run_conversation(self, claim: Claim) -> None:
        """One lease of a conversation: one turn in a fresh ``codex app-server``."""
        assert self.worker_id is not None
        task = claim.task
        log.info("task %s: claimed (app-server)", task.id)
        runner: AppServerRunner | None = None
        uploader = self._open_uploads(claim, lambda: runner)
        workspace = await self._workspace_for(claim)
        prepared = (
            workspace
            if isinstance(workspace, str)
            else self._prepare_conversation(claim, workspace)
        )
        reporter = self._diff_reporter(claim, workspace)
        if isinstance(prepared, str):
            uploader.add(EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": prepared}))
            status = TaskStatus.IDLE if task.thread_id else TaskStatus.FAILED
            outcome = RunOutcome(status, None, prepared, task.thread_id, 0)
        elif not prepared.inputs:
            outcome = RunOutcome(TaskStatus.IDLE, None, None, task.thread_id, 0)
        else:
            reply_ids = [reply.id for reply in claim.replies]

            def started() -> None:
                if reply_ids:
                    self._deliver_once(
                        f"claim:{claim.lease_id}", self._ack(Acks(replies=reply_ids))
                    )

            runner = AppServerRunner(
                prepared,
                self._emitter(uploader, reporter),
                on_thread=uploader.set_thread_id,
                on_approval=lambda ask: self._ask(claim, ask, runner),  # type: ignore[arg-type]
                on_started=started,
                grace_s=self.config.grace_s,
            )
            if task.cancel_requested:
                runner.cancel()
            elif self._stopping.is_set():
                runner.stop()
            self._runners[task.id] = runner
            self._changed.set()
            try:
                outcome = await runner.run()
            finally:
                self._runners.pop(task.id, None)
                self._changed.set()
        if reporter is not None:
            await reporter.final()
        await self._finish(claim, uploader, outcome)

    async def _run_exec(self, claim: Claim) -> None:
        assert self.worker_id is not None
        task = claim.task
        log.info("task %s: claimed", task.id)
        runner: ExecRunner | None = None
        uploader = self._open_uploads(claim, lambda: runner)
        workspace = await self._workspace_for(claim)
        prepared = workspace if isinstance(workspace, str) else self._prepare(claim, workspace)
        reporter = self._diff_reporter(claim, workspace)
        if isinstance(prepared, str):
            uploader.add(EventIn(ts=utcnow(), kind=EventKind.STDERR, data={"line": prepared}))
            outcome = RunOutcome(
                status=TaskStatus.FAILED,
                exit_code=None,
                error=prepared,
                thread_id=None,
                event_count=0,
            )
        else:
            runner = ExecRunner(
                prepared,
                self._emitter(uploader, reporter),
                on_thread=uploader.set_thread_id,
                grace_s=self.config.grace_s,
            )
            if task.cancel_requested or self._stopping.is_set():
                runner.cancel()
            self._runners[task.id] = runner
            self._changed.set()
            try:
                outcome = await runner.run()
            finally:
                self._runners.pop(task.id, None)
                self._changed.set()
            if outcome.status is TaskStatus.CANCELED and self._stopping.is_set():
                outcome.error = outcome.error or "the worker was stopped"
        if reporter is not None:
            await reporter.final()
        await self._finish(claim, uploader, outcome)

    async def _workspace_for(self, claim: Claim) -> Workspace | str | None:
        """The task's workspace, made now or reused from an earlier turn and reported to the
        server (fenced by the lease); None for a task without a repository; the reason as a
        string when it cannot be had (the task then fails before codex starts)."""
        task = claim.task
        if task.repo is None:
            return None
        try:
            workspace, made = await self.workspaces.prepare(task)
        except WorkspaceError as exc:
            log.warning("task %s: no workspace: %s", task.id, exc)
            return f"cannot make the task's workspace: {exc}"
        if made:
            log.info("task %s: workspace %s at %s", task.id, workspace.path, workspace.base_commit)
        assert self.worker_id is not None
        worker_id = self.worker_id
        body = WorkspaceReport(
            lease_id=claim.lease_id, path=str(workspace.path), base_commit=workspace.base_commit
        )
        async with self._workspace_lock:  # a sync must not list the disk before this
            try:
                await retry_call(
                    lambda: self.api.report_workspace(worker_id, task.id, body),
                    WORKER,
                    retry_if=_worker_retryable,
                    on_retry=lambda exc, wait_s: _log_retry(f"workspace of {task.id}", exc, wait_s),
                )
            except ApiError as exc:
                return f"the server refused the task's workspace: {exc.problem.detail}"
        return workspace

    def _diff_reporter(
        self, claim: Claim, workspace: Workspace | str | None
    ) -> DiffReporter | None:
        """The reporter of the task's diff, when it runs in a workspace."""
        if not isinstance(workspace, Workspace):
            return None
        assert self.worker_id is not None
        worker_id = self.worker_id
        task_id = claim.task.id

        async def upload(diff: Diff) -> None:
            body = DiffUpload(
                lease_id=claim.lease_id,
                base_commit=workspace.base_commit,
                files=diff.files,
                patch=base64.b64encode(diff.patch),  # Base64Bytes takes the encoded form
                truncated=diff.truncated,
            )
            await retry_call(
                lambda: self.api.upload_diff(worker_id, task_id, body),
                WORKER,
                retry_if=_worker_retryable,
                on_retry=lambda exc, wait_s: _log_retry(f"diff of {task_id}", exc, wait_s),
            )

        return DiffReporter(workspace, upload)

    @staticmethod
    def _emitter(
        uploader: EventUploader, reporter: DiffReporter | None
    ) -> Callable[[EventIn], None]:
        """What a runner hands each event to: the uploader, and the diff reporter when codex
        may have changed files."""
        if reporter is None:
            return uploader.add

        def emit(event: EventIn) -> None:
            uploader.add(event)
            if changes_files(event):
                reporter.touch()

        return emit

    async def _workspace_loop(self) -> None:
        """Sync the workspaces with the server: at start, every ``workspace_sync_s``
        seconds, after a task's lease ends and when the signals say a removal waits; remove
        those the server names (never one a turn runs in)."""
        assert self.worker_id is not None
        worker_id = self.worker_id
        while True:
            self._sync_now.clear()  # a change from now on asks for the next sync
            try:
                async with self._workspace_lock:
                    held = await self.workspaces.held()
                    orders = await self.api.sync_workspaces(
                        worker_id, WorkspaceSync(workspaces=held)
                    )
            except _SYNC_ERRORS as exc:
                log.warning("workspace sync failed (%s); retrying later", exc)
                orders = WorkspaceOrders()
            except Exception:  # the loop must live on: the next sync may do better
                log.exception("workspace sync failed")
                orders = WorkspaceOrders()
            removed = 0
            for task_id in orders.remove:
                if task_id in self._runners:
                    continue
                try:
                    removed += await self.workspaces.remove(task_id)
                    log.info("task %s: workspace removed", task_id)
                except WorkspaceError as exc:
                    log.warning("task %s: workspace not removed: %s", task_id, exc)
            if removed:
                continue  # report them gone at once
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancel that comes
            # as the event is set (a task ending as the worker stops), and the worker's exit
            # then waits for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.workspace_sync_s):
                    await self._sync_now.wait()

    def _open_uploads(self, claim: Claim, runner: Callable[[], Runner | None]) -> EventUploader:
        """The uploader of the task's lease on the worker's upload stream; a cancel flag in
        an answer, or the lease lost, stops the task's runner (``runner()``, once made)."""
        assert self.uploads is not None

        def stop_runner() -> None:
            current = runner()
            if current is not None:
                current.cancel()

        return self.uploads.open(
            claim.task.id,
            claim.lease_id,
            on_cancel_requested=stop_runner,
            on_lease_lost=stop_runner,
        )

    async def _finish(self, claim: Claim, uploader: EventUploader, outcome: RunOutcome) -> None:
        """Upload the task's last events and end its lease with ``outcome`` (in one request,
        retried until answered)."""
        end = TurnEnd(
            status=outcome.status,  # type: ignore[arg-type]
            event_count=uploader.count,
            exit_code=outcome.exit_code,
            error=outcome.error,
            thread_id=outcome.thread_id or uploader.thread_id,
        )
        try:
            result = await uploader.close(end)
        except LeaseLostError:
            log.error("task %s: lease lost; not reporting its end", claim.task.id)
            return
        if result is not None and result.problem is not None:
            log.error("task %s: finish refused: %s", claim.task.id, result.problem.detail)
            return
        log.info("task %s: %s", claim.task.id, outcome.status.value)


def _worker_retryable(exc: BaseException) -> bool:
    """The worker protocol's rule (server_client.retry.WORKER_FINAL)."""
    return is_retryable(exc, WORKER_FINAL)


def _log_retry(what: str, exc: BaseException, wait_s: float) -> None:
    """Log a failed call that is retried in ``wait_s`` seconds."""
    if isinstance(exc, ApiError):
        log.warning("%s refused (%s); retrying in %.1f s", what, exc, wait_s)
    else:
        log.warning("%s failed (%s); retrying in %.1f s", what, type(exc).__name__, wait_s)
