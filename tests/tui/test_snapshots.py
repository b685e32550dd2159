"""Provides snapshot tests of the dashboard, compose, confirm and workers screens and the
pairing modal, at 80×24 (and the workers screen and pairing modal also at 160×48).

Every snapshot runs against a real server on loopback. The data is made deterministic by
:func:`tests.support.tui_helpers.seed_tasks` (fixed prompts and events, uploaded over the real
worker protocol) and a clock frozen relative to the tasks' creation times; nothing random (task ids,
ports, temporary paths) is on screen. The workers come from the real pairing API with fixed names;
their relative "last seen" reads "just now" under a clock frozen just after seeding, and a heartbeat
thread keeps the online ones online. The pairing modal is given a fixed code. Update with ``pytest
--snapshot-update`` and review the report.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from codex_tui.app import CodexTuiApp
from codex_tui.screens.compose import ComposeScreen
from codex_tui.screens.confirm import ConfirmModal
from codex_tui.screens.export import ExportModal
from codex_tui.screens.pairing import PairingModal
from codex_tui.screens.workers import WorkersScreen
from codex_tui.widgets.connection_banner import ConnectionBanner
from codex_tui.widgets.pane_grid import PaneGrid
from server_client.client import CodexTuiClient
from server_client.models import PairingCode, WorkerHello
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory
from tests.support.tui_helpers import (
    SEED_TS,
    FrozenClock,
    Seeded,
    closing_app,
    dashboard_ready,
    event_view,
    seed_tasks,
    task_list,
    wait_for,
)
from tests.tui.test_tui_workers import CODEX_VERSION, Heartbeat, pair_worker

SIZE = (80, 24)
LARGE = (160, 48)
SnapCompare = Callable[..., bool]
RunBefore = Callable[[Pilot[Any]], Awaitable[None]]


@pytest.fixture
def seeded(server_factory: ServerFactory) -> tuple[LiveServer, Seeded]:
    """A server without a local worker holding :data:`tests.support.tui_helpers.SEED_TASKS`."""
    server = server_factory(local_worker=False)
    return server, asyncio.run(seed_tasks(server))


def make_app(server: LiveServer, clock: FrozenClock | None = None) -> CodexTuiApp:
    """The app for a snapshot: its own client (closed in the app's loop) and a frozen clock."""
    return closing_app(
        server.client(),
        clock=clock or FrozenClock(SEED_TS),
        default_workdir="/srv/app",
        poll_interval_s=0.2,
    )


async def settle(pilot: Pilot[Any], app: CodexTuiApp, prompt: str | None = None) -> None:
    """Wait until the list is loaded; with ``prompt``, highlight the task whose prompt starts
    with it and wait until all its events are in the active pane."""
    await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
    tasks = task_list(app)
    await wait_for(pilot, lambda: tasks.loaded, "the first poll")
    if prompt is None:
        return
    await wait_for(
        pilot, lambda: any(t.prompt.startswith(prompt) for t in tasks.tasks), "the tasks"
    )
    wanted = next(t for t in tasks.tasks if t.prompt.startswith(prompt))
    tasks.select_task(wanted.id)
    await settle_pane(pilot, app, wanted.id)


async def settle_pane(pilot: Pilot[Any], app: CodexTuiApp, task_id: str) -> None:
    """Wait until the pane that follows ``task_id`` shows all its events."""
    tasks = task_list(app)
    wanted = next(t for t in tasks.tasks if t.id == task_id)

    def done() -> bool:
        pane = event_view(app).screen.query_one(PaneGrid).pane_for(task_id)
        return (
            pane is not None
            and pane.last_seq == wanted.last_seq
            and not pane.pending
            and bool(pane.transcript.entries)
        )

    await wait_for(pilot, done, f"every event of {wanted.prompt!r}")


COMPLETED = "Add a --json flag"
RUNNING = "Write a migration guide"
FAILED = "Upgrade httpx"


def test_dashboard_completed_task_tail(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]
) -> None:
    """The completed task is highlighted: its pane follows the end of its log."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app, COMPLETED)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_dashboard_completed_task_top(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]
) -> None:
    """Tab into the pane and press Home: the first events of the completed task."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app, COMPLETED)
        await pilot.press("tab", "home")
        await wait_for(pilot, lambda: not event_view(app).following, "the view to stop following")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_dashboard_running_task(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]
) -> None:
    """The running task: its command is still running."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app, RUNNING)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def three_panes(pilot: Pilot[Any], app: CodexTuiApp) -> None:
    """The completed, failed and running tasks side by side (``o`` splits the active pane)."""
    await settle(pilot, app, COMPLETED)
    await pilot.press("o")
    await settle(pilot, app, FAILED)
    await pilot.press("o")
    await settle(pilot, app, RUNNING)
    grid = app.screen.query_one(PaneGrid)
    await wait_for(pilot, lambda: len(grid.panes) == 3, "three panes")


@pytest.mark.parametrize("size", [SIZE, LARGE], ids=["80x24", "160x48"])
def test_dashboard_three_panes(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded], size: tuple[int, int]
) -> None:
    """Three tasks streaming side by side, the last opened one active."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await three_panes(pilot, app)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_dashboard_maximised_pane(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]
) -> None:
    """``m`` maximises the active pane over the list and the other panes."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await three_panes(pilot, app)
        await pilot.press("m")
        await wait_for(pilot, lambda: app.screen.maximized is not None, "maximised")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("size", [SIZE, LARGE], ids=["80x24", "160x48"])
def test_pane_expanded_command_and_raw_event(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded], size: tuple[int, int]
) -> None:
    """In the completed task's pane: the raw JSON (``v``) of the seeded ``thread.compacted``
    event, two entries up (``k``); the status events after it carry the server's clock."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app, COMPLETED)
        await pilot.press("enter", "k", "k", "v")
        view = event_view(app)
        await wait_for(
            pilot,
            lambda: view.transcript.cursor_entry is not None and view.transcript.cursor_entry.raw,
            "a raw entry",
        )

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_pane_search(snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]) -> None:
    """``/export`` + enter: the newest match is under the cursor, every match highlighted."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app, COMPLETED)
        await pilot.press("enter", "slash", *"export", "enter")
        view = event_view(app)
        await wait_for(pilot, lambda: view.transcript.cursor is not None, "a match")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_export_modal(snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]) -> None:
    """``e`` asks where to write the transcript."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app, COMPLETED)
        await pilot.press("enter", "e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportModal), "the modal")
        field = app.screen.query_one(Input)
        field.value = "/srv/exports/codex-task.md"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("theme", ["codex-light", "codex-high-contrast"])
def test_dashboard_themes(
    snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded], theme: str
) -> None:
    """The light and high-contrast themes on the completed task."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        app.theme = theme
        await settle(pilot, app, COMPLETED)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_confirm_cancel_modal(snap_compare: SnapCompare, seeded: tuple[LiveServer, Seeded]) -> None:
    """``x`` on the running task asks first."""
    server, data = seeded
    app = make_app(server, data.clock())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app, RUNNING)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the modal")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compose_screen(snap_compare: SnapCompare, server_factory: ServerFactory) -> None:
    """``n`` opens the compose screen with the default workdir filled in."""
    app = make_app(server_factory(local_worker=False))

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose")
        await pilot.press(*"Add a --json flag")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compose_screen_error(snap_compare: SnapCompare, server_factory: ServerFactory) -> None:
    """ctrl+s with an empty prompt shows the error inline."""
    app = make_app(server_factory(local_worker=False))

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose")
        await pilot.press("ctrl+s")
        screen = app.screen
        await wait_for(pilot, lambda: isinstance(screen, ComposeScreen) and screen.error, "error")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_empty_dashboard(snap_compare: SnapCompare, server_factory: ServerFactory) -> None:
    """No tasks yet: both panes say how to start one."""
    app = make_app(server_factory(local_worker=False))

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_offline_dashboard(snap_compare: SnapCompare) -> None:
    """The server cannot be reached: an error line in the list and a notification."""
    # Port 9 (discard) is closed on loopback here, and fixed, so the error text is stable.
    client = CodexTuiClient("http://127.0.0.1:9", "ctu_nobody")
    app = closing_app(client, clock=FrozenClock(SEED_TS), poll_interval_s=0.2)

    async def run_before(pilot: Pilot[Any]) -> None:
        await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
        # Every retry waits 1 s (the first, jittered 0.8-1 s, shows as 1 s too): the banner's
        # countdown reads the same however many polls failed before the snapshot, on a loaded
        # machine as on an idle one (it read "2 s" once a second poll had failed).
        task_list(app)._retry_delays = itertools.repeat(1.0)
        await wait_for(pilot, lambda: task_list(app).error is not None, "the error line")
        # The banner and the toast come from the message the failure posts, handled later.
        await wait_for(
            pilot,
            lambda: (
                app.connection_error is not None
                and any(banner.offline for banner in app.screen.query(ConnectionBanner))
                and bool(app.screen.query("Toast"))
            ),
            "the offline banner and the connection toast",
        )

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


# -- workers and pairing ---------------------------------------------------------------------


@dataclass
class SeededWorkers:
    """What :func:`seed_workers` set up: a server, and a clock just after the seeding."""

    server: LiveServer
    clock: FrozenClock


async def seed_workers(server: LiveServer) -> tuple[list[tuple[str, str]], datetime]:
    """Three workers on ``server`` (no local worker, a 5 s lease TTL), by the real APIs:
    ``old-laptop`` paired but never connected and offline by now, ``devbox`` connected with
    the user's token, ``gpu-box`` paired and connected, running one of its two tasks.

    Returns:
        ``(worker id, token)`` of the two online workers, and when the seeding ended.
    """
    async with server.client() as client:
        await pair_worker(
            client, server, "old-laptop", ["mac"], connect=False, hostname="old-laptop.lan"
        )
        deadline = time.monotonic() + 30
        while any(w.online for w in await client.list_workers()):
            assert time.monotonic() < deadline, "old-laptop never went offline"
            await asyncio.sleep(0.1)
        api = WorkerApi(server.url, server.token)
        try:
            devbox = await api.connect(
                WorkerHello(
                    name="devbox",
                    hostname="devbox",
                    codex_version=CODEX_VERSION,
                    workdir_roots=["/srv/app"],
                )
            )
        finally:
            await api.aclose()
        gpu = await pair_worker(
            client,
            server,
            "gpu-box",
            ["gpu", "linux"],
            hostname="gpu-box.lan",
            max_tasks=2,
            workdir_roots=["/srv/models"],
        )
        task = await client.create_task("train the model", worker="gpu-box")
        gpu_api = WorkerApi(server.url, gpu.token)
        try:
            claim = await gpu_api.claim(gpu.worker.id, wait_s=5)
            assert claim is not None and claim.task.id == task.id
        finally:
            await gpu_api.aclose()
    return [(devbox.id, server.token), (gpu.worker.id, gpu.token)], datetime.now(UTC)


@pytest.fixture
def workers_seeded(server_factory: ServerFactory) -> Iterator[SeededWorkers]:
    """A server with :func:`seed_workers`' workers, the online ones kept online meanwhile."""
    server = server_factory(local_worker=False, server_args=("--lease-ttl", "5"))
    online, seeded_at = asyncio.run(seed_workers(server))
    with Heartbeat(server.url, online):
        yield SeededWorkers(server, FrozenClock(seeded_at + timedelta(seconds=10)))


