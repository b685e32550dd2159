"""Provides sampling profiles of running processes with py-spy, attached from outside (no hook
in the product code), summarised as their top frames.

py-spy is not a project dependency: it runs through ``uvx py-spy`` (or a ``py-spy`` on PATH).
Without either, profiles are skipped with a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

#: Frames that only say "the event loop ran something"; left out of the inclusive top list.
_PLUMBING = re.compile(
    r"^(run|_run_once|_run|run_forever|run_until_complete|<module>|_run_module_as_main|"
    r"_run_code|main|serve|invoke|__call__|wrapper|app|handle|call_next|middleware|"
    r"run_server|startup|_serve|callback|coro|__aenter__)\b"
)


#: Leaf frames of threads that only wait (py-spy cannot always tell them from running ones).
_WAITING = re.compile(
    r"^((Condition|Event|Semaphore)\.wait|Queue\.get|\w*Selector\.select|select|poll|sleep|"
    r"SyncStream\.read|socket\.recv\w*|_connection_worker_thread \(.*core\.py:59\)|"
    r"_worker \(.*thread\.py:81\)|WorkerThread\.run)"
)
#: Stacks of the benchmark's own helpers (not part of what is measured).
_OURS = re.compile(r"_Prober\._run")


def py_spy_command() -> list[str] | None:
    """How to run py-spy here (``py-spy`` on PATH, else ``uvx py-spy``), or None."""
    found = shutil.which("py-spy")
    if found:
        return [found]
    uvx = shutil.which("uvx")
    if uvx:
        return [uvx, "py-spy"]
    return None


async def record(
    pids: dict[str, int], duration_s: float, out_dir: Path, rate: int = 200
) -> dict[str, Path]:
    """Sample each process for ``duration_s`` at ``rate`` Hz at once; returns the collapsed
    stack files (``name → path``) of the recordings that worked."""
    command = py_spy_command()
    if command is None:
        return {}
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    procs: dict[str, tuple[asyncio.subprocess.Process, Path]] = {}
    for name, pid in pids.items():
        path = out_dir / f"{name}.txt"
        proc = await asyncio.create_subprocess_exec(
            *command,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(duration_s))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--full-filenames",
            "--output",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        procs[name] = (proc, path)
    found: dict[str, Path] = {}
    for name, (proc, path) in procs.items():
        try:
            await asyncio.wait_for(proc.wait(), duration_s + 60)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if path.exists() and path.stat().st_size:
            found[name] = path
    return found


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (module.py:12)``, with the package kept for
    codex-tui's own modules."""
    match = re.match(r"^(.*) \((.*):(\d+)\)$", frame)
    if not match:
        return frame
    func, path, line = match.groups()
    parts = path.split("/")
    for anchor in ("server_client", "codex_tui", "site-packages", "python3.11"):
        if anchor in parts:
            rest = parts[parts.index(anchor) + 1 :]
            if anchor in ("server_client", "codex_tui"):
                rest = [anchor, *rest]
            return f"{func} ({'/'.join(rest)}:{line})"
    return f"{func} ({parts[-1]}:{line})"


def load_stacks(path: Path) -> list[tuple[list[str], int]]:
    """The busy stacks of a py-spy ``--format raw`` file (root first, frames shortened):
    waiting threads and the benchmark's own helpers left out."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames or _WAITING.match(frames[-1]) or any(_OURS.search(f) for f in frames):
            continue
        stacks.append((frames, int(count_text)))
    return stacks


def share(stacks: list[tuple[list[str], int]], pattern: str) -> float:
    """Percent of the busy samples whose stack has a frame matching ``pattern``."""
    regex = re.compile(pattern)
    total = sum(count for _, count in stacks)
    hit = sum(count for frames, count in stacks if any(regex.search(f) for f in frames))
    return 100 * hit / total if total else 0.0


def summarize_collapsed(path: Path, top: int = 12) -> dict[str, Any]:
    """Top frames of a py-spy ``--format raw`` file, as % of the busy samples: by own
    samples (``self``: where the CPU went) and, for codex-tui's own functions, inclusive of
    what they call (``own_code``: which of our calls it went through)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, count in load_stacks(path):
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if ("server_client/" in frame or "codex_tui/" in frame) and not _PLUMBING.match(frame):
                inclusive[frame] += count
    if not total:
        return {"samples": 0}

    def pct(counter: Counter[str]) -> list[str]:
        return [f"{100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]

    return {"busy_samples": total, "self": pct(own), "own_code": pct(inclusive)}
