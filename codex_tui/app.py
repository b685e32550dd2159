"""Provides CodexTuiApp: the Textual app, its global bindings, themes, keymap, command palette,
notifications and connection state."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer

from codex_tui.commands import (
    binding_commands,
    binding_sections,
    known_binding_ids,
    without_titles,
)
from codex_tui.deferred_client import DeferredClient, client_ready
from codex_tui.notify import Notifier, Severity
from codex_tui.screens.dashboard import DashboardScreen
from codex_tui.startup import StartedUp, StartUpError
from codex_tui.state import PaneLayout, TuiState, load_layout, save_layout, save_state
from codex_tui.textual_internals import exit_with_traceback_without_locals, write_to_terminal
from codex_tui.widgets.task_list import TaskList
from server_client.enums import TaskStatus
from themes import APP_CSS_PATH, DEFAULT_THEME, THEME_NAMES, THEMES

if TYPE_CHECKING:
    from codex_tui.config import TuiSettings
    from server_client.client import CodexTuiClient
    from server_client.models import Task

__all__ = ["LAYOUT_SAVE_DELAY_S", "CodexTuiApp"]

#: Seconds a change of the panes waits before it is written (each move in the task list
#: changes the active pane's task); what is still waiting is written when the app exits.
LAYOUT_SAVE_DELAY_S = 0.5


class CodexTuiApp(App[None]):
    """The codex-tui terminal UI: a dashboard of tasks and their live events.

    The caller builds the client (server URL and token). The app closes it when it exits only
    if ``close_client`` is set, which suits callers that hand the app to :meth:`App.run` (the
    client's connections belong to the app's event loop).

    Only codex-tui's themes are registered (:data:`themes.THEMES`). A theme chosen in the app
    (the palette's "Theme" picker or its "Theme: NAME" commands) is remembered in
    ``state_path``; config.toml is never written. So are the dashboard's panes, per server URL
    (``client.base_url``): their tasks in order, the active one and whether it is maximised,
    written :data:`LAYOUT_SAVE_DELAY_S` after they change and when the app exits, and brought
    back on the next start against the same server (:class:`DashboardScreen`'s ``layout``). An
    unknown theme or keymap binding id in ``settings`` shows a warning toast at start and is
    otherwise ignored.

    Args:
        client: The SDK client for one server (``codex-tui`` passes a
            :class:`~codex_tui.deferred_client.DeferredClient`, built after the first frame).
        default_workdir: Prefill for the compose screen's workdir field.
        clock: Current UTC time (injectable so that ages are deterministic in tests).
        poll_interval_s: Seconds between polls of the task list.
        close_client: Close ``client`` when the app exits.
        settings: Theme, keymap and notification settings (default: the built-in defaults,
            without reading config.toml or the environment).
        state_path: Where to remember the theme chosen in the app and the panes (default:
            nowhere).
        start_up: What ``codex-tui`` settles after the first frame (codex_tui.startup): run
            in a thread once that frame is drawn, its settings then replace ``settings``
            and ``client`` (a :class:`~codex_tui.deferred_client.DeferredClient` made
            without a server) is connected to its server; a :class:`StartUpError` exits
            the app with code 2, its message in :attr:`start_up_error`. None: ``settings``
            and ``client`` are final.
        theme: The theme of the frames drawn before ``start_up`` is done (None: the
            default); ``start_up``'s settings replace it, unremembered, when they differ.
    """

    CSS_PATH = APP_CSS_PATH
    TITLE = "codex-tui"

    # Toasts go to the top right, under the first row: at the bottom they covered the panes'
    # newest lines, their "↓ N new" counter and the footer.
    CSS = """
    ToastRack {
        dock: top;
        align: right top;
        margin-top: 1;
        margin-bottom: 0;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark", "show_keys", "Keys", show=False, id="show-keys"),
    ]

    def __init__(
        self,
        client: CodexTuiClient,
        *,
        default_workdir: str | None = None,
        clock: Callable[[], datetime] | None = None,
        poll_interval_s: float = 1.5,
        close_client: bool = False,
        settings: TuiSettings | None = None,
        state_path: Path | None = None,
        start_up: Callable[[], StartedUp] | None = None,
        theme: str | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.close_client = close_client
        self.default_workdir = default_workdir
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        if settings is None and start_up is None:
            from codex_tui.config import TuiSettings

            settings = TuiSettings.defaults()
        self.settings: TuiSettings | None = settings
        """The settings in force; None until ``start_up`` gave them."""
        self.state_path = state_path
        self._start_up = start_up
        self.start_up_error: str | None = None
        """Why ``start_up`` failed (the app then exits with code 2), for the caller to
        print once the terminal is back."""
        self.connection_error: str | None = None
        """Why the server could not be reached, or None while it answers."""
        self._warnings: list[str] = []
        self._remember_theme = False
        self._layout_to_save: PaneLayout | None = None
        self._saved_layout: PaneLayout | None = None
        self._layout_warned = False
        self._layout_timer: Timer | None = None
        for name in list(self.available_themes):
            self.unregister_theme(name)
        for ours in THEMES:
            self.register_theme(ours)
        self.notifier: Notifier | None = None
        """Announces finished tasks (:meth:`announce_finished`); None until the settings
        are known."""
        if settings is None:
            self.theme = theme if theme in THEME_NAMES else DEFAULT_THEME
        else:
            self._apply_settings(settings)

    def _apply_settings(self, settings: TuiSettings) -> None:
        """Put ``settings`` in force: theme (not remembered as a choice), keymap, notifier."""
        self.settings = settings
        wanted = settings.theme
        if wanted is not None and wanted not in THEME_NAMES:
            self._warnings.append(
                f"Unknown theme {wanted!r}; using {DEFAULT_THEME}. "
                f"Valid themes: {', '.join(THEME_NAMES)}."
            )
            wanted = None
        remember, self._remember_theme = self._remember_theme, False
        try:
            self.theme = wanted or DEFAULT_THEME
        finally:
            self._remember_theme = remember
        if settings.keymap:
            self.set_keymap(settings.keymap)
        self.notifier = Notifier(
            settings.notify, write=self._write_terminal, bell=self.bell, toast=self._toast
        )

    def get_default_screen(self) -> Screen[None]:
        """The dashboard is the base screen, with the panes remembered for this server."""
        layout = self._load_layout() if self.client.base_url else None
        self._dashboard = DashboardScreen(
            self.client,
            default_workdir=self.default_workdir,
            clock=self.clock,
            poll_interval_s=self.poll_interval_s,
            layout=layout,
            remember_layout=self._remember_layout,
        )
        return self._dashboard

    def _load_layout(self) -> PaneLayout | None:
        """The panes remembered for this server (None: none, or no state path)."""
        if self.state_path is None:
            return None
        layout = load_layout(self.state_path, self.client.base_url)
        # Nothing remembered reads as the layout a fresh start has (one empty pane), so
        # starting alone writes no state file: only a change does.
        self._saved_layout = layout if layout is not None else PaneLayout()
        return layout

    def on_mount(self) -> None:
        """Start remembering the theme; once the first frame is drawn, start up (or check
        the settings) and let the garbage collector work again."""
        self._remember_theme = True
        self.call_after_refresh(self._after_first_frame)

    async def _finish_start_up(self, start_up: Callable[[], StartedUp]) -> None:
        """Run ``start_up`` in a thread, then apply its settings, bring back the panes
        remembered for its server and connect the client (in that order: the panes are
        being restored before the task list's first poll can move one). A
        :class:`StartUpError` exits with code 2 and its message (codex-tui prints it)."""
        assert isinstance(self.client, DeferredClient)
        try:
            started = await asyncio.to_thread(start_up)
        except StartUpError as error:
            self.start_up_error = str(error)
            self.client.fail(self.start_up_error)
            self.exit(return_code=2)
            return
        self._apply_settings(started.settings)
        self.client.base_url = started.server.rstrip("/")
        layout = self._load_layout()
        if layout is not None:
            self._dashboard.restore(layout)
        self.client.connect(started.server, started.token)
        self._warn_about_settings()
        await client_ready(self.client)
        # What start-up and the SDK imported lives as long as the app, as what the first
        # frame made does (_after_first_frame).
        gc.freeze()

    def _warn_about_settings(self) -> None:
        """Warn about settings that name unknown themes or binding ids.

        After the first frame: checking binding ids imports every screen
        (:func:`~codex_tui.commands.binding_registry`).
        """
        keymap = set(self.settings.keymap) if self.settings is not None else set()
        unknown = sorted(keymap - known_binding_ids(self)) if keymap else []
        if unknown:
            valid = ", ".join(sorted(known_binding_ids(self)))
            self._warnings.append(
                f"Unknown binding id{'s' if len(unknown) > 1 else ''} in [keymap]: "
                f"{', '.join(unknown)}. Valid ids: {valid}."
            )
        for warning in self._warnings:
            self.notify(warning, title="Settings", severity="warning", timeout=12, markup=False)

    def _after_first_frame(self) -> None:
        """Check the settings, then hand start-up's objects to the garbage collector's
        permanent generation and turn it back on.

        Everything made so far (Textual, the screens, the imports) lives as long as the app:
        kept out of the collector's full passes, which otherwise walk all of it in the middle
        of a burst of events (a 50-190 ms pause; benchmarks/ tui lag). What is garbage already
        is collected first, and on_unmount gives it all back. The command turns the collector
        off until the first frame (codex_tui.cli.tui).
        """
        try:
            if self._start_up is None:
                self._warn_about_settings()
            else:
                self.run_worker(
                    self._finish_start_up(self._start_up), name="start-up", exit_on_error=True
                )
        finally:
            gc.collect()
            gc.freeze()
            gc.enable()

    async def on_unmount(self) -> None:
        """Hand what :meth:`_after_first_frame` froze back to the garbage collector; close
        the client if asked to."""
        gc.unfreeze()
        self._save_layout()
        if self.close_client:
            await self.client.aclose()

    # -- themes -----------------------------------------------------------------------------

    def watch_theme(self, theme: str) -> None:
        """Remember a theme chosen while the app runs (not the one it started with)."""
        if not self._remember_theme or self.state_path is None:
            return
        try:
            save_state(self.state_path, TuiState(theme=theme))
        except OSError as error:
            self.notify(
                f"Could not remember the theme in {self.state_path}: {error.strerror or error}",
                title="Theme",
                severity="warning",
                markup=False,
            )

    # -- the panes ---------------------------------------------------------------------------

    def _fatal_error(self) -> None:
        """A crash prints its traceback without the frames' local variables (a token or a
        pairing code can be one; docs/reliability.md S7)."""
        exit_with_traceback_without_locals(self)

    def _remember_layout(self, layout: PaneLayout) -> None:
        """The dashboard's panes changed to ``layout``: write it soon (not before the server
        is known: the panes are remembered per server)."""
        if self.state_path is None or not self.client.base_url:
            return
        self._layout_to_save = layout
        if self._layout_timer is None:  # at most one write per delay, the newest layout
            self._layout_timer = self.set_timer(
                LAYOUT_SAVE_DELAY_S, self._save_layout, name="save-layout"
            )

    def _save_layout(self) -> None:
        """Write the panes' layout if it changed since it was last written."""
        self._layout_timer = None
        layout, self._layout_to_save = self._layout_to_save, None
        if layout is None or layout == self._saved_layout or self.state_path is None:
            return
        try:
            save_layout(self.state_path, self.client.base_url, layout)
        except OSError as error:
            if not self._layout_warned:  # once: the next change would fail the same way
                self._layout_warned = True
                self.notify(
                    f"Could not remember the panes in {self.state_path}: {error.strerror or error}",
                    title="Panes",
                    severity="warning",
                    markup=False,
                )
            return
        self._saved_layout = layout

    # -- keys and the command palette -------------------------------------------------------

    def action_show_keys(self) -> None:
        """Open the keys screen: every binding, its current keys and its id."""
        from codex_tui.screens.keys import KeysModal  # imported when first opened

        if not isinstance(self.screen, KeysModal):
            self.push_screen(KeysModal(binding_sections(self)))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Textual's commands, one per binding on ``screen``, and one per codex-tui theme.

        A binding's command replaces Textual's command of the same title ("Quit", "Keys").
        """
        ours = binding_commands(self, screen)
        for name in THEME_NAMES:
            ours.append(
                SystemCommand(
                    f"Theme: {name}",
                    f"Switch to the {name} theme (remembered for the next start)",
                    partial(setattr, self, "theme", name),
                )
            )
        yield from without_titles(super().get_system_commands(screen), {c.title for c in ours})
        yield from ours

    # -- notifications ----------------------------------------------------------------------

    def announce_finished(self, task: Task, *, on_screen: bool = False) -> None:
        """Announce a finished task: toast, bell and desktop notification, as configured.
        A task ``on_screen`` (a pane in view follows it) gets no toast: its pane's border and
        bar say that it ended, and a toast would cover the pane being read (and cost the
        terminal a redraw of what it covered when it goes)."""
        if self.notifier is not None:
            self.notifier.task_finished(task, toast=not on_screen)

    def _toast(self, message: str, *, title: str, severity: Severity) -> None:
        self.notify(message, title=title, severity=severity, markup=False)

    def _write_terminal(self, text: str) -> None:
        """Write raw text (an escape sequence) to the terminal, as :meth:`App.bell` does."""
        write_to_terminal(self, text)

    @on(TaskList.TaskFinished)
    def _task_finished(self, message: TaskList.TaskFinished) -> None:
        task = message.task
        if task.status is TaskStatus.CANCELED and task.cancel_requested:
            return  # the user asked for it and was told already
        screen = self.screen
        on_screen = isinstance(screen, DashboardScreen) and screen.pane_grid.showing(task.id)
        self.announce_finished(task, on_screen=on_screen)

    @on(TaskList.ApprovalNeeded)
    def _approval_needed(self, message: TaskList.ApprovalNeeded) -> None:
        if self.notifier is not None:
            self.notifier.approval_needed(message.task)

    @on(TaskList.ConnectionChanged)
    def _notify_connection(self, message: TaskList.ConnectionChanged) -> None:
        previous = self.connection_error
        self.connection_error = message.error
        if message.error is not None and previous is None:
            self.notify(message.error, title="Connection problem", severity="error", timeout=6)
        elif message.error is None and previous is not None:
            self.notify("Connected to the server again.", title="Back online", timeout=3)
