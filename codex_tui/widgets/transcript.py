"""Provides Transcript: a bounded window of one task's events, drawn with Textual's line API.

The transcript never holds a widget per event or a line per event of the whole task. It keeps
at most ``max_entries`` :class:`Entry` objects (a contiguous range of the task's seqs) and
renders an entry to lines only when it scrolls into view (whether an event shows anything at
all is decided without rendering it); rendered lines are cached for a bounded number of
entries (:data:`STRIP_CACHE_ENTRIES`), and finished view lines for a bounded number of lines
(:data:`LINE_CACHE_LINES`). Entries not rendered at the current width carry an estimated
height; when one is rendered above the top of the view, the scroll position moves by the
difference so that what the user reads does not jump.

The owner (:class:`~codex_tui.widgets.event_view.EventView`) feeds it and pages the server:
it appends live events at the tail, prepends older pages when the user nears the top
(:class:`Transcript.OlderWanted`) and newer pages when a detached window nears the bottom
(:class:`Transcript.NewerWanted`).
"""

from __future__ import annotations

import io
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate, count
from math import ceil
from operator import attrgetter
from typing import TYPE_CHECKING, ClassVar, Self

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollBar
from textual.strip import Strip
from textual.widget import Widget

from codex_tui.events.palette import Palette
from codex_tui.events.pane import event_text, render_annotated, render_raw
from codex_tui.events.view import CONVERSATION_KEYS, Annotation, LiveItem, is_foldable, shows
from codex_tui.textual_internals import update_scrollbars, vertical_scrollbar
from server_client import codex
from server_client.clock import utcnow

if TYPE_CHECKING:
    from server_client.models import Event

__all__ = ["STRIP_CACHE_ENTRIES", "Entry", "SteadyScrollBar", "Transcript"]

#: How many entries keep their rendered lines; others are rendered again when shown.
STRIP_CACHE_ENTRIES = 400
#: Cells left of every entry: the cursor bar and a space.
GUTTER = 2
#: Lines of a folded command's output.
FOLDED_OUTPUT_LINES = 6
#: How many finished view lines (gutter, highlights and style applied) are kept, so that a
#: following pane that scrolls by a few lines builds only the lines that are new.
LINE_CACHE_LINES = 512

_render_ids = count(1)
_seq_of = attrgetter("seq")
#: Entries refreshed at once past which their positions are looked up in one pass over the
#: window instead of one binary search each.
_LOOKUPS_BEFORE_INDEX = 32


@dataclass(eq=False, slots=True, weakref_slot=True)
class Entry:
    """One visible event of the transcript and how it is shown.

    Attributes:
        event: The stored event.
        note: Its :class:`~codex_tui.events.view.Annotation`, fixed when it arrived.
        expanded: Show folded parts (long command output, whole reasoning).
        raw: Show the event's JSON instead.
        height: Lines at ``width`` (an estimate while ``strips`` is None).
        width: The width ``height`` was measured at (0: never rendered).
        strips: Rendered lines at ``width`` (None: not cached).
        render_id: Tells this rendering of ``strips`` from any other (0: none yet); keys the
            transcript's cache of finished lines.
    """

    event: Event
    note: Annotation
    expanded: bool = False
    raw: bool = False
    height: int = 1
    width: int = 0
    strips: list[Strip] | None = None
    render_id: int = 0
    _text: str | None = field(default=None, repr=False)
    #: The event's seq, copied once: the transcript's searches and checks read it per entry.
    seq: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.seq = self.event.seq

    def forget_render(self) -> None:
        """What it shows changed: render it again when next shown."""
        self.strips = None
        self._text = None

    @property
    def shown_event(self) -> Event:
        """The event the entry shows: its own, or the ``item.completed`` that replaced the
        live item it started."""
        live = self.note.live
        if isinstance(live, LiveItem) and live.final is not None:
            return live.final[0]
        return self.event

    @property
    def text(self) -> str:
        """The lower-cased text search matches against."""
        live = self.note.live
        if isinstance(live, LiveItem) and live.final is None:
            # Still changing: not cached.
            return f"{live.command}\n{live.text}".lower() if live.command else live.text.lower()
        if self._text is None:
            self._text = event_text(self.shown_event)
        return self._text


def estimate_height(typed: codex.CodexEvent | None, width: int) -> int:
    """A cheap guess of the height of an entry whose event reads as ``typed``
    (``Event.codex``), used until it is rendered (lines ≥ 1)."""
    if isinstance(typed, codex.ItemDelta):
        return 2
    if not isinstance(typed, codex.ItemEvent):
        return 1
    match typed.item:
        case codex.CommandExecution(output=output):
            lines = output.count("\n") + 1 if output else 0
            return 1 + min(lines, FOLDED_OUTPUT_LINES + 1)
        case codex.AgentMessage(text=text):
            return 2 + len(text) // max(width - GUTTER, 20)
        case codex.TodoList(items=entries):
            return 1 + len(entries)
        case codex.FileChange(changes=changes):
            return 1 + len(changes)
    return 1


