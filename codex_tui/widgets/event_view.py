"""Provides EventView: one pane following one task's events, with paging, search and export."""

from __future__ import annotations

import io
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
from rich.console import Console
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input
from textual.worker import Worker

from codex_tui.export import export_task, format_for_path
from codex_tui.failures import describe_action_failure
from codex_tui.screens.export import ExportModal
from codex_tui.widgets.render import (
    Annotation,
    Palette,
    RenderState,
    annotate,
    event_text,
    status_icon,
)
from codex_tui.widgets.task_list import short_prompt
from codex_tui.widgets.transcript import Entry, Transcript
from server_client.client import ApiError, CodexTuiClient
from server_client.models import Event, Task, TaskStatus

__all__ = ["PAGE_EVENTS", "EventView"]

#: Most events fetched per page when the user scrolls past the window or searches the server
#: (a pane with a small window fetches half its window).
PAGE_EVENTS = 500

_NO_TASK = "No task selected. Press n to start one."


class EventView(Widget):
    """A pane that follows one task: replays its stored events, then shows new ones live.

    The view owns its stream: :meth:`follow` starts a worker named ``stream:<task id>`` (group
    ``stream-<view id>``, ``exclusive=True``) that iterates ``client.stream_events()``;
    following another task cancels it. Events are annotated as they arrive (in stream order,
    so turn numbers, token deltas and command durations are right), buffered, and handed to
    the :class:`~codex_tui.widgets.transcript.Transcript` every ``flush_interval_s`` in one
    batch. The transcript holds at most ``max_entries`` events and renders only what is in
    view, so a fast stream costs one refresh per flush.

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
        flush_interval_s: Seconds between hand-overs of buffered events.
    """

    ALLOW_MAXIMIZE = True

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
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's naming
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.client = client
        self.max_entries = max_entries
        self.flush_interval_s = flush_interval_s
        self._pending: deque[tuple[Event, Annotation]] = deque(maxlen=max_entries)
        self._page = min(PAGE_EVENTS, max(max_entries // 2, 1))
        """Events per page fetched from the server: at most half the window, so a page
        never pushes out what the user reads."""
        self._recent: deque[tuple[Event, Annotation]] = deque(maxlen=self._page)
        self._skipped = 0
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
        return self.query_one("#transcript", Transcript)

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
        self._recent.clear()
        self._skipped = 0
        self._events_seen = 0
        self._last_seq = 0
        self._stream_error = None
        self._search_note = None
        transcript = self.transcript
        transcript.set_palette(self._state.palette)
        transcript.reset(None if task else _NO_TASK)
        self.set_class(False, "-stream-error")
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
        try:
            async for event in self.client.stream_events(task_id):
                if task_id != self.task_id:
                    return
                self._ingest(task_id, event)
        except ApiError as error:
            self._stream_failed(task_id, f"Cannot stream events: {error}")
        except httpx.HTTPError as error:
            self._stream_failed(task_id, f"Stream lost: {error or type(error).__name__}")
        except ValueError as error:  # a malformed event from the server
            self._stream_failed(task_id, f"Bad event from the server: {error}")

    def _ingest(self, task_id: str, event: Event) -> None:
        self._events_seen += 1
        self._last_seq = event.seq
        note = annotate(event, self._state)
        if len(self._pending) == self._pending.maxlen:
            self._skipped += 1
        self._pending.append((event, note))
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
        """Hand the buffered events to the transcript in one batch."""
        if not self._pending:
            self._flush_timer.pause()
            return
        transcript = self.transcript
        if not transcript.size.width:
            return  # not laid out yet; the buffer is bounded, so wait
        batch = list(self._pending)
        self._pending.clear()
        if not transcript.at_end or (not transcript.following and transcript.room < len(batch)):
            # The user reads older events: keep their place, count what is new, and keep the
            # newest events to join them up when the window reaches the end again.
            if transcript.at_end:
                transcript.mark_end(False)
            self._recent.extend(batch)
            transcript.count_unseen(len(batch))
        else:
            if not transcript.entries and batch and batch[0][0].seq == 1 and not self._skipped:
                transcript.at_start = True
            transcript.append(transcript.make_entries(batch))
        self._skipped = 0
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
        recent = [(e, n) for e, n in self._recent if e.seq > last]
        if recent and recent[0][0].seq > last + 1 and last < self._last_seq:
            transcript.newer_failed()  # ask again from the new end
            return
        self._recent.clear()
        transcript.mark_end(True)
        transcript.append(transcript.make_entries(recent))
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
        if not self.is_mounted:
            return
        task = self._followed
        if task is None:
            self.border_title = Content("Events")
            self.border_subtitle = None
            return
        self.border_title = Content(short_prompt(task.prompt, 120))
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
        self.border_subtitle = Content.from_markup(" · ".join(parts), **variables)
