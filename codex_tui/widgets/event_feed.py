"""Provides EventFeed: what one pane's transcript holds of its task's events, fed by the live
stream and by pages from the server."""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from codex_tui import failures
from codex_tui.events.palette import Palette
from codex_tui.events.pane import RenderState, event_text
from codex_tui.events.view import (
    MAX_LIVE_ITEMS,
    Annotation,
    Live,
    LiveItem,
    annotate_read,
    start_stderr_run,
)
from codex_tui.widgets.transcript import Entry, Transcript
from server_client import codex

if TYPE_CHECKING:
    from server_client.client import CodexTuiClient
    from server_client.models import Event

__all__ = ["PAGE_EVENTS", "EventFeed"]

#: Most events fetched per page when the user scrolls past the window or searches the server
#: (a pane with a small window fetches half its window).
PAGE_EVENTS = 500


def _completed_command_id(entry: Entry) -> str | None:
    """The item id of a command's completion that ``entry`` shows as its own (None: it shows
    something else, e.g. a started command that another event completed)."""
    event = entry.event
    if entry.note.live is not None or "completed" not in (event.codex_type or ""):
        return None
    typed = event.codex
    if (
        isinstance(typed, codex.ItemEvent)
        and typed.phase == "completed"
        and isinstance(typed.item, codex.CommandExecution)
        and typed.item.id
    ):
        return typed.item.id
    return None


def _seq(item: Entry | int) -> int:
    """The seq of a buffered event (an entry, or the seq of an event that shows nothing)."""
    return item.seq if isinstance(item, Entry) else item


