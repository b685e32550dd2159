"""Audit log (issue 5, docs/reliability.md S9, S7): every state-changing call writes exactly one
append-only row with actor, owner, action, target, time, request id and client address, and
``codex-tui admin audit [--json]`` reads them. Driven over HTTP against a real server whose
"worker" is this test speaking the worker protocol with a paired worker token."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from server_client.models import utcnow
from tests.conftest import LiveServer, ServerFactory, wait_until

#: Every mutating route of the API and the audit action it writes. ``None``: deliberately not
#: audited, with the reason. A new mutating route fails ``test_every_mutating_route_is_mapped``
#: until it is listed here (and audited, or its exemption argued).
AUDITED: dict[tuple[str, str], str | None] = {
    ("POST", "/api/tasks"): "task.create",
    ("POST", "/api/tasks/{task_id}/cancel"): "task.cancel",
    ("POST", "/api/pairing-codes"): "pairing.create",
    ("POST", "/api/pair"): "pairing.redeem",
    ("DELETE", "/api/workers/{worker_id}"): "worker.revoke",
    ("POST", "/api/workers/connect"): "worker.connect",
    ("POST", "/api/workers/{worker_id}/claim"): "task.claim",
    ("POST", "/api/workers/{worker_id}/tasks/{task_id}/finish"): "task.finish",
    # Data plane: the events table is itself the append-only, seq-numbered record of uploads
    # (one row per event, E1); an audit row per batch would double the write load.
    ("POST", "/api/workers/{worker_id}/tasks/{task_id}/events"): None,
    # The worker's upload of every task's events: data as above; a lease's end it carries
    # writes that end's row (task.finish), as the finish route does.
    ("POST", "/api/workers/{worker_id}/events"): None,
    # A heartbeat long poll: it changes only last_seen_at.
    ("POST", "/api/workers/{worker_id}/signals"): None,
    ("POST", "/api/tasks/{task_id}/replies"): "task.reply",
    ("POST", "/api/tasks/{task_id}/interrupt"): "task.interrupt",
    ("POST", "/api/approvals/{approval_id}"): "approval.answer",
    ("POST", "/api/workers/{worker_id}/tasks/{task_id}/approvals"): "approval.request",
    # Delivery receipts of the data plane: the reply and approval rows keep when each was
    # acknowledged (delivered_at, acked_at); the request and the answer are audited.
    ("POST", "/api/workers/{worker_id}/acks"): None,
    ("PUT", "/api/workers/{worker_id}/tasks/{task_id}/workspace"): "workspace.create",
    # Data plane: the task's one diff row is replaced by each upload (the latest is kept).
    ("PUT", "/api/workers/{worker_id}/tasks/{task_id}/diff"): None,
    ("DELETE", "/api/tasks/{task_id}/workspace"): "workspace.remove",
    # A report of the worker's disk: it writes a row (workspace.removed) only when workspaces
    # went away, which test_workspaces_api.py checks.
    ("POST", "/api/workers/{worker_id}/workspaces"): None,
}


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server with no local worker and a short lease, so a silent worker's task is lost
    within seconds."""
    return server_factory(
        local_worker=False, server_args=("--lease-ttl", "3", "--sweep-interval", "0.2")
    )


def audit_rows(server: LiveServer, *args: str) -> list[dict[str, Any]]:
    """Rows of ``codex-tui admin audit --json`` (the CLI a person would use)."""
    done = server.cli("admin", "audit", "--json", "--limit", "1000", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _db(server: LiveServer) -> str:
    found = list(server.home.rglob("codex-tui.db"))
    assert len(found) == 1, found
    return str(found[0])


def _new_rows(server: LiveServer, before: int) -> list[dict[str, Any]]:
    """Rows past id ``before``, read straight from the SQLite file (fast, for each call)."""
    with sqlite3.connect(_db(server)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM audit_log WHERE id > ? ORDER BY id", (before,))
        return [dict(row) for row in rows]


def _last_id(server: LiveServer) -> int:
    with sqlite3.connect(_db(server)) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()[0])


def test_every_mutating_route_is_mapped(server: LiveServer) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    mutating = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        for method in ops
        if method.upper() in {"POST", "PUT", "PATCH", "DELETE"}
    }
    assert mutating == set(AUDITED)


