"""Provides the events of ``codex-tui logs`` and ``submit --follow`` for a terminal or a pipe:
rendered like the TUI's pane (colour only on a terminal, and never with NO_COLOR), or as JSON
lines. Both are safe to print: no control sequence from codex reaches the terminal
(docs/reliability.md T1).

On a terminal, what is still running shows live below the printed events: an agent message
or a reasoning summary growing with its deltas, a running command with its timer and the
tail of its output (Rich's ``Live``, transient). When the item completes, the live view of
it goes and its final rendering is printed once, as the pane replaces it
(docs/reliability.md A5). To a pipe, items print as they complete (``--json`` has every
delta).
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from codex_tui.events.export import jsonl_line
from codex_tui.events.pane import RenderState, render_event, render_live
from codex_tui.events.view import LiveItem
from server_client.models import Event, EventKind, TaskStatus, utcnow
from server_client.text import one_line

__all__ = ["EventPrinter", "JsonLinePrinter"]

#: Most running items the live view shows at once (the newest ones).
LIVE_ITEMS = 3
#: Most lines of a running command's output the live view shows.
LIVE_OUTPUT_LINES = 8
#: How often the live view redraws (its timers), per second.
LIVE_REFRESH_PER_S = 4
#: The hints' words: what to type at a shell (the pane says which key).
CLI_KEYS = {"reply": "codex-tui reply"}


class EventPrinter:
    """Prints one task's events in order, keeping the render state (e.g. token usage deltas).

    Args:
        file: Where to print (default: stdout).
        live: Show running items live below the events (default: when ``file`` is a
            terminal; True treats ``file`` as one). Call :meth:`close` at the end to take the
            live view down.
        turns: How many turns came before the first event printed (the next ``turn.started``
            is numbered ``turns + 1``).
    """

    def __init__(
        self, file: TextIO | None = None, *, live: bool | None = None, turns: int = 0
    ) -> None:
        self.console = Console(
            file=file or sys.stdout,
            soft_wrap=True,
            highlight=False,
            force_terminal=True if live else None,
        )
        self.state = RenderState(turns=turns)
        self._show_live = self.console.is_terminal if live is None else live
        self._live: Live | None = None

    def print(self, event: Event) -> None:
        """Render and print one event (and redraw the live view)."""
        renderables = render_event(event, self.state, keys=CLI_KEYS)
        approval = _asked_approval(event)
        if approval is not None:
            renderables.append(
                Text(
                    f"  answer: codex-tui approve {approval} [--for-session]"
                    f" · codex-tui decline {approval} [--cancel-turn]",
                    style="dim",
                )
            )
        if not self._show_live:
            for renderable in renderables:
                self.console.print(renderable)
            return
        running = self._running()
        if event.codex is not None and any(
            item.seq == event.seq and item.kind == "command" for item in running
        ):
            renderables = []  # a command's "running…" line: the live view shows it
        if self._live is not None:
            self._live.refresh()  # what runs now, before anything prints above it
        for renderable in renderables:
            self.console.print(renderable)  # above the live view while it is up
        if not running:
            self.close()
        elif self._live is None:
            self._live = Live(
                get_renderable=self._live_view,
                console=self.console,
                transient=True,
                refresh_per_second=LIVE_REFRESH_PER_S,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start(refresh=True)

    def close(self) -> None:
        """Take the live view down (idempotent)."""
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()

    def _running(self) -> list[LiveItem]:
        """The items still running, oldest first (a copy: the live view's thread reads it)."""
        return [item for item in list(self.state.live.values()) if item.is_running]

    def _live_view(self) -> RenderableType:
        parts: list[RenderableType] = []
        now = utcnow()
        for item in self._running()[-LIVE_ITEMS:]:
            parts.extend(
                render_live(item, self.state.palette, max_output_lines=LIVE_OUTPUT_LINES, now=now)
            )
        return Group(*parts)


def _asked_approval(event: Event) -> str | None:
    """The id of the approval a ``waiting`` status event asks (None for other events)."""
    if event.kind is not EventKind.STATUS or not isinstance(event.data, dict):
        return None
    approval = event.data.get("approval")
    if event.status is TaskStatus.WAITING and isinstance(approval, dict):
        approval_id = approval.get("id")
        # the asking event carries the whole approval (its kind, its state); an answer to
        # another one while this waits carries only the id and the decision
        if isinstance(approval_id, str) and approval.get("state") == "pending":
            return one_line(approval_id)
    return None


class JsonLinePrinter:
    """Prints each event's envelope as one JSON line, DEL and C1 controls escaped.

    Args:
        file: Where to print (default: stdout).
    """

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file or sys.stdout

    def print(self, event: Event) -> None:
        """Print one event as a JSON line and flush, so a pipe sees it at once."""
        self.file.write(jsonl_line(event) + "\n")
        self.file.flush()

    def close(self) -> None:
        """Nothing to take down (for symmetry with :class:`EventPrinter`)."""
