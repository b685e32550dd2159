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
from typing import TYPE_CHECKING, Any, Literal

from server_client import codex
from server_client.enums import EventKind, TaskStatus
from server_client.text import one_line, truncate, visible

if TYPE_CHECKING:
    from server_client.models import Event

__all__ = [
    "MAX_EXPANDED_LINES",
    "MAX_JSON_CHARS",
    "MAX_LINE_CHARS",
    "MAX_OPEN_ITEMS",
    "MAX_STDERR_RUN",
    "MAX_TEXT_CHARS",
    "CONVERSATION_KEYS",
    "DECISION_WORDS",
    "MAX_LIVE_ITEMS",
    "Annotation",
    "Badge",
    "Live",
    "LiveApproval",
    "LiveItem",
    "StreamState",
    "Tone",
    "annotate",
    "annotate_read",
    "approval_of",
    "approval_outcome",
    "approval_summary",
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
    "start_stderr_run",
    "status_details",
    "status_icon",
    "status_note",
    "stream_line",
    "usage_counts",
    "usage_summary",
]

#: Longest message, reasoning or prompt text shown, in characters.
MAX_TEXT_CHARS = 20_000
#: Longest single line (command, output line, stderr line) shown, in characters.
MAX_LINE_CHARS = 400
#: Longest compact JSON shown for an unknown event, in characters.
MAX_JSON_CHARS = 600
#: Most lines of one command's output shown when it is expanded.
MAX_EXPANDED_LINES = 2000
#: Most consecutive stderr lines one folded entry gathers; the next line starts another.
MAX_STDERR_RUN = 20
#: Most open items whose start time is remembered (older ones lose their duration).
MAX_OPEN_ITEMS = 1000
#: Most live items (built by deltas) and approval cards a stream remembers; the oldest go
#: first (their entries then stop changing).
MAX_LIVE_ITEMS = 200

#: The semantic colour of a badge or line; each output maps it to its own style.
Tone = Literal["muted", "success", "error", "warning", "accent"]