class SteadyScrollBar(ScrollBar):
    """A vertical scrollbar that repaints only when what it draws changes.

    Textual repaints a scrollbar whenever its scroll range or position changes; a pane that
    follows a long stream changes both on every batch of events while the thumb stays put
    (one cell at the bottom), and each repaint sends the whole column to the terminal again
    (some 40 bytes a row). A repaint is skipped when the thumb's cells (to Textual's 1/8
    cell), the colours, the hover and grab state and the size are what was last drawn.
    """

    _drawn: tuple[object, ...] | None = None
    _check_pending = False

    def _look(self) -> tuple[object, ...]:
        """What the bar draws: size, thumb start and end (1/8 cells), state and colours."""
        height = self.size.height
        virtual = ceil(self.window_virtual_size)
        window = ceil(self.window_size) if self.window_size < self.window_virtual_size else 0
        thumb: tuple[int, int] | None = None
        if window and height and virtual and height != virtual and virtual > window:
            size = max(1.0, window / (virtual / height))
            start = int((height - size) * (self.position / (virtual - window)) * 8)
            thumb = (start, start + ceil(size * 8))
        parent = self.parent
        styles = parent.styles if isinstance(parent, Widget) else None
        colours = (
            ()
            if styles is None
            else (
                styles.scrollbar_color,
                styles.scrollbar_background,
                styles.scrollbar_color_hover,
                styles.scrollbar_background_hover,
                styles.scrollbar_color_active,
                styles.scrollbar_background_active,
                parent.background_colors if isinstance(parent, Widget) else None,
            )
        )
        return (self.size, thumb, self.mouse_over, self.grabbed, colours)

    def render(self) -> RenderableType:
        """Draw the bar, remembering what was drawn."""
        self._drawn = self._look()
        return super().render()

    def refresh(
        self,
        *regions: Region,
        repaint: bool = True,
        layout: bool = False,
        recompose: bool = False,
    ) -> Self:
        """Repaint; a plain repaint of a bar drawn before is decided once the handler that
        asked for it is done (it sets the range, the window and the position one by one), and
        skipped when the bar would draw what is on screen already."""
        if not regions and repaint and not layout and not recompose and self._drawn is not None:
            if not self._check_pending:
                self._check_pending = True
                self.call_next(self._repaint_if_changed)
            return self
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def _repaint_if_changed(self) -> None:
        self._check_pending = False
        if self._drawn != self._look():
            super().refresh()


