"""Provides tests of the pure parts of the ``relay`` and ``storm`` benchmarks
(benchmarks/relay.py, relay_procs.py, pipeline.py's stepping, report.py): the relay's events
are the pipeline's events byte for byte but for the stamps, its channel numbers and streams
them until the status event, the rate stepping climbs and bisects, and the report derives the
new keys. Untimed: nothing here measures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.load import DEFAULT_PAD
from benchmarks.notes import make_notes
from benchmarks.pipeline import judge_step, step_rates
from benchmarks.relay_procs import Channel, stamped_event
from tests.conftest import FAKE_CODEX
from tests.support.bench import delta_load, latency


def test_the_relay_event_is_the_fakes_stamped_line(tmp_path: Path) -> None:
    prompt = f"bench events=1 rate=0 pad={DEFAULT_PAD}"
    argv = ["exec", "--json", "--skip-git-repo-check", "-s", "read-only", "-C", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(FAKE_CODEX), *argv, "--", prompt],
        capture_output=True,
        text=True,
        env={**os.environ, "FAKE_CODEX_MODE": "stamped"},
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if '"t_ns"' in x)
    event = stamped_event(0, "x" * DEFAULT_PAD, "2026-01-01T00:00:00+00:00")
    assert json.loads(event)["kind"] == "codex"
    data = event[event.index('"data":') + len('"data":') : -1]
    assert json.loads(data)["t_ns"] > 0
    unstamped = re.compile(r'"t_ns":\d+')
    assert unstamped.sub('"t_ns":0', data) == unstamped.sub('"t_ns":0', line)  # byte for byte


def _frames(chunks: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    """``(id, data)`` of each SSE frame in ``chunks``."""
    out = []
    for frame in b"".join(chunks).decode().split("\r\n\r\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "id" in fields:
            out.append((int(fields["id"]), json.loads(fields["data"])))
    return out


async def test_a_relay_channel_numbers_events_and_streams_them_to_the_status() -> None:
    channel = Channel()
    ts = "2026-01-01T00:00:00+00:00"
    assert channel.append([{"ts": ts, "kind": "codex", "data": {"n": 0}}]) == 1
    assert channel.append([{"ts": ts, "kind": "codex", "data": {"n": 1}}]) == 2
    assert channel.append([{"ts": ts, "kind": "status", "data": {"status": "done"}}]) == 3
    everything = _frames([chunk async for chunk in channel.follow(0)])
    assert [seq for seq, _ in everything] == [1, 2, 3]
    assert everything[0][1] == {"seq": 1, "ts": ts, "kind": "codex", "data": {"n": 0}}
    assert [seq for seq, _ in _frames([c async for c in channel.follow(2)])] == [3]


async def test_step_rates_climbs_until_a_step_fails_then_bisects() -> None:
    tried: list[float] = []

    async def step(offered: float) -> dict[str, Any]:
        tried.append(offered)
        return {"offered_per_s": offered, "passed": offered < 3000}

    passing, failing = await step_rates([800, 1600, 3200, 6400], step, refine=2)
    assert tried == [800, 1600, 3200, 2400, 2800]
    assert passing is not None and passing["offered_per_s"] == 2800
    assert failing is not None and failing["offered_per_s"] == 3200

    tried.clear()
    passing, failing = await step_rates([6400], step, fallback=[4000, 2000, 1000])
    assert tried == [6400, 4000, 2000]
    assert passing is not None and passing["offered_per_s"] == 2000


def test_a_step_passes_with_nothing_lost_a_steady_p99_under_100_ms_and_90_pct_delivered() -> None:
    def result(ok: bool, p99: float, delivered: float) -> dict[str, Any]:
        steady = {"n": 100, "p99": p99}
        return {
            "ok": ok,
            "latency_ms": {"p99": 500.0},  # the ramp's; the steady p99 decides
            "latency_ms_by_phase": {"steady": steady},
            "delivered_per_s": delivered,
        }

    assert judge_step(result(True, 99.0, 900.0), 1000)
    assert not judge_step(result(True, 101.0, 1000.0), 1000)
    assert not judge_step(result(True, 10.0, 899.0), 1000)
    assert not judge_step(result(False, 10.0, 1000.0), 1000)


def test_the_report_derives_the_relay_ratio_and_the_storm_keys() -> None:
    storm = delta_load(
        50, 40.0, latency(30.0, 60.0), latency(0.1, 2.0), ok=True, lost=0, out_of_order=0
    )
    relay_step = {"offered_per_s": 20000.0, "passed": True, "cpu_ms_per_1000_events": {}}
    sections = {
        "pipeline": {"sustained": {"sustained_events_per_s": 5000.0}},
        "relay": {
            "steps": [relay_step],
            "relay_events_per_s": 20000.0,
            "relay_p50_ms": 3.0,
            "relay_p99_ms": 40.0,
            "relay_first_failing_per_s": 40000.0,
        },
        "storm": {"loads": {"50x40": storm}},
    }
    flat = report.flatten(sections)
    assert flat["sustained_vs_relay_pct"] == 25.0
    assert flat["relay_events_per_s"] == 20000.0
    assert flat["delta_storm_added_p99_ms"] == 58.0
    assert flat["delta_storm_added_p50_ms"] == 29.9
    assert flat["delta_storm_ok"] is True and flat["delta_storm_out_of_order"] == 0
    rows = {row["key"]: row["met"] for row in report.goal_rows(flat)}
    assert rows["sustained_vs_relay_pct"] is True
    assert rows["delta_storm_added_p99_ms"] is False
    assert rows["tui_bytes_per_s_4_panes"] is None  # not measured in this run
    assert report.relay_pct(5000.0, None) is None and report.relay_pct(None, 1.0) is None
    assert report.relay_pct(1.0, 0.0) is None
    notes = make_notes(flat, sections)
    relay_note = next(n for n in notes if n.startswith("Bare relay"))
    assert "20,000 events/s sustained (40,000/s failed)" in relay_note
    assert "5,000 events/s, 25.0 % of the relay's rate" in relay_note
    storm_note = next(n for n in notes if n.startswith("Delta storm"))
    assert "added latency p50 29.9 ms and p99 58.0 ms" in storm_note


def test_the_report_compares_the_added_p50_with_the_relays_own_at_the_same_rate() -> None:
    """The relay's floor step (100 events/s, each event alone) is the floor of the
    pipeline's added latency: the report derives their ratio and the latency note says it."""

    def level(p50: float) -> dict[str, Any]:
        return {
            "e2e": {
                "latency_ms": latency(p50 + 0.1, 9.0),
                "latency_ms_by_phase": {"steady": latency(p50, 7.0)},
                "ok": True,
                "offered_per_s": 100.0,
            },
            "baseline": {"latency_ms": latency(0.1, 1.0)},
            "added_ms": {"p50": p50, "p99": 8.0, "max": 9.0},
        }

    relay_section = {
        "steps": [],
        "relay_events_per_s": 20000.0,
        "relay_floor_rate_per_s": 100.0,
        "relay_floor_p50_ms": 2.0,
        "relay_floor_p99_ms": 5.0,
    }
    sections = {"pipeline": {"latency": {"levels": {50: level(3.0)}}}, "relay": relay_section}
    flat = report.flatten(sections)
    assert flat["relay_floor_p50_ms"] == 2.0
    assert flat["added_p50_vs_relay_floor"] == 1.5
    latency_note = next(n for n in make_notes(flat, sections) if n.startswith("Added latency"))
    assert "adds p50 2.0 ms at 100 events/s" in latency_note
    assert "×1.50 that" in latency_note
    # Without the floor step (an older run, or the relay failed) there is no ratio.
    del relay_section["relay_floor_p50_ms"]
    assert "added_p50_vs_relay_floor" not in report.flatten(sections)
