"""Provides PairingModal: a one-time pairing code, the command that uses it, and its expiry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from server_client.models import PairingCode, utcnow

__all__ = ["PairingModal", "format_remaining"]


def format_remaining(expires_at: datetime, now: datetime) -> str | None:
    """Time left such as ``9m 58s``, or None once ``expires_at`` has passed."""
    seconds = int((expires_at - now).total_seconds())
    if seconds <= 0:
        return None
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


class PairingModal(ModalScreen[None]):
    """Shows a pairing code big, the exact command to run on the other machine (selectable
    text; ``c`` copies it), and how long the code stays valid. Escape closes it.

    The modal only displays ``pairing``; the caller creates it with
    ``client.create_pairing_code()``. When the server has no public URL
    (``pairing.public_url`` is None) it says how to set one, since the command then names
    the address this TUI reached the server at, often a loopback one. The countdown ticks
    every second from ``clock``.

    Args:
        pairing: The code, its expiry and the command the server suggests.
        clock: Returns the current UTC time (injectable for a deterministic countdown).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "copy_command", "Copy command", id="copy-command"),
        Binding("escape,q", "close", "Close", id="close-pairing"),
    ]

    DEFAULT_CSS = """
    PairingModal {
        align: center middle;
        background: $background 60%;
    }
    PairingModal > #pairing-dialog {
        width: 76;
        max-width: 95%;
        height: auto;
        max-height: 95%;
        border: thick $primary;
        border-title-color: $primary;
        border-title-style: bold;
        background: $panel;
        padding: 0 2;
    }
    PairingModal #pairing-code {
        width: auto;
        height: 3;
        padding: 0 2;
        margin: 1 0 0 0;
        border: round $accent;
        color: $accent;
        text-style: bold;
    }
    PairingModal .pairing-text {
        width: 1fr;
        height: auto;
        margin-top: 1;
    }
    PairingModal #pairing-command {
        width: 1fr;
        height: auto;
        padding: 0 1;
        background: $surface;
        color: $foreground;
        text-style: bold;
    }
    PairingModal #pairing-options {
        width: 1fr;
        height: auto;
        color: $foreground-muted;
    }
    PairingModal #pairing-reach {
        width: 1fr;
        height: auto;
        margin-top: 1;
        color: $text-warning;
    }
    PairingModal #pairing-expiry {
        width: 1fr;
        height: auto;
        margin-top: 1;
        color: $warning;
    }
    PairingModal.-expired #pairing-expiry {
        color: $error;
        text-style: bold;
    }
    PairingModal #pairing-hint {
        width: 1fr;
        height: auto;
        margin-bottom: 1;
        color: $foreground-muted;
        text-align: right;
    }
    """

    def __init__(
        self,
        pairing: PairingCode,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.pairing = pairing
        self.clock: Callable[[], datetime] = clock or utcnow

    def compose(self) -> ComposeResult:
        with Vertical(id="pairing-dialog") as dialog:
            dialog.border_title = "Pair a worker"
            yield Static(Content(" ".join(self.pairing.code)), id="pairing-code")
            yield Static("On the other machine, run:", classes="pairing-text")
            yield Static(Content(self.pairing.command), id="pairing-command")
            yield Static(
                Content.from_markup(
                    "Add [b]--name NAME[/b] to name the worker and [b]--label L[/b] "
                    "(repeatable) to route tasks to it."
                ),
                id="pairing-options",
            )
            if self.pairing.public_url is None:
                # The command names the address this TUI reached the server at, which is
                # often loopback: say what makes it usable from another machine.
                yield Static(
                    Content.from_markup(
                        "This server has no public URL, so the command names the address "
                        "this TUI reached it at. If the other machine cannot reach that, set "
                        "[b]CODEX_TUI_SERVER_PUBLIC_URL[/b] on the server (README: Workers on "
                        "other machines)."
                    ),
                    id="pairing-reach",
                )
            yield Static(id="pairing-expiry")
            yield Static(
                Content.from_markup("[b]c[/b] copy command · [b]esc[/b] close"),
                id="pairing-hint",
            )

    def on_mount(self) -> None:
        """Show the time left and tick it down every second."""
        self._show_expiry()
        self.set_interval(1.0, self._show_expiry, name="pairing-countdown")

    @property
    def expired(self) -> bool:
        """True once the code's expiry has passed (by ``clock``)."""
        return format_remaining(self.pairing.expires_at, self.clock()) is None

    def action_copy_command(self) -> None:
        """Copy the command to the clipboard (through the terminal, OSC 52)."""
        self.app.copy_to_clipboard(self.pairing.command)
        self.notify("Copied the command (if the terminal allows clipboard access).")

    def action_close(self) -> None:
        """Close the modal."""
        self.dismiss(None)

    def _show_expiry(self) -> None:
        expires = self.pairing.expires_at.astimezone(UTC).strftime("%H:%M UTC")
        remaining = format_remaining(self.pairing.expires_at, self.clock())
        if remaining is None:
            text = f"Expired at {expires}. Close this and press p for a new code."
        else:
            text = f"Works once. Expires in {remaining} (at {expires})."
        self.set_class(remaining is None, "-expired")
        self.query_one("#pairing-expiry", Static).update(Content(text))