#: A fixed pairing code for the modal's snapshots (the Pilot tests cover the real one).
PAIRING = PairingCode(
    code="K7PQ-3MZD",
    expires_at=SEED_TS + timedelta(minutes=10),
    command="codex-tui worker --server http://192.168.1.20:8765 --pair K7PQ-3MZD",
    public_url="http://192.168.1.20:8765",
)


async def open_workers_screen(pilot: Pilot[Any], app: CodexTuiApp) -> WorkersScreen:
    """Press ``w`` and wait until the three seeded workers show in their seeded states."""
    await settle(pilot, app)
    await pilot.press("w")
    await wait_for(pilot, lambda: isinstance(app.screen, WorkersScreen), "the workers screen")
    screen = app.screen
    assert isinstance(screen, WorkersScreen)

    def seeded_states() -> bool:
        return [(w.name, w.online, w.running) for w in screen.shown_workers] == [
            ("devbox", True, 0),
            ("gpu-box", True, 1),
            ("old-laptop", False, 0),
        ]

    await wait_for(pilot, seeded_states, "the seeded workers")
    await pilot.press("down")  # gpu-box: its labels and roots in the detail line
    return screen


@pytest.mark.parametrize("size", [SIZE, LARGE], ids=["80x24", "160x48"])
def test_workers_screen(
    snap_compare: SnapCompare, workers_seeded: SeededWorkers, size: tuple[int, int]
) -> None:
    """``w`` opens the workers screen: online and offline workers, labels, running tasks."""
    app = make_app(workers_seeded.server, workers_seeded.clock)

    async def run_before(pilot: Pilot[Any]) -> None:
        await open_workers_screen(pilot, app)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [SIZE, LARGE], ids=["80x24", "160x48"])
def test_pairing_modal(
    snap_compare: SnapCompare, workers_seeded: SeededWorkers, size: tuple[int, int]
) -> None:
    """The pairing modal over the workers screen: the code, the command and the expiry."""
    app = make_app(workers_seeded.server, workers_seeded.clock)

    async def run_before(pilot: Pilot[Any]) -> None:
        await open_workers_screen(pilot, app)
        app.push_screen(PairingModal(PAIRING, clock=FrozenClock(SEED_TS)))
        await wait_for(pilot, lambda: isinstance(app.screen, PairingModal), "the modal")

    assert snap_compare(app, terminal_size=size, run_before=run_before)
