"""Provides the contract's enumerations without pydantic: task states, sandboxes, event kinds.

:mod:`server_client.models` re-exports them; the ``codex-tui`` command imports them from here
to build its choices without loading pydantic (its cold start: tests/test_tui_startup.py).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "ApprovalDecision",
    "ApprovalKind",
    "ApprovalPolicy",
    "ApprovalState",
    "EventKind",
    "Runtime",
    "Sandbox",
    "TaskStatus",
]


class TaskStatus(StrEnum):
    """A task's state.

    ``queued → running → completed | failed | canceled | lost`` for a one-shot task (the
    ``exec`` runtime). A conversation (the ``app-server`` runtime) also has ``waiting`` (a
    turn is running and codex waits for an approval) and ``idle`` (the turn ended; the task
    takes a reply, which queues it again for the worker that holds its thread):
    ``queued → running ⇄ waiting → idle → queued → …``, ended by a cancel (``canceled``),
    a fatal error (``failed``) or a lost worker (``lost``). Terminal states never change.
    """

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    IDLE = "idle"
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


#: The states in which a worker holds the task's lease and codex is running a turn.
ACTIVE_STATUSES = frozenset({TaskStatus.RUNNING, TaskStatus.WAITING})


class Runtime(StrEnum):
    """How a worker runs codex for a task: ``app-server`` (``codex app-server`` over stdio:
    a conversation with replies, live deltas and approvals) or ``exec`` (one ``codex exec
    --json`` run, no replies or approvals)."""

    APP_SERVER = "app-server"
    EXEC = "exec"


class ApprovalPolicy(StrEnum):
    """Codex's ``-a/--ask-for-approval`` values: when codex asks before running a command or
    applying a change (docs/codex-facts.md): ``untrusted`` asks for every command,
    ``on-request`` when the model asks to leave the sandbox, ``never`` never asks."""

    UNTRUSTED = "untrusted"
    ON_REQUEST = "on-request"
    NEVER = "never"


class ApprovalKind(StrEnum):
    """What an approval asks: to run a ``command``, to apply a ``file_change``, or to answer
    codex's ``user_input`` questions (its ``request_user_input`` tool)."""

    COMMAND = "command"
    FILE_CHANGE = "file_change"
    USER_INPUT = "user_input"


class ApprovalDecision(StrEnum):
    """An answer to an approval, in codex's own words (app-server's ``decision``):
    ``accept`` (this once), ``acceptForSession`` (and the same again while codex's process
    keeps the thread loaded), ``decline`` (the model is told and the turn goes on) or
    ``cancel`` (declined, and the turn is interrupted). A ``user_input`` approval is answered
    with ``accept`` and its answers, or ``cancel``."""

    ACCEPT = "accept"
    ACCEPT_FOR_SESSION = "acceptForSession"
    DECLINE = "decline"
    CANCEL = "cancel"


class ApprovalState(StrEnum):
    """An approval's state: ``pending`` (codex waits), ``answered`` (once, by the owner) or
    ``withdrawn`` (the turn ended without an answer: interrupted, canceled, worker lost)."""

    PENDING = "pending"
    ANSWERED = "answered"
    WITHDRAWN = "withdrawn"


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