class EventFeed:
    """The stream and paging side of one pane: no widget, no timers, no messages.

    Live events are annotated as they arrive (:meth:`add`, in stream order, so turn numbers,
    token deltas and command durations are right), turned into transcript entries without
    being rendered (:meth:`Transcript.make_entry`) and buffered until the pane hands them over
    in one batch (:meth:`hand_over`). While the transcript's window does not end at the newest
    event (the user reads older pages), hand-overs only count what is new and keep the newest
    ``page`` events, which join the window again when it reaches the end (:meth:`rejoin`).

    Pages come from ``client.get_events`` by seq (:meth:`load_older`, :meth:`load_newer`,
    :meth:`load_tail`, :meth:`search`); each is applied to the transcript only while the feed
    still follows the task it was fetched for. They raise what the client raises
    (:class:`~server_client.client.ApiError`, :class:`httpx.HTTPError`); the pane says why.

    Args:
        client: The SDK client.
        transcript: The window the events go to.
        max_entries: The most events the window holds.
    """

    def __init__(self, client: CodexTuiClient, transcript: Transcript, max_entries: int) -> None:
        self.client = client
        self.transcript = transcript
        self.max_entries = max_entries
        self.page = min(PAGE_EVENTS, max(max_entries // 2, 1))
        """Events per page fetched from the server: at most half the window, so a page never
        pushes out what the user reads."""
        self.task_id: str | None = None
        """The task whose events the feed holds (None: none)."""
        self.state = RenderState(fold_stderr=True)
        """The stream's render state (annotations depend on the events before)."""
        self.events_seen = 0
        """How many events of the task the stream has delivered."""
        self.last_seq = 0
        """The seq of the newest event delivered."""
        self._pending: deque[Entry | int] = deque()
        """Events since the last hand-over: an entry, or the seq of an event that shows
        nothing; the newest ``max_entries`` entries at most (older ones would not fit the
        window), and at most four times as many events."""
        self._pending_shown = 0
        self._recent: deque[Entry | int] = deque(maxlen=self.page)
        self._first_entry_seq: int | None = None
        self._live: dict[int, weakref.ref[Entry]] = {}
        """The entry of each live item and approval card (by the id of its live object),
        the newest :data:`~codex_tui.events.view.MAX_LIVE_ITEMS`; weak, so an entry that
        left the window and the buffers is freed."""
        self._changed: dict[int, Entry] = {}
        """Live entries changed since the last hand-over (rendered again then)."""

    @property
    def pending(self) -> int:
        """Events buffered for the next hand-over, and live entries to render again then."""
        return len(self._pending) + len(self._changed)

    def reset(self, task_id: str | None, palette: Palette) -> None:
        """Forget everything: the feed now holds ``task_id``'s events (none yet)."""
        self.task_id = task_id
        self.state = RenderState(palette=palette, fold_stderr=True)
        self.events_seen = 0
        self.last_seq = 0
        self._pending.clear()
        self._pending_shown = 0
        self._recent.clear()
        self._first_entry_seq = None
        self._live.clear()
        self._changed.clear()

    # -- the live stream --------------------------------------------------------------------

    def add(self, event: Event) -> None:
        """Annotate and buffer one event delivered by the stream (in stream order).

        An event that changes a live item or an approval card (a delta, the ``item.completed``
        that replaces what deltas built, an answer) shows nothing of its own while that
        item's entry is still held (buffered, or in the window): the entry is rendered again
        at the next hand-over. Once that entry is gone, a completed item or an answer shows
        as an entry of its own, so it is shown exactly once either way.
        """
        self.events_seen += 1
        self.last_seq = event.seq
        typed = event.codex  # read once for the annotation and the entry
        note = annotate_read(event, typed, self.state)
        for ended in self.state.just_ended:
            # A command its turn or task ended without: its entry says so from now on.
            shown = self._held(ended)
            if shown is not None:
                self._changed[id(shown)] = shown
        pending = self._pending
        touched = note.touched
        if touched is not None:
            held = self._held(touched)
            if held is not None:
                # Not buffered itself: a burst of deltas would push its own item's entry out.
                self._changed[id(held)] = held
                return
            if isinstance(touched, LiveItem) and touched.kind == "stderr":
                note = start_stderr_run(event, self.state)  # its run's entry is gone
            elif isinstance(touched, LiveItem) and touched.final is None:
                pending.append(event.seq)  # a delta of an item no longer shown
                return
        entry = self.transcript.make_entry(event, note, typed)
        if entry is not None and note.live is not None:
            self._remember_live(note.live, entry)
        if entry is None:
            pending.append(event.seq)
        else:
            if self._first_entry_seq is None:
                self._first_entry_seq = event.seq
            pending.append(entry)
            self._pending_shown += 1
        limit = self.max_entries
        while self._pending_shown > limit or len(pending) > 4 * limit:
            if isinstance(pending.popleft(), Entry):
                self._pending_shown -= 1

    def _remember_live(self, live: Live, entry: Entry) -> None:
        table = self._live
        if len(table) >= MAX_LIVE_ITEMS:
            table.pop(next(iter(table)))
        table[id(live)] = weakref.ref(entry)

    def _held(self, live: Live) -> Entry | None:
        """The entry that shows ``live`` while the feed or the window still holds it."""
        ref = self._live.get(id(live))
        entry = None if ref is None else ref()
        if entry is not None and entry.note.live is live:
            # The buffers hold events in seq order and only ever lose their oldest, so an
            # entry is still in one when its seq is not older than the buffer's first (no
            # scan: a burst of deltas asks this for each of them).
            for buffer in (self._pending, self._recent):
                if buffer and _seq(buffer[0]) <= entry.seq <= _seq(buffer[-1]):
                    return entry
        shown = self.transcript.entry_at(live.seq)
        if shown is not None and shown is entry:
            return entry
        if (
            shown is not None
            and isinstance(live, LiveItem)
            and isinstance(shown.note.live, LiveItem)
            and shown.note.live.item_id == live.item_id
        ):
            # A page fetched since shows the same item (a command that started there): that
            # entry follows the stream's item from now on.
            shown.note = Annotation(live=live)
            shown.forget_render()
            self._live[id(live)] = weakref.ref(shown)
            return shown
        return None

    def running_entries(self) -> list[Entry]:
        """The entries of commands still running (their timers tick)."""
        entries = (ref() for ref in self._live.values())
        return [
            entry
            for entry in entries
            if entry is not None
            and isinstance(live := entry.note.live, LiveItem)
            and live.kind == "command"
            and live.is_running
        ]

    def hand_over(self) -> None:
        """Give the transcript every buffered event in one batch.

        Appended while the window ends at the newest event and the user follows it (or the
        window has room for the batch); otherwise the user reads older events: their place
        is kept, the new ones are counted as unseen and kept to join them up when the window
        reaches the end again.
        """
        transcript = self.transcript
        batch = list(self._pending)
        self._pending.clear()
        self._pending_shown = 0
        if self._changed:
            transcript.refresh_entries(self._changed.values())
            self._changed.clear()
        entries = [item for item in batch if isinstance(item, Entry)]
        if not transcript.at_end or (not transcript.following and transcript.room < len(entries)):
            if transcript.at_end:
                transcript.mark_end(False)
            self._recent.extend(batch)
            transcript.count_unseen(len(entries))
        else:
            if not transcript.entries and entries and entries[0].seq == self._first_entry_seq:
                transcript.at_start = True  # nothing shown was dropped before the first entry
            transcript.append(entries)

    def rejoin(self) -> None:
        """The window reached the newest stored events: join the live ones kept meanwhile.

        If a gap remains between the window and the live events (more arrived than were
        kept), the window stays detached and the next page closes it.
        """
        transcript = self.transcript
        last = transcript.last_seq or 0
        recent = [item for item in self._recent if _seq(item) > last]
        if recent and _seq(recent[0]) > last + 1 and last < self.last_seq:
            transcript.newer_failed()  # ask again from the new end
            return
        self._recent.clear()
        transcript.mark_end(True)
        transcript.append([item for item in recent if isinstance(item, Entry)])
        if transcript.scroll_y >= transcript.max_scroll_y:
            transcript.action_follow_tail()

    # -- pages from the server --------------------------------------------------------------

    def page_entries(self, events: Sequence[Event]) -> list[Entry]:
        """Entries for a page fetched out of stream order (annotated on their own).

        A page shows no deltas (the item they build may complete in another page, which
        shows it whole); an item that starts and completes in the page shows once, as it
        completed, where it started; an answered approval in the page is shown on its card.
        """
        state = RenderState(palette=self.state.palette, fold_stderr=True)
        entries = []
        made: dict[int, Entry] = {}
        for event in events:
            typed = event.codex  # read once for the annotation and the entry
            note = annotate_read(event, typed, state)
            if note.touched is not None and (
                id(note.touched) in made
                or (isinstance(note.touched, LiveItem) and note.touched.final is None)
            ):
                continue
            if isinstance(typed, codex.ItemDelta):
                continue
            entry = self.transcript.make_entry(event, note, typed)
            if entry is not None:
                if note.live is not None:
                    made[id(note.live)] = entry
                entries.append(entry)
        return entries

    def join_completions(self, page: list[Entry]) -> list[Entry]:
        """A newer page about to follow the window, without the completions of commands whose
        started entry the window holds: that entry shows the completion, updated in place (as
        the live stream does), so a command split by a page boundary is one entry."""
        started = {
            live.item_id: entry
            for entry in self.transcript.entries
            if isinstance(live := entry.note.live, LiveItem) and live.kind == "command"
        }
        if not started:
            return page
        kept: list[Entry] = []
        changed: list[Entry] = []
        for entry in page:
            item_id = _completed_command_id(entry)
            held = started.pop(item_id, None) if item_id is not None else None
            live = held.note.live if held is not None else None
            if held is None or not isinstance(live, LiveItem):
                kept.append(entry)
                continue
            if live.final is None:  # else the stream completed it already
                seconds = max((entry.event.ts - live.started).total_seconds(), 0.0)
                live.finish(entry.event, Annotation(duration_s=seconds))
                changed.append(held)
        if changed:
            self.transcript.refresh_entries(changed)
        return kept

    def join_starts(self, page: list[Entry]) -> list[Entry]:
        """An older page about to go in front of the window, its commands joined to what the
        window and the stream know of them, so that a command split by a page boundary is
        one entry: a started command whose completion the window shows is left out (that
        entry stays its one entry, and learns the duration); one whose completion is in no
        entry (an entry that showed it has left the window) shows the stream's item, which
        has it (or gets it: the entry then changes as the stream's does)."""
        started = {
            live.item_id: entry
            for entry in page
            if isinstance(live := entry.note.live, LiveItem)
            and live.kind == "command"
            and live.is_running
        }
        if not started:
            return page
        joined: list[Entry] = []
        dropped: set[int] = set()
        for entry in self.transcript.entries:
            item_id = _completed_command_id(entry)
            held = started.pop(item_id, None) if item_id is not None else None
            live = held.note.live if held is not None else None
            if held is None or not isinstance(live, LiveItem):
                continue
            if entry.note.duration_s is None:
                seconds = max((entry.event.ts - live.started).total_seconds(), 0.0)
                entry.note = Annotation(duration_s=seconds)
                joined.append(entry)
            dropped.add(id(held))
        if joined:
            self.transcript.refresh_entries(joined)
        for item_id, entry in started.items():
            streamed = self.state.live.get(item_id)
            if streamed is not None and streamed.kind == "command":
                entry.note = Annotation(live=streamed)
                entry.forget_render()
                self._remember_live(streamed, entry)
        return [entry for entry in page if id(entry) not in dropped]

    async def _fetch_older(self, task_id: str, before: int) -> tuple[list[Entry], bool]:
        """Older entries before ``before`` (skipping pages that show nothing) and whether the
        task's first event was reached."""
        while True:
            events = await self.client.get_events(task_id, before=before, limit=self.page)
            at_start = len(events) < self.page
            entries = self.page_entries(events)
            if entries or at_start:
                return entries, at_start
            before = events[0].seq

    async def load_older(self, task_id: str, before: int) -> bool:
        """Put the entries before seq ``before`` in front of the window; True when they were
        (the window still starts at ``before`` and the feed still holds ``task_id``).

        Raises:
            ApiError, httpx.HTTPError: The page could not be fetched (the transcript will
                ask again on its next scroll).
        """
        transcript = self.transcript
        try:
            entries, at_start = await self._fetch_older(task_id, before)
        except failures.ACTION_ERRORS:
            transcript.older_failed()
            raise
        if task_id != self.task_id or transcript.first_seq != before:
            return False
        transcript.prepend(self.join_starts(entries), at_start=at_start)
        return True

    async def load_newer(self, task_id: str, after: int) -> bool:
        """Add the entries after seq ``after`` to the end of a detached window, joining the
        live events when the page reaches the newest; True when they were added.

        Raises:
            ApiError, httpx.HTTPError: The page could not be fetched (the transcript will
                ask again on its next scroll).
        """
        transcript = self.transcript
        try:
            events = await self.client.get_events(task_id, after=after, limit=self.page)
        except failures.ACTION_ERRORS:
            transcript.newer_failed()
            raise
        if task_id != self.task_id or transcript.last_seq != after:
            return False
        transcript.append(self.join_completions(self.page_entries(events)))
        if len(events) < self.page:
            self.rejoin()
        return True

    async def load_tail(self, task_id: str) -> bool:
        """Fill the window with the newest page, join the live events and follow them; True
        when done (the feed still holds ``task_id``).

        Raises:
            ApiError, httpx.HTTPError: The page could not be fetched.
        """
        events = await self.client.get_events(task_id, before=self.last_seq + 1, limit=self.page)
        if task_id != self.task_id:
            return False
        transcript = self.transcript
        transcript.reset()
        transcript.mark_end(False)
        transcript.at_start = len(events) < self.page
        transcript.append(self.page_entries(events))
        self.rejoin()
        transcript.action_follow_tail()
        return True

    async def search(
        self, task_id: str, query: str, *, backwards: bool, wanted: Callable[[], bool]
    ) -> bool:
        """Page through the stored events beyond the window until one matches ``query``; only
        then move the window to that page (detached from the live tail) and put the cursor on
        the match. Without a match the window and the cursor stay where they were.

        Stops early when the feed no longer holds ``task_id`` or ``wanted()`` turns false
        (the user changed the search).

        Returns:
            True when a match was found and shown.

        Raises:
            ApiError, httpx.HTTPError: A page could not be fetched.
        """
        transcript = self.transcript
        needle = query.lower()
        page = self.page
        if backwards:
            before = transcript.first_seq or (self.last_seq + 1)
        else:
            after = transcript.last_seq or 0
        while task_id == self.task_id and wanted():
            if backwards:
                events = await self.client.get_events(task_id, before=before, limit=page)
            else:
                events = await self.client.get_events(task_id, after=after, limit=page)
            if any(needle in event_text(e) for e in events):
                entries = self.page_entries(events)
                hits = [i for i, e in enumerate(entries) if needle in e.text]
                if hits and task_id == self.task_id:
                    transcript.reset()
                    transcript.mark_end(False)
                    transcript.at_start = backwards and len(events) < page
                    transcript.append(entries)
                    transcript.reveal_match(hits[-1] if backwards else hits[0], query)
                    return True
            if len(events) < page:
                return False
            if backwards:
                before = events[0].seq
            else:
                after = events[-1].seq
        return False
