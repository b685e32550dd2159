"""Terminal and input safety (docs/reliability.md T1, T2): escape sequences in anything codex
prints never reach a terminal as control sequences — in the pane, ``codex-tui logs`` (plain
and JSON) and exports, checked field by field and inside a real tmux — and a valid line of
any nesting depth never fails the task or a reader."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console, Group
from rich.style import Style
from rich.text import Text

from codex_tui.events.export import jsonl_line, markdown_event
from codex_tui.events.palette import Palette
from codex_tui.events.pane import RenderState, render_annotated, render_event
from codex_tui.events.plain import EventPrinter, JsonLinePrinter
from codex_tui.events.view import Annotation
from server_client.codex.lines import parse_line
from server_client.models import Event, EventKind, TaskStatus
from tests.conftest import FAKE_CODEX, LiveServer, ServerFactory, wait_until
from tests.support.waits import bounded

#: Every field of :data:`tests.fakes.fake_codex.HOSTILE` output that a person reads.
FIELDS = (
    "stderr",
    "stdout",
    "error",
    "command",
    "output",
    "reasoning",
    "path",
    "warning",
    "todo",
    "server",
    "tool-error",
    "unknown",
    "message",
)
#: A control character that is not a newline: anything a terminal could act on.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
#: Rich's own colour codes, the only escape sequences a coloured rendering may hold.
SGR = re.compile(r"\x1b\[[0-9;]*m")


def _hostile_events() -> list[Event]:
    """What the fake codex prints in ``hostile`` mode, as the worker stores it."""
    done = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, str(FAKE_CODEX), "exec", "--json", "--cd=/tmp", "--", "p"],
        env={"FAKE_CODEX_MODE": "hostile", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    ts = datetime.now(UTC)
    events: list[Event] = []
    for line in done.stdout.decode().splitlines():
        parsed = parse_line(line)
        if parsed is not None:
            events.append(Event(seq=len(events) + 1, ts=ts, kind=parsed[0], data=parsed[1]))
    for line in done.stderr.decode().splitlines():
        events.append(Event(seq=len(events) + 1, ts=ts, kind=EventKind.STDERR, data={"line": line}))
    return events


def _rendered(events: list[Event], *, colour: bool, expanded: bool = False) -> str:
    console = Console(
        file=io.StringIO(),
        width=2000,
        color_system="truecolor" if colour else None,
        force_terminal=colour,
    )
    state = RenderState()
    for event in events:
        renderables = render_event(event, state)
        if expanded:
            renderables = render_annotated(event, Annotation(), Palette(), expanded=True)
        for renderable in renderables:
            console.print(renderable)
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def _assert_safe(text: str, *, where: str) -> None:
    found = CONTROL.search(text)
    assert found is None, (
        f"{where}: {found.group()!r} at {text[max(found.start() - 40, 0) : found.end() + 20]!r}"
    )


def _assert_every_field_shown(text: str, *, where: str) -> None:
    """Every hostile field is still there, readable, with its escapes shown visibly."""
    for field in FIELDS:
        assert f"[{field}]" in text, f"{where}: field {field} is missing"
    assert "␛]0;PWNED-TITLE␇" in text, where


def test_the_pane_shows_every_field_with_its_escapes_visible() -> None:
    events = _hostile_events()
    for expanded in (False, True):
        plain = _rendered(events, colour=False, expanded=expanded)
        _assert_safe(plain, where="pane")
        _assert_every_field_shown(plain, where="pane")
        coloured = SGR.sub("", _rendered(events, colour=True, expanded=expanded))
        _assert_safe(coloured, where="pane with colour")


def test_colour_codes_in_command_output_show_as_colour() -> None:
    command = {
        "id": "c",
        "type": "command_execution",
        "command": "ls --color",
        "aggregated_output": "\x1b[31mred\x1b[0m plain \x1b]0;t\x07\n",
        "exit_code": 0,
        "status": "completed",
    }
    event = Event(
        seq=1,
        ts=datetime.now(UTC),
        kind=EventKind.CODEX,
        data={"type": "item.completed", "item": command},
    )
    [group] = render_event(event, RenderState())
    assert isinstance(group, Group)
    lines = [r for r in group.renderables if isinstance(r, Text)]
    output = next(line for line in lines if "red" in line.plain)
    assert output.plain == "│ red plain ␛]0;t␇"
    red = [
        span
        for span in output.spans
        if isinstance(span.style, Style) and span.style.color and span.style.color.number == 1
    ]
    assert red and output.plain[red[0].start : red[0].end] == "red"  # ANSI colour 1 is red


def test_logs_export_and_json_lines_are_safe_and_keep_the_text() -> None:
    events = _hostile_events()
    buffer = io.StringIO()
    printer = EventPrinter(buffer)
    for event in events:
        printer.print(event)
    _assert_safe(buffer.getvalue(), where="plain printer")
    _assert_every_field_shown(buffer.getvalue(), where="plain printer")

    markdown = "".join(markdown_event(event) for event in events)
    _assert_safe(markdown, where="Markdown export")
    _assert_every_field_shown(markdown, where="Markdown export")

    lines = io.StringIO()
    json_printer = JsonLinePrinter(lines)
    for event in events:
        json_printer.print(event)
        assert json.loads(jsonl_line(event)) == event.model_dump(mode="json")
    _assert_safe(lines.getvalue(), where="JSON lines")
    assert [json.loads(line)["data"] for line in lines.getvalue().splitlines()] == [
        event.data for event in events
    ]


async def _task_id(server: LiveServer) -> str:
    async with server.client() as client:
        task = await client.create_task("show me", workdir=str(server.workdir))
        async with bounded(90, f"task {task.id}'s terminal event"):
            async for event in client.stream_events(task.id):
                if event.is_terminal:
                    assert event.status is TaskStatus.COMPLETED, server.log()
    return task.id


async def test_codex_tui_logs_of_a_hostile_task_is_safe(server_factory: ServerFactory) -> None:
    server = server_factory(fake_mode="hostile")
    task_id = await _task_id(server)
    for args in (("logs", task_id), ("logs", "--json", task_id)):
        done = server.cli(*args)
        assert done.returncode == 0, done.stderr
        _assert_safe(done.stdout, where=" ".join(args[:-1]))
        if "--json" not in args:
            _assert_every_field_shown(done.stdout, where="logs")


# -- inside tmux ------------------------------------------------------------------------------


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A private tmux server (its own socket) with clipboard writes allowed, as a user would
    have it; the argv prefix that talks to it."""
    binary = shutil.which("tmux")
    assert binary, "these tests need tmux (Debian package tmux)"
    base = [binary, "-L", f"codex-tui-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
    yield base
    subprocess.run([*base, "kill-server"], capture_output=True, check=False)  # noqa: S603


def _tmux(base: list[str], *args: str) -> str:
    return subprocess.run(  # noqa: S603 - fixed argv
        [*base, *args], capture_output=True, text=True, check=True
    ).stdout


def _untouched(base: list[str], marker: str) -> None:
    """The window title, the clipboard and the screen are as the test left them."""
    assert _tmux(base, "display-message", "-p", "#{pane_title}").strip() == "codex-tui-test"
    buffers = subprocess.run(  # noqa: S603 - fixed argv
        [*base, "list-buffers"], capture_output=True, text=True, check=False
    )
    assert buffers.stdout == "", f"the clipboard was written: {buffers.stdout!r}"
    assert marker in _tmux(base, "capture-pane", "-p", "-S", "-200"), "the screen was cleared"


def _start(base: list[str], server: LiveServer, command: str, tmp_path: Path) -> None:
    env = " ".join(
        f"{k}={v}" for k, v in server.env.items() if k.startswith(("CODEX_TUI_", "PATH"))
    )
    script = tmp_path / "run.sh"
    script.write_text(
        "printf '\\033]2;codex-tui-test\\007'\n"
        "echo MARKER-BEFORE\n"
        f"env {env} TERM=xterm-256color {command}\n"
        "echo MARKER-AFTER\n"
        "sleep 600\n"
    )
    _tmux(base, "new-session", "-d", "-x", "80", "-y", "24", "sh", str(script))
    _tmux(base, "set-option", "-g", "set-clipboard", "on")
    _tmux(base, "set-option", "-g", "allow-rename", "on")


async def test_logs_inside_tmux_leaves_title_clipboard_and_screen_alone(
    server_factory: ServerFactory, tmux: list[str], tmp_path: Path
) -> None:
    server = server_factory(fake_mode="hostile")
    task_id = await _task_id(server)
    _start(tmux, server, f"{sys.executable} -m codex_tui logs {task_id}", tmp_path)
    wait_until(
        lambda: "MARKER-AFTER" in _tmux(tmux, "capture-pane", "-p", "-S", "-200"),
        what="codex-tui logs to finish in tmux",
    )
    _untouched(tmux, "MARKER-BEFORE")


async def test_the_tui_inside_tmux_leaves_title_clipboard_and_screen_alone(
    server_factory: ServerFactory, tmux: list[str], tmp_path: Path
) -> None:
    server = server_factory(fake_mode="hostile")
    await _task_id(server)
    _start(tmux, server, f"{sys.executable} -m codex_tui", tmp_path)
    # The dashboard opens the newest task in its pane; the message is the last item.
    wait_until(
        lambda: "[message]" in _tmux(tmux, "capture-pane", "-p"),
        timeout_s=30,
        what="the hostile task's message in the TUI's pane",
    )
    screen = _tmux(tmux, "capture-pane", "-p")
    assert "␛]0;PWNED-TITLE␇" in screen
    _untouched_while_running = _tmux(tmux, "display-message", "-p", "#{pane_title}").strip()
    assert _untouched_while_running == "codex-tui-test"
    _tmux(tmux, "send-keys", "q")
    wait_until(
        lambda: "MARKER-AFTER" in _tmux(tmux, "capture-pane", "-p", "-S", "-200"),
        what="the TUI to quit",
    )
    _untouched(tmux, "MARKER-BEFORE")


# -- depth ------------------------------------------------------------------------------------


async def test_deeply_nested_lines_neither_fail_the_task_nor_a_reader(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(fake_mode="deep")
    async with server.client() as client:
        task = await client.create_task("go deep", workdir=str(server.workdir))
        async with bounded(90, f"task {task.id}'s stream to end"):
            events = [event async for event in client.stream_events(task.id)]
        done = await client.get_task(task.id)
    assert done.status is TaskStatus.COMPLETED, (done.error, server.log())
    types = [e.codex_type for e in events if e.kind is EventKind.CODEX]
    assert types[-1] == "turn.completed"
    deep = [
        e for e in events if e.codex_type == "item.completed" and e.data["item"]["id"] != "item_2"
    ]
    assert [e.data["item"]["id"] for e in deep] == ["item_0", "item_1"]
    for args in (("logs", task.id), ("logs", "--json", task.id), ("logs", "--follow", task.id)):
        shown = server.cli(*args)
        assert shown.returncode == 0, shown.stderr
        assert "Traceback" not in shown.stderr
        assert "after the deep lines" in shown.stdout
