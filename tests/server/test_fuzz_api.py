"""Provides the bad-input tests of docs/reliability.md S10: schemathesis fuzzes the live server's
OpenAPI document with a real user token and a real worker token, on SQLite and on PostgreSQL
(``CODEX_TUI_TEST_PG_URL``), and hand-written requests cover what a generator rarely hits:
invalid UTF-8, wrong types, unknown fields, NUL characters, huge numbers and a 20 MB body.

Every answer must be a 4xx with a JSON problem body, never a 5xx, and conform to the document
(status codes and content types are declared, error bodies included); afterwards what was
stored before the barrage reads back unchanged. The fuzz run is bounded and reproducible: a
fixed seed, derandomised generation, no example database, no deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, ServerFactory

#: The fuzzer's seed: with derandomised generation, every run sends the same requests.
FUZZ_SEED = 20261121
#: Generated cases per operation in the fuzzing phase (the coverage phase adds its own
#: boundary and wrong-type cases on top).
MAX_EXAMPLES = 12

#: Server settings for fuzzing: long polls answer at once, and the rate limits sit far above
#: what the fuzzer sends, so that its requests reach validation instead of a 429.
FUZZ_ENV = {
    "CODEX_TUI_SERVER_MAX_WAIT_S": "0.2",
    "CODEX_TUI_SERVER_RATE_TASK_CREATIONS": "100000/minute",
    "CODEX_TUI_SERVER_RATE_PAIRING": "100000/minute",
    "CODEX_TUI_SERVER_MAX_ACTIVE_TASKS": "100000",
    "CODEX_TUI_SERVER_MAX_STREAMS": "1000",
}

PROBLEM_JSON = "application/problem+json"
#: A timestamp for uploaded events.
TS = "2026-11-21T06:00:00Z"


@dataclass
class FuzzTarget:
    """A live server with data on it: a paired and connected worker, a finished task with
    events and a task the worker holds."""

    server: LiveServer
    user_token: str
    worker_token: str
    worker_id: str
    finished_task: str
    running_task: str
    lease_id: str

    def headers(self, token: str) -> dict[str, str]:
        """The bearer header for ``token``."""
        return {"Authorization": f"Bearer {token}"}

    def client(self, token: str | None) -> httpx.Client:
        """A plain HTTP client for the server, with ``token`` as its bearer (or none)."""
        headers = self.headers(token) if token else {}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=30)

    def snapshot(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The finished task and its events, as the owner reads them."""
        with self.client(self.user_token) as http:
            task = http.get(f"/api/tasks/{self.finished_task}").json()
            events = http.get(
                f"/api/tasks/{self.finished_task}/events",
                headers={"Accept": "application/json"},
            ).json()
        return task, events


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code} {response.text}"
    return response.json() if response.content else None


def _seed(server: LiveServer) -> FuzzTarget:
    """Pair and connect a worker, then run one task to completion and claim another, over
    the real API."""
    user_token = server.token
    with httpx.Client(base_url=server.url, timeout=30) as http:
        user = {"Authorization": f"Bearer {user_token}"}
        code = _ok(http.post("/api/pairing-codes", headers=user), 201)["code"]
        paired = _ok(http.post("/api/pair", json={"code": code, "name": "fuzz-box"}))
        worker = {"Authorization": f"Bearer {paired['token']}"}
        worker_id = _ok(
            http.post(
                "/api/workers/connect",
                headers=worker,
                json={"name": "fuzz-box", "workdir_roots": [str(server.workdir)]},
            )
        )["id"]
        claimed = []
        for prompt in ("fuzz: a finished task", "fuzz: a running task"):
            _ok(http.post("/api/tasks", headers=user, json={"prompt": prompt}), 201)
            claim = _ok(http.post(f"/api/workers/{worker_id}/claim?wait=1", headers=worker))
            claimed.append((claim["task"]["id"], claim["lease_id"]))
        (done, done_lease), (running, lease) = claimed
        events = [
            {"ts": TS, "kind": "codex", "data": {"type": "thread.started", "thread_id": "t1"}},
            {"ts": TS, "kind": "stderr", "data": {"line": "some stderr"}},
            {"ts": TS, "kind": "codex", "data": {"type": "turn.completed", "usage": {}}},
        ]
        base = f"/api/workers/{worker_id}/tasks/{done}"
        _ok(
            http.post(
                f"{base}/events",
                headers=worker,
                json={"lease_id": done_lease, "first_index": 0, "events": events},
            )
        )
        _ok(
            http.post(
                f"{base}/finish",
                headers=worker,
                json={"lease_id": done_lease, "status": "completed", "event_count": 3},
            )
        )
    return FuzzTarget(
        server=server,
        user_token=user_token,
        worker_token=paired["token"],
        worker_id=worker_id,
        finished_task=done,
        running_task=running,
        lease_id=lease,
    )


