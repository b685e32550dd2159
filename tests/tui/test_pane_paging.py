"""Provides tests of a command split by a page boundary: a pane that pages a task's history
from the server (older pages on scroll up, newer ones on scroll down) shows each command as one
entry, updated in place, wherever the pages start and end."""

from __future__ import annotations

import io
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from rich.console import Console
from textual.app import App

from codex_tui.widgets.transcript import Entry, Transcript
from server_client.models import EventIn, EventKind, TaskStatus
from tests.conftest import ServerFactory
from tests.support.tui_helpers import SEED_TS, SIZE, SeedTask, seed_tasks, wait_for
from tests.tui.test_transcript import PaneHost, replayed, starts_before

COMMANDS = 60


def command_events(number: int) -> list[EventIn]:
    """A command that starts, prints a line (on stderr, so it shows between) and completes."""
    started = SEED_TS + timedelta(seconds=10 * number)
    item: dict[str, Any] = {
        "id": f"item_{number}",
        "type": "command_execution",
        "command": f"make step{number}",
        "aggregated_output": "",
        "exit_code": None,
        "status": "in_progress",
    }
    done = {**item, "aggregated_output": f"built {number}\n", "exit_code": 0}
    done["status"] = "completed"
    return [
        EventIn(ts=started, kind=EventKind.CODEX, data={"type": "item.started", "item": item}),
        EventIn(ts=started, kind=EventKind.STDERR, data={"line": f"between {number}"}),
        EventIn(
            ts=started + timedelta(seconds=3),
            kind=EventKind.CODEX,
            data={"type": "item.completed", "item": done},
        ),
    ]


def command_of(entry: Entry) -> str | None:
    """The item id of the command ``entry`` shows (None: it shows something else)."""
    for event in (entry.event, entry.shown_event):
        data = event.data
        if event.kind is EventKind.CODEX and isinstance(data, dict):
            item = data.get("item")
            if isinstance(item, dict) and item.get("type") == "command_execution":
                return str(item.get("id"))
    return None


def check_window(transcript: Transcript, seq_of: dict[tuple[str, str], int]) -> None:
    """Each command shows in at most one entry; one whose start and completion are both in
    the window's range shows as completed, with its duration."""
    shown = Counter(item for entry in transcript.entries if (item := command_of(entry)))
    twice = sorted(item for item, count in shown.items() if count > 1)
    window = f"{transcript.first_seq}..{transcript.last_seq}"
    assert not twice, f"shown twice: {twice} in the window {window}"
    first, last = transcript.first_seq or 0, transcript.last_seq or 0
    for entry in transcript.entries:
        item = command_of(entry)
        if item is None:
            continue
        if first <= seq_of[item, "started"] and seq_of[item, "completed"] <= last:
            assert entry.shown_event.seq == seq_of[item, "completed"], f"{item} completed"
            assert "exit 0" in shown_text(transcript, entry), f"{item} shows its exit code"


def loading(app: App[Any]) -> bool:
    """True while a pane fetches a page."""
    return any(w.group == "pages" and w.is_running for w in app.workers)


def shown_text(transcript: Transcript, entry: Entry) -> str:
    """What ``entry`` shows, as plain text."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, color_system=None, highlight=False)
    for renderable in transcript.entry_renderables(entry):
        console.print(renderable)
    return buffer.getvalue()


@pytest.mark.parametrize("max_entries", [50, 62, 70])
async def test_a_command_split_across_pages_is_one_entry(
    server_factory: ServerFactory, max_entries: int
) -> None:
    server = server_factory(local_worker=False)
    events = [event for n in range(COMMANDS) for event in command_events(n)]
    seeded = await seed_tasks(server, [SeedTask("split", events, TaskStatus.COMPLETED)])
    [task] = seeded.tasks
    async with server.client() as client:
        stored = await client.get_events(task.id, limit=1000)
        seq_of = {
            (str(e.data["item"]["id"]), str(e.data["type"]).removeprefix("item.")): e.seq
            for e in stored
            if e.kind is EventKind.CODEX and isinstance(e.data, dict) and "item" in e.data
        }
        app = PaneHost(client, max_entries)
        async with app.run_test(size=SIZE) as pilot:
            view = app.pane
            transcript = view.transcript
            assert view.feed.page <= 35, "pages small enough to split commands"
            view.follow(task)
            transcript.focus()
            await replayed(pilot, view, task)
            check_window(transcript, seq_of)

            while not transcript.at_start:  # older pages, one at a time
                first = transcript.first_seq
                assert first is not None
                await pilot.press("home")
                await wait_for(pilot, starts_before(transcript, first), f"a page before {first}")
                check_window(transcript, seq_of)

            for _ in range(task.last_seq):  # newer pages as pgdn nears the window's end
                if transcript.last_seq == task.last_seq:
                    break
                await pilot.press("pagedown")
                await wait_for(pilot, lambda: not loading(app), "the page")
                check_window(transcript, seq_of)
            assert transcript.last_seq == task.last_seq, "pgdn paged up to the newest event"
