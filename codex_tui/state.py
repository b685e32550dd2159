"""Provides the TUI's remembered state: a small JSON file in the state folder.

The file (``<state>/tui-state.json``, see :class:`server_client.paths.AppDirs`) holds what
the app remembers between runs, today only the last theme chosen in the app. It is written
atomically (a temporary file in the same folder, then a rename); a missing, unreadable or
corrupt file reads as "nothing remembered". The app never writes the user's config.toml.
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

__all__ = ["STATE_FILE_NAME", "TuiState", "default_state_path", "load_state", "save_state"]

#: The state file's name inside the state folder.
STATE_FILE_NAME = "tui-state.json"


@dataclass(frozen=True)
class TuiState:
    """What the TUI remembers between runs.

    Attributes:
        theme: The theme last chosen in the app (None: never chosen).
    """

    theme: str | None = None


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
