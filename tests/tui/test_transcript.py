"""Provides tests of a pane's transcript: paging back and forth by seq against a real server,
folding, raw JSON, search (in the window and on the server), export, and unit tests of the
export writers and the render annotations.
"""

from __future__ import annotations

import asyncio
import gc
import html
import io
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console, RenderableType
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widgets import Input, Static

from codex_tui.app import CodexTuiApp
from codex_tui.events.export import format_for_path, markdown_event
from codex_tui.events.palette import Palette
from codex_tui.events.pane import RenderState, render_annotated
from codex_tui.events.view import Annotation, LiveItem, annotate, format_duration
from codex_tui.screens.dashboard import DashboardScreen
from codex_tui.screens.export import ExportModal
from codex_tui.widgets import transcript as transcript_module
from codex_tui.widgets.event_view import PAGE_EVENTS, EventView
from codex_tui.widgets.transcript import (
    LINE_CACHE_LINES,
    STRIP_CACHE_ENTRIES,
    Entry,
    Transcript,
)
from server_client.client import STREAM_READ_TIMEOUT_S, CodexTuiClient
from server_client.codex import Usage
from server_client.models import Event, EventIn, EventKind, Sandbox, Task, TaskStatus
from tests.conftest import ServerFactory
from tests.support.tui_helpers import (
    SEED_TS,
    SIZE,
    SeedTask,
    event_view,
    log_text,
    record_refreshes,
    running_app,
    seed_tasks,
    task_list,
    type_text,
    wait_for,
)
from themes import APP_CSS_PATH, DEFAULT_THEME, THEMES

# -- helpers --------------------------------------------------------------------------------


def stderr(line: str) -> EventIn:
    """A stderr event to seed."""
    return EventIn(ts=SEED_TS, kind=EventKind.STDERR, data={"line": line})


def stdout(line: str) -> EventIn:
    """A stdout line to seed: one entry each (a pane folds runs of stderr lines)."""
    return EventIn(ts=SEED_TS, kind=EventKind.STDOUT, data={"line": line})


def codex_in(data: dict[str, Any]) -> EventIn:
    """A codex event to seed."""
    return EventIn(ts=SEED_TS, kind=EventKind.CODEX, data=data)


def seqs(transcript: Transcript) -> list[int]:
    """The seqs of the entries the window holds."""
    return [entry.seq for entry in transcript.entries]


def assert_window(transcript: Transcript, limit: int) -> None:
    """The window is bounded and its seqs strictly increase without a gap (every seeded
    event shows something)."""
    held = seqs(transcript)
    assert 0 < len(held) <= limit, f"{len(held)} entries in a window of {limit}"
    assert held == list(range(held[0], held[0] + len(held))), "contiguous, increasing seqs"


def warnings(app: App[Any]) -> list[str]:
    """The messages of the warning notifications shown."""
    return [n.message for n in app._notifications if n.severity == "warning"]


def starts_before(transcript: Transcript, seq: int) -> Callable[[], bool]:
    """A condition: the window starts before ``seq``."""
    return lambda: (transcript.first_seq or seq) < seq


def files_in(folder: Path) -> list[str]:
    """The names in ``folder``, sorted."""
    return sorted(path.name for path in folder.iterdir())


def searching(app: App[Any], view: EventView) -> bool:
    """True while ``view`` searches the server."""
    return any(w.group == "search" and w.node is view and w.is_running for w in app.workers)


def cursor_text(transcript: Transcript) -> str:
    """The searchable text of the entry under the cursor ('' without a cursor)."""
    entry = transcript.cursor_entry
    return entry.text if entry is not None else ""


class PaneHost(App[None]):
    """A bare app with codex-tui's look that shows one :class:`EventView`.

    Args:
        client: The SDK client.
        max_entries: The pane's window, in events.
    """

    CSS_PATH = APP_CSS_PATH

    def __init__(self, client: CodexTuiClient, max_entries: int) -> None:
        super().__init__()
        self.client = client
        self.max_entries = max_entries
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = DEFAULT_THEME

    def compose(self) -> ComposeResult:
        yield EventView(self.client, max_entries=self.max_entries, id="pane")

    @property
    def pane(self) -> EventView:
        """The pane."""
        return self.query_one("#pane", EventView)


async def replayed(pilot: Pilot[Any], view: EventView, task: Task) -> None:
    """Wait until ``view`` has shown every stored event of the finished ``task``."""
    await wait_for(
        pilot,
        lambda: view.last_seq == task.last_seq and not view.streaming and not view.pending,
        "the replay",
        60,
    )
    await wait_for(
        pilot, lambda: view.transcript.last_seq == task.last_seq, "the last event in the window"
    )


async def press_up_until(
    pilot: Pilot[Any], transcript: Transcript, wanted: Callable[[Entry], bool], what: str
) -> Entry:
    """Press ``up`` until the cursor is on an entry ``wanted`` accepts (each press moves the
    cursor one entry); returns that entry."""
    for _ in range(len(transcript.entries) + 1):
        before = transcript.cursor
        await pilot.press("up")
        entry = transcript.cursor_entry
        assert entry is not None
        if before is not None:
            assert transcript.cursor == before - 1, "up moves the cursor one entry"
        if wanted(entry):
            return entry
    raise AssertionError(f"no entry for {what}")


