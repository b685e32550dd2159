"""Provides codex-tui."""
