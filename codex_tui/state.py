"""Provides the TUI's remembered state: a small JSON file in the state folder.

The file (``<state>/tui-state.json``, see :class:`server_client.paths.AppDirs`) holds what
the app remembers between runs: the last theme chosen in the app, and per server URL the
dashboard's panes (:class:`PaneLayout`), so that reopening the TUI brings them back like
reattaching to tmux. It is written atomically (a temporary file in the same folder, then a
rename); a missing, unreadable or corrupt file reads as "nothing remembered". The app never
writes the user's config.toml.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server_client.paths import AppDirs

__all__ = [
    "MAX_SAVED_PANES",
    "STATE_FILE_NAME",
    "PaneLayout",
    "TuiState",
    "default_state_path",
    "load_layout",
    "load_state",
    "save_layout",
    "save_state",
]

#: The state file's name inside the state folder.
STATE_FILE_NAME = "tui-state.json"
#: Most panes remembered per server (the pane grid's own maximum).
MAX_SAVED_PANES = 9
#: Longest task id taken from the file; anything longer is not one of the server's ids.
_MAX_TASK_ID = 100


@dataclass(frozen=True)
class TuiState:
    """What the TUI remembers between runs.

    Attributes:
        theme: The theme last chosen in the app (None: never chosen).
    """

    theme: str | None = None


@dataclass(frozen=True)
class PaneLayout:
    """The dashboard's panes for one server, as the TUI left them.

    Attributes:
        tasks: The task id each pane followed, in display order (an empty pane is left out;
            the same id may appear twice, as two panes may follow one task).
        active: Index into ``tasks`` of the active pane (the one that had the focus).
        maximized: The active pane was maximised (``m``).
    """

    tasks: tuple[str, ...] = ()
    active: int = 0
    maximized: bool = False


def default_state_path() -> Path:
    """``<state folder>/tui-state.json`` (under ``CODEX_TUI_HOME`` when that is set)."""
    return AppDirs.resolve().state / STATE_FILE_NAME


def _read_raw(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_state(path: Path) -> TuiState:
    """Read the state file; anything missing, unreadable or malformed reads as unset."""
    theme = _read_raw(path).get("theme")
    return TuiState(theme=theme if isinstance(theme, str) and theme else None)


def save_state(path: Path, state: TuiState) -> None:
    """Write ``state`` atomically, keeping keys this version does not know.

    Raises:
        OSError: The folder cannot be created or the file cannot be written.
    """
    data = _read_raw(path)
    data["theme"] = state.theme
    _write_raw(path, data)


def load_layout(path: Path, server_url: str) -> PaneLayout | None:
    """The panes remembered for ``server_url`` (its trailing ``/`` ignored); None when none
    are, or what is stored is malformed (anything but a list of task id strings is dropped)."""
    panes = _read_raw(path).get("panes")
    entry = panes.get(_server_key(server_url)) if isinstance(panes, dict) else None
    if not isinstance(entry, dict):
        return None
    tasks = entry.get("tasks")
    if not isinstance(tasks, list):
        return None
    ids = tuple(t for t in tasks if isinstance(t, str) and t and len(t) <= _MAX_TASK_ID)[
        :MAX_SAVED_PANES
    ]
    active = entry.get("active")
    if not isinstance(active, int) or isinstance(active, bool) or not 0 <= active < len(ids):
        active = 0
    return PaneLayout(tasks=ids, active=active, maximized=entry.get("maximized") is True)


def save_layout(path: Path, server_url: str, layout: PaneLayout) -> None:
    """Remember ``layout`` for ``server_url`` atomically, keeping the other servers' panes,
    the theme and keys this version does not know.

    Raises:
        OSError: The folder cannot be created or the file cannot be written.
    """
    data = _read_raw(path)
    panes = data.get("panes")
    if not isinstance(panes, dict):
        panes = {}
    panes[_server_key(server_url)] = {
        "tasks": list(layout.tasks[:MAX_SAVED_PANES]),
        "active": layout.active,
        "maximized": layout.maximized,
    }
    data["panes"] = panes
    _write_raw(path, data)


def _server_key(server_url: str) -> str:
    return server_url.rstrip("/")


def _write_raw(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
