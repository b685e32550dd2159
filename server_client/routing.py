"""Provides what a queued task waits for when none of its owner's online workers can take
it: routed to a label or a worker name that no online worker has, it queues until one comes
(docs/design.md, Claim). The CLI warns at ``submit`` and ``ls`` shows it; the TUI can use the
same functions with the tasks and workers it has.

The matching is the server's routing rule: a task with ``target_worker`` goes to the worker
of that name only, and a task with labels to a worker that has every one of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from server_client.enums import TaskStatus
from server_client.models import Task, Worker

__all__ = ["can_take", "missing_worker", "route_phrase", "waiting_for"]


def can_take(worker: Worker, task: Task) -> bool:
    """True when ``worker`` is online, able to run tasks (``cannot_run`` unset) and the
    task's routing (name, labels) allows it."""
    if not worker.online or worker.cannot_run is not None:
        return False
    if task.target_worker is not None and worker.name != task.target_worker:
        return False
    return set(task.labels) <= set(worker.labels)


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
    if not _stuck(task, workers):
        return None
    if task.target_worker is not None:
        said = f"no online worker is named {task.target_worker}"
        return f"{said} and has {_labels(task.labels)}" if task.labels else said
    if task.labels:
        return f"no online worker has {_labels(task.labels)}"
    return "no worker is online"


def waiting_for(task: Task, workers: Iterable[Worker]) -> str | None:
    """``waiting for a worker with label gpu`` for a queued task no online worker can
    take, else None."""
    return f"waiting for {route_phrase(task)}" if _stuck(task, workers) else None
