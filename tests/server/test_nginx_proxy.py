"""The deployment guide's nginx configuration, run for real in front of a real server (issue 5):
events stream through it live (not buffered until the task ends), request ids and client
addresses reach the audit log, uploads of the worker's largest batch size pass, and so does a
worker's upload socket."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest
from websockets.asyncio.client import connect

from server_client.models import WorkerHello, WorkerUploadResult
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory, free_port, wait_until
from tests.server.test_deployment_docs import _nginx_conf, throwaway_certificate

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("openssl") is None,
    reason="needs nginx and openssl (.ci/run installs nginx)",
)


@pytest.fixture
def proxied(server_factory: ServerFactory, tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    """A server whose fake codex prints an item every 0.2 s, behind the guide's nginx
    configuration (TLS with a throwaway certificate), which the server trusts as the guide
    says (``CODEX_TUI_SERVER_TRUSTED_PROXIES``); yields the server and nginx's URL."""
    server = server_factory(
        fake_mode="slow-burst",
        extra_env={
            "FAKE_CODEX_EVENTS": "25",
            "FAKE_CODEX_INTERVAL": "0.2",
            "CODEX_TUI_SERVER_TRUSTED_PROXIES": "127.0.0.1",
        },
    )
    port = int(server.url.rsplit(":", 1)[1])
    cert, key = throwaway_certificate(tmp_path)
    https_port, http_port = free_port(), free_port()
    conf = _nginx_conf()
    conf = re.sub(r"(?m)^\s*server 127\.0\.0\.1:80\d\d[^;]*;\n", "", conf)
    conf = conf.replace(
        "upstream codex_tui {", f"upstream codex_tui {{\n    server 127.0.0.1:{port};"
    )
    conf = conf.replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    conf = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", conf)
    conf = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", conf)
    conf = conf.replace("/var/log/nginx/", f"{tmp_path}/")
    temp = " ".join(
        f"{kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    (tmp_path / "codex-tui.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(
        f"{user}pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "daemon off;\nworker_processes 1;\nevents {}\n"
        f"http {{\n{temp}\ninclude {tmp_path}/codex-tui.conf;\n}}\n"
    )
    nginx = subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        if nginx.poll() is not None:
            raise AssertionError((tmp_path / "error.log").read_text(errors="replace"))
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", https_port)) == 0

    try:
        wait_until(listening, 20, "nginx to listen")
        yield server, f"https://127.0.0.1:{https_port}"
    finally:
        nginx.terminate()
        nginx.wait(10)


def _audit(server: LiveServer, action: str) -> list[dict[str, object]]:
    (db,) = list(server.home.rglob("codex-tui.db"))
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM audit_log WHERE action = ? ORDER BY id", (action,))
        return [dict(row) for row in rows]


def test_events_stream_live_through_the_proxy(proxied: tuple[LiveServer, str]) -> None:
    server, url = proxied
    auth = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=url, verify=False, timeout=30) as http:
        created = http.post(
            "/api/tasks",
            headers=auth | {"X-Request-ID": "via-nginx-1", "X-Forwarded-For": "203.0.113.9"},
            json={"prompt": "talk slowly", "workdir": str(server.workdir)},
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        seen: list[tuple[float, dict[str, Any]]] = []
        running_when_seen: list[bool] = []
        with http.stream(
            "GET", f"/api/tasks/{task_id}/events", headers=auth | {"Accept": "text/event-stream"}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                seen.append((time.monotonic(), event))
                if event["kind"] == "codex" and len(running_when_seen) < 3:
                    # Ask the server directly, past nginx: is the task still going?
                    state = httpx.get(f"{server.url}/api/tasks/{task_id}", headers=auth).json()
                    running_when_seen.append(state["status"] == "running")
    assert seen[-1][1]["data"] == seen[-1][1]["data"] | {"status": "completed"}
    assert [e["seq"] for _, e in seen] == list(range(1, len(seen) + 1))
    # Live, not buffered: codex events came while the task still ran, spread over seconds.
    assert running_when_seen == [True, True, True]
    assert seen[-1][0] - seen[2][0] > 2.0

    row = _audit(server, "task.create")[-1]
    assert row["request_id"] == "via-nginx-1"
    assert row["client_addr"] == "203.0.113.9"  # X-Forwarded-For from a trusted proxy


def test_request_ids_are_nginx_s_when_the_client_sends_none(
    proxied: tuple[LiveServer, str],
) -> None:
    server, url = proxied
    response = httpx.post(
        f"{url}/api/pairing-codes",
        headers={"Authorization": f"Bearer {server.token}"},
        verify=False,
    )
    assert response.status_code == 201
    rid = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid), rid  # nginx's $request_id
    assert _audit(server, "pairing.create")[-1]["request_id"] == rid


def test_a_worker_s_upload_socket_goes_through_the_proxy(proxied: tuple[LiveServer, str]) -> None:
    """The guide's socket location passes the WebSocket upgrade on: an upload sent over the
    socket through nginx is answered (with the worker's own answer, not a fallback)."""
    server, url = proxied

    async def upload() -> dict[str, Any]:
        api = WorkerApi(server.url, server.token)
        try:
            worker = await api.connect(WorkerHello(name="via-nginx", workdir_roots=["/"]))
        finally:
            await api.aclose()
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        socket_url = "wss" + url.removeprefix("https") + f"/api/workers/{worker.id}/events/socket"
        async with connect(
            socket_url,
            ssl=insecure,
            additional_headers={"Authorization": f"Bearer {server.token}"},
            open_timeout=30,
        ) as ws:
            await ws.send('{"tasks":[]}')
            answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return answer

    assert asyncio.run(upload()) == {"tasks": []}


def test_the_worker_s_socket_trusts_the_authorities_its_requests_trust(
    proxied: tuple[LiveServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind TLS whose authority only httpx's bundle holds (certifi's, not the system's),
    the upload socket opens as the requests do, instead of falling back to requests."""
    server, url = proxied
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setattr(certifi, "where", lambda: str(tmp_path / "cert.pem"))

    async def upload() -> tuple[WorkerUploadResult, bool]:
        api = WorkerApi(url, server.token)
        try:
            worker = await api.connect(WorkerHello(name="via-tls", workdir_roots=["/"]))
            answer = await api.upload_all(worker.id, lambda: b'{"tasks":[]}')
            return answer, api._sockets[worker.id]._conn is not None
        finally:
            await api.aclose()

    answer, over_socket = asyncio.run(upload())
    assert answer.tasks == []
    assert over_socket, "the upload fell back to a request: the socket refused the authority"
