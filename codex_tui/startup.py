"""Provides what ``codex-tui`` settles after the TUI's first frame, and the theme that frame
is drawn in.

Reading config.toml and the environment is pydantic-settings' job, and importing it (with
pydantic) costs about a third of the TUI's cold start (docs/design.md, "Cold start"), though
the first frame shows nothing that depends on it but the theme. So ``codex-tui`` draws the
first frame in :func:`first_frame_theme`, then, in a thread, validates the settings, settles
the server and token (starting a local server if needs be) and returns :class:`StartedUp`;
the app applies it and connects. A :class:`StartUpError` (a bad config.toml, no token, a
server that cannot be started) closes the app, and ``codex-tui`` prints its message and exits
2, as it did when that was checked before drawing anything.

This module imports neither pydantic nor the SDK (tests/tui/test_tui_startup.py).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from codex_tui.state import load_state
from server_client.paths import AppDirs

if TYPE_CHECKING:
    from codex_tui.config import TuiSettings

__all__ = ["StartUpError", "StartedUp", "config_path", "first_frame_theme"]


def config_path() -> Path:
    """``<config folder>/config.toml`` (under ``CODEX_TUI_HOME`` when that is set)."""
    return AppDirs.resolve().config / "config.toml"


class StartUpError(Exception):
    """The TUI cannot start: the message names the problem and its fix (printed as
    ``codex-tui: MESSAGE``, exit 2)."""


@dataclass(frozen=True)
class StartedUp:
    """What start-up settled after the first frame.

    Attributes:
        settings: The TUI's validated settings (flags, environment, remembered theme,
            config.toml).
        server: The server's URL.
        token: The user token for it.
    """

    settings: TuiSettings
    server: str
    token: str


def first_frame_theme(
    flag: str | None, *, config: Path, state: Path, environ: Mapping[str, str] | None = None
) -> str | None:
    """The theme to draw the first frame in, by the settings' precedence (``--theme`` >
    ``CODEX_TUI_THEME`` > the theme remembered in ``state`` > ``theme`` in ``config``),
    read without validating anything; None: none named (the default theme).

    A file that cannot be read or parsed names no theme here: the validated settings, read
    right after the first frame, report it (and replace a theme read wrongly here).
    """
    env = os.environ if environ is None else environ
    for named in (flag, env.get("CODEX_TUI_THEME"), load_state(state).theme):
        if named and named.strip():
            return named
    try:
        theme = tomllib.loads(config.read_text(encoding="utf-8")).get("theme")
    except (OSError, ValueError):
        return None
    return theme if isinstance(theme, str) and theme.strip() else None
