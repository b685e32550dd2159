"""Provides a task's transcript exported from the server: its events paged in bounded memory
(``CodexTuiClient.iter_events``) and written by :mod:`codex_tui.events.export`, whose names
this module also re-exports for its old importers."""

from __future__ import annotations

from typing import TextIO

from codex_tui.events.export import (
    ExportFormat,
    format_for_path,
    markdown_event,
    markdown_header,
    write_events,
)
from server_client.client import CodexTuiClient
from server_client.models import Task

__all__ = [
    "ExportFormat",
    "export_task",
    "format_for_path",
    "markdown_event",
    "markdown_header",
]

#: Events fetched per request while exporting.
EXPORT_PAGE = 1000


async def export_task(client: CodexTuiClient, task: Task, file: TextIO, fmt: ExportFormat) -> int:
    """Write the task's whole transcript to ``file`` in ``fmt``; returns the events written.

    Raises:
        ApiError, httpx.HTTPError: the server could not be read (what was written stays).
        OSError: the file could not be written.
    """
    return await write_events(client.iter_events(task.id, page_size=EXPORT_PAGE), task, file, fmt)