def test_each_mutating_call_writes_one_row(server: LiveServer) -> None:
    user = {"Authorization": f"Bearer {server.token}"}
    http = httpx.Client(base_url=server.url, timeout=30)
    seen: set[str] = set()
    secrets_seen: list[str] = [server.token]

    def call(method: str, path: str, action: str | None, **kwargs: Any) -> httpx.Response:
        before = _last_id(server)
        response = http.request(method, path, **kwargs)
        assert response.is_success, response.text
        rows = _new_rows(server, before)
        if action is None:
            assert rows == [], rows
            return response
        assert [row["action"] for row in rows] == [action], rows
        row = rows[0]
        assert row["request_id"] == response.headers["x-request-id"]
        assert row["client_addr"] == "127.0.0.1"
        at = datetime.fromisoformat(row["at"]).replace(tzinfo=UTC)  # stored as naive UTC
        assert abs(at - utcnow()) < timedelta(minutes=1)
        seen.add(action)
        return response

    # A user submits, cancels (twice: the second changes nothing but is still a call).
    task = call("POST", "/api/tasks", "task.create", headers=user, json={"prompt": "one"}).json()
    call("POST", f"/api/tasks/{task['id']}/cancel", "task.cancel", headers=user)
    again = call("POST", f"/api/tasks/{task['id']}/cancel", "task.cancel", headers=user)
    assert again.status_code == 202

    # Pairing: a code, a refused redemption, a good one.
    code = call("POST", "/api/pairing-codes", "pairing.create", headers=user).json()["code"]
    secrets_seen.append(code)
    before = _last_id(server)
    bad = http.post("/api/pair", json={"code": "ZZZZ-ZZZZ", "name": "w1", "hostname": "h"})
    assert bad.status_code == 400
    assert [r["action"] for r in _new_rows(server, before)] == ["pairing.refused"]
    paired = call(
        "POST", "/api/pair", "pairing.redeem", json={"code": code, "name": "w1", "hostname": "h"}
    ).json()
    worker_token, worker_id = paired["token"], paired["worker"]["id"]
    secrets_seen.append(worker_token)
    worker = {"Authorization": f"Bearer {worker_token}"}

    # The worker connects, claims, uploads, heartbeats and finishes.
    hello = {
        "name": "w1",
        "hostname": "h",
        "workdir_roots": [str(server.workdir)],
        "max_tasks": 2,
        "runtime": "app-server",
    }
    call("POST", "/api/workers/connect", "worker.connect", headers=worker, json=hello)
    task = call("POST", "/api/tasks", "task.create", headers=user, json={"prompt": "two"}).json()
    claim = call(
        "POST", f"/api/workers/{worker_id}/claim", "task.claim", headers=worker, params={"wait": 5}
    ).json()
    assert claim["task"]["id"] == task["id"]
    lease = claim["lease_id"]
    batch = {
        "lease_id": lease,
        "first_index": 0,
        "events": [{"ts": utcnow().isoformat(), "kind": "codex", "data": {"type": "x"}}],
    }
    call(
        "POST",
        f"/api/workers/{worker_id}/tasks/{task['id']}/events",
        None,
        headers=worker,
        json=batch,
    )
    call(
        "POST",
        f"/api/workers/{worker_id}/signals",
        None,
        headers=worker,
        params={"wait": 0},
        json={"task_ids": [task["id"]]},
    )
    call(
        "POST",
        f"/api/workers/{worker_id}/tasks/{task['id']}/finish",
        "task.finish",
        headers=worker,
        json={"lease_id": lease, "status": "completed", "exit_code": 0, "event_count": 1},
    )

    # A task on a repository: its workspace is reported (audited the first time), its diff
    # uploaded, and once it ended its owner asks for its removal; a sync reports sizes.
    on_repo = call(
        "POST",
        "/api/tasks",
        "task.create",
        headers=user,
        json={"prompt": "change it", "repo": str(server.workdir / "repo")},
    ).json()
    claim = call(
        "POST", f"/api/workers/{worker_id}/claim", "task.claim", headers=worker, params={"wait": 5}
    ).json()
    assert claim["task"]["id"] == on_repo["id"]
    on_ws = f"/api/workers/{worker_id}/tasks/{on_repo['id']}"
    report = {"lease_id": claim["lease_id"], "path": "/srv/ws/x", "base_commit": "a" * 40}
    call("PUT", f"{on_ws}/workspace", "workspace.create", headers=worker, json=report)
    diff = {"lease_id": claim["lease_id"], "base_commit": "a" * 40, "files": [], "patch": ""}
    call("PUT", f"{on_ws}/diff", None, headers=worker, json=diff)
    call(
        "POST",
        f"{on_ws}/finish",
        "task.finish",
        headers=worker,
        json={"lease_id": claim["lease_id"], "status": "completed", "event_count": 0},
    )
    held = {"workspaces": [{"task_id": on_repo["id"], "path": "/srv/ws/x", "bytes": 10}]}
    call("POST", f"/api/workers/{worker_id}/workspaces", None, headers=worker, json=held)
    call("DELETE", f"/api/tasks/{on_repo['id']}/workspace", "workspace.remove", headers=user)

    # A conversation: codex asks, the owner answers, replies and interrupts; the worker
    # acknowledges (not audited) and ends the turn idle.
    talk = call(
        "POST",
        "/api/tasks",
        "task.create",
        headers=user,
        json={"prompt": "talk", "runtime": "app-server", "approval_policy": "on-request"},
    ).json()
    claim = call(
        "POST", f"/api/workers/{worker_id}/claim", "task.claim", headers=worker, params={"wait": 5}
    ).json()
    assert claim["task"]["id"] == talk["id"]
    lease = claim["lease_id"]
    on_talk = f"/api/workers/{worker_id}/tasks/{talk['id']}"
    asked = {"lease_id": lease, "item_id": "call_1", "kind": "command", "command": "ls"}
    approval = call(
        "POST", f"{on_talk}/approvals", "approval.request", headers=worker, json=asked
    ).json()
    call(
        "POST",
        f"/api/approvals/{approval['id']}",
        "approval.answer",
        headers=user,
        json={"decision": "accept"},
    )
    reply = call(
        "POST",
        f"/api/tasks/{talk['id']}/replies",
        "task.reply",
        headers=user,
        json={"prompt": "and then?"},
    ).json()
    call("POST", f"/api/tasks/{talk['id']}/interrupt", "task.interrupt", headers=user)
    acks = {"replies": [reply["id"]], "approvals": [approval["id"]]}
    call("POST", f"/api/workers/{worker_id}/acks", None, headers=worker, json=acks)
    part = {"task_id": talk["id"], "lease_id": lease, "first_index": 0, "events": []}
    upload = f"/api/workers/{worker_id}/events"
    call(
        "POST", upload, None, headers=worker, json={"tasks": [{**part, "events": batch["events"]}]}
    )
    idle = {"status": "idle", "event_count": 1}
    ended = call(
        "POST",
        upload,
        "task.finish",
        headers=worker,
        json={"tasks": [{**part, "first_index": 1, "finish": idle}]},
    ).json()
    assert ended["tasks"][0]["finished"] == "idle"
    # An idle conversation ends at once when canceled: no worker is involved.
    call("POST", f"/api/tasks/{talk['id']}/cancel", "task.cancel", headers=user)
    assert http.get(f"/api/tasks/{talk['id']}", headers=user).json()["status"] == "canceled"

    # A claimed task whose worker falls silent is lost by the sweeper (actor: server).
    lost = call("POST", "/api/tasks", "task.create", headers=user, json={"prompt": "3"}).json()
    call("POST", f"/api/workers/{worker_id}/claim", "task.claim", headers=worker)
    wait_until(
        lambda: any(r["action"] == "task.lease_lost" for r in _new_rows(server, 0)),
        30,
        "the sweeper to end the silent worker's task",
    )
    lost_rows = audit_rows(server, "--action", "task.lease_lost")
    assert len(lost_rows) == 1
    assert lost_rows[0]["target"] == f"task:{lost['id']}"
    assert lost_rows[0]["actor"] == "server" and lost_rows[0]["request_id"] is None

    # Revoking the worker.
    call("DELETE", f"/api/workers/{worker_id}", "worker.revoke", headers=user)

    assert seen == {a for a in AUDITED.values() if a is not None}
    rows = audit_rows(server)
    by_action = {row["action"]: row for row in rows}
    assert by_action["task.create"]["actor"].startswith("user:")
    assert by_action["task.finish"]["actor"] == f"worker:{worker_id}"
    assert by_action["pairing.refused"]["owner"] is None
    # Filters of the CLI.
    assert {r["action"] for r in audit_rows(server, "--task", task["id"])} == {
        "task.create",
        "task.claim",
        "task.finish",
    }
    # S7: no token or pairing code in any row, in either output format.
    text = server.cli("admin", "audit", "--limit", "1000").stdout
    dumped = json.dumps(rows)
    for secret in secrets_seen:
        assert secret not in dumped and secret not in text
        assert secret.replace("-", "") not in dumped
    assert "task.create" in text and "user:" in text


def test_audit_rows_cannot_be_changed(server: LiveServer) -> None:
    httpx.post(
        f"{server.url}/api/tasks",
        headers={"Authorization": f"Bearer {server.token}"},
        json={"prompt": "x"},
    ).raise_for_status()
    with sqlite3.connect(_db(server)) as conn:
        for statement in ("UPDATE audit_log SET actor = 'me'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] > 0


def test_admin_audit_rejects_a_bad_since(server: LiveServer) -> None:
    done = server.cli("admin", "audit", "--since", "yesterday-ish")
    assert done.returncode != 0
    assert "--since" in done.stderr and "30m" in done.stderr
    since = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert audit_rows(server, "--since", since) == []
