"""A full storage (issue 17 item 9): a write the database refuses for lack of space is a 507
problem saying the server's storage is full, never a generic 500; reads go on; once space
returns, writes succeed again without a restart and nothing stored before was lost; a
worker's refused upload is one it retries: the same batch, and the events its upload stream
kept, land once space returns.

The server is a real uvicorn in this process (so that the test can fill its storage):
- SQLite, on a real file: every connection of the store gets ``PRAGMA max_page_count`` at
  checkout, set to the file's current size, which makes SQLite answer SQLITE_FULL
  ("database or disk is full") exactly as on a full disk; raising it is space returning.
- PostgreSQL (``pg_url``): a trigger raises SQLSTATE 53100 ``disk_full`` on every insert into
  tasks and events, as PostgreSQL does when it cannot extend a file; dropping it is space
  returning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import event, update

from server_client.errors import ApiError
from server_client.models import EventBatch, EventIn, EventKind, TaskCreate, TaskStatus, WorkerHello
from server_client.retry import WORKER_FINAL, is_retryable
from server_client.server.app import _sweep_lost, create_app
from server_client.server.db import create_engine, migrate, workers
from server_client.server.hub import Hub
from server_client.server.main import _Server
from server_client.server.settings import ServerSettings
from server_client.server.store import Store
from server_client.worker.api import WorkerApi
from server_client.worker.uploader import UploadStream
from tests.conftest import free_port, wait_until_async

PROBLEM = "application/problem+json"
#: A prompt large enough that a few tasks need new pages (bytes).
BIG = 20_000
#: Most tasks created while waiting for the storage to fill up (SQLite reuses free pages).
MAX_FILL_ATTEMPTS = 300

PG_FILL = (
    """CREATE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'could not extend file: No space left on device'
            USING ERRCODE = 'disk_full';
    END $$""",
    "CREATE TRIGGER test_disk_full_tasks BEFORE INSERT ON tasks "
    "FOR EACH ROW EXECUTE FUNCTION test_disk_full()",
    "CREATE TRIGGER test_disk_full_events BEFORE INSERT ON events "
    "FOR EACH ROW EXECUTE FUNCTION test_disk_full()",
)
PG_FREE = (
    "DROP TRIGGER test_disk_full_tasks ON tasks",
    "DROP TRIGGER test_disk_full_events ON events",
    "DROP FUNCTION test_disk_full()",
)


@dataclass
class Running:
    """A server in this process: its URL, a user's token, and how to fill/free its storage."""

    url: str
    token: str
    fill: Callable[[], Awaitable[None]]
    free: Callable[[], Awaitable[None]]


async def _token(db_url: str) -> str:
    engine = create_engine(db_url)
    try:
        await migrate(engine)
        store = Store(engine)
        user = await store.create_user("full")
        return await store.issue_token(user.id)
    finally:
        await engine.dispose()


@asynccontextmanager
async def _serve(db_url: str) -> AsyncIterator[tuple[str, Any]]:
    """A real uvicorn server on loopback for ``db_url``: its URL and its app."""
    app = create_app(ServerSettings(db_url=db_url, workdir_roots=["/"]))
    port = free_port()
    server = _Server(uvicorn.Config(app, port=port, log_level="warning"), app.state.hub)
    serving = asyncio.create_task(server.serve())
    try:
        await wait_until_async(lambda: server.started, 20, "uvicorn to start")
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        async with asyncio.timeout(20):
            await asyncio.gather(serving, return_exceptions=True)


@asynccontextmanager
async def _sqlite_server(tmp_path: Path) -> AsyncIterator[Running]:
    db_url = f"sqlite:///{tmp_path / 'full.db'}"
    token = await _token(db_url)
    limit = [2**30]

    async with _serve(db_url) as (url, app):
        engine = app.state.store._sync_engine
        assert engine is not None, "the SQLite store runs on its sync twin"

        def cap_pages(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            dbapi_connection.execute(f"PRAGMA max_page_count = {limit[0]}")

        event.listen(engine, "checkout", cap_pages)

        async def fill() -> None:
            def size() -> int:
                with engine.connect() as conn:
                    return int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())

            limit[0] = await asyncio.to_thread(size)  # no page more than now

        async def free() -> None:
            limit[0] = 2**30

        yield Running(url, token, fill, free)


