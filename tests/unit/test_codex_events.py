"""Unit tests of the typed codex event layer (server_client.codex), the output-line rules of
the worker (docs/reliability.md E7, T2) and the shared text rules (T1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server_client.codex import (
    AgentMessage,
    CodexError,
    CommandExecution,
    ErrorItem,
    FileChange,
    ItemEvent,
    McpToolCall,
    Reasoning,
    ThreadStarted,
    TodoList,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    UnknownEvent,
    UnknownItem,
    Usage,
    UserMessage,
    WebSearch,
    event_type,
    parse_event,
    parse_item,
)
from server_client.codex.lines import MAX_DEPTH, clamp_depth, depth_exceeds, parse_line
from server_client.models import Event, EventBatch, EventIn, EventKind
from server_client.text import has_controls, json_safe, one_line, truncate, visible
from tests.fakes.fake_codex import nested

# -- events and items --------------------------------------------------------------------------


def test_exec_events_read_into_their_models() -> None:
    assert parse_event({"type": "thread.started", "thread_id": "t-1"}) == ThreadStarted(
        thread_id="t-1"
    )
    assert isinstance(parse_event({"type": "turn.started"}), TurnStarted)
    done = parse_event({"type": "turn.completed", "usage": {"input_tokens": 7, "x": 1}})
    assert isinstance(done, TurnCompleted) and done.usage == Usage(7, 0, 0, 0)
    failed = parse_event({"type": "turn.failed", "error": {"message": "overloaded"}})
    assert isinstance(failed, TurnFailed) and failed.message == "overloaded"
    assert failed.error == {"message": "overloaded"}
    notice = parse_event({"type": "error", "message": "Reconnecting... 1/3"})
    assert isinstance(notice, CodexError) and notice.message == "Reconnecting... 1/3"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"id": "item_1", "type": "agent_message", "text": "Done."},
            AgentMessage(id="item_1", text="Done."),
        ),
        (
            {"id": "msg_1", "type": "agentMessage", "text": "Done.", "phase": None},
            AgentMessage(id="msg_1", text="Done."),
        ),
        ({"id": "r", "type": "reasoning", "text": "**Plan**"}, Reasoning(id="r", text="**Plan**")),
        (
            {"id": "r", "type": "reasoning", "summary": ["**Plan**", "read"], "content": []},
            Reasoning(id="r", text="**Plan**\n\nread"),
        ),
        (
            {
                "id": "item_2",
                "type": "command_execution",
                "command": "ls",
                "aggregated_output": "a\n",
                "exit_code": 0,
                "status": "completed",
            },
            CommandExecution(
                id="item_2", command="ls", output="a\n", exit_code=0, status="completed"
            ),
        ),
        (
            {
                "id": "call_1",
                "type": "commandExecution",
                "command": "ls",
                "cwd": "/w",
                "commandActions": [],
                "aggregatedOutput": None,
                "exitCode": None,
                "durationMs": 12,
                "status": "inProgress",
            },
            CommandExecution(
                id="call_1", command="ls", cwd="/w", status="in_progress", duration_ms=12
            ),
        ),
        (
            {
                "id": "f",
                "type": "fileChange",
                "changes": [{"path": "a.py", "kind": {"type": "update"}, "diff": "@@"}],
                "status": "completed",
            },
            FileChange(
                id="f",
                changes=[{"path": "a.py", "kind": "update", "diff": "@@"}],  # type: ignore[list-item]
                status="completed",
            ),
        ),
        (
            {"id": "u", "type": "userMessage", "content": [{"type": "text", "text": "hi"}]},
            UserMessage(id="u", text="hi"),
        ),
        (
            {
                "id": "m",
                "type": "mcp_tool_call",
                "server": "s",
                "tool": "t",
                "error": {"message": "no"},
            },
            McpToolCall(id="m", server="s", tool="t", error="no"),
        ),
        ({"id": "w", "type": "webSearch", "query": "q"}, WebSearch(id="w", query="q")),
        (
            {"id": "t", "type": "todo_list", "items": [{"text": "a", "completed": True}, 3]},
            TodoList(id="t", items=[{"text": "a", "completed": True}]),  # type: ignore[list-item]
        ),
        ({"id": "e", "type": "error", "message": "denied"}, ErrorItem(id="e", message="denied")),
    ],
    ids=lambda value: str(value.get("type")) if isinstance(value, dict) else "",
)
def test_items_of_both_dialects_read_into_one_model(raw: dict[str, Any], expected: Any) -> None:
    """exec's snake_case and app-server's camelCase items read into the same models."""
    assert parse_item(raw) == expected
    event = parse_event({"type": "item.completed", "item": raw})
    assert isinstance(event, ItemEvent) and event.phase == "completed" and event.item == expected


def test_unknown_types_keep_the_raw_object() -> None:
    item = {"id": "i6", "type": "image_view", "path": "/a/x.png"}
    parsed = parse_item(item)
    assert parsed == UnknownItem(type="image_view", id="i6", raw=item)
    event = {"type": "thread.compacted", "tokens": 5120}
    assert parse_event(event) == UnknownEvent(type="thread.compacted", raw=event)
    assert parse_event(["not", "an", "object"]) == UnknownEvent(
        type="", raw=["not", "an", "object"]
    )
    no_item = parse_event({"type": "item.updated"})
    assert isinstance(no_item, ItemEvent) and isinstance(no_item.item, UnknownItem)


def test_fields_of_the_wrong_type_read_as_empty_values() -> None:
    item = parse_item(
        {
            "type": "command_execution",
            "command": ["ls", "-l"],
            "aggregated_output": 5,
            "exit_code": True,
            "status": 3,
        }
    )
    assert item == CommandExecution(command='["ls","-l"]', output="", exit_code=None, status="")
    usage = parse_event({"type": "turn.completed", "usage": "lots"})
    assert isinstance(usage, TurnCompleted) and usage.usage == Usage()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "item", "id", "text", "usage", "error", "changes", "items"])
            | st.text(max_size=5),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)
_types = st.sampled_from(
    [
        "thread.started",
        "turn.completed",
        "turn.failed",
        "error",
        "item.started",
        "item.completed",
        "x.new",
        "",
    ]
)
_item_types = st.sampled_from(
    [
        "agent_message",
        "commandExecution",
        "file_change",
        "fileChange",
        "todo_list",
        "reasoning",
        "mcp_tool_call",
        "web_search",
        "error",
        "image_view",
    ]
)


@settings(max_examples=300, deadline=None)
@given(kind=_types, item_kind=_item_types, body=_json_values, item_body=_json_values)
def test_parsing_never_raises(kind: str, item_kind: str, body: Any, item_body: Any) -> None:
    """Whatever codex prints reads into a model; nothing it prints raises."""
    item = {"type": item_kind, **item_body} if isinstance(item_body, dict) else item_body
    data = {"type": kind, "item": item, **body} if isinstance(body, dict) else body
    parsed = parse_event(data)
    assert parsed.type == (
        event_type(data) if not isinstance(parsed, UnknownEvent) else parsed.type
    )
    if isinstance(parsed, UnknownEvent):
        assert parsed.raw == data


def test_an_event_reads_its_codex_event() -> None:
    event = Event(seq=1, ts=datetime.now(UTC), kind=EventKind.CODEX, data={"type": "turn.started"})
    assert isinstance(event.codex, TurnStarted)
    assert event.codex == event.codex == parse_event(event.data)
    assert Event(seq=2, ts=event.ts, kind=EventKind.STDERR, data={"line": "x"}).codex is None
    assert event.codex_type == "turn.started"


# -- output lines ------------------------------------------------------------------------------


def _line_for(depth: int) -> str:
    item = {"id": "c", "type": "mcp_tool_call", "server": "s", "tool": "t", "result": nested(depth)}
    return json.dumps({"type": "item.completed", "item": item}, separators=(",", ":"))


@pytest.mark.parametrize("depth", [10, MAX_DEPTH - 3, 220, 300, 900])
def test_a_line_of_any_depth_is_kept_as_a_codex_event_every_reader_can_read(depth: int) -> None:
    parsed = parse_line(_line_for(depth))
    assert parsed is not None
    kind, data = parsed
    assert kind is EventKind.CODEX
    assert not depth_exceeds(data)
    assert data["item"]["id"] == "c" and data["type"] == "item.completed"
    # What was cut off is kept as JSON text: the original value comes back from it.
    value: Any = data["item"]["result"]
    while isinstance(value, dict | list):
        value = value["level"] if isinstance(value, dict) else value[0]
    restored = json.loads(value) if value != "bottom" else "bottom"
    if depth + 3 > MAX_DEPTH:
        assert isinstance(value, str) and value.startswith(("[", "{"))
        inner: Any = restored
        while isinstance(inner, dict | list):
            inner = inner["level"] if isinstance(inner, dict) else inner[0]
        assert inner == "bottom"
    # It survives the whole wire: the worker's upload body, the server's parse, the SDK's.
    batch = EventBatch(
        lease_id="l", first_index=0, events=[EventIn(ts=datetime.now(UTC), kind=kind, data=data)]
    )
    again = EventBatch.model_validate_json(batch.model_dump_json())
    envelope = Event(seq=1, ts=datetime.now(UTC), kind=kind, data=again.events[0].data)
    assert Event.model_validate_json(envelope.model_dump_json()).data == data


def test_a_line_too_deep_for_python_is_kept_raw() -> None:
    line = "[" * 5000 + "]" * 5000
    assert parse_line(line) == (EventKind.STDOUT, {"line": line})


def test_clamp_depth_copies_and_limits() -> None:
    value = nested(10)
    clamped = clamp_depth(value, 4)
    assert not depth_exceeds(clamped, 4)
    assert value == nested(10)  # not modified
    assert clamp_depth({"a": [1, {"b": 2}]}, 10) == {"a": [1, {"b": 2}]}


def test_lines_that_are_not_json_objects_are_kept_raw() -> None:
    assert parse_line("   ") is None
    assert parse_line("plain text\r") == (EventKind.STDOUT, {"line": "plain text"})
    assert parse_line('{"a":NaN}') == (EventKind.STDOUT, {"line": '{"a":NaN}'})
    assert parse_line('{"a":1e400}') == (EventKind.STDOUT, {"line": '{"a":1e400}'})
    assert parse_line("[1]") == (EventKind.STDOUT, {"line": "[1]"})
    assert parse_line('{"t":"lone \\ud800 s"}') == (EventKind.CODEX, {"t": "lone ? s"})


# -- text --------------------------------------------------------------------------------------

HOSTILE = "a\x1b]0;title\x07b\x1b[2Jc\x9b2Jd\x7fe\x00f\rg\r\nh\ti\nj"


def test_visible_shows_every_control_character_but_newline_and_tab() -> None:
    shown = visible(HOSTILE)
    assert shown == "a␛]0;title␇b␛[2Jc\\x9b2Jd␡e␀f␍g\nh\ti\nj"
    assert not has_controls(shown)
    assert visible("plain text\n") == "plain text\n"


def test_one_line_shows_newlines_and_tabs_too() -> None:
    assert one_line("a\nb\tc\x1b") == "a␊b␉c␛"


def test_json_safe_escapes_del_and_c1_and_keeps_the_value() -> None:
    encoded = json.dumps({"t": HOSTILE}, ensure_ascii=False)
    safe = json_safe(encoded)
    assert not any(0x7F <= ord(c) <= 0x9F or ord(c) < 0x20 for c in safe)
    assert json.loads(safe) == {"t": HOSTILE}


def test_truncate() -> None:
    assert truncate("abc", 3) == "abc"
    assert truncate("abcd", 3) == "ab…"
    assert truncate("abcd", 0) == "…"
