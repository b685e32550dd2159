"""Provides unit tests of the event renderers over realistic codex events."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import markdown_it
import pytest
from rich.console import Console, RenderableType
from rich.markdown import Markdown
from rich.segment import Segment
from rich.text import Text

from codex_tui.events.markdown import markdown_parser, render_markdown, warm_up
from codex_tui.events.palette import Palette
from codex_tui.events.pane import RenderState, render_annotated, render_event
from codex_tui.events.view import Annotation, compact_json, head_lines, is_shown
from server_client.models import Event, EventKind
from server_client.text import truncate

_seq = itertools.count(1)
TS = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def event(kind: EventKind | str, data: Any) -> Event:
    """An event with the next seq."""
    return Event(seq=next(_seq), ts=TS, kind=EventKind(kind), data=data)


def codex(data: dict[str, Any]) -> Event:
    """A ``codex`` event."""
    return event(EventKind.CODEX, data)


def plain(renderables: list[RenderableType], width: int = 100) -> str:
    """Render to plain text the way the event view would, minus colours."""
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


def show(data: dict[str, Any] | Event, state: RenderState | None = None, width: int = 100) -> str:
    """Render one codex object (or event) and return its plain text."""
    ev = data if isinstance(data, Event) else codex(data)
    return plain(render_event(ev, state or RenderState()), width)


# -- helpers --------------------------------------------------------------------------------


def test_truncate() -> None:
    assert truncate("abc", 5) == "abc"
    assert truncate("abcdef", 4) == "abc…"
    assert len(truncate("x" * 1_000_000, 100)) == 100


def test_head_lines() -> None:
    assert head_lines("", 20) == ([], 0)
    assert head_lines("a\nb\n", 20) == (["a", "b"], 0)
    text = "\n".join(str(n) for n in range(1, 31)) + "\n"
    lines, more = head_lines(text, 20)
    assert lines == [str(n) for n in range(1, 21)]
    assert more == 10
    assert head_lines("a\nb\nc", 2) == (["a", "b"], 1)


def test_compact_json_is_one_cut_line() -> None:
    assert compact_json({"a": [1, 2]}) == '{"a":[1,2]}'
    long = compact_json({"x": "y" * 10_000}, limit=50)
    assert len(long) == 50 and long.endswith("…")


def test_palette_from_theme_variables_drops_alpha() -> None:
    palette = Palette.from_theme_variables({"error": "#B93C5B", "warning": "#FFA62B80"})
    assert palette.error == "#B93C5B"
    assert palette.warning == "#FFA62B"
    assert palette.success == Palette.success


# -- codex events ---------------------------------------------------------------------------


def test_thread_and_turn_started() -> None:
    state = RenderState()
    text = show({"type": "thread.started", "thread_id": "0199a213-81c0-7800"}, state)
    assert "thread 0199a213-81c0-7800" in text
    assert "turn 1" in show({"type": "turn.started"}, state)
    assert "turn 2" in show({"type": "turn.started"}, state)


def test_command_started_shows_running() -> None:
    text = show(
        {
            "type": "item.started",
            "item": {
                "id": "item_1",
                "type": "command_execution",
                "command": "bash -lc ls",
                "aggregated_output": "",
                "exit_code": None,
                "status": "in_progress",
            },
        }
    )
    assert "$ bash -lc ls" in text
    assert "running" in text


def test_command_completed_shows_exit_code_and_head_of_output() -> None:
    output = "".join(f"line {n}\n" for n in range(1, 26))
    text = show(
        {
            "type": "item.completed",
            "item": {
                "id": "item_1",
                "type": "command_execution",
                "command": "bash -lc 'seq 25'",
                "aggregated_output": output,
                "exit_code": 0,
                "status": "completed",
            },
        }
    )
    assert "$ bash -lc 'seq 25'" in text
    assert "exit 0" in text
    assert "line 1\n" in text and "line 20\n" in text
    assert "line 21" not in text
    assert "… 5 more lines" in text


def test_command_failed_shows_nonzero_exit() -> None:
    text = show(
        {
            "type": "item.completed",
            "item": {
                "id": "item_2",
                "type": "command_execution",
                "command": "pytest -x",
                "aggregated_output": "E   assert 1 == 2\n",
                "exit_code": 1,
                "status": "failed",
            },
        }
    )
    assert "exit 1" in text
    assert "assert 1 == 2" in text
    assert "more line" not in text


def test_command_with_megabyte_output_stays_small() -> None:
    output = ("x" * 5000 + "\n") * 220  # about 1.1 MB
    renderables = render_event(
        codex(
            {
                "type": "item.completed",
                "item": {
                    "type": "command_execution",
                    "command": "cat big",
                    "aggregated_output": output,
                    "exit_code": 0,
                    "status": "completed",
                },
            }
        ),
        RenderState(),
    )
    text = plain(renderables, width=80)
    assert len(text) < 80 * 30
    assert "… 200 more lines" in text


def test_declined_command() -> None:
    text = show(
        {
            "type": "item.completed",
            "item": {
                "type": "command_execution",
                "command": "rm -rf /",
                "aggregated_output": "",
                "exit_code": None,
                "status": "declined",
            },
        }
    )
    assert "declined" in text


def test_agent_message_renders_markdown() -> None:
    text = show(
        {
            "type": "item.completed",
            "item": {
                "id": "item_3",
                "type": "agent_message",
                "text": "Repo contains **docs** and:\n\n- `sdk`\n- examples",
            },
        }
    )
    assert "codex" in text
    assert "Repo contains docs and:" in text  # bold markers rendered, not shown
    assert "• sdk" in text


def test_agent_message_started_is_not_duplicated() -> None:
    item = {"id": "item_3", "type": "agent_message", "text": "hello"}
    assert render_event(codex({"type": "item.started", "item": item}), RenderState()) == []


def test_reasoning_is_dim_italic() -> None:
    renderables = render_event(
        codex(
            {
                "type": "item.completed",
                "item": {
                    "id": "item_0",
                    "type": "reasoning",
                    "text": "**Searching for README**",
                },
            }
        ),
        RenderState(),
    )
    assert len(renderables) == 1
    assert isinstance(renderables[0], Text)
    assert renderables[0].plain == "Searching for README"
    assert "italic" in str(renderables[0].style) and "dim" in str(renderables[0].style)


def test_file_change_lists_paths_with_kinds() -> None:
    text = show(
        {
            "type": "item.completed",
            "item": {
                "id": "item_4",
                "type": "file_change",
                "changes": [
                    {"path": "/srv/app/new.py", "kind": "add"},
                    {"path": "/srv/app/old.py", "kind": "delete"},
                    {"path": "/srv/app/main.py", "kind": "update"},
                ],
                "status": "completed",
            },
        }
    )
    assert "A /srv/app/new.py" in text
    assert "D /srv/app/old.py" in text
    assert "M /srv/app/main.py" in text


def test_a_long_file_path_keeps_its_end_on_a_narrow_pane() -> None:
    deep = "/home/me/.local/share/codex-tui/workspaces/21b50aef4c78/src/pkg/module.py"
    data = {
        "type": "item.completed",
        "item": {"id": "i", "type": "file_change", "changes": [{"path": deep, "kind": "add"}]},
    }
    narrow = show(data, width=40).splitlines()
    (line,) = [row for row in narrow if "module.py" in row]
    assert line.rstrip().endswith("src/pkg/module.py") and line.startswith("  A /home/")
    assert "…" in line
    assert len(line.rstrip()) <= 40
    assert f"A {deep}" in show(data, width=120)  # whole when it fits


def test_todo_list_checklist() -> None:
    text = show(
        {
            "type": "item.updated",
            "item": {
                "id": "item_5",
                "type": "todo_list",
                "items": [
                    {"text": "read the code", "completed": True},
                    {"text": "write the test", "completed": False},
                ],
            },
        }
    )
    assert "todo 1/2" in text
    assert "[x] read the code" in text
    assert "[ ] write the test" in text


def test_error_item_is_a_warning() -> None:
    palette = Palette(warning="#123456")
    renderables = render_event(
        codex(
            {
                "type": "item.completed",
                "item": {"id": "item_6", "type": "error", "message": "command timed out"},
            }
        ),
        RenderState(palette=palette),
    )
    assert plain(renderables).strip() == "⚠ command timed out"
    assert isinstance(renderables[0], Text)
    assert "#123456" in str(renderables[0].style)


def test_top_level_error_and_turn_failed_use_error_colour() -> None:
    palette = Palette(error="#abcdef")
    state = RenderState(palette=palette)
    error = render_event(codex({"type": "error", "message": "Reconnecting... 1/3"}), state)
    failed = render_event(
        codex({"type": "turn.failed", "error": {"message": "We're currently experiencing high"}}),
        state,
    )
    assert "error: Reconnecting... 1/3" in plain(error)
    assert "turn failed: We're currently experiencing high" in plain(failed)
    for renderables in (error, failed):
        assert isinstance(renderables[0], Text)
        assert "#abcdef" in str(renderables[0].style)


def test_turn_completed_shows_usage_and_difference_to_previous_turn() -> None:
    state = RenderState()
    first = show(
        {
            "type": "turn.completed",
            "usage": {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122},
        },
        state,
    )
    assert "in 24,763 (cached 24,448) · out 122" in first
    assert "this turn" not in first  # nothing to compare with yet
    second = show(
        {
            "type": "turn.completed",
            "usage": {"input_tokens": 30000, "cached_input_tokens": 24448, "output_tokens": 200},
        },
        state,
    )
    assert "in 30,000 (cached 24,448) · out 200" in second
    assert "this turn +5,237 in (+0 cached) +78 out" in second


def test_usage_difference_is_per_stream_state() -> None:
    usage = {"input_tokens": 10, "cached_input_tokens": 0, "output_tokens": 5}
    state = RenderState()
    show({"type": "turn.completed", "usage": usage}, state)
    assert "this turn +0 in" in show({"type": "turn.completed", "usage": usage}, state)
    assert "this turn" not in show({"type": "turn.completed", "usage": usage}, RenderState())


def test_mcp_tool_call_and_web_search() -> None:
    tool = show(
        {
            "type": "item.completed",
            "item": {
                "type": "mcp_tool_call",
                "server": "docs",
                "tool": "search",
                "status": "failed",
                "error": {"message": "boom"},
            },
        }
    )
    assert "tool docs.search · failed" in tool and "boom" in tool
    search = show(
        {"type": "item.completed", "item": {"type": "web_search", "query": "textual log"}}
    )
    assert "search: textual log" in search


def test_unknown_types_are_shown_generically() -> None:
    text = show({"type": "thread.compacted", "tokens": 5})
    assert 'thread.compacted {"type":"thread.compacted","tokens":5}' in text
    item = show({"type": "item.completed", "item": {"type": "hologram", "x": 1}})
    assert "item.completed hologram" in item and '"x":1' in item


# -- other kinds ----------------------------------------------------------------------------


def test_status_events() -> None:
    state = RenderState()
    text = show(
        event(EventKind.STATUS, {"status": "running", "worker_id": "w1", "worker": "box-1"}),
        state,
    )
    assert "● running · on box-1" in text
    assert "w1" not in text
    text = show(event(EventKind.STATUS, {"status": "running", "cancel_requested": True}), state)
    assert "● running · cancel requested" in text
    text = show(
        event(EventKind.STATUS, {"status": "canceled", "reason": "canceled before it started"})
    )
    assert "⊘ canceled · canceled before it started" in text
    text = show(event(EventKind.STATUS, {"status": "failed", "exit_code": 1}), state)
    assert "✗ failed · exit 1" in text
    assert state.last_status == "failed"
    assert "queued" in show(event(EventKind.STATUS, {"status": "queued"}))


def test_stderr_is_dim_and_stdout_raw() -> None:
    stderr = render_event(
        event(EventKind.STDERR, {"line": "Reading additional input from stdin..."}),
        RenderState(),
    )
    assert plain(stderr).strip() == "Reading additional input from stdin..."
    assert isinstance(stderr[0], Text) and "dim" in str(stderr[0].style)
    stdout = render_event(event(EventKind.STDOUT, "[bold]not markup[/bold]"), RenderState())
    assert plain(stdout).strip() == "[bold]not markup[/bold]"


@pytest.mark.parametrize("data", [None, 42, ["a"], "text"])
def test_malformed_codex_data_never_raises(data: Any) -> None:
    assert render_event(event(EventKind.CODEX, data), RenderState())


# -- visibility without rendering -------------------------------------------------------------

_ITEMS: list[dict[str, Any]] = [
    {"id": "c", "type": "command_execution", "command": "ls", "status": "in_progress"},
    {"id": "c", "type": "command_execution", "command": "ls", "status": ""},
    {"id": "c", "type": "command_execution", "command": "ls", "status": "completed"},
    {"id": "c", "type": "command_execution", "command": "ls", "status": "failed"},
    {"id": "c", "type": "command_execution", "command": "ls", "status": "declined"},
    {"id": "c", "type": "command_execution", "command": "ls", "exit_code": 0},
    {"id": "m", "type": "agent_message", "text": "hello"},
    {"id": "r", "type": "reasoning", "text": "**Thinking**"},
    {"id": "f", "type": "file_change", "changes": [{"path": "a", "kind": "add"}]},
    {"id": "e", "type": "error", "message": "careful"},
    {"id": "t", "type": "todo_list", "items": [{"text": "x", "completed": False}]},
    {"id": "p", "type": "mcp_tool_call", "server": "s", "tool": "t", "status": "completed"},
    {"id": "w", "type": "web_search", "query": "textual"},
    {"id": "u", "type": "something_new"},
    {"id": "n"},
]


def _every_kind_of_event() -> list[Event]:
    events = [
        codex({"type": phase, "item": item})
        for phase in ("item.started", "item.updated", "item.completed", "item.other")
        for item in _ITEMS
    ]
    events += [
        codex({"type": "item.completed", "item": "not an object"}),
        codex({"type": "item.updated"}),
        codex({"type": "thread.started", "thread_id": "t"}),
        codex({"type": "turn.started"}),
        codex({"type": "turn.completed", "usage": {"input_tokens": 1}}),
        codex({"type": "turn.failed", "error": {"message": "no"}}),
        codex({"type": "error", "message": "Reconnecting..."}),
        codex({"type": "x.custom"}),
        event(EventKind.CODEX, ["not", "an", "object"]),
        event(EventKind.STATUS, {"status": "running"}),
        event(EventKind.STATUS, {"status": "bogus"}),
        event(EventKind.STDERR, {"line": "warning"}),
        event(EventKind.STDOUT, "out"),
    ]
    return events


@pytest.mark.parametrize("ev", _every_kind_of_event(), ids=lambda e: str(e.data)[:60])
def test_is_shown_agrees_with_the_renderer(ev: Event) -> None:
    """The cheap predicate decides exactly what rendering would (folded or expanded)."""
    for expanded in (False, True):
        rendered = render_annotated(ev, Annotation(), Palette(), expanded=expanded)
        assert is_shown(ev) == bool(rendered)


# -- Markdown -----------------------------------------------------------------------------------


def _lines(renderable: RenderableType, width: int) -> list[list[Segment]]:
    """The lines a transcript would cut ``renderable`` into at ``width``."""
    console = Console(width=width, color_system="truecolor", force_terminal=True)
    rendered = console.render(renderable, console.options.update_width(width))
    return list(Segment.split_and_crop_lines(rendered, width, include_new_lines=False))


@pytest.mark.parametrize(
    "text",
    [
        "Done.",
        "message 42 " + "x" * 160,
        "I ran the tests: all 312 passed (in 4.2 s) and nothing else changed!",
        "First line\nsecond line of the same paragraph",
        "One paragraph.\n\nAnother one, after a blank line.\n\nAnd a third.",
        "Unicode: café, 日本語, emoji 🎉 and a URL https://example.com/a?b=c",
        "2026 was a year; 3 tests failed - then passed",
    ],
)
@pytest.mark.parametrize("width", [20, 76])
def test_plain_messages_skip_markdown_but_look_the_same(text: str, width: int) -> None:
    shown = render_markdown(text)
    assert not isinstance(shown, Markdown), "no Markdown syntax: no parse"
    assert _lines(shown, width) == _lines(Markdown(text), width)


@pytest.mark.parametrize(
    "text",
    [
        "Added `--json` to export",
        "**bold** move",
        "- a list",
        "1. first",
        "# Heading",
        "> quoted",
        "    indented code",
        "a line with a hard break  \nnext",
        "Three\n\n\nblank lines",
        "Title\n===",
        "Rule\n---",
        "a | b\n--|--\n1 | 2",
        "AT&amp;T",
        "see [the docs](https://example.com)",
        "<b>html</b>",
        "snake_case_name",
        "~~gone~~",
        "back\\slash",
        "tab\there",
        " leading space",
        "trailing space ",
        "\nleading newline",
    ],
)
def test_messages_with_markdown_syntax_are_parsed(text: str) -> None:
    shown = render_markdown(text)
    assert isinstance(shown, Markdown)
    assert _lines(shown, 60) == _lines(Markdown(text), 60)


def test_one_markdown_parser_serves_every_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a markdown-it parser compiles its rule chains and regexes: once per process."""
    warm_up()
    built: list[object] = []
    original = markdown_it.MarkdownIt.__init__

    def counting_init(self: markdown_it.MarkdownIt, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(markdown_it.MarkdownIt, "__init__", counting_init)
    parser = markdown_parser()
    texts = [f"Message {n}: ran `pytest` with **{n}** failures\n\n- one\n- two" for n in range(50)]
    for text in texts:
        plain([render_markdown(text)])
    assert built == []
    assert markdown_parser() is parser


def test_importing_the_renderers_does_not_import_markdown() -> None:
    """rich.markdown (markdown-it, Pygments) loads on the first message, not at start.

    (The event view's module also imports httpx, whose command-line module imports Pygments
    when it is installed; that is outside these modules.)
    """
    code = (
        "import sys, codex_tui.events.pane, codex_tui.widgets.transcript\n"
        "print(sorted(m for m in ('rich.markdown', 'markdown_it', 'rich.syntax', 'pygments')"
        " if m in sys.modules))"
    )
    result = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
