"""Provides everything of codex-tui that is not the TUI: wire models, SDK, server and worker."""

__version__ = "0.1.0"
