"""Provides tests of ExecRunner and the codex binary lookup, driven by tests/fakes/fake_codex.py.

Covers docs/reliability.md C1 (cancel reaches every process), C2 (own session, stdin /dev/null),
E6 (huge lines truncated), E7 (malformed output kept), S3 (allow-listed env) and S5 (the prompt
stays one plain argv element). Tests with the real codex binary (tests/fakes/codex_home.py) run when
it is installed, and are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from server_client.models import EventIn, EventKind, Sandbox, TaskStatus
from server_client.worker import codex_bin as cb
from server_client.worker import procs
from server_client.worker.procs import ProcessWatch
from server_client.worker.runner import (
    ALLOWED_ENV,
    DEFAULT_MAX_LINE_BYTES,
    TASK_ENV,
    ExecRunner,
    RunOutcome,
    RunSpec,
    build_argv,
    build_child_env,
)
from tests.conftest import FAKE_CODEX as FAKE
from tests.conftest import FAKE_ENV
from tests.support.waits import within

pytestmark = pytest.mark.timeout(60)
REAL_CACHE = Path("/root/.cache/codex-tui-ci/codex-0.169.0/node_modules/@openai")
FAKE_VARS = (
    *FAKE_ENV,
    "FAKE_CODEX_FORK_KEEP_STDIO",
    "FAKE_CODEX_FORK_SCRUB_ENV",
    "FAKE_CODEX_WAIT_FILE",
)
GRACE_S = 0.5


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _fake_is_executable() -> None:
    mode = FAKE.stat().st_mode
    if not mode & stat.S_IXUSR:
        FAKE.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class Collector:
    """Collects emitted events; lets a test wait for one without fixed sleeps."""

    def __init__(self) -> None:
        self.events: list[EventIn] = []

    def __call__(self, event: EventIn) -> None:
        self.events.append(event)

    def codex(self) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.kind is EventKind.CODEX]

    def types(self) -> list[str]:
        return [d.get("type", "") for d in self.codex()]

    def of(self, kind: EventKind) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.kind is kind]

    def has_type(self, kind: str) -> bool:
        return kind in self.types()


async def wait_until(pred: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll ``pred`` until it holds; fail after ``timeout_s`` seconds (generous: what is
    awaited often includes starting the fake codex, which takes seconds on a loaded box)."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


def read_record(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def is_dead(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie waiting for its parent)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def marked(task_id: str) -> list[int]:
    """Live processes whose environment carries the task's marker."""
    pids = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TASK_ENV) == task_id and not is_dead(proc.pid):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


