"""Provides ``ProcessWatch``: the processes of every codex run in a worker process, found with one
scan of ``/proc`` per interval for all runs, and the clean-up of what a run leaves behind
(docs/reliability.md C1).

Why one scan: psutil's ``Process.children()`` reads ``/proc/<pid>/stat`` of every process on
the machine; called per run every second (and the environment of every process, per run, at
exit) it made the worker's CPU grow with runs × processes, and at 500 runs its event loop
starved and every task ended ``lost``.

A run's processes are found three ways:

- **descendants** of codex, recorded while codex runs: by the periodic pass (every
  ``interval_s``, one pass for all runs), by a pass at cancel time and by one just before the
  SIGKILL. They stay known after they left codex's session and process group, scrubbed their
  environment, or were re-parented when codex died;
- codex's **process group** (its pgid is its pid: codex runs in its own session);
- the **marker**: processes whose environment carries ``CODEX_TUI_TASK_ID=<task id>``
  (:data:`TASK_ENV`). Each process's environment is read once (cached by pid and start time),
  so a pass costs one ``/proc/<pid>/stat`` read per process plus the environment of the
  processes that are new since the previous pass.

A pass never runs in the event loop's thread, and only one runs at a time: callers that ask
for a fresh view at the same moment (:meth:`ProcessWatch.refresh`) share one pass.

After codex exited, :meth:`ProcessWatch.sweep` SIGKILLs what is left of the run. When this
process is a child subreaper (:func:`become_subreaper`) and none of its children is anything
but a running codex, nothing of the run can be alive (every live process codex started would
have been re-parented to this process, or be a descendant of such a child), and the sweep
costs one read of ``/proc/<pid>/task/<pid>/children``. Otherwise it takes up to four rounds of:
one pass (shared with the other runs ending now), SIGKILL to codex's group and to every live
process of the run (recorded, marked or in the group) and their descendants, and a short wait
until they are gone.

A worker killed with ``kill -9`` sweeps nothing; its codex dies with it (parent-death signal)
but a command codex started in a session of its own lives on. Every process a worker starts
also carries :data:`WORKER_ENV` (the worker process and its state folder), and the next worker
process of the same state folder kills, at its start, those whose worker process is gone
(:func:`sweep_orphans`).

"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psutil

from server_client.workspaces import RUNNING_GIT_PIDS, git_starting

__all__ = [
    "ACTIVE_CODEX_PIDS",
    "TASK_ENV",
    "WORKER_ENV",
    "ProcInfo",
    "ProcessTable",
    "ProcessWatch",
    "WatchedRun",
    "become_subreaper",
    "read_process_table",
    "reap_orphan_zombies",
    "shared_watch",
    "spawning",
    "sweep_orphans",
    "worker_marker",
]

log = logging.getLogger(__name__)

#: Marker variable that tags every process of one task (value: the task id).
TASK_ENV = "CODEX_TUI_TASK_ID"

#: pids of codex processes spawned by runners that asyncio has not reaped yet (never reaped,
#: signalled or swept by this module).
ACTIVE_CODEX_PIDS: set[int] = set()

_spawning = 0

_LINUX = sys.platform.startswith("linux")
_CLEANUP_ROUNDS = 4
_GONE_TIMEOUT_S = 2.0

#: The pid that made itself a child subreaper (the attribute is not inherited by fork).
_subreaper_pid: int | None = None


# -- subreaper -------------------------------------------------------------------------------


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``).

    Orphaned descendants (e.g. commands whose codex died) are then re-parented to this process
    instead of init. A subreaper must reap them: call :func:`reap_orphan_zombies` periodically.
    It also lets :meth:`ProcessWatch.sweep` skip its pass when nothing was left behind.

    Returns:
        True on success, False on other platforms or when the call fails.
    """
    global _subreaper_pid
    if not _LINUX:
        return False
    pr_set_child_subreaper = 36
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = int(libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
    if ok:
        _subreaper_pid = os.getpid()
    return ok


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """Wrap the start of a codex until its pid is in :data:`ACTIVE_CODEX_PIDS`: meanwhile no
    child is reaped here, so that a codex that exits at once keeps its exit status for asyncio.
    """
    global _spawning
    _spawning += 1
    try:
        yield
    finally:
        _spawning -= 1


def _is_subreaper() -> bool:
    return _subreaper_pid is not None and _subreaper_pid == os.getpid()


def own_children() -> list[int] | None:
    """This process's children, cheaply: the main thread's ``/proc/<pid>/task/<pid>/children``.

    Orphans re-parented to this process (as a subreaper) and codex processes spawned by an
    event loop in the main thread are there; children forked by other threads are not.

    Returns:
        The pids, or None where that file does not exist (not Linux, or a kernel without
        ``CONFIG_PROC_CHILDREN``).
    """
    if not _LINUX:
        return None
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as file:
            return [int(word) for word in file.read().split()]
    except (OSError, ValueError):
        return None


def _waitpid_nohang(pid: int) -> bool:
    """Reap ``pid`` if it is an exited child; True if it was reaped."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def reap_orphan_zombies() -> list[int]:
    """Reap zombie children of this process that are not a running codex of a runner or a
    git command of :mod:`server_client.workspaces`.

    Only needed after :func:`become_subreaper`. Cheap: reads the main thread's children list
    (psutil's full process scan only where that list is unavailable). Must not be used if the
    main thread starts other subprocesses whose exit status matters and that their owner does
    not reap at once.

    Returns:
        The pids reaped.
    """
    if _spawning or git_starting():
        return []
    children = own_children()
    if children is None:
        try:
            children = [child.pid for child in psutil.Process().children()]
        except psutil.Error:
            return []
    keep = ACTIVE_CODEX_PIDS | RUNNING_GIT_PIDS
    return [pid for pid in children if pid not in keep and _waitpid_nohang(pid)]


def _nothing_left_behind() -> bool:
    """True when no process that a finished codex started can still be alive.

    Holds when this process is a subreaper and each of its children is a running codex or a
    zombie (reaped here): any live process codex started is then gone, since it would have been
    re-parented to this process or be a descendant of such a child.
    """
    if not _is_subreaper() or _spawning or git_starting():
        return False
    children = own_children()
    if children is None:
        return False
    for pid in children:
        if pid in ACTIVE_CODEX_PIDS or pid in RUNNING_GIT_PIDS or _waitpid_nohang(pid):
            continue
        return False
    return True


# -- one pass over /proc ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One process as a pass saw it.

    Attributes:
        ppid: parent pid.
        pgid: process group id.
        start: start time (psutil's ``create_time``, s since the epoch); with the pid it
            names the process.
        zombie: it exited and waits for its parent.
        marker: the value of :data:`TASK_ENV` in its environment; None when absent or
            unreadable (another user's process, a zombie).
    """

    ppid: int
    pgid: int
    start: float
    zombie: bool
    marker: str | None


class ProcessTable:
    """Every process of the machine at one pass: ``procs`` maps pid → :class:`ProcInfo`."""

    def __init__(self, procs: dict[int, ProcInfo]) -> None:
        self.procs = procs
        self._children: dict[int, list[int]] | None = None

    def children_of(self, pid: int) -> list[int]:
        """The pids whose parent is ``pid``."""
        if self._children is None:
            index: dict[int, list[int]] = {}
            for child, info in self.procs.items():
                index.setdefault(info.ppid, []).append(child)
            self._children = index
        return self._children.get(pid, [])

    def descendants(self, pids: Iterable[int]) -> set[int]:
        """Every descendant of ``pids`` (not ``pids`` themselves unless one descends from
        another)."""
        found: set[int] = set()
        stack = [child for pid in pids for child in self.children_of(pid)]
        while stack:
            pid = stack.pop()
            if pid not in found:
                found.add(pid)
                stack.extend(self.children_of(pid))
        return found

    def ancestors(self, pid: int) -> set[int]:
        """``pid`` and its ancestors."""
        found: set[int] = set()
        while pid and pid not in found:
            found.add(pid)
            info = self.procs.get(pid)
            if info is None:
                break
            pid = info.ppid
        return found


def read_process_table(markers: dict[tuple[int, float], str | None]) -> ProcessTable:
    """Read every process of the machine once (blocking: call it in a thread).

    Args:
        markers: cache of :data:`TASK_ENV` values by ``(pid, start)``; read and updated in
            place (entries of processes that are gone are dropped), so that each process's
            environment is read once in its life.

    Returns:
        The table of this moment.
    """
    procs: dict[int, ProcInfo] = {}
    seen: set[tuple[int, float]] = set()
    for proc in psutil.process_iter(["ppid", "create_time", "status"]):
        try:
            pgid = os.getpgid(proc.pid)
        except OSError:
            continue
        zombie = proc.info["status"] == psutil.STATUS_ZOMBIE
        key = (proc.pid, float(proc.info["create_time"] or 0.0))
        if key not in markers:
            try:
                markers[key] = None if zombie else proc.environ().get(TASK_ENV)
            except (psutil.Error, OSError):
                markers[key] = None
        seen.add(key)
        procs[proc.pid] = ProcInfo(proc.info["ppid"] or 0, pgid, key[1], zombie, markers[key])
    for key in [k for k in markers if k not in seen]:
        del markers[key]
    return ProcessTable(procs)


def _start_of(pid: int) -> float | None:
    """The start time of ``pid`` as :func:`read_process_table` gives it, or None if gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _kill_and_wait(victims: dict[int, float], skip: set[int], timeout_s: float) -> None:
    """SIGKILL each ``pid → start`` of ``victims`` still the same process (and its group when it
    leads one), then wait until each is gone or a zombie, reaping zombies that are our children.
    Blocking: runs in a thread."""
    own_pgid = os.getpgid(0)
    me = os.getpid()
    for pid, start in victims.items():
        if _start_of(pid) != start:
            continue
        try:
            pgid = os.getpgid(pid)
            if pgid == pid and pgid != own_pgid and pgid not in skip:
                os.killpg(pgid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    pending = list(victims)
    deadline = time.monotonic() + timeout_s
    while pending:
        still = []
        for pid in pending:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    if proc.create_time() != victims[pid]:
                        continue  # gone, and the pid taken by another process
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        if proc.ppid() == me and pid not in ACTIVE_CODEX_PIDS:
                            _waitpid_nohang(pid)
                        continue
            except psutil.Error:
                continue
            still.append(pid)
        pending = still
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(0.01)


# -- the watch -------------------------------------------------------------------------------


@dataclass(eq=False)
class WatchedRun:
    """What a :class:`ProcessWatch` knows of one codex run.

    Attributes:
        task_id: the task's id (the :data:`TASK_ENV` value of its processes).
        pid: codex's pid, also its process group id.
        known: descendants of codex seen while it ran, pid → start time.
        swept: pids the sweep killed, pid → start time.
    """

    task_id: str
    pid: int
    known: dict[int, float] = field(default_factory=dict)
    swept: dict[int, float] = field(default_factory=dict)
    _start: float | None = None


class ProcessWatch:
    """Tracks the processes of every codex run of this worker process with one shared pass.

    Use one watch per event loop (:func:`shared_watch`). :meth:`watch` a run when codex started,
    :meth:`refresh` for a fresh view (cancel time), :meth:`sweep` once codex exited. While runs
    are watched, a pass runs every ``interval_s`` seconds, whatever their number.

    Args:
        interval_s: seconds between periodic passes while runs are watched.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        #: passes done so far (each reads every process of the machine once).
        self.passes = 0
        self._runs: set[WatchedRun] = set()
        self._markers: dict[tuple[int, float], str | None] = {}
        self._next: asyncio.Future[ProcessTable] | None = None
        self._driver: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def runs(self) -> int:
        """How many runs are watched now."""
        return len(self._runs)

    def watch(self, task_id: str, pid: int) -> WatchedRun:
        """Start recording the descendants of codex ``pid`` of task ``task_id``; call it from
        the event loop's thread right after codex started."""
        run = WatchedRun(task_id, pid)
        self._runs.add(run)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick(), name="process-watch"
            )
        return run

    def unwatch(self, run: WatchedRun) -> None:
        """Stop recording ``run`` (its codex exited). Idempotent."""
        self._runs.discard(run)

    async def refresh(self) -> ProcessTable:
        """A pass that starts after this call (callers at the same moment share it); records
        the descendants of every watched run. Never raises for the scan itself: a scan that
        fails is logged and gives an empty table.

        Returns:
            The table the pass read.
        """
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if self._driver is None or self._driver.done():
                self._driver = asyncio.get_running_loop().create_task(self._drive())
        return await asyncio.shield(self._next)

    async def sweep(self, run: WatchedRun) -> dict[int, float]:
        """After codex exited: SIGKILL every process of ``run`` still alive (see the module
        docstring), reap our zombies, stop watching it.

        Returns:
            The processes killed, pid → start time (empty when nothing was left).
        """
        self.unwatch(run)
        if _nothing_left_behind():  # then codex's group is empty too
            return run.swept
        for _ in range(_CLEANUP_ROUNDS):
            table = await self.refresh()
            skip = table.ancestors(os.getpid()) | ACTIVE_CODEX_PIDS
            victims = self._victims(run, table, skip)
            self._kill_group(run)
            if not victims:
                break
            log.info(
                "task %s: killing %d leftover process(es) of codex: %s",
                run.task_id,
                len(victims),
                sorted(victims),
            )
            await asyncio.to_thread(_kill_and_wait, victims, skip, _GONE_TIMEOUT_S)
            run.swept.update(victims)
        reap_orphan_zombies()
        return run.swept

    async def kill_descendants(self, run: WatchedRun) -> dict[int, float]:
        """SIGKILL every process ``run``'s codex started (its descendants now, those recorded
        before, and the processes carrying the task's marker), but not codex itself: for
        ``codex app-server``, whose interrupt leaves the commands of the turn running.

        Returns:
            The processes killed, pid → start time.
        """
        table = await self.refresh()
        skip = table.ancestors(os.getpid()) | ACTIVE_CODEX_PIDS | {run.pid}
        procs = table.procs
        seeds = {
            pid
            for pid, start in run.known.items()
            if (info := procs.get(pid)) is not None and info.start == start
        }
        seeds.update(pid for pid, info in procs.items() if info.marker == run.task_id)
        seeds.update(table.descendants([run.pid]))
        everyone = seeds | table.descendants(seeds)
        victims = {
            pid: procs[pid].start
            for pid in everyone
            if pid not in skip and pid in procs and not procs[pid].zombie
        }
        if victims:
            log.info(
                "task %s: killing %d process(es) codex started: %s",
                run.task_id,
                len(victims),
                sorted(victims),
            )
            await asyncio.to_thread(_kill_and_wait, victims, skip, _GONE_TIMEOUT_S)
            for pid in victims:
                run.known.pop(pid, None)
        reap_orphan_zombies()
        return victims

    # ---- internals ---------------------------------------------------------------------

    @staticmethod
    def _kill_group(run: WatchedRun) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if run.pid != os.getpgid(0):
                os.killpg(run.pid, signal.SIGKILL)

    @staticmethod
    def _victims(run: WatchedRun, table: ProcessTable, skip: set[int]) -> dict[int, float]:
        """The live processes of ``run`` in ``table`` and their descendants, pid → start."""
        procs = table.procs
        seeds = {
            pid
            for pid, start in run.known.items()
            if (info := procs.get(pid)) is not None and info.start == start
        }
        seeds.update(
            pid for pid, info in procs.items() if info.marker == run.task_id or info.pgid == run.pid
        )
        everyone = seeds | table.descendants(seeds)
        return {
            pid: procs[pid].start
            for pid in everyone
            if pid not in skip and pid in procs and not procs[pid].zombie
        }

    async def _tick(self) -> None:
        while self._runs:
            await asyncio.sleep(self.interval_s)
            if self._runs:
                await self.refresh()

    async def _drive(self) -> None:
        while self._next is not None:
            done, self._next = self._next, None
            runs = list(self._runs)
            try:
                table = await asyncio.to_thread(read_process_table, self._markers)
            except Exception:  # an unexpected /proc layout: go on with what is known
                log.exception("scanning processes failed")
                table = ProcessTable({})
            self.passes += 1
            self._record(table, runs)
            done.set_result(table)

    @staticmethod
    def _record(table: ProcessTable, runs: list[WatchedRun]) -> None:
        """Add to each run the descendants its codex has in ``table`` (if codex is still the
        process the run started with)."""
        for run in runs:
            info = table.procs.get(run.pid)
            if info is None or info.zombie:
                continue
            if run._start is None:
                run._start = info.start
            elif run._start != info.start:
                continue
            for pid in table.descendants([run.pid]):
                run.known.setdefault(pid, table.procs[pid].start)


_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ProcessWatch] = (
    weakref.WeakKeyDictionary()
)


