"""Provides KeysModal: every key binding of the app, with its current keys and binding id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["KeyRow", "KeysModal"]

#: One line of the modal: section, keys as shown, description, binding id ("" when none).
KeyRow = tuple[str, str, str, str]


class KeysModal(ModalScreen[None]):
    """Lists key bindings by section: the keys that trigger each (after the keymap), what it
    does, and its binding id (the name to use in config.toml's ``[keymap]``).

    Scroll with the arrow and page keys; ``escape``, ``q`` or ``?`` closes it.

    Args:
        sections: (title, bindings) pairs; each binding's ``key`` holds its current keys,
            comma-separated (what :func:`codex_tui.commands.binding_sections` returns).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close", id="close-keys"),
    ]

    DEFAULT_CSS = """
    KeysModal {
        align: center middle;
        background: $background 60%;
    }
    KeysModal > #keys-dialog {
        width: 78;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $primary;
        border-title-color: $primary;
        border-subtitle-color: $foreground-muted;
        background: $panel;
    }
    KeysModal #keys-scroll {
        height: auto;
        max-height: 100%;
        padding: 0 1;
        scrollbar-size-vertical: 1;
        background: $panel;
    }
    KeysModal #keys-scroll:focus {
        background-tint: $foreground 0%;
    }
    KeysModal #keys-table {
        width: 1fr;
    }
    """

    def __init__(self, sections: Sequence[tuple[str, Sequence[Binding]]]) -> None:
        super().__init__()
        self.sections = [(title, list(bindings)) for title, bindings in sections]

    @property
    def rows(self) -> list[KeyRow]:
        """What the modal lists, one row per binding."""
        rows: list[KeyRow] = []
        for title, bindings in self.sections:
            for binding in bindings:
                rows.append((title, self._keys(binding), binding.description, binding.id or ""))
        return rows

    def compose(self) -> ComposeResult:
        with Vertical(id="keys-dialog") as dialog:
            dialog.border_title = "Keys"
            dialog.border_subtitle = Content("ids go in config.toml [keymap] · escape closes")
            with VerticalScroll(id="keys-scroll"):
                yield Static(self._table(), id="keys-table")

    def on_mount(self) -> None:
        """Scroll keys go to the list."""
        self.query_one("#keys-scroll").focus()

    def action_close(self) -> None:
        """Close the modal."""
        self.dismiss(None)

    def _keys(self, binding: Binding) -> str:
        keys = [key for key in binding.key.split(",") if key]
        return ", ".join(self.app.get_key_display(binding.with_key(key)) for key in keys)

    def _table(self) -> Table:
        table = Table(box=None, expand=True, show_edge=False, pad_edge=False, padding=(0, 1))
        table.add_column("key", no_wrap=True, max_width=18)
        table.add_column("action", ratio=1)
        table.add_column("id", no_wrap=True, style="dim")
        first = True
        for title, bindings in self.sections:
            if not bindings:
                continue
            if not first:
                table.add_row("", "", "")
            first = False
            table.add_row(Text(title, style="bold"), "", "")
            for binding in bindings:
                table.add_row(self._keys(binding), binding.description or "—", binding.id or "")
        return table