_STATUS_ICONS: dict[TaskStatus, str] = {
    TaskStatus.QUEUED: "○",
    TaskStatus.RUNNING: "●",
    TaskStatus.WAITING: "!",
    TaskStatus.IDLE: "◇",
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

#: What a live item builds: an agent message's text, a reasoning summary, or a command's output.
LiveKind = Literal["agent_message", "reasoning", "command", "stderr"]

_DELTA_KINDS: dict[str, LiveKind] = {
    "agent_message": "agent_message",
    "reasoning": "reasoning",
    "command_output": "command",
}


@dataclass(eq=False)
class LiveItem:
    """An item shown while it runs, built from its ``item.started`` (a command) and its
    ``item.delta`` events, until its ``item.completed`` replaces it (:attr:`final`).

    One entry shows it (the entry of the event that created it, :attr:`seq`); the events
    that change it afterwards show nothing of their own. The text is bounded: a message or
    a reasoning summary keeps its first :data:`MAX_TEXT_CHARS` characters, a command's
    output its last ones (what a watcher wants to see grow).

    Attributes:
        item_id: Codex's item id.
        kind: What it builds.
        seq: The seq of the event whose entry shows it.
        started: When it started (the creating event's timestamp), for a command's timer.
        command: The command line (a command whose ``item.started`` was seen).
        text: The text built so far (bounded).
        dropped: Characters left out of :attr:`text` (at its end for a message, at its start
            for a command's output).
        final: The ``item.completed`` event and its annotation, once it came: the entry then
            shows that instead.
        ended: Why a command ended without its ``item.completed`` (``interrupted``,
            ``canceled``): its turn or its task ended first (None: it did not).
        ended_at: When that was (the timestamp of the event that ended it).
        version: Counts the changes (a renderer's cache key).
    """

    item_id: str
    kind: LiveKind
    seq: int
    started: datetime
    command: str = ""
    text: str = ""
    dropped: int = 0
    final: tuple[Event, Annotation] | None = None
    ended: str | None = None
    ended_at: datetime | None = None
    version: int = 0

    @property
    def is_running(self) -> bool:
        """True until it completed or its turn or task ended without it."""
        return self.final is None and self.ended is None

    def end(self, reason: str, at: datetime) -> None:
        """Its turn or task ended before its ``item.completed``: it shows as ``reason``."""
        self.ended = reason
        self.ended_at = at
        self.version += 1

    def add(self, delta: str) -> None:
        """Add a delta's text, keeping the text within :data:`MAX_TEXT_CHARS`."""
        if not delta:
            return
        self.version += 1
        if self.kind == "command":
            text = self.text + delta
            if len(text) > MAX_TEXT_CHARS:
                cut = len(text) - MAX_TEXT_CHARS
                # Cut at a line break when one is near, so the first line shown is whole.
                newline = text.find("\n", cut, cut + MAX_LINE_CHARS)
                if newline != -1:
                    cut = newline + 1
                self.dropped += cut
                text = text[cut:]
            self.text = text
            return
        room = MAX_TEXT_CHARS - len(self.text)
        if room > 0:
            self.text += delta[:room]
        self.dropped += max(len(delta) - max(room, 0), 0)

    def finish(self, event: Event, note: Annotation) -> None:
        """The item completed: ``event`` replaces what was built (its text is let go)."""
        self.final = (event, note)
        self.text = ""
        self.version += 1


@dataclass(eq=False)
class LiveApproval:
    """An approval card: the approval codex asked for (as the status event carried it) and,
    once answered or withdrawn, what became of it (:attr:`outcome`); the card's entry shows
    the answer keys only while it is pending.

    Attributes:
        approval: The approval as JSON (the fields of :class:`~server_client.models.Approval`).
        seq: The seq of the status event that asked.
        outcome: ``accept by alice``, ``withdrawn: turn interrupted`` … (None: pending).
        version: Counts the changes (a renderer's cache key).
    """

    approval: Mapping[str, Any]
    seq: int
    outcome: str | None = None
    version: int = 0

    @property
    def id(self) -> str:
        """The approval's id."""
        value = self.approval.get("id")
        return value if isinstance(value, str) else ""

    @property
    def pending(self) -> bool:
        """True until answered or withdrawn."""
        return self.outcome is None

    def settle(self, outcome: str) -> None:
        """Answered or withdrawn: ``outcome`` says how."""
        self.outcome = outcome
        self.version += 1


#: What an entry shows while it may still change.
Live = LiveItem | LiveApproval


@dataclass
class StreamState:
    """What one event stream has shown so far; :func:`annotate` updates it.

    Attributes:
        last_usage: The usage of the previous ``turn.completed`` in this stream.
        turns: How many ``turn.started`` events the stream has shown.
        last_status: The newest task status seen in the stream.
        started: When each open item (by codex item id) started, for command durations;
            bounded by :data:`MAX_OPEN_ITEMS`.
        live: The live items by codex item id (:class:`LiveItem`), and the approval cards
            by approval id (:class:`LiveApproval`); bounded by :data:`MAX_LIVE_ITEMS` each.
        token_usage: The newest ``usage.updated`` (None: none yet).
        just_ended: The live commands the last annotated event ended without their
            completion (its turn or its task ended); their entries show that.
        run_started: When the task first ran (its first ``running`` status event).
        run_ended: When it last stopped running (a status that ends it or its turn; None
            while it runs).
        fold_stderr: Gather each run of consecutive ``stderr`` lines (up to
            :data:`MAX_STDERR_RUN`) into one live item of kind ``stderr`` (a pane's view; a
            printer shows each line).
        stderr_run: The run the next ``stderr`` line joins (None: the last event was not
            one).
    """

    last_usage: codex.Usage | None = None
    turns: int = 0
    last_status: TaskStatus | None = None
    started: dict[str, datetime] = field(default_factory=dict)
    live: dict[str, LiveItem] = field(default_factory=dict)
    approvals: dict[str, LiveApproval] = field(default_factory=dict)
    token_usage: codex.TokenUsage | None = None
    just_ended: list[LiveItem] = field(default_factory=list)
    run_started: datetime | None = None
    run_ended: datetime | None = None
    fold_stderr: bool = False
    stderr_run: LiveItem | None = None

    def end_running(self, reason: str, at: datetime) -> None:
        """Every command still running ends as ``reason`` (:attr:`just_ended` lists them)."""
        ended = [live for live in self.live.values() if live.kind == "command" and live.is_running]
        for live in ended:
            live.end(reason, at)
        self.just_ended = ended

    @property
    def pending_approvals(self) -> list[LiveApproval]:
        """The approvals still pending, oldest first."""
        return [card for card in self.approvals.values() if card.pending]


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
        live: What this event's entry shows while it changes: the live item it started, or
            the approval card it asked for.
        touched: The live item or card this event changed (a delta, an ``item.completed``
            that replaces what deltas built, an answer): its entry shows the change, and
            this event shows nothing of its own while that entry is there.
    """

    turn: int | None = None
    previous_usage: codex.Usage | None = None
    duration_s: float | None = None
    live: Live | None = None
    touched: Live | None = None


#: The annotation of most events (nothing to add); shared, as annotations never change.
NO_NOTE = Annotation()


def _remember(table: dict[str, Any], key: str, value: object) -> None:
    """``table[key] = value``, dropping the oldest entry beyond :data:`MAX_LIVE_ITEMS`."""
    table.pop(key, None)
    if len(table) >= MAX_LIVE_ITEMS:
        table.pop(next(iter(table)))
    table[key] = value


def annotate(event: Event, state: StreamState) -> Annotation:
    """Record ``event`` in ``state`` and return what it means in the stream so far."""
    return annotate_read(event, event.codex, state)


def approval_of(data: object) -> Mapping[str, Any] | None:
    """The ``approval`` object of a status event's data (None: it has none)."""
    if isinstance(data, Mapping):
        approval = data.get("approval")
        if isinstance(approval, Mapping) and isinstance(approval.get("id"), str):
            return approval
    return None


def _annotate_status(event: Event, state: StreamState) -> Annotation:
    status = event.status
    if status is not None:
        state.last_status = status
        if status is TaskStatus.RUNNING:
            state.run_ended = None
            if state.run_started is None:
                state.run_started = event.ts
        if status.is_terminal or status is TaskStatus.IDLE:
            state.run_ended = event.ts
            reason = "canceled" if status is TaskStatus.CANCELED else "interrupted"
            state.end_running(reason, event.ts)
    approval = approval_of(event.data)
    if approval is None:
        return NO_NOTE
    approval_id: str = approval["id"]
    card = state.approvals.get(approval_id)
    if "kind" in approval and card is None:  # asked
        asked = LiveApproval(approval, event.seq)
        _remember(state.approvals, approval_id, asked)
        return Annotation(live=asked)
    if card is None or not card.pending:
        return NO_NOTE
    card.settle(approval_outcome(approval))
    return Annotation(touched=card)


def approval_outcome(approval: Mapping[str, Any]) -> str:
    """What became of an approval, from an answered or withdrawn status event's
    ``approval`` (``accept by alice``, ``withdrawn: the turn ended``), made safe to show."""
    if approval.get("state") == "withdrawn":
        reason = approval.get("reason") or approval.get("withdrawn_reason")
        return shown_line(f"withdrawn: {reason}" if isinstance(reason, str) else "withdrawn")
    decision = approval.get("decision")
    who = approval.get("answered_by")
    words = DECISION_WORDS.get(decision, str(decision)) if isinstance(decision, str) else "?"
    return shown_line(f"{words} by {who}" if isinstance(who, str) and who else words)


#: Each approval decision in words.
DECISION_WORDS: dict[str, str] = {
    "accept": "accepted",
    "acceptForSession": "accepted for the session",
    "decline": "declined",
    "cancel": "declined, turn canceled",
}


def annotate_read(event: Event, typed: codex.CodexEvent | None, state: StreamState) -> Annotation:
    """:func:`annotate` of an event already read (``typed`` is its ``Event.codex``), so that
    a caller that needs the typed event for more reads it once.

    A live command whose turn or task ends first (``turn.completed``, ``turn.failed``,
    ``turn.interrupted``, or a status that ends the turn) ends without its completion
    (:meth:`LiveItem.end`); :attr:`StreamState.just_ended` lists those the event ended."""
    if state.just_ended:
        state.just_ended = []
    if state.fold_stderr:
        if event.kind is EventKind.STDERR:
            run = state.stderr_run
            if run is not None and run.version < MAX_STDERR_RUN:
                run.add(stream_line(event.data) + "\n")
                return Annotation(touched=run)
            return start_stderr_run(event, state)
        state.stderr_run = None
    if event.kind is EventKind.STATUS:
        return _annotate_status(event, state)
    match typed:
        case codex.TurnStarted():
            state.turns += 1
            return Annotation(turn=state.turns)
        case codex.TurnCompleted(usage=usage):
            state.end_running("interrupted", event.ts)
            previous = state.last_usage
            state.last_usage = usage
            return Annotation(previous_usage=previous)
        case codex.TurnFailed() | codex.TurnInterrupted():
            state.end_running("interrupted", event.ts)
        case codex.UsageUpdated(token_usage=usage):
            state.token_usage = usage
        case codex.ItemDelta(item_id=item_id, stream=stream, delta=delta) if item_id:
            live = state.live.get(item_id)
            if live is not None and live.final is not None:
                return NO_NOTE  # a late delta of a completed item: the item says it all
            if live is None:
                live = LiveItem(item_id, _DELTA_KINDS[stream], event.seq, event.ts)
                live.add(delta)
                _remember(state.live, item_id, live)
                return Annotation(live=live)
            live.add(delta)
            return Annotation(touched=live)
        case codex.ItemEvent(item=item) as item_event if item.id:
            if item_event.phase == "started":
                if len(state.started) >= MAX_OPEN_ITEMS:
                    state.started.pop(next(iter(state.started)))
                state.started[item.id] = event.ts
                if isinstance(item, codex.CommandExecution) and item.id not in state.live:
                    live = LiveItem(item.id, "command", event.seq, event.ts, command=item.command)
                    _remember(state.live, item.id, live)
                    return Annotation(live=live)
            elif item_event.phase == "completed":
                began = state.started.pop(item.id, None)
                duration = None if began is None else max((event.ts - began).total_seconds(), 0.0)
                live = state.live.get(item.id)
                if live is not None and live.final is None:
                    note = Annotation(duration_s=duration, touched=live)
                    live.finish(event, Annotation(duration_s=duration))
                    return note
                if duration is not None:
                    return Annotation(duration_s=duration)
    return NO_NOTE


def start_stderr_run(event: Event, state: StreamState) -> Annotation:
    """Start a run of ``stderr`` lines with ``event`` (see :attr:`StreamState.fold_stderr`):
    its entry shows the run, and the lines right after it join it."""
    run = LiveItem(f"stderr:{event.seq}", "stderr", event.seq, event.ts)
    run.add(stream_line(event.data) + "\n")
    state.stderr_run = run
    return Annotation(live=run)


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
        case (
            codex.AgentMessage()
            | codex.UserMessage()
            | codex.Reasoning()
            | codex.FileChange()
            | codex.ErrorItem()
        ):
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
    are not codex's, which always show).

    Deltas and token usage updates show nothing by themselves: a live view shows deltas
    through the item they build (:class:`LiveItem`, see :attr:`Annotation.live`) and the
    usage in its header (:func:`usage_summary`)."""
    if isinstance(typed, codex.ItemEvent):
        return item_shows(typed.phase, typed.item, live=live)
    return not isinstance(typed, codex.ItemDelta | codex.UsageUpdated)


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


# -- conversations ----------------------------------------------------------------------------

#: The keys the pane's conversation controls are on by default, by binding id; a view names
#: the keys in effect (after the keymap) where it can, else these.
CONVERSATION_KEYS: dict[str, str] = {
    "reply": "i",
    "approve": "y",
    "approve-session": "a",
    "decline": "d",
    "cancel-turn": "D",
    "interrupt-turn": "s",
}

#: What each approval kind asks, in words.
_KIND_WORDS: dict[str, str] = {
    "command": "run a command",
    "file_change": "change files",
    "user_input": "answer questions",
}


def approval_summary(approval: Mapping[str, Any]) -> str:
    """What an approval asks, on one line: ``run a command: $ rm -rf build``, ``change
    files``, ``answer questions (2)``; safe to show."""
    kind = approval.get("kind")
    words = _KIND_WORDS.get(kind, str(kind)) if isinstance(kind, str) else "?"
    command = approval.get("command")
    if kind == "command" and isinstance(command, str):
        return shown_line(f"{words}: $ {command}")
    questions = approval.get("questions")
    if kind == "user_input" and isinstance(questions, list):
        return shown_line(f"{words} ({len(questions)})")
    return shown_line(words)


def status_note(data: Mapping[str, Any]) -> str | None:
    """The conversation phrase a status event carries, made safe to show (None: none):
    ``interrupt requested``, ``waiting for worker NAME``, ``turn N done``."""
    if data.get("interrupt") == "requested":
        return "interrupt requested"
    holder = data.get("waiting_for_worker")
    if isinstance(holder, str):
        return shown_line(f"waiting for worker {holder} (it holds the conversation)")
    if data.get("status") == TaskStatus.IDLE.value:
        turns = data.get("turns")
        if isinstance(turns, int) and not isinstance(turns, bool):
            return f"turn {turns} done"
        return "turn done"
    return None


def usage_summary(usage: codex.TokenUsage) -> str:
    """The thread's token total and the share of the context window the latest request
    filled, for a header: ``42.1k tokens · 31% context`` (the share only when codex named
    the window)."""
    total = usage.total
    count = total.input_tokens + total.output_tokens
    text = f"{_compact(count)} tokens"
    used = usage.context_used
    if used is not None:
        text += f" · {round(used * 100)}% context"
    return text


def _compact(number: int) -> str:
    """``950``, ``12.3k``, ``1.2M``."""
    if number < 1000:
        return str(number)
    if number < 1_000_000:
        return f"{number / 1000:.1f}k"
    return f"{number / 1_000_000:.1f}M"
