"""Provides ``main``, the ``codex-tui`` group: with no subcommand it opens the TUI.

Its subcommands live in the other modules of :mod:`codex_tui.cli` and are imported when one
is named (or ``--help`` lists them), so that opening the TUI builds none of them.
"""

from __future__ import annotations

import gc
import importlib
import os

import click

from codex_tui.cli.common import (
    ConnectionProblem,
    PipeSafeGroup,
    connection_options,
    fail,
    given_connection,
    open_connection,
)

#: Subcommand name → ``module:attribute`` of its click command.
SUBCOMMANDS = {
    "admin": "codex_tui.cli.admin:admin",
    "apply": "codex_tui.cli.review:apply",
    "approvals": "codex_tui.cli.conversations:approvals",
    "approve": "codex_tui.cli.conversations:approve",
    "branch": "codex_tui.cli.review:branch",
    "cancel": "codex_tui.cli.tasks:cancel",
    "decline": "codex_tui.cli.conversations:decline",
    "diff": "codex_tui.cli.review:diff",
    "interrupt": "codex_tui.cli.conversations:interrupt",
    "login": "codex_tui.cli.account:login",
    "logout": "codex_tui.cli.account:logout",
    "logs": "codex_tui.cli.tasks:logs",
    "ls": "codex_tui.cli.tasks:list_tasks",
    "pair": "codex_tui.cli.tasks:pair",
    "reply": "codex_tui.cli.conversations:reply",
    "rerun": "codex_tui.cli.tasks:rerun",
    "server": "codex_tui.cli.serve:server",
    "status": "codex_tui.cli.account:status",
    "submit": "codex_tui.cli.tasks:submit",
    "web": "codex_tui.cli.web:web",
    "worker": "codex_tui.cli.serve:worker",
    "workspaces": "codex_tui.cli.review:workspaces",
}


class _LazyGroup(PipeSafeGroup):
    """A group whose subcommands (:data:`SUBCOMMANDS`) are imported on first use (click's
    "lazily loading subcommands" pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every subcommand's name, sorted."""
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The subcommand ``cmd_name``, imported now if it was not yet (None: no such one)."""
        if cmd_name not in self.commands and cmd_name in SUBCOMMANDS:
            module, _, name = SUBCOMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), name)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_LazyGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@connection_options
@click.option(
    "--theme",
    metavar="NAME",
    help="TUI theme: codex-dark, codex-light or codex-high-contrast (default: the last one "
    "chosen in the TUI, else config.toml's).",
)
@click.option("--no-bell", is_flag=True, help="TUI: no terminal bell when a task finishes.")
@click.option(
    "--no-desktop-notify",
    is_flag=True,
    help="TUI: no desktop notification (OSC 9) when a task finishes.",
)
@click.version_option(package_name="codex-tui")
@click.pass_context
def main(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    theme: str | None,
    no_bell: bool,
    no_desktop_notify: bool,
) -> None:
    """Run and watch OpenAI Codex agents on remote machines.

    With no command, opens the TUI (starting a local server in the background when none is
    configured or running). Its settings (theme, [keymap], [notify]) are read from
    config.toml in the config folder; see the README's Configuration section.
    """
    if ctx.invoked_subcommand is not None:
        return
    # No garbage collection until the first frame is drawn: start-up makes hundreds of
    # thousands of objects that all live on, and the collector's passes over them (a full one
    # among them, 15 ms here) are all it would do. The app collects, freezes what start-up
    # made and turns the collector back on right after its first frame (CodexTuiApp).
    gc.disable()
    # Read now, before the app owns the terminal: a --token-file - reads stdin.
    given = given_connection(ctx, server, token)
    from codex_tui.app import CodexTuiApp
    from codex_tui.deferred_client import DeferredClient
    from codex_tui.startup import StartedUp, StartUpError, config_path, first_frame_theme
    from codex_tui.state import default_state_path

    state_path = default_state_path()

    def start_up() -> StartedUp:
        """After the first frame, in a thread: the settings (pydantic-settings), then the
        server and token, a local server started if none is configured or running."""
        from codex_tui.config import ConfigError, load_tui_settings

        try:
            settings = load_tui_settings(
                theme=theme,
                bell=False if no_bell else None,
                desktop=False if no_desktop_notify else None,
            )
            conn = open_connection(given, start=True)
        except (ConfigError, ConnectionProblem) as exc:
            raise StartUpError(str(exc)) from None
        assert conn.token is not None
        return StartedUp(settings, conn.server, conn.token)

    # The SDK (httpx, the wire models) is imported after the first frame, in a thread; so
    # are the settings read (codex_tui.startup).
    app = CodexTuiApp(
        DeferredClient(),
        default_workdir=os.getcwd(),
        close_client=True,
        state_path=state_path,
        start_up=start_up,
        theme=first_frame_theme(theme, config=config_path(), state=state_path),
    )
    app.run()
    if app.start_up_error is not None:
        fail(app.start_up_error)
    if app.return_code:
        raise SystemExit(app.return_code)
