"""Provides codex-tui: a terminal UI and CLI to run and watch Codex agents on remote machines."""

from server_client import __version__

__all__ = ["__version__"]
