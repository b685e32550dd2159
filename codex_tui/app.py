"""Provides CodexTuiApp: the Textual app, its global bindings, themes and connection state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

from textual import on
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from codex_tui.screens.dashboard import DashboardScreen
from codex_tui.widgets.task_list import TaskList
from server_client.client import CodexTuiClient
from themes import APP_CSS_PATH, DEFAULT_THEME, THEMES

__all__ = ["CodexTuiApp"]


class CodexTuiApp(App[None]):
    """The codex-tui terminal UI: a dashboard of tasks and their live events.

    The caller builds the client (server URL and token). The app closes it when it exits only
    if ``close_client`` is set, which suits callers that hand the app to :meth:`App.run` (the
    client's connections belong to the app's event loop).

    Args:
        client: The SDK client for one server.
        default_workdir: Prefill for the compose screen's workdir field.
        clock: Current UTC time (injectable so that ages are deterministic in tests).
        poll_interval_s: Seconds between polls of the task list.
        close_client: Close ``client`` when the app exits.
    """

    CSS_PATH = APP_CSS_PATH
    TITLE = "codex-tui"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit"),
    ]

    def __init__(
        self,
        client: CodexTuiClient,
        *,
        default_workdir: str | None = None,
        clock: Callable[[], datetime] | None = None,
        poll_interval_s: float = 1.5,
        close_client: bool = False,
    ) -> None:
        super().__init__()
        self.client = client
        self.close_client = close_client
        self.default_workdir = default_workdir
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.connection_error: str | None = None
        """Why the server could not be reached, or None while it answers."""
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = DEFAULT_THEME

    def get_default_screen(self) -> Screen[None]:
        """The dashboard is the base screen."""
        return DashboardScreen(
            self.client,
            default_workdir=self.default_workdir,
            clock=self.clock,
            poll_interval_s=self.poll_interval_s,
        )

    async def on_unmount(self) -> None:
        """Close the client if asked to."""
        if self.close_client:
            await self.client.aclose()

    @on(TaskList.ConnectionChanged)
    def _notify_connection(self, message: TaskList.ConnectionChanged) -> None:
        previous = self.connection_error
        self.connection_error = message.error
        if message.error is not None and previous is None:
            self.notify(message.error, title="Connection problem", severity="error", timeout=6)
        elif message.error is None and previous is not None:
            self.notify("Connected to the server again.", title="Back online", timeout=3)
