"""Provides ``EventPrinter``: the events of ``codex-tui logs``/``submit --follow`` for a terminal
or a pipe, rendered like the TUI (colour only on a terminal, and never with NO_COLOR)."""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console

from codex_tui.widgets.render import RenderState, render_event
from server_client.models import Event


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