@asynccontextmanager
async def _pg_server(pg_url: str) -> AsyncIterator[Running]:
    token = await _token(pg_url)

    async def run(statements: tuple[str, ...]) -> None:
        engine = create_engine(pg_url)
        try:
            async with engine.begin() as conn:
                for statement in statements:
                    await conn.exec_driver_sql(statement)
        finally:
            await engine.dispose()

    async with _serve(pg_url) as (url, _app):
        yield Running(url, token, lambda: run(PG_FILL), lambda: run(PG_FREE))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _assert_507(response: httpx.Response) -> None:
    assert response.status_code == 507, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 507 and body["title"] == "Insufficient Storage", body
    assert "storage is full" in body["detail"], body


async def test_a_full_storage_is_a_507_reads_go_on_and_writes_resume_when_space_returns(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    running = (
        _sqlite_server(tmp_path)
        if backend == "sqlite"
        else _pg_server(request.getfixturevalue("pg_url"))
    )
    async with (
        running as server,
        httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
        ) as http,
    ):
        workdir = str(tmp_path)

        async def create(prompt: str) -> httpx.Response:
            return await http.post("/api/tasks", json={"prompt": prompt, "workdir": workdir})

        # A worker with a claimed task, and tasks stored before the disk fills up.
        api = WorkerApi(server.url, server.token)
        stream = None
        try:
            worker = await api.connect(
                WorkerHello(name="w", codex_version="codex-cli 0.0.0", workdir_roots=["/"])
            )
            claimed = (await create("the claimed one")).json()["id"]
            claim = await api.claim(worker.id, wait_s=5)
            assert claim is not None and claim.task.id == claimed
            streamed = (await create("the streamed one")).json()["id"]
            claim2 = await api.claim(worker.id, wait_s=5)
            assert claim2 is not None and claim2.task.id == streamed
            stored = [claimed, streamed]
            stored += [(await create(f"before {i}")).json()["id"] for i in range(3)]

            await server.fill()
            refused = None
            for i in range(MAX_FILL_ATTEMPTS):
                made = await create(f"while filling {i} " + "x" * BIG)
                if made.status_code != 201:
                    refused = made
                    break
                stored.append(made.json()["id"])  # SQLite used a free page: still stored
            assert refused is not None, f"{MAX_FILL_ATTEMPTS} tasks fit in a full storage"
            _assert_507(refused)
            _assert_507(await create("again " + "x" * BIG))  # a small one may still fit

            # The worker's upload is refused the same way, and is one it retries.
            batch = (
                EventBatch(
                    lease_id=claim.lease_id,
                    first_index=0,
                    events=[
                        EventIn(
                            ts=datetime.now(UTC),
                            kind=EventKind.CODEX,
                            data={"n": n, "pad": "y" * BIG},
                        )
                        for n in range(3)
                    ],
                )
                .model_dump_json()
                .encode()
            )
            with pytest.raises(ApiError) as upload_refused:
                await api.upload(worker.id, claimed, batch)
            assert upload_refused.value.status == 507
            assert is_retryable(upload_refused.value, WORKER_FINAL)

            # So is the worker's own upload stream's: it keeps the events and retries.
            stream = UploadStream(api, worker.id, interval_s=0.01)
            uploader = stream.open(streamed, claim2.lease_id)
            for n in range(5):
                uploader.add(
                    EventIn(
                        ts=datetime.now(UTC), kind=EventKind.STDERR, data={"n": n, "pad": "z" * BIG}
                    )
                )

            def retried() -> bool:
                return any(
                    "507" in r.getMessage() and streamed in r.getMessage() for r in caplog.records
                )

            await wait_until_async(retried, 20, "the upload stream to be refused with 507")

            # Reads go on.
            listed = (await http.get("/api/tasks", params={"limit": 200})).json()["items"]
            assert sorted(t["id"] for t in listed) == sorted(stored)
            one = await http.get(f"/api/tasks/{stored[2]}")
            assert one.status_code == 200 and one.json()["prompt"] == "before 0"
            events = await http.get(
                f"/api/tasks/{stored[1]}/events", headers={"Accept": "application/json"}
            )
            assert events.status_code == 200 and events.json(), events.text
            assert (await http.get("/api/me")).status_code == 200

            # Space returns: writes succeed again, in the same server, and nothing was lost.
            await server.free()
            after = await create("after")
            assert after.status_code == 201, after.text
            uploaded = await api.upload(worker.id, claimed, batch)  # the same batch, again
            async with asyncio.timeout(30):
                await uploader.close()  # what it kept lands now
                await stream.aclose()
            assert uploaded.next_index == 3, uploaded
        finally:
            if stream is not None:
                await stream.aclose()  # idempotent; on a failure, before its client closes
            await api.aclose()
        listed = (await http.get("/api/tasks", params={"limit": 200})).json()["items"]
        assert sorted(t["id"] for t in listed) == sorted([*stored, after.json()["id"]])
        page = await http.get(
            f"/api/tasks/{claimed}/events", headers={"Accept": "application/json"}
        )
        data = [e["data"] for e in page.json() if e.get("kind") == "codex"]
        assert [d["n"] for d in data] == [0, 1, 2], page.text
        page = await http.get(
            f"/api/tasks/{streamed}/events", headers={"Accept": "application/json"}
        )
        lines = [e["data"]["n"] for e in page.json() if e.get("kind") == "stderr"]
        assert lines == [0, 1, 2, 3, 4], page.text