class Harness:
    """Builds specs that run the fake codex in ``tmp_path``."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.workdir = tmp_path / "work"
        self.workdir.mkdir()
        self.record = tmp_path / "record.json"
        self.task_id = f"task-{uuid.uuid4().hex}"

    def spec(
        self,
        mode: str = "ok",
        *,
        prompt: str = "say hi",
        model: str | None = None,
        sandbox: Sandbox = Sandbox.WORKSPACE_WRITE,
        codex_bin: str | None = None,
        workdir: str | None = None,
        source: Mapping[str, str] | None = None,
        fake: Mapping[str, str] | None = None,
    ) -> RunSpec:
        """A spec for ``mode``; ``fake`` sets FAKE_CODEX_<NAME> variables (names lower-case)."""
        settings = {"FAKE_CODEX_MODE": mode, "FAKE_CODEX_RECORD": str(self.record)}
        settings.update({f"FAKE_CODEX_{k.upper()}": v for k, v in (fake or {}).items()})
        base = dict(os.environ if source is None else source)
        env = build_child_env(FAKE_VARS, task_id=self.task_id, source=base | settings)
        return RunSpec(
            task_id=self.task_id,
            prompt=prompt,
            workdir=workdir or str(self.workdir),
            sandbox=sandbox,
            model=model,
            codex_bin=codex_bin or str(FAKE),
            env=env,
        )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    for pid in marked(h.task_id):  # never leak a process, even when a test fails
        psutil.Process(pid).kill()


async def run_fake(
    spec: RunSpec, *, grace_s: float = GRACE_S, **kwargs: Any
) -> tuple[RunOutcome, Collector]:
    events = Collector()
    outcome = await ExecRunner(spec, events, grace_s=grace_s, **kwargs).run()
    assert outcome.event_count == len(events.events)
    return outcome, events


# --------------------------------------------------------------------------------------------
# Normal runs and failures
# --------------------------------------------------------------------------------------------


async def test_ok_run_completes_with_events_in_order(harness: Harness) -> None:
    outcome, events = await run_fake(harness.spec("ok"))

    assert outcome.status is TaskStatus.COMPLETED
    assert outcome.exit_code == 0
    assert outcome.error is None
    assert outcome.thread_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert events.types() == [
        "thread.started",
        "turn.started",
        "item.started",
        "item.completed",
        "item.completed",
        "item.started",
        "item.completed",
        "item.completed",
        "item.completed",
        "turn.completed",
    ]
    items = [d["item"]["type"] for d in events.codex() if "item" in d]
    assert items == [
        "command_execution",
        "command_execution",
        "reasoning",
        "todo_list",
        "file_change",
        "todo_list",
        "agent_message",
    ]
    assert events.of(EventKind.STDERR) == [{"line": "Reading additional input from stdin..."}]
    assert events.of(EventKind.STDOUT) == []
    assert all(e.ts.tzinfo is not None for e in events.events)


async def test_burst_keeps_every_event_in_order(harness: Harness) -> None:
    outcome, events = await run_fake(harness.spec("burst", fake={"events": "5000"}))

    assert outcome.status is TaskStatus.COMPLETED
    texts = [d["item"]["text"] for d in events.codex() if d["type"] == "item.completed"]
    assert texts == [f"message {n}" for n in range(5000)]


async def test_crash_fails_with_exit_code_and_stderr(harness: Harness) -> None:
    outcome, events = await run_fake(harness.spec("crash"))

    assert outcome.status is TaskStatus.FAILED
    assert outcome.exit_code == 3
    assert outcome.error is not None
    assert "codex exited with code 3 before the turn finished" in outcome.error
    assert "panicked" in outcome.error
    assert outcome.thread_id is not None
    assert events.types()[-1] == "item.started"


async def test_turn_failed_fails_with_codex_message(harness: Harness) -> None:
    spec = harness.spec("fail", fake={"error": "quota exceeded: try later"})
    outcome, events = await run_fake(spec)

    assert outcome.status is TaskStatus.FAILED
    assert outcome.exit_code == 1
    assert outcome.error == "quota exceeded: try later"
    # the transient top-level error event is kept and was not fatal by itself
    assert events.types() == ["thread.started", "turn.started", "error", "turn.failed"]


async def test_error_event_alone_is_not_fatal(harness: Harness) -> None:
    outcome, events = await run_fake(harness.spec("reconnect"))

    assert outcome.status is TaskStatus.COMPLETED
    assert outcome.error is None
    assert events.types() == [
        "thread.started",
        "turn.started",
        "error",
        "item.completed",
        "turn.completed",
    ]


async def test_malformed_lines_are_kept_and_reading_goes_on(harness: Harness) -> None:
    outcome, events = await run_fake(harness.spec("malformed"))

    assert outcome.status is TaskStatus.COMPLETED
    stdout = [d["line"] for d in events.of(EventKind.STDOUT)]
    assert stdout[0] == "this is not json"
    assert stdout[1] == '{"type":"item.completed","item":{"id":"item_0","type":"agent_mess'
    assert stdout[2] == "[1, 2, 3]"
    assert stdout[3] == "\ufffd\ufffd bad utf-8 \ufffd"
    assert stdout[4] == "[" * 100_000
    # Not JSON (RFC 8259), and the server would refuse them: kept as raw lines.
    assert stdout[5:] == ['{"type":"x.nan","value":NaN}', '{"type":"x.huge","value":1e400}']
    assert len(stdout) == 7  # the blank line was skipped
    custom = [d for d in events.codex() if d["type"] == "x.custom"]
    assert custom == [{"type": "x.custom", "text": "lone ? surrogate"}]
    assert events.types()[-2:] == ["item.completed", "turn.completed"]
    for event in events.events:  # every event can be uploaded
        event.model_dump_json()


async def test_huge_line_is_truncated_and_the_run_goes_on(harness: Harness) -> None:
    outcome, events = await run_fake(harness.spec("huge", fake={"size_mb": "12"}))

    assert outcome.status is TaskStatus.COMPLETED
    (truncated,) = events.of(EventKind.STDOUT)
    assert len(truncated["line"]) == DEFAULT_MAX_LINE_BYTES
    assert truncated["line"].startswith('{"type":"item.completed"')
    full = len(
        json.dumps(
            {
                "type": "item.completed",
                "item": {"id": "item_0", "type": "agent_message", "text": "x" * (12 << 20)},
            },
            separators=(",", ":"),
        )
    )
    assert truncated["truncated_bytes"] == full - DEFAULT_MAX_LINE_BYTES
    assert events.types() == ["thread.started", "turn.started", "turn.completed"]


async def test_max_line_bytes_applies_to_every_line(harness: Harness) -> None:
    outcome, events = await run_fake(harness.spec("ok"), max_line_bytes=120)

    assert outcome.status is TaskStatus.COMPLETED  # turn.completed (101 bytes) still fits
    truncated = events.of(EventKind.STDOUT)
    assert len(truncated) >= 3  # the longer item lines
    assert all(len(d["line"]) == 120 and d["truncated_bytes"] > 0 for d in truncated)
    assert len(events.codex()) + len(truncated) == 10  # no line lost


# --------------------------------------------------------------------------------------------
# Cancel (C1)
# --------------------------------------------------------------------------------------------


async def test_cancel_sleeping_codex_ends_canceled_quickly(harness: Harness) -> None:
    events = Collector()
    runner = ExecRunner(harness.spec("sleep"), events, grace_s=GRACE_S)
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: events.has_type("item.started"))

    started = time.monotonic()
    runner.cancel()
    runner.cancel()  # idempotent
    outcome = await task
    elapsed = time.monotonic() - started

    assert outcome.status is TaskStatus.CANCELED
    assert outcome.exit_code == 1  # codex exits 1 on SIGINT
    assert outcome.error is None
    assert elapsed < GRACE_S + 0.5
    assert runner.pid is not None and is_dead(runner.pid)


async def test_cancel_codex_ignoring_sigint_kills_it_after_grace(harness: Harness) -> None:
    events = Collector()
    runner = ExecRunner(harness.spec("ignore-sigint"), events, grace_s=GRACE_S)
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: events.has_type("item.started"))

    started = time.monotonic()
    runner.cancel()
    outcome = await task
    elapsed = time.monotonic() - started

    assert outcome.status is TaskStatus.CANCELED
    assert outcome.exit_code == -9
    assert GRACE_S <= elapsed < GRACE_S + 1.5


@pytest.mark.parametrize(
    "fork_env",
    [
        pytest.param({}, id="marker"),
        pytest.param({"fork_keep_stdio": "1"}, id="grandchild-holds-stdout"),
        pytest.param({"fork_scrub_env": "1"}, id="no-marker-descendant-only"),
    ],
)
async def test_cancel_kills_grandchild_in_its_own_session(
    harness: Harness, fork_env: dict[str, str]
) -> None:
    events = Collector()
    runner = ExecRunner(harness.spec("fork", fake=fork_env), events, grace_s=GRACE_S)
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: events.has_type("item.started"))
    record = read_record(harness.record)
    grandchild = record["grandchild"]
    assert isinstance(grandchild, int)
    assert os.getsid(grandchild) == grandchild != record["sid"]  # out of codex's session
    assert not is_dead(grandchild)

    runner.cancel()
    outcome = await asyncio.wait_for(task, GRACE_S + 5)

    assert outcome.status is TaskStatus.CANCELED
    assert is_dead(grandchild)
    assert marked(harness.task_id) == []


@pytest.mark.parametrize(
    "fork_env",
    [pytest.param({}, id="marker"), pytest.param({"fork_keep_stdio": "1"}, id="holds-stdout")],
)
async def test_finished_run_leaves_no_process_behind(
    harness: Harness, fork_env: dict[str, str]
) -> None:
    outcome, _ = await run_fake(harness.spec("fork-exit", fake=fork_env))

    assert outcome.status is TaskStatus.COMPLETED
    grandchild = read_record(harness.record)["grandchild"]
    assert is_dead(grandchild)
    assert marked(harness.task_id) == []


async def test_cancel_before_run_never_starts_codex(harness: Harness) -> None:
    runner = ExecRunner(harness.spec("ok"), Collector())
    runner.cancel()
    outcome = await runner.run()

    assert outcome == RunOutcome(TaskStatus.CANCELED, None, None, None, 0)
    assert not harness.record.exists()
    assert runner.pid is None


async def test_cancel_after_run_is_a_no_op(harness: Harness) -> None:
    runner = ExecRunner(harness.spec("ok"), Collector())
    outcome = await runner.run()
    runner.cancel()
    assert outcome.status is TaskStatus.COMPLETED
    with pytest.raises(RuntimeError):
        await runner.run()


async def test_cancelling_the_run_task_kills_codex(harness: Harness) -> None:
    events = Collector()
    runner = ExecRunner(harness.spec("fork"), events, grace_s=GRACE_S)
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: events.has_type("item.started"))
    grandchild = read_record(harness.record)["grandchild"]

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert runner.pid is not None and is_dead(runner.pid)
    assert is_dead(grandchild)


async def test_emit_error_fails_the_run_and_stops_codex(harness: Harness) -> None:
    def broken(event: EventIn) -> None:
        raise RuntimeError("upload buffer exploded")

    runner = ExecRunner(harness.spec("sleep"), broken, grace_s=GRACE_S)
    outcome = await asyncio.wait_for(runner.run(), GRACE_S + 5)

    assert outcome.status is TaskStatus.FAILED
    assert outcome.error is not None and "upload buffer exploded" in outcome.error


# --------------------------------------------------------------------------------------------
# The shared process watch
# --------------------------------------------------------------------------------------------


async def test_one_pass_per_interval_records_the_descendants_of_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    real_read = procs.read_process_table

    def counting_read(markers: dict[tuple[int, float], str | None]) -> procs.ProcessTable:
        nonlocal reads
        reads += 1
        return real_read(markers)

    monkeypatch.setattr(procs, "read_process_table", counting_read)
    watch = ProcessWatch(interval_s=0.2)
    harnesses = []
    for i in range(4):
        (tmp_path / f"run{i}").mkdir()
        harnesses.append(Harness(tmp_path / f"run{i}"))
    runners = [
        ExecRunner(h.spec("fork"), Collector(), grace_s=GRACE_S, watch=watch) for h in harnesses
    ]
    tasks = [asyncio.create_task(runner.run()) for runner in runners]
    try:
        await wait_until(lambda: all(h.record.exists() for h in harnesses))
        grandchildren = [read_record(h.record)["grandchild"] for h in harnesses]
        await wait_until(
            lambda: all(
                r.processes is not None and g in r.processes.known
                for r, g in zip(runners, grandchildren, strict=True)
            )
        )
        passes, reads_before = watch.passes, reads
        started = time.monotonic()
        await wait_until(lambda: watch.passes >= passes + 3)
        elapsed = time.monotonic() - started
        # One read of /proc per pass for the four runs (a pass may be starting right now),
        # and passes an interval apart, not one per run.
        assert reads - reads_before <= watch.passes - passes + 1
        assert elapsed >= 2.5 * watch.interval_s
    finally:
        for runner in runners:
            runner.cancel()
        outcomes = await asyncio.gather(*tasks)
        for h in harnesses:
            for pid in marked(h.task_id):
                psutil.Process(pid).kill()
    assert [o.status for o in outcomes] == [TaskStatus.CANCELED] * 4
    assert all(is_dead(g) for g in grandchildren)
    assert watch.runs == 0


async def test_a_recorded_descendant_without_marker_is_killed_when_codex_ends(
    harness: Harness,
) -> None:
    done = harness.tmp_path / "done"
    watch = ProcessWatch(interval_s=0.05)
    spec = harness.spec("fork", fake={"fork_scrub_env": "1", "wait_file": str(done)})
    runner = ExecRunner(spec, Collector(), grace_s=GRACE_S, watch=watch)
    task = asyncio.create_task(runner.run())
    await wait_until(harness.record.exists)
    grandchild = read_record(harness.record)["grandchild"]
    await wait_until(lambda: grandchild not in marked(harness.task_id))  # exec'd, no marker
    await wait_until(lambda: runner.processes is not None and grandchild in runner.processes.known)
    assert os.getsid(grandchild) == grandchild  # out of codex's session and group

    done.touch()  # codex finishes its turn and exits by itself
    outcome = await within(task, 30, "codex to end its turn once the wait file exists")

    assert outcome.status is TaskStatus.COMPLETED
    assert is_dead(grandchild)
    assert runner.processes is not None and grandchild in runner.processes.swept


def test_a_pass_reads_each_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.Popen(
        ["sleep", "60"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), TASK_ENV: "task-table"},
        start_new_session=True,
    )
    try:
        calls: list[int] = []
        real_environ = psutil.Process.environ

        def counting_environ(proc: psutil.Process) -> dict[str, str]:
            calls.append(proc.pid)
            return real_environ(proc)

        monkeypatch.setattr(psutil.Process, "environ", counting_environ)
        markers: dict[tuple[int, float], str | None] = {}
        first = procs.read_process_table(markers)
        info = first.procs[child.pid]
        assert (info.marker, info.ppid, info.pgid, info.zombie) == (
            "task-table",
            os.getpid(),
            child.pid,
            False,
        )
        assert child.pid in first.descendants([os.getpid()])
        assert child.pid in calls

        calls.clear()
        second = procs.read_process_table(markers)
        again = [
            pid
            for pid in calls
            if pid in first.procs and pid in second.procs
            if second.procs[pid].start == first.procs[pid].start
        ]
        assert again == []
        assert second.procs[child.pid].marker == "task-table"
    finally:
        child.kill()
        child.wait()


SWEEP_SCRIPT = """
import asyncio, json, os, sys
from server_client.models import Sandbox
from server_client.worker.procs import ProcessWatch, become_subreaper
from server_client.worker.runner import ExecRunner, RunSpec, build_child_env
assert become_subreaper()
fake, work, folder = sys.argv[1:4]
record = os.path.join(folder, "record.json")