def _no_server_errors(server: LiveServer) -> None:
    """The server logged no unhandled error (what a 500 would come from)."""
    log = server.log()
    assert "unhandled error" not in log, log[-5000:]
    assert "Traceback" not in log, log[-5000:]


@pytest.fixture(params=["sqlite", "postgresql"])
def fuzz_target(
    request: pytest.FixtureRequest, server_factory: ServerFactory
) -> Iterator[FuzzTarget]:
    """A seeded server without a local worker, on SQLite or on a fresh PostgreSQL database
    (skipped without ``CODEX_TUI_TEST_PG_URL``, see tests/support/pg.py)."""
    db_url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    server = server_factory(local_worker=False, extra_env=FUZZ_ENV, db_url=db_url)
    target = _seed(server)
    yield target
    _no_server_errors(server)


def _toml(table: dict[str, Any], path: tuple[str, ...] = (), *, item: bool = False) -> str:
    """``table`` as TOML: strings, numbers, booleans, tables and arrays of tables are all a
    schemathesis configuration needs (``item``: ``table`` is one entry of such an array)."""
    scalars, tables = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            tables.append(_toml(value, (*path, key)))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            tables.extend(_toml(entry, (*path, key), item=True) for entry in value)
        else:
            text = json.dumps(value)  # a JSON string, number or boolean is valid TOML too
            scalars.append(f"{json.dumps(key)} = {text}")
    name = ".".join(json.dumps(part) for part in path)
    header = [f"[[{name}]]" if item else f"[{name}]"] if path else []
    return "\n".join([*header, *scalars, "", *tables])


def fuzz_config(url: str, token: str, parameters: dict[str, str]) -> dict[str, Any]:
    """The schemathesis configuration (``schemathesis.toml`` keys) of one fuzz run.

    Args:
        url: The server's base URL.
        token: The bearer token every request carries.
        parameters: Fixed parameter values (``path.task_id`` = an existing task's id, ...).
    """
    return {
        "base-url": url,
        "seed": FUZZ_SEED,
        "workers": 1,
        "headers": {"Authorization": f"Bearer {token}"},
        "request-timeout": 10,
        "max-stream-events": 20,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            "allow-x00": True,
        },
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "ignored_auth": {"enabled": True},
        },
        "parameters": parameters,
        "operations": [
            # A stream asked to start past the task's last event waits for more (heartbeats
            # only), so the fuzzer reads each stream briefly.
            {"include-path": "/api/tasks/{task_id}/events", "request-timeout": 1},
            {"include-path": "/api/events", "request-timeout": 1},
        ],
    }


