"""Provides pure functions that turn a task's events into Rich renderables for the event view.

Nothing here imports Textual, so every rule is unit-testable with a plain Rich console.
:func:`render_event` takes one :class:`~server_client.models.Event` and a mutable
:class:`RenderState` (what the stream has shown so far, e.g. the previous token usage) and
returns the renderables to append to the log. Colours come from a :class:`Palette`, which the
event view builds from the app's current theme variables.

Codex output can be huge (one ``aggregated_output`` can be 1 MiB), so every text is cut to a
display budget before Rich sees it: see :data:`MAX_TEXT_CHARS`, :data:`MAX_LINE_CHARS` and
:attr:`RenderState.max_output_lines`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.text import Text

from server_client.models import Event, EventKind, TaskStatus

__all__ = [
    "MAX_LINE_CHARS",
    "MAX_TEXT_CHARS",
    "Palette",
    "RenderState",
    "Usage",
    "compact_json",
    "head_lines",
    "render_event",
    "status_icon",
    "truncate",
]

#: Longest message, reasoning or prompt text shown, in characters.
MAX_TEXT_CHARS = 20_000
#: Longest single line (command, output line, stderr line) shown, in characters.
MAX_LINE_CHARS = 400
#: Longest compact JSON shown for an unknown event, in characters.
MAX_JSON_CHARS = 600

_STATUS_ICONS: dict[TaskStatus, str] = {
    TaskStatus.QUEUED: "○",
    TaskStatus.RUNNING: "●",
    TaskStatus.COMPLETED: "✓",
    TaskStatus.FAILED: "✗",
    TaskStatus.CANCELED: "⊘",
    TaskStatus.LOST: "?",
}

_FILE_KINDS: dict[str, str] = {"add": "A", "delete": "D", "update": "M"}


def status_icon(status: TaskStatus) -> str:
    """The one-cell icon shown for a task status."""
    return _STATUS_ICONS.get(status, "·")


@dataclass(frozen=True)
class Palette:
    """Rich styles for each semantic role of the event view.

    The app builds one from its theme variables (:meth:`from_theme_variables`); the defaults
    only serve tests and other plain-Rich uses.
    """

    error: str = "red"
    warning: str = "yellow"
    success: str = "green"
    accent: str = "cyan"
    primary: str = "blue"
    muted: str = "dim"

    @classmethod
    def from_theme_variables(cls, variables: Mapping[str, str]) -> Palette:
        """Build a palette from Textual theme variables (``error``, ``warning``, ...)."""

        def pick(name: str, default: str) -> str:
            value = variables.get(name, "")
            # Rich takes #RRGGBB; drop an alpha channel, ignore anything else.
            if value.startswith("#") and len(value) in (7, 9):
                return value[:7]
            return default

        return cls(
            error=pick("error", cls.error),
            warning=pick("warning", cls.warning),
            success=pick("success", cls.success),
            accent=pick("accent", cls.accent),
            primary=pick("primary", cls.primary),
        )

    def for_status(self, status: TaskStatus) -> str:
        """The style of a task status."""
        return {
            TaskStatus.QUEUED: self.muted,
            TaskStatus.RUNNING: self.accent,
            TaskStatus.COMPLETED: self.success,
            TaskStatus.FAILED: self.error,
            TaskStatus.CANCELED: self.warning,
            TaskStatus.LOST: self.error,
        }.get(status, "")


@dataclass(frozen=True)
class Usage:
    """Token counts from a ``turn.completed`` event (codex reports the thread's running total)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0

    @classmethod
    def from_data(cls, data: object) -> Usage:
        """Parse codex's ``usage`` object; missing or malformed fields count as 0."""
        if not isinstance(data, Mapping):
            return cls()

        def number(name: str) -> int:
            value = data.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        return cls(
            input_tokens=number("input_tokens"),
            cached_input_tokens=number("cached_input_tokens"),
            output_tokens=number("output_tokens"),
            reasoning_output_tokens=number("reasoning_output_tokens"),
        )

    def minus(self, other: Usage) -> Usage:
        """The difference ``self - other``, field by field."""
        return Usage(
            input_tokens=self.input_tokens - other.input_tokens,
            cached_input_tokens=self.cached_input_tokens - other.cached_input_tokens,
            output_tokens=self.output_tokens - other.output_tokens,
            reasoning_output_tokens=self.reasoning_output_tokens - other.reasoning_output_tokens,
        )


@dataclass
class RenderState:
    """What one event stream has rendered so far; :func:`render_event` updates it.

    Attributes:
        palette: Styles for each semantic role.
        max_output_lines: How many lines of a command's output to show.
        last_usage: The usage of the previous ``turn.completed`` in this stream.
        turns: How many ``turn.started`` events the stream has shown.
        last_status: The newest task status seen in the stream.
    """

    palette: Palette = field(default_factory=Palette)
    max_output_lines: int = 20
    last_usage: Usage | None = None
    turns: int = 0
    last_status: TaskStatus | None = None


# -- text helpers ---------------------------------------------------------------------------


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, ending with ``…`` when something was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"


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


def compact_json(value: object, limit: int = MAX_JSON_CHARS) -> str:
    """``value`` as one line of JSON, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return truncate(text, limit)


def _line(text: str, style: str = "") -> Text:
    """One display line: no wrapping, cut with an ellipsis at the view's edge."""
    return Text(
        truncate(text[: MAX_LINE_CHARS * 2], MAX_LINE_CHARS).replace("\t", "    "),
        style=style,
        no_wrap=True,
        overflow="ellipsis",
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _fmt(number: int) -> str:
    return f"{number:,}"


def _signed(number: int) -> str:
    return f"{number:+,}"


# -- events ---------------------------------------------------------------------------------


def render_event(event: Event, state: RenderState) -> list[RenderableType]:
    """Render one event of a task's log; may update ``state``.

    Returns an empty list for events that add nothing visible (e.g. ``item.updated`` of an
    agent message, which codex never sends incrementally).
    """
    if event.kind is EventKind.CODEX:
        if isinstance(event.data, Mapping):
            return _render_codex(event.data, state)
        return [_generic("codex", event.data, state)]
    if event.kind is EventKind.STATUS:
        return _render_status(event.data, state)
    if event.kind is EventKind.STDERR:
        return [_line(_as_line(event.data), state.palette.muted)]
    if event.kind is EventKind.STDOUT:
        return [_line(_as_line(event.data))]
    return [_generic(str(event.kind), event.data, state)]


def _as_line(data: object) -> str:
    """The text of a stdout/stderr event (a string, or an object with ``line``/``text``)."""
    if isinstance(data, str):
        return data[: MAX_LINE_CHARS * 2].rstrip("\n")
    if isinstance(data, Mapping):
        for key in ("line", "text", "data"):
            if isinstance(data.get(key), str):
                return str(data[key])[: MAX_LINE_CHARS * 2].rstrip("\n")
    return compact_json(data)


def _generic(label: str, data: object, state: RenderState) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(label, style=f"bold {state.palette.muted}")
    text.append(" ")
    text.append(compact_json(data), style=state.palette.muted)
    return text


def _render_status(data: object, state: RenderState) -> list[RenderableType]:
    palette = state.palette
    fields: Mapping[str, Any] = data if isinstance(data, Mapping) else {"status": data}
    raw = fields.get("status")
    try:
        status: TaskStatus | None = TaskStatus(raw) if isinstance(raw, str) else None
    except ValueError:
        status = None
    if status is None:
        return [_generic("status", data, state)]
    state.last_status = status
    text = Text()
    style = palette.for_status(status)
    text.append(f"{status_icon(status)} {status.value}", style=f"bold {style}")
    details = []
    for key, label in (
        ("worker", "on"),
        ("worker_name", "on"),
        ("exit_code", "exit"),
        ("reason", ""),
        ("error", ""),
        ("message", ""),
    ):
        value = fields.get(key)
        if value is not None and value != "" and not isinstance(value, (dict, list)):
            details.append(f"{label} {value}".strip())
    if fields.get("cancel_requested") is True:
        details.append("cancel requested")
    if details:
        text.append(" · " + truncate(" · ".join(str(d) for d in details), MAX_LINE_CHARS))
    return [text]


def _render_codex(data: Mapping[str, Any], state: RenderState) -> list[RenderableType]:
    palette = state.palette
    kind = _str(data.get("type"))
    if kind == "thread.started":
        return [Text(f"thread {_str(data.get('thread_id')) or '?'}", style=palette.muted)]
    if kind == "turn.started":
        state.turns += 1
        return [Text(f"── turn {state.turns} ──", style=f"bold {palette.muted}")]
    if kind == "turn.completed":
        return [_render_usage(Usage.from_data(data.get("usage")), state)]
    if kind == "turn.failed":
        error = data.get("error")
        message = _str(error.get("message")) if isinstance(error, Mapping) else _str(error)
        return [_error_line("turn failed", message or compact_json(error), palette.error)]
    if kind == "error":
        return [
            _error_line("error", _str(data.get("message")) or compact_json(data), palette.error)
        ]
    if kind in ("item.started", "item.updated", "item.completed"):
        item = data.get("item")
        if isinstance(item, Mapping):
            return _render_item(kind.removeprefix("item."), item, state)
    return [_generic(kind or "codex", data, state)]


def _error_line(label: str, message: str, style: str) -> Text:
    text = Text(style=style)
    text.append(f"✗ {label}: ", style=f"bold {style}")
    text.append(truncate(message, MAX_TEXT_CHARS))
    return text


def _render_usage(usage: Usage, state: RenderState) -> Text:
    palette = state.palette
    text = Text(style=palette.muted)
    text.append("tokens ", style="bold")
    text.append(
        f"in {_fmt(usage.input_tokens)} (cached {_fmt(usage.cached_input_tokens)})"
        f" · out {_fmt(usage.output_tokens)}"
    )
    if usage.reasoning_output_tokens:
        text.append(f" (reasoning {_fmt(usage.reasoning_output_tokens)})")
    previous = state.last_usage
    if previous is not None:
        delta = usage.minus(previous)
        text.append(
            f" · this turn {_signed(delta.input_tokens)} in"
            f" ({_signed(delta.cached_input_tokens)} cached)"
            f" {_signed(delta.output_tokens)} out"
        )
    state.last_usage = usage
    return text


# -- items ----------------------------------------------------------------------------------


def _render_item(phase: str, item: Mapping[str, Any], state: RenderState) -> list[RenderableType]:
    """Render ``item.<phase>`` for a codex item (phase: started, updated, completed)."""
    palette = state.palette
    kind = _str(item.get("type"))
    if kind == "command_execution":
        return _render_command(phase, item, state)
    if kind == "todo_list":
        return [_render_todo(item, state)]
    if kind in ("agent_message", "reasoning", "file_change", "error") and phase != "completed":
        # Codex sends these complete; an early or repeated copy would only duplicate them.
        return []
    if kind == "agent_message":
        return [
            Text("codex", style=f"bold {palette.primary}"),
            Markdown(truncate(_str(item.get("text")), MAX_TEXT_CHARS)),
        ]
    if kind == "reasoning":
        # Codex titles its reasoning summaries with Markdown bold; show them as plain text.
        text = truncate(_str(item.get("text")), MAX_TEXT_CHARS).replace("**", "")
        return [Text(text, style="dim italic")]
    if kind == "file_change":
        return [_render_file_change(item, state)]
    if kind == "error":
        return [Text(f"⚠ {truncate(_str(item.get('message')), MAX_TEXT_CHARS)}", palette.warning)]
    if kind == "mcp_tool_call":
        if phase == "updated":
            return []
        return [_render_tool_call(item, state)]
    if kind == "web_search":
        if phase == "updated":
            return []
        return [_line(f"search: {_str(item.get('query'))}", palette.accent)]
    return [_generic(f"item.{phase} {kind or '?'}", item, state)]


def _render_command(
    phase: str, item: Mapping[str, Any], state: RenderState
) -> list[RenderableType]:
    palette = state.palette
    command = _str(item.get("command")) or compact_json(item.get("command"))
    status = _str(item.get("status"))
    exit_code = item.get("exit_code")
    running = phase != "completed" and status in ("", "in_progress")
    if running and phase == "updated":
        return []
    # The badge comes first so that a long command, cut at the view's edge, never hides it.
    head = Text(no_wrap=True, overflow="ellipsis")
    if running:
        head.append(" running… ", style=f"bold {palette.muted}")
    elif status == "declined":
        head.append(" declined ", style=f"bold reverse {palette.warning}")
    elif isinstance(exit_code, int) and exit_code == 0 and status != "failed":
        head.append(" exit 0 ", style=f"bold reverse {palette.success}")
    elif isinstance(exit_code, int):
        head.append(f" exit {exit_code} ", style=f"bold reverse {palette.error}")
    else:
        head.append(f" {status or 'done'} ", style=f"bold reverse {palette.error}")
    head.append(" $ ", style=f"bold {palette.accent}")
    head.append(truncate(command, MAX_LINE_CHARS).replace("\n", " ⏎ "), style="bold")
    if running:
        return [head]
    output = _str(item.get("aggregated_output"))
    lines, more = head_lines(output, state.max_output_lines)
    parts: list[RenderableType] = [head]
    parts.extend(_line(f"│ {line}", palette.muted) for line in lines)
    if more:
        noun = "line" if more == 1 else "lines"
        parts.append(Text(f"│ … {more} more {noun}", style=f"italic {palette.muted}"))
    return [Group(*parts)]


def _render_todo(item: Mapping[str, Any], state: RenderState) -> RenderableType:
    palette = state.palette
    entries = item.get("items")
    todos = [e for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []
    done = sum(1 for e in todos if e.get("completed") is True)
    parts: list[RenderableType] = [
        Text(f"todo {done}/{len(todos)}", style=f"bold {palette.primary}")
    ]
    for entry in todos[:100]:
        checked = entry.get("completed") is True
        mark = "[x]" if checked else "[ ]"
        style = palette.muted if checked else ""
        parts.append(_line(f"  {mark} {_str(entry.get('text'))}", style))
    if len(todos) > 100:
        parts.append(Text(f"  … {len(todos) - 100} more", style=palette.muted))
    return Group(*parts)


def _render_file_change(item: Mapping[str, Any], state: RenderState) -> RenderableType:
    palette = state.palette
    changes = item.get("changes")
    entries = [c for c in changes if isinstance(c, Mapping)] if isinstance(changes, list) else []
    status = _str(item.get("status"))
    title = Text("files changed", style=f"bold {palette.primary}")
    if status and status != "completed":
        title.append(f" ({status})", style=palette.error if status == "failed" else palette.muted)
    parts: list[RenderableType] = [title]
    kind_styles = {"A": palette.success, "D": palette.error, "M": palette.warning}
    for change in entries[:200]:
        letter = _FILE_KINDS.get(_str(change.get("kind")), "?")
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"  {letter} ", style=f"bold {kind_styles.get(letter, '')}")
        line.append(truncate(_str(change.get("path")), MAX_LINE_CHARS))
        parts.append(line)
    if len(entries) > 200:
        parts.append(Text(f"  … {len(entries) - 200} more", style=palette.muted))
    return Group(*parts)


def _render_tool_call(item: Mapping[str, Any], state: RenderState) -> RenderableType:
    palette = state.palette
    name = ".".join(p for p in (_str(item.get("server")), _str(item.get("tool"))) if p)
    status = _str(item.get("status")) or "?"
    style = palette.error if status == "failed" else palette.accent
    line = _line(f"tool {name or '?'} · {status}", style)
    error = item.get("error")
    if error:
        message = _str(error.get("message")) if isinstance(error, Mapping) else _str(error)
        return Group(line, _line(f"  {message or compact_json(error)}", palette.error))
    return line
