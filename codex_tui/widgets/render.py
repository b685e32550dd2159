"""Provides pure functions that turn a task's events into Rich renderables for the event view.

Nothing here imports Textual, so every rule is unit-testable with a plain Rich console.
:func:`render_event` takes one :class:`~server_client.models.Event` and a mutable
:class:`RenderState` (what the stream has shown so far, e.g. the previous token usage) and
returns the renderables to append to the log. Colours come from a :class:`Palette`, which the
event view builds from the app's current theme variables.

Codex output can be huge (one ``aggregated_output`` can be 1 MiB), so every text is cut to a
display budget before Rich sees it: see :data:`MAX_TEXT_CHARS`, :data:`MAX_LINE_CHARS` and
:attr:`RenderState.max_output_lines`.

Rendering is the costly part of showing an event, so callers that only need to know whether an
event shows anything ask :func:`is_shown`, which looks at the event's fields and renders
nothing. Agent messages are Markdown: :func:`render_markdown` parses them with one shared
markdown-it parser (:func:`markdown_parser`), and returns a plain :class:`~rich.text.Text`
when the message has no Markdown syntax at all. ``rich.markdown`` (and through it markdown-it
and Pygments) is imported on the first message that needs it, not on import.
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.segment import Segment
from rich.text import Text

from server_client.models import Event, EventKind, TaskStatus

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from rich.markdown import Markdown

__all__ = [
    "MAX_EXPANDED_LINES",
    "MAX_LINE_CHARS",
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
    """What one event stream has rendered so far; :func:`annotate` updates it.

    Attributes:
        palette: Styles for each semantic role.
        max_output_lines: How many lines of a command's output to show (folded).
        last_usage: The usage of the previous ``turn.completed`` in this stream.
        turns: How many ``turn.started`` events the stream has shown.
        last_status: The newest task status seen in the stream.
        started: When each open item (by codex item id) started, for command durations;
            bounded by :data:`MAX_OPEN_ITEMS`.
    """

    palette: Palette = field(default_factory=Palette)
    max_output_lines: int = 20
    last_usage: Usage | None = None
    turns: int = 0
    last_status: TaskStatus | None = None
    started: dict[str, datetime] = field(default_factory=dict)


#: Most open items whose start time is remembered (older ones lose their duration).
MAX_OPEN_ITEMS = 1000
#: Most lines of one command's output shown when it is expanded.
MAX_EXPANDED_LINES = 2000


@dataclass(frozen=True, slots=True)
class Annotation:
    """What an event means in the context of the stream before it, fixed when it arrives.

    Rendering an event again (expanded, say) uses its annotation instead of the stream state,
    which has moved on by then.

    Attributes:
        turn: The turn number, for ``turn.started``.
        previous_usage: The usage reported by the turn before, for ``turn.completed``.
        duration_s: Seconds from ``item.started`` to this ``item.completed`` (same item id),
            from the events' timestamps.
    """

    turn: int | None = None
    previous_usage: Usage | None = None
    duration_s: float | None = None


#: The annotation of most events (nothing to add); shared, as annotations never change.
_NO_NOTE = Annotation()


@dataclass(frozen=True)
class _Ctx:
    palette: Palette
    note: Annotation
    expanded: bool
    max_output_lines: int
    fold_reasoning: bool


def annotate(event: Event, state: RenderState) -> Annotation:
    """Record ``event`` in ``state`` and return what it means in the stream so far."""
    if event.kind is EventKind.STATUS:
        status = event.status
        if status is not None:
            state.last_status = status
        return _NO_NOTE
    data = event.data
    if event.kind is not EventKind.CODEX or not isinstance(data, Mapping):
        return _NO_NOTE
    kind = data.get("type")
    if kind == "turn.started":
        state.turns += 1
        return Annotation(turn=state.turns)
    if kind == "turn.completed":
        previous = state.last_usage
        state.last_usage = Usage.from_data(data.get("usage"))
        return Annotation(previous_usage=previous)
    item = data.get("item")
    item_id = item.get("id") if isinstance(item, Mapping) else None
    if not isinstance(item_id, str):
        return _NO_NOTE
    if kind == "item.started":
        if len(state.started) >= MAX_OPEN_ITEMS:
            state.started.pop(next(iter(state.started)))
        state.started[item_id] = event.ts
    elif kind == "item.completed":
        began = state.started.pop(item_id, None)
        if began is not None:
            return Annotation(duration_s=max((event.ts - began).total_seconds(), 0.0))
    return _NO_NOTE


_ITEM_EVENTS = frozenset(("item.started", "item.updated", "item.completed"))


@cache
def warm_up() -> None:
    """Import and build what the first Markdown message needs (rich.markdown, markdown-it, the
    shared parser, Pygments and its Python lexer) by rendering a small message to nowhere.
    Thread-safe, so a view can run it in a thread instead of stalling on its first message."""
    console = Console(file=io.StringIO(), width=40, color_system="truecolor")
    console.print(render_markdown("# Ready\n\n`code` and:\n\n```python\nready = True\n```"))


def is_shown(event: Event) -> bool:
    """True when ``event`` shows anything, i.e. :func:`render_annotated` returns at least one
    renderable for it (folded or expanded alike); decided from its fields, rendering nothing.

    Hidden are early or repeated copies of items codex sends complete (``item.started`` of an
    agent message, say) and ``item.updated`` of a running command, a tool call or a search.
    """
    if event.kind is not EventKind.CODEX:
        return True
    data = event.data
    if not isinstance(data, Mapping):
        return True
    kind = data.get("type")
    if kind not in _ITEM_EVENTS:
        return True
    item = data.get("item")
    if not isinstance(item, Mapping):
        return True
    return not _item_hidden(kind.removeprefix("item."), item)


def _item_hidden(phase: str, item: Mapping[str, Any]) -> bool:
    """True when ``item.<phase>`` adds nothing visible (the one rule both :func:`is_shown`
    and :func:`_render_item` follow)."""
    kind = _str(item.get("type"))
    if kind == "command_execution":
        # Only the start and the end of a running command show; updates repeat the start.
        return phase == "updated" and _str(item.get("status")) in ("", "in_progress")
    if kind in ("agent_message", "reasoning", "file_change", "error"):
        # Codex sends these complete; an early or repeated copy would only duplicate them.
        return phase != "completed"
    if kind in ("mcp_tool_call", "web_search"):
        return phase == "updated"
    return False


def is_foldable(event: Event) -> bool:
    """True when ``event`` renders differently expanded (long command output, reasoning)."""
    data = event.data
    if event.kind is not EventKind.CODEX or not isinstance(data, Mapping):
        return False
    item = data.get("item")
    if data.get("type") != "item.completed" or not isinstance(item, Mapping):
        return False
    return item.get("type") in ("command_execution", "reasoning")


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
    """Render one event of a task's log in stream order; updates ``state``.

    The same as :func:`render_annotated` with the annotation :func:`annotate` returns, folded.
    Returns an empty list for events that add nothing visible (e.g. ``item.updated`` of an
    agent message, which codex never sends incrementally).
    """
    return render_annotated(
        event,
        annotate(event, state),
        state.palette,
        max_output_lines=state.max_output_lines,
        fold_reasoning=False,
    )


def render_annotated(
    event: Event,
    note: Annotation,
    palette: Palette,
    *,
    expanded: bool = False,
    max_output_lines: int = 20,
    fold_reasoning: bool = True,
) -> list[RenderableType]:
    """Render one event with its :class:`Annotation`; pure, so it can render again.

    Args:
        event: The event.
        note: What :func:`annotate` returned when the event arrived.
        palette: Styles for each semantic role.
        expanded: Show folded parts: a command's whole output (up to
            :data:`MAX_EXPANDED_LINES`) and a reasoning item's whole text.
        max_output_lines: Lines of a command's output shown while folded.
        fold_reasoning: Show only the first line of a reasoning item unless ``expanded``.
    """
    ctx = _Ctx(palette, note, expanded, max_output_lines, fold_reasoning)
    if event.kind is EventKind.CODEX:
        if isinstance(event.data, Mapping):
            return _render_codex(event.data, ctx)
        return [_generic("codex", event.data, palette)]
    if event.kind is EventKind.STATUS:
        return _render_status(event.data, palette)
    if event.kind is EventKind.STDERR:
        return [_line(_as_line(event.data), palette.muted)]
    if event.kind is EventKind.STDOUT:
        return [_line(_as_line(event.data))]
    return [_generic(str(event.kind), event.data, palette)]


def _as_line(data: object) -> str:
    """The text of a stdout/stderr event (a string, or an object with ``line``/``text``)."""
    if isinstance(data, str):
        return data[: MAX_LINE_CHARS * 2].rstrip("\n")
    if isinstance(data, Mapping):
        for key in ("line", "text", "data"):
            if isinstance(data.get(key), str):
                return str(data[key])[: MAX_LINE_CHARS * 2].rstrip("\n")
    return compact_json(data)


def _generic(label: str, data: object, palette: Palette) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(label, style=f"bold {palette.muted}")
    text.append(" ")
    text.append(compact_json(data), style=palette.muted)
    return text


def _render_status(data: object, palette: Palette) -> list[RenderableType]:
    fields: Mapping[str, Any] = data if isinstance(data, Mapping) else {"status": data}
    raw = fields.get("status")
    try:
        status: TaskStatus | None = TaskStatus(raw) if isinstance(raw, str) else None
    except ValueError:
        status = None
    if status is None:
        return [_generic("status", data, palette)]
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


def _render_codex(data: Mapping[str, Any], ctx: _Ctx) -> list[RenderableType]:
    palette = ctx.palette
    kind = _str(data.get("type"))
    if kind == "thread.started":
        return [Text(f"thread {_str(data.get('thread_id')) or '?'}", style=palette.muted)]
    if kind == "turn.started":
        number = f" {ctx.note.turn}" if ctx.note.turn is not None else ""
        return [Text(f"── turn{number} ──", style=f"bold {palette.muted}")]
    if kind == "turn.completed":
        return [_render_usage(Usage.from_data(data.get("usage")), ctx)]
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
            return _render_item(kind.removeprefix("item."), item, ctx)
    return [_generic(kind or "codex", data, palette)]


def _error_line(label: str, message: str, style: str) -> Text:
    text = Text(style=style)
    text.append(f"✗ {label}: ", style=f"bold {style}")
    text.append(truncate(message, MAX_TEXT_CHARS))
    return text


def _render_usage(usage: Usage, ctx: _Ctx) -> Text:
    """Codex reports the thread's cumulative usage (codex-facts: ``turn.completed.usage``);
    the run's own share is the difference from the previous report in the stream."""
    text = Text(style=ctx.palette.muted)
    text.append("tokens ", style="bold")
    text.append(
        f"in {_fmt(usage.input_tokens)} (cached {_fmt(usage.cached_input_tokens)})"
        f" · out {_fmt(usage.output_tokens)}"
    )
    if usage.reasoning_output_tokens:
        text.append(f" (reasoning {_fmt(usage.reasoning_output_tokens)})")
    previous = ctx.note.previous_usage
    if previous is not None:
        delta = usage.minus(previous)
        text.append(
            f" · this turn {_signed(delta.input_tokens)} in"
            f" ({_signed(delta.cached_input_tokens)} cached)"
            f" {_signed(delta.output_tokens)} out"
        )
    return text


