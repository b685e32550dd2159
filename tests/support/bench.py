"""Provides builders of benchmark results for the unit tests of the benchmarks' report and
notes (tests/unit/test_bench_*.py): the shapes that benchmarks/deltas.py returns, with only
the figures a test cares about given."""

from __future__ import annotations

from typing import Any


def latency(p50: float, p99: float) -> dict[str, float]:
    """A latency summary (ms) shaped as ``benchmarks.harness.summarize`` returns it, from its
    p50 and p99 (p90 halfway between, max 10 ms above the p99)."""
    return {"n": 10, "p50": p50, "p90": (p50 + p99) / 2, "p99": p99, "max": p99 + 10, "mean": p50}


def delta_load(
    tasks: int, rate: float, lat: dict[str, float], pipe: dict[str, float], **e2e: Any
) -> dict[str, Any]:
    """One load of the ``deltas`` or ``storm`` section as ``benchmarks.deltas.deltas``
    returns it: ``tasks`` turns at ``rate`` deltas/s each (95 % of the offered rate
    delivered), end-to-end latency ``lat`` and the pipe baseline's ``pipe`` (summaries, ms),
    their differences and ratios derived; ``e2e`` adds or replaces end-to-end figures."""
    offered = tasks * rate
    result = {
        "tasks": tasks,
        "rate_per_task": rate,
        "offered_per_s": offered,
        "delivered_per_s": 0.95 * offered,
        "received": 10,
        "latency_ms": lat,
        **e2e,
    }
    return {
        "e2e": result,
        "baseline": {"received": 10, "latency_ms": pipe},
        "ratio": {q: lat[q] / pipe[q] for q in ("p50", "p90", "p99")},
        "added_ms": {q: lat[q] - pipe[q] for q in ("p50", "p90", "p99", "max")},
    }