async def run(mode, task_id, watch):
    source = {**os.environ, "FAKE_CODEX_MODE": mode, "FAKE_CODEX_RECORD": record}
    env = build_child_env(["FAKE_CODEX_MODE", "FAKE_CODEX_RECORD"], task_id=task_id, source=source)
    spec = RunSpec(task_id, "hi", work, Sandbox.READ_ONLY, None, fake, env)
    runner = ExecRunner(spec, lambda e: None, watch=watch)
    return (await runner.run()).status.value, runner

async def main():
    watch = ProcessWatch(interval_s=3600)  # no periodic pass during the test
    clean, _ = await run("ok", "task-clean", watch)
    passes_clean = watch.passes
    left, runner = await run("fork-exit", "task-left", watch)
    with open(record) as file:
        grandchild = json.load(file)["grandchild"]
    try:
        os.kill(grandchild, 0)
        gone = False
    except ProcessLookupError:
        gone = True
    print(json.dumps({
        "clean": clean, "passes_clean": passes_clean, "left": left,
        "passes_left": watch.passes - passes_clean,
        "swept": grandchild in runner.processes.swept, "gone": gone,
    }))

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_a_subreaper_skips_the_scan_when_nothing_was_left_behind(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SWEEP_SCRIPT,
            str(FAKE),
            str(tmp_path / "work"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # Codex exited by itself with nothing behind: no scan of /proc at all.
    assert result["clean"] == "completed" and result["passes_clean"] == 0
    # A command outlived codex: it was re-parented to the worker, so a pass ran and killed it
    # (and the worker reaped it).
    assert result["left"] == "completed" and result["passes_left"] >= 1
    assert result["swept"] and result["gone"]


# --------------------------------------------------------------------------------------------
# Argv, session and environment (C2, S3, S5)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "--dangerously-bypass-approvals-and-sandbox",
        "$(rm -rf ~)",
        "-h",
        "--help",
        "--model=gpt-evil",
        "-c shell_environment_policy.inherit=all",
        "resume 0199a213",
        "help",
        " -",
        "line one\nline two; echo `id` && exit 1 'quoted' \"double\"",
    ],
)
async def test_prompt_reaches_codex_as_one_plain_argument(harness: Harness, prompt: str) -> None:
    outcome, _ = await run_fake(harness.spec("echo-argv", prompt=prompt, model="-h"))

    assert outcome.status is TaskStatus.COMPLETED
    record = read_record(harness.record)
    assert record["argv"][-2:] == ["--", prompt]
    assert record["prompt"] == prompt
    assert record["opts"]["model"] == "-h"
    assert record["opts"]["sandbox"] == "workspace-write"
    assert record["opts"]["json"] and record["opts"]["skip_git"]


