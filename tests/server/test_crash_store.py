"""Crash safety of the store under heavy writes (docs/reliability.md R9, with R1, R4, R5 and E1), on
SQLite and on PostgreSQL.

A paired worker process runs six tasks at once; the fake codex prints thousands of items each,
so the server commits event batches continuously. The server is killed with SIGKILL three
times while those writes are in flight (each time once the stored event count has grown to a
different fraction of the whole), and restarted on the same database and port. After every
kill, before the restart, the database itself is read: it opens cleanly (SQLite:
``PRAGMA integrity_check`` is ``ok``), every task's seqs are exactly 1..N and the task row
agrees with its events (``last_seq`` is the last seq, ``upload_next`` the number of uploaded
events), so no transaction was half applied. At the end every task has completed with every
codex item exactly once, in order, and one terminal status event as its last event.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from sqlalchemy.engine import make_url

from server_client.models import Event, EventKind, Task, TaskStatus
from tests.conftest import LiveServer, ServerFactory, wait_until
from tests.support.worker_procs import WorkerPool, WorkerProc, task_processes

#: Tasks run at once, and items the fake codex prints for each (one every INTERVAL seconds):
#: about 24 s of printing, longer than three server restarts under load take, so that codex
#: still prints at the third kill (the worker's one upload drains a backlog in a request or
#: two, ends included).
TASKS = 6
ITEMS = 6000
INTERVAL_S = "0.004"
#: The server is killed when the stored events reach these fractions of the expected total.
KILL_AT = (0.2, 0.45, 0.7)
#: Events a task has besides its items: queued, running, codex's stderr line, thread.started,
#: turn.started, turn.completed and the terminal status.
OVERHEAD = 7

TASKS_SQL = "SELECT pk, id, last_seq, upload_next, status FROM tasks"
EVENTS_SQL = "SELECT task_pk, seq, kind FROM events ORDER BY task_pk, seq"


@dataclass
class Stored:
    """One task as the database holds it right after a kill."""

    last_seq: int
    upload_next: int
    status: str
    seqs: list[int]
    uploaded: int  # events the worker uploaded (every kind but ``status``)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    """Paired worker processes of this test (killed at the end, with their codex)."""
    with WorkerPool(tmp_path) as pool:
        yield pool


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """The server's ``--db``: None for its default SQLite file, or a fresh PostgreSQL
    database (``pg_url``; skipped without CODEX_TUI_TEST_PG_URL)."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


def _rows_to_tasks(
    task_rows: list[tuple[Any, ...]], event_rows: list[tuple[Any, ...]]
) -> dict[str, Stored]:
    by_pk = {
        pk: Stored(int(last), int(nxt), str(status), [], 0)
        for pk, _id, last, nxt, status in task_rows
    }
    for task_pk, seq, kind in event_rows:
        stored = by_pk[task_pk]
        stored.seqs.append(int(seq))
        if kind != EventKind.STATUS.value:
            stored.uploaded += 1
    return {task_id: by_pk[pk] for pk, task_id, *_ in task_rows}


def _read_sqlite(path: Path) -> dict[str, Stored]:
    """Open the SQLite file as the restarted server will, check its integrity, read it."""
    conn = sqlite3.connect(path)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        assert integrity == [("ok",)], integrity
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        task_rows = conn.execute(TASKS_SQL).fetchall()
        event_rows = conn.execute(EVENTS_SQL).fetchall()
    finally:
        conn.close()
    return _rows_to_tasks(task_rows, event_rows)


def _read_postgres(url: str) -> dict[str, Stored]:
    """Read the PostgreSQL database (what the killed server's transactions committed)."""

    async def read() -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(plain, timeout=10)
        try:
            return await conn.fetch(TASKS_SQL), await conn.fetch(EVENTS_SQL)
        finally:
            await conn.close()

    task_rows, event_rows = asyncio.run(read())
    return _rows_to_tasks([tuple(r) for r in task_rows], [tuple(r) for r in event_rows])


def _read_store(server: LiveServer, db_url: str | None) -> dict[str, Stored]:
    if db_url is None:
        return _read_sqlite(server.home / "data" / "codex-tui.db")
    return _read_postgres(db_url)


def _assert_consistent(stored: dict[str, Stored], task_ids: list[str]) -> None:
    """Every task's seqs are exactly 1..last_seq, and its row matches its events."""
    assert sorted(stored) == sorted(task_ids)
    for task_id, task in stored.items():
        assert task.seqs == list(range(1, task.last_seq + 1)), (
            f"task {task_id}: seqs are not 1..{task.last_seq}: "
            f"{len(task.seqs)} rows, first {task.seqs[:3]}, last {task.seqs[-3:]}"
        )
        assert task.uploaded == task.upload_next, (task_id, task.uploaded, task.upload_next)


def _get_tasks(http: httpx.Client, task_ids: list[str]) -> list[Task]:
    tasks = []
    for task_id in task_ids:
        response = http.get(f"/api/tasks/{task_id}")
        response.raise_for_status()
        tasks.append(Task.model_validate_json(response.content))
    return tasks


def _stored_total(http: httpx.Client, task_ids: list[str]) -> int | None:
    """Events stored over all tasks, as the API reports them (None while it is unreachable)."""
    try:
        return sum(t.last_seq for t in _get_tasks(http, task_ids))
    except httpx.HTTPError:
        return None


