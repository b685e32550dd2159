"""Provides Pilot tests of what a pane repaints (what an SSH link pays for): a delta that grows
the last line repaints that line alone, new lines below a view that does not scroll repaint
only themselves, and a pane without the keyboard focus hands deltas over a few times a second
yet ends showing exactly what the stream sent.

Events are handed to the pane as its stream would (``EventView._ingest``) on a fake monotonic
clock, and the flush timer is driven by hand, so nothing waits on real time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.scrollbar import ScrollBar
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from codex_tui.textual_internals import replace_option_prompt_in_place
from codex_tui.widgets.event_view import EventView
from codex_tui.widgets.transcript import Transcript
from server_client.enums import TaskStatus
from server_client.models import Event
from tests.conftest import ServerFactory
from tests.support.tui_helpers import (
    SIZE,
    FrozenClock,
    dashboard_ready,
    record_refreshes,
    row_texts,
    running_app,
    seed_tasks,
    task_list,
    wait_for,
)
from tests.tui.test_conversation import codex_event, conversation_task, delta, item
from tests.tui.test_transcript import (
    BurstClient,
    FakeClock,
    StreamHost,
    codex_turns,
    count_full_redraws,
)


def spy_refreshes(
    transcript: Transcript, view: EventView, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[Region, ...]], list[str]]:
    """Record the regions of every transcript refresh (``()`` for the whole widget) and every
    refresh of the whole pane (border and children)."""
    return record_refreshes(transcript, monkeypatch), count_full_redraws(view, monkeypatch)


def ingest(view: EventView, events: Sequence[Event]) -> None:
    """Deliver ``events`` to ``view`` as its stream would."""
    for ev in events:
        view._ingest("task", ev)


def view_lines(transcript: Transcript) -> list[str]:
    """The transcript's lines in view, as text."""
    return [transcript.render_line(y).text.rstrip() for y in range(transcript.size.height)]


async def test_a_delta_growing_the_last_line_repaints_only_that_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        transcript = view.transcript
        view.follow(conversation_task())
        await wait_for(pilot, lambda: not view.streaming, "the (empty) stream")
        ingest(
            view,
            [
                codex_event(1, {"type": "turn.started", "turn_id": "t1"}),
                item(2, "started", {"id": "m1", "type": "agentMessage", "text": ""}),
                delta(3, "m1", "Reading the"),
            ],
        )
        clock.now += 1
        view._flush()
        await pilot.pause()
        assert view.pending == 0
        lines = view_lines(transcript)
        row = next(y for y, text in enumerate(lines) if "Reading the" in text)
        top = round(transcript.scroll_y)

        regions, whole_pane = spy_refreshes(transcript, view, monkeypatch)
        ingest(view, [delta(4, "m1", " parser")])
        clock.now += 1
        view._flush()
        await pilot.pause()

        assert "Reading the parser" in view_lines(transcript)[row]
        assert round(transcript.scroll_y) == top, "the view did not scroll"
        assert whole_pane == []
        assert () not in regions, "the transcript was not repainted whole"
        marked = [region for call in regions for region in call]
        # The line's cells only: not the scrollbar column beside it.
        assert marked == [Region(0, row, transcript.scrollable_content_region.width, 1)]


async def test_new_lines_below_a_view_that_does_not_scroll_repaint_only_themselves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        transcript = view.transcript
        view.follow(conversation_task())
        await wait_for(pilot, lambda: not view.streaming, "the (empty) stream")
        ingest(view, [codex_event(1, {"type": "turn.started", "turn_id": "t1"})])
        clock.now += 1
        view._flush()
        await pilot.pause()
        old_total = transcript.total_lines
        assert old_total < transcript.size.height

        regions, whole_pane = spy_refreshes(transcript, view, monkeypatch)
        message = {"id": "m1", "type": "agentMessage", "text": "Done."}
        ingest(view, [item(2, "completed", message)])
        clock.now += 1
        view._flush()
        await pilot.pause()

        assert transcript.total_lines > old_total
        assert transcript.scroll_y == 0
        assert whole_pane == [] and () not in regions
        marked = [region for call in regions for region in call]
        assert marked and all(region.y >= old_total for region in marked)
        assert any("Done." in text for text in view_lines(transcript))


