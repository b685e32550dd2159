"""Provides ``utcnow``, the one clock of the wire models, the SDK and the TUI.

A module of its own, without pydantic, so that the TUI's widgets read the time without
importing the wire models before their first frame (tests/tui/test_tui_startup.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)
