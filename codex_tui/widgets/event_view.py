"""Provides EventView: one task's live event stream, rendered per event type with a sticky tail."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import httpx
from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import RichLog
from textual.worker import Worker

from codex_tui.widgets.render import Palette, RenderState, render_event, status_icon
from codex_tui.widgets.task_list import short_prompt
from server_client.client import ApiError, CodexTuiClient
from server_client.models import Event, Task, TaskStatus

__all__ = ["EventLog", "EventView"]


class EventLog(RichLog):
    """The event view's log: a RichLog with pager keys; ``end``/``G`` jump back to the tail.

    Reaching the bottom, by any key or the mouse, makes the view follow new output again.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("end", "follow_tail", "Follow", id="follow-tail"),
        Binding("G", "follow_tail", "Follow", show=False, id="follow-tail-vi"),
        Binding("k", "scroll_up", "Up", show=False, id="scroll-up-vi"),
        Binding("j", "scroll_down", "Down", show=False, id="scroll-down-vi"),
        Binding("space", "page_down", "Page down", show=False, id="page-down-space"),
        Binding("g", "scroll_home", "Top", show=False, id="scroll-top-vi"),
    ]

    def action_follow_tail(self) -> None:
        """Jump to the newest line (the view then follows again)."""
        self.scroll_end(animate=False, immediate=True)


class EventView(Widget):
    """Follows one task's events: replays its log, then shows new events as they arrive.

    The view owns its stream: :meth:`follow` starts a worker named after the task
    (``stream:<task id>``, group ``stream``, ``exclusive=True``) that iterates
    ``client.stream_events()``; following another task cancels it. Events are rendered as
    they arrive (:func:`~codex_tui.widgets.render.render_event`), buffered, and flushed every
    ``flush_interval_s`` as one write into a :class:`~textual.widgets.RichLog` capped at
    ``max_lines``. The buffer itself is bounded by ``max_pending``; when a replay outruns the
    display, the oldest buffered entries are skipped with a note; with the default bound they
    are entries the scrollback cap would have dropped anyway.

    The tail is sticky: the log scrolls with new output only while the user is at the bottom.
    Otherwise the border counts what is new, and ``end`` jumps back and follows again.

    Args:
        client: The SDK client.
        max_lines: Scrollback cap of the log, in lines.
        flush_interval_s: Seconds between flushes of buffered events.
        max_pending: Most entries buffered between two flushes (default: ``max_lines``;
            every entry takes at least one line, so nothing skipped would have fitted).
        max_per_flush: Most entries written by one flush; the rest wait for the next.
    """

    DEFAULT_CSS = """
    EventView {
        height: 1fr;
    }
    EventView > RichLog {
        height: 1fr;
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    """

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
        max_lines: int = 5000,
        flush_interval_s: float = 0.05,
        max_pending: int | None = None,
        max_per_flush: int = 500,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's naming
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.client = client
        self.max_lines = max_lines
        self.flush_interval_s = flush_interval_s
        self.max_per_flush = max_per_flush
        self._pending: deque[RenderableType] = deque(maxlen=max_pending or max_lines)
        self._skipped = 0
        self._followed: Task | None = None
        self._state = RenderState()
        self._status: TaskStatus | None = None
        self._events_seen = 0
        self._last_seq = 0
        self._following = True
        self._unseen = 0
        self._stream_error: str | None = None
        self._stream_worker: Worker[None] | None = None

    def compose(self) -> ComposeResult:
        yield EventLog(
            id="event-log",
            max_lines=self.max_lines,
            min_width=20,
            wrap=True,
            markup=False,
            highlight=False,
            auto_scroll=False,
        )

    def on_mount(self) -> None:
        """Start the flush timer (paused until something is buffered)."""
        self._flush_timer = self.set_interval(
            self.flush_interval_s, self._flush, name="event-view-flush", pause=True
        )
        self.watch(self.log_widget, "scroll_y", self._scrolled, init=False)
        self._update_titles()
        if self._followed is None:
            self.log_widget.write(
                Text("No task selected. Press n to start one.", style="dim"), expand=True
            )

    # -- public API -------------------------------------------------------------------------

    @property
    def log_widget(self) -> EventLog:
        """The log the events are written to."""
        return self.query_one("#event-log", EventLog)

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
        return self._following

    @property
    def unseen(self) -> int:
        """Entries written below the visible area since the user scrolled up."""
        return self._unseen

    @property
    def streaming(self) -> bool:
        """True while the stream worker runs."""
        worker = self._stream_worker
        return worker is not None and worker.is_running

    @property
    def pending(self) -> int:
        """Entries buffered for the next flush."""
        return len(self._pending)

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
        self._followed = task
        self._status = task.status if task else None
        self._state = RenderState(palette=Palette.from_theme_variables(self.app.theme_variables))
        self._pending.clear()
        self._skipped = 0
        self._events_seen = 0
        self._last_seq = 0
        self._unseen = 0
        self._following = True
        self._stream_error = None
        log = self.log_widget
        log.clear()
        log.scroll_home(animate=False, immediate=True)
        self.set_class(False, "-stream-error")
        if task is None:
            log.write(Text("No task selected. Press n to start one.", style="dim"), expand=True)
        else:
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
        self._following = True
        self._unseen = 0
        self.log_widget.scroll_end(animate=False, immediate=True)
        self._update_titles()

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
        renderables = render_event(event, self._state)
        overflow = len(self._pending) + len(renderables) - (self._pending.maxlen or 0)
        if overflow > 0:
            self._skipped += min(overflow, len(self._pending))
        self._pending.extend(renderables)
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
        self._pending.append(Text(message, style=self._state.palette.error))
        self._flush_timer.resume()
        self._update_titles()

    # -- display ----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write buffered entries as one renderable (one write per flush)."""
        log = self.log_widget
        if not self._pending and not self._skipped:
            self._flush_timer.pause()
            return
        if not log.size.width:
            return  # not laid out yet; the buffer is bounded, so wait
        batch: list[RenderableType] = []
        if self._skipped:
            batch.append(Text(f"… {self._skipped} earlier entries skipped", style="dim italic"))
            self._skipped = 0
        while self._pending and len(batch) < self.max_per_flush:
            batch.append(self._pending.popleft())
        log.write(Group(*batch), expand=True, scroll_end=self._following)
        if not self._following:
            self._unseen += len(batch)
            self._update_titles()

    def _scrolled(self, _old: float, _new: float) -> None:
        log = self.log_widget
        following = log.scroll_y >= log.max_scroll_y
        if following != self._following or (following and self._unseen):
            self._following = following
            if following:
                self._unseen = 0
            self._update_titles()

    def _update_titles(self) -> None:
        task = self._followed
        if task is None:
            self.border_title = Content("Events")
            self.border_subtitle = None
            return
        self.border_title = Content(short_prompt(task.prompt, 120))
        parts: list[str] = []
        variables: dict[str, object] = {}
        if self._status is not None:
            parts.append("$icon $status")
            variables["icon"] = status_icon(self._status)
            variables["status"] = self._status.value
        if self._stream_error:
            parts.append("[$error]stream error[/]")
        if not self._following and self._unseen:
            parts.append("[$accent]↓ $unseen new (end)[/]")
            variables["unseen"] = str(self._unseen)
        self.border_subtitle = Content.from_markup(" · ".join(parts), **variables)
