"""Provides codex-tui's stylesheets and Theme definitions, shipped in the wheel.

Widgets take every colour from Textual theme variables (``$primary``, ``$error``, ...); the
themes here only choose those variables. ``codex-dark`` is the default; ``codex-light`` suits
light terminals; ``codex-high-contrast`` is white on black with strongly saturated, distinct
status colours (each at least 7:1 against the background) for low-vision users.
"""

from __future__ import annotations

from pathlib import Path

from textual.theme import Theme

__all__ = [
    "APP_CSS_PATH",
    "CODEX_DARK",
    "CODEX_HIGH_CONTRAST",
    "CODEX_LIGHT",
    "DEFAULT_THEME",
    "THEMES",
    "THEME_NAMES",
]

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

CODEX_LIGHT = Theme(
    name="codex-light",
    primary="#0550AE",
    secondary="#57606A",
    accent="#6639BA",
    warning="#7D4E00",
    error="#A40E26",
    success="#116329",
    foreground="#1F2328",
    background="#F5F7FA",
    surface="#FFFFFF",
    panel="#E8ECF1",
    dark=False,
    variables={
        # Textual's defaults (60% and 38% foreground, a border 2.5% darker than the surface)
        # are too faint on white: keep muted and placeholder text at 4.5:1 or more, and
        # unfocused borders visible.
        "foreground-muted": "#57606A",
        "text-muted": "#57606A",
        "text-disabled": "#5F6872",
        "border-blurred": "#C9D1D9",
    },
)
"""A light theme: dark text on white, every text colour at least 4.5:1 on each background."""

CODEX_HIGH_CONTRAST = Theme(
    name="codex-high-contrast",
    primary="#00FFFF",
    secondary="#FFFFFF",
    accent="#FF66FF",
    warning="#FFFF00",
    error="#FF6E6E",
    success="#00FF00",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#000000",
    dark=True,
    variables={
        "foreground-muted": "#C8C8C8",
        "text-muted": "#C8C8C8",
        "text-disabled": "#A0A0A0",
        "border-blurred": "#B0B0B0",
        # Rows set their own text colours, so the cursor is a dark band every one of them
        # stays readable on (at least 5.5:1): navy and bold when focused, grey otherwise.
        "block-cursor-foreground": "#FFFFFF",
        "block-cursor-background": "#00008F",
        "block-cursor-text-style": "bold",
        "block-cursor-blurred-foreground": "#FFFFFF",
        "block-cursor-blurred-background": "#303030",
        "block-cursor-blurred-text-style": "none",
        "scrollbar": "#B0B0B0",
        "scrollbar-hover": "#FFFFFF",
        "scrollbar-active": "#00FFFF",
        "scrollbar-background": "#262626",
        "footer-key-foreground": "#FFFF00",
        "input-selection-background": "#005F5F",
    },
)
"""White on black; cyan focus, green success, yellow warning, light red error, magenta accent."""

#: Every theme codex-tui registers on start (the only ones the theme picker offers).
THEMES: tuple[Theme, ...] = (CODEX_DARK, CODEX_LIGHT, CODEX_HIGH_CONTRAST)
#: Their names, in that order.
THEME_NAMES: tuple[str, ...] = tuple(theme.name for theme in THEMES)
#: The theme the app starts with when nothing else chooses one.
DEFAULT_THEME = CODEX_DARK.name
