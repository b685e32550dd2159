"""Provides PaneGrid: several EventView panes side by side, each following its own task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from math import ceil
from typing import TYPE_CHECKING

from textual import events
from textual.app import ComposeResult
from textual.message import Message
from textual.widget import Widget

from codex_tui.state import PaneLayout
from codex_tui.widgets.event_view import EventView

if TYPE_CHECKING:
    from server_client.client import CodexTuiClient
    from server_client.models import Task

__all__ = ["MIN_PANE_HEIGHT", "MIN_PANE_WIDTH", "PaneGrid", "grid_shape"]

#: Smallest pane worth adding on a large terminal, in cells (width, height).
MIN_PANE_WIDTH = 50
MIN_PANE_HEIGHT = 12
#: Panes allowed on any terminal, however small; more fit on large ones.
BASE_PANES = 4
#: Never more panes than this.
MAX_PANES = 9


def grid_shape(count: int, width: int, height: int) -> tuple[int, int]:
    """Columns and rows for ``count`` panes in a ``width``×``height`` area.

    Two panes sit side by side when each gets at least 40 columns, else stacked; three or
    four make a 2×2 grid; five or six a 3×2 (2×3 when the area is taller than wide in cells
    halved); up to nine a 3×3.
    """
    if count <= 1:
        return 1, 1
    if count == 2:
        return (2, 1) if width >= 80 or width >= height * 2 else (1, 2)
    if count <= 4:
        return 2, 2
    if count <= 6:
        return (3, 2) if width >= height * 2 else (2, 3)
    return 3, ceil(count / 3)


class PaneGrid(Widget):
    """A grid of :class:`EventView` panes: 1 to 4 everywhere, more on large terminals.

    One pane is *active*: the last one that had the keyboard focus. The dashboard shows the
    highlighted task in the active pane (:meth:`show`) and opens more panes with
    :meth:`open`. Each pane keeps its own stream, scroll position and search; none waits for
    another, because each stream runs in its own worker and each flush touches one pane.

    :meth:`toggle_maximize` maximises the active pane and restores it (escape also restores).

    Whenever the panes, their tasks, the active pane or the maximised state change it posts
    :class:`LayoutChanged` with :meth:`pane_layout` (the app remembers it for the next start), and
    :meth:`restore` brings such a layout back.

    Args:
        client: The SDK client the panes stream with.
        max_entries: Each pane's window, in events.
    """

    DEFAULT_CSS = """
    PaneGrid {
        layout: grid;
        grid-size: 1 1;
        grid-gutter: 0;
        width: 1fr;
        height: 1fr;
    }
    """

    @dataclass
    class ActiveChanged(Message):
        """Another pane became active."""

        pane_grid: PaneGrid
        pane: EventView

    @dataclass
    class LayoutChanged(Message):
        """The panes, a pane's task, the active pane or the maximised state changed."""

        pane_grid: PaneGrid
        layout: PaneLayout

    def __init__(
        self,
        client: CodexTuiClient,
        *,
        max_entries: int = 2000,
        now: Callable[[], datetime] | None = None,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's naming
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.client = client
        self.max_entries = max_entries
        self.now = now
        """The current UTC time for the panes' timers (None: the real clock)."""
        self._next_id = 1
        self._active: EventView | None = None

    def compose(self) -> ComposeResult:
        yield self._new_pane()

    def on_mount(self) -> None:
        """Mark the first pane active; report the layout when a pane is maximised or restored
        (escape restores one without this grid knowing)."""
        self._set_active(self.panes[0])
        self.watch(self.screen, "maximized", self._post_layout, init=False)

    def _new_pane(self) -> EventView:
        pane = EventView(
            self.client, max_entries=self.max_entries, now=self.now, id=f"pane-{self._next_id}"
        )
        self._next_id += 1
        return pane

    # -- public API -------------------------------------------------------------------------

    @property
    def panes(self) -> list[EventView]:
        """The panes in display order."""
        return list(self.query_children(EventView))

    @property
    def active(self) -> EventView:
        """The active pane (the last focused)."""
        if self._active is None or not self._active.is_attached:
            self._active = self.panes[0]
        return self._active

    @property
    def capacity(self) -> int:
        """How many panes fit: :data:`BASE_PANES`, or more when the area holds more panes of
        :data:`MIN_PANE_WIDTH` × :data:`MIN_PANE_HEIGHT` (at most :data:`MAX_PANES`)."""
        width, height = self.size.width, self.size.height
        fit = max(width // MIN_PANE_WIDTH, 1) * max(height // MIN_PANE_HEIGHT, 1)
        return min(max(BASE_PANES, fit), MAX_PANES)

    def show(self, task: Task | None) -> EventView:
        """Follow ``task`` in the active pane; returns that pane."""
        pane = self.active
        pane.follow(task)
        self._post_layout()
        return pane

    def pane_layout(self) -> PaneLayout:
        """The panes' tasks in display order (empty panes left out), the active one among
        them and whether it is maximised."""
        followed = [(pane, pane.task_id) for pane in self.panes if pane.task_id is not None]
        tasks = tuple(task_id for _pane, task_id in followed if task_id is not None)
        active = next((i for i, (pane, _id) in enumerate(followed) if pane is self._active), 0)
        maximized = self.is_attached and self.screen.maximized is not None
        return PaneLayout(tasks=tasks, active=active, maximized=maximized and bool(tasks))

    async def restore(self, tasks: list[Task], active: int = 0, maximized: bool = False) -> None:
        """Follow ``tasks`` in panes of their own, in order, as far as they fit (the panes
        shown now are reused first); then give the pane of ``tasks[active]`` the focus and
        maximise it when ``maximized``. Nothing happens for an empty list."""
        if not tasks:
            return
        panes = self.panes
        for extra in panes[1:]:
            await extra.remove()
        panes[0].follow(tasks[0])
        restored = [panes[0]]
        for task in tasks[1:]:
            pane = await self.open(task)
            if pane is None:
                break
            restored.append(pane)
        self._relayout()
        pane = restored[min(max(active, 0), len(restored) - 1)]
        self.focus_pane(pane)
        if maximized and self.screen.maximized is None:
            self.screen.maximize(pane, container=False)
        self._post_layout()

    def pane_for(self, task_id: str) -> EventView | None:
        """The first pane that follows ``task_id``."""
        return next((p for p in self.panes if p.task_id == task_id), None)

    def showing(self, task_id: str) -> bool:
        """Whether a pane in view follows ``task_id`` (while a pane is maximised, only that
        one is in view)."""
        maximized = self.screen.maximized
        return any(
            pane.task_id == task_id and (maximized is None or pane is maximized)
            for pane in self.panes
        )

    async def open(self, task: Task) -> EventView | None:
        """Follow ``task`` in a new pane and make it active (like a split: the active pane
        keeps its task, and the list's highlight drives the new pane from now on); None when
        no more panes fit. A single empty pane is used instead of adding one."""
        panes = self.panes
        if len(panes) == 1 and panes[0].followed_task is None:
            panes[0].follow(task)
            self._post_layout()
            return panes[0]
        if len(panes) >= self.capacity:
            return None
        pane = self._new_pane()
        await self.mount(pane)
        self._relayout()
        pane.follow(task)
        self._set_active(pane)
        self._post_layout()
        return pane

    async def close(self, pane: EventView | None = None) -> None:
        """Close ``pane`` (default: the active one); the last pane is cleared, not removed."""
        pane = pane or self.active
        panes = self.panes
        if len(panes) == 1:
            pane.follow(None)
            self._post_layout()
            return
        index = panes.index(pane)
        if self.screen.maximized is not None:
            self.screen.minimize()
        await pane.remove()
        self._relayout()
        remaining = self.panes
        self.focus_pane(remaining[min(index, len(remaining) - 1)])
        self._post_layout()

    def focus_pane(self, pane: EventView) -> None:
        """Make ``pane`` active and give it the keyboard focus."""
        self._set_active(pane)
        pane.transcript.focus()

    def toggle_maximize(self) -> None:
        """Maximise the active pane, or restore it."""
        screen = self.screen
        if screen.maximized is not None:
            screen.minimize()
        else:
            screen.maximize(self.active, container=False)

    # -- internals --------------------------------------------------------------------------

    def _set_active(self, pane: EventView) -> None:
        if pane is self._active:
            return
        if self._active is not None and self._active.is_attached:
            self._active.remove_class("-active")
        self._active = pane
        pane.add_class("-active")
        self.post_message(self.ActiveChanged(self, pane))
        self._post_layout()

    def _post_layout(self, _maximized: object = None) -> None:
        self.post_message(self.LayoutChanged(self, self.pane_layout()))

    def _relayout(self) -> None:
        columns, rows = grid_shape(len(self.panes), self.size.width, self.size.height)
        self.styles.grid_size_columns = columns
        self.styles.grid_size_rows = rows

    def on_resize(self, _event: events.Resize) -> None:
        """Choose the grid's shape for the new size."""
        self._relayout()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """The pane that gets the focus becomes active."""
        node = event.widget
        while node is not None and node is not self:
            if isinstance(node, EventView):
                self._set_active(node)
                return
            node = node.parent  # type: ignore[assignment]