def _all_events(http: httpx.Client, task_id: str) -> list[Event]:
    """Every stored event of the task, through the JSON page API (5000 at a time)."""
    events: list[Event] = []
    while True:
        response = http.get(
            f"/api/tasks/{task_id}/events",
            params={"after": events[-1].seq if events else 0, "limit": 5000},
            headers={"Accept": "application/json"},
        )
        response.raise_for_status()
        page = [Event.model_validate(item) for item in response.json()]
        if not page:
            return events
        events += page


def _more_failures(worker: WorkerProc, before: int) -> bool:
    """True once the worker logged more failed uploads than ``before``."""
    return worker.log().count("upload for task") > before


def _kill_during_writes(
    server: LiveServer, http: httpx.Client, task_ids: list[str], threshold: int
) -> int:
    """Wait until the stored events grew past ``threshold`` (and since the last look), then
    SIGKILL the server at once; returns the total seen just before the kill."""
    seen: list[int] = []

    def grown() -> bool:
        total = _stored_total(http, task_ids)
        if total is None:
            return False
        seen.append(total)
        return total >= threshold and len(seen) >= 2 and seen[-1] > seen[-2]

    wait_until(grown, 45, f"the stored events to grow past {threshold}")
    server.proc.kill()
    server.proc.wait(10)
    return seen[-1]


def test_kill_9_during_heavy_writes_leaves_every_task_contiguous_and_complete(
    server_factory: ServerFactory, workers: WorkerPool, db_url: str | None
) -> None:
    """R9: after each SIGKILL mid-writes the store opens cleanly with contiguous seqs and
    consistent task rows; the worker re-uploads what was not committed (R4, R5) and every task
    ends completed with each item exactly once and one terminal event, its last (R1, E1)."""
    server = server_factory(local_worker=False, db_url=db_url)
    worker: WorkerProc = workers.start(
        server,
        "survivor",
        fake_mode="slow-burst",
        max_tasks=TASKS,
        extra_env={"FAKE_CODEX_EVENTS": str(ITEMS), "FAKE_CODEX_INTERVAL": INTERVAL_S},
    )
    expected_total = TASKS * (ITEMS + OVERHEAD)
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
        task_ids = []
        for n in range(TASKS):
            response = http.post("/api/tasks", json={"prompt": f"burst {n}", "worker": "survivor"})
            response.raise_for_status()
            task_ids.append(Task.model_validate_json(response.content).id)

        killed_at = []
        for number, fraction in enumerate(KILL_AT, 1):
            threshold = int(fraction * expected_total)
            seen = _kill_during_writes(server, http, task_ids, threshold)
            failures = worker.log().count("upload for task")
            stored = _read_store(server, db_url)
            _assert_consistent(stored, task_ids)
            total = sum(t.last_seq for t in stored.values())
            killed_at.append(total)
            assert total >= seen, f"kill {number}: {total} events stored, the API showed {seen}"
            assert not all(TaskStatus(t.status).is_terminal for t in stored.values()), (
                f"kill {number} came after every task had ended"
            )
            if number == 1:  # codex goes on while the server is down (R1)
                assert any(task_processes(t) for t in task_ids), worker.describe()
            # The worker buffers and retries while the server is down (R5).
            wait_until(
                functools.partial(_more_failures, worker, failures),
                20,
                f"the worker to retry uploads after kill {number}",
            )
            server = server_factory(local_worker=False, db_url=db_url, reuse=server)

        def all_ended() -> bool:
            try:
                return all(t.status.is_terminal for t in _get_tasks(http, task_ids))
            except httpx.HTTPError:
                return False

        wait_until(all_ended, 60, "every task to end")
        final = {t.id: t for t in _get_tasks(http, task_ids)}
        every = {task_id: _all_events(http, task_id) for task_id in task_ids}

    # The store after a normal run is just as consistent.
    server.stop()
    _assert_consistent(_read_store(server, db_url), task_ids)

    for task_id, events in every.items():
        task = final[task_id]
        where = f"task {task_id}\n{worker.describe()}"
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), where
        assert task.last_seq == len(events), where
        items = [e.data["item"]["id"] for e in events if e.codex_type == "item.completed"]
        assert items == [f"item_{n}" for n in range(ITEMS)], where
        types = [e.codex_type for e in events if e.codex_type is not None]
        assert types.count("thread.started") == 1 and types.count("turn.completed") == 1, where
        statuses = [e.status for e in events if e.kind is EventKind.STATUS]
        assert statuses == [TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.COMPLETED], where
        assert events[-1].is_terminal and sum(e.is_terminal for e in events) == 1, where
        assert task.status is TaskStatus.COMPLETED and task.exit_code == 0, where
        assert len(events) == ITEMS + OVERHEAD, where

    # How the kills hit the uploads (for the report when run with -s): a request cut
    # mid-flight shows as "Server disconnected" (or a bare read error), one sent while the
    # server is down as "All connection attempts failed".
    reasons = re.findall(r"upload for task \S+ failed \((.*?)\); retrying", worker.log())
    print(f"\nkilled at {killed_at} of {expected_total} events; failed uploads: {Counter(reasons)}")
