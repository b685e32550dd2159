"""Provides transcript export: a task's events as Markdown (for people) or JSONL (for tools).

Both writers take the events as an async iterator, so a caller can page them from the server
(``CodexTuiClient.iter_events``) and write a task of any length in bounded memory. The JSONL
form is one event envelope per line, exactly as the server stores it (``seq``, ``ts``, ``kind``,
``data``); the Markdown form follows codex's item types (docs/codex-facts.md: agent messages,
reasoning, commands with output, file changes, todo lists, errors, token usage).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

from server_client.client import CodexTuiClient
from server_client.models import Event, EventKind, Task

__all__ = [
    "ExportFormat",
    "export_task",
    "format_for_path",
    "markdown_header",
    "markdown_event",
]

ExportFormat = Literal["md", "jsonl"]

#: Events fetched per request while exporting.
EXPORT_PAGE = 1000


def format_for_path(path: Path) -> ExportFormat:
    """``jsonl`` for a ``.jsonl``/``.json``/``.ndjson`` file name, ``md`` otherwise."""
    return "jsonl" if path.suffix.lower() in (".jsonl", ".json", ".ndjson") else "md"


def markdown_header(task: Task) -> str:
    """The Markdown title block of a transcript: prompt, status and options."""
    lines = [f"# codex-tui task {task.id}", ""]
    facts = [
        ("status", task.status.value),
        ("created", task.created_at.isoformat()),
        ("worker", task.worker_name or "—"),
        ("workdir", task.workdir or "—"),
        ("model", task.model or "default"),
        ("sandbox", task.sandbox.value),
    ]
    lines += [f"- **{name}:** {value}" for name, value in facts]
    lines += ["", "## Prompt", "", _fence(task.prompt, ""), ""]
    return "\n".join(lines) + "\n"


def _fence(text: str, info: str) -> str:
    """``text`` in a code fence longer than any backtick run inside it."""
    longest = 0
    run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def _s(value: object) -> str:
    return value if isinstance(value, str) else ""


def markdown_event(event: Event) -> str:
    """One event as Markdown ('' for events that add nothing, e.g. ``item.started`` of a
    message that ``item.completed`` repeats)."""
    data = event.data
    if event.kind is EventKind.STATUS:
        status = event.status
        detail = ""
        if isinstance(data, Mapping):
            extra = [str(data[k]) for k in ("error", "reason", "message") if data.get(k)]
            detail = f" — {'; '.join(extra)}" if extra else ""
        return f"*status: {status.value if status else data}{detail}*\n"
    if event.kind in (EventKind.STDERR, EventKind.STDOUT):
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        return _fence(text, "text") + "\n"
    if not isinstance(data, Mapping):
        return _fence(json.dumps(data, ensure_ascii=False, default=str), "json") + "\n"
    kind = _s(data.get("type"))
    if kind == "thread.started":
        return f"*thread {_s(data.get('thread_id'))}*\n"
    if kind == "turn.started":
        return "---\n"
    if kind == "turn.completed":
        usage = data.get("usage")
        if isinstance(usage, Mapping):
            parts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in usage.items())
            return f"*tokens (thread total): {parts}*\n"
        return ""
    if kind == "turn.failed":
        error = data.get("error")
        message = _s(error.get("message")) if isinstance(error, Mapping) else _s(error)
        return f"> **turn failed:** {message}\n"
    if kind == "error":
        return f"> **error:** {_s(data.get('message'))}\n"
    item = data.get("item")
    if kind.startswith("item.") and isinstance(item, Mapping):
        return _markdown_item(kind.removeprefix("item."), item)
    return _fence(json.dumps(dict(data), ensure_ascii=False, default=str), "json") + "\n"


def _markdown_item(phase: str, item: Mapping[str, Any]) -> str:
    kind = _s(item.get("type"))
    if phase != "completed":
        return ""  # codex repeats every item complete in item.completed
    if kind == "agent_message":
        return _s(item.get("text")).rstrip() + "\n"
    if kind == "reasoning":
        quoted = "\n".join(f"> {line}" for line in _s(item.get("text")).splitlines())
        return quoted + "\n"
    if kind == "command_execution":
        exit_code = item.get("exit_code")
        head = f"**$ {_s(item.get('command'))}** (exit {exit_code}, {_s(item.get('status'))})"
        output = _s(item.get("aggregated_output"))
        return head + "\n\n" + (_fence(output, "console") + "\n" if output else "")
    if kind == "file_change":
        changes = item.get("changes")
        rows = [
            f"- {_s(c.get('kind'))} `{_s(c.get('path'))}`"
            for c in (changes if isinstance(changes, list) else [])
            if isinstance(c, Mapping)
        ]
        return "**files changed**\n\n" + "\n".join(rows) + "\n"
    if kind == "todo_list":
        entries = item.get("items")
        rows = [
            f"- [{'x' if e.get('completed') is True else ' '}] {_s(e.get('text'))}"
            for e in (entries if isinstance(entries, list) else [])
            if isinstance(e, Mapping)
        ]
        return "**todo**\n\n" + "\n".join(rows) + "\n"
    if kind == "error":
        return f"> **warning:** {_s(item.get('message'))}\n"
    return _fence(json.dumps(dict(item), ensure_ascii=False, default=str), "json") + "\n"


async def export_task(client: CodexTuiClient, task: Task, file: TextIO, fmt: ExportFormat) -> int:
    """Write the task's whole transcript to ``file`` in ``fmt``; returns the events written.

    Raises:
        ApiError, httpx.HTTPError: the server could not be read (what was written stays).
        OSError: the file could not be written.
    """
    count = 0
    if fmt == "md":
        file.write(markdown_header(task))
        file.write("\n## Events\n\n")
    async for event in client.iter_events(task.id, page_size=EXPORT_PAGE):
        count += 1
        if fmt == "jsonl":
            file.write(event.model_dump_json() + "\n")
        else:
            text = markdown_event(event)
            if text:
                file.write(text + "\n")
    return count
