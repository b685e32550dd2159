"""Provides the old import path of the plain event printer, which moved to
:mod:`codex_tui.events.plain` (kept only until every importer uses the new module)."""

from __future__ import annotations

from codex_tui.events.plain import EventPrinter

__all__ = ["EventPrinter"]
