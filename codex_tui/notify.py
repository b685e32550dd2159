"""Provides Notifier: how the TUI announces a finished task or an approval codex waits for
(toast, bell, desktop notification).

Each channel has its own switch in ``[notify]`` (:class:`codex_tui.config.NotifySettings`).
The desktop notification is OSC 9 (``ESC ] 9 ; text BEL``), which iTerm2, WezTerm, ghostty,
kitty and foot show as a system notification (the text starts with ``codex-tui:``, never with
the digits ConEmu-style terminals read as a subcommand); inside tmux it is wrapped in
tmux's passthrough (``ESC P tmux; ... ESC \\``, every ESC inside doubled), which tmux ≥ 3.3
forwards when ``allow-passthrough`` is on. The text is stripped of control characters (C0,
DEL, C1), so a prompt cannot end the sequence early or smuggle in its own escapes.

The notifier writes nothing itself: it is given ``write`` (raw terminal output, which the app
sends through its driver), ``bell`` and ``toast`` callables, which keeps it testable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal, Protocol

from codex_tui.events.view import status_icon
from server_client.enums import TaskStatus
from server_client.text import truncate

if TYPE_CHECKING:
    from codex_tui.config import NotifySettings
    from server_client.models import Task

__all__ = [
    "DESKTOP_TEXT_LIMIT",
    "Notifier",
    "Severity",
    "Toast",
    "clean_text",
    "osc9",
]

#: Longest desktop notification text, in characters.
DESKTOP_TEXT_LIMIT = 200

Severity = Literal["information", "warning", "error"]

ESC = "\x1b"
BEL = "\x07"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_SEVERITY: dict[TaskStatus, Severity] = {
    TaskStatus.COMPLETED: "information",
    TaskStatus.FAILED: "error",
    TaskStatus.LOST: "error",
    TaskStatus.CANCELED: "warning",
}


class Toast(Protocol):
    """Shows a toast (the app passes a wrapper of :meth:`textual.app.App.notify`)."""

    def __call__(self, message: str, *, title: str, severity: Severity) -> None:
        """Show ``message`` under ``title``; the text is plain, never markup."""


def clean_text(text: str, limit: int = DESKTOP_TEXT_LIMIT) -> str:
    """``text`` on one line without control characters, cut to ``limit`` characters (with …)."""
    return truncate(" ".join(_CONTROL.sub(" ", text[: limit * 4]).split()), limit)


def osc9(text: str, *, tmux: bool = False) -> str:
    """The OSC 9 desktop notification for ``text`` (cleaned), wrapped for tmux if asked."""
    sequence = f"{ESC}]9;{clean_text(text)}{BEL}"
    if tmux:
        return f"{ESC}Ptmux;{sequence.replace(ESC, ESC + ESC)}{ESC}\\"
    return sequence


class Notifier:
    """Announces finished tasks on the channels ``settings`` switches on.

    Args:
        settings: The ``[notify]`` switches.
        write: Writes raw text to the terminal (for the OSC 9 sequence).
        bell: Rings the terminal bell.
        toast: Shows a toast.
        environ: The environment, for ``desktop = "auto"`` and ``TMUX`` (default: os.environ).
    """

    def __init__(
        self,
        settings: NotifySettings,
        *,
        write: Callable[[str], None],
        bell: Callable[[], None],
        toast: Toast,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        from codex_tui.config import desktop_supported  # pydantic: settings exist, so loaded

        self.settings = settings
        self._write = write
        self._bell = bell
        self._toast = toast
        env = os.environ if environ is None else environ
        desktop = settings.desktop
        self.desktop: bool = desktop_supported(env) if desktop == "auto" else bool(desktop)
        """Whether OSC 9 notifications are sent ("auto" resolved)."""
        self.tmux: bool = bool(env.get("TMUX"))
        """Whether the OSC 9 sequence is wrapped in tmux's passthrough."""

    def task_finished(self, task: Task, *, toast: bool = True) -> None:
        """Announce that ``task`` ended; a task that has not ended is ignored. ``toast``
        False leaves the toast out whatever the settings say (the task is on the screen)."""
        severity = _SEVERITY.get(task.status)
        if severity is None:
            return
        status = task.status.value
        prompt = clean_text(task.prompt, 120)
        if self.settings.toast and toast:
            message = prompt
            if task.error and severity == "error":
                message += "\n" + clean_text(task.error, 160)
            self._toast(
                message,
                title=f"{status_icon(task.status)} Task {status}",
                severity=severity,
            )
        if self.settings.bell:
            self._bell()
        if self.desktop:
            self._write(osc9(f"codex-tui: task {status}: {task.prompt}", tmux=self.tmux))

    def approval_needed(self, task: Task) -> None:
        """Announce that codex waits for an approval in ``task`` (it needs the owner)."""
        if self.settings.toast:
            self._toast(
                clean_text(task.prompt, 120),
                title=f"{status_icon(TaskStatus.WAITING)} Approval needed",
                severity="warning",
            )
        if self.settings.bell:
            self._bell()
        if self.desktop:
            self._write(osc9(f"codex-tui: approval needed: {task.prompt}", tmux=self.tmux))