async def test_a_sweep_refused_for_a_full_storage_logs_no_traceback_and_ends_the_task_later(
    pg_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ending a silent worker's task lost appends its status event: refused while the
    # storage is full, at every sweep; the log must not gain a traceback per sweep (R11).
    engine = create_engine(pg_url)
    await migrate(engine)
    store = Store(engine, lease_ttl_s=30.0)
    sweeper: asyncio.Task[None] | None = None
    try:
        alice = await store.create_user("alice")
        worker = await store.connect_worker(alice, WorkerHello(name="silent", max_tasks=10))
        task = await store.create_task(alice, TaskCreate(prompt="lose me"), None)
        assert await store.claim(alice, worker) is not None
        async with engine.begin() as conn:
            await conn.execute(
                update(workers)
                .where(workers.c.id == worker.id)
                .values(last_seen_at=datetime.now(UTC) - timedelta(seconds=120))
            )
            for statement in PG_FILL:
                await conn.exec_driver_sql(statement)

        sweeps = 0
        sweep = store.sweep_lost

        async def counted() -> list[tuple[str, str]]:
            nonlocal sweeps
            sweeps += 1
            return await sweep()

        monkeypatch.setattr(store, "sweep_lost", counted)
        settings = ServerSettings(db_url=pg_url, lease_ttl_s=0.01, sweep_interval_s=0.01)
        caplog.set_level(logging.WARNING)
        sweeper = asyncio.create_task(_sweep_lost(store, Hub(), settings))
        await wait_until_async(lambda: sweeps >= 5, 30, "five sweeps of a full storage")
        tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
        assert not tracebacks, tracebacks
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert (await store.get_task(alice, task.id)).status is TaskStatus.RUNNING

        async with engine.begin() as conn:  # space returns: the next sweep ends it
            for statement in PG_FREE:
                await conn.exec_driver_sql(statement)
        freed_at = sweeps  # the sweep that starts after this one began saw the space
        await wait_until_async(lambda: sweeps >= freed_at + 2, 30, "a sweep with space again")
        assert (await store.get_task(alice, task.id)).status is TaskStatus.LOST
    finally:
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        await store.aclose()
        await engine.dispose()
