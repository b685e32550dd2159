"""Provides the events of ``codex-tui logs`` and ``submit --follow`` for a terminal or a pipe:
rendered like the TUI's pane (colour only on a terminal, and never with NO_COLOR), or as JSON
lines. Both are safe to print: no control sequence from codex reaches the terminal
(docs/reliability.md T1)."""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console

from codex_tui.events.export import jsonl_line
from codex_tui.events.pane import RenderState, render_event
from server_client.models import Event

__all__ = ["EventPrinter", "JsonLinePrinter"]


class EventPrinter:
    """Prints one task's events in order, keeping the render state (e.g. token usage deltas).

    Args:
        file: Where to print (default: stdout).
    """

    def __init__(self, file: TextIO | None = None) -> None:
        self.console = Console(file=file or sys.stdout, soft_wrap=True, highlight=False)
        self.state = RenderState()

    def print(self, event: Event) -> None:
        """Render and print one event."""
        for renderable in render_event(event, self.state):
            self.console.print(renderable)


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
