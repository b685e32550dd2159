"""Provides Pilot tests of the workers screen, pairing, revoking and routing, on a real server.

Extra workers come from the real pairing API (:func:`pair_worker`): a pairing code, redeemed
for a worker token, and the worker protocol's ``connect``; :class:`Heartbeat` keeps such a
worker online without a worker process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Self

import httpx
import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static, TextArea

from codex_tui.app import CodexTuiApp
from codex_tui.screens.compose import ComposeScreen, parse_labels
from codex_tui.screens.confirm import ConfirmModal
from codex_tui.screens.dashboard import DashboardScreen
from codex_tui.screens.pairing import PairingModal, format_remaining
from codex_tui.screens.workers import WorkersScreen, format_last_seen, short_version
from codex_tui.widgets.task_list import worker_text
from server_client.client import ApiError, CodexTuiClient, redeem_pairing_code
from server_client.models import PairingCode, Task, TaskStatus, Worker, WorkerHello
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory, free_port
from tests.support.tui_helpers import (
    SEED_TS,
    FrozenClock,
    event_view,
    row_texts,
    running_app,
    task_list,
    type_text,
    wait_for,
)

CODEX_VERSION = "codex-cli 0.169.0"


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class Paired:
    """A worker paired through the real API: its record and its own token."""

    worker: Worker
    token: str


async def pair_worker(
    client: CodexTuiClient,
    server: LiveServer,
    name: str,
    labels: Sequence[str] = (),
    *,
    connect: bool = True,
    hostname: str = "",
    max_tasks: int = 4,
    workdir_roots: Sequence[str] | None = None,
) -> Paired:
    """Pair a worker called ``name`` with a fresh code; ``connect`` it like a real worker."""
    code = await client.create_pairing_code()
    result = await redeem_pairing_code(
        server.url, code.code, name=name, hostname=hostname, labels=labels
    )
    if not connect:
        return Paired(result.worker, result.token)
    api = WorkerApi(server.url, result.token)
    try:
        worker = await api.connect(
            WorkerHello(
                name=name,
                hostname=hostname,
                labels=list(labels),
                codex_version=CODEX_VERSION,
                max_tasks=max_tasks,
                workdir_roots=list(workdir_roots or [str(server.workdir)]),
            )
        )
    finally:
        await api.aclose()
    return Paired(worker, result.token)


async def wait_for_worker(client: CodexTuiClient, name: str, timeout_s: float = 20.0) -> None:
    """Wait until the server lists a worker called ``name`` (e.g. the local worker)."""
    deadline = time.monotonic() + timeout_s
    while name not in [worker.name for worker in await client.list_workers()]:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for worker {name}")
        await asyncio.sleep(0.05)


class Heartbeat:
    """Keeps workers online without a worker process: a thread that sends each one's
    ``signals`` heartbeat (no wait) every ``interval_s`` until the block ends."""

    def __init__(
        self, url: str, workers: Sequence[tuple[str, str]], interval_s: float = 0.5
    ) -> None:
        self.url = url
        self.workers = list(workers)
        """``(worker id, token)`` pairs."""
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def beat(self) -> None:
        """One heartbeat for every worker; failures (a revoked worker, a server going away
        at the end of the test) are ignored."""
        with httpx.Client(base_url=self.url, timeout=5) as http:
            for worker_id, token in self.workers:
                try:
                    http.post(
                        f"/api/workers/{worker_id}/signals",
                        params={"wait": 0},
                        json={"task_ids": []},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.HTTPError:
                    continue

    def _run(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(self.interval_s):
                return


async def open_workers(pilot: Pilot[None], app: CodexTuiApp) -> WorkersScreen:
    """Press ``w`` on the dashboard; return the workers screen once its first poll is in."""
    await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
    await pilot.press("w")
    await wait_for(pilot, lambda: isinstance(app.screen, WorkersScreen), "the workers screen")
    screen = app.screen
    assert isinstance(screen, WorkersScreen)
    await wait_for(pilot, lambda: screen.loaded, "the first workers poll")
    return screen


async def open_compose(pilot: Pilot[None], app: CodexTuiApp) -> ComposeScreen:
    """Press ``n`` on the dashboard; return the compose screen."""
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "the compose screen")
    screen = app.screen
    assert isinstance(screen, ComposeScreen)
    return screen


def names(screen: WorkersScreen) -> list[str]:
    """Names of the workers the screen lists, in order."""
    return [worker.name for worker in screen.shown_workers]


def row_of(screen: WorkersScreen, name: str) -> list[str]:
    """The cells of the named worker's row (empty when it is not listed)."""
    for worker in screen.shown_workers:
        if worker.name == name:
            return screen.row_text(worker.id)
    return []