def is_item(kind: str, phase: str = "item.completed") -> Callable[[Entry], bool]:
    """Accepts entries of a codex item of ``kind`` in ``phase``."""

    def accept(entry: Entry) -> bool:
        shown = entry.shown_event  # a command shows as it completed, where it started
        data = shown.data
        return (
            shown.kind is EventKind.CODEX
            and isinstance(data, dict)
            and data.get("type") == phase
            and isinstance(data.get("item"), dict)
            and data["item"].get("type") == kind
        )

    return accept


# -- paging back and forth ---------------------------------------------------------------------

PAGED_EVENTS = 3200


@pytest.mark.parametrize("max_entries", [1000, 300], ids=["window-1000", "window-300"])
async def test_home_pages_back_to_the_first_event_and_end_reloads_the_tail(
    server_factory: ServerFactory, max_entries: int
) -> None:
    server = server_factory(local_worker=False)
    lines = [stdout(f"page line {n}") for n in range(PAGED_EVENTS)]
    seeded = await seed_tasks(server, [SeedTask("many events", lines, TaskStatus.COMPLETED)])
    [task] = seeded.tasks
    assert task.last_seq > 3 * max(max_entries, PAGE_EVENTS)
    async with server.client() as client:
        app = PaneHost(client, max_entries)
        async with app.run_test(size=SIZE) as pilot:
            view = app.pane
            transcript = view.transcript
            view.follow(task)
            transcript.focus()
            await replayed(pilot, view, task)
            assert_window(transcript, max_entries)
            assert len(transcript.entries) == max_entries
            assert not transcript.at_start and transcript.following
            shown: list[int] = seqs(transcript)

            for _ in range(task.last_seq // 100):  # far more presses than pages
                first = transcript.first_seq
                assert first is not None
                await pilot.press("home")
                await wait_for(
                    pilot, starts_before(transcript, first), f"the window to page back from {first}"
                )
                assert_window(transcript, max_entries)
                assert not transcript.following
                shown.extend(seqs(transcript))
                if transcript.at_start:
                    break
            assert transcript.at_start
            assert transcript.first_seq == 1
            assert not transcript.at_end
            # Every event was in the window at some point: paging back skipped none.
            skipped = sorted(set(range(1, task.last_seq + 1)) - set(shown))
            assert not skipped, f"{len(skipped)} events never paged in, e.g. {skipped[:3]}"

            await pilot.press("end")
            await wait_for(
                pilot,
                lambda: transcript.last_seq == task.last_seq and transcript.following,
                "the newest events again",
            )
            assert_window(transcript, max_entries)
            assert transcript.at_end
            assert transcript.scroll_y == transcript.max_scroll_y
            assert f"page line {PAGED_EVENTS - 1}" in log_text(view)
            assert view.events_seen == task.last_seq  # the stream itself delivered each once


# -- folding and raw JSON ----------------------------------------------------------------------

FOLD_OUTPUT = "".join(f"out line {n:02d}\n" for n in range(1, 31))
FOLD_TASK = SeedTask(
    "Fold the long output",
    [
        stderr("Reading additional input from stdin..."),
        codex_in({"type": "thread.started", "thread_id": "t-1"}),
        codex_in({"type": "turn.started"}),
        codex_in(
            {
                "type": "item.completed",
                "item": {
                    "id": "item_0",
                    "type": "reasoning",
                    "text": "**Planning the fold**\nfirst detail line\nsecond detail line",
                },
            }
        ),
        codex_in(
            {
                "type": "item.started",
                "item": {
                    "id": "item_1",
                    "type": "command_execution",
                    "command": "seq 30",
                    "aggregated_output": "",
                    "exit_code": None,
                    "status": "in_progress",
                },
            }
        ),
        codex_in(
            {
                "type": "item.completed",
                "item": {
                    "id": "item_1",
                    "type": "command_execution",
                    "command": "seq 30",
                    "aggregated_output": FOLD_OUTPUT,
                    "exit_code": 0,
                    "status": "completed",
                },
            }
        ),
        codex_in(
            {
                "type": "item.completed",
                "item": {"id": "item_2", "type": "agent_message", "text": "All folded up."},
            }
        ),
        codex_in({"type": "turn.completed", "usage": {"input_tokens": 10, "output_tokens": 2}}),
    ],
    TaskStatus.COMPLETED,
    exit_code=0,
)


async def open_seeded(
    client: CodexTuiClient, app: CodexTuiApp, pilot: Pilot[None]
) -> tuple[EventView, Task]:
    """Wait for the dashboard's pane to replay the highlighted (only) task; focus it."""
    tasks = task_list(app)
    await wait_for(pilot, lambda: tasks.selected_task is not None, "the task")
    view = event_view(app)
    selected = tasks.selected_task
    assert selected is not None
    task = await client.get_task(selected.id)
    await replayed(pilot, view, task)
    await pilot.press("enter")  # from the list into the pane
    assert app.focused is view.transcript
    return view, task


async def test_enter_folds_and_unfolds_long_output_and_reasoning(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    await seed_tasks(server, [FOLD_TASK])
    async with server.client() as client, running_app(client, server) as (app, pilot):
        view, _task = await open_seeded(client, app, pilot)
        transcript = view.transcript

        text = log_text(view)
        assert "out line 06" in text and "out line 07" not in text
        assert "24 more lines (enter shows them)" in text
        assert "▸ Planning the fold …" in text
        assert "first detail line" not in text

        # Enter on an entry that does not fold (the agent message) changes nothing.
        message = await press_up_until(pilot, transcript, is_item("agent_message"), "message")
        await pilot.press("enter")
        assert not message.expanded and not message.raw
        assert log_text(view) == text
        assert transcript.cursor_entry is message

        command = await press_up_until(pilot, transcript, is_item("command_execution"), "cmd")
        await pilot.press("enter")
        assert command.expanded
        unfolded = log_text(view)
        assert "out line 30" in unfolded
        assert "more lines" not in unfolded
        assert transcript.cursor_entry is command
        await pilot.press("enter")
        assert not command.expanded
        assert log_text(view) == text

        reasoning = await press_up_until(pilot, transcript, is_item("reasoning"), "reasoning")
        await pilot.press("enter")
        assert reasoning.expanded
        expanded = log_text(view)
        assert "first detail line" in expanded and "second detail line" in expanded
        assert "out line 07" not in expanded  # the command is folded again
        await pilot.press("enter")
        assert log_text(view) == text


async def test_v_shows_the_raw_json_of_the_cursor_entry_and_back(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    await seed_tasks(server, [FOLD_TASK])
    async with server.client() as client, running_app(client, server) as (app, pilot):
        view, _task = await open_seeded(client, app, pilot)
        transcript = view.transcript
        text = log_text(view)
        assert '"seq":' not in text

        command = await press_up_until(pilot, transcript, is_item("command_execution"), "cmd")
        await pilot.press("v")
        assert command.raw
        raw = log_text(view)
        assert f"raw · seq {command.shown_event.seq} · codex" in raw
        assert f'"seq": {command.shown_event.seq}' in raw
        assert '"kind": "codex"' in raw
        assert '"aggregated_output": "out line 01\\nout line 02' in raw
        assert raw.count('"seq":') == 1  # only the cursor entry

        await pilot.press("v")
        assert not command.raw
        assert log_text(view) == text

        # Enter on a raw entry shows its rendering again (folded, as it was).
        await pilot.press("v", "enter")
        assert not command.raw and not command.expanded
        assert log_text(view) == text


# -- search ----------------------------------------------------------------------------------

SEARCH_EVENTS = 3000
#: Indexes (among the uploaded events) of the lines that say "marker".
MARKERS = (2990, 2995, 2998)


def search_task() -> SeedTask:
    """A finished task longer than a pane's window: a word only in its first events, and
    three markers near its end."""
    lines = []
    for n in range(SEARCH_EVENTS):
        if n == 0:
            lines.append(stdout("the ancientword lives here"))
        elif n in MARKERS:
            lines.append(stdout(f"marker number {MARKERS.index(n)}"))
        else:
            lines.append(stdout(f"filler line {n}"))
    return SeedTask("Search a long task", lines, TaskStatus.COMPLETED, exit_code=0)


async def search(pilot: Pilot[None], view: EventView, query: str) -> None:
    """``/``, replace the query with ``query``, Enter."""
    await pilot.press("slash")
    field = view.query_one("#search-input", Input)
    assert view.has_class("-searching") and field.has_focus
    await pilot.press("ctrl+a", "ctrl+k")
    await type_text(pilot, query)
    await pilot.press("enter")
    assert view.transcript.has_focus


async def test_search_moves_the_cursor_through_matches_and_pages_the_server(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    await seed_tasks(server, [search_task()])
    async with server.client() as client, running_app(client, server) as (app, pilot):
        view, task = await open_seeded(client, app, pilot)
        transcript = view.transcript
        limit = view.max_entries
        assert len(transcript.entries) == limit and not transcript.at_start
        assert transcript.first_seq is not None and transcript.first_seq > 3

        await search(pilot, view, "marker")
        assert transcript.query_text == "marker"
        assert "marker number 2" in cursor_text(transcript)  # the newest match
        await pilot.press("n")
        assert "marker number 1" in cursor_text(transcript)
        await pilot.press("n")
        assert "marker number 0" in cursor_text(transcript)
        await pilot.press("N")
        assert "marker number 1" in cursor_text(transcript)
        await pilot.press("N")
        assert "marker number 2" in cursor_text(transcript)
        assert isinstance(app.screen, DashboardScreen)  # n and N did not open the compose screen

        # A word only in events older than the window: the server is paged back to it.
        await search(pilot, view, "ancientword")
        await wait_for(
            pilot, lambda: "ancientword" in cursor_text(transcript), "the match on the server"
        )
        assert transcript.at_start and transcript.first_seq == 1
        assert_window(transcript, limit)
        entry = transcript.cursor_entry
        assert entry is not None and entry.seq == 3  # after the queued and running statuses

        # A word found nowhere: a warning, and the cursor stays.
        assert not warnings(app)
        await search(pilot, view, "nowhereword")
        await wait_for(pilot, lambda: bool(warnings(app)), "the no-match warning")
        assert any("No older match for 'nowhereword'" in m for m in warnings(app))
        assert transcript.cursor_entry is entry

        await pilot.press("escape")
        assert transcript.query_text == ""
        assert "/nowhereword" not in str(view.border_subtitle)
        assert task.last_seq == SEARCH_EVENTS + 3


async def test_a_search_with_no_match_on_the_server_leaves_the_cursor_and_window(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    await seed_tasks(server, [search_task()])
    async with server.client() as client, running_app(client, server) as (app, pilot):
        view, _task = await open_seeded(client, app, pilot)
        transcript = view.transcript
        await search(pilot, view, "marker")
        entry = transcript.cursor_entry
        assert entry is not None and "marker number 2" in entry.text
        window = seqs(transcript)
        assert not transcript.at_start  # older events are only on the server

        await search(pilot, view, "nowhereword")
        await wait_for(pilot, lambda: bool(warnings(app)), "the no-match warning", 30)
        await wait_for(pilot, lambda: not searching(app, view), "the search to end")
        assert any("No older match for 'nowhereword'" in m for m in warnings(app))
        cursor = transcript.cursor_entry
        assert cursor is not None, "the cursor was lost"
        assert cursor.seq == entry.seq, "the cursor moved"
        assert seqs(transcript) == window, "the window moved"


# -- export ----------------------------------------------------------------------------------

EXPORT_TASK = SeedTask(
    "Explain the export ``` fence",
    [
        codex_in({"type": "thread.started", "thread_id": "t-2"}),
        codex_in({"type": "turn.started"}),
        codex_in(
            {
                "type": "item.completed",
                "item": {"id": "item_0", "type": "agent_message", "text": "First answer."},
            }
        ),
        codex_in(
            {
                "type": "item.completed",
                "item": {
                    "id": "item_1",
                    "type": "command_execution",
                    "command": "cat README.md",
                    "aggregated_output": "```py\nprint(1)\n```\n",
                    "exit_code": 0,
                    "status": "completed",
                },
            }
        ),
        codex_in(
            {
                "type": "item.completed",
                "item": {"id": "item_2", "type": "agent_message", "text": "Second answer."},
            }
        ),
        codex_in({"type": "turn.completed", "usage": {"input_tokens": 5, "output_tokens": 1}}),
    ],
    TaskStatus.COMPLETED,
    exit_code=0,
)


async def export_to(pilot: Pilot[None], app: CodexTuiApp, path: Path) -> ExportModal:
    """``e``, enter ``path`` in the modal, Enter; returns the modal."""
    await pilot.press("e")
    await wait_for(pilot, lambda: isinstance(app.screen, ExportModal), "the export modal")
    modal = app.screen
    assert isinstance(modal, ExportModal)
    field = modal.query_one("#export-path", Input)
    assert field.has_focus
    assert field.value.endswith(".md")  # a Markdown file is offered
    field.value = str(path)
    await pilot.press("enter")
    return modal


async def test_e_exports_markdown_and_json_lines(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(local_worker=False)
    await seed_tasks(server, [EXPORT_TASK])
    async with server.client() as client, running_app(client, server) as (app, pilot):
        _view, task = await open_seeded(client, app, pilot)

        out = tmp_path / "exports"
        out.mkdir()
        markdown = out / "transcript.md"
        await export_to(pilot, app, markdown)
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        await wait_for(
            pilot,
            lambda: any(f"Wrote {task.last_seq} events" in n.message for n in app._notifications),
            "the export",
        )
        text = markdown.read_text(encoding="utf-8")
        assert text.startswith(f"# codex-tui task {task.id}")
        assert "Explain the export ``` fence" in text
        assert "First answer." in text and "Second answer." in text
        assert text.index("First answer.") < text.index("Second answer.")
        assert "````console\n```py\nprint(1)\n```\n````" in text
        assert "*status: completed*" in text

        jsonl = out / "transcript.jsonl"
        await export_to(pilot, app, jsonl)
        await wait_for(pilot, lambda: jsonl.exists() and jsonl.stat().st_size > 0, "the file")
        await wait_for(
            pilot,
            lambda: len(jsonl.read_text(encoding="utf-8").splitlines()) == task.last_seq,
            "every event",
        )
        envelopes = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
        assert [e["seq"] for e in envelopes] == list(range(1, task.last_seq + 1))
        assert {e["kind"] for e in envelopes} == {"status", "codex"}
        assert envelopes[-1]["data"]["status"] == "completed"

        missing = out / "no-such-folder" / "transcript.md"
        modal = await export_to(pilot, app, missing)
        assert app.screen is modal
        assert modal.has_class("-error")
        error = str(modal.query_one("#export-error", Static).content)
        assert "does not exist" in error and "no-such-folder" in error
        assert not missing.parent.exists()
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
        assert files_in(out) == ["transcript.jsonl", "transcript.md"]


# -- export writers (no server) ------------------------------------------------------------------

TS = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def event(kind: EventKind, data: Any, seq: int = 1, ts: datetime = TS) -> Event:
    """An event."""
    return Event(seq=seq, ts=ts, kind=kind, data=data)


def item(phase: str, body: dict[str, Any]) -> Event:
    """A codex ``item.<phase>`` event."""
    return event(EventKind.CODEX, {"type": f"item.{phase}", "item": body})


def test_markdown_agent_message_and_reasoning() -> None:
    message = {"id": "i0", "type": "agent_message", "text": "Done: **all** good.\n\n"}
    assert markdown_event(item("completed", message)) == "Done: **all** good.\n"
    assert markdown_event(item("started", message)) == ""
    reasoning = {"id": "i1", "type": "reasoning", "text": "**Plan**\nread the code"}
    assert markdown_event(item("completed", reasoning)) == "> **Plan**\n> read the code\n"


def test_markdown_command_fences_output_longer_than_its_backticks() -> None:
    command = {
        "id": "i2",
        "type": "command_execution",
        "command": "cat notes.md",
        "aggregated_output": "before\n```\ninside\n```\nafter\n",
        "exit_code": 2,
        "status": "failed",
    }
    assert markdown_event(item("completed", command)) == (
        "**$ cat notes.md** (exit 2, failed)\n\n"
        "````console\nbefore\n```\ninside\n```\nafter\n````\n"
    )
    quiet = command | {"aggregated_output": "", "exit_code": 0, "status": "completed"}
    assert markdown_event(item("completed", quiet)) == "**$ cat notes.md** (exit 0, completed)\n\n"
    assert markdown_event(item("started", command | {"status": "in_progress"})) == ""


def test_markdown_file_change_todo_list_and_errors() -> None:
    changes = {
        "id": "i3",
        "type": "file_change",
        "changes": [{"path": "/a/new.py", "kind": "add"}, {"path": "/a/old.py", "kind": "delete"}],
        "status": "completed",
    }
    assert markdown_event(item("completed", changes)) == (
        "**files changed**\n\n- add `/a/new.py`\n- delete `/a/old.py`\n"
    )
    todo = {
        "id": "i4",
        "type": "todo_list",
        "items": [{"text": "write it", "completed": True}, {"text": "test it", "completed": False}],
    }
    assert markdown_event(item("completed", todo)) == "**todo**\n\n- [x] write it\n- [ ] test it\n"
    assert markdown_event(item("updated", todo)) == ""
    warning = {"id": "i5", "type": "error", "message": "rg: denied"}
    assert markdown_event(item("completed", warning)) == "> **warning:** rg: denied\n"
    top = event(EventKind.CODEX, {"type": "error", "message": "Reconnecting... 1/3"})
    assert markdown_event(top) == "> **error:** Reconnecting... 1/3\n"
    failed = event(EventKind.CODEX, {"type": "turn.failed", "error": {"message": "overloaded"}})
    assert markdown_event(failed) == "> **turn failed:** overloaded\n"


def test_markdown_unknown_types_become_json_fences() -> None:
    unknown = event(EventKind.CODEX, {"type": "thread.compacted", "tokens": 5120})
    text = markdown_event(unknown)
    assert text.startswith("```json\n") and text.endswith("\n```\n")
    assert json.loads(text.removeprefix("```json\n").removesuffix("\n```\n")) == {
        "type": "thread.compacted",
        "tokens": 5120,
    }
    odd_item = {"id": "i6", "type": "image_view", "path": "/a/x.png"}
    text = markdown_event(item("completed", odd_item))
    assert text.startswith("```json\n")
    assert json.loads(text.removeprefix("```json\n").removesuffix("\n```\n")) == odd_item
    backticks = event(EventKind.CODEX, {"type": "x.custom", "text": "```"})
    assert markdown_event(backticks).startswith("````json\n")


def test_markdown_status_stream_lines_thread_and_turns() -> None:
    status = event(EventKind.STATUS, {"status": "failed", "error": "turn failed"})
    assert markdown_event(status) == "*status: failed — turn failed*\n"
    assert markdown_event(event(EventKind.STATUS, {"status": "running"})) == "*status: running*\n"
    line = event(EventKind.STDERR, {"line": "warn"})
    assert markdown_event(line) == '```text\n{"line": "warn"}\n```\n'
    assert markdown_event(event(EventKind.STDOUT, "plain")) == "```text\nplain\n```\n"
    thread = event(EventKind.CODEX, {"type": "thread.started", "thread_id": "t-9"})
    assert markdown_event(thread) == "*thread t-9*\n"
    assert markdown_event(event(EventKind.CODEX, {"type": "turn.started"})) == "---\n"
    usage = {"input_tokens": 12, "output_tokens": 3}
    done = event(EventKind.CODEX, {"type": "turn.completed", "usage": usage})
    assert markdown_event(done) == "*tokens (thread total): input tokens 12, output tokens 3*\n"


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("t.jsonl", "jsonl"),
        ("t.JSONL", "jsonl"),
        ("t.json", "jsonl"),
        ("t.ndjson", "jsonl"),
        ("t.md", "md"),
        ("t.txt", "md"),
        ("transcript", "md"),
        ("t.jsonl.md", "md"),
    ],
)
def test_format_for_path(name: str, fmt: str) -> None:
    assert format_for_path(Path("/tmp") / name) == fmt


# -- annotations (no server) ----------------------------------------------------------------------


def plain(renderables: list[RenderableType]) -> str:
    """Render to plain text, without colours."""
    console = Console(width=100, record=True, color_system=None, file=io.StringIO())
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


def shown(ev: Event, note: Annotation) -> str:
    """The plain text of ``ev`` rendered with ``note``."""
    return plain(render_annotated(ev, note, Palette()))


def command(item_id: str, phase: str, ts: datetime, exit_code: int | None = None) -> Event:
    """A command's ``item.<phase>`` at ``ts``."""
    body = {
        "id": item_id,
        "type": "command_execution",
        "command": f"run {item_id}",
        "aggregated_output": "ok\n" if exit_code is not None else "",
        "exit_code": exit_code,
        "status": "in_progress" if exit_code is None else "completed",
    }
    return event(EventKind.CODEX, {"type": f"item.{phase}", "item": body}, ts=ts)


def test_command_duration_comes_from_its_started_and_completed_timestamps() -> None:
    state = RenderState()
    # A command's start begins the live item its entry shows until it completes.
    for name, started in (("a", TS), ("b", TS + timedelta(seconds=1))):
        note = annotate(command(name, "started", started), state)
        assert note.duration_s is None and isinstance(note.live, LiveItem)
        assert (note.live.item_id, note.live.started) == (name, started)
    done_b = command("b", "completed", TS + timedelta(seconds=3, milliseconds=500), 0)
    note_b = annotate(done_b, state)
    assert note_b.duration_s == pytest.approx(2.5)
    done_a = command("a", "completed", TS + timedelta(minutes=3, seconds=5), 0)
    note_a = annotate(done_a, state)
    assert note_a.duration_s == pytest.approx(185.0)
    assert " exit 0  2.5s $ run b" in shown(done_b, note_b)
    assert " exit 0  3m05s $ run a" in shown(done_a, note_a)
    # Completed again, or never started: no duration.
    assert annotate(done_a, state).duration_s is None
    orphan = command("c", "completed", TS, 0)
    assert annotate(orphan, state).duration_s is None
    assert "exit 0  $ run c" in shown(orphan, Annotation())
    # A clock that went backwards never gives a negative duration.
    annotate(command("d", "started", TS + timedelta(seconds=9)), state)
    assert annotate(command("d", "completed", TS, 0), state).duration_s == 0.0


def test_turns_are_numbered_and_usage_is_the_difference_to_the_previous_turn() -> None:
    state = RenderState()
    turn = event(EventKind.CODEX, {"type": "turn.started"})
    first = {"input_tokens": 1000, "cached_input_tokens": 800, "output_tokens": 50}
    second = {"input_tokens": 2500, "cached_input_tokens": 1800, "output_tokens": 80}
    done_1 = event(EventKind.CODEX, {"type": "turn.completed", "usage": first})
    done_2 = event(EventKind.CODEX, {"type": "turn.completed", "usage": second})

    note = annotate(turn, state)
    assert note.turn == 1
    assert "── turn 1 ──" in shown(turn, note)
    note_1 = annotate(done_1, state)
    assert note_1.previous_usage is None
    assert "this turn" not in shown(done_1, note_1)
    note = annotate(turn, state)
    assert note.turn == 2
    assert "── turn 2 ──" in shown(turn, note)
    note_2 = annotate(done_2, state)
    assert note_2.previous_usage == Usage(1000, 800, 50)
    text = shown(done_2, note_2)
    assert "tokens in 2,500 (cached 1,800) · out 80" in text
    assert "this turn +1,500 in (+1,000 cached) +30 out" in text
    assert annotate(turn, state).turn == 3
    assert state.turns == 3
    # Other events do not count as turns.
    annotate(event(EventKind.STATUS, {"status": "running"}), state)
    assert state.turns == 3 and state.last_status is TaskStatus.RUNNING


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.85, "850ms"),
        (1.0, "1.0s"),
        (4.2, "4.2s"),
        (59.0, "59.0s"),
        (60.0, "1m00s"),
        (185.0, "3m05s"),
        (3599.0, "59m59s"),
        (3600.0, "1h00m"),
        (3720.0, "1h02m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# -- streaming cost (no server: events fed straight into a pane) ---------------------------------


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BurstClient(CodexTuiClient):
    """A client whose stream hands over ``events`` at once, never awaiting between them (as a
    burst already buffered from the network does)."""

    def __init__(self, events: Sequence[Event] = ()) -> None:
        super().__init__("http://127.0.0.1:9", "ctu_nobody")
        self.events = events

    async def stream_events(
        self,
        task_id: str,
        *,
        after: int = 0,
        read_timeout: float = STREAM_READ_TIMEOUT_S,
        max_attempts: int | None = None,
    ) -> AsyncIterator[Event]:
        for ev in self.events:
            yield ev

    async def follow_tasks(
        self,
        positions: Mapping[str, int],
        *,
        read_timeout: float = STREAM_READ_TIMEOUT_S,
        max_attempts: int | None = None,
    ) -> AsyncIterator[Event]:
        (task_id,) = positions
        for ev in self.events:
            yield ev.model_copy(update={"task_id": task_id})


class StreamHost(App[None]):
    """A bare app with one :class:`EventView` on a fake clock and a fake client."""

    CSS_PATH = APP_CSS_PATH

    def __init__(self, clock: FakeClock, client: CodexTuiClient, max_entries: int = 2000) -> None:
        super().__init__()
        self.clock = clock
        self.client = client
        self.max_entries = max_entries

    def compose(self) -> ComposeResult:
        yield EventView(self.client, max_entries=self.max_entries, clock=self.clock, id="pane")

    @property
    def pane(self) -> EventView:
        """The pane."""
        return self.query_one("#pane", EventView)


def codex_turns(count: int, first_seq: int = 1) -> list[Event]:
    """``count`` codex events in the proportions of a turn: a command started and completed
    with output, reasoning, a to-do update, a file change, an agent message's early copy
    (which shows nothing) and the message itself, in Markdown."""
    out: list[Event] = []
    n = 0
    while len(out) < count:
        n += 1
        cmd = {"id": f"c{n}", "type": "command_execution", "command": "rg -n parse src"}
        output = "".join(f"src/m{i}.py:{i}: parse\n" for i in range(12))
        message = {"id": f"m{n}", "type": "agent_message", "text": f"Turn **{n}**: ran `rg`."}
        bodies: list[dict[str, Any]] = [
            {"type": "item.started", "item": cmd | {"status": "in_progress"}},
            {
                "type": "item.completed",
                "item": cmd | {"status": "completed", "exit_code": 0, "aggregated_output": output},
            },
            {"type": "item.completed", "item": {"id": f"r{n}", "type": "reasoning", "text": "x"}},
            {
                "type": "item.updated",
                "item": {"id": f"t{n}", "type": "todo_list", "items": [{"text": "a"}]},
            },
            {
                "type": "item.completed",
                "item": {"id": f"f{n}", "type": "file_change", "changes": [{"path": "a.py"}]},
            },
            {"type": "item.updated", "item": message},
            {"type": "item.completed", "item": message},
        ]
        base = first_seq + len(out)
        out.extend(event(EventKind.CODEX, body, seq=base + i) for i, body in enumerate(bodies))
    return out[:count]


def running_task(task_id: str, prompt: str) -> Task:
    """A running task record, as the list would hand it to a pane."""
    return Task(
        id=task_id,
        prompt=prompt,
        workdir=None,
        model=None,
        sandbox=Sandbox.WORKSPACE_WRITE,
        status=TaskStatus.RUNNING,
        created_at=TS,
    )


def feed(view: EventView, events: Sequence[Event]) -> None:
    """Deliver ``events`` to ``view`` as its stream would."""
    for ev in events:
        view._ingest("task", ev)


def counting_renders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count full renders of events in the transcript (their seqs, in order)."""
    rendered: list[int] = []

    def counting(ev: Event, *args: Any, **kwargs: Any) -> list[RenderableType]:
        rendered.append(ev.seq)
        return render_annotated(ev, *args, **kwargs)

    monkeypatch.setattr(transcript_module, "render_annotated", counting)
    return rendered


async def test_a_ten_thousand_event_flush_renders_only_what_is_in_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered = counting_renders(monkeypatch)
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        transcript = view.transcript
        events = codex_turns(10_000)
        feed(view, events)
        assert rendered == [], "deciding what shows renders nothing"
        clock.now += 1
        view._flush()
        await pilot.pause()
        assert view.pending == 0
        assert len(transcript.entries) == view.max_entries
        assert transcript.last_seq == events[-1].seq
        assert transcript.following and transcript.scroll_y == transcript.max_scroll_y
        # Only the newest entries, those that fill the view, were rendered (each once).
        assert 0 < len(rendered) <= transcript.size.height
        assert len(set(rendered)) == len(rendered)
        assert min(rendered) > events[-1].seq - 3 * transcript.size.height
        view_text = "".join(transcript.render_line(y).text for y in range(transcript.size.height))
        assert "ran rg" in view_text


async def test_memory_stays_bounded_while_a_long_stream_passes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    app = StreamHost(clock, BurstClient(), max_entries=500)
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        transcript = view.transcript
        for start in range(1, 20_000, 2_000):
            feed(view, codex_turns(2_000, first_seq=start))
            clock.now += 1
            view._flush()
            await pilot.pause()
        assert len(transcript.entries) == 500
        gc.collect()
        alive = sum(1 for obj in gc.get_objects() if isinstance(obj, Entry))
        assert alive <= 500 + view.max_entries // 10, f"{alive} entries alive"
        # Read the whole window from the top: the render caches stay bounded.
        rendered = counting_renders(monkeypatch)
        transcript.scroll_to(y=0, animate=False, immediate=True)
        await pilot.pause()
        while transcript.scroll_y < transcript.max_scroll_y:
            transcript.scroll_to(y=transcript.scroll_y + 20, animate=False, immediate=True)
            await pilot.pause()
        assert len(set(rendered)) > STRIP_CACHE_ENTRIES, "every entry was shown once"
        assert len(transcript._cached) <= STRIP_CACHE_ENTRIES
        cached = [entry for entry in transcript.entries if entry.strips is not None]
        assert len(cached) <= STRIP_CACHE_ENTRIES
        assert len(transcript._lines) <= LINE_CACHE_LINES


async def test_a_steady_stream_redraws_a_following_pane_at_most_ten_times_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """30 events a second: each event alone would scroll (and so redraw) the whole pane; hand-
    overs to the transcript come at most every 100 ms, and the first event after a quiet
    spell shows at the next tick of the 50 ms flush timer."""
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        transcript = view.transcript
        handovers: list[tuple[float, int]] = []
        append = transcript.append

        def spy(entries: Sequence[Entry]) -> None:
            handovers.append((clock.now, len(entries)))
            append(entries)

        monkeypatch.setattr(transcript, "append", spy)
        await pilot.pause()
        full_redraws = count_full_redraws(view, monkeypatch)
        events = [event(EventKind.STDOUT, {"line": f"line {n}"}, seq=n + 1) for n in range(90)]
        arrivals = [0.013 + n / 30 for n in range(90)]  # 30/s for 3 s
        pending = list(zip(arrivals, events, strict=True))
        for tick in range(1, 80):  # the flush timer: every 50 ms, for 4 s
            clock.now = tick * 0.05
            while pending and pending[0][0] <= clock.now:
                feed(view, [pending.pop(0)[1]])
            view._flush()
        await pilot.pause()

        assert sum(count for _, count in handovers) == 90, "every event was handed over"
        assert handovers[0][0] == 0.05, "the first event shows at the next tick"
        times = [at for at, _ in handovers]
        assert all(b - a >= 0.1 - 1e-9 for a, b in zip(times, times[1:], strict=False))
        for second in range(4):
            assert len([t for t in times if second <= t < second + 1]) <= 10
        assert len(handovers) <= 31
        assert full_redraws == [], "hand-overs do not redraw the pane's border and children"
        assert transcript.following and transcript.scroll_y == transcript.max_scroll_y
        assert "line 89" in view.text()


def screen_text(app: App[Any]) -> str:
    """The text of the screen as drawn now (spaces as no-break spaces)."""
    return html.unescape(app.export_screenshot())


def count_full_redraws(view: EventView, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every refresh of the whole of ``view`` (border and children): a list of the
    border title and subtitle at the time."""
    full: list[str] = []
    refresh = view.refresh

    def spy(*regions: Region, **kwargs: bool) -> EventView:
        if not regions and not view._border_rows:
            full.append(f"{view.border_title} / {view.border_subtitle}")
        return refresh(*regions, **kwargs)

    monkeypatch.setattr(view, "refresh", spy)
    return full


async def test_counting_new_events_while_reading_redraws_only_the_border_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the user reads back, every batch changes the "N new" count in the border's
    subtitle; only that row (and the scrollbar) is marked for repainting, not the lines being
    read or the rest of the pane."""
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        transcript = view.transcript
        task = running_task("t-read", "read back")
        view.follow(task)
        await wait_for(pilot, lambda: not view.streaming, "the (empty) stream")
        feed(view, codex_turns(200))
        clock.now += 1
        view._flush()
        await pilot.pause()
        transcript.action_scroll_top()
        await pilot.pause()
        assert not transcript.following

        full_redraws = count_full_redraws(view, monkeypatch)
        repainted = record_refreshes(transcript, monkeypatch)
        for batch in range(3):
            feed(view, codex_turns(7, first_seq=201 + 7 * batch))
            clock.now += 1
            view._flush()
            await pilot.pause()
        assert view.unseen == 18  # 6 of every 7 events show something
        assert full_redraws == []
        assert repainted == [], "the lines being read were not sent again"
        assert "18\xa0new\xa0(end)" in screen_text(app)
        await pilot.press("end")
        await wait_for(pilot, lambda: transcript.following, "following again")
        assert "new\xa0(end)" not in screen_text(app)


async def test_a_buffered_burst_lets_the_app_run_between_slices() -> None:
    """A burst already read from the network arrives without an await between events; the
    stream hands the loop back every few ms instead of running until the burst ends."""
    events = [
        event(EventKind.STATUS, {"status": "running"}, seq=1),
        *codex_turns(10_000, first_seq=2),
    ]
    clock = FakeClock()
    app = StreamHost(clock, BurstClient(events))
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        seen: list[int] = []
        loop = asyncio.get_running_loop()

        def observe() -> None:
            seen.append(view.events_seen)
            if view.events_seen < len(events):
                loop.call_soon(observe)

        task = running_task("t-burst", "burst")
        view.follow(task)
        loop.call_soon(observe)
        await wait_for(pilot, lambda: view.events_seen == len(events), "the burst", 60)
        between = {n for n in seen if 0 < n < len(events)}
        assert len(between) >= 3, f"the loop ran only at {sorted(between)}"


async def test_many_live_items_finishing_in_one_flush_show_their_results() -> None:
    """More finished items at once than one binary search each is worth (the transcript
    then finds them in one pass over its window): those in view show their result at once,
    those above the view when scrolled to; no entry is added for them."""
    clock = FakeClock()
    app = StreamHost(clock, BurstClient(), max_entries=50)
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        transcript = view.transcript
        commands = 80

        def command(n: int, phase: str, seq: int) -> Event:
            body: dict[str, Any] = {"id": f"c{n}", "type": "command_execution"}
            body["command"] = f"step {n}"
            if phase == "completed":
                body |= {"status": "completed", "exit_code": 0, "aggregated_output": f"out-{n}\n"}
            ev = item(phase, body)
            ev.seq = seq
            return ev

        feed(view, [command(n, "started", n + 1) for n in range(commands)])
        clock.now += 1
        view._flush()
        await pilot.pause()
        assert transcript.first_seq == commands - 50 + 1
        # Every command still in the window finishes in the same batch.
        in_window = range(commands - 50, commands)
        feed(view, [command(n, "completed", commands + 1 + i) for i, n in enumerate(in_window)])
        clock.now += 1
        view._flush()
        await pilot.pause()
        assert view.pending == 0
        assert [e.seq for e in transcript.entries] == list(range(commands - 50 + 1, commands + 1))
        assert transcript.following and transcript.scroll_y == transcript.max_scroll_y
        shown = "".join(transcript.render_line(y).text for y in range(transcript.size.height))
        assert f"out-{commands - 1}" in shown
        transcript.scroll_to(y=0, animate=False, immediate=True)
        await pilot.pause()
        top = "".join(transcript.render_line(y).text for y in range(transcript.size.height))
        assert f"out-{commands - 50}" in top