def test_build_argv_shape() -> None:
    spec = RunSpec(
        task_id="t1",
        prompt="-h",
        workdir="/srv/work",
        sandbox=Sandbox.READ_ONLY,
        model="gpt-5.5",
        codex_bin="/opt/codex",
        env={},
    )
    assert build_argv(spec) == [
        "/opt/codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--sandbox=read-only",
        "--cd=/srv/work",
        "--model=gpt-5.5",
        "--",
        "-h",
    ]
    no_model = RunSpec("t1", "hi", "/srv/work", Sandbox.DANGER_FULL_ACCESS, None, "codex", {})
    assert build_argv(no_model)[4:] == [
        "--sandbox=danger-full-access",
        "--cd=/srv/work",
        "--",
        "hi",
    ]
    with pytest.raises(ValueError):
        build_argv(RunSpec("t1", "hi", "relative/dir", Sandbox.READ_ONLY, None, "codex", {}))


@pytest.mark.parametrize("prompt", ["-", "nul\x00byte"])
async def test_prompts_codex_cannot_take_fail_without_spawning(
    harness: Harness, prompt: str
) -> None:
    outcome, events = await run_fake(harness.spec("ok", prompt=prompt))

    assert outcome.status is TaskStatus.FAILED
    assert outcome.exit_code is None
    assert outcome.error
    assert events.events == []
    assert not harness.record.exists()


