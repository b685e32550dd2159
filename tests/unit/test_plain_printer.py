"""The printer of ``codex-tui logs``: on a terminal, what runs shows live and gives way to
the completed item (docs/reliability.md A5); to a pipe, only completed items print."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from codex_tui.events.plain import EventPrinter
from server_client.models import Event, EventKind


def _events() -> list[Event]:
    data: list[dict[str, Any]] = [
        {"type": "turn.started"},
        {"type": "item.delta", "item_id": "m1", "stream": "agent_message", "delta": "Hello "},
        {"type": "item.delta", "item_id": "m1", "stream": "agent_message", "delta": "\x1b]0;x\x07"},
        {"type": "item.completed", "item": {"type": "agentMessage", "id": "m1", "text": "Hi!"}},
        {
            "type": "item.started",
            "item": {"type": "commandExecution", "id": "c1", "command": "make", "status": "x"},
        },
        {"type": "item.delta", "item_id": "c1", "stream": "command_output", "delta": "step 1\n"},
        {
            "type": "item.completed",
            "item": {
                "type": "commandExecution",
                "id": "c1",
                "command": "make",
                "aggregatedOutput": "step 0\nstep 1\n",
                "exitCode": 0,
                "status": "completed",
            },
        },
    ]
    return [
        Event(seq=n, ts=datetime.now(UTC), kind=EventKind.CODEX, data=d)
        for n, d in enumerate(data, 1)
    ]


def _print(live: bool) -> list[str]:
    """What the file holds after each event (and, last, after close)."""
    buffer = io.StringIO()
    printer = EventPrinter(buffer, live=live)
    seen = []
    for event in _events():
        printer.print(event)
        seen.append(buffer.getvalue())
    printer.close()
    seen.append(buffer.getvalue())
    return seen


def test_on_a_terminal_deltas_show_live_before_the_item_completes() -> None:
    seen = _print(live=True)
    assert "Hello" in seen[1] and "Hi!" not in seen[2]  # streaming, not yet complete
    assert "Hi!" in seen[3]  # the completed message, printed once it came
    assert "running…" in seen[5] and "step 1" in seen[5] and "exit 0" not in seen[5]
    assert "exit 0" in seen[6] and "step 0" in seen[6]  # codex's whole output, the truth
    final = seen[-1]
    assert final.count("Hi!") == 1 and final.count("exit 0") == 1
    assert "\x1b]0;" not in final  # codex's text never reaches the terminal as a sequence
    assert final.endswith("\x1b[?25h\r")  # the live view is down, the cursor back


def test_to_a_pipe_only_completed_items_print() -> None:
    seen = _print(live=False)
    assert "Hello" not in seen[-1] and "step 1\n" not in seen[5]
    assert seen[-1].count("Hi!") == 1 and "step 0" in seen[-1]
    assert "\x1b" not in seen[-1]


def test_hints_say_what_to_type() -> None:
    ts = datetime.now(UTC)
    asked = {"id": "ap1", "kind": "command", "command": "ls", "state": "pending"}
    events = [
        Event(seq=1, ts=ts, kind=EventKind.STATUS, data={"status": "waiting", "approval": asked}),
        Event(
            seq=2,
            ts=ts,
            kind=EventKind.STATUS,
            data={"status": "waiting", "approval": {"id": "ap0", "decision": "accept"}},
        ),
        Event(seq=3, ts=ts, kind=EventKind.STATUS, data={"status": "idle", "turns": 1}),
    ]
    buffer = io.StringIO()
    printer = EventPrinter(buffer)
    for event in events:
        printer.print(event)
    text = buffer.getvalue()
    assert text.count("codex-tui approve ap1") == 1 and "approve ap0" not in text
    assert "reply with codex-tui reply" in text and "reply with i" not in text


def test_a_printer_started_mid_conversation_numbers_the_next_turn() -> None:
    buffer = io.StringIO()
    printer = EventPrinter(buffer, turns=2)
    printer.print(
        Event(seq=9, ts=datetime.now(UTC), kind=EventKind.CODEX, data={"type": "turn.started"})
    )
    assert "turn 3" in buffer.getvalue()
