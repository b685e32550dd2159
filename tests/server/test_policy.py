"""Guardrails as server policy (issue 5, docs/reliability.md S5, S6, E6): allowed sandbox modes
(danger-full-access only on workers an admin marked), allowed models, the largest prompt
(413), the largest event (cut with a visible marker), the events-per-task cap."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from server_client.models import TaskStatus, utcnow
from server_client.server.policy import (
    TRUNCATION_MARKER,
    encode_event,
    encoded_size,
    truncate_event,
)
from tests.conftest import LiveServer, ServerFactory, wait_until

MARK = TRUNCATION_MARKER.split("{", 1)[0]  # "…[truncated "


def test_an_event_is_encoded_once_as_stored_and_cut_only_past_the_limit_in_bytes() -> None:
    fits = {"text": "日本" * 100}  # 600 bytes in UTF-8, 200 characters
    exact = len(json.dumps(fits, ensure_ascii=False, separators=(",", ":")).encode())
    assert encode_event(fits, exact) == json.dumps(fits, ensure_ascii=False, separators=(",", ":"))
    cut = encode_event(fits, exact - 1)  # one byte over: counted in bytes, not characters
    assert TRUNCATION_MARKER.split("{")[0] in cut and len(cut.encode()) <= exact - 1
    assert json.loads(cut)["text"].startswith("日本")


# -- truncate_event, on its own ----------------------------------------------------------------


def test_small_event_is_untouched() -> None:
    data = {"type": "item.completed", "item": {"text": "hi"}}
    assert truncate_event(data, 4096) == (data, False)


def test_a_10_mb_string_is_cut_to_the_limit_with_a_marker_and_its_head_kept() -> None:
    text = "é" + "x" * (10 * 1024 * 1024)
    data: dict[str, Any] = {
        "type": "item.completed",
        "item": {"id": "i1", "type": "agent_message", "text": text},
    }
    cut, changed = truncate_event(data, 64 * 1024)
    assert changed
    assert encoded_size(cut) <= 64 * 1024
    assert cut["item"]["id"] == "i1" and cut["type"] == "item.completed"
    kept = cut["item"]["text"]
    assert kept.startswith("éxxx") and MARK in kept
    dropped = int(kept.rsplit("truncated ", 1)[1].split(" ")[0])
    assert dropped == len(text.encode()) - len(kept.split(MARK)[0].encode())
    assert data["item"]["text"] is text  # the input is not modified


def test_several_long_strings_are_all_cut_until_it_fits() -> None:
    data = {"type": "t", "a": "a" * 50_000, "b": ["b" * 40_000, {"c": "c" * 30_000}]}
    cut, changed = truncate_event(data, 8192)
    assert changed and encoded_size(cut) <= 8192
    assert cut["type"] == "t"


def test_multibyte_text_is_cut_on_a_character_boundary() -> None:
    cut, _ = truncate_event({"text": "日本語" * 100_000}, 5000)
    assert encoded_size(cut) <= 5000
    cut["text"].encode("utf-8")  # still valid text


def test_an_event_too_big_without_long_strings_is_replaced_by_a_stub() -> None:
    data = {"type": "weird", "numbers": list(range(100_000))}
    cut, changed = truncate_event(data, 4096)
    assert changed
    assert cut["type"] == "weird" and cut["truncated_bytes"] > 4096


# -- through a real server ---------------------------------------------------------------------


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def strict(server_factory: ServerFactory) -> LiveServer:
    """A server with tight policy and no local worker (the tests pair their own workers)."""
    return server_factory(
        local_worker=False,
        extra_env={
            "CODEX_TUI_SERVER_ALLOWED_SANDBOXES": '["read-only", "danger-full-access"]',
            "CODEX_TUI_SERVER_ALLOWED_MODELS": '["gpt-5-codex"]',
            "CODEX_TUI_SERVER_MAX_PROMPT_BYTES": "1000",
            "CODEX_TUI_SERVER_MAX_EVENT_BYTES": "8192",
            "CODEX_TUI_SERVER_MAX_EVENTS_PER_TASK": "20",
        },
    )


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def _pair_worker(server: LiveServer, name: str) -> tuple[str, str]:
    """A worker registered over HTTP as a paired worker would be; returns (id, token)."""
    code = httpx.post(f"{server.url}/api/pairing-codes", headers=_auth(server.token)).json()
    paired = httpx.post(
        f"{server.url}/api/pair", json={"code": code["code"], "name": name, "hostname": "h"}
    ).json()
    worker_id, token = paired["worker"]["id"], paired["token"]
    hello = {"name": name, "hostname": "h", "workdir_roots": [str(server.workdir)], "max_tasks": 4}
    httpx.post(
        f"{server.url}/api/workers/connect", headers=_auth(token), json=hello
    ).raise_for_status()
    return worker_id, token


def test_prompt_model_and_sandbox_policy(strict: LiveServer) -> None:
    url, user = f"{strict.url}/api/tasks", _auth(strict.token)
    big = _problem(httpx.post(url, headers=user, json={"prompt": "é" * 501}), 413)
    assert "1002 bytes" in big["detail"] and "MAX_PROMPT_BYTES" in big["detail"]
    sandbox = _problem(
        httpx.post(url, headers=user, json={"prompt": "p", "sandbox": "workspace-write"}), 403
    )
    assert "workspace-write" in sandbox["detail"] and "ALLOWED_SANDBOXES" in sandbox["detail"]
    model = _problem(
        httpx.post(
            url, headers=user, json={"prompt": "p", "sandbox": "read-only", "model": "gpt-4o"}
        ),
        403,
    )
    assert "gpt-4o" in model["detail"] and "gpt-5-codex" in model["detail"]
    ok = httpx.post(
        url, headers=user, json={"prompt": "p", "sandbox": "read-only", "model": "gpt-5-codex"}
    )
    assert ok.status_code == 201, ok.text
    # Codex flags are not a thing a task can carry (S5).
    flags = httpx.post(url, headers=user, json={"prompt": "p", "args": ["--yolo"]})
    assert flags.status_code == 422
    listed = httpx.get(url, headers=user).json()["items"]
    assert [t["prompt"] for t in listed] == ["p"]  # nothing refused was stored


def test_danger_full_access_runs_only_on_a_worker_an_admin_marked(strict: LiveServer) -> None:
    url, user = f"{strict.url}/api/tasks", _auth(strict.token)
    plain_id, plain_token = _pair_worker(strict, "plain")
    body = {"prompt": "rm -rf build", "sandbox": "danger-full-access"}
    refused = _problem(httpx.post(url, headers=user, json=body), 403)
    assert "allow-danger" in refused["detail"]

    name = httpx.get(f"{strict.url}/api/me", headers=user).json()["name"]
    done = strict.cli("admin", "worker", "allow-danger", name, "trusted")
    assert done.returncode != 0 and "no worker named 'trusted'" in done.stderr
    trusted_id, trusted_token = _pair_worker(strict, "trusted")
    done = strict.cli("admin", "worker", "allow-danger", name, "trusted")
    assert done.returncode == 0, done.stderr

    routed = _problem(httpx.post(url, headers=user, json=body | {"worker": "plain"}), 403)
    assert "worker plain is not" in routed["detail"]
    task = httpx.post(url, headers=user, json=body)
    assert task.status_code == 201, task.text

    # The unmarked worker is never handed it; the marked one is.
    plain = httpx.post(
        f"{strict.url}/api/workers/{plain_id}/claim",
        headers=_auth(plain_token),
        params={"wait": 0.5},
    )
    assert plain.status_code == 204
    trusted = httpx.post(
        f"{strict.url}/api/workers/{trusted_id}/claim",
        headers=_auth(trusted_token),
        params={"wait": 5},
    )
    assert trusted.status_code == 200 and trusted.json()["task"]["id"] == task.json()["id"]
    workers = {w["name"]: w for w in httpx.get(f"{strict.url}/api/workers", headers=user).json()}
    assert workers["trusted"]["allow_danger"] and not workers["plain"]["allow_danger"]

    done = strict.cli("admin", "worker", "allow-danger", "--revoke", name, "trusted")
    assert done.returncode == 0 and "may no longer" in done.stdout
    _problem(httpx.post(url, headers=user, json=body), 403)


def test_huge_events_are_cut_and_the_event_cap_cancels_the_task(strict: LiveServer) -> None:
    user = _auth(strict.token)
    worker_id, token = _pair_worker(strict, "w")
    created = httpx.post(
        f"{strict.url}/api/tasks", headers=user, json={"prompt": "p", "sandbox": "read-only"}
    ).json()
    claim = httpx.post(
        f"{strict.url}/api/workers/{worker_id}/claim", headers=_auth(token), params={"wait": 5}
    ).json()
    upload = f"{strict.url}/api/workers/{worker_id}/tasks/{created['id']}/events"

    def event(i: int, text: str = "") -> dict[str, Any]:
        item = {"id": f"i{i}", "type": "agent_message", "text": text or f"n{i}"}
        return {"ts": utcnow().isoformat(), "kind": "codex", "data": {"type": "x", "item": item}}

    first = [event(0, "y" * (10 * 1024 * 1024))] + [event(i) for i in range(1, 10)]
    answer = httpx.post(
        upload,
        headers=_auth(token),
        json={"lease_id": claim["lease_id"], "first_index": 0, "events": first},
        timeout=60,
    ).json()
    assert answer == {"next_index": 10, "cancel_requested": False}
    more = [event(i) for i in range(10, 40)]
    answer = httpx.post(
        upload,
        headers=_auth(token),
        json={"lease_id": claim["lease_id"], "first_index": 10, "events": more},
    ).json()
    assert answer == {"next_index": 40, "cancel_requested": True}
    # Later events are dropped, but accepted, so the worker's count stays in step.
    answer = httpx.post(
        upload,
        headers=_auth(token),
        json={"lease_id": claim["lease_id"], "first_index": 40, "events": [event(40)]},
    ).json()
    assert answer == {"next_index": 41, "cancel_requested": True}
    finish = httpx.post(
        f"{strict.url}/api/workers/{worker_id}/tasks/{created['id']}/finish",
        headers=_auth(token),
        json={"lease_id": claim["lease_id"], "status": "canceled", "event_count": 41},
    )
    assert finish.status_code == 200, finish.text

    events = httpx.get(
        f"{strict.url}/api/tasks/{created['id']}/events",
        headers=user | {"Accept": "application/json"},
    ).json()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # E1, no gap
    assert len(events) == 21  # 20 kept (queued, running, 17 codex, the marker), + the end
    huge = events[2]["data"]["item"]["text"]
    assert huge.startswith("yyyy") and MARK in huge
    assert len(json.dumps(events[2]["data"])) <= 8192
    marker = events[-2]
    assert marker["kind"] == "status" and "cap of 20 events" in marker["data"]["reason"]
    assert events[-1]["data"]["status"] == "canceled"
    assert [e["data"]["item"]["id"] for e in events[2:-2]] == [f"i{i}" for i in range(17)]


def test_a_real_worker_stops_a_task_that_hits_the_event_cap(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        fake_mode="slow-burst",
        extra_env={
            "CODEX_TUI_SERVER_MAX_EVENTS_PER_TASK": "30",
            "FAKE_CODEX_EVENTS": "100000",
            "FAKE_CODEX_INTERVAL": "0.01",
        },
    )
    task = httpx.post(
        f"{server.url}/api/tasks",
        headers=_auth(server.token),
        json={"prompt": "talk forever", "workdir": str(server.workdir)},
    ).json()

    def ended() -> bool:
        got = httpx.get(f"{server.url}/api/tasks/{task['id']}", headers=_auth(server.token))
        return TaskStatus(got.json()["status"]).is_terminal

    wait_until(ended, 60, "the capped task to end")
    final = httpx.get(f"{server.url}/api/tasks/{task['id']}", headers=_auth(server.token)).json()
    assert final["status"] == "canceled", server.log()