async def test_codex_runs_in_own_session_with_devnull_stdin_and_workdir(
    harness: Harness,
) -> None:
    outcome, _ = await run_fake(harness.spec("echo-argv"))

    assert outcome.status is TaskStatus.COMPLETED
    record = read_record(harness.record)
    assert record["pid"] == record["pgid"] == record["sid"] != os.getsid(0)
    assert record["stdin_is_devnull"] is True
    assert record["cwd"] == str(harness.workdir)
    assert record["opts"]["cd"] == str(harness.workdir)
    assert record["argv"][0] == str(FAKE)  # spawned directly, no shell in between


async def test_child_env_is_allow_listed(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    canaries = {
        "CODEX_TUI_TOKEN": "canary-secret",
        "CODEX_TUI_SERVER_TOKEN": "canary-server",
        "OPENAI_API_KEY": "canary-key",
        "AWS_SECRET_ACCESS_KEY": "canary-aws",
        "LD_PRELOAD": "/tmp/canary.so",
        "PYTHONPATH": "/tmp/canary",
    }
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv(TASK_ENV, "forged-by-parent")

    outcome, _ = await run_fake(harness.spec("echo-argv"))

    assert outcome.status is TaskStatus.COMPLETED
    env = read_record(harness.record)["env"]
    allowed = {*ALLOWED_ENV, *FAKE_VARS, TASK_ENV}
    # Python itself may add LC_CTYPE (PEP 538 locale coercion) inside the fake.
    assert set(env) - {"LC_CTYPE"} <= allowed
    assert env[TASK_ENV] == harness.task_id
    assert env["LANG"] == "C.UTF-8"
    dumped = json.dumps(env)
    for value in canaries.values():
        assert value not in dumped


def test_build_child_env_copies_only_allowed_names() -> None:
    source = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "CODEX_HOME": "/home/u/.codex",
        "LANG": "en_US.UTF-8",
        "USER": "u",
        "LOGNAME": "u",
        "TMPDIR": "/tmp/u",
        "LC_ALL": "C",
        "TERM": "xterm",
        "CODEX_TUI_TOKEN": "secret",
        "OPENAI_API_KEY": "sk-1",
        "CODEX_TUI_TASK_ID": "forged",
    }
    env = build_child_env(task_id="t-1", source=source)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "CODEX_HOME": "/home/u/.codex",
        "LANG": "en_US.UTF-8",
        "USER": "u",
        "LOGNAME": "u",
        "TMPDIR": "/tmp/u",
        TASK_ENV: "t-1",
    }
    with_key = build_child_env(["OPENAI_API_KEY", "MISSING"], task_id="t-2", source=source)
    assert with_key["OPENAI_API_KEY"] == "sk-1"
    assert "MISSING" not in with_key
    assert build_child_env(task_id="t-3", source={}) == {TASK_ENV: "t-3"}


