"""Server logging (issue 5, docs/reliability.md S7): with ``--log-format json`` every line the
server writes is one JSON object; the access-log line of a request carries the request id the
response returned in ``X-Request-ID``; bearer tokens sent in requests never reach the log."""

from __future__ import annotations

import functools
import json
import secrets

import httpx

from tests.conftest import LiveServer, ServerFactory, wait_until


def _records(server: LiveServer) -> list[dict[str, object]]:
    """The server's log lines, each parsed as JSON (fails on a line that is not)."""
    records = []
    for line in server.log_path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
    return records


def _access_line(server: LiveServer, request_id: str) -> dict[str, object] | None:
    for record in _records(server):
        if record.get("logger") == "uvicorn.access" and record.get("request_id") == request_id:
            return record
    return None


def test_json_log_lines_carry_the_request_id_and_never_a_token(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        local_worker=False, server_args=("--log-format", "json", "--log-level", "info")
    )
    token = server.token
    wrong = "ctu_" + secrets.token_urlsafe(32)

    given = httpx.get(
        f"{server.url}/api/me",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-7f3a.given"},
    )
    assert given.status_code == 200 and given.headers["x-request-id"] == "req-7f3a.given"
    fresh = httpx.get(f"{server.url}/api/tasks", headers={"Authorization": f"Bearer {token}"})
    assert fresh.status_code == 200
    fresh_id = fresh.headers["x-request-id"]
    assert fresh_id and fresh_id != "req-7f3a.given"
    refused = httpx.get(f"{server.url}/api/me", headers={"Authorization": f"Bearer {wrong}"})
    assert refused.status_code == 401
    # A client that puts its token in the URL: the access log shows the query string.
    leaky = httpx.get(
        f"{server.url}/api/tasks",
        params={"access_token": token},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert leaky.status_code == 200

    for response in (given, fresh, refused, leaky):
        request_id = response.headers["x-request-id"]
        line = wait_until(
            functools.partial(_access_line, server, request_id),
            what=f"the access-log line of request {request_id}",
        )
        assert isinstance(line, dict)
        assert line["level"] == "INFO" and line["time"]
        assert f"{response.request.method} {response.request.url.path}" in str(line["message"])
        assert str(response.status_code) in str(line["message"])

    log = server.log_path.read_text()
    for secret in (token, wrong, token[4:], wrong[4:]):
        assert secret not in log
    assert "[redacted]" in log  # the query-string token was there, and was replaced
