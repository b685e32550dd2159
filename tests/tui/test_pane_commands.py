"""Provides tests of how a pane shows a command: one entry from its start to its end, a
timer while it runs, and how it ends when its turn or task ends without its completion."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from codex_tui.events.palette import Palette
from codex_tui.events.pane import RenderState, render_annotated
from codex_tui.events.view import LiveItem, annotate
from server_client.models import Event, EventKind, TaskStatus
from tests.support.tui_helpers import SIZE, wait_for
from tests.tui.test_transcript import (
    TS,
    BurstClient,
    FakeClock,
    StreamHost,
    command,
    event,
    feed,
    plain,
    running_task,
)


def shown(ev: Event, state: RenderState) -> tuple[str, Any]:
    note = annotate(ev, state)
    return plain(render_annotated(ev, note, Palette(), now=TS + timedelta(seconds=3))), note


def test_a_running_command_shows_its_timer_until_it_completes_in_place() -> None:
    state = RenderState()
    started = command("a", "started", TS)
    text, note = shown(started, state)
    assert isinstance(note.live, LiveItem)
    assert "running…  3.0s $ run a" in text
    done = command("a", "completed", TS + timedelta(seconds=2), 0)
    annotate(done, state)
    # The started event's entry now shows the completion; the completion shows nothing else.
    again = plain(render_annotated(started, note, Palette()))
    assert "exit 0  2.0s $ run a" in again and "running" not in again


def test_a_command_ends_canceled_when_the_task_is_canceled() -> None:
    state = RenderState()
    started = command("a", "started", TS)
    _text, note = shown(started, state)
    canceled = event(EventKind.STATUS, {"status": "canceled"}, seq=2, ts=TS + timedelta(seconds=5))
    annotate(canceled, state)
    assert state.just_ended == [note.live]
    text = plain(render_annotated(started, note, Palette(), now=TS + timedelta(hours=1)))
    assert "canceled  5.0s $ run a" in text and "running" not in text
    # The next event lists nothing ended.
    annotate(event(EventKind.STDERR, {"line": "x"}, seq=3), state)
    assert state.just_ended == []


def test_a_command_ends_interrupted_when_its_turn_ends_without_it() -> None:
    for end in (
        {"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}},
        {"type": "turn.failed", "error": {"message": "boom"}},
        {"type": "turn.interrupted"},
    ):
        state = RenderState()
        started = command("a", "started", TS)
        _text, note = shown(started, state)
        annotate(event(EventKind.CODEX, end, seq=2, ts=TS + timedelta(seconds=1)), state)
        text = plain(render_annotated(started, note, Palette(), now=TS))
        assert "interrupted  1.0s $ run a" in text, end
    # A conversation whose turn is done (idle) ends its running commands too.
    state = RenderState()
    _text, note = shown(command("b", "started", TS), state)
    annotate(event(EventKind.STATUS, {"status": TaskStatus.IDLE.value}, seq=2), state)
    assert isinstance(note.live, LiveItem) and note.live.ended == "interrupted"


async def test_a_pane_shows_one_entry_per_command_and_ends_it_with_the_task() -> None:
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.follow(running_task("t-cmd", "commands"))
        await wait_for(pilot, lambda: not view.streaming, "the (empty) stream")
        events = [
            command("a", "started", TS),
            command("a", "completed", TS + timedelta(seconds=1), 0),
            command("b", "started", TS + timedelta(seconds=2)),
        ]
        for seq, ev in enumerate(events, 1):
            ev.seq = seq
        feed(view, events)
        clock.now += 1
        view._flush()
        await pilot.pause()
        text = view.text()
        assert text.count("$ run a") == 1 and "exit 0  1.0s $ run a" in text
        assert "running…" in text and text.count("$ run b") == 1
        assert len(view.feed.running_entries()) == 1
        feed(view, [event(EventKind.STATUS, {"status": "canceled"}, seq=4, ts=TS)])
        clock.now += 1
        view._flush()
        await pilot.pause()
        text = view.text()
        assert "running…" not in text and text.count("$ run b") == 1
        assert " canceled " in text
        assert view.feed.running_entries() == []


async def test_c_copies_the_command_and_its_output_under_the_cursor() -> None:
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.follow(running_task("t-copy", "copy"))
        await wait_for(pilot, lambda: not view.streaming, "the (empty) stream")
        message = {"id": "m", "type": "agent_message", "text": "All **done**."}
        events = [
            command("a", "started", TS),
            command("a", "completed", TS + timedelta(seconds=1), 0),
            event(EventKind.CODEX, {"type": "item.completed", "item": message}),
        ]
        for seq, ev in enumerate(events, 1):
            ev.seq = seq
        feed(view, events)
        clock.now += 1
        view._flush()
        await pilot.pause()
        view.transcript.focus()
        await pilot.press("C")  # no cursor yet: the last entry in view
        assert app.clipboard == "All **done**."
        await pilot.press("k", "C")
        assert app.clipboard == "$ run a\nok\n"
        toasts = [n.message for n in app._notifications]
        assert "Copied the command and its output (2 lines)." in toasts


async def test_the_pane_subtitle_shows_the_run_time() -> None:
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.transcript.clock = lambda: TS + timedelta(seconds=90)
        task = running_task("t-time", "time").model_copy(update={"started_at": TS})
        view.follow(task)
        await wait_for(pilot, lambda: not view.streaming, "the (empty) stream")
        view._tick_live()
        assert view.run_time == "1m so far"
        subtitle = view.pane_subtitle
        assert subtitle is not None and "1m so far" in subtitle.content().plain
        done = event(
            EventKind.STATUS, {"status": "completed"}, seq=1, ts=TS + timedelta(seconds=125)
        )
        feed(view, [done])
        clock.now += 1
        view._flush()
        await pilot.pause()
        assert view.run_time == "ran 2m05s"
        subtitle = view.pane_subtitle
        assert subtitle is not None and "ran 2m05s" in subtitle.content().plain


async def test_search_scrolls_to_the_matching_line_of_a_long_output() -> None:
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.follow(running_task("t-find", "find"))
        await wait_for(pilot, lambda: not view.streaming, "the (empty) stream")
        output = "".join(f"line {n}\n" for n in range(300)).replace("line 250\n", "the needle\n")
        body = {
            "id": "a",
            "type": "command_execution",
            "command": "run a",
            "aggregated_output": output,
            "exit_code": 0,
            "status": "completed",
        }
        events = [
            event(EventKind.CODEX, {"type": "item.completed", "item": body}, seq=1),
            *(event(EventKind.STDERR, {"line": f"later {n}"}, seq=2 + n) for n in range(40)),
        ]
        feed(view, events)
        clock.now += 1
        view._flush()
        await pilot.pause()
        view.search_query = "needle"
        view.action_search_next()
        await pilot.pause()
        transcript = view.transcript
        assert transcript.cursor == 0
        assert transcript.entries[0].expanded  # the match was folded away
        top = round(transcript.scroll_y)
        shown = [transcript.render_line(y).text for y in range(transcript.size.height)]
        assert any("the needle" in line for line in shown), (top, shown)