# -- items ----------------------------------------------------------------------------------


def _render_item(phase: str, item: Mapping[str, Any], ctx: _Ctx) -> list[RenderableType]:
    """Render ``item.<phase>`` for a codex item (phase: started, updated, completed)."""
    if _item_hidden(phase, item):
        return []
    palette = ctx.palette
    kind = _str(item.get("type"))
    if kind == "command_execution":
        return _render_command(phase, item, ctx)
    if kind == "todo_list":
        return [_render_todo(item, palette)]
    if kind == "agent_message":
        return [
            Text("codex", style=f"bold {palette.primary}"),
            render_markdown(truncate(_str(item.get("text")), MAX_TEXT_CHARS)),
        ]
    if kind == "reasoning":
        return [_render_reasoning(item, ctx)]
    if kind == "file_change":
        return [_render_file_change(item, palette)]
    if kind == "error":
        return [Text(f"⚠ {truncate(_str(item.get('message')), MAX_TEXT_CHARS)}", palette.warning)]
    if kind == "mcp_tool_call":
        return [_render_tool_call(item, palette)]
    if kind == "web_search":
        return [_line(f"search: {_str(item.get('query'))}", palette.accent)]
    return [_generic(f"item.{phase} {kind or '?'}", item, palette)]


# -- Markdown ---------------------------------------------------------------------------------

