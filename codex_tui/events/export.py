"""Provides transcript export: a task's events as Markdown (for people) or JSONL (for tools).

Both writers take the events as an async iterator, so a task of any length is written in bounded
memory; :func:`export_task` pages them from the server. The JSONL form is one event envelope per
line as the server stores it (``seq``, ``ts``, ``kind``, ``data``); the Markdown form is a
*document* view of :mod:`codex_tui.events.view`: each item once, completed (agent messages,
reasoning, commands with output, file changes, todo lists, errors, token usage). Both are safe to
print to a terminal: Markdown text shows control characters visibly, and JSONL escapes them
(docs/reliability.md T1).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Mapping
from pathlib import Path
from typing import Literal, TextIO

from codex_tui.events.view import (
    approval_of,
    approval_outcome,
    failure_message,
    is_shown,
    shown_line,
    status_details,
    status_note,
    stream_line,
    thread_label,
    usage_counts,
)
from server_client import codex
from server_client.client import CodexTuiClient
from server_client.models import Event, EventKind, Task
from server_client.text import json_safe, visible

__all__ = [
    "EXPORT_PAGE",
    "ExportFormat",
    "export_task",
    "format_for_path",
    "jsonl_line",
    "markdown_event",
    "markdown_header",
    "write_events",
]

ExportFormat = Literal["md", "jsonl"]


def format_for_path(path: Path) -> ExportFormat:
    """``jsonl`` for a ``.jsonl``/``.json``/``.ndjson`` file name, ``md`` otherwise."""
    return "jsonl" if path.suffix.lower() in (".jsonl", ".json", ".ndjson") else "md"


def jsonl_line(event: Event) -> str:
    """The event's envelope as one line of JSON (no newline), DEL and C1 controls escaped."""
    return json_safe(event.model_dump_json())


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
    lines += [f"- **{name}:** {shown_line(value, 4096)}" for name, value in facts]
    lines += ["", "## Prompt", "", _fence(visible(task.prompt), ""), ""]
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


def _json_fence(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, RecursionError):
        text = repr(value)
    return _fence(json_safe(text), "json") + "\n"


def markdown_event(event: Event) -> str:
    """One event as Markdown (``""`` for events a document leaves out, e.g. ``item.started``
    of a message that ``item.completed`` repeats)."""
    data = event.data
    if event.kind is EventKind.STATUS:
        status = event.status
        if isinstance(data, Mapping):
            said = _markdown_conversation(data)
            if said is not None:
                return said
        details = status_details(data, live=False) if isinstance(data, Mapping) else []
        if isinstance(data, Mapping) and (note := status_note(data)):
            details.insert(0, note)
        detail = f" — {'; '.join(details)}" if details else ""
        word = status.value if status else shown_line(str(data))
        return f"*status: {word}{detail}*\n"
    if event.kind in (EventKind.STDERR, EventKind.STDOUT):
        text = data if isinstance(data, str) else _dumps(data)
        return _fence(visible(text), "text") + "\n"
    match event.codex:
        case codex.ThreadStarted() as started:
            return f"*{thread_label(started)}*\n"
        case codex.TurnStarted():
            return "---\n"
        case codex.TurnCompleted(usage=usage):
            counts = usage_counts(usage)
            if not counts:
                return ""
            parts = ", ".join(f"{name} {count}" for name, count in counts)
            return f"*tokens (thread total): {parts}*\n"
        case codex.TurnFailed() as failed:
            return f"> **turn failed:** {failure_message(failed)}\n"
        case codex.TurnInterrupted():
            return "> **turn interrupted**\n"
        case codex.ItemDelta() | codex.UsageUpdated():
            return ""  # a document shows items completed, and the usage of each turn
        case codex.CodexError() as error:
            return f"> **error:** {failure_message(error)}\n"
        case codex.ItemEvent(item=codex.UnknownItem(raw=raw)) if not isinstance(raw, Mapping):
            pass  # not an item: the event as codex printed it, below
        case codex.ItemEvent(item=item):
            return _markdown_item(item) if is_shown(event, live=False) else ""
    return _json_fence(data)


