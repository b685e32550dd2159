"""Provides WorkersScreen: the user's workers with their state, and pairing and revoking them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

import httpx
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Static

from codex_tui.events.palette import Palette
from codex_tui.events.view import shown_line
from codex_tui.failures import (
    REQUEST_ERRORS,
    describe_action_failure,
    describe_poll_failure,
    poll_forever,
)
from codex_tui.screens.confirm import ConfirmModal
from codex_tui.screens.pairing import PairingModal
from codex_tui.widgets.keys_footer import KeysFooter
from codex_tui.widgets.task_list import format_age
from server_client.client import ApiError, CodexTuiClient, NotFoundError
from server_client.models import Worker, utcnow

__all__ = ["WorkersScreen", "format_last_seen", "short_version"]

#: Most workers shown (a user has a handful; this only bounds a runaway list).
MAX_WORKERS = 500
#: Longest name, labels or hostname cell, in characters (the detail line has the rest).
MAX_CELL_CHARS = 24

#: The table's columns: key and heading.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Name"),
    ("state", "State"),
    ("labels", "Labels"),
    ("running", "Tasks"),
    ("codex", "Codex"),
    ("host", "Host"),
    ("seen", "Last seen"),
)


def format_last_seen(last_seen: datetime, now: datetime) -> str:
    """``just now`` within a minute (workers are heard from every few seconds), else an age
    such as ``5m ago``."""
    if (now - last_seen).total_seconds() < 60:
        return "just now"
    return f"{format_age(last_seen, now)} ago"


def short_version(version: str | None) -> str:
    """The codex version without the ``codex-cli`` prefix (``0.169.0``), or ``—``."""
    if not version:
        return "—"
    return version.removeprefix("codex-cli").strip() or version


@dataclass(frozen=True)
class _Row:
    """What one worker's row shows; cells are redrawn only when this changes."""

    name: str
    online: bool
    labels: str
    running: str
    codex: str
    host: str
    seen: str

    def cells(self, palette: Palette) -> dict[str, Text]:
        state = (
            Text("● online", style=palette.success)
            if self.online
            else Text("○ offline", style=palette.muted)
        )
        return {
            "name": Text(self.name, style="bold"),
            "state": state,
            "labels": Text(self.labels or "—", style="" if self.labels else palette.muted),
            "running": Text(self.running, justify="right"),
            "codex": Text(self.codex),
            "host": Text(self.host or "—"),
            "seen": Text(self.seen, style=palette.muted),
        }