def static_text(widget: Static) -> str:
    """The plain text a Static shows."""
    return str(widget.render())


# -- pure helpers ----------------------------------------------------------------------------


def test_parse_labels_splits_on_commas_and_spaces() -> None:
    assert parse_labels("gpu, linux  gpu,,os:linux ") == ["gpu", "linux", "os:linux"]
    assert parse_labels("  ") == []


def test_last_seen_version_and_remaining_formats() -> None:
    assert format_last_seen(SEED_TS, SEED_TS + timedelta(seconds=59)) == "just now"
    assert format_last_seen(SEED_TS, SEED_TS - timedelta(seconds=3)) == "just now"
    assert format_last_seen(SEED_TS, SEED_TS + timedelta(minutes=5, seconds=3)) == "5m ago"
    assert format_last_seen(SEED_TS, SEED_TS + timedelta(days=2)) == "2d ago"
    assert short_version(CODEX_VERSION) == "0.169.0"
    assert short_version(None) == "—"
    assert short_version("0.170.0-alpha") == "0.170.0-alpha"
    assert format_remaining(SEED_TS + timedelta(minutes=10), SEED_TS) == "10m 00s"
    assert format_remaining(SEED_TS + timedelta(seconds=7), SEED_TS) == "7s"
    assert format_remaining(SEED_TS, SEED_TS) is None


def test_worker_text_shows_the_target_only_while_queued() -> None:
    base: dict[str, Any] = {
        "id": "t1",
        "prompt": "p",
        "workdir": None,
        "model": None,
        "sandbox": "workspace-write",
        "created_at": SEED_TS,
    }
    queued = Task.model_validate({**base, "status": "queued"})
    assert worker_text(queued) == "—"
    routed = queued.model_copy(update={"target_worker": "gpu-box"})
    assert worker_text(routed) == "→ gpu-box"
    assert worker_text(queued.model_copy(update={"labels": ["gpu", "linux"]})) == "→ [gpu, linux]"
    both = routed.model_copy(update={"labels": ["gpu"]})
    assert worker_text(both) == "→ gpu-box [gpu]"
    running = both.model_copy(update={"status": TaskStatus.RUNNING, "worker_name": "gpu-box"})
    assert worker_text(running) == "gpu-box"


# -- the workers screen ----------------------------------------------------------------------


