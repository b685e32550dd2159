"""Provides the rules of how each typed codex event is shown, whatever the output: which events
show at all, what a stream has shown so far, what a status, a command or a token count says.

The pane (:mod:`codex_tui.events.pane`), the Markdown export (:mod:`codex_tui.events.export`)
and the CLI's plain printer (:mod:`codex_tui.events.plain`) all decide through this module,
so an item shows by the same rules everywhere; they differ only in format. Two views exist:
a *live* view (the pane and ``logs``) also shows an item while it runs (a command's
``running…`` line), while a *document* (an export) shows each item once, completed.

Every text taken from an event reaches a terminal only through
:func:`server_client.text.visible` (docs/reliability.md T1): :func:`shown_text` and
:func:`shown_line` are the two ways this package takes one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from server_client import codex
from server_client.models import Event, EventKind, TaskStatus
from server_client.text import one_line, truncate, visible

__all__ = [
    "MAX_EXPANDED_LINES",
    "MAX_JSON_CHARS",
    "MAX_LINE_CHARS",
    "MAX_OPEN_ITEMS",
    "MAX_TEXT_CHARS",
    "Annotation",
    "Badge",
    "StreamState",
    "Tone",
    "annotate",
    "annotate_read",
    "command_badge",
    "compact_json",
    "format_duration",
    "head_lines",
    "is_foldable",
    "is_shown",
    "item_shows",
    "shown_line",
    "shown_text",
    "shows",
    "status_details",
    "status_icon",
    "stream_line",
    "usage_counts",
]

#: Longest message, reasoning or prompt text shown, in characters.
MAX_TEXT_CHARS = 20_000
#: Longest single line (command, output line, stderr line) shown, in characters.
MAX_LINE_CHARS = 400
#: Longest compact JSON shown for an unknown event, in characters.
MAX_JSON_CHARS = 600
#: Most lines of one command's output shown when it is expanded.
MAX_EXPANDED_LINES = 2000
#: Most open items whose start time is remembered (older ones lose their duration).
MAX_OPEN_ITEMS = 1000

#: The semantic colour of a badge or line; each output maps it to its own style.
Tone = Literal["muted", "success", "error", "warning", "accent"]

_STATUS_ICONS: dict[TaskStatus, str] = {
    TaskStatus.QUEUED: "○",
    TaskStatus.RUNNING: "●",
    TaskStatus.COMPLETED: "✓",
    TaskStatus.FAILED: "✗",
    TaskStatus.CANCELED: "⊘",
    TaskStatus.LOST: "?",
}


def status_icon(status: TaskStatus) -> str:
    """The one-cell icon shown for a task status."""
    return _STATUS_ICONS.get(status, "·")


# -- text -----------------------------------------------------------------------------------


def shown_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Untrusted multi-line text as it may be shown: cut to ``limit`` characters and made
    :func:`~server_client.text.visible` (newlines and tabs kept)."""
    return visible(truncate(text, limit))


def shown_line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """Untrusted text for one line: cut to ``limit`` characters, every control character
    (newlines and tabs too) shown visibly."""
    return one_line(truncate(text, limit))


def compact_json(value: object, limit: int = MAX_JSON_CHARS) -> str:
    """``value`` as one line of JSON, cut to ``limit`` characters (control characters of its
    strings stay escaped, so it is safe to show)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return shown_line(text, limit)


def head_lines(text: str, count: int) -> tuple[list[str], int]:
    """The first ``count`` lines of ``text`` and how many lines follow them.

    Only the head is split, so this stays cheap for megabyte-sized outputs. A trailing newline
    does not count as an extra empty line.
    """
    if count <= 0 or not text:
        return [], text.count("\n") + (0 if not text or text.endswith("\n") else 1)
    body = text[:-1] if text.endswith("\n") else text
    parts = body.split("\n", count)
    if len(parts) <= count:
        return parts, 0
    rest = parts.pop()
    return parts, rest.count("\n") + 1


def format_duration(seconds: float) -> str:
    """A compact duration: ``850ms``, ``4.2s``, ``3m05s``, ``1h02m``."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


