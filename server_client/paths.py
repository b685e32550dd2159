"""Provides codex-tui's folders on disk and the workdir rules.

Folders: when the environment variable ``CODEX_TUI_HOME`` is set, everything lives under it
(``config/``, ``data/``, ``state/``), for isolated installs and tests; otherwise platformdirs'
per-user folders for the app name ``codex-tui``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "codex-tui"
HOME_ENV = "CODEX_TUI_HOME"


@dataclass(frozen=True)
class AppDirs:
    """The three folders codex-tui writes to.

    Attributes:
        config: settings and the local client's stored connection (and token file).
        data: the server's SQLite store.
        state: logs and pid files of background processes.
    """

    config: Path
    data: Path
    state: Path

    @classmethod
    def resolve(cls) -> AppDirs:
        """Folders from ``CODEX_TUI_HOME`` when set, else platformdirs (not created here)."""
        home = os.environ.get(HOME_ENV)
        if home:
            root = Path(home).expanduser().absolute()
            return cls(config=root / "config", data=root / "data", state=root / "state")
        return cls(
            config=Path(platformdirs.user_config_dir(APP_NAME)),
            data=Path(platformdirs.user_data_dir(APP_NAME)),
            state=Path(platformdirs.user_state_dir(APP_NAME)),
        )

    @property
    def isolated(self) -> bool:
        """True when ``CODEX_TUI_HOME`` chose the folders (the OS keyring is then not used)."""
        return bool(os.environ.get(HOME_ENV))

    def ensure(self) -> AppDirs:
        """Create the folders (mode 0700) and return self."""
        for path in (self.config, self.data, self.state):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self


class WorkdirError(ValueError):
    """A workdir is not absolute, does not exist, or lies outside every allowed root."""


def is_within(path: str, root: str) -> bool:
    """True when ``path`` equals ``root`` or lies below it (both already normalised)."""
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root == os.sep else root + os.sep)


def check_workdir_lexically(
    workdir: str, roots: list[str], *, label: str = "workdir", roots_set_by: str | None = None
) -> str:
    """Normalise an absolute workdir and check it lies inside one of ``roots``, by text only.

    The server uses this at submit time: it cannot see the worker's filesystem, so the real
    path is checked again by the worker at spawn (:func:`resolve_workdir`; docs/reliability.md S4).

    Args:
        roots_set_by: The settings that choose ``roots`` (flags, variables), named in the
            message of a path outside them so that its reader knows what to change.

    Returns:
        The normalised path.

    Raises:
        WorkdirError: not absolute, or outside every root (the message calls the path
            ``label``: ``workdir``, or ``repo`` for a task's repository).
    """
    if not os.path.isabs(workdir):
        raise WorkdirError(f"{label} must be an absolute path, got {workdir!r}")
    normal = os.path.normpath(workdir)
    if not any(is_within(normal, os.path.normpath(root)) for root in roots):
        where = f" (set by {roots_set_by})" if roots_set_by else ""
        raise WorkdirError(
            f"{label} {normal} is outside the allowed roots: {', '.join(roots)}{where}"
        )
    return normal


def resolve_workdir(workdir: str | None, roots: list[str], *, label: str = "workdir") -> str:
    """Resolve a workdir on this machine: real path (symlinks followed) inside a real root.

    Args:
        workdir: The requested folder, or None for the first root.
        roots: Allowed roots; at least one.

    Returns:
        The real path of an existing directory.

    Raises:
        WorkdirError: missing, not a directory, or outside every root after resolving links.
    """
    if not roots:
        raise WorkdirError("no workdir roots are configured")
    target = workdir if workdir is not None else roots[0]
    if not os.path.isabs(target):
        raise WorkdirError(f"{label} must be an absolute path, got {target!r}")
    real = os.path.realpath(target)
    if not os.path.isdir(real):
        raise WorkdirError(f"{label} {target} does not exist or is not a directory")
    real_roots = [os.path.realpath(root) for root in roots]
    if not any(is_within(real, root) for root in real_roots):
        raise WorkdirError(
            f"{label} {target} resolves to {real}, outside the allowed roots: "
            + ", ".join(real_roots)
        )
    return real
