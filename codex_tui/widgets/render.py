"""Provides the old import path of the event renderers, which moved to :mod:`codex_tui.events`
(kept only until every importer uses the new modules)."""

from __future__ import annotations

from codex_tui.events.markdown import markdown_parser, render_markdown, warm_up
from codex_tui.events.palette import Palette
from codex_tui.events.pane import (
    RenderState,
    event_text,
    render_annotated,
    render_event,
    render_raw,
)
from codex_tui.events.view import (
    MAX_EXPANDED_LINES,
    MAX_JSON_CHARS,
    MAX_LINE_CHARS,
    MAX_OPEN_ITEMS,
    MAX_TEXT_CHARS,
    Annotation,
    annotate,
    compact_json,
    format_duration,
    head_lines,
    is_foldable,
    is_shown,
    status_icon,
)
from server_client.codex import Usage
from server_client.text import truncate

__all__ = [
    "MAX_EXPANDED_LINES",
    "MAX_JSON_CHARS",
    "MAX_LINE_CHARS",
    "MAX_OPEN_ITEMS",
    "MAX_TEXT_CHARS",
    "Annotation",
    "Palette",
    "RenderState",
    "Usage",
    "annotate",
    "compact_json",
    "event_text",
    "format_duration",
    "head_lines",
    "is_foldable",
    "is_shown",
    "markdown_parser",
    "render_annotated",
    "render_event",
    "render_markdown",
    "render_raw",
    "status_icon",
    "truncate",
    "warm_up",
]
