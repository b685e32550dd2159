"""Provides EventView: one pane following one task's events, with paging, search and export."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, ClassVar, Self

from rich.console import Console
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.geometry import Region
from textual.message import Message
from textual.reactive import var
from textual.widget import Widget
from textual.widgets import Input, Static
from textual.worker import Worker

from codex_tui import failures
from codex_tui.events.markdown import warm_up
from codex_tui.events.palette import Palette
from codex_tui.events.view import (
    CONVERSATION_KEYS,
    LiveApproval,
    approval_summary,
    status_icon,
    usage_summary,
)
from codex_tui.failures import describe_action_failure
from codex_tui.keys import NEW_TASK_ID, NEW_TASK_KEYS, key_hint
from codex_tui.textual_internals import keymap
from codex_tui.widgets.event_feed import PAGE_EVENTS, EventFeed
from codex_tui.widgets.task_list import format_age, short_prompt
from codex_tui.widgets.transcript import Transcript
from server_client.enums import ApprovalDecision, TaskStatus

if TYPE_CHECKING:
    from server_client.client import CodexTuiClient
    from server_client.models import Event, Task

__all__ = ["PAGE_EVENTS", "EventView"]

#: Longest stretch, in seconds, the stream worker handles events that are already buffered
#: before it lets the rest of the app run (a burst arrives many events per network read); as
#: short as the SDK's own slice (``server_client.streams.SLICE_S``, where the measurement is).
STREAM_SLICE_S = 0.0005

#: What a pane that follows no task says; ``{key}`` is the key that starts a task now.
_NO_TASK = "No task selected. Press {key} to start one."


@dataclass
class _Form:
    """The answers to codex's questions, asked one at a time in the reply box."""

    approval_id: str
    questions: list[tuple[str, str, list[str]]]
    """Each question's id, text and option labels."""
    answers: dict[str, list[str]]
    index: int = 0

    @classmethod
    def of(cls, card: LiveApproval) -> _Form | None:
        """The form for a ``user_input`` approval (None: it asks nothing)."""
        questions = []
        for question in card.approval.get("questions") or []:
            if not isinstance(question, dict) or not isinstance(question.get("id"), str):
                continue
            text = " ".join(str(question.get(key) or "") for key in ("header", "question")).strip()
            options = question.get("options") or []
            labels = [str(o.get("label", "")) for o in options if isinstance(o, dict)]
            questions.append((question["id"], text, labels))
        return cls(card.id, questions, {}) if questions else None

    def placeholder(self) -> str:
        """The current question, its choices (by number) and progress."""
        qid, text, labels = self.questions[self.index]
        choices = " ".join(f"{n}={label}" for n, label in enumerate(labels, 1))
        count = f"{self.index + 1}/{len(self.questions)}"
        return short_prompt(f"{count} {text or qid} {choices}".strip(), 300)

    def take(self, value: str) -> bool:
        """Record the answer to the current question (a number picks that choice); True
        when another question follows."""
        qid, _text, labels = self.questions[self.index]
        value = value.strip()
        if value.isdigit() and 1 <= int(value) <= len(labels):
            value = labels[int(value) - 1]
        self.answers[qid] = [value] if value else []
        self.index += 1
        return self.index < len(self.questions)


def _exact(seconds: int) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass(frozen=True)
class _Subtitle:
    """What the pane's border subtitle shows: Content markup and its variables."""

    markup: str
    variables: tuple[tuple[str, str], ...] = ()

    def content(self) -> Content:
        return Content.from_markup(self.markup, **dict(self.variables))


