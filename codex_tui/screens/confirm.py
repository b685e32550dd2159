"""Provides ConfirmModal: a yes/no question that returns a bool."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

__all__ = ["ConfirmModal"]


class ConfirmModal(ModalScreen[bool]):
    """Asks a question; dismisses with True (``y``, or Enter on the confirm button) or False
    (``n``, ``q``, Escape, or the other button).

    Args:
        question: What to ask (plain text, not markup).
        confirm_label: Label of the confirming button.
        cancel_label: Label of the other button.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Yes", id="confirm"),
        Binding("n,q,escape", "dismiss_modal", "No", id="dismiss"),
        Binding("left,right", "toggle_focus", "Switch", show=False, id="switch-button"),
    ]

    DEFAULT_CSS = """
    ConfirmModal {
        align: center middle;
        background: $background 60%;
    }
    ConfirmModal > #confirm-dialog {
        width: 60;
        max-width: 90%;
        height: auto;
        border: thick $warning;
        background: $panel;
        padding: 1 2;
    }
    ConfirmModal #confirm-question {
        width: 1fr;
        margin-bottom: 1;
    }
    ConfirmModal #confirm-buttons {
        height: auto;
        align-horizontal: right;
    }
    ConfirmModal Button {
        margin-left: 2;
    }
    ConfirmModal #confirm-hint {
        width: 1fr;
        margin-top: 1;
        color: $foreground-muted;
        text-align: right;
    }
    """

    def __init__(
        self,
        question: str,
        *,
        confirm_label: str = "Yes",
        cancel_label: str = "No",
    ) -> None:
        super().__init__()
        self.question = question
        self.confirm_label = confirm_label
        self.cancel_label = cancel_label

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static(Content(self.question), id="confirm-question")
            with Horizontal(id="confirm-buttons"):
                yield Button(self.cancel_label, id="confirm-no")
                yield Button(self.confirm_label, variant="error", id="confirm-yes")
            yield Static(
                Content.from_markup(
                    "[b]y[/b] $yes · [b]n[/b]/[b]esc[/b] $no",
                    yes=self.confirm_label.lower(),
                    no=self.cancel_label.lower(),
                ),
                id="confirm-hint",
            )

    def on_mount(self) -> None:
        """Start on the safe answer."""
        self.query_one("#confirm-no", Button).focus()

    def action_confirm(self) -> None:
        """Answer yes."""
        self.dismiss(True)

    def action_dismiss_modal(self) -> None:
        """Answer no."""
        self.dismiss(False)

    def action_toggle_focus(self) -> None:
        """Move focus to the other button."""
        yes = self.query_one("#confirm-yes", Button)
        no = self.query_one("#confirm-no", Button)
        (no if yes.has_focus else yes).focus()

    @on(Button.Pressed, "#confirm-yes")
    def _yes_pressed(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-no")
    def _no_pressed(self) -> None:
        self.dismiss(False)