class WorkersScreen(Screen[None]):
    """The user's workers: name, online state, labels, running tasks, codex version, host and
    when each was last heard from.

    A worker (``workers-poll``, exclusive) polls ``client.list_workers()`` every
    ``poll_interval_s`` and at once after :meth:`poll_now`; a failed poll shows an error line
    and polling goes on. ``p`` creates a pairing code and shows it in a
    :class:`~codex_tui.screens.pairing.PairingModal`; ``x`` revokes the highlighted worker
    after a :class:`~codex_tui.screens.confirm.ConfirmModal`; Escape or ``w`` goes back.

    Args:
        client: The SDK client.
        clock: Returns the current UTC time (injectable for deterministic ages).
        poll_interval_s: Seconds between polls.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pair_worker", "Pair a worker", id="pair-worker"),
        Binding("x,delete", "revoke_worker", "Revoke", id="revoke-worker"),
        Binding("r", "refresh", "Refresh", id="refresh"),
        Binding("escape,w", "back", "Back", id="back"),
    ]

    DEFAULT_CSS = """
    WorkersScreen {
        layout: vertical;
    }
    WorkersScreen > #workers-pane {
        height: 1fr;
        border: round $border;
        border-title-color: $primary;
        border-subtitle-color: $foreground-muted;
        background: $surface;
    }
    WorkersScreen #workers-error {
        display: none;
        height: auto;
        padding: 0 1;
        color: $error;
    }
    WorkersScreen.-offline #workers-error {
        display: block;
    }
    WorkersScreen #workers-empty {
        display: none;
        height: auto;
        padding: 0 1;
        color: $foreground-muted;
    }
    WorkersScreen.-empty #workers-empty {
        display: block;
    }
    WorkersScreen #workers-table {
        height: 1fr;
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    WorkersScreen.-empty #workers-table {
        display: none;
    }
    WorkersScreen #worker-detail {
        height: auto;
        max-height: 4;
        padding: 0 1;
        color: $foreground-muted;
        border-top: solid $border-blurred;
    }
    WorkersScreen.-empty #worker-detail {
        display: none;
    }
    """

    def __init__(
        self,
        client: CodexTuiClient,
        *,
        clock: Callable[[], datetime] | None = None,
        poll_interval_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.client = client
        self.clock: Callable[[], datetime] = clock or utcnow
        self.poll_interval_s = poll_interval_s
        self._workers: dict[str, Worker] = {}
        self._rows: dict[str, _Row] = {}
        self._order: list[str] = []
        self._error: str | None = None
        self._loaded = False
        self._wake = asyncio.Event()

    def compose(self) -> ComposeResult:
        with Vertical(id="workers-pane") as pane:
            pane.border_title = "Workers"
            yield Static(id="workers-error")
            yield Static(
                "No workers yet. Press p to pair one on another machine.", id="workers-empty"
            )
            table: DataTable[Text] = DataTable(
                id="workers-table", cursor_type="row", zebra_stripes=False
            )
            for key, heading in _COLUMNS:
                table.add_column(heading, key=key)
            yield table
            yield Static(id="worker-detail")
        yield KeysFooter()

    def on_mount(self) -> None:
        """Start polling; the keyboard goes to the table."""
        self.table.focus()
        self.app.theme_changed_signal.subscribe(self, self._redraw_rows)
        self.run_worker(
            poll_forever(self._poll_once, self._wake, self.poll_interval_s),
            name="workers-poll",
            group="workers-poll",
            exclusive=True,
        )

    # -- public API -------------------------------------------------------------------------

    @property
    def table(self) -> DataTable[Text]:
        """The table of workers."""
        return self.query_one("#workers-table", DataTable)

    @property
    def shown_workers(self) -> list[Worker]:
        """The workers shown, in display order (by name)."""
        return [self._workers[worker_id] for worker_id in self._order]

    @property
    def selected_worker(self) -> Worker | None:
        """The highlighted worker, if any."""
        if not self._order:
            return None
        row = self.table.cursor_row
        if not 0 <= row < len(self._order):
            return None
        return self._workers.get(self._order[row])

    @property
    def loaded(self) -> bool:
        """True once a poll has succeeded."""
        return self._loaded

    @property
    def error(self) -> str | None:
        """Why the last poll failed, or None after a success."""
        return self._error

    def row_text(self, worker_id: str) -> list[str]:
        """The plain text of each cell of a worker's row (for tests and screen readers)."""
        row = self._rows.get(worker_id)
        if row is None:
            return []
        return [cell.plain for cell in row.cells(Palette()).values()]

    def poll_now(self) -> None:
        """Poll at once instead of waiting for the interval."""
        self._wake.set()

    def update_workers(self, workers: Sequence[Worker]) -> None:
        """Show ``workers``, redrawing only the cells that changed; the cursor stays on the
        highlighted worker while it is listed."""
        workers = list(workers)[:MAX_WORKERS]
        now = self.clock()
        rows = {worker.id: self._row(worker, now) for worker in workers}
        order = [worker.id for worker in workers]
        self._workers = {worker.id: worker for worker in workers}
        table = self.table
        palette = Palette.from_theme_variables(self.app.theme_variables)
        if order != self._order:
            index = table.cursor_row
            selected = self._order[index] if 0 <= index < len(self._order) else None
            table.clear()
            for worker_id in order:
                table.add_row(*rows[worker_id].cells(palette).values(), key=worker_id)
            self._order = order
            if selected in rows:
                table.move_cursor(row=order.index(selected), animate=False)
            elif order:  # the highlighted worker went: stay on the same line
                table.move_cursor(row=min(max(index, 0), len(order) - 1), animate=False)
        else:
            for worker_id, row in rows.items():
                old = self._rows.get(worker_id)
                if old == row:
                    continue
                for column, cell in row.cells(palette).items():
                    table.update_cell(worker_id, column, cell, update_width=True)
        self._rows = rows
        self.set_class(not order, "-empty")
        self._show_detail()

    # -- actions ----------------------------------------------------------------------------

    def action_pair_worker(self) -> None:
        """Create a pairing code and show it with the command to run on the other machine."""
        self.run_worker(
            self._create_pairing_code(),
            name="pair-worker",
            group="pair-worker",
            exclusive=True,
            exit_on_error=False,
        )

    def action_revoke_worker(self) -> None:
        """Ask, then revoke the highlighted worker."""
        worker = self.selected_worker
        if worker is None:
            self.notify("No worker selected.", severity="warning")
            return
        worker_id, name = worker.id, worker.name

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.run_worker(
                    self._revoke(worker_id, name),
                    name=f"revoke:{worker_id}",
                    group="revoke-worker",
                    exit_on_error=False,
                )

        if worker.running == 1:
            running = "Its running task ends lost."
        elif worker.running:
            running = f"Its {worker.running} running tasks end lost."
        else:
            running = "Its running tasks end lost."
        self.app.push_screen(
            ConfirmModal(
                f"Revoke worker {name}? {running}\n\n"
                "Its token stops working at once; pair the machine again to bring it back.",
                confirm_label="Revoke",
                cancel_label="Keep",
            ),
            answered,
        )

    def action_refresh(self) -> None:
        """Poll the server now."""
        self.poll_now()

    def action_back(self) -> None:
        """Back to the dashboard."""
        self.dismiss(None)

    # -- internals --------------------------------------------------------------------------

    def _row(self, worker: Worker, now: datetime) -> _Row:
        return _Row(
            name=shown_line(worker.name),
            online=worker.online,
            labels=shown_line(", ".join(worker.labels)),
            running=f"{worker.running}/{worker.max_tasks}",
            codex=shown_line(
                "✗ cannot run" if worker.cannot_run else short_version(worker.codex_version), 16
            ),
            host=shown_line(worker.hostname),
            seen=format_last_seen(worker.last_seen_at, now),
        )

    def _redraw_rows(self, _theme: object = None) -> None:
        """Redraw every row (its colours come from the theme)."""
        palette = Palette.from_theme_variables(self.app.theme_variables)
        for worker_id, row in self._rows.items():
            for column, cell in row.cells(palette).items():
                self.table.update_cell(worker_id, column, cell)

    def _show_detail(self) -> None:
        worker = self.selected_worker
        detail = self.query_one("#worker-detail", Static)
        if worker is None:
            detail.update("")
            return
        roots = ", ".join(worker.workdir_roots) or "none reported yet"
        labels = ", ".join(worker.labels) or "none"
        detail.update(
            Content.from_markup(
                "[b]$name[/b] · labels: $labels · workdir roots: $roots",
                name=worker.name,
                labels=labels,
                roots=roots,
            )
        )

    async def _poll_once(self) -> None:
        workers: list[Worker] | None = None
        try:
            workers = await self.client.list_workers()
        except REQUEST_ERRORS as error:
            failure: str | None = describe_poll_failure(error)
        else:
            failure = None
        if self.query_one_optional("#workers-table", DataTable) is None:
            return  # the screen was closed during the request: its rows are gone
        self._set_error(failure)
        if workers is not None:
            self._loaded = True
            self.update_workers(workers)

    def _set_error(self, error: str | None) -> None:
        if error is not None:
            error = f"{error} — retrying"
        if error != self._error:
            self.query_one("#workers-error", Static).update(Content(error or ""))
        self._error = error
        self.set_class(error is not None, "-offline")
        self.query_one("#workers-pane").border_subtitle = (
            Content.from_markup("[$error]offline[/]") if error else None
        )

    async def _create_pairing_code(self) -> None:
        try:
            pairing = await self.client.create_pairing_code()
        except (ApiError, httpx.HTTPError) as error:
            self.notify(
                describe_action_failure(error),
                title="Pairing failed",
                severity="error",
                markup=False,
            )
            return
        self.app.push_screen(PairingModal(pairing, clock=self.clock), lambda _: self.poll_now())

    async def _revoke(self, worker_id: str, name: str) -> None:
        try:
            await self.client.revoke_worker(worker_id)
        except NotFoundError:
            self.notify(f"Worker {name} was already gone.", severity="warning", markup=False)
        except (ApiError, httpx.HTTPError) as error:
            self.notify(
                describe_action_failure(error),
                title="Revoke failed",
                severity="error",
                markup=False,
            )
            return
        else:
            self.notify(f"Worker {name} revoked.", markup=False)
        self.poll_now()

    @on(DataTable.RowHighlighted, "#workers-table")
    def _highlight_changed(self) -> None:
        self._show_detail()
