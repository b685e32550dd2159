"""Provides EventView: one pane following one task's events, with paging, search and export."""

from __future__ import annotations

import asyncio
import io
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import httpx
from rich.console import Console
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.geometry import Region
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input
from textual.worker import Worker

from codex_tui.export import export_task, format_for_path
from codex_tui.failures import describe_action_failure
from codex_tui.screens.export import ExportModal
from codex_tui.widgets.render import (
    Palette,
    RenderState,
    annotate,
    event_text,
    status_icon,
    warm_up,
)
from codex_tui.widgets.task_list import short_prompt
from codex_tui.widgets.transcript import Entry, Transcript
from server_client.client import ApiError, CodexTuiClient
from server_client.models import Event, Task, TaskStatus

__all__ = ["PAGE_EVENTS", "EventView"]

#: Most events fetched per page when the user scrolls past the window or searches the server
#: (a pane with a small window fetches half its window).
PAGE_EVENTS = 500
#: Longest stretch, in seconds, the stream worker handles events that are already buffered
#: before it lets the rest of the app run (a burst arrives many events per network read).
STREAM_SLICE_S = 0.002

_NO_TASK = "No task selected. Press n to start one."


def _seq(item: Entry | int) -> int:
    """The seq of a buffered event (an entry, or the seq of an event that shows nothing)."""
    return item.seq if isinstance(item, Entry) else item


