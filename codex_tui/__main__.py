"""Provides ``python -m codex_tui`` (the same as the ``codex-tui`` command)."""

from codex_tui.cli import main

main()
