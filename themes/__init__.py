"""Provides codex-tui's stylesheets and Theme definitions, shipped in the wheel.

Widgets take every colour from Textual theme variables (``$primary``, ``$error``, ...); the
themes here only choose those variables. ``codex-dark`` is the default.
"""

from __future__ import annotations

from pathlib import Path

from textual.theme import Theme

__all__ = ["APP_CSS_PATH", "CODEX_DARK", "DEFAULT_THEME", "THEMES"]

#: The app's stylesheet.
APP_CSS_PATH = Path(__file__).with_name("app.tcss")

CODEX_DARK = Theme(
    name="codex-dark",
    primary="#4EA1FF",
    secondary="#7AA2C8",
    accent="#E5B567",
    warning="#E5B567",
    error="#F0717F",
    success="#7FD17F",
    foreground="#D8DEE9",
    background="#10141A",
    surface="#161B22",
    panel="#1F2630",
    dark=True,
)
"""The default dark theme."""

#: Every theme codex-tui registers on start.
THEMES: tuple[Theme, ...] = (CODEX_DARK,)
#: The theme the app starts with.
DEFAULT_THEME = CODEX_DARK.name