class Transcript(ScrollView, can_focus=True):
    """A scrollable, bounded window of events with an entry cursor, folding, raw JSON and
    search highlights.

    Keys: ``up``/``k`` and ``down``/``j`` move the entry cursor, ``enter`` folds or unfolds
    the entry under it, ``v`` shows its raw JSON, ``C`` copies it (a command with its output,
    a message's text), ``end``/``G`` jumps to the newest event and follows again,
    ``home``/``g`` goes to the top (which pages older events in).

    Args:
        max_entries: The most entries held; the owner keeps the window within it.
        palette: Styles for rendering.
        clock: The current UTC time, for a running command's timer.
    """

    DEFAULT_CSS = """
    Transcript {
        background: $surface;
        overflow-x: hidden;
        overflow-y: scroll;
        scrollbar-size-vertical: 1;
    }
    Transcript:focus {
        background-tint: $foreground 0%;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Previous entry", show=False, id="entry-up"),
        Binding("down,j", "cursor_down", "Next entry", show=False, id="entry-down"),
        Binding("enter", "toggle_fold", "Fold/unfold", id="toggle-fold"),
        Binding("v", "toggle_raw", "Raw JSON", id="toggle-raw"),
        Binding("pageup", "page_up", "Page up", show=False, id="page-up"),
        Binding("pagedown,space", "page_down", "Page down", show=False, id="page-down"),
        Binding("home,g", "scroll_top", "Top", show=False, id="scroll-top"),
        Binding("end,G", "follow_tail", "Follow", id="follow-tail"),
        Binding("C", "copy_entry", "Copy the entry", show=False, id="copy-entry"),
    ]

    palette: var[Palette] = var(Palette, init=False)
    """Styles for rendering; a new palette renders everything again (the owner binds it)."""
    search_query: var[str] = var("", init=False)
    """The search highlighted in the lines shown ('' for none; the owner binds it)."""

    @dataclass
    class ViewChanged(Message):
        """Following, the unseen count or the cursor changed."""

        transcript: Transcript

        def can_replace(self, message: Message) -> bool:
            """Only the newest view state matters."""
            return (
                isinstance(message, Transcript.ViewChanged)
                and message.transcript is self.transcript
            )

    @dataclass
    class OlderWanted(Message):
        """The view reached the top of the window and older events exist."""

        transcript: Transcript
        before: int

    @dataclass
    class NewerWanted(Message):
        """The view reached the bottom of a window that does not hold the newest events."""

        transcript: Transcript
        after: int

    @dataclass
    class TailWanted(Message):
        """The user asked for the newest events while the window does not hold them."""

        transcript: Transcript

    def __init__(
        self,
        *,
        max_entries: int = 2000,
        palette: Palette | None = None,
        clock: Callable[[], datetime] | None = None,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's naming
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.max_entries = max_entries
        self.clock: Callable[[], datetime] = clock or utcnow
        self.keys: dict[str, str] = dict(CONVERSATION_KEYS)
        """The conversation keys by binding id, named on approval cards (the owner sets
        them after the keymap)."""
        if palette is not None:
            self.set_reactive(Transcript.palette, palette)
        self.entries: list[Entry] = []
        self._offsets: list[int] = [0]
        self._offsets_dirty = False
        self._cached: OrderedDict[int, Entry] = OrderedDict()
        self.cursor: int | None = None
        """Index of the entry under the cursor (None: no cursor)."""
        self.following = True
        """True while new events scroll the view to the end."""
        self.unseen = 0
        """Events that arrived below the view since the user scrolled away from the end."""
        self.at_start = False
        """True when the window begins at the task's first event."""
        self.at_end = True
        """True when the window ends at the newest event the owner knows of."""
        self.placeholder: str | None = None
        """A dim line shown while there are no entries."""
        self.query_text = ""
        """The active search (:attr:`search_query`) lower-cased ('' when none)."""
        self._asked_older = False
        self._asked_newer = False
        self._lines: LRUCache[tuple[object, ...], Strip] = LRUCache(LINE_CACHE_LINES)
        """Finished view lines by (entry render id, row, width, cursor, query, style)."""
        self._width_for: Size | None = None
        self._width = 0
        self._line_style: Style | None = None

    @property
    def vertical_scrollbar(self) -> ScrollBar:
        """The vertical scrollbar: a :class:`SteadyScrollBar` (created when first asked for)."""
        return vertical_scrollbar(self, SteadyScrollBar)

    # -- window -----------------------------------------------------------------------------

    @property
    def first_seq(self) -> int | None:
        """The seq of the oldest entry held."""
        return self.entries[0].seq if self.entries else None

    @property
    def last_seq(self) -> int | None:
        """The seq of the newest entry held."""
        return self.entries[-1].seq if self.entries else None

    def reset(self, placeholder: str | None = None) -> None:
        """Drop every entry and state (a new task)."""
        self.entries.clear()
        self._cached.clear()
        self._lines.clear()
        self._offsets = [0]
        self._offsets_dirty = False
        self.cursor = None
        self.following = True
        self.unseen = 0
        self.at_start = False
        self.at_end = True
        self.placeholder = placeholder
        self._asked_older = self._asked_newer = False
        self._resize()
        self.scroll_to(0, 0, animate=False, immediate=True)
        self.following = True
        self.refresh()
        self._changed()

    def make_entries(self, items: Iterable[tuple[Event, Annotation]]) -> list[Entry]:
        """Entries for events that show something (others, e.g. ``item.updated`` of an
        agent message, are left out). Nothing is rendered here: :func:`~codex_tui.events.view.shows`
        decides from the event's fields, and each entry carries an estimated height until it scrolls
        into view."""
        entries = (self.make_entry(event, note, event.codex) for event, note in items)
        return [entry for entry in entries if entry is not None]

    def make_entry(
        self, event: Event, note: Annotation, typed: codex.CodexEvent | None
    ) -> Entry | None:
        """The entry for one event, or None when it shows nothing (see :meth:`make_entries`).
        ``typed`` is the event read (``Event.codex``, which the caller has read for its
        annotation already); the entry keeps the event, not what was read (the typed copy
        would double its memory). An event that starts a live item or asks for an approval
        (``note.live``) always gets an entry: it shows that item as it changes."""
        if note.live is None and not shows(typed):
            return None
        return Entry(event, note, height=estimate_height(typed, self._content_width))

    def append(self, entries: Sequence[Entry]) -> None:
        """Add entries (in seq order, as the window keeps them) after the newest; drops the
        oldest beyond ``max_entries``.

        Callers append only while the user follows or the window is not full (see
        :attr:`room`), so trimming never removes what the user is reading.
        """
        if not entries:
            return
        last = self.last_seq or 0
        # A batch comes in seq order: most often all of it is new.
        fresh = list(entries) if entries[0].seq > last else [e for e in entries if e.seq > last]
        if not fresh:
            return
        # Entries that land below the view change nothing on screen but the scrollbar.
        old_total = self.total_lines
        shown = self.following or old_total < self.scroll_y + self.size.height
        top = round(self.scroll_y)
        self.entries.extend(fresh)
        self._offsets_dirty = True
        overflow = len(self.entries) - self.max_entries
        if overflow > 0:
            self._drop_head(overflow)
        if not self.following:
            self.unseen += len(fresh)
        self._resize()
        if self.following:
            self._scroll_to_end()
        if shown:
            if overflow > 0 and round(self.scroll_y) == top:
                self._refresh_rows(top, None)  # what is in view moved up without a scroll
            elif round(self.scroll_y) != top:
                pass  # the scroll repaints the view (watch_scroll_y)
            else:
                # The view did not move: only the lines from the old end down are new.
                self._refresh_rows(min(old_total, self.offsets[-1 - len(fresh)]), None)
        self._asked_newer = False
        self._changed()

    def prepend(self, entries: Sequence[Entry], *, at_start: bool) -> None:
        """Add older entries before the oldest, keeping the view where it was; drops the
        newest beyond ``max_entries`` (the window then no longer reaches the end)."""
        first = self.first_seq
        fresh = [e for e in entries if first is None or e.seq < first]
        self.at_start = at_start
        self._asked_older = False
        if not fresh:
            return
        added = sum(e.height for e in fresh)
        self.entries[0:0] = fresh
        self._cached = OrderedDict((id(e), e) for e in self._cached.values())
        if self.cursor is not None:
            self.cursor += len(fresh)
        self._offsets_dirty = True
        overflow = len(self.entries) - self.max_entries
        if overflow > 0:
            self._drop_tail(overflow)
        self.following = False
        self._resize()
        self.scroll_to(y=self.scroll_y + added, animate=False, immediate=True)
        self.refresh()
        self._changed()

    @property
    def room(self) -> int:
        """How many entries fit before the window is full."""
        return self.max_entries - len(self.entries)

    def entry_at(self, seq: int) -> Entry | None:
        """The entry of the event ``seq`` in the window (None: not held)."""
        index = bisect_left(self.entries, seq, key=_seq_of)
        if index < len(self.entries) and self.entries[index].seq == seq:
            return self.entries[index]
        return None

    def index_of(self, entry: Entry) -> int | None:
        """The index of ``entry`` in the window (None: not held)."""
        index = bisect_left(self.entries, entry.seq, key=_seq_of)
        if index < len(self.entries) and self.entries[index] is entry:
            return index
        return None

    def refresh_entries(self, entries: Iterable[Entry]) -> None:
        """Render ``entries`` again (live items that changed); those not in the window are
        left alone. The view keeps what the user reads in place, or follows the end."""
        top = round(self.scroll_y)
        bottom = top + self.size.height
        width = self._content_width
        # Rows that changed in view: (first line, strips before, strips now) per entry.
        changed_rows: list[tuple[int, list[Strip] | None, list[Strip]]] = []
        moved_from: int | None = None  # the first line below which everything moved
        changed = False
        entries = list(entries)
        where: Callable[[Entry], int | None] = self.index_of
        if len(entries) > _LOOKUPS_BEFORE_INDEX:
            # Many at once (a burst's live items): one pass over the window, not a search each.
            positions = {id(e): i for i, e in enumerate(self.entries)}
            where = lambda e: positions.get(id(e))  # noqa: E731
        for entry in entries:
            index = where(entry)
            if index is None:
                continue
            changed = True
            before = entry.strips if entry.width == width else None
            height = entry.height
            entry.forget_render()
            self._cached.pop(id(entry), None)
            start = self.offsets[index]
            if start >= bottom or start + height <= top:
                continue  # out of view: rendered when it is shown
            now = self._render_entry(entry)
            if len(now) != height:
                self._offsets_dirty = True
                moved_from = start if moved_from is None else min(moved_from, start)
            else:
                changed_rows.append((start, before, now))
        if not changed:
            return
        self._offsets_dirty = True
        self._resize()
        if self.following:
            self._scroll_to_end()
        if round(self.scroll_y) != top:
            return  # scrolled: the whole view is repainted
        if moved_from is not None:
            self._refresh_rows(moved_from, None)
        for start, before, now in changed_rows:
            for row, strip in enumerate(now):
                if before is None or row >= len(before) or before[row] != strip:
                    self._refresh_rows(start + row, start + row + 1)

    def _refresh_rows(self, first: int, end: int | None) -> None:
        """Repaint transcript lines ``first`` up to ``end`` (None: the bottom of the view)
        where they are in view; nothing else of the pane is sent to the terminal again."""
        top = round(self.scroll_y)
        bottom = top + self.size.height
        first = max(first, top)
        end = bottom if end is None else min(end, bottom)
        if end > first:
            # The lines only: the scrollbar column repaints itself when its thumb moves.
            width = self._view_width or self.size.width
            self.refresh(Region(0, first - top, width, end - first))

    def _drop_head(self, count: int) -> None:
        removed = self.entries[:count]
        del self.entries[:count]
        height = sum(e.height for e in removed)
        for entry in removed:
            self._cached.pop(id(entry), None)
        self.at_start = False
        if self.cursor is not None:
            self.cursor = self.cursor - count if self.cursor >= count else None
        self._offsets_dirty = True
        if not self.following:
            self.scroll_to(y=max(self.scroll_y - height, 0), animate=False, immediate=True)

    def _drop_tail(self, count: int) -> None:
        removed = self.entries[-count:]
        del self.entries[-count:]
        for entry in removed:
            self._cached.pop(id(entry), None)
        self.at_end = False
        if self.cursor is not None and self.cursor >= len(self.entries):
            self.cursor = None
        self._offsets_dirty = True

    # -- geometry ---------------------------------------------------------------------------

    @property
    def _view_width(self) -> int:
        """Cells of a view line (the widget less the scrollbar; 0 before the first layout);
        looked up once per size of the widget, since the lookup walks the screen's layout."""
        size = self.outer_size
        if size != self._width_for:
            width = self.scrollable_content_region.width
            if not width:
                return 0
            self._width_for = size
            self._width = width
        return self._width

    @property
    def _content_width(self) -> int:
        """Cells an entry is rendered in: a view line less the gutter (at least 10)."""
        width = self._view_width or self.size.width or 80
        return max(width - GUTTER, 10)

    @property
    def offsets(self) -> list[int]:
        """The first line of each entry; the last element is the total height."""
        if self._offsets_dirty:
            self._offsets = [0, *accumulate(e.height for e in self.entries)]
            self._offsets_dirty = False
        return self._offsets

    @property
    def total_lines(self) -> int:
        """The height of all entries held, in lines (some may be estimates)."""
        return self.offsets[-1]

    def _resize(self) -> None:
        height = self.total_lines or (1 if self.placeholder else 0)
        size = Size(self._view_width, height)
        if size == self.virtual_size:
            return
        if not size.width:
            self.virtual_size = size
            return
        # Only the scroll range changes, not the pane's size (it fills its share of the grid),
        # so update the scrollbar as Textual does after a layout, without asking for a layout
        # of the whole screen on every batch of events.
        self.set_reactive(Transcript.virtual_size, size)
        update_scrollbars(self, size)

    def _scroll_to_end(self) -> None:
        self._render_tail()
        self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def _entry_at(self, line: int) -> int:
        """The index of the entry that holds ``line`` (clamped)."""
        return max(min(bisect_right(self.offsets, line) - 1, len(self.entries) - 1), 0)

    # -- rendering --------------------------------------------------------------------------

    def _renderables(
        self, event: Event, note: Annotation, *, expanded: bool, raw: bool
    ) -> list[RenderableType]:
        if raw:
            return render_raw(event, self.palette)
        live = note.live
        running = isinstance(live, LiveItem) and live.is_running and live.kind == "command"
        return render_annotated(
            event,
            note,
            self.palette,
            expanded=expanded,
            max_output_lines=FOLDED_OUTPUT_LINES,
            now=self.clock() if running else None,
            keys=self.keys,
        )

    def entry_renderables(self, entry: Entry) -> list[RenderableType]:
        """What ``entry`` shows now (raw, folded or expanded), as Rich renderables."""
        event = entry.shown_event if entry.raw else entry.event
        return self._renderables(event, entry.note, expanded=entry.expanded, raw=entry.raw)

    def _render_entry(self, entry: Entry) -> list[Strip]:
        """Render one entry at the current width (cached for a bounded number of entries)."""
        width = self._content_width
        if entry.strips is not None and entry.width == width:
            self._cached.move_to_end(id(entry))
            return entry.strips
        console = self.app.console
        options = console.options.update_width(width)
        strips: list[Strip] = []
        for renderable in self.entry_renderables(entry):
            lines = Segment.split_and_crop_lines(
                console.render(renderable, options), width, pad=False, include_new_lines=False
            )
            strips.extend(Strip(line) for line in lines)
        if not strips:
            strips = [Strip.blank(0)]
        if entry.height != len(strips):
            entry.height = len(strips)
            self._offsets_dirty = True
        entry.width = width
        entry.strips = strips
        entry.render_id = next(_render_ids)
        self._cached[id(entry)] = entry
        while len(self._cached) > STRIP_CACHE_ENTRIES:
            _, old = self._cached.popitem(last=False)
            old.strips = None
        return strips

    def _ensure_rendered(self, top: int, bottom: int) -> None:
        """Render every entry that overlaps lines ``top..bottom``; entries above the view
        that change height move the view by the difference."""
        if not self.entries:
            return
        for _ in range(4):  # heights settle after a few passes at most
            offsets = self.offsets
            first = self._entry_at(top)
            last = self._entry_at(bottom)
            shift = 0
            changed = False
            for index in range(first, last + 1):
                entry = self.entries[index]
                if entry.strips is not None and entry.width == self._content_width:
                    continue
                before = entry.height
                self._render_entry(entry)
                if entry.height != before:
                    changed = True
                    if offsets[index] < top:
                        shift += entry.height - before
            if not changed:
                return
            self._resize()
            if self.following:
                self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
            elif shift:
                self.scroll_to(y=self.scroll_y + shift, animate=False, immediate=True)
            top = round(self.scroll_y)
            bottom = top + self.size.height

    def _render_tail(self) -> None:
        """Render the newest entries that fill the view, so the end is exact."""
        needed = self.size.height or 24
        lines = 0
        for entry in reversed(self.entries):
            lines += len(self._render_entry(entry))
            if lines >= needed:
                break
        self._resize()

    def render_lines(self, crop: Region) -> list[Strip]:
        """Render the entries in view first, then let Textual draw the lines."""
        top = round(self.scroll_y)
        self._ensure_rendered(top, top + self.size.height)
        self._check_edges()
        self._line_style = self.rich_style  # one look-up per pass, not one per line
        try:
            return super().render_lines(crop)
        finally:
            self._line_style = None

    def render_line(self, y: int) -> Strip:
        """One line of the view: the gutter (cursor bar), the entry's line, highlights.

        Finished lines are cached (:data:`LINE_CACHE_LINES`), so a view that scrolls by a few
        lines builds only the new ones.
        """
        width = self._view_width
        line = round(self.scroll_y) + y
        style = self._line_style or self.rich_style
        if not self.entries:
            if y == 0 and self.placeholder:
                text = Strip([Segment(self.placeholder[:width], Style(dim=True))])
                return text.extend_cell_length(width, style).apply_style(style)
            return Strip.blank(width, style)
        if line >= self.total_lines:
            return Strip.blank(width, style)
        index = self._entry_at(line)
        entry = self.entries[index]
        strips = self._render_entry(entry)
        row = line - self.offsets[index]
        key = (entry.render_id, row, width, index == self.cursor, self.query_text, style)
        cached = self._lines.get(key)
        if cached is not None:
            return cached
        strip = strips[row] if row < len(strips) else Strip.blank(0)
        if self.query_text:
            strip = _highlight(strip, self.query_text, Style(reverse=True, bold=True))
        if index == self.cursor:
            gutter = Segment("▌ ", Style.parse(self.palette.accent))
        else:
            gutter = Segment("  ")
        strip = Strip([gutter, *strip]).crop_extend(0, width, style).apply_style(style)
        # Every segment costs a full escape sequence on the terminal: after the base style is
        # applied, the gutter, the text and the padding often share one style.
        strip = strip.simplify()
        self._lines[key] = strip
        return strip

    def on_resize(self) -> None:
        """A new width: every entry is measured again when next shown."""
        self._resize()
        if self.following:
            self._scroll_to_end()

    def notify_style_update(self) -> None:
        """Theme changes: render everything again."""
        super().notify_style_update()
        self._width_for = None
        self._forget_renders()

    def watch_palette(self) -> None:
        """A new palette: render everything again."""
        self._forget_renders()

    def _forget_renders(self) -> None:
        for entry in self.entries:
            entry.strips = None
        self._cached.clear()
        self._lines.clear()
        self.refresh()

    # -- scrolling and following --------------------------------------------------------------

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """Repaint the lines in view when they moved (not the scrollbar column: it repaints
        itself when its thumb moves); reaching the bottom of a window that holds the newest
        events follows again."""
        if self.show_vertical_scrollbar:
            self.vertical_scrollbar.position = new_value
        if round(old_value) != round(new_value):
            self._refresh_rows(round(new_value), None)
        at_bottom = new_value >= self.max_scroll_y
        following = at_bottom and self.at_end
        if following != self.following:
            self.following = following
            if following:
                self.unseen = 0
            self._changed()
        self._check_edges()

    def _check_edges(self) -> None:
        if not self.entries or not self.is_mounted:
            return
        near = max(self.size.height, 1)
        if not self.at_start and not self._asked_older and self.scroll_y <= near // 2:
            self._asked_older = True
            self.post_message(self.OlderWanted(self, self.entries[0].seq))
        if (
            not self.at_end
            and not self._asked_newer
            and self.scroll_y >= self.max_scroll_y - near // 2
        ):
            self._asked_newer = True
            self.post_message(self.NewerWanted(self, self.entries[-1].seq))

    def older_failed(self) -> None:
        """The owner could not fetch the older page; ask again on the next scroll."""
        self._asked_older = False

    def newer_failed(self) -> None:
        """The owner could not fetch the newer page; ask again on the next scroll."""
        self._asked_newer = False

    def mark_end(self, at_end: bool) -> None:
        """Whether the window now ends at the newest event known."""
        self.at_end = at_end
        if at_end:
            self._asked_newer = False

    def count_unseen(self, count: int) -> None:
        """Count entries that arrived but are not in the window (it is detached)."""
        if count:
            self.unseen += count
            self._changed()

    def action_follow_tail(self) -> None:
        """Jump to the newest event and follow again (asks the owner for the tail when the
        window does not hold it)."""
        self.cursor = None
        if not self.at_end:
            self.post_message(self.TailWanted(self))
            return
        self.following = True
        self.unseen = 0
        self._scroll_to_end()
        self.refresh()
        self._changed()

    def action_scroll_top(self) -> None:
        """Go to the oldest entry held (older ones page in from there)."""
        self.following = False
        self.scroll_to(y=0, animate=False, immediate=True)
        self._changed()

    def action_page_up(self) -> None:
        """One screen up."""
        self.scroll_to(y=max(self.scroll_y - self.size.height + 1, 0), animate=False)

    def action_page_down(self) -> None:
        """One screen down."""
        self.scroll_to(y=self.scroll_y + self.size.height - 1, animate=False)

    # -- cursor, folding, raw -------------------------------------------------------------------

    def action_cursor_up(self) -> None:
        """Move the cursor to the previous entry (from none: the last entry in view)."""
        if not self.entries:
            return
        if self.cursor is None:
            self.cursor = self._last_visible()
        elif self.cursor > 0:
            self.cursor -= 1
        else:
            self.scroll_to(y=0, animate=False, immediate=True)
        self.show_cursor()

    def action_cursor_down(self) -> None:
        """Move the cursor to the next entry (from none: the first entry in view)."""
        if not self.entries:
            return
        if self.cursor is None:
            self.cursor = self._entry_at(round(self.scroll_y))
        elif self.cursor < len(self.entries) - 1:
            self.cursor += 1
        else:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        self.show_cursor()

    def _last_visible(self) -> int:
        bottom = round(self.scroll_y) + max(self.size.height - 1, 0)
        return self._entry_at(min(bottom, max(self.total_lines - 1, 0)))

    def move_cursor(self, index: int) -> None:
        """Put the cursor on entry ``index`` and scroll it into view."""
        self.cursor = max(min(index, len(self.entries) - 1), 0)
        self.show_cursor()

    def show_cursor(self) -> None:
        """Scroll so the cursor's entry is in view (its top when it is taller than the view)."""
        if self.cursor is None:
            return
        entry = self.entries[self.cursor]
        self._render_entry(entry)
        self._resize()
        top = self.offsets[self.cursor]
        bottom = top + entry.height
        view_top = round(self.scroll_y)
        height = self.size.height or 1
        if top < view_top or entry.height > height:
            self.scroll_to(y=top, animate=False, immediate=True)
        elif bottom > view_top + height:
            self.scroll_to(y=bottom - height, animate=False, immediate=True)
        if self.following and self.scroll_y < self.max_scroll_y:
            self.following = False
        self.refresh()
        self._changed()

    @property
    def cursor_entry(self) -> Entry | None:
        """The entry under the cursor."""
        return self.entries[self.cursor] if self.cursor is not None else None

    def _cursor_or_last(self) -> Entry | None:
        """The entry under the cursor; without a cursor, put it on the last entry in view."""
        if self.cursor_entry is None:
            self.action_cursor_up()
        return self.cursor_entry

    def action_toggle_fold(self) -> None:
        """Fold or unfold the entry under the cursor (long command output, reasoning, a run
        of stderr lines)."""
        entry = self._cursor_or_last()
        if entry is None:
            return
        if not entry.raw and not _foldable(entry):
            self.app.bell()
            return
        if entry.raw:
            entry.raw = False
        else:
            entry.expanded = not entry.expanded
        self._rerender(entry)

    def action_toggle_raw(self) -> None:
        """Show the raw JSON of the entry under the cursor, or its rendering again."""
        entry = self._cursor_or_last()
        if entry is None:
            return
        entry.raw = not entry.raw
        self._rerender(entry)

    def action_copy_entry(self) -> None:
        """Copy the entry under the cursor to the clipboard (OSC 52, so over SSH and in tmux
        with ``set-clipboard on`` too): a command with its whole output, a message's or a
        reasoning item's text, else what the entry shows; a toast says what was copied."""
        entry = self._cursor_or_last()
        if entry is None:
            self.notify("Nothing to copy.", severity="warning")
            return
        what, text = self._copy_text(entry)
        self.app.copy_to_clipboard(text)
        lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        noun = "line" if lines == 1 else "lines"
        self.notify(f"Copied {what} ({lines} {noun}).", title="Copied")

    def _copy_text(self, entry: Entry) -> tuple[str, str]:
        """What copying ``entry`` puts on the clipboard, and how the toast names it."""
        live = entry.note.live
        if isinstance(live, LiveItem) and live.final is None:
            if live.kind == "command":
                return "the command and its output so far", f"$ {live.command}\n{live.text}"
            if live.kind == "stderr":
                return "the stderr lines", live.text
            return "the text so far", live.text
        typed = entry.shown_event.codex
        if isinstance(typed, codex.ItemEvent):
            item = typed.item
            if isinstance(item, codex.CommandExecution):
                output = (
                    item.output
                    if item.output.endswith("\n") or not item.output
                    else item.output + "\n"
                )
                return "the command and its output", f"$ {item.command}\n{output}"
            if isinstance(item, codex.AgentMessage):
                return "codex's message", item.text
            if isinstance(item, codex.Reasoning):
                return "the reasoning", item.text
        console = Console(file=io.StringIO(), width=200, color_system=None, highlight=False)
        for renderable in self.entry_renderables(entry):
            console.print(renderable)
        file = console.file
        assert isinstance(file, io.StringIO)
        return "the entry", file.getvalue()

    def _rerender(self, entry: Entry) -> None:
        entry.strips = None
        self._cached.pop(id(entry), None)
        self._render_entry(entry)
        self._offsets_dirty = True
        self._resize()
        self.show_cursor()

    # -- search -------------------------------------------------------------------------------

    def find(self, query: str, *, backwards: bool) -> int | None:
        """The next entry matching ``query`` from the cursor (or from the view's edge) in one
        direction, or None when the window holds no further match."""
        needle = query.lower()
        if not needle or not self.entries:
            return None
        if self.cursor is not None:
            start = self.cursor
        elif backwards:
            start = self._last_visible() + 1
        else:
            start = self._entry_at(round(self.scroll_y)) - 1
        indexes = range(start - 1, -1, -1) if backwards else range(start + 1, len(self.entries))
        for index in indexes:
            if needle in self.entries[index].text:
                return index
        return None

    def reveal_match(self, index: int, query: str) -> None:
        """Put the cursor on entry ``index`` and scroll its first line holding ``query`` into
        view; a folded entry whose match is folded away (deep in a command's output, a run
        of stderr lines) is unfolded first."""
        self.move_cursor(index)
        entry = self.entries[index]
        needle = query.lower()
        row = _row_of(self._render_entry(entry), needle)
        if row is None and not entry.expanded and _foldable(entry):
            entry.expanded = True
            self._rerender(entry)
            row = _row_of(self._render_entry(entry), needle)
        if row is None:
            return
        line = self.offsets[index] + row
        height = self.size.height or 1
        top = round(self.scroll_y)
        if not top <= line < top + height:
            # The match a third of the way down, with what leads to it above.
            self.scroll_to(y=max(line - height // 3, 0), animate=False, immediate=True)
            self.refresh()

    def watch_search_query(self, query: str) -> None:
        """Highlight ``query`` in the lines shown ('' clears)."""
        self.query_text = query.lower()
        self.refresh()

    def _changed(self) -> None:
        if self.is_attached:
            self.post_message(self.ViewChanged(self))


def _foldable(entry: Entry) -> bool:
    """True when ``entry`` shows differently unfolded: a command's output, reasoning, a run
    of stderr lines."""
    live = entry.note.live
    if isinstance(live, LiveItem) and live.kind == "stderr" and live.final is None:
        return True
    return is_foldable(entry.shown_event)


def _row_of(strips: list[Strip], needle: str) -> int | None:
    """The first of ``strips`` whose text holds ``needle`` (lower-case), or None."""
    for row, strip in enumerate(strips):
        if needle in strip.text.lower():
            return row
    return None


def _highlight(strip: Strip, needle: str, style: Style) -> Strip:
    """``strip`` with every case-insensitive occurrence of ``needle`` restyled."""
    text = strip.text
    lowered = text.lower()
    if needle not in lowered or len(lowered) != len(text):
        return strip
    cuts: list[int] = []
    start = lowered.find(needle)
    while start != -1:
        cuts.extend((cell_len(text[:start]), cell_len(text[: start + len(needle)])))
        start = lowered.find(needle, start + len(needle))
    cuts.append(strip.cell_length)
    parts = strip.divide(cuts)
    return Strip.join(
        part.apply_style(style) if index % 2 == 1 else part for index, part in enumerate(parts)
    )
