"""Provides the cold-start floor of the TUI's own stack: a bare Textual app with the shape of
codex-tui's first screen (a bordered list of three options beside a bordered pane, a footer
with key bindings), nothing else — no settings, no SDK, no theme, no state file.

The TUI benchmark spawns it under the same pseudo-terminal as ``codex-tui`` (``python -m
benchmarks.textual_floor``) and times its first full screen the same way, so the report says
how far the TUI's cold start is from what Textual alone costs on this machine.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, OptionList, Static


class FloorApp(App[None]):
    """The bare app: what any Textual TUI of this shape pays before its first frame."""

    CSS = """
    #list { width: 32; border: round $primary; }
    #pane { border: round $secondary; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "noop", "New"),
        Binding("enter", "noop", "Open"),
        Binding("h", "noop", "History"),
        Binding("q", "quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        """A list beside a pane, and the footer."""
        with Horizontal():
            yield OptionList("one", "two", "three", id="list")
            yield Static("no task selected", id="pane")
        yield Footer()

    def action_noop(self) -> None:
        """Bound keys do nothing here."""


def main() -> None:
    """Run the app until ``q``."""
    FloorApp().run()


if __name__ == "__main__":
    main()
