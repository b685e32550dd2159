"""Provides the events of a task as Rich renderables, for the TUI's panes and the CLI's plain
printer.

Nothing here imports Textual, so every rule is unit-testable with a plain Rich console.
:func:`render_event` takes one :class:`~server_client.models.Event` and a mutable
:class:`RenderState` (what the stream has shown so far, e.g. the previous token usage) and
returns the renderables to append to the log. Which events show, and what they say, is
decided by :mod:`codex_tui.events.view`; colours come from a
:class:`~codex_tui.events.palette.Palette`.

Codex output can be huge (one command's output can be 1 MiB), so every text is cut to a
display budget before Rich sees it (:data:`~codex_tui.events.view.MAX_TEXT_CHARS`,
:data:`~codex_tui.events.view.MAX_LINE_CHARS`, :attr:`RenderState.max_output_lines`), and
made visible (docs/reliability.md T1). Colour codes (SGR) in a command's output show as
colour; every other escape sequence shows as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.text import Text

from codex_tui.events.markdown import render_markdown
from codex_tui.events.palette import Palette
from codex_tui.events.view import (
    CONVERSATION_KEYS,
    MAX_EXPANDED_LINES,
    MAX_LINE_CHARS,
    MAX_TEXT_CHARS,
    Annotation,
    LiveApproval,
    LiveItem,
    StreamState,
    annotate,
    approval_of,
    approval_outcome,
    command_badge,
    compact_json,
    failure_message,
    format_duration,
    head_lines,
    item_shows,
    shown_line,
    shown_text,
    status_details,
    status_icon,
    status_note,
    stream_line,
    thread_label,
    tool_name,
)
from server_client import codex
from server_client.enums import EventKind, TaskStatus
from server_client.text import one_line, truncate

if TYPE_CHECKING:
    from server_client.models import Event

__all__ = [
    "RenderState",
    "event_text",
    "render_annotated",
    "render_event",
    "render_live",
    "render_raw",
]

_FILE_KINDS: dict[str, str] = {"add": "A", "delete": "D", "update": "M"}


@dataclass
class RenderState(StreamState):
    """What one event stream has rendered so far (:class:`~codex_tui.events.view.StreamState`)
    and how it renders.

    Attributes:
        palette: Styles for each semantic role.
        max_output_lines: How many lines of a command's output to show (folded).
    """

    palette: Palette = field(default_factory=Palette)
    max_output_lines: int = 20


@dataclass(frozen=True)
class _Ctx:
    palette: Palette
    note: Annotation
    expanded: bool
    max_output_lines: int
    fold_reasoning: bool
    now: datetime | None = None
    keys: Mapping[str, str] = field(default_factory=lambda: CONVERSATION_KEYS)


def render_event(
    event: Event, state: RenderState, *, keys: Mapping[str, str] = CONVERSATION_KEYS
) -> list[RenderableType]:
    """Render one event of a task's log in stream order; updates ``state``.

    The same as :func:`render_annotated` with the annotation
    :func:`~codex_tui.events.view.annotate` returns, folded. Returns an empty list for events
    that add nothing visible (e.g. ``item.updated`` of an agent message, which codex never
    sends incrementally). A printer cannot change what it printed, so items show as they
    complete (deltas show nothing here) and an approval card without its answer keys.
    ``keys`` (binding id → what to type) words the hints, e.g. how to reply.
    """
    note = annotate(event, state)
    if isinstance(note.live, LiveItem) and note.live.kind != "command":
        return []
    return render_annotated(
        event,
        Annotation(turn=note.turn, previous_usage=note.previous_usage, duration_s=note.duration_s),
        state.palette,
        max_output_lines=state.max_output_lines,
        fold_reasoning=False,
        keys=keys,
    )


def render_annotated(
    event: Event,
    note: Annotation,
    palette: Palette,
    *,
    expanded: bool = False,
    max_output_lines: int = 20,
    fold_reasoning: bool = True,
    now: datetime | None = None,
    keys: Mapping[str, str] = CONVERSATION_KEYS,
) -> list[RenderableType]:
    """Render one event with its :class:`~codex_tui.events.view.Annotation`; pure, so it
    can render again.

    An event that started a live item or asked for an approval (``note.live``) renders what
    that shows now (:func:`render_live`).

    Args:
        event: The event.
        note: What :func:`~codex_tui.events.view.annotate` returned when the event arrived.
        palette: Styles for each semantic role.
        expanded: Show folded parts: a command's whole output (up to
            :data:`~codex_tui.events.view.MAX_EXPANDED_LINES`) and a reasoning item's
            whole text.
        max_output_lines: Lines of a command's output shown while folded.
        fold_reasoning: Show only the first line of a reasoning item unless ``expanded``.
        now: The current time, for a running command's timer (None: no timer).
        keys: The conversation keys by binding id, named on an approval card.
    """
    ctx = _Ctx(palette, note, expanded, max_output_lines, fold_reasoning, now, keys)
    if note.live is not None:
        return _render_live(note.live, ctx)
    typed = event.codex
    if typed is not None:
        return _render_codex(typed, event.data, ctx)
    if event.kind is EventKind.STATUS:
        return _render_status(event.data, ctx)
    if event.kind is EventKind.STDERR:
        return [_line(stream_line(event.data), palette.muted)]
    if event.kind is EventKind.STDOUT:
        return [_line(stream_line(event.data))]
    return [_generic(str(event.kind), event.data, palette)]


def _line(text: str, style: str = "") -> Text:
    """One display line: no wrapping, cut with an ellipsis at the view's edge, control
    characters shown visibly."""
    return Text(
        one_line(truncate(text[: MAX_LINE_CHARS * 2], MAX_LINE_CHARS).replace("\t", "    ")),
        style=style,
        no_wrap=True,
        overflow="ellipsis",
    )


#: A colour code (SGR) in command output: the only escape sequence rendered as such.
_SGR = re.compile(r"\x1b\[[0-9;:]*m")


def _output_line(text: str, style: str) -> Text:
    """One line of a command's output: colour codes (SGR) become styles, over ``style``;
    every other control character shows visibly."""
    if "\x1b[" not in text:
        return _line(text, style)
    from rich.ansi import AnsiDecoder  # only output with colour codes needs it

    text = text[: MAX_LINE_CHARS * 2].replace("\t", "    ")
    parts: list[str] = []
    start = 0
    for match in _SGR.finditer(text):
        parts.append(shown_line(text[start : match.start()], MAX_LINE_CHARS * 2))
        parts.append(match.group())
        start = match.end()
    parts.append(shown_line(text[start:], MAX_LINE_CHARS * 2))
    decoded = AnsiDecoder().decode_line("".join(parts))
    decoded.stylize_before(style)
    decoded.truncate(MAX_LINE_CHARS, overflow="ellipsis")
    decoded.no_wrap = True
    decoded.overflow = "ellipsis"
    return decoded


def _generic(label: str, data: object, palette: Palette) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(shown_line(label), style=f"bold {palette.muted}")
    text.append(" ")
    text.append(compact_json(data), style=palette.muted)
    return text


def _render_status(data: object, ctx: _Ctx) -> list[RenderableType]:
    palette = ctx.palette
    fields: Mapping[str, Any] = data if isinstance(data, Mapping) else {"status": data}
    raw = fields.get("status")
    try:
        status: TaskStatus | None = TaskStatus(raw) if isinstance(raw, str) else None
    except ValueError:
        status = None
    if status is None:
        return [_generic("status", data, palette)]
    reply = fields.get("reply")
    if isinstance(reply, Mapping) and isinstance(reply.get("prompt"), str):
        return [_you(reply["prompt"], palette)]
    approval = approval_of(fields)
    if approval is not None:
        if "kind" in approval:  # asked, seen without its card (a printer)
            return [_render_card(LiveApproval(approval, 0), ctx, keys=False)]
        return [_line(f"approval {approval_outcome(approval)}", palette.muted)]
    text = Text()
    style = palette.for_status(status)
    text.append(f"{status_icon(status)} {status.value}", style=f"bold {style}")
    note = status_note(fields)
    if note:
        text.append(f" · {note}", style=f"bold {style}")
    details = status_details(fields)
    if details:
        text.append(" · " + shown_line(" · ".join(details)))
    if status is TaskStatus.IDLE:
        text.append(f" — reply with {ctx.keys.get('reply', '?')}", style=palette.muted)
    return [text]


def _you(prompt: str, palette: Palette) -> Text:
    """``› you: …``: what the user said (a reply, or the prompt codex echoes)."""
    text = Text()
    text.append("› you: ", style=f"bold {palette.accent}")
    text.append(shown_text(prompt).strip())
    return text


def _render_codex(typed: Any, data: Any, ctx: _Ctx) -> list[RenderableType]:
    """Render a typed codex event; ``data`` is the event as codex printed it."""
    palette = ctx.palette
    match typed:
        case codex.ThreadStarted():
            return [Text(thread_label(typed), style=palette.muted)]
        case codex.TurnStarted():
            number = f" {ctx.note.turn}" if ctx.note.turn is not None else ""
            return [Text(f"── turn{number} ──", style=f"bold {palette.muted}")]
        case codex.TurnCompleted(usage=usage):
            return [_render_usage(usage, ctx)]
        case codex.TurnInterrupted():
            text = Text("■ turn interrupted", style=f"bold {palette.warning}")
            text.append(
                f" — the conversation goes on: reply with {ctx.keys.get('reply', '?')}",
                style=palette.muted,
            )
            return [text]
        case codex.ItemDelta() | codex.UsageUpdated():
            return []  # shown through the item they build and the pane's header
        case codex.TurnFailed():
            message = failure_message(typed) or compact_json(typed.error)
            return [_error_line("turn failed", message, palette.error)]
        case codex.CodexError():
            message = failure_message(typed) or compact_json(data)
            return [_error_line("error", message, palette.error)]
        case codex.ItemEvent(item=codex.UnknownItem(raw=raw)) if not isinstance(raw, Mapping):
            return [_generic(typed.type, data, palette)]
        case codex.ItemEvent():
            return _render_item(typed.phase, typed.item, ctx)
        case codex.UnknownEvent(type=kind, raw=raw):
            return [_generic(kind or "codex", raw, palette)]
    return []


def _error_line(label: str, message: str, style: str) -> Text:
    text = Text(style=style)
    text.append(f"✗ {label}: ", style=f"bold {style}")
    text.append(message)
    return text


def _fmt(number: int) -> str:
    return f"{number:,}"


def _signed(number: int) -> str:
    return f"{number:+,}"


def _render_usage(usage: codex.Usage, ctx: _Ctx) -> Text:
    """Codex reports the thread's cumulative usage (docs/codex-facts.md); the turn's own
    share is the difference from the previous report in the stream."""
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


# -- live items and approval cards ------------------------------------------------------------


def render_live(
    live: LiveItem | LiveApproval,
    palette: Palette,
    *,
    expanded: bool = False,
    max_output_lines: int = 20,
    now: datetime | None = None,
    keys: Mapping[str, str] = CONVERSATION_KEYS,
) -> list[RenderableType]:
    """What a live item or an approval card shows now.

    A live item shows what its deltas built (an agent message's text so far, a reasoning
    summary, a running command with the tail of its output and, given ``now``, its elapsed
    time) until its ``item.completed`` came; from then on that event, rendered as it would
    be on its own. A card shows what codex asks and, while pending, the answer ``keys``
    (binding id → key); once settled, what became of it.
    """
    ctx = _Ctx(palette, Annotation(), expanded, max_output_lines, True, now, keys)
    return _render_live(live, ctx)


def _render_live(live: LiveItem | LiveApproval, ctx: _Ctx) -> list[RenderableType]:
    palette = ctx.palette
    if isinstance(live, LiveApproval):
        return [_render_card(live, ctx, keys=True)]
    if live.final is not None:
        event, note = live.final
        return render_annotated(
            event,
            note,
            palette,
            expanded=ctx.expanded,
            max_output_lines=ctx.max_output_lines,
            fold_reasoning=ctx.fold_reasoning,
            now=ctx.now,
            keys=ctx.keys,
        )
    more = " …" if live.dropped else ""
    if live.kind == "agent_message":
        return [
            Text("codex ✎", style=f"bold {palette.primary}"),
            Text(shown_text(live.text) + more),
        ]
    if live.kind == "reasoning":
        text = shown_text(live.text).replace("**", "").strip()
        return [Text(f"▸ {text}{more}", style="dim italic")]
    if live.kind == "stderr":
        return _render_stderr_run(live, ctx)
    return [_render_running_command(live, ctx)]


def _render_stderr_run(live: LiveItem, ctx: _Ctx) -> list[RenderableType]:
    """A run of consecutive stderr lines: each line, dimmed, when ``expanded`` or alone; else
    one dimmed row, ``▸ 3 stderr lines · <the first line>``."""
    lines = live.text.splitlines() or [""]
    style = ctx.palette.muted
    if ctx.expanded or len(lines) == 1:
        shown: list[RenderableType] = [_line(line, style) for line in lines]
        if live.dropped:
            shown.append(_line("… (more stderr not kept)", style))
        return shown
    # The count first: a narrow pane cuts the row's end.
    return [_line(f"▸ {len(lines)} stderr lines · {lines[0]}", style)]


def _render_running_command(live: LiveItem, ctx: _Ctx) -> RenderableType:
    """A running command: its badge, elapsed time, command line and the tail of its output;
    one whose turn or task ended first says so (``interrupted``, ``canceled``) instead."""
    palette = ctx.palette
    head = Text(no_wrap=True, overflow="ellipsis")
    if live.ended is not None:
        # Its turn or task ended first: it never completed.
        head.append(f" {live.ended} ", style=f"bold reverse {palette.warning}")
        if live.ended_at is not None:
            elapsed = max((live.ended_at - live.started).total_seconds(), 0.0)
            if elapsed < MAX_TIMER_S:
                head.append(f" {format_duration(elapsed)}", style=palette.muted)
    else:
        head.append(" running… ", style=f"bold {palette.muted}")
        if ctx.now is not None:
            elapsed = max((ctx.now - live.started).total_seconds(), 0.0)
            if elapsed < MAX_TIMER_S:
                head.append(f" {format_duration(elapsed)}", style=palette.accent)
    head.append(" $ ", style=f"bold {palette.accent}")
    command = truncate(live.command or "(command output)", MAX_LINE_CHARS).replace("\n", " ⏎ ")
    head.append(one_line(command), style="bold")
    if not live.text:
        return head
    body = live.text[:-1] if live.text.endswith("\n") else live.text
    lines = body.split("\n")
    limit = MAX_EXPANDED_LINES if ctx.expanded else ctx.max_output_lines
    parts: list[RenderableType] = [head]
    hidden = len(lines) - limit
    if hidden > 0 or live.dropped:
        earlier = f"{hidden} earlier lines" if hidden > 0 else "earlier output"
        parts.append(Text(f"│ … {earlier}", style=f"italic {palette.muted}"))
    parts.extend(_output_line(f"│ {line}", palette.muted) for line in lines[-limit:])
    return Group(*parts)


#: The longest a running command's timer counts, in seconds: the start is the worker's clock,
#: the end this machine's, so beyond a day the two clocks (or a stale log) are more likely
#: than the command, and no timer shows.
MAX_TIMER_S = 86_400.0

#: Most lines of a file change's diff an approval card shows.
CARD_DIFF_LINES = 40


def _render_card(card: LiveApproval, ctx: _Ctx, *, keys: bool) -> RenderableType:
    """An approval card: what codex asks (kind, command and cwd, or the diff, or the
    questions), its reason, then the answer keys while pending, or the outcome."""
    palette = ctx.palette
    approval = card.approval
    kind = approval.get("kind")
    pending = card.pending
    style = palette.warning if pending else palette.muted
    title = Text(no_wrap=True, overflow="ellipsis")
    title.append("⚠ approval needed" if pending else "approval", style=f"bold {style}")
    title.append(f" · {_KINDS.get(str(kind), shown_line(str(kind)))}", style=style)
    parts: list[RenderableType] = [title]
    command = approval.get("command")
    if isinstance(command, str):
        parts.append(_line(f"  $ {command}", "bold"))
    cwd = approval.get("cwd")
    if isinstance(cwd, str) and cwd:
        parts.append(_line(f"  in {cwd}", palette.muted))
    diff = approval.get("diff")
    if isinstance(diff, str) and diff:
        lines, more = head_lines(diff, CARD_DIFF_LINES)
        for line in lines:
            tone = (
                palette.success
                if line.startswith("+")
                else palette.error
                if line.startswith("-")
                else palette.muted
            )
            parts.append(_line(f"  {line}", tone))
        if more:
            parts.append(Text(f"  … {more} more lines", style=f"italic {palette.muted}"))
    questions = approval.get("questions")
    if isinstance(questions, list):
        for question in questions[:20]:
            if isinstance(question, Mapping):
                header = question.get("header") or ""
                asked = question.get("question") or ""
                parts.append(_line(f"  ? {header} {asked}".rstrip(), "bold"))
                options = question.get("options")
                if isinstance(options, list):
                    labels = [o.get("label", "") for o in options if isinstance(o, Mapping)]
                    parts.append(_line(f"    {' / '.join(map(str, labels))}", palette.muted))
    reason = approval.get("reason")
    if isinstance(reason, str) and reason:
        parts.append(_line(f"  reason: {reason}", palette.muted))
    if not pending:
        parts.append(_line(f"  → {card.outcome}", f"bold {palette.muted}"))
    elif keys:
        parts.append(_answer_keys(kind, ctx))
    return Group(*parts)


_KINDS: dict[str, str] = {
    "command": "run a command",
    "file_change": "apply a file change",
    "user_input": "codex asks",
}


def _answer_keys(kind: object, ctx: _Ctx) -> Text:
    """The keys that answer a pending approval, e.g. ``y accept  a session  …``."""
    keys = ctx.keys
    if kind == "user_input":
        choices = [("approve", "answer"), ("cancel-turn", "cancel turn")]
    else:
        choices = [
            ("approve", "accept"),
            ("approve-session", "session"),
            ("decline", "decline"),
            ("cancel-turn", "cancel turn"),
        ]
    # Short enough for a pane beside the task list at 80 columns.
    text = Text(no_wrap=True, overflow="ellipsis")
    for index, (binding, label) in enumerate(choices):
        if index:
            text.append("  ")
        text.append(keys.get(binding, "?"), style=f"bold reverse {ctx.palette.accent}")
        text.append(f" {label}")
    return text


# -- items ----------------------------------------------------------------------------------


def _render_item(phase: codex.ItemPhase, item: codex.Item, ctx: _Ctx) -> list[RenderableType]:
    """Render ``item.<phase>`` of a codex item, if it shows (view.item_shows)."""
    if not item_shows(phase, item):
        return []
    palette = ctx.palette
    match item:
        case codex.CommandExecution():
            return _render_command(phase, item, ctx)
        case codex.TodoList():
            return [_render_todo(item, palette)]
        case codex.AgentMessage(text=text):
            return [
                Text("codex", style=f"bold {palette.primary}"),
                render_markdown(truncate(text, MAX_TEXT_CHARS)),
            ]
        case codex.UserMessage(text=text):
            return [_you(text, palette)]
        case codex.Reasoning():
            return [_render_reasoning(item, ctx)]
        case codex.FileChange():
            return [_render_file_change(item, palette)]
        case codex.ErrorItem():
            return [Text(f"⚠ {failure_message(item)}", palette.warning)]
        case codex.McpToolCall():
            return [_render_tool_call(item, palette)]
        case codex.WebSearch(query=query):
            return [_line(f"search: {query}", palette.accent)]
        case codex.UnknownItem(type=kind, raw=raw):
            return [_generic(f"item.{phase} {kind or '?'}", raw, palette)]
    return []


def _render_reasoning(item: codex.Reasoning, ctx: _Ctx) -> Text:
    """Reasoning is dimmed; folded, only its first line (codex's bold title) shows."""
    # Codex titles its reasoning summaries with Markdown bold; show them as plain text.
    text = shown_text(item.text).replace("**", "").strip()
    if ctx.expanded or not ctx.fold_reasoning:
        return Text(text, style="dim italic")
    first, _, rest = text.partition("\n")
    shown = Text(f"▸ {first}", style="dim italic")
    if rest.strip():
        shown.append(" …", style="dim")
    return shown


def _render_command(
    phase: codex.ItemPhase, item: codex.CommandExecution, ctx: _Ctx
) -> list[RenderableType]:
    palette = ctx.palette
    running = phase != "completed" and item.running
    badge = command_badge(item, running=running)
    # The badge comes first so that a long command, cut at the view's edge, never hides it.
    head = Text(no_wrap=True, overflow="ellipsis")
    style = palette.for_tone(badge.tone)
    if running:
        head.append(f" {badge.label} ", style=f"bold {style}")
    else:
        head.append(f" {badge.label} ", style=f"bold reverse {style}")
    if ctx.note.duration_s is not None:
        head.append(f" {format_duration(ctx.note.duration_s)}", style=palette.muted)
    head.append(" $ ", style=f"bold {palette.accent}")
    command = truncate(item.command, MAX_LINE_CHARS).replace("\n", " ⏎ ")
    head.append(one_line(command), style="bold")
    if running:
        return [head]
    limit = MAX_EXPANDED_LINES if ctx.expanded else ctx.max_output_lines
    lines, more = head_lines(item.output, limit)
    parts: list[RenderableType] = [head]
    parts.extend(_output_line(f"│ {line}", palette.muted) for line in lines)
    if more:
        noun = "line" if more == 1 else "lines"
        hint = "" if ctx.expanded else " (enter shows them)"
        parts.append(Text(f"│ … {more} more {noun}{hint}", style=f"italic {palette.muted}"))
    return [Group(*parts)]


def _render_todo(item: codex.TodoList, palette: Palette) -> RenderableType:
    todos = item.items
    done = sum(1 for entry in todos if entry.completed)
    parts: list[RenderableType] = [
        Text(f"todo {done}/{len(todos)}", style=f"bold {palette.primary}")
    ]
    for entry in todos[:100]:
        mark = "[x]" if entry.completed else "[ ]"
        style = palette.muted if entry.completed else ""
        parts.append(_line(f"  {mark} {entry.text}", style))
    if len(todos) > 100:
        parts.append(Text(f"  … {len(todos) - 100} more", style=palette.muted))
    return Group(*parts)


class PathLine:
    """One line ``prefix`` + ``path`` that keeps the path's start and, in two thirds of the
    room, its end when the width is short: the middle gives way to ``…`` (a file's name says
    more than the folders above it, and codex names files by absolute path, often deep in a
    workspace)."""

    def __init__(self, prefix: str, prefix_style: str, path: str) -> None:
        self.prefix = prefix
        self.prefix_style = prefix_style
        self.path = path

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The line, its path cut in the middle to ``options.max_width`` cells."""
        room = options.max_width - cell_len(self.prefix)
        path = self.path
        if room >= 8 and cell_len(path) > room:
            head_room = room // 3
            head = path
            while head and cell_len(head) > head_room:
                head = head[:-1]
            tail = path
            while tail and cell_len(tail) > room - cell_len(head) - 1:
                tail = tail[1:]
            path = head + "…" + tail
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(self.prefix, style=self.prefix_style)
        line.append(path)
        yield line


def _render_file_change(item: codex.FileChange, palette: Palette) -> RenderableType:
    title = Text("files changed", style=f"bold {palette.primary}")
    status = item.status
    if status and status != "completed":
        title.append(
            f" ({shown_line(status)})", style=palette.error if status == "failed" else palette.muted
        )
    parts: list[RenderableType] = [title]
    kind_styles = {"A": palette.success, "D": palette.error, "M": palette.warning}
    for change in item.changes[:200]:
        letter = _FILE_KINDS.get(change.kind, "?")
        parts.append(
            PathLine(f"  {letter} ", f"bold {kind_styles.get(letter, '')}", shown_line(change.path))
        )
    if len(item.changes) > 200:
        parts.append(Text(f"  … {len(item.changes) - 200} more", style=palette.muted))
    return Group(*parts)


def _render_tool_call(item: codex.McpToolCall, palette: Palette) -> RenderableType:
    status = item.status or "?"
    style = palette.error if status == "failed" else palette.accent
    line = _line(f"tool {tool_name(item)} · {status}", style)
    if item.error:
        return Group(line, _line(f"  {item.error}", palette.error))
    return line


def render_raw(event: Event, palette: Palette) -> list[RenderableType]:
    """The event's envelope as indented JSON (the view's raw toggle), cut to
    :data:`~codex_tui.events.view.MAX_TEXT_CHARS`; control characters stay escaped."""
    envelope = event.model_dump(mode="json")
    try:
        text = json.dumps(envelope, indent=2, ensure_ascii=False, default=str)
    except (ValueError, RecursionError):
        text = event.model_dump_json()
    head = Text(f"raw · seq {event.seq} · {event.kind.value}", style=f"bold {palette.muted}")
    return [head, Text(shown_text(text), style=palette.muted)]


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
        elif isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(str(value))
            size += 8
    return "\n".join(parts)[:limit].lower()
