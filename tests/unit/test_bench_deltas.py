"""Provides tests that the fake app-server's ``as-deltas`` mode emits what the ``deltas``
benchmark parses (benchmarks/deltas.py): stamped deltas of both streams, the completed items
whose texts they add up to, and a completed turn; and that the benchmark's integrity check and
report see a broken stream as broken. Fast and untimed: the fake runs unpaced, without a gate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks import report
from benchmarks.deltas import STAMP, DeltaSpec, DeltaTrace, _item_text, integrity
from benchmarks.notes import make_notes
from server_client.codex.appserver import Notification, parse_message, to_event
from tests.conftest import FAKE_CODEX
from tests.support.bench import delta_load, latency


def run_fake(prompt: str) -> list[dict[str, Any]]:
    """The fake app-server in ``as-deltas`` mode through one turn; its stdout messages."""
    turn = {"threadId": "t", "input": [{"type": "text", "text": prompt}]}
    requests = [
        {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "test"}}},
        {"id": 1, "method": "thread/start", "params": {}},
        {"id": 2, "method": "turn/start", "params": turn},
    ]
    env = {**os.environ, "FAKE_CODEX_MODE": "as-deltas"}
    done = subprocess.run(
        [sys.executable, str(FAKE_CODEX), "app-server"],
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_as_deltas_streams_stamped_deltas_that_add_up_to_the_completed_items() -> None:
    before = time.time_ns()
    spec = DeltaSpec(tasks=1, deltas=5, rate=0, output=3, pad=2)
    messages = run_fake(spec.prompts(gate=None)[0])
    after = time.time_ns()

    trace = DeltaTrace("t")
    events = []
    for message in messages:
        note = parse_message(message)
        if not isinstance(note, Notification):
            continue
        event = to_event(note.method, note.params)  # what the worker stores
        if event is None:
            continue
        events.append(event)
        if event["type"] == "item.delta":
            trace.add_delta(event["item_id"], event["delta"], after)
        elif event["type"] == "item.completed":
            text = _item_text(event["item"])
            if text is not None:
                trace.add_completed(event["item"]["id"], text)

    types = [e["type"] for e in events]
    assert types[:2] == ["thread.started", "turn.started"]
    assert types[-2:] == ["usage.updated", "turn.completed"]
    streams = [e["stream"] for e in events if e["type"] == "item.delta"]
    assert streams == ["agent_message"] * 5 + ["command_output"] * 3
    assert sorted(trace.seen) == list(range(spec.per_task))
    assert all(before <= stamp <= after for stamp in trace.stamps)
    assert trace.stamps == sorted(trace.stamps)
    assert all(text.endswith("xx") for texts in trace.texts.values() for text in texts)
    assert set(trace.completed) == {"msg_1", "cmd_1"}
    assert integrity([trace], spec.per_task) == {
        "lost": 0,
        "duplicated": 0,
        "out_of_order": 0,
        "text_mismatch": 0,
        "completed_not_once": 0,
    }


def test_a_coalesced_event_counts_each_stamp_and_integrity_sees_breakage() -> None:
    trace = DeltaTrace("t")
    now = 3_000
    trace.add_delta("msg_1", "\u27e80:1000\u27e9 \u27e81:2000\u27e9 ", now, ts_ns=1_500)  # merged
    trace.add_delta("msg_1", "\u27e81:2000\u27e9 ", now)  # a duplicate
    trace.add_completed("msg_1", "\u27e80:1000\u27e9 \u27e81:2000\u27e9 ")
    assert len(STAMP.findall("\u27e80:1000\u27e9 \u27e81:2000\u27e9 ")) == 2
    assert trace.lat_ns == [2000, 1000, 1000]
    assert trace.delta_events == 2
    assert (trace.read_ns, trace.onward_ns) == ([500], [1500])  # the first delta, split at ts
    assert integrity([trace], per_task=3) == {
        "lost": 1,  # index 2 never came
        "duplicated": 1,
        "out_of_order": 0,  # a repeat of the newest index is a duplicate, not a reordering
        "text_mismatch": 1,  # the duplicate makes the concatenation longer
        "completed_not_once": 0,
    }


def test_a_delta_behind_a_later_one_counts_as_out_of_order() -> None:
    trace = DeltaTrace("t")
    trace.add_delta("msg_1", "\u27e80:1000\u27e9 ", 3_000)
    trace.add_delta("msg_1", "\u27e82:1200\u27e9 ", 3_000)
    trace.add_delta("msg_1", "\u27e81:1100\u27e9 ", 3_000)  # overtaken by index 2
    trace.add_completed("msg_1", "\u27e80:1000\u27e9 \u27e81:1100\u27e9 \u27e82:1200\u27e9 ")
    checks = integrity([trace], per_task=3)
    assert checks["out_of_order"] == 1
    assert checks["lost"] == checks["duplicated"] == 0
    assert checks["text_mismatch"] == 1  # the concatenation is in arrival order


def test_the_report_and_notes_show_a_deltas_section() -> None:
    load = delta_load(
        20,
        100.0,
        latency(20.0, 40.0),
        latency(0.5, 2.0),
        deltas_per_event=4.0,
        stored_bytes_per_delta=30.0,
        cpu_ms_per_1000_deltas={"server": 100.0, "worker": 120.0},
        rss_peak_mb=150.0,
        worker_read_ms=latency(0.5, 2.0),
        after_read_ms=latency(20.0, 40.0),
        ok=False,
        lost=2,
    )
    sections = {"deltas": {"loads": {"20x100": load}}}
    flat = report.flatten(sections)
    assert flat["deltas_p99_ratio_20"] == 20.0
    assert flat["deltas_per_event_20"] == 4.0
    assert flat["deltas_ok_20"] is False
    meta = {"mode": "quick", "started": "now", "cpus": 2, "load_before": "0"}
    results = {"meta": {**meta, "load_after": "0", "commit": "x"}, "goals": [], "notes": []}
    table = report.markdown({**results, "sections": sections}, flat)
    row = "| 20 | 2,000 | 1,900 | 20.0 | 40.0 | 0.50 | 2.00 | 19.5 | 38.0 | 40.0 | 20.0 | 4.00 |"
    assert row in table
    notes = [n for n in make_notes(flat, sections) if n.startswith("Token deltas")]
    assert len(notes) == 1 and "not intact: lost 2" in notes[0], notes
    assert "p50 0.5 ms from the write to the worker's read" in notes[0], notes
