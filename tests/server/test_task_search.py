"""Tests of task search and paging, backwards event pages and re-run, against a real server:
the HTTP contract, the SDK and the ``ls`` / ``rerun`` commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import httpx
import pytest

from server_client.client import (
    HEARTBEAT_S,
    STREAM_READ_TIMEOUT_S,
    ApiError,
    CodexTuiClient,
    NotFoundError,
)
from server_client.models import (
    EventIn,
    EventKind,
    Sandbox,
    Task,
    TaskCreate,
    TaskStatus,
    WorkerHello,
)
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory
from tests.support.tui_helpers import SEED_TS, SeedTask, seed_tasks

PROBLEM = "application/problem+json"


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server without a worker, so tasks stay queued unless a test claims them."""
    return server_factory(local_worker=False)


def _auth(server: LiveServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def _problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    return str(body.get("detail"))


async def _create(client: CodexTuiClient, server: LiveServer, prompts: Sequence[str]) -> list[Task]:
    """Create tasks in order (the last is the newest)."""
    return [await client.create_task(p, workdir=str(server.workdir)) for p in prompts]


async def _all_pages(client: CodexTuiClient, **filters: object) -> tuple[list[str], int]:
    """Every page of a filtered listing: the prompts in order and how many pages it took."""
    prompts: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await client.list_tasks(cursor=cursor, **filters)  # type: ignore[arg-type]
        pages += 1
        prompts += [task.prompt for task in page.items]
        if page.next_cursor is None:
            return prompts, pages
        cursor = page.next_cursor


# -- search ----------------------------------------------------------------------------------


async def test_search_matches_a_substring_ignoring_case(server: LiveServer) -> None:
    async with server.client() as client:
        await _create(client, server, ["Fix the BUILD", "add a test", "rebuild the docs"])
        page = await client.list_tasks(q="build")
        assert [t.prompt for t in page.items] == ["rebuild the docs", "Fix the BUILD"]
        assert [t.prompt for t in (await client.list_tasks(q="TEST")).items] == ["add a test"]
        assert (await client.list_tasks(q="nothing like it")).items == []
        assert len((await client.list_tasks(q="")).items) == 3  # empty: no filter


async def test_search_takes_like_wildcards_and_the_escape_char_literally(
    server: LiveServer,
) -> None:
    prompts = ["100% done", "100 percent done", "a_b", "axb", "path/to/x", "path to x", "a\\b"]
    async with server.client() as client:
        await _create(client, server, prompts)

        async def found(q: str) -> list[str]:
            return sorted(t.prompt for t in (await client.list_tasks(q=q)).items)

        assert await found("%") == ["100% done"]
        assert await found("0% d") == ["100% done"]
        assert await found("_") == ["a_b"]
        assert await found("a_b") == ["a_b"]
        assert await found("/") == ["path/to/x"]
        assert await found("//") == []
        assert await found("\\") == ["a\\b"]
        assert await found("%%") == []


def test_search_refuses_bad_input_with_problems(server: LiveServer) -> None:
    url = f"{server.url}/api/tasks"
    assert "200" in _problem(httpx.get(url, params={"q": "x" * 201}, headers=_auth(server)), 422)
    assert httpx.get(url, params={"q": "x" * 200}, headers=_auth(server)).status_code == 200
    assert "NUL" in _problem(httpx.get(url, params={"q": "a\x00b"}, headers=_auth(server)), 400)
    _problem(httpx.get(url, params={"worker": ""}, headers=_auth(server)), 422)
    _problem(httpx.get(url, params={"status": "sleeping"}, headers=_auth(server)), 422)
    _problem(httpx.get(url, params={"q": "x", "cursor": "!!"}, headers=_auth(server)), 400)


async def test_status_and_search_combine(server: LiveServer) -> None:
    async with server.client() as client:
        tasks = await _create(client, server, ["deploy one", "deploy two", "other", "deploy 3"])
        await client.cancel_task(tasks[0].id)
        await client.cancel_task(tasks[2].id)
        page = await client.list_tasks(q="deploy", status=[TaskStatus.CANCELED])
        assert [t.prompt for t in page.items] == ["deploy one"]
        page = await client.list_tasks(q="deploy", status=[TaskStatus.QUEUED])
        assert [t.prompt for t in page.items] == ["deploy 3", "deploy two"]
        both = await client.list_tasks(
            q="o", status=[TaskStatus.QUEUED, TaskStatus.CANCELED], limit=10
        )
        assert [t.prompt for t in both.items] == ["deploy 3", "other", "deploy two", "deploy one"]


async def test_paging_with_a_cursor_keeps_the_filters(server: LiveServer) -> None:
    prompts = []
    for n in range(7):
        prompts += [f"match {n}", f"skip {n}"]
    async with server.client() as client:
        tasks = await _create(client, server, prompts)
        await client.cancel_task(tasks[2].id)  # "match 1" ends canceled
        found, pages = await _all_pages(client, q="MATCH", limit=3)
        assert found == [f"match {n}" for n in reversed(range(7))]
        assert pages == 3
        found, pages = await _all_pages(client, q="match", status=["queued"], limit=2)
        assert found == [f"match {n}" for n in (6, 5, 4, 3, 2, 0)]
        assert pages == 3


async def test_worker_filter_finds_tasks_run_by_or_routed_to_a_worker(server: LiveServer) -> None:
    api = WorkerApi(server.url, server.token)
    try:
        alpha = await api.connect(
            WorkerHello(name="alpha", workdir_roots=[str(server.workdir)], max_tasks=10)
        )
        await api.connect(WorkerHello(name="beta", workdir_roots=[str(server.workdir)]))
        async with server.client() as client:
            ran = await client.create_task("ran on alpha", workdir=str(server.workdir))
            claim = await api.claim(alpha.id, wait_s=5)
            assert claim is not None and claim.task.id == ran.id
            await client.create_task("waits for beta", worker="beta")
            await client.create_task("waits for anyone")
            await client.create_task("also for alpha", worker="alpha")

            async def on(worker: str, **more: object) -> list[str]:
                page = await client.list_tasks(worker=worker, **more)  # type: ignore[arg-type]
                return [t.prompt for t in page.items]

            assert await on("alpha") == ["also for alpha", "ran on alpha"]
            assert await on("beta") == ["waits for beta"]
            assert await on("gamma") == []
            assert await on("alpha", status=["running"]) == ["ran on alpha"]
            assert await on("alpha", q="also") == ["also for alpha"]
    finally:
        await api.aclose()


async def test_search_is_scoped_to_the_owner(server: LiveServer) -> None:
    added = await asyncio.to_thread(server.cli, "admin", "user", "add", "bob")
    assert added.returncode == 0, added.stderr
    async with server.client() as client, CodexTuiClient(server.url, added.stdout.strip()) as bob:
        await client.create_task("secret plan", workdir=str(server.workdir))
        assert (await bob.list_tasks(q="secret")).items == []
        assert len((await client.list_tasks(q="secret")).items) == 1


# -- events before / after ------------------------------------------------------------------


async def test_event_pages_backwards_and_between(server: LiveServer) -> None:
    lines = [
        EventIn(ts=SEED_TS, kind=EventKind.STDERR, data={"line": f"line {n}"}) for n in range(30)
    ]
    seeded = await seed_tasks(server, [SeedTask("many events", lines, TaskStatus.COMPLETED)])
    task = seeded.tasks[0]
    assert task.last_seq == 33  # queued, running, 30 lines (seqs 3..32), completed
    async with server.client() as client:

        async def seqs(**kwargs: int | None) -> list[int]:
            return [e.seq for e in await client.get_events(task.id, **kwargs)]  # type: ignore[arg-type]

        assert await seqs(before=34, limit=5) == [29, 30, 31, 32, 33]
        assert await seqs(before=28, limit=5) == [23, 24, 25, 26, 27]
        assert await seqs(before=4, limit=5) == [1, 2, 3]
        assert await seqs(before=1, limit=5) == []
        assert await seqs(before=1000, limit=2) == [32, 33]
        assert await seqs(after=10, before=14) == [11, 12, 13]
        assert await seqs(after=10, before=20, limit=3) == [17, 18, 19]  # nearest to before
        assert await seqs(after=10, before=11) == []
        assert await seqs(after=20, before=10) == []
        assert await seqs(after=30) == [31, 32, 33]  # forwards, as before

        # Paging back from the end reaches every event exactly once, in order.
        collected: list[int] = []
        before = task.last_seq + 1
        while page := await client.get_events(task.id, before=before, limit=7):
            collected = [e.seq for e in page] + collected
            before = page[0].seq
        assert collected == list(range(1, 34))

        events = await client.get_events(task.id, before=5, limit=2)
        assert [e.kind for e in events] == [EventKind.STDERR, EventKind.STDERR]
        assert events[0].data == {"line": "line 0"}


async def test_sdk_event_iterators_page_either_way(server: LiveServer) -> None:
    """``iter_events`` / ``iter_event_pages`` (the SDK's one paging loop) reach every event
    exactly once, forwards from ``after`` and backwards from ``before``."""
    lines = [
        EventIn(ts=SEED_TS, kind=EventKind.STDERR, data={"line": f"line {n}"}) for n in range(30)
    ]
    seeded = await seed_tasks(server, [SeedTask("paged", lines, TaskStatus.COMPLETED)])
    task = seeded.tasks[0]
    async with server.client() as client:
        forwards = [e.seq async for e in client.iter_events(task.id, page_size=7)]
        assert forwards == list(range(1, 34))
        assert [e.seq async for e in client.iter_events(task.id, after=30)] == [31, 32, 33]
        pages = [
            [e.seq for e in page] async for page in client.iter_event_pages(task.id, page_size=11)
        ]
        assert pages == [list(range(1, 12)), list(range(12, 23)), list(range(23, 34))]
        backwards = [
            [e.seq for e in page]
            async for page in client.iter_event_pages(task.id, before=30, after=10, page_size=8)
        ]
        assert backwards == [list(range(22, 30)), list(range(14, 22)), [11, 12, 13]]
        with pytest.raises(NotFoundError):
            [e async for e in client.iter_events("no-such-task")]


def test_before_is_for_json_pages_only(server: LiveServer) -> None:
    with httpx.Client() as http:
        created = http.post(
            f"{server.url}/api/tasks", json={"prompt": "x"}, headers=_auth(server)
        ).json()
        url = f"{server.url}/api/tasks/{created['id']}/events"
        for accept in ("text/event-stream", "*/*", "application/json, text/event-stream"):
            detail = _problem(
                http.get(url, params={"before": 2}, headers={**_auth(server), "Accept": accept}),
                400,
            )
            assert "JSON" in detail
        json_headers = {**_auth(server), "Accept": "application/json"}
        _problem(http.get(url, params={"before": 0}, headers=json_headers), 422)
        _problem(http.get(url, params={"before": "x"}, headers=json_headers), 422)
        ok = http.get(url, params={"before": 2}, headers=json_headers)
        assert ok.status_code == 200
        assert [e["seq"] for e in ok.json()] == [1]
        _problem(
            http.get(
                f"{server.url}/api/tasks/nope/events", params={"before": 2}, headers=json_headers
            ),
            404,
        )


# -- re-run ----------------------------------------------------------------------------------


def test_task_create_from_task_keeps_the_options() -> None:
    task = Task(
        id="t1",
        prompt="train it",
        workdir="/srv/models",
        model="gpt-5-codex",
        sandbox=Sandbox.READ_ONLY,
        status=TaskStatus.FAILED,
        created_at=SEED_TS,
        worker_name="gpu-box",
        target_worker="gpu-box",
        labels=["gpu", "linux"],
    )
    body = TaskCreate.from_task(task)
    assert body == TaskCreate(
        prompt="train it",
        workdir="/srv/models",
        model="gpt-5-codex",
        sandbox=Sandbox.READ_ONLY,
        worker="gpu-box",
        labels=["gpu", "linux"],
    )
    # Run by a worker but never routed: the re-run is not routed either.
    unrouted = TaskCreate.from_task(task.model_copy(update={"target_worker": None, "labels": []}))
    assert unrouted.worker is None and unrouted.labels == []


async def test_rerun_creates_a_new_task_with_the_same_options(server: LiveServer) -> None:
    api = WorkerApi(server.url, server.token)
    try:
        await api.connect(
            WorkerHello(name="gpu-box", labels=["gpu"], workdir_roots=[str(server.workdir)])
        )
    finally:
        await api.aclose()
    async with server.client() as client:
        old = await client.create_task(
            "train the model\nwith care",
            workdir=str(server.workdir),
            model="gpt-5-codex",
            sandbox=Sandbox.READ_ONLY,
            worker="gpu-box",
            labels=["gpu", "linux"],
        )
        await client.cancel_task(old.id)
        new = await client.rerun_task(old.id)
        assert new.id != old.id
        assert new.status is TaskStatus.QUEUED
        same = ("prompt", "workdir", "model", "sandbox", "target_worker", "labels")
        assert {k: getattr(new, k) for k in same} == {k: getattr(old, k) for k in same}
        assert (await client.get_task(old.id)).status is TaskStatus.CANCELED
        assert [t.id for t in (await client.list_tasks(q="train the model")).items] == [
            new.id,
            old.id,
        ]
        with pytest.raises(NotFoundError):
            await client.rerun_task("nope")


async def test_rerun_fails_when_the_target_worker_is_gone(server: LiveServer) -> None:
    api = WorkerApi(server.url, server.token)
    try:
        worker = await api.connect(WorkerHello(name="short-lived"))
    finally:
        await api.aclose()
    async with server.client() as client:
        old = await client.create_task("routed", worker="short-lived")
        await client.revoke_worker(worker.id)
        with pytest.raises(ApiError) as caught:
            await client.rerun_task(old.id)
        assert caught.value.status == 400
        assert "short-lived" in str(caught.value)


def test_stream_read_timeout_is_three_missed_heartbeats_and_a_margin() -> None:
    assert 3 * HEARTBEAT_S < STREAM_READ_TIMEOUT_S <= 3 * HEARTBEAT_S + 10
    assert STREAM_READ_TIMEOUT_S < 4 * HEARTBEAT_S


# -- CLI -------------------------------------------------------------------------------------


async def test_cli_ls_search_and_worker(server: LiveServer) -> None:
    api = WorkerApi(server.url, server.token)
    try:
        await api.connect(WorkerHello(name="beta", workdir_roots=[str(server.workdir)]))
    finally:
        await api.aclose()
    async with server.client() as client:
        await _create(client, server, ["Fix 50% of bugs", "fix the rest", "write docs"])
        routed = await client.create_task("docs on beta", worker="beta")

    result = server.cli("ls", "-q", "FIX", "--json")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["prompt"] for line in result.stdout.splitlines()] == [
        "fix the rest",
        "Fix 50% of bugs",
    ]
    result = server.cli("ls", "--search", "50%")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and "Fix 50% of bugs" in result.stdout

    result = server.cli("ls", "--worker", "beta", "--json")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [routed.id]

    result = server.cli("ls", "-q", "docs", "--status", "queued", "--limit", "1")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and "docs on beta" in result.stdout

    assert server.cli("ls", "-q", "nothing").stdout == ""
    too_long = server.cli("ls", "-q", "x" * 201)
    assert too_long.returncode == 2 and "200" in too_long.stderr


