"""The app-server dialect (server_client/codex/appserver.py) against messages recorded from the
real ``codex app-server`` 0.169.0 talking to tests/fakes/mock_model_server.py (the files in
tests/unit/data: a turn with reasoning, a command and a streamed message; an escalated command
approved; an apply_patch approved under read-only; an interrupted long command; a model 500)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server_client.codex import parse_event
from server_client.codex.appserver import (
    CommandApprovalParams,
    EventTranslator,
    FileChangeApprovalParams,
    Notification,
    Response,
    ServerRequest,
    TextInput,
    TurnStartParams,
    encode_request,
    encode_response,
    parse_message,
    to_event,
)
from server_client.codex.events import (
    ItemDelta,
    ItemEvent,
    ThreadStarted,
    TurnCompleted,
    TurnFailed,
    TurnInterrupted,
    TurnStarted,
    UnknownEvent,
    UsageUpdated,
)

DATA = Path(__file__).parent / "data"


def recorded(name: str) -> list[dict[str, Any]]:
    lines = (DATA / f"appserver-{name}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def translate(name: str) -> list[dict[str, Any]]:
    translator = EventTranslator()
    events = []
    for message in recorded(name):
        parsed = parse_message(message)
        if isinstance(parsed, Notification):
            event = translator.event(parsed.method, parsed.params)
            if event is not None:
                events.append(event)
    return events


def test_messages_are_told_apart_by_direction_although_ids_collide() -> None:
    kinds = [type(parse_message(m)).__name__ for m in recorded("escalate")]
    assert "ServerRequest" in kinds and "Response" in kinds and "Notification" in kinds
    request = next(
        p for m in recorded("escalate") if isinstance(p := parse_message(m), ServerRequest)
    )
    assert request.id == 0 and request.method == "item/commandExecution/requestApproval"
    params = CommandApprovalParams.model_validate(request.params)
    assert params.reason == "need it"
    assert params.command is not None and "echo esc" in params.command
    assert params.itemId == "call_mock_2"
    responses = [p for m in recorded("escalate") if isinstance(p := parse_message(m), Response)]
    assert {r.id for r in responses} == {1, 2, 3}
    error = parse_message({"id": 5, "error": {"code": -1, "message": "nope"}})
    assert isinstance(error, Response) and error.error_message == "nope"
    assert parse_message([1]) is None and parse_message({"x": 1}) is None
    assert parse_message({"method": 3}) is None


def test_file_change_request_carries_no_diff_but_its_item_does() -> None:
    messages = recorded("patch")
    request = next(p for m in messages if isinstance(p := parse_message(m), ServerRequest))
    params = FileChangeApprovalParams.model_validate(request.params)
    started = [
        e
        for e in translate("patch")
        if e["type"] == "item.started" and e["item"]["id"] == params.itemId
    ]
    assert started[0]["item"]["changes"][0]["diff"] == "hi\n"


def test_a_turn_translates_to_typed_events_in_order() -> None:
    events = translate("basic")
    typed = [parse_event(e) for e in events]
    assert not [t for t in typed if isinstance(t, UnknownEvent)], events
    assert isinstance(typed[0], ThreadStarted) and typed[0].thread_id
    assert isinstance(typed[1], TurnStarted) and typed[1].turn_id
    deltas = [t for t in typed if isinstance(t, ItemDelta)]
    assert {d.stream for d in deltas} == {"agent_message", "reasoning", "command_output"}
    message_deltas = [d.delta for d in deltas if d.stream == "agent_message"]
    assert message_deltas == ["Hel", "lo ", "world"]
    # every delta comes before its item's completion
    completed_at = {
        e["item"]["id"]: i for i, e in enumerate(events) if e["type"] == "item.completed"
    }
    for i, e in enumerate(events):
        if e["type"] == "item.delta":
            assert i < completed_at[e["item_id"]]
    items = [t for t in typed if isinstance(t, ItemEvent) and t.phase == "completed"]
    assert any(getattr(t.item, "text", None) == "Hello world" for t in items)
    assert any(
        isinstance(t, UsageUpdated) and t.token_usage.total.input_tokens == 100 for t in typed
    )
    last = typed[-1]
    assert isinstance(last, TurnCompleted)
    assert last.usage.input_tokens == 200 and last.usage.output_tokens == 20


def test_quiet_notifications_are_dropped_and_unknown_ones_kept() -> None:
    types = {e["type"] for e in translate("patch")}
    assert "turn/diff/updated" not in types and "serverRequest/resolved" not in types
    assert "thread/status/changed" not in types
    assert to_event("configWarning", {"summary": "x"}) is None
    assert to_event("thread/name/updated", {"threadId": "t", "name": "n"}) == {
        "type": "thread/name/updated",
        "threadId": "t",
        "name": "n",
    }


def test_interrupted_and_failed_turns() -> None:
    long = [parse_event(e) for e in translate("long")]
    interrupted = [i for i, t in enumerate(long) if isinstance(t, TurnInterrupted)]
    assert len(interrupted) == 1
    # codex's interrupt leaves the command running: its output goes on arriving
    assert any(isinstance(t, ItemDelta) for t in long[interrupted[0] :])
    events = translate("fail")
    failed = parse_event(events[-1])
    assert isinstance(failed, TurnFailed) and "high demand" in failed.message
    assert not [e for e in events if e["type"] == "error"]  # willRetry false: the turn says it
    retry = to_event("error", {"error": {"message": "Reconnecting... 1/3"}, "willRetry": True})
    assert retry == {"type": "error", "message": "Reconnecting... 1/3"}
    translator = EventTranslator()
    translator.event("error", {"error": {"message": "boom"}, "willRetry": False})
    event = translator.event("turn/completed", {"turn": {"id": "t", "status": "failed"}})
    assert event == {"type": "turn.failed", "turn_id": "t", "error": {"message": "boom"}}


@pytest.mark.parametrize("params", [{}, {"turn": None}, {"item": 3}, {"thread": "x"}])
def test_odd_params_never_raise(params: dict[str, Any]) -> None:
    for method in ("turn/started", "turn/completed", "item/started", "thread/started"):
        assert to_event(method, params) is not None


def test_encoding() -> None:
    line = encode_request(
        3, "turn/start", TurnStartParams(threadId="t", input=[TextInput(text="hi")])
    )
    assert json.loads(line) == {
        "id": 3,
        "method": "turn/start",
        "params": {"threadId": "t", "input": [{"type": "text", "text": "hi"}]},
    }
    assert json.loads(encode_request(-1, "initialized", None)) == {"method": "initialized"}
    assert json.loads(encode_response(0, {"decision": "accept"})) == {
        "id": 0,
        "result": {"decision": "accept"},
    }