def _markdown_conversation(data: Mapping[str, object]) -> str | None:
    """A reply or an approval (asked, answered, withdrawn) as Markdown; None for other status
    events."""
    reply = data.get("reply")
    if isinstance(reply, Mapping) and isinstance(reply.get("prompt"), str):
        return "**› you:**\n\n" + _fence(visible(reply["prompt"]), "") + "\n"
    approval = approval_of(data)
    if approval is None:
        return None
    if "kind" not in approval:
        return f"*approval {approval_outcome(approval)}*\n"
    lines = [f"**approval asked:** {shown_line(str(approval.get('kind')))}", ""]
    for key, label in (("command", "command"), ("cwd", "in"), ("reason", "reason")):
        value = approval.get(key)
        if isinstance(value, str) and value:
            lines.append(f"- {label}: `{shown_line(value, 4096)}`")
    questions = approval.get("questions")
    if isinstance(questions, list):
        for question in questions:
            if isinstance(question, Mapping):
                lines.append(f"- question: {shown_line(str(question.get('question') or ''))}")
    text = "\n".join(lines) + "\n"
    diff = approval.get("diff")
    if isinstance(diff, str) and diff:
        text += "\n" + _fence(visible(diff), "diff") + "\n"
    return text


def _dumps(value: object) -> str:
    try:
        return json_safe(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return stream_line(value)


def _markdown_item(item: codex.Item) -> str:
    match item:
        case codex.AgentMessage(text=text):
            return visible(text).rstrip() + "\n"
        case codex.UserMessage(text=text):
            return "**› you:**\n\n" + _fence(visible(text), "") + "\n"
        case codex.Reasoning(text=text):
            return "\n".join(f"> {line}" for line in visible(text).splitlines()) + "\n"
        case codex.CommandExecution():
            head = (
                f"**$ {shown_line(item.command, 4096)}** "
                f"(exit {item.exit_code}, {shown_line(item.status)})"
            )
            output = visible(item.output)
            return head + "\n\n" + (_fence(output, "console") + "\n" if output else "")
        case codex.FileChange(changes=changes):
            rows = [f"- {shown_line(c.kind)} `{shown_line(c.path, 4096)}`" for c in changes]
            return "**files changed**\n\n" + "\n".join(rows) + "\n"
        case codex.TodoList(items=entries):
            rows = [f"- [{'x' if e.completed else ' '}] {shown_line(e.text)}" for e in entries]
            return "**todo**\n\n" + "\n".join(rows) + "\n"
        case codex.ErrorItem():
            return f"> **warning:** {failure_message(item)}\n"
        case codex.UnknownItem(raw=raw):
            return _json_fence(dict(raw) if isinstance(raw, Mapping) else raw)
    return _json_fence(item.model_dump())


async def write_events(
    events: AsyncIterable[Event], task: Task, file: TextIO, fmt: ExportFormat
) -> int:
    """Write a task's transcript, header and ``events``, to ``file`` in ``fmt``; returns how
    many events were written.

    Raises:
        Whatever iterating ``events`` raises (what was written stays), and OSError when the
        file cannot be written.
    """
    count = 0
    if fmt == "md":
        file.write(markdown_header(task))
        file.write("\n## Events\n\n")
    async for event in events:
        count += 1
        if fmt == "jsonl":
            file.write(jsonl_line(event) + "\n")
        else:
            text = markdown_event(event)
            if text:
                file.write(text + "\n")
    return count


#: Events fetched per request while exporting from the server.
EXPORT_PAGE = 1000


async def export_task(client: CodexTuiClient, task: Task, file: TextIO, fmt: ExportFormat) -> int:
    """Write the task's whole transcript, paged from the server
    (:meth:`~server_client.client.CodexTuiClient.iter_events`, :data:`EXPORT_PAGE` events at
    a time), to ``file`` in ``fmt``; returns the events written.

    Raises:
        ApiError, httpx.HTTPError: the server could not be read (what was written stays).
        OSError: the file could not be written.
    """
    return await write_events(client.iter_events(task.id, page_size=EXPORT_PAGE), task, file, fmt)