async def test_workers_screen_shows_state_labels_running_version_and_last_seen(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(fake_mode="sleep", server_args=("--lease-ttl", "4"))
    async with server.client() as client:
        gpu = await pair_worker(
            client, server, "gpu-box", ["gpu", "linux"], hostname="gpu-box.lan", max_tasks=2
        )
        # Paired but never connected: no codex version, and offline after the lease TTL.
        await pair_worker(client, server, "old-laptop", ["mac"], connect=False)
        await wait_for_worker(client, "local")
        await client.create_task("sleep a while", workdir=str(server.workdir), worker="local")
        with Heartbeat(server.url, [(gpu.worker.id, gpu.token)]):
            async with running_app(client, server) as (app, pilot):
                screen = await open_workers(pilot, app)
                await wait_for(pilot, lambda: len(names(screen)) == 3, "three workers")
                assert names(screen) == ["gpu-box", "local", "old-laptop"]
                await wait_for(
                    pilot, lambda: row_of(screen, "local")[3] == "1/4", "the running task", 30
                )
                await wait_for(
                    pilot, lambda: "○ offline" in row_of(screen, "old-laptop"), "offline", 30
                )
                assert row_of(screen, "gpu-box") == [
                    "gpu-box",
                    "● online",
                    "gpu, linux",
                    "0/2",
                    "0.169.0",
                    "gpu-box.lan",
                    "just now",
                ]
                assert row_of(screen, "local")[:2] == ["local", "● online"]
                old = row_of(screen, "old-laptop")
                assert old[1:5] == ["○ offline", "mac", "0/1", "—"]
                assert old[6] in ("just now", "1m ago")

                # The cursor is on the first worker; the detail line has its roots.
                assert screen.selected_worker is not None
                assert screen.selected_worker.name == "gpu-box"
                detail = static_text(screen.query_one("#worker-detail", Static))
                assert "gpu, linux" in detail and str(server.workdir) in detail
                await pilot.press("down")
                assert screen.selected_worker.name == "local"

                # Another theme redraws the rows in its colours.
                app.theme = "codex-light"
                await pilot.pause()
                assert row_of(screen, "gpu-box")[1] == "● online"

                # The poller is one exclusive worker in its group.
                polls = [w for w in app.workers if w.group == "workers-poll" and w.is_running]
                assert [w.name for w in polls] == ["workers-poll"]

                # Escape and w both go back; w opens the screen again.
                await pilot.press("escape")
                await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
                screen = await open_workers(pilot, app)
                await pilot.press("w")
                await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
                assert app.is_running


async def test_pairing_code_is_shown_with_its_command_and_works_once(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client, running_app(client, server) as (app, pilot):
        screen = await open_workers(pilot, app)
        assert screen.has_class("-empty")
        assert names(screen) == []
        await pilot.press("x")  # nothing to revoke
        assert app.screen is screen
        assert any(n.message == "No worker selected." for n in app._notifications)

        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PairingModal), "the pairing modal")
        modal = app.screen
        assert isinstance(modal, PairingModal)
        pairing = modal.pairing
        assert pairing.command == f"codex-tui worker --server {server.url} --pair {pairing.code}"
        assert static_text(modal.query_one("#pairing-command", Static)) == pairing.command
        assert static_text(modal.query_one("#pairing-code", Static)) == " ".join(pairing.code)
        # No public URL on this server: the command names loopback, and the modal says so.
        assert pairing.public_url is None
        assert "CODEX_TUI_SERVER_PUBLIC_URL" in static_text(
            modal.query_one("#pairing-reach", Static)
        )
        expiry = static_text(modal.query_one("#pairing-expiry", Static))
        assert expiry.startswith("Works once. Expires in 9m") or "in 10m" in expiry
        assert not modal.expired

        await pilot.press("c")
        assert app.clipboard == pairing.command

        # The code really works, once: redeem it as the other machine would.
        result = await redeem_pairing_code(server.url, pairing.code, name="laptop", labels=["mac"])
        assert result.worker.name == "laptop"
        with pytest.raises(ApiError) as refused:
            await redeem_pairing_code(server.url, pairing.code, name="laptop-2")
        assert refused.value.status == 400

        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, "the workers screen")
        await wait_for(pilot, lambda: names(screen) == ["laptop"], "the paired worker")
        assert not screen.has_class("-empty")
        assert row_of(screen, "laptop")[2] == "mac"


async def test_pairing_modal_shows_when_the_code_expired(server_factory: ServerFactory) -> None:
    server = server_factory(local_worker=False)
    clock = FrozenClock(SEED_TS + timedelta(minutes=11))
    pairing = PairingCode(
        code="K7PQ-3MZD",
        expires_at=SEED_TS + timedelta(minutes=10),
        command="codex-tui worker --server http://devbox:8765 --pair K7PQ-3MZD",
        public_url="http://devbox:8765",
    )
    async with server.client() as client, running_app(client, server, clock=clock) as (app, pilot):
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        app.push_screen(PairingModal(pairing, clock=clock))
        await wait_for(pilot, lambda: isinstance(app.screen, PairingModal))
        modal = app.screen
        assert isinstance(modal, PairingModal)
        assert modal.expired and modal.has_class("-expired")
        assert not modal.query("#pairing-reach")  # no public URL named: nothing said of it
        expiry = static_text(modal.query_one("#pairing-expiry", Static))
        assert expiry.startswith("Expired at 06:10 UTC.")
        await pilot.press("q")  # closes the modal, it does not quit
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert app.is_running