# -- what a stream has shown ----------------------------------------------------------------


@dataclass
class StreamState:
    """What one event stream has shown so far; :func:`annotate` updates it.

    Attributes:
        last_usage: The usage of the previous ``turn.completed`` in this stream.
        turns: How many ``turn.started`` events the stream has shown.
        last_status: The newest task status seen in the stream.
        started: When each open item (by codex item id) started, for command durations;
            bounded by :data:`MAX_OPEN_ITEMS`.
    """

    last_usage: codex.Usage | None = None
    turns: int = 0
    last_status: TaskStatus | None = None
    started: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Annotation:
    """What an event means in the context of the stream before it, fixed when it arrived.

    Showing an event again (expanded, say) uses its annotation instead of the stream state,
    which has moved on by then.

    Attributes:
        turn: The turn number, for ``turn.started``.
        previous_usage: The usage reported by the turn before, for ``turn.completed``.
        duration_s: Seconds from ``item.started`` to this ``item.completed`` (same item id),
            from the events' timestamps.
    """

    turn: int | None = None
    previous_usage: codex.Usage | None = None
    duration_s: float | None = None


#: The annotation of most events (nothing to add); shared, as annotations never change.
NO_NOTE = Annotation()


def annotate(event: Event, state: StreamState) -> Annotation:
    """Record ``event`` in ``state`` and return what it means in the stream so far."""
    return annotate_read(event, event.codex, state)


def annotate_read(event: Event, typed: codex.CodexEvent | None, state: StreamState) -> Annotation:
    """:func:`annotate` of an event already read (``typed`` is its ``Event.codex``), so that
    a caller that needs the typed event for more reads it once."""
    if event.kind is EventKind.STATUS:
        status = event.status
        if status is not None:
            state.last_status = status
        return NO_NOTE
    match typed:
        case codex.TurnStarted():
            state.turns += 1
            return Annotation(turn=state.turns)
        case codex.TurnCompleted(usage=usage):
            previous = state.last_usage
            state.last_usage = usage
            return Annotation(previous_usage=previous)
        case codex.ItemEvent(item=item) as item_event if item.id:
            if item_event.phase == "started":
                if len(state.started) >= MAX_OPEN_ITEMS:
                    state.started.pop(next(iter(state.started)))
                state.started[item.id] = event.ts
            elif item_event.phase == "completed":
                began = state.started.pop(item.id, None)
                if began is not None:
                    return Annotation(duration_s=max((event.ts - began).total_seconds(), 0.0))
    return NO_NOTE


# -- which events show ----------------------------------------------------------------------


def item_shows(phase: codex.ItemPhase, item: codex.Item, *, live: bool = True) -> bool:
    """True when ``item.<phase>`` shows anything.

    A document shows each item once, completed. A live view also shows a command, a tool
    call and a search when they start and an item of another kind at every phase; it hides
    a running command's updates (they repeat its start) and early or repeated copies of the
    items codex sends complete (agent message, reasoning, file change, warning).
    """
    if not live:
        return phase == "completed"
    match item:
        case codex.CommandExecution():
            return not (phase == "updated" and item.running)
        case codex.AgentMessage() | codex.Reasoning() | codex.FileChange() | codex.ErrorItem():
            return phase == "completed"
        case codex.McpToolCall() | codex.WebSearch():
            return phase != "updated"
    return True


def is_shown(event: Event, *, live: bool = True) -> bool:
    """True when ``event`` shows anything (in a live view unless ``live`` is False); decided
    from its fields, rendering nothing."""
    return shows(event.codex, live=live)