# --------------------------------------------------------------------------------------------
# Missing binary / workdir
# --------------------------------------------------------------------------------------------


async def test_missing_binary_fails_with_install_hint(harness: Harness, tmp_path: Path) -> None:
    outcome, events = await run_fake(harness.spec("ok", codex_bin=str(tmp_path / "no-codex")))

    assert outcome.status is TaskStatus.FAILED
    assert outcome.exit_code is None
    assert outcome.error is not None
    assert "npm install -g @openai/codex" in outcome.error
    assert "codex login" in outcome.error
    assert events.events == []


async def test_non_executable_binary_fails(harness: Harness, tmp_path: Path) -> None:
    plain = tmp_path / "codex"
    plain.write_text("not a program")
    outcome, _ = await run_fake(harness.spec("ok", codex_bin=str(plain)))
    assert outcome.status is TaskStatus.FAILED
    assert outcome.error is not None and "npm install -g @openai/codex" in outcome.error


async def test_unusable_workdir_fails(harness: Harness, tmp_path: Path) -> None:
    outcome, _ = await run_fake(harness.spec("ok", workdir=str(tmp_path / "gone")))
    assert outcome.status is TaskStatus.FAILED
    assert outcome.error is not None and "workdir" in outcome.error


# --------------------------------------------------------------------------------------------
# resolve_codex_bin / codex_version
# --------------------------------------------------------------------------------------------

LAUNCHER_JS = '#!/usr/bin/env node\n// Unified entry point for the Codex CLI.\nimport "x";\n'


def _exe(path: Path, text: str = "#!/bin/sh\necho codex-cli 0.169.0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def npm_layout(root: Path, *, platform_pkg: str = "codex-linux-x64", nested: bool = False) -> Path:
    """Build ``root/node_modules/@openai/codex`` + its platform package; return codex.js."""
    modules = root / "node_modules" / "@openai"
    launcher = _exe(modules / "codex" / "bin" / "codex.js", LAUNCHER_JS)
    (modules / "codex" / "package.json").write_text('{"name": "@openai/codex"}')
    pkg_root = (modules / "codex" / "node_modules" / "@openai") if nested else modules
    pkg = pkg_root / platform_pkg
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "package.json").write_text('{"name": "@openai/codex"}')
    triple = {
        "codex-linux-x64": "x86_64-unknown-linux-musl",
        "codex-linux-arm64": "aarch64-unknown-linux-musl",
        "codex-darwin-arm64": "aarch64-apple-darwin",
    }[platform_pkg]
    _exe(pkg / "vendor" / triple / "bin" / "codex")
    return launcher


def native_of(root: Path, platform_pkg: str, triple: str) -> str:
    return str(
        root / "node_modules" / "@openai" / platform_pkg / "vendor" / triple / "bin" / "codex"
    )


LINUX_X64 = {"system": "linux", "machine": "x86_64"}


def test_launcher_path_resolves_to_native_binary(tmp_path: Path) -> None:
    launcher = npm_layout(tmp_path)
    native = native_of(tmp_path, "codex-linux-x64", "x86_64-unknown-linux-musl")

    assert cb.is_npm_launcher(launcher)
    assert not cb.is_npm_launcher(native)
    assert cb.resolve_codex_bin(str(launcher), environ={}, **LINUX_X64) == native


def test_launcher_symlink_on_path_resolves_to_native_binary(tmp_path: Path) -> None:
    launcher = npm_layout(tmp_path / "lib")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "codex").symlink_to(launcher)
    native = native_of(tmp_path / "lib", "codex-linux-x64", "x86_64-unknown-linux-musl")

    assert cb.resolve_codex_bin(None, environ={"PATH": str(bindir)}, **LINUX_X64) == native
    env_choice = {"PATH": "", cb.CODEX_BIN_ENV: str(bindir / "codex")}
    assert cb.resolve_codex_bin(None, environ=env_choice, **LINUX_X64) == native


def test_platform_package_next_to_or_under_codex_and_vendor_fallback(tmp_path: Path) -> None:
    nested = npm_layout(tmp_path / "a", nested=True)
    expected = (
        tmp_path
        / "a/node_modules/@openai/codex/node_modules/@openai/codex-linux-x64"
        / "vendor/x86_64-unknown-linux-musl/bin/codex"
    )
    assert cb.resolve_codex_bin(str(nested), environ={}, **LINUX_X64) == str(expected)

    pkg = tmp_path / "b" / "codex"
    launcher = _exe(pkg / "bin" / "codex.js", LAUNCHER_JS)
    vendored = _exe(pkg / "vendor" / "aarch64-apple-darwin" / "bin" / "codex")
    found = cb.resolve_codex_bin(str(launcher), environ={}, system="darwin", machine="arm64")
    assert found == str(vendored)