async def test_revoke_asks_then_the_worker_goes_and_its_token_fails(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await pair_worker(client, server, "devbox")
        gpu = await pair_worker(client, server, "gpu-box", ["gpu"])
        task = await client.create_task("train", worker="gpu-box")
        api = WorkerApi(server.url, gpu.token)
        try:
            claim = await api.claim(gpu.worker.id, wait_s=5)
            assert claim is not None and claim.task.id == task.id
            async with running_app(client, server) as (app, pilot):
                screen = await open_workers(pilot, app)
                await wait_for(pilot, lambda: names(screen) == ["devbox", "gpu-box"])
                await wait_for(pilot, lambda: row_of(screen, "gpu-box")[3] == "1/4", "running")
                await pilot.press("down")
                assert screen.selected_worker is not None
                assert screen.selected_worker.name == "gpu-box"

                await pilot.press("x")
                await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm")
                confirm = app.screen
                assert isinstance(confirm, ConfirmModal)
                assert confirm.question.startswith(
                    "Revoke worker gpu-box? Its running task ends lost."
                )
                await pilot.press("escape")  # keep it
                await wait_for(pilot, lambda: app.screen is screen)
                assert [w.name for w in await client.list_workers()] == ["devbox", "gpu-box"]

                await pilot.press("delete")
                await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm")
                await pilot.press("y")
                await wait_for(pilot, lambda: names(screen) == ["devbox"], "the revoked worker")
                assert [w.name for w in await client.list_workers()] == ["devbox"]
                assert any(n.message == "Worker gpu-box revoked." for n in app._notifications)
                assert screen.selected_worker is not None
                assert screen.selected_worker.name == "devbox"

            with pytest.raises(ApiError) as refused:
                await api.connect(WorkerHello(name="gpu-box"))
            assert refused.value.status == 401
            assert (await client.get_task(task.id)).status is TaskStatus.LOST
        finally:
            await api.aclose()


async def test_workers_screen_shows_errors_inline_and_keeps_running() -> None:
    async with CodexTuiClient(f"http://127.0.0.1:{free_port()}", "ctu_nobody") as client:
        async with running_app(client) as (app, pilot):
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
            await pilot.press("w")
            await wait_for(pilot, lambda: isinstance(app.screen, WorkersScreen))
            screen = app.screen
            assert isinstance(screen, WorkersScreen)
            await wait_for(pilot, lambda: screen.error is not None, "the error line")
            assert screen.error is not None and "Cannot reach the server" in screen.error
            assert screen.has_class("-offline")
            error_line = static_text(screen.query_one("#workers-error", Static))
            assert "Cannot reach the server" in error_line
            assert not screen.loaded

            await pilot.press("p")
            await wait_for(
                pilot,
                lambda: any(n.title == "Pairing failed" for n in app._notifications),
                "the pairing error",
            )
            await pilot.press("r")
            await pilot.pause()
            assert app.screen is screen and app.is_running


# -- routing: compose and the task list ------------------------------------------------------


async def test_compose_routes_a_task_to_a_worker_and_labels(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await pair_worker(client, server, "gpu-box", ["gpu", "linux"], connect=False)
        async with running_app(client, server) as (app, pilot):
            await wait_for(pilot, lambda: task_list(app).loaded, "the first poll")
            compose = await open_compose(pilot, app)
            await wait_for(pilot, lambda: compose.worker_names == ["gpu-box"], "worker names")
            worker_input = compose.query_one("#worker-input", Input)
            assert worker_input.placeholder == "any: gpu-box"

            await type_text(pilot, "train the model")
            # Keyboard only: prompt -> workdir -> repo -> ref -> sandbox -> model -> worker ->
            # labels.
            await pilot.press(*["tab"] * 6)
            assert app.focused is worker_input
            await pilot.press("g", "p")
            await wait_for(pilot, lambda: worker_input._suggestion == "gpu-box", "a suggestion")
            await pilot.press("right")  # accept it
            assert worker_input.value == "gpu-box"
            await pilot.press("tab")
            await type_text(pilot, "gpu, linux")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "dashboard")

            [task] = (await client.list_tasks()).items
            stored = await client.get_task(task.id)
            assert stored.target_worker == "gpu-box"
            assert stored.labels == ["gpu", "linux"]
            assert stored.status is TaskStatus.QUEUED
            tasks = task_list(app)
            # gpu-box never connected: the row says what the task waits for.
            await wait_for(
                pilot,
                lambda: (
                    "waiting for worker gpu-box with labels gpu, linux ·" in row_texts(tasks)[0]
                ),
                "the row to say which worker the task waits for",
            )

            # An unknown worker: the server's 400 is shown inline and the form is kept.
            compose = await open_compose(pilot, app)
            await type_text(pilot, "run somewhere else")
            compose.query_one("#worker-input", Input).value = "nope"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: compose.error is not None, "the inline error")
            assert compose.error is not None
            assert "no worker named 'nope'" in compose.error
            assert "gpu-box" in compose.error
            assert app.screen is compose
            assert compose.query_one("#prompt-input", TextArea).text == "run somewhere else"
            assert len((await client.list_tasks()).items) == 1

            # A label that is not a label is refused before anything is sent.
            compose.query_one("#worker-input", Input).value = ""
            compose.query_one("#labels-input", Input).value = "gpu !bad"
            await pilot.press("ctrl+s")
            assert compose.error is not None and "labels.1" in compose.error


