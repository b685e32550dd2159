"""Provides ConnectionBanner: one line that says the server cannot be reached and when the next
try is, hidden while it answers."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo

from textual.content import Content
from textual.timer import Timer
from textual.widgets import Static

from server_client.clock import utcnow

__all__ = ["ConnectionBanner"]

#: How often the countdown is redrawn while offline (s); the text changes once a second.
_TICK_S = 0.5


class ConnectionBanner(Static):
    """A one-line banner shown while the server cannot be reached, e.g.
    ``⚠ Cannot reach the server at http://127.0.0.1:8765 — retrying in 4 s · offline since
    12:03:04 · loaded history stays readable``.

    It is hidden while connected. Feed it with :meth:`set_state`, typically from
    :class:`~codex_tui.widgets.task_list.TaskList.ConnectionChanged`. While offline a timer
    counts down to the next try (twice a second, never otherwise); it stops on recovery.

    Args:
        clock: Returns the current time (injectable for a frozen countdown in snapshots).
        tz: The time zone of "offline since" (default: the local one).
    """

    DEFAULT_CSS = """
    ConnectionBanner {
        display: none;
        height: 1;
        padding: 0 1;
        color: $error;
        background: $error 15%;
        text-style: bold;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    ConnectionBanner.-offline {
        display: block;
    }
    """

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        tz: tzinfo | None = None,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's naming
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.clock: Callable[[], datetime] = clock or utcnow
        self.tz = tz
        self._error: str | None = None
        self._retry_at: datetime | None = None
        self._since: datetime | None = None
        self._ticker: Timer | None = None
        self._text = ""

    # -- public API -------------------------------------------------------------------------

    @property
    def offline(self) -> bool:
        """True while the banner is shown."""
        return self._error is not None

    @property
    def text(self) -> str:
        """The line shown (empty while connected)."""
        return self._text

    @property
    def retry_in_s(self) -> float | None:
        """Seconds until the next try (0 once it is due), or None when unknown or online."""
        if self._retry_at is None:
            return None
        return max((self._retry_at - self.clock()).total_seconds(), 0.0)

    def set_state(
        self, error: str | None, retry_in_s: float | None = None, since: datetime | None = None
    ) -> None:
        """Show why the server cannot be reached, or hide the banner (``error`` None).

        Args:
            error: Why the last try failed, or None once the server answers again.
            retry_in_s: Seconds until the next try, counted down on screen.
            since: When the server stopped answering.
        """
        self._error = error
        self._since = since if error is not None else None
        self._retry_at = (
            self.clock() + timedelta(seconds=retry_in_s)
            if error is not None and retry_in_s is not None
            else None
        )
        self.set_class(error is not None, "-offline")
        if error is None:
            if self._ticker is not None:
                self._ticker.pause()
        elif self._ticker is None:
            self._ticker = self.set_interval(_TICK_S, self._redraw)
        else:
            self._ticker.resume()
        self._redraw()

    # -- internals --------------------------------------------------------------------------

    def _line(self) -> str:
        if self._error is None:
            return ""
        parts = [f"⚠ {self._error}"]
        retry_in_s = self.retry_in_s
        if retry_in_s is None:
            parts.append(" — retrying")
        elif retry_in_s > 0:
            parts.append(f" — retrying in {math.ceil(retry_in_s)} s")
        else:
            parts.append(" — retrying now")
        if self._since is not None:
            parts.append(f" · offline since {self._since.astimezone(self.tz):%H:%M:%S}")
        parts.append(" · loaded history stays readable")
        return "".join(parts)

    def _redraw(self) -> None:
        text = self._line()
        if text != self._text:
            self._text = text
            self.update(Content(text))