def shows(typed: codex.CodexEvent | None, *, live: bool = True) -> bool:
    """:func:`is_shown` of an event already read (``Event.codex``; None for the kinds that
    are not codex's, which always show)."""
    if isinstance(typed, codex.ItemEvent):
        return item_shows(typed.phase, typed.item, live=live)
    return True


def is_foldable(event: Event) -> bool:
    """True when ``event`` shows differently expanded (a command's output, reasoning)."""
    typed = event.codex
    return (
        isinstance(typed, codex.ItemEvent)
        and typed.phase == "completed"
        and isinstance(typed.item, codex.CommandExecution | codex.Reasoning)
    )


# -- what a status, a command, a count says -------------------------------------------------

_STATUS_DETAILS = (
    ("worker", "on"),
    ("worker_name", "on"),
    ("exit_code", "exit"),
    ("reason", ""),
    ("error", ""),
    ("message", ""),
)


def status_details(data: Mapping[str, Any], *, live: bool = True) -> list[str]:
    """The details a ``status`` event carries, each as a short phrase (``on w1``,
    ``exit 1``, the error), made safe to show; ``cancel requested`` when flagged.

    A document (``live`` False) keeps only why the status changed (reason, error, message):
    its header already says where the task ran.
    """
    details = []
    for key, label in _STATUS_DETAILS:
        if not live and label:
            continue
        value = data.get(key)
        if value is not None and value != "" and not isinstance(value, dict | list):
            details.append(shown_line(f"{label} {value}".strip(), MAX_TEXT_CHARS))
    if live and data.get("cancel_requested") is True:
        details.append("cancel requested")
    return details


@dataclass(frozen=True, slots=True)
class Badge:
    """The word a command shows before its command line and the tone it is shown in."""

    label: str
    tone: Tone


def command_badge(command: codex.CommandExecution, *, running: bool) -> Badge:
    """``running…``, ``exit 0``, ``exit N``, ``declined`` or the status word of a command."""
    if running:
        return Badge("running…", "muted")
    if command.status == "declined":
        return Badge("declined", "warning")
    code = command.exit_code
    if code == 0 and command.status != "failed":
        return Badge("exit 0", "success")
    if code is not None:
        return Badge(f"exit {code}", "error")
    return Badge(command.status or "done", "error")


def usage_counts(usage: codex.Usage) -> list[tuple[str, int]]:
    """The token counts of a usage report that are not zero, named for people
    (``input tokens``, ``cached input tokens``, ``output tokens``, ``reasoning output
    tokens``)."""
    counts = [
        ("input tokens", usage.input_tokens),
        ("cached input tokens", usage.cached_input_tokens),
        ("output tokens", usage.output_tokens),
        ("reasoning output tokens", usage.reasoning_output_tokens),
    ]
    return [(name, count) for name, count in counts if count]


def stream_line(data: object) -> str:
    """The text of a stdout/stderr event (a string, or an object with ``line``/``text``),
    without its line ending; compact JSON for anything else. Not yet made safe to show."""
    if isinstance(data, str):
        return data[: MAX_LINE_CHARS * 2].rstrip("\n")
    if isinstance(data, Mapping):
        for key in ("line", "text", "data"):
            value = data.get(key)
            if isinstance(value, str):
                return value[: MAX_LINE_CHARS * 2].rstrip("\n")
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(data)


def thread_label(event: codex.ThreadStarted) -> str:
    """``thread <id>`` for a thread's start (``?`` when codex gave no id)."""
    return f"thread {shown_line(event.thread_id) or '?'}"


def failure_message(event: codex.TurnFailed | codex.CodexError | codex.ErrorItem) -> str:
    """The message of a failed turn, an error line or a warning item, made safe to show."""
    return shown_text(event.message)


def tool_name(call: codex.McpToolCall) -> str:
    """``server.tool`` of an MCP tool call (``?`` when codex named neither)."""
    return shown_line(".".join(p for p in (call.server, call.tool) if p)) or "?"