async def test_task_list_shows_the_target_of_queued_routed_tasks(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        gpu = await pair_worker(client, server, "gpu-box", ["gpu"])
        running = await client.create_task("claimed by gpu-box", worker="gpu-box")
        api = WorkerApi(server.url, gpu.token)
        try:
            claim = await api.claim(gpu.worker.id, wait_s=5)
            assert claim is not None and claim.task.id == running.id
        finally:
            await api.aclose()
        await client.create_task("waits for gpu-box", worker="gpu-box")
        await client.create_task("waits for a gpu", labels=["gpu"])
        await client.create_task("any worker will do")
        async with running_app(client, server) as (app, pilot):
            tasks = task_list(app)
            await wait_for(pilot, lambda: len(tasks.tasks) == 4, "the tasks")
            rows = row_texts(tasks)
            assert "any worker will do" in rows[0] and "queued · — ·" in rows[0]
            assert "waits for a gpu" in rows[1] and "queued · → [gpu] ·" in rows[1]
            assert "waits for gpu-box" in rows[2] and "queued · → gpu-box ·" in rows[2]
            assert "claimed by gpu-box" in rows[3] and "running · gpu-box ·" in rows[3]


async def test_task_list_says_what_a_queued_task_no_online_worker_can_take_waits_for(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await pair_worker(client, server, "cpu-box")
        gpu_task = await client.create_task("waits for a gpu", labels=["gpu"])
        await client.create_task("any worker will do")
        async with running_app(client, server) as (app, pilot):
            tasks = task_list(app)
            await wait_for(
                pilot,
                lambda: any(
                    "queued · waiting for a worker with label gpu ·" in r for r in row_texts(tasks)
                ),
                "the gpu task's row to say what it waits for",
            )
            rows = row_texts(tasks)
            assert "any worker will do" in rows[0] and "queued · — ·" in rows[0]
            assert "waits for a gpu" in rows[1] and "→ [gpu]" not in rows[1]
            # The pane says it in full, under its transcript (at 80 columns the row cuts it).
            tasks.select_task(gpu_task.id)
            view = event_view(app)
            bar = view.query_one("#conversation-bar", Static)
            await wait_for(
                pilot,
                lambda: bar.display and static_text(bar) == "○ waiting for a worker with label gpu",
                "the pane's bar to say what its task waits for",
            )

            # Once a worker with the label is online, the row shows the queue and its target.
            await pair_worker(client, server, "gpu-box", ["gpu"])
            tasks.poll_now()
            await wait_for(
                pilot,
                lambda: "queued · → [gpu] ·" in row_texts(tasks)[1],
                "the gpu task's row to show its target once a gpu worker is online",
            )
            assert all("waiting for" not in row for row in row_texts(tasks))
            await wait_for(pilot, lambda: not bar.display, "the pane's bar to go")
            assert view.status is TaskStatus.QUEUED