def test_target_triples_match_the_launcher() -> None:
    assert cb.target_triple("linux", "x86_64") == "x86_64-unknown-linux-musl"
    assert cb.target_triple("linux", "aarch64") == "aarch64-unknown-linux-musl"
    assert cb.target_triple("darwin", "x86_64") == "x86_64-apple-darwin"
    assert cb.target_triple("darwin", "arm64") == "aarch64-apple-darwin"
    assert cb.target_triple("win32", "AMD64") == "x86_64-pc-windows-msvc"
    assert cb.target_triple("linux", "riscv64") is None
    assert cb.target_triple("freebsd13", "x86_64") is None


def test_arm64_layout(tmp_path: Path) -> None:
    launcher = npm_layout(tmp_path, platform_pkg="codex-linux-arm64")
    found = cb.resolve_codex_bin(str(launcher), environ={}, system="linux", machine="aarch64")
    assert found == native_of(tmp_path, "codex-linux-arm64", "aarch64-unknown-linux-musl")


def test_native_binary_and_precedence(tmp_path: Path) -> None:
    flag = _exe(tmp_path / "flag" / "codex")
    env_bin = _exe(tmp_path / "env" / "codex")
    on_path = _exe(tmp_path / "path" / "codex")
    environ = {"PATH": str(on_path.parent), cb.CODEX_BIN_ENV: str(env_bin)}

    assert cb.resolve_codex_bin(str(flag), environ=environ) == str(flag)
    assert cb.resolve_codex_bin(None, environ=environ) == str(env_bin)
    assert cb.resolve_codex_bin(None, environ={"PATH": str(on_path.parent)}) == str(on_path)
    # a command name given to --codex-bin is looked up on PATH
    assert cb.resolve_codex_bin("codex", environ={"PATH": str(on_path.parent)}) == str(on_path)


def test_not_found_errors_say_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(cb.CodexNotFoundError) as on_path:
        cb.resolve_codex_bin(None, environ={"PATH": str(tmp_path)})
    message = str(on_path.value)
    assert "npm install -g @openai/codex" in message
    assert "codex login" in message
    assert "--codex-bin" in message and cb.CODEX_BIN_ENV in message

    with pytest.raises(cb.CodexNotFoundError, match="npm install -g @openai/codex"):
        cb.resolve_codex_bin(str(tmp_path / "missing"), environ={})
    with pytest.raises(cb.CodexNotFoundError, match=cb.CODEX_BIN_ENV):
        cb.resolve_codex_bin(None, environ={cb.CODEX_BIN_ENV: str(tmp_path / "missing")})
    assert issubclass(cb.CodexNotFoundError, cb.CodexBinError)


def test_launcher_without_platform_package_is_an_error(tmp_path: Path) -> None:
    launcher = npm_layout(tmp_path)
    with pytest.raises(cb.CodexNotFoundError) as err:
        cb.resolve_codex_bin(str(launcher), environ={}, system="linux", machine="aarch64")
    assert "@openai/codex-linux-arm64" in str(err.value)
    assert "npm install -g @openai/codex" in str(err.value)


def test_codex_version(tmp_path: Path) -> None:
    fine = _exe(tmp_path / "codex", "#!/bin/sh\necho 'codex-cli 9.9.9'\n")
    broken = _exe(tmp_path / "broken", "#!/bin/sh\nexit 3\n")
    assert cb.codex_version(str(fine)) == "codex-cli 9.9.9"
    assert cb.codex_version(str(broken)) is None
    assert cb.codex_version(str(tmp_path / "missing")) is None
    slow = _exe(tmp_path / "slow", "#!/bin/sh\nexec sleep 30\n")
    assert cb.codex_version(str(slow), timeout_s=0.2) is None


async def test_codex_version_async(tmp_path: Path) -> None:
    fine = _exe(tmp_path / "codex", "#!/bin/sh\necho 'codex-cli 9.9.9'\n")
    assert await cb.codex_version_async(str(fine)) == "codex-cli 9.9.9"
    assert await cb.codex_version_async(str(tmp_path / "missing")) is None
    slow = _exe(tmp_path / "slow", "#!/bin/sh\nexec sleep 30\n")
    assert await cb.codex_version_async(str(slow), timeout_s=0.2) is None


# --------------------------------------------------------------------------------------------
# The real codex (when installed)
# --------------------------------------------------------------------------------------------


def _real_codex() -> str | None:
    configured = os.environ.get("CODEX_TUI_TEST_CODEX_BIN", "").strip()
    if configured:
        return configured
    native = REAL_CACHE / "codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
    return str(native) if native.exists() else None


REAL_CODEX = _real_codex()