@pytest.mark.parametrize("principal", ["user-token", "worker-token"])
def test_fuzz_openapi(fuzz_target: FuzzTarget, principal: str, tmp_path: Path) -> None:
    """Schemathesis (``st run``: examples, coverage and fuzzing phases) over every operation
    of the server's own OpenAPI document: no 5xx, and each answer's status, content type and
    body are the ones the document declares; a route that declares a bearer token refuses a
    request without one.

    As the worker, the path ids are the real worker's and its claimed task's, so the worker
    protocol gets past the lookups to the lease and index checks. As the user, task routes use
    the finished task (its event stream ends), and worker ids are generated.
    """
    target = fuzz_target
    if principal == "user-token":
        token = target.user_token
        parameters = {"path.task_id": target.finished_task}
    else:
        token = target.worker_token
        parameters = {"path.task_id": target.running_task, "path.worker_id": target.worker_id}
    config = tmp_path / "schemathesis.toml"
    config.write_text(_toml(fuzz_config(target.server.url, token, parameters)))
    junit = tmp_path / "fuzz-junit.xml"
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{target.server.url}/openapi.json",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    run = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env, check=False
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found failures:\n{report}"
    assert junit.exists(), report
    # The run covered every operation of the document, each with generated cases.
    operations = httpx.get(f"{target.server.url}/openapi.json").json()["paths"]
    count = sum(len(methods) for methods in operations.values())
    assert f"{count} selected / {count} total" in report, report
    assert "generated" in report, report


# ------------------------------------------------------------------------ hand-written input


