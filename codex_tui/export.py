"""Provides a task's transcript exported from the server: its events paged in bounded memory
(:func:`iter_all_events`) and written by :mod:`codex_tui.events.export`, whose names this
module also re-exports for its old importers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TextIO

from codex_tui.events.export import (
    ExportFormat,
    format_for_path,
    markdown_event,
    markdown_header,
    write_events,
)
from server_client.client import CodexTuiClient
from server_client.models import Event, Task

__all__ = [
    "ExportFormat",
    "export_task",
    "format_for_path",
    "iter_all_events",
    "markdown_header",
    "markdown_event",
]

#: Events fetched per request while exporting.
EXPORT_PAGE = 1000


async def iter_all_events(client: CodexTuiClient, task_id: str) -> AsyncIterator[Event]:
    """Every stored event of the task in seq order, fetched :data:`EXPORT_PAGE` at a time.

    Raises:
        ApiError, httpx.HTTPError: as :meth:`CodexTuiClient.get_events`.
    """
    after = 0
    while True:
        page = await client.get_events(task_id, after=after, limit=EXPORT_PAGE)
        for event in page:
            yield event
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1].seq


async def export_task(client: CodexTuiClient, task: Task, file: TextIO, fmt: ExportFormat) -> int:
    """Write the task's whole transcript to ``file`` in ``fmt``; returns the events written.

    Raises:
        ApiError, httpx.HTTPError: the server could not be read (what was written stays).
        OSError: the file could not be written.
    """
    return await write_events(iter_all_events(client, task.id), task, file, fmt)
