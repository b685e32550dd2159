"""Provides the contract's enumerations without pydantic: task states, sandboxes, event kinds.

:mod:`server_client.models` re-exports them; the ``codex-tui`` command imports them from here
to build its choices without loading pydantic (its cold start: tests/test_tui_startup.py).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TERMINAL_STATUSES", "EventKind", "Sandbox", "TaskStatus"]


class TaskStatus(StrEnum):
    """A task's state: ``queued → running → completed | failed | canceled | lost``."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    LOST = "lost"

    @property
    def is_terminal(self) -> bool:
        """True for the states that never change again."""
        return self in TERMINAL_STATUSES


#: The states a task never leaves.
TERMINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.LOST}
)


class Sandbox(StrEnum):
    """Codex's ``-s/--sandbox`` modes (docs/codex-facts.md)."""

    READ_ONLY = "read-only"
    WORKSPACE_WRITE = "workspace-write"
    DANGER_FULL_ACCESS = "danger-full-access"


class EventKind(StrEnum):
    """What an event carries (see :mod:`server_client.models`): ``codex`` (a JSONL object as
    codex printed it), ``stdout`` (a stdout line that was not JSON), ``stderr`` (one stderr
    line) or ``status`` (a task state change recorded by the server)."""

    CODEX = "codex"
    STDOUT = "stdout"
    STDERR = "stderr"
    STATUS = "status"