def _real_helpers() -> tuple[Any, Any, Any]:
    """(write_codex_home, MockModel, mock_model_server module) from the shared test helpers."""
    try:
        codex_home = importlib.import_module("tests.fakes.codex_home")
        mock_model_server = importlib.import_module("tests.fakes.mock_model_server")
    except ImportError:  # tests/ on sys.path without being a package
        codex_home = importlib.import_module("codex_home")
        mock_model_server = importlib.import_module("mock_model_server")
    return codex_home.write_codex_home, mock_model_server.MockModel, mock_model_server


needs_real_codex = pytest.mark.skipif(
    REAL_CODEX is None or not sys.platform.startswith("linux"),
    reason="real codex not installed (see tests/fakes/codex_home.py)",
)


@pytest.mark.skipif(not (REAL_CACHE / "codex/bin/codex.js").exists(), reason="no npm cache")
def test_real_npm_launcher_resolves_to_native_binary() -> None:
    launcher = REAL_CACHE / "codex" / "bin" / "codex.js"
    found = cb.resolve_codex_bin(str(launcher), environ={})
    assert found == str(
        (REAL_CACHE / "codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex").resolve()
    )
    assert not cb.is_npm_launcher(found)
    assert cb.codex_version(found) == "codex-cli 0.169.0"


@needs_real_codex
@pytest.mark.parametrize("prompt", ["-h", "--dangerously-bypass-approvals-and-sandbox", "help"])
async def test_real_codex_takes_dash_prompts_as_text(tmp_path: Path, prompt: str) -> None:
    write_codex_home, MockModel, steps = _real_helpers()

    assert REAL_CODEX is not None
    workdir = tmp_path / "work"
    workdir.mkdir()
    (tmp_path / "home").mkdir()
    with MockModel([steps.say("ok from mock")]) as model:
        codex_home = write_codex_home(tmp_path / "codex-home", model.base_url)
        source = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home")}
        source["CODEX_HOME"] = str(codex_home)
        spec = RunSpec(
            task_id=f"task-{uuid.uuid4().hex}",
            prompt=prompt,
            workdir=str(workdir),
            sandbox=Sandbox.READ_ONLY,
            model=None,
            codex_bin=REAL_CODEX,
            env=build_child_env(task_id="real", source=source),
        )
        outcome, events = await run_fake(spec)
        bodies = model.requests

    assert outcome.status is TaskStatus.COMPLETED, (outcome, events.events)
    assert outcome.thread_id
    messages = [d["item"]["text"] for d in events.codex() if d["type"] == "item.completed"]
    assert "ok from mock" in messages
    user_texts = [
        part.get("text")
        for body in bodies
        for item in body.get("input", [])
        if isinstance(item, dict) and item.get("role") == "user"
        for part in item.get("content", [])
        if isinstance(part, dict)
    ]
    assert prompt in user_texts


@needs_real_codex
async def test_real_codex_cancel_kills_its_command(tmp_path: Path) -> None:
    write_codex_home, MockModel, steps = _real_helpers()

    assert REAL_CODEX is not None
    workdir = tmp_path / "work"
    workdir.mkdir()
    (tmp_path / "home").mkdir()
    task_id = f"task-{uuid.uuid4().hex}"
    with MockModel([steps.call_shell("setsid sleep 300 & sleep 300")]) as model:
        codex_home = write_codex_home(tmp_path / "codex-home", model.base_url)
        source = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home")}
        source["CODEX_HOME"] = str(codex_home)
        spec = RunSpec(
            task_id=task_id,
            prompt="run it",
            workdir=str(workdir),
            sandbox=Sandbox.DANGER_FULL_ACCESS,
            model=None,
            codex_bin=REAL_CODEX,
            env=build_child_env(task_id=task_id, source=source),
        )
        events = Collector()
        runner = ExecRunner(spec, events, grace_s=GRACE_S, watch=ProcessWatch(interval_s=0.1))
        task = asyncio.create_task(runner.run())
        await wait_until(lambda: events.has_type("item.started"), timeout_s=30)
        await wait_until(lambda: len(marked(task_id)) >= 3)  # codex + 2 sleeps
        runner.cancel()
        outcome = await asyncio.wait_for(task, GRACE_S + 10)

    assert outcome.status is TaskStatus.CANCELED
    assert marked(task_id) == []


# --------------------------------------------------------------------------------------------
# Subreaper
# --------------------------------------------------------------------------------------------

SUBREAPER_SCRIPT = """
import os, sys, time
from server_client.worker.runner import become_subreaper, reap_orphan_zombies
assert become_subreaper()
r, w = os.pipe()
if os.fork() == 0:              # child: fork a grandchild, then exit at once
    if os.fork() == 0:          # grandchild: report its pid, exit after its parent is gone
        os.write(w, str(os.getpid()).encode())
        time.sleep(0.3)
        os._exit(0)
    os._exit(0)
grandchild = int(os.read(r, 32))
deadline = time.monotonic() + 10
reaped = []
while grandchild not in reaped and time.monotonic() < deadline:
    reaped += reap_orphan_zombies()
    time.sleep(0.02)
print(grandchild in reaped)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_subreaper_adopts_and_reaps_orphans() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SUBREAPER_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