class EventView(Widget):
    """A pane that follows one task: replays its stored events, then shows new ones live.

    The view owns its stream: :meth:`follow` starts a worker named ``stream:<task id>`` (group
    ``stream-<view id>``, ``exclusive=True``) that iterates ``client.stream_events()``,
    yielding to the app at least every :data:`STREAM_SLICE_S` while a burst is buffered;
    following another task cancels it. Events are annotated as they arrive (in stream order,
    so turn numbers, token deltas and command durations are right), turned into transcript
    entries without being rendered (:meth:`Transcript.make_entry`), buffered, and handed to the
    :class:`~codex_tui.widgets.transcript.Transcript` in one batch on a ``flush_interval_s``
    timer, at most once per ``redraw_interval_s``: every hand-over scrolls a following pane,
    which redraws all of it, so a slow, steady stream costs at most one redraw per
    ``redraw_interval_s`` instead of one per event (what an SSH link carries), while an event
    after a quiet spell still shows at the next tick. The transcript holds at most
    ``max_entries`` events and renders only what is in view.

    The tail is sticky: new events scroll the view only while the user is at the bottom;
    otherwise the border counts them and ``end`` jumps back. When the user reads far back, the
    window pages older events from the server by seq and lets go of the newest; live events
    then only count until ``end`` loads the tail again.

    Keys (besides the transcript's): ``/`` searches the task's events (this window first,
    then older pages on the server), ``n`` goes to the next older match, ``N`` to the next
    newer one, ``escape`` clears the search, ``e`` exports the whole transcript.

    Args:
        client: The SDK client.
        max_entries: The most events held in the window.
        flush_interval_s: Seconds between checks for buffered events.
        redraw_interval_s: Least seconds between two hand-overs to the transcript.
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
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search", id="search"),
        Binding("n", "search_next", "Next match", show=False, id="search-next"),
        Binding("N", "search_previous", "Previous match", show=False, id="search-previous"),
        Binding("escape", "clear_search", "Clear search", show=False, id="clear-search"),
        Binding("e", "export", "Export", id="export-transcript"),
    ]

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

    def __init__(
        self,
        client: CodexTuiClient,
        *,
        max_entries: int = 2000,
        flush_interval_s: float = 0.05,
        redraw_interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's naming
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.client = client
        self.max_entries = max_entries
        self.flush_interval_s = flush_interval_s
        self.redraw_interval_s = redraw_interval_s
        self.clock = clock
        self._pending: deque[Entry | int] = deque()
        """Events since the last hand-over: an entry, or the seq of an event that shows
        nothing; the newest ``max_entries`` entries at most (older ones would not fit the
        window), and at most four times as many events."""
        self._pending_shown = 0
        self._page = min(PAGE_EVENTS, max(max_entries // 2, 1))
        """Events per page fetched from the server: at most half the window, so a page
        never pushes out what the user reads."""
        self._recent: deque[Entry | int] = deque(maxlen=self._page)
        self._first_entry_seq: int | None = None
        self._next_handover = float("-inf")
        self._transcript: Transcript | None = None
        self._title_key: str | None = None
        self._subtitle_key: tuple[object, ...] | None = None
        self._followed: Task | None = None
        self._state = RenderState()
        self._status: TaskStatus | None = None
        self._events_seen = 0
        self._last_seq = 0
        self._stream_error: str | None = None
        self._stream_worker: Worker[None] | None = None
        self._query = ""
        self._search_note: str | None = None

    def compose(self) -> ComposeResult:
        yield Transcript(max_entries=self.max_entries, id="transcript")
        yield Input(placeholder="search this task's events", id="search-input")

    def on_mount(self) -> None:
        """Start the flush timer (paused until something is buffered)."""
        self._flush_timer = self.set_interval(
            self.flush_interval_s, self._flush, name="event-view-flush", pause=True
        )
        self.transcript.set_palette(self._palette())
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)
        if self._followed is None:
            self.transcript.reset(_NO_TASK)
        self._update_titles()

    def _theme_changed(self, _theme: object) -> None:
        self._state.palette = self._palette()
        self.transcript.set_palette(self._state.palette)

    def _palette(self) -> Palette:
        return Palette.from_theme_variables(self.app.theme_variables)

    # -- public API -------------------------------------------------------------------------

    @property
    def transcript(self) -> Transcript:
        """The transcript the events are shown in (it holds the keyboard focus)."""
        if self._transcript is None:
            self._transcript = self.query_one("#transcript", Transcript)
        return self._transcript

    @property
    def log_widget(self) -> Transcript:
        """The focusable part of the view (the transcript)."""
        return self.transcript

    @property
    def followed_task(self) -> Task | None:
        """The task being followed."""
        return self._followed

    @property
    def task_id(self) -> str | None:
        """The id of the task being followed."""
        return self._followed.id if self._followed else None

    @property
    def status(self) -> TaskStatus | None:
        """The followed task's newest status (from its stream, else from the task)."""
        return self._status

    @property
    def events_seen(self) -> int:
        """How many events of the followed task the stream has delivered."""
        return self._events_seen

    @property
    def last_seq(self) -> int:
        """The seq of the newest event delivered."""
        return self._last_seq

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
        return len(self._pending)

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

        Following the task already shown only refreshes its title.
        """
        if task is not None and self._followed is not None and task.id == self._followed.id:
            self._followed = task
            if self._status is None or not self._status.is_terminal:
                self._status = task.status
            self._update_titles()
            return
        if self._stream_worker is not None:
            self._stream_worker.cancel()
            self._stream_worker = None
        self.workers.cancel_group(self, "pages")
        self._followed = task
        self._status = task.status if task else None
        self._state = RenderState(palette=self._palette())
        self._pending.clear()
        self._pending_shown = 0
        self._recent.clear()
        self._first_entry_seq = None
        self._next_handover = float("-inf")
        self._events_seen = 0
        self._last_seq = 0
        self._stream_error = None
        self._search_note = None
        transcript = self.transcript
        transcript.set_palette(self._state.palette)
        transcript.reset(None if task else _NO_TASK)
        self.set_class(False, "-stream-error")
        if task is not None and not EventView._warming:
            # The first agent message would import and build the Markdown renderer (tens of
            # ms) on the event loop; do it in a thread while the stream starts.
            EventView._warming = True
            self.run_worker(warm_up, thread=True, group="warm-up", exit_on_error=False)
        if task is not None:
            self._stream_worker = self.run_worker(
                self._stream(task.id),
                name=f"stream:{task.id}",
                group="stream",
                exclusive=True,
                exit_on_error=False,
            )
        self._update_titles()

    def action_follow_tail(self) -> None:
        """Jump to the newest output and follow it again."""
        self.transcript.action_follow_tail()

    # -- stream -----------------------------------------------------------------------------

    async def _stream(self, task_id: str) -> None:
        clock = time.perf_counter
        try:
            slice_end = clock() + STREAM_SLICE_S
            async for event in self.client.stream_events(task_id):
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
        self._events_seen += 1
        self._last_seq = event.seq
        entry = self.transcript.make_entry(event, annotate(event, self._state))
        if entry is not None and self._first_entry_seq is None:
            self._first_entry_seq = event.seq
        if entry is None:
            self._pending.append(event.seq)
        else:
            self._pending.append(entry)
            self._pending_shown += 1
        limit = self.max_entries
        while self._pending_shown > limit or len(self._pending) > 4 * limit:
            if isinstance(self._pending.popleft(), Entry):
                self._pending_shown -= 1
        self._flush_timer.resume()
        status = event.status
        if status is not None and status != self._status:
            self._status = status
            self._update_titles()
            self.post_message(self.StatusChanged(self, task_id, status))

    def _stream_failed(self, task_id: str, message: str) -> None:
        if task_id != self.task_id:
            return
        self._stream_error = message
        self.set_class(True, "-stream-error")
        self.notify(message, title="Event stream", severity="error")
        self._update_titles()

    def _flush(self) -> None:
        """Hand the buffered events to the transcript in one batch (at most once per
        ``redraw_interval_s``)."""
        if not self._pending:
            self._flush_timer.pause()
            return
        transcript = self.transcript
        if not transcript.size.width:
            return  # not laid out yet; the buffer is bounded, so wait
        now = self.clock()
        if now < self._next_handover:
            return  # the last hand-over redrew the pane a moment ago; keep buffering
        # Ticks come every flush_interval_s: allow for their jitter, not for a skipped tick.
        self._next_handover = now + self.redraw_interval_s - self.flush_interval_s / 2
        batch = list(self._pending)
        self._pending.clear()
        self._pending_shown = 0
        entries = [item for item in batch if isinstance(item, Entry)]
        if not transcript.at_end or (not transcript.following and transcript.room < len(entries)):
            # The user reads older events: keep their place, count what is new, and keep the
            # newest events to join them up when the window reaches the end again.
            if transcript.at_end:
                transcript.mark_end(False)
            self._recent.extend(batch)
            transcript.count_unseen(len(entries))
        else:
            if not transcript.entries and entries and entries[0].seq == self._first_entry_seq:
                transcript.at_start = True  # nothing shown was dropped before the first entry
            transcript.append(entries)
        self._update_titles()

    # -- paging -----------------------------------------------------------------------------

    @on(Transcript.OlderWanted)
    def _older_wanted(self, message: Transcript.OlderWanted) -> None:
        message.stop()
        if self.task_id is not None:
            self.run_worker(
                self._load_older(self.task_id, message.before),
                group="pages",
                exclusive=True,
                exit_on_error=False,
            )

    @on(Transcript.NewerWanted)
    def _newer_wanted(self, message: Transcript.NewerWanted) -> None:
        message.stop()
        if self.task_id is not None:
            self.run_worker(
                self._load_newer(self.task_id, message.after),
                group="pages",
                exclusive=True,
                exit_on_error=False,
            )

    @on(Transcript.TailWanted)
    def _tail_wanted(self, message: Transcript.TailWanted) -> None:
        message.stop()
        if self.task_id is not None:
            self.run_worker(
                self._load_tail(self.task_id), group="pages", exclusive=True, exit_on_error=False
            )

    @on(Transcript.ViewChanged)
    def _view_changed(self, message: Transcript.ViewChanged) -> None:
        message.stop()
        self._update_titles()

    def _page_entries(self, events: list[Event]) -> list[Entry]:
        """Entries for a page fetched out of stream order (annotated on their own)."""
        state = RenderState(palette=self._state.palette)
        return self.transcript.make_entries((e, annotate(e, state)) for e in events)

    async def _fetch_older(self, task_id: str, before: int) -> tuple[list[Entry], bool]:
        """Older entries before ``before`` (skipping pages that show nothing) and whether the
        task's first event was reached."""
        while True:
            events = await self.client.get_events(task_id, before=before, limit=self._page)
            at_start = len(events) < self._page
            entries = self._page_entries(events)
            if entries or at_start:
                return entries, at_start
            before = events[0].seq

    async def _load_older(self, task_id: str, before: int) -> None:
        transcript = self.transcript
        try:
            entries, at_start = await self._fetch_older(task_id, before)
        except (ApiError, httpx.HTTPError) as error:
            transcript.older_failed()
            self.notify(describe_action_failure(error), title="Older events", severity="error")
            return
        if task_id == self.task_id and transcript.first_seq == before:
            transcript.prepend(entries, at_start=at_start)
            self._update_titles()

    async def _load_newer(self, task_id: str, after: int) -> None:
        transcript = self.transcript
        try:
            events = await self.client.get_events(task_id, after=after, limit=self._page)
        except (ApiError, httpx.HTTPError) as error:
            transcript.newer_failed()
            self.notify(describe_action_failure(error), title="Newer events", severity="error")
            return
        if task_id != self.task_id or transcript.last_seq != after:
            return
        transcript.append(self._page_entries(events))
        if len(events) < self._page:
            self._rejoin(task_id)
        self._update_titles()

    def _rejoin(self, task_id: str) -> None:
        """The window reached the newest stored events: join the live ones kept meanwhile.

        If a gap remains between the window and the live events (more arrived than were
        kept), the window stays detached and the next page closes it.
        """
        transcript = self.transcript
        last = transcript.last_seq or 0
        recent = [item for item in self._recent if _seq(item) > last]
        if recent and _seq(recent[0]) > last + 1 and last < self._last_seq:
            transcript.newer_failed()  # ask again from the new end
            return
        self._recent.clear()
        transcript.mark_end(True)
        transcript.append([item for item in recent if isinstance(item, Entry)])
        if task_id == self.task_id and transcript.scroll_y >= transcript.max_scroll_y:
            transcript.action_follow_tail()

    async def _load_tail(self, task_id: str) -> None:
        transcript = self.transcript
        try:
            events = await self.client.get_events(
                task_id, before=self._last_seq + 1, limit=self._page
            )
        except (ApiError, httpx.HTTPError) as error:
            self.notify(describe_action_failure(error), title="Newest events", severity="error")
            return
        if task_id != self.task_id:
            return
        transcript.reset()
        transcript.mark_end(False)
        transcript.at_start = len(events) < self._page
        transcript.append(self._page_entries(events))
        self._rejoin(task_id)
        transcript.action_follow_tail()
        self._update_titles()

    # -- search -----------------------------------------------------------------------------

    def action_search(self) -> None:
        """Open the search field."""
        if self._followed is None:
            return
        self.add_class("-searching")
        field = self.query_one("#search-input", Input)
        field.value = self._query
        field.focus()

    @on(Input.Submitted, "#search-input")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._query = event.value.strip()
        self.remove_class("-searching")
        self.transcript.focus()
        self.transcript.set_query(self._query)
        if self._query:
            self._search(backwards=True)
        else:
            self._search_note = None
            self._update_titles()

    def action_clear_search(self) -> None:
        """Close the search field and remove the highlights."""
        searching = self.has_class("-searching")
        self.remove_class("-searching")
        if searching:
            self.transcript.focus()
            return
        self._query = ""
        self._search_note = None
        self.transcript.set_query("")
        self.workers.cancel_group(self, "search")
        self._update_titles()

    def action_search_next(self) -> None:
        """The next match towards older events."""
        if self._query:
            self._search(backwards=True)

    def action_search_previous(self) -> None:
        """The next match towards newer events."""
        if self._query:
            self._search(backwards=False)

    def _search(self, *, backwards: bool) -> None:
        transcript = self.transcript
        found = transcript.find(self._query, backwards=backwards)
        if found is not None:
            transcript.move_cursor(found)
            self._search_note = None
            self._update_titles()
            return
        edge = transcript.at_start if backwards else transcript.at_end
        if edge or self.task_id is None:
            direction = "older" if backwards else "newer"
            self._search_note = f"no {direction} match"
            self.notify(f"No {direction} match for {self._query!r}.", severity="warning")
            self._update_titles()
            return
        self._search_note = "searching the server…"
        self._update_titles()
        self.run_worker(
            self._search_server(self.task_id, self._query, backwards),
            group="search",
            exclusive=True,
            exit_on_error=False,
        )

    async def _search_server(self, task_id: str, query: str, backwards: bool) -> None:
        """Page through the stored events beyond the window until one matches; only then move
        the window to that page (detached from the live tail) and put the cursor on the
        match. Without a match the window and the cursor stay where they were."""
        transcript = self.transcript
        needle = query.lower()
        page = self._page
        if backwards:
            before = transcript.first_seq or (self._last_seq + 1)
        else:
            after = transcript.last_seq or 0
        found = False
        try:
            while task_id == self.task_id and query == self._query:
                if backwards:
                    events = await self.client.get_events(task_id, before=before, limit=page)
                else:
                    events = await self.client.get_events(task_id, after=after, limit=page)
                if any(needle in event_text(e) for e in events):
                    entries = self._page_entries(events)
                    hits = [i for i, e in enumerate(entries) if needle in e.text]
                    if hits and task_id == self.task_id:
                        transcript.reset()
                        transcript.mark_end(False)
                        transcript.at_start = backwards and len(events) < page
                        transcript.append(entries)
                        transcript.move_cursor(hits[-1] if backwards else hits[0])
                        found = True
                        break
                if len(events) < page:
                    break
                if backwards:
                    before = events[0].seq
                else:
                    after = events[-1].seq
        except (ApiError, httpx.HTTPError) as error:
            self.notify(describe_action_failure(error), title="Search", severity="error")
            found = True  # said why already
        if not found and task_id == self.task_id:
            direction = "older" if backwards else "newer"
            self.notify(f"No {direction} match for {query!r}.", severity="warning")
        self._search_note = None
        self._update_titles()

    # -- export -----------------------------------------------------------------------------

    def action_export(self) -> None:
        """Ask for a file, then write the task's whole transcript there."""
        task = self._followed
        if task is None:
            self.notify("No task to export.", severity="warning")
            return
        default = Path.cwd() / f"codex-task-{task.id[:8]}.md"

        def chosen(path: Path | None) -> None:
            if path is not None:
                self.run_worker(self._export(task, path), group="export", exit_on_error=False)

        self.app.push_screen(ExportModal(default), chosen)

    async def _export(self, task: Task, path: Path) -> None:
        fmt = format_for_path(path)
        try:
            with path.open("w", encoding="utf-8") as file:
                count = await export_task(self.client, task, file, fmt)
        except (ApiError, httpx.HTTPError) as error:
            self.notify(describe_action_failure(error), title="Export failed", severity="error")
            return
        except OSError as error:
            self.notify(f"Cannot write {path}: {error.strerror}", severity="error")
            return
        self.notify(f"Wrote {count} events to {path}", title="Exported")

    # -- titles -----------------------------------------------------------------------------

    def _update_titles(self) -> None:
        """Set the border's title and subtitle, each only when it changes, and redraw only its
        border row (see :meth:`refresh`)."""
        if not self.is_mounted:
            return
        task = self._followed
        if task is None:
            self._set_title("Events")
            self._set_subtitle((), None)
            return
        self._set_title(short_prompt(task.prompt, 120))
        transcript = self.transcript
        parts: list[str] = []
        variables: dict[str, object] = {}
        if self._status is not None:
            parts.append("$icon $status")
            variables["icon"] = status_icon(self._status)
            variables["status"] = self._status.value
        if self._stream_error:
            parts.append("[$error]stream error[/]")
        if self._query:
            parts.append("[$accent]/$query[/]")
            variables["query"] = self._query[:20]
        if self._search_note:
            parts.append("$note")
            variables["note"] = self._search_note
        if not transcript.following and transcript.unseen:
            parts.append("[$accent]↓ $unseen new (end)[/]")
            variables["unseen"] = str(transcript.unseen)
        markup = " · ".join(parts)
        key = (markup, *sorted(variables.items()))
        if key != self._subtitle_key:
            self._set_subtitle(key, Content.from_markup(markup, **variables))

    def _set_title(self, title: str) -> None:
        if title != self._title_key:
            self._title_key = title
            width, _ = self.outer_size
            offset = self.content_offset
            self._border_rows = (Region(-offset.x, -offset.y, width, 1),)
            try:
                self.border_title = Content(title)
            finally:
                self._border_rows = ()

    def _set_subtitle(self, key: tuple[object, ...], subtitle: Content | None) -> None:
        if key != self._subtitle_key:
            self._subtitle_key = key
            width, height = self.outer_size
            offset = self.content_offset
            self._border_rows = (Region(-offset.x, height - 1 - offset.y, width, 1),)
            try:
                self.border_subtitle = subtitle
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
