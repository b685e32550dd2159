"""Canary secrets (issue 5, docs/reliability.md S3, S7): secrets in the server's and the worker's
environment, the tokens and the pairing codes never reach codex, the logs (text or JSON),
the audit rows or any response."""

from __future__ import annotations

import json
import sqlite3
import uuid

import httpx
import pytest

from tests.conftest import ServerFactory


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_secrets_stay_out_of_codex_logs_audit_and_responses(
    server_factory: ServerFactory, log_format: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    canaries = {
        "AWS_SECRET_ACCESS_KEY": f"canary-aws-{tag}",
        "CODEX_TUI_CANARY": f"canary-env-{tag}",
        "CODEX_TUI_SERVER_METRICS_TOKEN": f"canary-metrics-{tag}",
        "DATABASE_PASSWORD": f"canary-db-{tag}",
    }
    server = server_factory(
        fake_mode="echo-argv",
        extra_env=canaries,
        server_args=("--log-format", log_format, "--log-level", "info"),
    )
    user = {"Authorization": f"Bearer {server.token}"}
    bodies: list[str] = []
    secrets = [*canaries.values(), server.token]

    def get(path: str, **kwargs: object) -> httpx.Response:
        response = httpx.get(f"{server.url}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]
        bodies.append(response.text)
        bodies.append(json.dumps(dict(response.headers)))
        return response

    def post(path: str, **kwargs: object) -> httpx.Response:
        response = httpx.post(f"{server.url}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]
        bodies.append(response.text)
        bodies.append(json.dumps(dict(response.headers)))
        return response

    # A task whose codex reports its whole environment and argv back as a message.
    task = post("/api/tasks", headers=user, json={"prompt": "env?", "sandbox": "read-only"}).json()
    stream = get(f"/api/tasks/{task['id']}/events", headers=user | {"Accept": "text/event-stream"})
    assert '"status":"completed"' in stream.text, server.log()
    events = get(
        f"/api/tasks/{task['id']}/events", headers=user | {"Accept": "application/json"}
    ).json()
    report = json.loads(
        next(
            e["data"]["item"]["text"]
            for e in events
            if e["kind"] == "codex" and e["data"].get("type") == "item.completed"
        )
    )
    assert report["env"], "codex reported no environment"

    # A pairing code, its redemption (a worker token), and refused credentials.
    code = post("/api/pairing-codes", headers=user).json()["code"]
    paired = post("/api/pair", json={"code": code, "name": "w2", "hostname": "h"}).json()
    secrets += [code, paired["token"]]
    post("/api/pair", json={"code": code, "name": "w3", "hostname": "h"})  # used: refused
    get("/api/me", headers={"Authorization": f"Bearer ctu_canary-bearer-{tag}"})
    secrets.append(f"canary-bearer-{tag}")
    post("/api/tasks", headers=user, json={"prompt": 7, "token": server.token})  # 422
    for path in ("/api/me", "/api/tasks", f"/api/tasks/{task['id']}", "/api/workers"):
        assert get(path, headers=user).status_code == 200
    assert get("/metrics").status_code == 401
    metrics_token = canaries["CODEX_TUI_SERVER_METRICS_TOKEN"]
    assert get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"}).is_success
    get("/openapi.json")

    # What codex saw: none of the server's or worker's secrets.
    seen_by_codex = json.dumps(report)
    for secret in secrets[:5]:
        assert secret not in seen_by_codex
    assert "CODEX_TUI_TOKEN" not in report["env"]

    found = list(server.home.rglob("codex-tui.db"))
    with sqlite3.connect(found[0]) as conn:
        audit = json.dumps(conn.execute("SELECT * FROM audit_log").fetchall())
    assert "task.create" in audit and "pairing.redeem" in audit

    worker_log = next(server.home.rglob("local-worker.log")).read_text(errors="replace")
    logs = server.log() + worker_log
    if log_format == "json":
        lines = [line for line in server.log().splitlines() if line.startswith("{")]
        assert lines and all("request_id" in json.loads(line) for line in lines)
    everything = {"responses": "\n".join(bodies), "logs": logs, "audit": audit}
    for where, text in everything.items():
        for secret in secrets:
            if where == "responses" and secret in (code, paired["token"]):
                continue  # shown once, to the one who asked for it
            assert secret not in text, f"{secret[:12]}… leaked into {where}"
