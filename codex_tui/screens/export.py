"""Provides ExportModal, which asks where to write a task's transcript, and export_transcript,
which asks and then writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import httpx
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Static

from codex_tui.events.export import export_task, format_for_path
from codex_tui.failures import describe_action_failure
from server_client.client import ApiError, CodexTuiClient
from server_client.models import Task

__all__ = ["ExportModal", "export_transcript"]


def export_transcript(screen: Screen[Any], client: CodexTuiClient, task: Task) -> None:
    """Ask for a file (:class:`ExportModal`, offering ``codex-task-<id>.md`` in the directory
    the TUI was started in), then write ``task``'s whole transcript there in a worker of
    ``screen`` (group ``export``); a toast says how many events were written, or why not."""
    default = Path.cwd() / f"codex-task-{task.id[:8]}.md"

    def chosen(path: Path | None) -> None:
        if path is not None:
            screen.run_worker(
                _export(screen, client, task, path), group="export", exit_on_error=False
            )

    screen.app.push_screen(ExportModal(default), chosen)


async def _export(screen: Screen[Any], client: CodexTuiClient, task: Task, path: Path) -> None:
    """Write the transcript with the task's current record in its header (the pane's may
    be the one it had when it was submitted)."""
    fmt = format_for_path(path)
    try:
        task = await client.get_task(task.id)
        with path.open("w", encoding="utf-8") as file:
            count = await export_task(client, task, file, fmt)
    except (ApiError, httpx.HTTPError) as error:
        screen.notify(describe_action_failure(error), title="Export failed", severity="error")
        return
    except OSError as error:
        screen.notify(f"Cannot write {path}: {error.strerror}", severity="error")
        return
    screen.notify(f"Wrote {count} events to {path}", title="Exported")


class ExportModal(ModalScreen[Path | None]):
    """Asks for a file name; dismisses with the absolute path (Enter) or None (Escape).

    The format follows the name: ``.jsonl`` writes one event envelope per line, anything else
    Markdown. A relative name is taken from the directory the TUI was started in.

    Args:
        default: The path to offer.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_modal", "Cancel", id="export-cancel"),
    ]

    DEFAULT_CSS = """
    ExportModal {
        align: center middle;
        background: $background 60%;
    }
    ExportModal > #export-dialog {
        width: 70;
        max-width: 95%;
        height: auto;
        border: thick $primary;
        background: $panel;
        padding: 1 2;
    }
    ExportModal #export-hint {
        color: $foreground-muted;
        margin-top: 1;
    }
    ExportModal #export-error {
        color: $error;
        display: none;
    }
    ExportModal.-error #export-error {
        display: block;
    }
    """

    def __init__(self, default: Path) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog"):
            yield Static("Export the transcript to", id="export-title")
            yield Input(str(self.default), id="export-path")
            yield Static(id="export-error")
            yield Static(
                Content.from_markup(
                    "[b]enter[/b] export · [b]esc[/b] cancel · "
                    "a .jsonl name writes JSON lines, anything else Markdown"
                ),
                id="export-hint",
            )

    def on_mount(self) -> None:
        """Put the cursor in the path."""
        self.query_one("#export-path", Input).focus()

    def action_dismiss_modal(self) -> None:
        """Cancel the export."""
        self.dismiss(None)

    @on(Input.Submitted, "#export-path")
    def _submit(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            self._error("Enter a file name.")
            return
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if path.is_dir():
            self._error(f"{path} is a folder; enter a file name.")
            return
        if not path.parent.is_dir():
            self._error(f"The folder {path.parent} does not exist.")
            return
        self.dismiss(path)

    def _error(self, message: str) -> None:
        self.query_one("#export-error", Static).update(Content(message))
        self.add_class("-error")
