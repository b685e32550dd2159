"""Provides what a queued task waits for when none of its owner's online workers can take
it: routed to a label or a worker name that no online worker has, it queues until one comes
(docs/design.md, Claim). The CLI warns at ``submit`` and ``ls`` shows it; the TUI can use the
same functions with the tasks and workers it has.

The matching is the server's routing rule: a task with ``target_worker`` goes to the worker
of that name only, a task with labels to a worker that has every one of them, and a task
naming a folder (its workdir, or its repository as a local path) to a worker whose workdir
roots hold that folder (:func:`folder_fits`): a path names a folder on some machine, and the
worker whose roots do not hold it would only fail the task.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from server_client.enums import TaskStatus
from server_client.models import Task, Worker
from server_client.paths import is_within

__all__ = [
    "can_take",
    "folder_fits",
    "missing_worker",
    "route_phrase",
    "task_folder",
    "waiting_for",
]


def task_folder(workdir: str | None, repo: str | None) -> str | None:
    """The folder a task names on its worker's machine: its workdir, else its repository
    when that is an absolute path (a URL is cloned, so it names no folder), else None (the
    worker's first root, or a clone)."""
    if workdir is not None:
        return workdir
    return repo if repo is not None and os.path.isabs(repo) else None


def folder_fits(workdir: str | None, repo: str | None, roots: Sequence[str]) -> bool:
    """True when a worker with workdir roots ``roots`` may run a task with this workdir and
    repository: the task names no folder, the worker reported no roots (an older worker,
    which checks by itself), or the folder lies inside one of the roots, by text (the worker
    checks the real path again when it starts codex)."""
    folder = task_folder(workdir, repo)
    if folder is None or not roots:
        return True
    normal = os.path.normpath(folder)
    return any(is_within(normal, os.path.normpath(root)) for root in roots)


def _routed_to(worker: Worker, task: Task) -> bool:
    """True when the task's name and labels let ``worker`` take it (its folder aside)."""
    if task.target_worker is not None and worker.name != task.target_worker:
        return False
    return set(task.labels) <= set(worker.labels)


def _ready_for(worker: Worker, task: Task) -> bool:
    """True when ``worker`` is online, able to run tasks (``cannot_run`` unset) and the
    task's name and labels let it take the task (its folder aside)."""
    return worker.online and worker.cannot_run is None and _routed_to(worker, task)


def can_take(worker: Worker, task: Task) -> bool:
    """True when ``worker`` is online, able to run tasks (``cannot_run`` unset), the task's
    routing (name, labels) allows it and its roots hold the task's folder."""
    return _ready_for(worker, task) and folder_fits(task.workdir, task.repo, worker.workdir_roots)


def _labels(labels: list[str]) -> str:
    """``label gpu`` or ``labels gpu, cuda``."""
    return f"label{'s' if len(labels) > 1 else ''} {', '.join(labels)}"


def route_phrase(task: Task) -> str:
    """The worker the task asks for, as a phrase: ``a worker with label gpu``,
    ``worker gpu-box``, ``worker gpu-box with label gpu``, ``an online worker``."""
    if task.target_worker is not None:
        named = f"worker {task.target_worker}"
        return f"{named} with {_labels(task.labels)}" if task.labels else named
    return f"a worker with {_labels(task.labels)}" if task.labels else "an online worker"


def _stuck(task: Task, workers: Iterable[Worker]) -> bool:
    """True when the task is queued and no online worker can take it."""
    return task.status is TaskStatus.QUEUED and not any(can_take(w, task) for w in workers)


def missing_worker(task: Task, workers: Iterable[Worker]) -> str | None:
    """Why nothing will run the queued task yet (``no online worker has label gpu``), or
    None when an online worker can take it (or it is not queued)."""
    workers = list(workers)
    if not _stuck(task, workers):
        return None
    folder = task_folder(task.workdir, task.repo)
    routed = [w for w in workers if _ready_for(w, task)]
    if routed and folder is not None:
        roots = "; ".join(f"{w.name}: {', '.join(w.workdir_roots)}" for w in routed)
        return f"no online worker {_for(task)}allows {folder} (their roots: {roots})"
    if task.target_worker is not None:
        said = f"no online worker is named {task.target_worker}"
        return f"{said} and has {_labels(task.labels)}" if task.labels else said
    if task.labels:
        return f"no online worker has {_labels(task.labels)}"
    return "no worker is online"


def _for(task: Task) -> str:
    """``named gpu-box ``, ``with label gpu `` or nothing: the routing, before a verb."""
    if task.target_worker is not None:
        return f"named {task.target_worker} "
    return f"with {_labels(task.labels)} " if task.labels else ""


def waiting_for(task: Task, workers: Iterable[Worker]) -> str | None:
    """``waiting for a worker with label gpu`` (or ``... whose roots hold /srv/app``) for a
    queued task no online worker can take, else None."""
    workers = list(workers)
    if not _stuck(task, workers):
        return None
    folder = task_folder(task.workdir, task.repo)
    if folder is not None and any(_ready_for(w, task) for w in workers):
        return f"waiting for {route_phrase(task)} whose roots hold {folder}"
    return f"waiting for {route_phrase(task)}"
