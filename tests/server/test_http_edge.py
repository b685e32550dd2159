"""The server's HTTP edge (issue 17 items 8 and 10, docs/reliability.md S12, S10), with raw
sockets against a real server: half-sent headers and stalled bodies are closed within
``request_read_timeout_s`` (here 2 s), a stalled body with a 408 problem; a too large
``Content-Length`` gets a 413 problem before the body is read, a chunked body as it passes
the limit; event streams and the workers' long polls outlast the bound; a server bound off
loopback warns about plain HTTP and an open ``/metrics``."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from server_client.server.main import exposure_warnings, is_loopback
from server_client.server.settings import ServerSettings
from tests.conftest import LiveServer, ServerFactory, wait_until

PROBLEM = "application/problem+json"
#: The read bound of these tests' servers (s).
BOUND_S = 2.0
#: How long past the bound a close may take before the test fails (s): a loaded machine.
SLACK_S = 8.0


@pytest.fixture
def edge_server(server_factory: ServerFactory) -> LiveServer:
    """A server without a worker whose request reads are bounded to 2 s and whose event
    streams send a heartbeat every 0.5 s."""
    return server_factory(
        local_worker=False,
        extra_env={
            "CODEX_TUI_SERVER_REQUEST_READ_TIMEOUT_S": str(BOUND_S),
            "CODEX_TUI_SERVER_HEARTBEAT_S": "0.5",
        },
    )


def _connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=BOUND_S + SLACK_S)
    return sock


def _read_until_closed(sock: socket.socket, started: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds from
    ``started`` to the close; fails the test when the server keeps it open past the bound
    and the slack."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(
                f"the server still holds the connection {time.monotonic() - started:.1f} s "
                f"after the request began (bound {BOUND_S} s); it sent {data!r}"
            ) from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def test_half_sent_headers_are_closed_within_the_bound(edge_server: LiveServer) -> None:
    with _connect(edge_server) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/js")
        data, took = _read_until_closed(sock, started)
    assert data == b""
    assert took < BOUND_S + SLACK_S


def test_a_silent_connection_is_closed_within_the_bound(edge_server: LiveServer) -> None:
    with _connect(edge_server) as sock:
        data, took = _read_until_closed(sock, time.monotonic())
    assert data == b"" and took < BOUND_S + SLACK_S


def test_half_headers_of_a_second_request_on_a_kept_alive_connection_are_closed(
    edge_server: LiveServer,
) -> None:
    with _connect(edge_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection after {first!r}"
            first += chunk
        assert _parse(first)[0] == 200
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        data, took = _read_until_closed(sock, started)
    assert data == b"" and took < BOUND_S + SLACK_S


def test_a_stalled_body_gets_a_408_problem_and_the_connection_closes(
    edge_server: LiveServer,
) -> None:
    body = json.dumps({"prompt": "never finished", "workdir": str(edge_server.workdir)})
    with _connect(edge_server) as sock:
        started = time.monotonic()
        sock.sendall(
            (
                "POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {edge_server.token}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body[:10]}"
            ).encode()
        )
        raw, took = _read_until_closed(sock, started)
    status, headers, payload = _parse(raw)
    assert status == 408, raw
    assert headers["content-type"].startswith(PROBLEM)
    assert headers["connection"] == "close"
    problem = json.loads(payload)
    assert problem["status"] == 408 and "stalled" in problem["detail"]
    assert took < BOUND_S + SLACK_S
    # Nothing was stored.
    listed = httpx.get(
        f"{edge_server.url}/api/tasks", headers={"Authorization": f"Bearer {edge_server.token}"}
    )
    assert listed.json()["items"] == []


def test_a_too_large_content_length_gets_a_413_problem_before_the_body(
    edge_server: LiveServer,
) -> None:
    size = ServerSettings.model_fields["max_body_bytes"].default + 1
    with _connect(edge_server) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
            + b'{"prompt": "'
        )
        raw, _took = _read_until_closed(sock, started)
    status, headers, payload = _parse(raw)
    assert status == 413, raw
    assert headers["content-type"].startswith(PROBLEM)
    problem = json.loads(payload)
    assert problem["title"] == "Content Too Large"
    assert "CODEX_TUI_SERVER_MAX_BODY_BYTES" in problem["detail"]


def test_streams_and_long_polls_outlast_the_read_bound(edge_server: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {edge_server.token}"}
    with httpx.Client(base_url=edge_server.url, headers=auth, timeout=30) as http:
        task = http.post(
            "/api/tasks", json={"prompt": "wait", "workdir": str(edge_server.workdir)}
        ).json()
        # An event stream of a queued task (no worker): heartbeats for three bounds.
        heartbeats = 0
        started = time.monotonic()
        with http.stream("GET", f"/api/tasks/{task['id']}/events") as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith(":"):
                    heartbeats += 1
                if time.monotonic() - started > 3 * BOUND_S:
                    break
        assert heartbeats >= 2
        # A worker's claim long poll of twice the bound, with a body read first.
        worker = http.post("/api/workers/connect", json={"name": "edge"}).json()
        started = time.monotonic()
        http.post(f"/api/tasks/{task['id']}/cancel")
        polled = http.post(f"/api/workers/{worker['id']}/claim", params={"wait": 2 * BOUND_S})
        assert polled.status_code == 204, polled.text
        assert time.monotonic() - started >= 2 * BOUND_S - 0.5


def test_a_server_off_loopback_warns_about_plain_http_and_open_metrics() -> None:
    plain = ServerSettings(db_url="sqlite:///x.db")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("")  # noqa: S104 - the case tested
    assert exposure_warnings("127.0.0.1", plain) == []
    both = exposure_warnings("0.0.0.0", plain)  # noqa: S104 - the case tested
    assert len(both) == 2
    assert "plain HTTP" in both[0] and "docs/deployment.md" in both[0] and "ssh" in both[0]
    assert "/metrics" in both[1] and "CODEX_TUI_SERVER_METRICS_TOKEN" in both[1]
    behind_tls = ServerSettings(
        db_url="sqlite:///x.db", public_url="https://codex.example.com", metrics_token="m"
    )
    assert exposure_warnings("0.0.0.0", behind_tls) == []  # noqa: S104 - the case tested


def test_a_server_bound_to_every_address_says_so_loudly_at_start(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        local_worker=False,
        server_args=("--host", "0.0.0.0"),  # noqa: S104 - the case tested; reached on loopback
        extra_env={"FORWARDED_ALLOW_IPS": "*"},
    )
    log = str(wait_until(lambda: "WARNING" in server.log() and server.log(), 15, "a warning"))
    assert "listening on 0.0.0.0 in plain HTTP" in log and "SSH tunnel" in log
    assert "GET /metrics is open" in log
    assert "FORWARDED_ALLOW_IPS is ignored" in log
    assert server.token not in log


def test_a_chunked_body_past_the_limit_gets_a_413_problem_and_stores_nothing(
    edge_server: LiveServer,
) -> None:
    # No Content-Length to refuse up front: the body is counted as it is read, and the
    # request is answered as soon as it passes the limit (httpx reads that answer although
    # the server closes the connection before the rest of the body is sent).
    limit = ServerSettings.model_fields["max_body_bytes"].default
    prompt = "x" * (limit + 1)
    body = json.dumps({"prompt": prompt, "workdir": str(edge_server.workdir)}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    response = httpx.post(
        f"{edge_server.url}/api/tasks",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {edge_server.token}",
            "Content-Type": "application/json",
        },
        timeout=BOUND_S + SLACK_S,
    )
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["status"] == 413 and "CODEX_TUI_SERVER_MAX_BODY_BYTES" in problem["detail"]
    listed = httpx.get(
        f"{edge_server.url}/api/tasks", headers={"Authorization": f"Bearer {edge_server.token}"}
    )
    assert listed.json()["items"] == []
