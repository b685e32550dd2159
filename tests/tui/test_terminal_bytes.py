"""Provides the tests of the terminal-bytes measurement (benchmarks/tui.py ``tui_streams``):
a real server with its local worker and the fake codex, a real ``codex-tui`` under a pty.

Each stream must be measured in a pane that follows its own task. The TUI reopens the panes
it left, so a second stream measured with the first one's home watched the first task and
reported the idle screen (0 bytes per 1,000 events at 1,000 events/s in a full run).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.harness import start_server
from benchmarks.notes import _terminal_note
from benchmarks.tui import stream_figures, tui_streams


async def test_each_stream_is_measured_in_a_pane_that_shows_its_own_task(tmp_path: Path) -> None:
    server = start_server(tmp_path, name="bytes", max_tasks=2)
    try:
        # Different lengths, so the second task's last message ("message 29") is text the
        # first task never wrote.
        out = await tui_streams(
            server, tmp_path, streams=[(20, 20.0), (30, 30.0)], log=lambda _: None, idle_s=0.5
        )
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "bytes-home", ignore_errors=True)
    for index in (0, 1):
        assert out[f"tui_stream_{index}"]["last_event_shown"], out
    assert out["tui_bytes_per_1000_events"] > 0
    # The second stream scrolled a pane: at least a screenful of bytes, not the idle screen.
    assert out["tui_stream_1"]["bytes"] > 1000
    assert out["tui_bytes_per_1000_events_30"] == 1000 * out["tui_stream_1"]["bytes_per_event"]


def test_a_stream_whose_last_event_never_showed_is_left_out_of_the_note() -> None:
    shown = stream_figures(300, 30.0, total=95_000, idle_rate=500.0, seconds=10.0, shown=True)
    assert shown["bytes_per_event"] == (95_000 - 5_000) / 300
    missed = stream_figures(5000, 1000.0, total=2_490, idle_rate=550.0, seconds=4.5, shown=False)
    note = _terminal_note({"tui": {"tui_stream_0": shown, "tui_stream_1": missed}})
    assert note is not None
    assert "300,000 bytes per 1,000 events at 30/s" in note
    assert "at 1000/s" not in note