def _problem(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """Assert a 4xx problem answer with one of ``statuses``; returns its body."""
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code in statuses, f"{where}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith(PROBLEM_JSON), where
    body = response.json()
    assert body["status"] == response.status_code, where
    return dict(body)


def test_bad_bodies_get_problems(fuzz_target: FuzzTarget) -> None:
    """Invalid UTF-8, non-JSON, wrong types, unknown fields and deep nesting: 400 or 422 on
    every body-taking route, and nothing stored changes."""
    target = fuzz_target
    before = target.snapshot()
    wid, tid = target.worker_id, target.running_task
    user_routes = ["/api/tasks"]
    worker_routes = [
        "/api/workers/connect",
        f"/api/workers/{wid}/signals",
        f"/api/workers/{wid}/tasks/{tid}/events",
        f"/api/workers/{wid}/tasks/{tid}/finish",
    ]
    raw_bodies = [
        b'{"prompt": "caf\xe9 \xff\xfe"}',  # invalid UTF-8
        b"\xef\xbb\xbf\xff",
        b'{"prompt": ',  # truncated JSON
        b"not json at all",
        b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than any parser's recursion
        b"",
    ]
    with target.client(target.user_token) as user, target.client(target.worker_token) as worker:
        for http, routes in ((user, user_routes), (worker, worker_routes)):
            for path in routes:
                for raw in raw_bodies:
                    response = http.post(
                        path, content=raw, headers={"Content-Type": "application/json"}
                    )
                    _problem(response, 400, 422)
                not_objects: list[Any] = [
                    [],
                    "x",
                    7,
                    None,
                    {"prompt": 1, "name": 4, "lease_id": []},
                ]
                for value in not_objects:
                    _problem(http.post(path, json=value), 422)
        wrong_types: list[dict[str, Any]] = [
            {"prompt": ["list"]},
            {"prompt": "ok", "labels": "gpu"},
            {"prompt": "ok", "sandbox": "everything"},
            {"prompt": "ok", "workdir": {"a": 1}},
            {"prompt": "ok", "unknown_field": True},
            {"prompt": "ok", "labels": ["has space"]},
            {"prompt": "-"},
            {"prompt": "   "},
        ]
        for task in wrong_types:
            _problem(user.post("/api/tasks", json=task), 422)
        _problem(worker.post("/api/workers/connect", json={"name": "w", "max_tasks": "four"}), 422)
        _problem(worker.post("/api/workers/connect", json={"name": "w", "extra": 1}), 422)
        _problem(user.post("/api/pair", json={"code": "ABCD", "name": "w", "token": "x"}), 422)
        _problem(user.get("/api/tasks", params={"limit": "many"}), 422)
        _problem(user.get("/api/tasks", params={"status": "sleeping"}), 422)
    assert target.snapshot() == before


def test_nul_characters_get_4xx(fuzz_target: FuzzTarget) -> None:
    """A NUL character in any string a route takes (body, path, query) is a 4xx, never a 500:
    PostgreSQL refuses NUL in text, so it must be stopped before the store."""
    target = fuzz_target
    before = target.snapshot()
    wid, tid, lease = target.worker_id, target.running_task, target.lease_id
    nul = "a\x00b"
    nul_in_path = "a%00b"  # what a client sends for a NUL in a path segment
    with target.client(target.user_token) as user, target.client(target.worker_token) as worker:
        for body in (
            {"prompt": nul},
            {"prompt": "ok", "workdir": f"/tmp/{nul}"},
            {"prompt": "ok", "model": nul},
            {"prompt": "ok", "worker": nul},
            {"prompt": "ok", "labels": [nul]},
        ):
            _problem(user.post("/api/tasks", json=body), 400, 422)
        for params in ({"q": nul}, {"worker": nul}, {"cursor": nul}):
            _problem(user.get("/api/tasks", params=params), 400, 422)
        for path in (
            f"/api/tasks/{nul_in_path}",
            f"/api/tasks/{nul_in_path}/events",
        ):
            _problem(user.get(path), 400, 404, 422)
        _problem(user.post(f"/api/tasks/{nul_in_path}/cancel"), 400, 404, 422)
        _problem(user.delete(f"/api/workers/{nul_in_path}"), 400, 404, 422)
        for body in (
            {"name": nul},
            {"name": "w", "hostname": nul},
            {"name": "w", "codex_version": nul},
            {"name": "w", "workdir_roots": [f"/srv/{nul}"]},
        ):
            _problem(worker.post("/api/workers/connect", json=body), 422)
        code = _ok(user.post("/api/pairing-codes"), 201)["code"]
        for body in (
            {"code": nul, "name": "w"},
            {"code": code, "name": nul},
            {"code": code, "name": "w", "hostname": nul},
        ):
            _problem(httpx.post(f"{target.server.url}/api/pair", json=body), 400, 422)
        _problem(
            worker.post(f"/api/workers/{nul_in_path}/claim", params={"wait": 0}), 400, 404, 422
        )
        _problem(worker.post(f"/api/workers/{wid}/signals", json={"task_ids": [nul]}), 422)
        base = f"/api/workers/{wid}/tasks/{tid}"
        event: dict[str, Any] = {"ts": TS, "kind": "stderr", "data": {"line": "x"}}
        batches: list[dict[str, Any]] = [
            {"lease_id": nul, "first_index": 0, "events": [event]},
            {"lease_id": lease, "first_index": 0, "events": [event], "thread_id": nul},
        ]
        for batch in batches:
            _problem(worker.post(f"{base}/events", json=batch), 422)
        batch = {"lease_id": lease, "first_index": 0, "events": [event]}
        path = f"/api/workers/{wid}/tasks/{nul_in_path}/events"
        _problem(worker.post(path, json=batch), 404, 422)
        for finish in (
            {"lease_id": nul, "status": "failed", "event_count": 0},
            {"lease_id": lease, "status": "failed", "event_count": 0, "error": nul},
            {"lease_id": lease, "status": "failed", "event_count": 0, "thread_id": nul},
        ):
            _problem(worker.post(f"{base}/finish", json=finish), 422)
        # NUL inside event data is JSON-escaped in storage: kept, and read back as sent.
        data = {"type": "item.completed", "text": f"before{nul}after"}
        upload = {"lease_id": lease, "first_index": 0, "events": [{**event, "data": data}]}
        assert _ok(worker.post(f"{base}/events", json=upload))["next_index"] == 1
        page = _ok(user.get(f"/api/tasks/{tid}/events", headers={"Accept": "application/json"}))
        assert page[-1]["data"] == data
    assert target.snapshot() == before


def test_out_of_range_numbers_and_times_get_4xx(fuzz_target: FuzzTarget) -> None:
    """Numbers past the store's 64-bit (or 32-bit) columns, NaN and infinities, naive or
    overflowing timestamps, and malformed Last-Event-IDs are 4xx."""
    target = fuzz_target
    before = target.snapshot()
    wid, tid, lease = target.worker_id, target.running_task, target.lease_id
    huge = 10**20
    events_of = f"/api/tasks/{target.finished_task}/events"
    page = {"Accept": "application/json"}
    with target.client(target.user_token) as user, target.client(target.worker_token) as worker:
        for params in ({"after": huge}, {"before": huge}, {"after": 2**31}, {"limit": huge}):
            _problem(user.get(events_of, params=params, headers=page), 400, 422)
        # Raw header bytes: b"\xb2" is "²" once decoded as Latin-1, a digit to str.isdigit.
        for seq in (b"99999999999999999999", b"\xb2", b"\xb9\xb2", b"\xd9\xa1", b"-1", b"1e3"):
            raw_headers = [(b"Accept", b"application/json"), (b"Last-Event-ID", seq)]
            _problem(user.get(events_of, headers=raw_headers), 400)
        _problem(user.get("/api/tasks", params={"limit": huge}), 422)
        base = f"/api/workers/{wid}/tasks/{tid}"
        event: dict[str, Any] = {"ts": TS, "kind": "stderr", "data": {"line": "x"}}
        bad_batches: list[dict[str, Any]] = [
            {"lease_id": lease, "first_index": huge, "events": [event]},
            {"lease_id": lease, "first_index": 0, "events": [{**event, "ts": "2026-11-21T06:00"}]},
            {
                "lease_id": lease,
                "first_index": 0,
                "events": [{**event, "ts": "9999-12-31T23:59-23:59"}],
            },
            {
                "lease_id": lease,
                "first_index": 0,
                "events": [{**event, "ts": "0001-01-01T00:00+23:59"}],
            },
            {"lease_id": lease, "first_index": 0, "events": [{**event, "kind": "status"}]},
        ]
        for body in bad_batches:
            _problem(worker.post(f"{base}/events", json=body), 422)
        for number in ("NaN", "Infinity", "-Infinity", "1e400"):
            raw = (
                f'{{"lease_id": "{lease}", "first_index": 0, "events": [{{"ts": "{TS}", '
                f'"kind": "codex", "data": {{"type": "x", "n": [{number}]}}}}]}}'
            )
            response = worker.post(
                f"{base}/events", content=raw, headers={"Content-Type": "application/json"}
            )
            _problem(response, 400, 422)
        for body in (
            {"lease_id": lease, "status": "failed", "event_count": huge},
            {"lease_id": lease, "status": "failed", "event_count": 0, "exit_code": huge},
            {"lease_id": lease, "status": "failed", "event_count": 0, "exit_code": -huge},
        ):
            _problem(worker.post(f"{base}/finish", json=body), 422)
        _problem(worker.post(f"/api/workers/{wid}/claim", params={"wait": huge}), 422)
        _problem(worker.post("/api/workers/connect", json={"name": "w", "max_tasks": huge}), 422)
        # The running task is untouched by all of that: it is still running, with no events
        # from the worker.
        task = _ok(user.get(f"/api/tasks/{tid}"))
        assert task["status"] == "running"
    assert target.snapshot() == before


def test_huge_body_is_refused(fuzz_target: FuzzTarget) -> None:
    """A 20 MB JSON body is a 413 or 422, never a 500, and the server stays up."""
    target = fuzz_target
    before = target.snapshot()
    twenty_mb = 20 * 1024 * 1024
    bodies = {
        "/api/tasks": json.dumps({"prompt": "x" * twenty_mb}),
        f"/api/workers/{target.worker_id}/tasks/{target.running_task}/events": json.dumps(
            {
                "lease_id": target.lease_id,
                "first_index": 0,
                "events": [{"ts": TS, "kind": "stderr", "data": {"line": "y" * 1024}}] * 20_000,
            }
        ),
    }
    for path, text in bodies.items():
        assert len(text) >= twenty_mb
        token = target.user_token if path == "/api/tasks" else target.worker_token
        with target.client(token) as http:
            response = http.post(path, content=text, headers={"Content-Type": "application/json"})
            _problem(response, 413, 422)
    with target.client(target.user_token) as http:
        assert _ok(http.get("/api/me"))["name"]
    assert target.snapshot() == before