#: Characters that can start Markdown syntax anywhere in a line (emphasis, code, links, HTML,
#: entities, escapes, tables, strikethrough) or that Markdown treats as whitespace or replaces.
_MARKDOWN_INLINE = re.compile(r"[\\`*_\[\]<>&|~\t\r\x00-\x08\x0b-\x1f\x7f]")
#: How a line may not begin: blocks (lists, headings, quotes, fences, rules, setext
#: underlines, ordered lists); a leading space (indented code, stripped indentation).
_MARKDOWN_BLOCK = re.compile(r"^(?:[^\S\n]|[#>+=\-]|\d{1,9}[.)])", re.MULTILINE)


def _is_plain(text: str) -> bool:
    """True when Markdown would show ``text`` as it is: paragraphs of text without any syntax,
    separated by single blank lines, with no leading or trailing whitespace on any line."""
    if not text or _MARKDOWN_INLINE.search(text) or _MARKDOWN_BLOCK.search(text):
        return False
    if "\n\n\n" in text or text[0].isspace() or text[-1].isspace():
        return False
    return not any(line and line[-1].isspace() for line in text.split("\n"))


def render_markdown(text: str) -> RenderableType:
    """``text`` as Rich renders Markdown: a plain :class:`~rich.text.Text` (paragraphs, their
    lines joined by spaces, left-justified as Markdown does) when it has no Markdown syntax,
    else a :class:`rich.markdown.Markdown` parsed by the shared :func:`markdown_parser`."""
    if _is_plain(text):
        paragraphs = [Text(p.replace("\n", " "), justify="left") for p in text.split("\n\n")]
        return paragraphs[0] if len(paragraphs) == 1 else _Paragraphs(paragraphs)
    markdown = copy.copy(_markdown_template())
    markdown.markup = text
    markdown.parsed = markdown_parser().parse(text)
    return markdown


