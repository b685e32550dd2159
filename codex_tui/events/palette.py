"""Provides Palette: the Rich style of each semantic role (error, success, muted, ...), built
from the app's theme variables, so nothing outside the themes picks a colour."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from codex_tui.events.view import Tone
from server_client.enums import TaskStatus

__all__ = ["Palette"]


@dataclass(frozen=True)
class Palette:
    """Rich styles for each semantic role of the event view.

    The app builds one from its theme variables (:meth:`from_theme_variables`); the defaults
    only serve tests and other plain-Rich uses.
    """

    error: str = "red"
    warning: str = "yellow"
    success: str = "green"
    accent: str = "cyan"
    primary: str = "blue"
    muted: str = "dim"

    @classmethod
    def from_theme_variables(cls, variables: Mapping[str, str]) -> Palette:
        """Build a palette from Textual theme variables (``error``, ``warning``, ...)."""

        def pick(name: str, default: str) -> str:
            value = variables.get(name, "")
            # Rich takes #RRGGBB; drop an alpha channel, ignore anything else.
            if value.startswith("#") and len(value) in (7, 9):
                return value[:7]
            return default

        return cls(
            error=pick("error", cls.error),
            warning=pick("warning", cls.warning),
            success=pick("success", cls.success),
            accent=pick("accent", cls.accent),
            primary=pick("primary", cls.primary),
        )

    def for_status(self, status: TaskStatus) -> str:
        """The style of a task status."""
        return {
            TaskStatus.QUEUED: self.muted,
            TaskStatus.RUNNING: self.accent,
            TaskStatus.WAITING: self.warning,
            TaskStatus.IDLE: self.primary,
            TaskStatus.COMPLETED: self.success,
            TaskStatus.FAILED: self.error,
            TaskStatus.CANCELED: self.warning,
            TaskStatus.LOST: self.error,
        }.get(status, "")

    def for_tone(self, tone: Tone) -> str:
        """The style of a :data:`~codex_tui.events.view.Tone`."""
        styles: dict[Tone, str] = {
            "muted": self.muted,
            "success": self.success,
            "error": self.error,
            "warning": self.warning,
            "accent": self.accent,
        }
        return styles[tone]