def shared_watch() -> ProcessWatch:
    """The :class:`ProcessWatch` of the running event loop (created on first use, 1 s interval).

    Raises:
        RuntimeError: no event loop is running.
    """
    loop = asyncio.get_running_loop()
    watch = _WATCHES.get(loop)
    if watch is None:
        watch = _WATCHES[loop] = ProcessWatch()
    return watch


# -- orphans of a previous worker process ----------------------------------------------------

#: Marker variable that tags every process a worker process started (through codex's
#: environment, beside :data:`TASK_ENV`): ``<worker pid>:<its start time>:<its state folder>``.
WORKER_ENV = "CODEX_TUI_WORKER"


def worker_marker(state_dir: str, pid: int | None = None) -> str:
    """The :data:`WORKER_ENV` value of the worker process ``pid`` (default: this one) whose
    state folder is ``state_dir`` (absolute): its pid and start time name the process, the
    folder names the worker (two workers on one machine have two folders)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{psutil.Process(pid).create_time():.3f}:{state_dir}"


def _marker_owner_alive(marker: str) -> bool:
    """Whether the worker process a :data:`WORKER_ENV` value names still runs (same pid,
    same start time: a reused pid is another process)."""
    pid_text, _, rest = marker.partition(":")
    start_text, _, _ = rest.partition(":")
    try:
        pid, start = int(pid_text), float(start_text)
        return abs(psutil.Process(pid).create_time() - start) < 0.01
    except (ValueError, psutil.Error):
        return False


def sweep_orphans(state_dir: str, timeout_s: float = _GONE_TIMEOUT_S) -> list[int]:
    """Kill the processes an earlier worker process of the state folder ``state_dir`` left
    behind: this user's processes whose :data:`WORKER_ENV` names that folder and a worker
    process that is gone (e.g. killed with ``kill -9``: codex died with it, but a command
    codex started in a session of its own lives on). Each one's process group gets SIGKILL
    (when it is not this process's), then the process itself. Processes of another state
    folder (another worker on the machine), of a worker process that still runs and of
    other users are never touched. Blocking (reads ``/proc``): call it in a thread.

    Args:
        state_dir: This worker's state folder (absolute), as in :func:`worker_marker`.
        timeout_s: How long to wait for the killed processes to be gone (s).

    Returns:
        The pids killed.
    """
    me, uid, own_group = os.getpid(), os.getuid(), os.getpgid(0)
    suffix = f":{state_dir}"
    victims: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "uids", "environ", "status"]):
        try:
            info = proc.info
            if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if info["uids"] is None or info["uids"].real != uid:
                continue
            marker = (info["environ"] or {}).get(WORKER_ENV)
            if not marker or not marker.endswith(suffix) or _marker_owner_alive(marker):
                continue
            victims.append(proc)
        except psutil.Error:
            continue
    for proc in victims:
        log.warning(
            "killing pid %d: left behind by an earlier worker process (task %s)",
            proc.pid,
            (proc.info["environ"] or {}).get(TASK_ENV, "?"),
        )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(proc.pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(victims, timeout=timeout_s)
    return [proc.pid for proc in victims]