async def test_cli_rerun_prints_the_new_id(server: LiveServer) -> None:
    async with server.client() as client:
        old = await client.create_task(
            "again please", workdir=str(server.workdir), sandbox=Sandbox.READ_ONLY
        )
    result = server.cli("rerun", old.id)
    assert result.returncode == 0, result.stderr
    new_id = result.stdout.strip()
    assert new_id and new_id != old.id
    async with server.client() as client:
        new = await client.get_task(new_id)
    assert (new.prompt, new.workdir, new.sandbox) == (old.prompt, old.workdir, old.sandbox)

    missing = server.cli("rerun", "nope")
    assert missing.returncode == 2 and "404" in missing.stderr


def test_cli_rerun_follow_json_streams_the_new_run(server_factory: ServerFactory) -> None:
    server = server_factory()  # with the local worker, running the fake codex
    first = server.cli("submit", "--follow", "say hi")
    assert first.returncode == 0, first.stderr + server.log()
    old_id = first.stdout.splitlines()[0]

    result = server.cli("rerun", "--follow", "--json", old_id)
    assert result.returncode == 0, result.stderr + server.log()
    new_id = result.stderr.strip().rsplit(" ", 1)[-1]  # stdout: the envelopes only
    lines = result.stdout.splitlines()
    assert new_id != old_id
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["data"]["status"] == "queued"
    assert events[-1]["kind"] == "status" and events[-1]["data"]["status"] == "completed"
