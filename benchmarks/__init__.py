"""Benchmarks of codex-tui: scripts that start the real server, worker and client on loopback,
feed them with the fake codex (``tests/fakes/fake_codex.py``, mode ``stamped``) and, once, with the
real codex binary against the mock model server, and compare against a pipe baseline measured
in the same run.

Run ``uv run python -m benchmarks`` (full) or ``uv run python -m benchmarks --quick``; results
go to ``benchmarks/results/latest.json`` and a Markdown table on stdout. Nothing here asserts:
results are reported as measured (see the README's Performance section).
"""
