"""Provides helpers for the TUI tests: bounded waits, typing, and reading what widgets show."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from textual.app import App
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget

from codex_tui.app import CodexTuiApp
from codex_tui.screens.dashboard import DashboardScreen
from codex_tui.widgets.event_view import EventView
from codex_tui.widgets.task_list import TaskList
from server_client.client import CodexTuiClient
from server_client.models import (
    EventBatch,
    EventIn,
    EventKind,
    FinishRequest,
    Task,
    TaskStatus,
    WorkerHello,
)
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer

#: The terminal size of the Pilot tests (80×24: what must work over SSH).
SIZE = (80, 24)

#: Default bound of :func:`wait_for`, in seconds.
WAIT_S = 20.0


@asynccontextmanager
async def running_app(
    client: CodexTuiClient, server: LiveServer | None = None, **kwargs: Any
) -> AsyncIterator[tuple[CodexTuiApp, Pilot[None]]]:
    """Run the app at 80×24 against ``client``; fast polling so tests wait less."""
    kwargs.setdefault("poll_interval_s", 0.2)
    if server is not None:
        kwargs.setdefault("default_workdir", str(server.workdir))
    app = CodexTuiApp(client, **kwargs)
    async with app.run_test(size=SIZE) as pilot:
        yield app, pilot


async def wait_for(
    pilot: Pilot[Any],
    condition: Callable[[], object],
    what: str = "condition",
    timeout_s: float = WAIT_S,
) -> None:
    """Let the app run until ``condition()`` is truthy; fail after ``timeout_s``.

    Each round processes the app's pending messages and gives its workers (network I/O) a
    short slice of time; the wait ends as soon as the condition holds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        await pilot.pause()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await pilot.pause(0.02)


async def type_text(pilot: Pilot[Any], text: str) -> None:
    """Type ``text`` key by key (newlines as Enter)."""
    await pilot.press(*("enter" if char == "\n" else char for char in text))


def record_refreshes(widget: Widget, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Region, ...]]:
    """From now on, the regions of every refresh of ``widget`` (``()`` for the whole widget),
    in order; the refreshes still happen."""
    regions: list[tuple[Region, ...]] = []
    refresh = widget.refresh

    def spy(*marked: Region, **kwargs: Any) -> Widget:
        regions.append(marked)
        return refresh(*marked, **kwargs)

    monkeypatch.setattr(widget, "refresh", spy)
    return regions


def dashboard(app: App[Any]) -> DashboardScreen:
    """The app's dashboard screen (wherever it is in the stack)."""
    for screen in app.screen_stack:
        if isinstance(screen, DashboardScreen):
            return screen
    raise AssertionError("no dashboard screen")


def dashboard_ready(app: App[Any]) -> bool:
    """True once the dashboard and its panes are mounted."""
    return any(
        isinstance(screen, DashboardScreen) and bool(screen.query(TaskList))
        for screen in app.screen_stack
    )


def task_list(app: App[Any]) -> TaskList:
    """The dashboard's task list."""
    return dashboard(app).task_list


def event_view(app: App[Any]) -> EventView:
    """The dashboard's event view."""
    return dashboard(app).event_view


def log_text(view: EventView) -> str:
    """The plain text of every event the view's window holds (not only what is visible)."""
    return view.text()


def row_texts(tasks: TaskList) -> list[str]:
    """The plain text of each task row (group headers left out)."""
    texts = []
    for option in tasks.options.options:
        if option.disabled:
            continue
        prompt = option.prompt
        texts.append(prompt.plain if hasattr(prompt, "plain") else str(prompt))
    return texts


