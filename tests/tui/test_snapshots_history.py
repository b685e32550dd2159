"""Provides snapshot tests of the history screen: the seeded tasks at 80×24 and 160×48, a
search that matches nothing, and an unreachable server.

Deterministic as in :mod:`tests.tui.test_snapshots`: the tasks come from
:func:`tests.support.tui_helpers.seed_tasks` (fixed prompts, uploaded over the real worker protocol)
and the clock is frozen relative to their creation, so every age reads ``5m``; no task id,
port or temporary path is on screen. Update with ``pytest --snapshot-update``.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from codex_tui.screens.history import HistoryScreen
from server_client.client import CodexTuiClient
from tests.conftest import LiveServer, free_port
from tests.support.tui_helpers import SEED_TS, FrozenClock, Seeded, type_text, wait_for
from tests.tui.test_history import HistoryHost, settled
from tests.tui.test_snapshots import LARGE, SIZE, SnapCompare, seeded

__all__ = ["seeded"]  # the fixture, shared with tests.tui.test_snapshots


def make_app(server: LiveServer, data: Seeded) -> HistoryHost:
    """The history screen on its own client (closed in the app's loop), clock frozen."""
    return HistoryHost(server.client(), data.clock(), close_client=True)


async def settle(pilot: Pilot[Any], app: HistoryHost) -> None:
    """Wait until the screen shows its first page and knows the worker names."""
    await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "screen")
    screen = app.history
    await wait_for(pilot, lambda: settled(screen) and screen.worker_names is not None, "page")


@pytest.mark.parametrize("size", [SIZE, LARGE], ids=["80x24", "160x48"])
def test_history_screen(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded], size: tuple[int, int]
) -> None:
    """Every seeded task, newest first; the completed one is highlighted."""
    server, data = seeded
    app = make_app(server, data)

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        await pilot.press("down", "down")

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_history_no_match(snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]) -> None:
    """A search that matches nothing, narrowed by status too: the empty state says so."""
    server, data = seeded
    app = make_app(server, data)

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        screen = app.history
        screen.status_select.value = "failed"
        await pilot.press("slash")
        await type_text(pilot, "deploy\n")
        await wait_for(pilot, lambda: settled(screen) and screen.filters.query == "deploy")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_history_offline(snap_compare: SnapCompare) -> None:
    """The server cannot be reached: the error line, and no empty-state text."""
    client = CodexTuiClient(f"http://127.0.0.1:{free_port()}", "ctu_nobody")
    app = HistoryHost(client, FrozenClock(SEED_TS), close_client=True)

    async def run_before(pilot: Pilot[Any]) -> None:
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "screen")
        screen = app.history
        await wait_for(pilot, lambda: screen.error is not None and not screen.fetching, "error")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