async def test_an_unfocused_pane_hands_deltas_over_three_times_a_second_and_ends_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 deltas a second for 2 s into a pane without the keyboard focus: at most one
    hand-over (so one repaint) per third of a second, and after the stream the pane shows all
    of it."""
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        transcript = view.transcript
        view.follow(conversation_task())
        await wait_for(pilot, lambda: not view.streaming, "the (empty) stream")
        app.screen.set_focus(None)
        await pilot.pause()
        assert not view.has_focus_within
        ingest(
            view,
            [
                codex_event(1, {"type": "turn.started", "turn_id": "t1"}),
                item(2, "started", {"id": "m1", "type": "agentMessage", "text": ""}),
            ],
        )
        handovers: list[float] = []
        hand_over = view.feed.hand_over

        def spy() -> None:
            handovers.append(clock.now)
            hand_over()

        monkeypatch.setattr(view.feed, "hand_over", spy)
        words = [f"w{n} " for n in range(80)]
        arrivals = [0.01 + n / 40 for n in range(80)]
        pending = list(zip(arrivals, words, strict=True))
        seq = 3
        for tick in range(1, 60):  # the 50 ms flush timer, for 3 s
            clock.now = tick * 0.05
            while pending and pending[0][0] <= clock.now:
                ingest(view, [delta(seq, "m1", pending.pop(0)[1])])
                seq += 1
            view._flush()
        await pilot.pause()

        assert view.pending == 0, "the last deltas were handed over"
        interval = view.unfocused_redraw_s
        assert interval == pytest.approx(1 / 3)
        assert all(
            b - a >= interval - 0.025 - 1e-9 for a, b in zip(handovers, handovers[1:], strict=False)
        )
        assert len(handovers) <= 3 * 3 + 1
        text = "".join(view_lines(transcript))
        assert "w79" in text, "the final state is on screen"
        assert "".join(words).strip() in view.text(width=2000)

        # With the focus, hand-overs come every 100 ms again.
        transcript.focus()
        await pilot.pause()
        handovers.clear()
        for tick in range(60, 80):
            clock.now = tick * 0.05
            ingest(view, [delta(seq, "m1", "x")])
            seq += 1
            view._flush()
        assert len(handovers) >= 8


async def test_a_following_pane_repaints_its_scrollbar_only_when_the_thumb_moves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every batch scrolls a following pane and changes its scroll range; the thumb of a long
    window stays one cell at the bottom, so the scrollbar column is not sent again."""
    clock = FakeClock()
    app = StreamHost(clock, BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        transcript = view.transcript
        view.follow(conversation_task())
        await wait_for(pilot, lambda: not view.streaming, "the (empty) stream")
        ingest(view, codex_turns(1000))
        clock.now += 1
        view._flush()
        await pilot.pause()
        bar = transcript.vertical_scrollbar
        repaints: list[ScrollBar] = []
        refresh = ScrollBar.refresh

        def spy(self: ScrollBar, *regions: Region, **kwargs: Any) -> ScrollBar:
            if self is bar:
                repaints.append(self)
            return refresh(self, *regions, **kwargs)

        monkeypatch.setattr(ScrollBar, "refresh", spy)
        regions, _ = spy_refreshes(transcript, view, monkeypatch)
        for batch in range(3):
            top = transcript.scroll_y
            ingest(view, codex_turns(7, first_seq=1001 + 7 * batch))
            clock.now += 1
            view._flush()
            await pilot.pause()
            assert transcript.scroll_y > top, "the batch scrolled the pane"
        assert repaints == []
        content = transcript.scrollable_content_region.width
        assert all(region.right <= content for call in regions for region in call)

        transcript.action_scroll_top()
        await pilot.pause()
        assert repaints, "a thumb that moves is drawn again"


async def test_a_running_task_s_age_repaints_only_its_row(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The age of a running task changes once a second; the task list then repaints that
    task's two lines, not the list (about 250 bytes over SSH per change instead of 1.8 kB)."""
    server = server_factory(local_worker=False)
    seeded = await seed_tasks(server)
    running = next(t for t in seeded.tasks if t.status is TaskStatus.RUNNING)
    clock = FrozenClock()
    clock.set_after(running.created_at, timedelta(seconds=5))
    async with server.client() as client, running_app(client, server, clock=clock) as (app, pilot):
        await wait_for(pilot, lambda: dashboard_ready(app), "the dashboard")
        tasks = task_list(app)
        options = tasks.options

        def running_row() -> str:
            return next(r for r in row_texts(tasks) if running.prompt[:20] in r)

        await wait_for(
            pilot, lambda: any(t.id == running.id for t in tasks.tasks), "the running task"
        )
        assert running_row().endswith("· 5s")
        index = options.get_option_index(running.id)
        regions = record_refreshes(options, monkeypatch)
        clock.now = clock() + timedelta(seconds=1)
        await wait_for(pilot, lambda: running_row().endswith("· 6s"), "the new age")
        await pilot.pause()

        assert regions, "the row was not repainted"
        assert all(marked for marked in regions), "the whole list was repainted"
        # Each repaint is one task row's two lines (every running or queued task ages).
        rows = {
            options.gutter.top + options._index_to_line[i] - options.scroll_offset.y
            for i, option in enumerate(options.options)
            if not option.disabled
        }
        marked_rows = {(r.y, r.height) for marked in regions for r in marked}
        assert all(height == 2 and y in rows for y, height in marked_rows), marked_rows
        line = options._index_to_line[index] - options.scroll_offset.y
        assert (options.gutter.top + line, 2) in marked_rows
        shown = [options.render_line(line + row).text for row in range(2)]
        assert running.prompt[:20] in shown[0]
        assert "6s" in shown[1]


class _ListHost(App[None]):
    def compose(self) -> ComposeResult:
        yield OptionList(
            Option("alpha", id="a"), Option("beta", id="b"), Option("gamma", id="c"), id="list"
        )


async def test_a_prompt_that_changes_height_moves_the_rows_below(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same height: only the option's line is repainted; another height: the list is laid out
    again and the rows below move (the public replacement's behaviour)."""
    app = _ListHost()
    async with app.run_test(size=SIZE) as pilot:
        options = app.query_one(OptionList)
        regions = record_refreshes(options, monkeypatch)
        replace_option_prompt_in_place(options, "b", "BETA")
        await pilot.pause()
        assert regions == [
            (Region(options.gutter.left, options.gutter.top + 1, regions[0][0].width, 1),)
        ]
        texts = [options.render_line(y).text.strip() for y in range(4)]
        assert texts == ["alpha", "BETA", "gamma", ""]

        regions.clear()
        replace_option_prompt_in_place(options, "b", "beta\nbeta, line 2")
        await pilot.pause()
        assert () in regions  # the whole list
        texts = [options.render_line(y).text.strip() for y in range(4)]
        assert texts == ["alpha", "beta", "beta, line 2", "gamma"]