class _Paragraphs:
    """Paragraphs separated by one empty line, as :class:`rich.markdown.Markdown` draws them."""

    def __init__(self, paragraphs: list[Text]) -> None:
        self.paragraphs = paragraphs

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for index, paragraph in enumerate(self.paragraphs):
            if index:
                yield Segment.line()
            yield from console.render(paragraph, options)


@cache
def markdown_parser() -> MarkdownIt:
    """The one markdown-it parser every agent message is parsed with, configured as
    :class:`rich.markdown.Markdown` configures its own (CommonMark with strikethrough and
    tables). Building a parser compiles its rule chains, so it is built once."""
    from markdown_it import MarkdownIt

    return MarkdownIt().enable("strikethrough").enable("table")


@cache
def _markdown_template() -> Markdown:
    """An empty :class:`rich.markdown.Markdown` with Rich's defaults; messages are shallow
    copies of it with their own markup and tokens (its ``__init__`` would build a parser)."""
    from rich.markdown import Markdown

    return Markdown("")


def _render_reasoning(item: Mapping[str, Any], ctx: _Ctx) -> Text:
    """Reasoning is dimmed; folded, only its first line (codex's bold title) shows."""
    # Codex titles its reasoning summaries with Markdown bold; show them as plain text.
    text = truncate(_str(item.get("text")), MAX_TEXT_CHARS).replace("**", "").strip()
    if ctx.expanded or not ctx.fold_reasoning:
        return Text(text, style="dim italic")
    first, _, rest = text.partition("\n")
    shown = Text(f"▸ {first}", style="dim italic")
    if rest.strip():
        shown.append(" …", style="dim")
    return shown


def _render_command(phase: str, item: Mapping[str, Any], ctx: _Ctx) -> list[RenderableType]:
    palette = ctx.palette
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
    if ctx.note.duration_s is not None:
        head.append(f" {format_duration(ctx.note.duration_s)}", style=palette.muted)
    head.append(" $ ", style=f"bold {palette.accent}")
    head.append(truncate(command, MAX_LINE_CHARS).replace("\n", " ⏎ "), style="bold")
    if running:
        return [head]
    output = _str(item.get("aggregated_output"))
    limit = MAX_EXPANDED_LINES if ctx.expanded else ctx.max_output_lines
    lines, more = head_lines(output, limit)
    parts: list[RenderableType] = [head]
    parts.extend(_line(f"│ {line}", palette.muted) for line in lines)
    if more:
        noun = "line" if more == 1 else "lines"
        hint = "" if ctx.expanded else " (enter shows them)"
        parts.append(Text(f"│ … {more} more {noun}{hint}", style=f"italic {palette.muted}"))
    return [Group(*parts)]


def _render_todo(item: Mapping[str, Any], palette: Palette) -> RenderableType:
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


def _render_file_change(item: Mapping[str, Any], palette: Palette) -> RenderableType:
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


def _render_tool_call(item: Mapping[str, Any], palette: Palette) -> RenderableType:
    name = ".".join(p for p in (_str(item.get("server")), _str(item.get("tool"))) if p)
    status = _str(item.get("status")) or "?"
    style = palette.error if status == "failed" else palette.accent
    line = _line(f"tool {name or '?'} · {status}", style)
    error = item.get("error")
    if error:
        message = _str(error.get("message")) if isinstance(error, Mapping) else _str(error)
        return Group(line, _line(f"  {message or compact_json(error)}", palette.error))
    return line


def render_raw(event: Event, palette: Palette) -> list[RenderableType]:
    """The event's envelope as indented JSON (the view's raw toggle), cut to
    :data:`MAX_TEXT_CHARS`."""
    envelope = event.model_dump(mode="json")
    text = json.dumps(envelope, indent=2, ensure_ascii=False, default=str)
    head = Text(f"raw · seq {event.seq} · {event.kind.value}", style=f"bold {palette.muted}")
    return [head, Text(truncate(text, MAX_TEXT_CHARS), style=palette.muted)]


def event_text(event: Event, limit: int = 100_000) -> str:
    """Every string value of the event, lower-cased and joined by newlines (what search
    matches), at most ``limit`` characters."""
    parts: list[str] = []
    size = 0
    stack: list[object] = [event.data]
    while stack and size < limit:
        value = stack.pop()
        if isinstance(value, str):
            parts.append(value)
            size += len(value) + 1
        elif isinstance(value, Mapping):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(str(value))
            size += 8
    return "\n".join(parts)[:limit].lower()