class EventView(Widget):
    """A pane that follows one task: replays its stored events, then shows new ones live.

    The view state is reactive: :attr:`followed_task` (set by :meth:`follow`), the task's
    :attr:`status`, a :attr:`stream_error`, the search (:attr:`search_query`,
    :attr:`search_note`, :attr:`searching`), the count of events below the view
    (:attr:`new_below`) and the :attr:`palette`. The border's title and subtitle are computed
    from them, and the transcript mirrors the query and the palette (``data_bind``).

    Following a task starts a worker named ``stream:<task id>`` (group ``stream``,
    ``exclusive=True``) that iterates the task's events from the client's one shared stream
    (:meth:`server_client.streams.TaskStreams.shared`: every pane's task over one SSE
    connection), yielding to the app at
    least every :data:`STREAM_SLICE_S` while a burst is buffered; following another task
    cancels it. Each event goes to the pane's :class:`~codex_tui.widgets.event_feed.EventFeed`
    (annotated in stream order, buffered without being rendered), which hands them to the
    :class:`~codex_tui.widgets.transcript.Transcript` in one batch on a ``flush_interval_s``
    timer, at most once per ``redraw_interval_s`` (``unfocused_redraw_s`` while the pane has
    not the keyboard focus): a hand-over that scrolls a following pane redraws all of it, so
    a slow, steady stream costs at most one redraw per interval instead of one per event
    (what an SSH link carries), while an event after a quiet spell still shows at the next
    tick. Deltas that grow a live item in place repaint only the lines that changed, and the
    token usage in the border changes at most once per hand-over. The transcript holds at
    most ``max_entries`` events and renders only what is in view.

    The tail is sticky: new events scroll the view only while the user is at the bottom;
    otherwise the border counts them and ``end`` jumps back. When the user reads far back, the
    window pages older events from the server by seq and lets go of the newest; live events
    then only count until ``end`` loads the tail again.

    Keys (besides the transcript's): ``/`` searches the task's events (this window first,
    then older pages on the server), ``n`` goes to the next older match, ``N`` to the next
    newer one, ``escape`` clears the search, ``e`` asks to export the whole transcript.

    Conversation keys (app-server tasks): ``i`` opens the reply box under the transcript
    (Enter sends ``client.reply``, Escape closes it); the oldest pending approval of the task
    is answered with ``y`` (accept), ``a`` (accept for the session: until the turn ends),
    ``d`` (decline) or ``D`` (decline and cancel the turn), through
    ``client.answer_approval``; codex's questions (``user_input``) are answered one by one in
    the reply box after ``y``. ``s`` interrupts the running turn (``client.interrupt``). A bar
    under the transcript shows the pending approval with its keys, or that the turn is done.
    The border subtitle shows the thread's token usage and share of the context window.

    Messages: :class:`StatusChanged` when the stream reports a new status,
    :class:`ExportRequested` on ``e`` (the screen that owns the pane asks where and writes).

    Args:
        client: The SDK client.
        max_entries: The most events held in the window.
        flush_interval_s: Seconds between checks for buffered events.
        redraw_interval_s: Least seconds between two hand-overs to the transcript while
            the pane has the keyboard focus.
        unfocused_redraw_s: Least seconds between two hand-overs while it has not (a pane
            the user only glances at scrolls a few times a second; the last batch still
            follows within this time, so what it shows ends exact).
        clock: Monotonic seconds (injectable, so tests drive time themselves).
    """

    ALLOW_MAXIMIZE = True

    _border_rows: tuple[Region, ...] = ()
    """While a border title or subtitle is being set: the rows :meth:`refresh` redraws."""

    _warming: ClassVar[bool] = False
    """True once some view started warming up the Markdown renderer (once per process)."""

    DEFAULT_CSS = """
    EventView {
        height: 1fr;
        layout: vertical;
    }
    EventView > Transcript {
        height: 1fr;
        padding: 0;
    }
    EventView > #search-input {
        display: none;
        height: 3;
        border: tall $border-blurred;
    }
    EventView.-searching > #search-input {
        display: block;
    }
    EventView > #reply-input {
        display: none;
        height: 3;
        border: tall $accent;
    }
    EventView.-replying > #reply-input {
        display: block;
    }
    EventView > #conversation-bar {
        display: none;
        height: 1;
        padding: 0 1;
        background: $boost;
        color: $foreground-muted;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    EventView.-bar > #conversation-bar {
        display: block;
    }
    EventView.-approval > #conversation-bar {
        color: $text-warning;
        background: $warning-muted;
        text-style: bold;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search", id="search"),
        Binding("n", "search_next", "Next match", show=False, id="search-next"),
        Binding("N", "search_previous", "Previous match", show=False, id="search-previous"),
        Binding("escape", "clear_search", "Clear search", show=False, id="clear-search"),
        Binding("e", "export", "Export", id="export-transcript"),
        Binding("i", "reply", "Reply to codex", show=False, id="reply"),
        Binding("y", "approve", "Accept the approval", show=False, id="approve"),
        Binding("a", "approve_session", "Accept for the session", show=False, id="approve-session"),
        Binding("d", "decline", "Decline the approval", show=False, id="decline"),
        Binding("D", "cancel_turn", "Decline and cancel the turn", show=False, id="cancel-turn"),
        Binding("s", "interrupt", "Interrupt the turn", show=False, id="interrupt-turn"),
    ]

    # The view state. No watcher runs for the defaults (init=False: on_mount draws the first
    # border); none repaints the pane (var): the title watchers redraw only the border rows.
    followed_task: var[Task | None] = var(None, init=False, always_update=True)
    """The task being followed (None: none). Setting it follows the task (:meth:`follow`)."""
    status: var[TaskStatus | None] = var(None, init=False)
    """The followed task's newest status (from its stream, else from the task)."""
    stream_error: var[str | None] = var(None, init=False, toggle_class="-stream-error")
    """Why the stream stopped, or None while it runs."""
    search_query: var[str] = var("", init=False)
    """The active search ('' when none); the transcript highlights it."""
    search_note: var[str | None] = var(None, init=False)
    """How the search goes ("searching the server…", "no older match"), or None."""
    searching: var[bool] = var(False, init=False, toggle_class="-searching")
    """True while the search field is open (it has the keyboard focus)."""
    new_below: var[int] = var(0, init=False)
    """Events below the view the border counts (0 while following); mirrors the transcript."""
    palette: var[Palette] = var(Palette, init=False)
    """Styles from the app's theme; the stream's annotations and the transcript use them."""
    pane_title: var[str] = var("Events", init=False)
    """The border title: the followed task's prompt (computed)."""
    pane_subtitle: var[_Subtitle | None] = var(None, init=False)
    """The border subtitle: status, token usage, stream error, search, new events
    (computed)."""
    usage_text: var[str] = var("", init=False)
    """The thread's token usage and share of the context window ('' until reported)."""
    run_time: var[str] = var("", init=False)
    """How long the task ran (``ran 3m05s``) or has run so far (``5m so far``); ''
    before it started."""
    replying: var[bool] = var(False, init=False, toggle_class="-replying")
    """True while the reply box is open (it has the keyboard focus)."""
    waiting_for: var[str | None] = var(None, init=False)
    """What the queued task waits for when no online worker can take it (``waiting for a
    worker with label gpu``; set by the dashboard from its task list), shown in the bar
    under the transcript while the task is queued."""

    @dataclass
    class StatusChanged(Message):
        """The followed task's stream reported a new status."""

        event_view: EventView
        task_id: str
        status: TaskStatus

        @property
        def control(self) -> EventView:
            """The event view that posted the message."""
            return self.event_view

        def can_replace(self, message: Message) -> bool:
            """A newer status of the same task makes a queued older one moot."""
            return (
                isinstance(message, EventView.StatusChanged)
                and message.event_view is self.event_view
                and message.task_id == self.task_id
            )

    @dataclass
    class ExportRequested(Message):
        """The user asked to export the followed task's whole transcript (``e``)."""

        event_view: EventView
        task: Task

        @property
        def control(self) -> EventView:
            """The event view that posted the message."""
            return self.event_view

    def __init__(
        self,
        client: CodexTuiClient,
        *,
        max_entries: int = 2000,
        flush_interval_s: float = 0.05,
        redraw_interval_s: float = 0.1,
        unfocused_redraw_s: float = 1 / 3,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] | None = None,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's naming
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.client = client
        self.max_entries = max_entries
        self.flush_interval_s = flush_interval_s
        self.redraw_interval_s = redraw_interval_s
        self.unfocused_redraw_s = unfocused_redraw_s
        self.clock = clock
        self._transcript = Transcript(max_entries=max_entries, clock=now, id="transcript")
        self.feed = EventFeed(client, self._transcript, max_entries)
        """The stream and paging side: what the transcript holds of the task's events."""
        self._next_handover = float("-inf")
        self._stream_worker: Worker[None] | None = None
        self._usage: object = None
        self._bar = ""
        self._answered: set[str] = set()
        """Approvals answered from this pane (until the stream says so)."""
        self._form: _Form | None = None
        self._draft = ""

    def compose(self) -> ComposeResult:
        yield self._transcript.data_bind(EventView.palette, EventView.search_query)
        yield Static(id="conversation-bar", markup=False)
        yield Input(placeholder="search this task's events", id="search-input")
        yield Input(id="reply-input")

    def on_mount(self) -> None:
        """Start the flush timer (paused until something is buffered), take the theme's
        palette and draw the border."""
        self._flush_timer = self.set_interval(
            self.flush_interval_s, self._flush, name="event-view-flush", pause=True
        )
        self.palette = self._palette()
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)
        self.transcript.keys = self.conversation_keys()
        self.set_interval(1.0, self._tick_live, name="event-view-timers")
        self._no_task = self._no_task_text()
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        if self.followed_task is None:
            self.transcript.reset(self._no_task)
        self._show_title(self.pane_title)
        self._show_subtitle(self.pane_subtitle)

    def _no_task_text(self) -> str:
        return _NO_TASK.format(key=key_hint(self.app, NEW_TASK_ID, NEW_TASK_KEYS))

    def _bindings_changed(self, _screen: object) -> None:
        """The keymap may have changed (codex-tui applies config.toml's after the first
        frame): a pane that follows no task names the key that starts one now."""
        text = self._no_task_text()
        if text != self._no_task:
            self._no_task = text
            if self.followed_task is None:
                self.transcript.reset(text)

    def _theme_changed(self, _theme: object) -> None:
        self.palette = self._palette()

    def _palette(self) -> Palette:
        return Palette.from_theme_variables(self.app.theme_variables)

    # -- public API -------------------------------------------------------------------------

    @property
    def transcript(self) -> Transcript:
        """The transcript the events are shown in (it holds the keyboard focus)."""
        return self._transcript

    @property
    def task_id(self) -> str | None:
        """The id of the task being followed."""
        task = self.followed_task
        return task.id if task else None

    @property
    def events_seen(self) -> int:
        """How many events of the followed task the stream has delivered."""
        return self.feed.events_seen

    @property
    def last_seq(self) -> int:
        """The seq of the newest event delivered."""
        return self.feed.last_seq

    @property
    def following(self) -> bool:
        """True while the view scrolls with new output."""
        return self.transcript.following

    @property
    def unseen(self) -> int:
        """Events that arrived below the visible area since the user scrolled up."""
        return self.transcript.unseen

    @property
    def streaming(self) -> bool:
        """True while the stream worker runs."""
        worker = self._stream_worker
        return worker is not None and worker.is_running

    @property
    def pending(self) -> int:
        """Events buffered for the next flush."""
        return self.feed.pending

    def text(self, width: int = 100) -> str:
        """The plain text of every entry in the window, rendered at ``width`` (for tests and
        copying; what is on screen is a part of it)."""
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, color_system=None, highlight=False)
        transcript = self.transcript
        if not transcript.entries and transcript.placeholder:
            console.print(transcript.placeholder)
        for entry in transcript.entries:
            for renderable in transcript.entry_renderables(entry):
                console.print(renderable)
        return buffer.getvalue()

    def follow(self, task: Task | None) -> None:
        """Show ``task``'s events (replay then live); None clears the view.

        Following the task already shown only takes its newer record (title, and its status
        unless the stream already reported the end).
        """
        self.followed_task = task

    def action_follow_tail(self) -> None:
        """Jump to the newest output and follow it again."""
        self.transcript.action_follow_tail()

    # -- following a task -------------------------------------------------------------------

    def watch_followed_task(self, old: Task | None, task: Task | None) -> None:
        """The same task again: take its record; another task (or none): start over."""
        if task is not None and old is not None and task.id == old.id:
            if self.status is None or not self.status.is_terminal:
                self.status = task.status
            return
        if self._stream_worker is not None:
            self._stream_worker.cancel()
            self._stream_worker = None
        self.workers.cancel_group(self, "pages")
        self.status = task.status if task else None
        self.stream_error = None
        self.search_note = None
        self.palette = self._palette()
        self.feed.reset(task.id if task else None, self.palette)
        self._next_handover = float("-inf")
        self.transcript.reset(None if task else self._no_task_text())
        self.new_below = 0
        self._usage = None
        self.usage_text = ""
        self._answered.clear()
        self._close_reply()
        self._update_bar()
        if task is None:
            return
        if not EventView._warming:
            # The first agent message would import and build the Markdown renderer (tens of
            # ms) on the event loop; do it in a thread while the stream starts.
            EventView._warming = True
            self.run_worker(warm_up, thread=True, group="warm-up", exit_on_error=False)
        self._stream_worker = self.run_worker(
            self._stream(task.id),
            name=f"stream:{task.id}",
            group="stream",
            exclusive=True,
            exit_on_error=False,
        )

    def watch_palette(self, palette: Palette) -> None:
        """The stream's annotations use the new palette from now on."""
        self.feed.state.palette = palette

    # -- stream -----------------------------------------------------------------------------

    async def _stream(self, task_id: str) -> None:
        import httpx  # with the SDK, after the first frame

        from server_client.client import ApiError
        from server_client.streams import TaskStreams

        clock = time.perf_counter
        try:
            slice_end = clock() + STREAM_SLICE_S
            async for event in TaskStreams.shared(self.client).events(task_id):
                if task_id != self.task_id:
                    return
                self._ingest(task_id, event)
                if clock() >= slice_end:
                    # A burst hands over many events per network read without awaiting
                    # anything: let timers, keys and rendering run between slices.
                    await asyncio.sleep(0)
                    slice_end = clock() + STREAM_SLICE_S
        except ApiError as error:
            self._stream_failed(task_id, f"Cannot stream events: {error}")
        except httpx.HTTPError as error:
            self._stream_failed(task_id, f"Stream lost: {error or type(error).__name__}")
        except ValueError as error:  # a malformed event from the server
            self._stream_failed(task_id, f"Bad event from the server: {error}")

    def _ingest(self, task_id: str, event: Event) -> None:
        """One event from the stream: buffer it, and report a new status."""
        feed = self.feed
        feed.add(event)
        self._flush_timer.resume()
        status = event.status
        if status is not None and status != self.status:
            self.status = status
            self.post_message(self.StatusChanged(self, task_id, status))

    def _stream_failed(self, task_id: str, message: str) -> None:
        if task_id != self.task_id:
            return
        self.stream_error = message
        self.notify(message, title="Event stream", severity="error")

    def _flush(self) -> None:
        """Hand the buffered events to the transcript in one batch (at most once per
        ``redraw_interval_s``)."""
        feed = self.feed
        if not feed.pending:
            self._flush_timer.pause()
            return
        if not self.transcript.size.width:
            return  # not laid out yet; the buffer is bounded, so wait
        now = self.clock()
        if now < self._next_handover:
            return  # the last hand-over redrew the pane a moment ago; keep buffering
        interval = self.redraw_interval_s if self.has_focus_within else self.unfocused_redraw_s
        # Ticks come every flush_interval_s: allow for their jitter, not for a skipped tick.
        self._next_handover = now + interval - self.flush_interval_s / 2
        feed.hand_over()
        usage = feed.state.token_usage
        if usage is not self._usage and usage is not None:
            # Here, not per event: the border's subtitle changes at most once per hand-over.
            self._usage = usage
            self.usage_text = usage_summary(usage)
        self._mirror_transcript()
        self._update_bar()
        self._update_run_time()

    def _tick_live(self) -> None:
        """Once a second: the timers of running commands in view and the task's run time
        move on."""
        running = self.feed.running_entries()
        if running:
            self.transcript.refresh_entries(running)
        self._update_run_time()

    def _update_run_time(self) -> None:
        """The run time: started to finished (from the task's record, else its stream), or
        started to now while it runs; a conversation's stops at the end of its turn."""
        task = self.followed_task
        state = self.feed.state
        started = None if task is None else task.started_at or state.run_started
        if task is None or started is None:
            self.run_time = ""
            return
        status = self.status or task.status
        if status.is_terminal or status is TaskStatus.IDLE:
            ended = state.run_ended or task.finished_at
            if status.is_terminal and task.finished_at is not None:
                ended = task.finished_at
            if ended is None:
                self.run_time = ""
                return
            seconds = max(int((ended - started).total_seconds()), 0)
            self.run_time = f"ran {_exact(seconds)}"
        else:
            # Coarse while it ticks: whole minutes past the first one.
            self.run_time = f"{format_age(started, self.transcript.clock())} so far"

    # -- paging -----------------------------------------------------------------------------

    @on(Transcript.OlderWanted)
    def _older_wanted(self, message: Transcript.OlderWanted) -> None:
        message.stop()
        if self.task_id is not None:
            self._load(partial(self.feed.load_older, self.task_id, message.before), "Older")

    @on(Transcript.NewerWanted)
    def _newer_wanted(self, message: Transcript.NewerWanted) -> None:
        message.stop()
        if self.task_id is not None:
            self._load(partial(self.feed.load_newer, self.task_id, message.after), "Newer")

    @on(Transcript.TailWanted)
    def _tail_wanted(self, message: Transcript.TailWanted) -> None:
        message.stop()
        if self.task_id is not None:
            self._load(partial(self.feed.load_tail, self.task_id), "Newest")

    def _load(self, load: Callable[[], Awaitable[bool]], which: str) -> None:
        """Run one page load in the ``pages`` group (a new one replaces the running one);
        a failure is a toast titled "``which`` events"."""

        async def run() -> None:
            try:
                await load()
            except failures.ACTION_ERRORS as error:
                self.notify(
                    describe_action_failure(error), title=f"{which} events", severity="error"
                )

        self.run_worker(run(), group="pages", exclusive=True, exit_on_error=False)

    @on(Transcript.ViewChanged)
    def _view_changed(self, message: Transcript.ViewChanged) -> None:
        message.stop()
        self._mirror_transcript()

    def _mirror_transcript(self) -> None:
        transcript = self.transcript
        self.new_below = 0 if transcript.following else transcript.unseen

    # -- search -----------------------------------------------------------------------------

    def action_search(self) -> None:
        """Open the search field."""
        if self.followed_task is None:
            return
        self.query_one("#search-input", Input).value = self.search_query
        self.searching = True

    def watch_searching(self, searching: bool) -> None:
        """The open field takes the keyboard; closed, the transcript has it again."""
        if searching:
            self.query_one("#search-input", Input).focus()
        else:
            self.transcript.focus()

    @on(Input.Submitted, "#search-input")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.searching = False
        self.search_query = event.value.strip()
        if self.search_query:
            self._search(backwards=True)
        else:
            self.search_note = None

    def action_clear_search(self) -> None:
        """Close the reply box or the search field, or else remove the search and its
        highlights."""
        if self.replying:
            self._close_reply()
            return
        if self.searching:
            self.searching = False
            return
        self.search_query = ""
        self.search_note = None
        self.workers.cancel_group(self, "search")

    def action_search_next(self) -> None:
        """The next match towards older events."""
        if self.search_query:
            self._search(backwards=True)

    def action_search_previous(self) -> None:
        """The next match towards newer events."""
        if self.search_query:
            self._search(backwards=False)

    def _search(self, *, backwards: bool) -> None:
        """The next match in the window, else on the server (a worker in group ``search``)."""
        transcript = self.transcript
        query = self.search_query
        found = transcript.find(query, backwards=backwards)
        if found is not None:
            transcript.reveal_match(found, query)
            self.search_note = None
            return
        task_id = self.task_id
        edge = transcript.at_start if backwards else transcript.at_end
        if edge or task_id is None:
            direction = "older" if backwards else "newer"
            self.search_note = f"no {direction} match"
            self.notify(f"No {direction} match for {query!r}.", severity="warning")
            return
        self.search_note = "searching the server…"
        self.run_worker(
            self._search_server(task_id, query, backwards),
            group="search",
            exclusive=True,
            exit_on_error=False,
        )

    async def _search_server(self, task_id: str, query: str, backwards: bool) -> None:
        try:
            found = await self.feed.search(
                task_id, query, backwards=backwards, wanted=lambda: query == self.search_query
            )
        except failures.ACTION_ERRORS as error:
            self.notify(describe_action_failure(error), title="Search", severity="error")
            found = True  # said why already
        if not found and task_id == self.task_id:
            direction = "older" if backwards else "newer"
            self.notify(f"No {direction} match for {query!r}.", severity="warning")
        self.search_note = None

    # -- conversation -------------------------------------------------------------------------

    def conversation_keys(self) -> dict[str, str]:
        """The key of each conversation control (binding id → its first key after the
        keymap), as the cards, the bar and the idle lines name them."""
        mapped = keymap(self.app) if self.is_attached else {}
        keys = {}
        for binding_id, default in CONVERSATION_KEYS.items():
            chosen = mapped.get(binding_id, default).split(",")[0].strip() or default
            keys[binding_id] = chosen
        return keys

    @property
    def pending_approval(self) -> LiveApproval | None:
        """The oldest approval of the followed task that waits for an answer from here."""
        for card in self.feed.state.pending_approvals:
            if card.id not in self._answered:
                return card
        return None

    def _update_bar(self) -> None:
        """The line under the transcript: the pending approval and its keys, that the turn
        is done and how to reply, or what a queued task no online worker can take waits
        for; hidden otherwise."""
        keys = self.transcript.keys
        card = self.pending_approval if self.followed_task is not None else None
        text = ""
        if card is not None:
            # The keys first: at 80 columns a pane beside the list has room for little more.
            if card.approval.get("kind") == "user_input":
                answers = f"{keys['approve']} answer  {keys['cancel-turn']} cancel turn"
            else:
                answers = (
                    f"{keys['approve']} accept  {keys['approve-session']} session  "
                    f"{keys['decline']} decline  {keys['cancel-turn']} cancel turn"
                )
            text = f"{answers} · {approval_summary(card.approval)}"
        elif self.status is TaskStatus.IDLE and self.followed_task is not None:
            text = f"◇ turn done — {keys['reply']} reply"
        elif self.status is TaskStatus.QUEUED and self.waiting_for and self.followed_task:
            text = f"○ {self.waiting_for}"
        if text == self._bar:
            return
        self._bar = text
        self.set_class(bool(text), "-bar")
        self.set_class(card is not None, "-approval")
        if self.is_mounted:
            self.query_one("#conversation-bar", Static).update(Content(text))

    def watch_waiting_for(self) -> None:
        """Show or hide what the queued task waits for."""
        self._update_bar()

    def watch_status(self) -> None:
        """A new status may show or hide the bar (turn done) and stops or starts the run
        time."""
        if self.is_mounted:
            self._update_bar()
            self._update_run_time()

    def _open_reply(self, placeholder: str, value: str = "") -> None:
        field = self.query_one("#reply-input", Input)
        field.placeholder = placeholder
        field.value = value
        self.replying = True
        field.focus()

    def _close_reply(self) -> None:
        self._form = None
        if self.replying:
            self.replying = False
            self.transcript.focus()

    def action_reply(self) -> None:
        """Open the reply box (Enter sends the reply, Escape closes it)."""
        task = self.followed_task
        if task is None:
            self.notify("No task to reply to.", severity="warning")
            return
        status = self.status or task.status
        if status.is_terminal:
            self.notify(
                f"The task ended ({status.value}); it takes no replies.", severity="warning"
            )
            return
        if not task.is_conversation:
            self.notify("This task runs codex exec: it takes no replies.", severity="warning")
            return
        self._form = None
        steer = " (steers the running turn)" if status is not TaskStatus.IDLE else ""
        self._open_reply(f"reply to codex{steer} — Enter sends, Escape closes", self._draft)

    @on(Input.Submitted, "#reply-input")
    def _reply_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value
        form = self._form
        if form is not None:
            if form.take(text):
                self._open_reply(form.placeholder())
                return
            self._close_reply()
            self._send_answer(form.approval_id, ApprovalDecision.ACCEPT, form.answers)
            return
        if not text.strip():
            return
        task_id = self.task_id
        self._close_reply()
        if task_id is None:
            return
        self._draft = ""
        self.run_worker(self._reply(task_id, text), group="conversation", exit_on_error=False)

    async def _reply(self, task_id: str, prompt: str) -> None:
        try:
            await self.client.reply(task_id, prompt)
        except failures.ACTION_ERRORS as error:
            self._draft = prompt  # kept for the next reply box
            self.notify(describe_action_failure(error), title="Reply failed", severity="error")
            return
        self.notify("Reply sent.", title="Reply")

    def action_approve(self) -> None:
        """Accept the pending approval (this once); codex's questions open a small form."""
        self._answer(ApprovalDecision.ACCEPT)

    def action_approve_session(self) -> None:
        """Accept the pending approval and the same again until the turn ends."""
        self._answer(ApprovalDecision.ACCEPT_FOR_SESSION)

    def action_decline(self) -> None:
        """Decline the pending approval (codex is told and the turn goes on)."""
        self._answer(ApprovalDecision.DECLINE)

    def action_cancel_turn(self) -> None:
        """Decline the pending approval and interrupt the turn."""
        self._answer(ApprovalDecision.CANCEL)

    def _answer(self, decision: ApprovalDecision) -> None:
        card = self.pending_approval
        if card is None:
            self.notify("No approval is waiting in this pane.", severity="warning")
            return
        if card.approval.get("kind") == "user_input":
            if decision is ApprovalDecision.DECLINE:
                decision = ApprovalDecision.CANCEL  # questions are answered or canceled
            if decision is not ApprovalDecision.CANCEL:
                form = _Form.of(card)
                if form is not None:
                    self._form = form
                    self._open_reply(form.placeholder())
                    return
        self._send_answer(card.id, decision, None)

    def _send_answer(
        self,
        approval_id: str,
        decision: ApprovalDecision,
        answers: dict[str, list[str]] | None,
    ) -> None:
        self._answered.add(approval_id)
        self._update_bar()
        self.run_worker(
            self._answer_approval(approval_id, decision, answers),
            group="conversation",
            exit_on_error=False,
        )

    async def _answer_approval(
        self,
        approval_id: str,
        decision: ApprovalDecision,
        answers: dict[str, list[str]] | None,
    ) -> None:
        from server_client.client import ApiError  # with the SDK, after the first frame

        try:
            await self.client.answer_approval(approval_id, decision, answers=answers)
        except failures.ACTION_ERRORS as error:
            if not (isinstance(error, ApiError) and error.problem.status == 409):
                self._answered.discard(approval_id)  # not answered: ask again
                self._update_bar()
            self.notify(describe_action_failure(error), title="Approval", severity="error")
            return
        self.notify(f"Answered: {decision.value}.", title="Approval")

    def action_interrupt(self) -> None:
        """Interrupt the running turn (the task stays; the next reply starts a new turn)."""
        task = self.followed_task
        status = self.status
        if task is None or status not in (TaskStatus.RUNNING, TaskStatus.WAITING):
            self.notify("No turn is running in this pane.", severity="warning")
            return
        self.run_worker(self._interrupt(task.id), group="conversation", exit_on_error=False)

    async def _interrupt(self, task_id: str) -> None:
        try:
            await self.client.interrupt(task_id)
        except failures.ACTION_ERRORS as error:
            self.notify(describe_action_failure(error), title="Interrupt", severity="error")
            return
        self.notify("Interrupt requested.", title="Interrupt")

    # -- export -----------------------------------------------------------------------------

    def action_export(self) -> None:
        """Ask the screen to export the task's whole transcript (:class:`ExportRequested`)."""
        task = self.followed_task
        if task is None:
            self.notify("No task to export.", severity="warning")
            return
        self.post_message(self.ExportRequested(self, task))

    # -- border -----------------------------------------------------------------------------

    def compute_pane_title(self) -> str:
        """The followed task's prompt on one line, or "Events"."""
        task = self.followed_task
        return "Events" if task is None else short_prompt(task.prompt, 120)

    def compute_pane_subtitle(self) -> _Subtitle | None:
        """Status, run time, token usage, stream error, search and new events, joined by
        ``·`` (None: no task)."""
        if self.followed_task is None:
            return None
        parts: list[str] = []
        variables: dict[str, str] = {}
        if self.new_below:
            # First: a narrow pane (two or more at 80 columns) cuts its subtitle's end.
            parts.append("[$accent]↓ $unseen new (end)[/]")
            variables["unseen"] = str(self.new_below)
        status = self.status
        if status is not None:
            parts.append("$icon $status")
            variables["icon"] = status_icon(status)
            variables["status"] = status.value
        if self.run_time:
            parts.append("$runtime")
            variables["runtime"] = self.run_time
        if self.usage_text:
            parts.append("$usage")
            variables["usage"] = self.usage_text
        if self.stream_error:
            parts.append("[$error]stream error[/]")
        if self.search_query:
            parts.append("[$accent]/$query[/]")
            variables["query"] = self.search_query[:20]
        if self.search_note:
            parts.append("$note")
            variables["note"] = self.search_note
        return _Subtitle(" · ".join(parts), tuple(sorted(variables.items())))

    def watch_pane_title(self, title: str) -> None:
        """Draw the new title (only its border row)."""
        if self.is_mounted:
            self._show_title(title)

    def watch_pane_subtitle(self, subtitle: _Subtitle | None) -> None:
        """Draw the new subtitle (only its border row)."""
        if self.is_mounted:
            self._show_subtitle(subtitle)

    def _show_title(self, title: str) -> None:
        width, _ = self.outer_size
        offset = self.content_offset
        self._border_rows = (Region(-offset.x, -offset.y, width, 1),)
        try:
            self.border_title = Content(title)
        finally:
            self._border_rows = ()

    def _show_subtitle(self, subtitle: _Subtitle | None) -> None:
        width, height = self.outer_size
        offset = self.content_offset
        self._border_rows = (Region(-offset.x, height - 1 - offset.y, width, 1),)
        try:
            self.border_subtitle = None if subtitle is None else subtitle.content()
        finally:
            self._border_rows = ()

    def refresh(
        self,
        *regions: Region,
        repaint: bool = True,
        layout: bool = False,
        recompose: bool = False,
    ) -> Self:
        """Textual redraws the whole widget, children included, when its border title or
        subtitle is set; while one is set here, only its border row is redrawn (a pane that
        counts "N new" while the user reads would otherwise send all of its lines again for
        every batch of events)."""
        if self._border_rows and not regions and repaint and not layout and not recompose:
            regions = self._border_rows
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)