class FrozenClock:
    """A clock that returns a fixed time, or a fixed offset after a moment set later."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now

    def __call__(self) -> datetime:
        if self.now is None:
            raise RuntimeError("FrozenClock used before it was set")
        return self.now

    def set_after(self, moment: datetime, offset: timedelta) -> None:
        """Freeze at ``moment + offset``."""
        self.now = moment + offset


def closing_app(client: CodexTuiClient, **kwargs: Any) -> CodexTuiApp:
    """The app, closing ``client`` when it exits.

    For tests that hand the app to ``App.run`` (snapshot tests), where the client must be
    closed in the app's own event loop.
    """
    return CodexTuiApp(client, close_client=True, **kwargs)


# -- deterministic data on a real server ---------------------------------------------------

SEED_TS = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
THREAD_ID = "0199a213-81c0-7800-8aa1-bbab2a035a53"
_USAGE_1 = {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}
_USAGE_2 = {"input_tokens": 31020, "cached_input_tokens": 30208, "output_tokens": 311}


def _codex(data: dict[str, Any]) -> EventIn:
    return EventIn(ts=SEED_TS, kind=EventKind.CODEX, data=data)


def _item(phase: str, item: dict[str, Any]) -> EventIn:
    return _codex({"type": f"item.{phase}", "item": item})


def _command(
    item_id: str, command: str, output: str = "", exit_code: int | None = None
) -> dict[str, Any]:
    status = "in_progress" if exit_code is None else ("completed" if exit_code == 0 else "failed")
    return {
        "id": item_id,
        "type": "command_execution",
        "command": command,
        "aggregated_output": output,
        "exit_code": exit_code,
        "status": status,
    }


_STDERR = EventIn(
    ts=SEED_TS, kind=EventKind.STDERR, data={"line": "Reading additional input from stdin..."}
)
_START = [_STDERR, _codex({"type": "thread.started", "thread_id": THREAD_ID})]
_TURN = _codex({"type": "turn.started"})


@dataclass
class SeedTask:
    """One task to seed: its prompt, the events a worker uploads, and how it ends."""

    prompt: str
    events: list[EventIn] = field(default_factory=list)
    finish: TaskStatus | None = None
    exit_code: int | None = None
    error: str | None = None
    claim: bool = True


#: Oldest first. Every codex event and item type appears in the completed task.
SEED_TASKS: list[SeedTask] = [
    SeedTask(
        "Fix the flaky test in tests/test_sync.py",
        [*_START, _TURN, _item("started", _command("item_0", "pytest -x tests/test_sync.py"))],
        finish=TaskStatus.CANCELED,
        exit_code=1,
        error="canceled by the user",
    ),
    SeedTask(
        "Upgrade httpx and fix the deprecation warnings",
        [
            *_START,
            _TURN,
            _codex({"type": "error", "message": "Reconnecting... 1/3"}),
            _codex({"type": "turn.failed", "error": {"message": "model overloaded"}}),
        ],
        finish=TaskStatus.FAILED,
        exit_code=1,
        error="turn failed",
    ),
    SeedTask(
        "Add a --json flag to the export command and test it",
        [
            *_START,
            _TURN,
            _item(
                "completed", {"id": "item_0", "type": "reasoning", "text": "**Reading the CLI**"}
            ),
            _item("started", _command("item_1", "bash -lc 'rg -n export src'")),
            _item(
                "completed",
                _command(
                    "item_1",
                    "bash -lc 'rg -n export src'",
                    "".join(f"src/cli.py:{n}: export line {n}\n" for n in range(1, 26)),
                    0,
                ),
            ),
            _item(
                "updated",
                {
                    "id": "item_2",
                    "type": "todo_list",
                    "items": [
                        {"text": "add the flag", "completed": True},
                        {"text": "write the test", "completed": False},
                    ],
                },
            ),
            _item(
                "completed",
                {
                    "id": "item_3",
                    "type": "file_change",
                    "changes": [
                        {"path": "/srv/app/src/cli.py", "kind": "update"},
                        {"path": "/srv/app/tests/test_export.py", "kind": "add"},
                        {"path": "/srv/app/src/legacy.py", "kind": "delete"},
                    ],
                    "status": "completed",
                },
            ),
            _item("completed", {"id": "item_4", "type": "error", "message": "rg: src/tmp: denied"}),
            _codex({"type": "turn.completed", "usage": _USAGE_1}),
            _TURN,
            _item(
                "completed", _command("item_5", "pytest -q tests/test_export.py", "1 failed\n", 1)
            ),
            _item(
                "completed",
                {
                    "id": "item_6",
                    "type": "agent_message",
                    "text": "Added `--json` to **export**:\n\n- flag in `src/cli.py`\n- a test",
                },
            ),
            _codex({"type": "turn.completed", "usage": _USAGE_2}),
            EventIn(ts=SEED_TS, kind=EventKind.STDOUT, data="warning: not a JSON line"),
            _codex({"type": "thread.compacted", "tokens": 5120}),
        ],
        finish=TaskStatus.COMPLETED,
        exit_code=0,
    ),
    SeedTask(
        "Write a migration guide for v2",
        [
            *_START,
            _TURN,
            _item("completed", {"id": "item_0", "type": "reasoning", "text": "**Outlining**"}),
            _item("started", _command("item_1", "npm test")),
        ],
    ),
    SeedTask("Summarise the open issues labelled bug", claim=False),
]


@dataclass
class Seeded:
    """What :func:`seed_tasks` created."""

    tasks: list[Task]
    """Newest first, as the task list shows them."""

    def clock(self, offset: timedelta = timedelta(minutes=5, seconds=20)) -> FrozenClock:
        """A clock ``offset`` after the newest task was created (every age reads ``5m``)."""
        clock = FrozenClock()
        clock.set_after(max(task.created_at for task in self.tasks), offset)
        return clock


async def seed_tasks(server: LiveServer, specs: list[SeedTask] | None = None) -> Seeded:
    """Create tasks on ``server`` (which must have no local worker) and play a worker for them
    over the real worker protocol, so every task has fixed events and a known end."""
    specs = SEED_TASKS if specs is None else specs
    api = WorkerApi(server.url, server.token)
    try:
        async with server.client() as client:
            worker = await api.connect(
                WorkerHello(name="devbox", hostname="devbox", workdir_roots=[str(server.workdir)])
            )
            for spec in specs:
                task = await client.create_task(spec.prompt, workdir=str(server.workdir))
                if not spec.claim:
                    continue
                claim = await api.claim(worker.id, wait_s=5)
                assert claim is not None and claim.task.id == task.id
                batch = EventBatch(lease_id=claim.lease_id, first_index=0, events=spec.events)
                await api.upload(worker.id, task.id, batch.model_dump_json().encode())
                if spec.finish is not None:
                    await api.finish(
                        worker.id,
                        task.id,
                        FinishRequest(
                            lease_id=claim.lease_id,
                            status=spec.finish,  # type: ignore[arg-type]
                            event_count=len(spec.events),
                            exit_code=spec.exit_code,
                            error=spec.error,
                        ),
                    )
            page = await client.list_tasks()
    finally:
        await api.aclose()
    return Seeded(tasks=page.items)
