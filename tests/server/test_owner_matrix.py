"""Owner scope on every route (issue 3, docs/reliability.md S1, R7): two users, each with tasks and
a paired worker, call every route of the OpenAPI document with the other user's real ids, as a user
and with a worker token. Another owner's task or worker is answered exactly like one that does not
exist (404, ids never leak), list routes never show it, nothing of it changes, and a worker never
claims, writes to or acts as another owner's task or worker.

The walk is driven by a table keyed by (method, path); the test fails when the OpenAPI
document has a route the table does not cover."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from server_client.client import redeem_pairing_code
from server_client.models import (
    EventBatch,
    EventIn,
    EventKind,
    FinishRequest,
    TaskEvents,
    TaskStatus,
    WorkerHello,
    utcnow,
)
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory

#: Ids that exist for nobody (ids are 12 hex digits).
GHOST_TASK = "0000000000aa"
GHOST_WORKER = "0000000000bb"
GHOST_APPROVAL = "0000000000cc"
#: A label no worker has: tasks that must stay queued carry it.
NOWHERE = "nowhere"


@dataclass
class Actor:
    """A user with one paired worker, a running task (whose lease we know) and a queued one."""

    name: str
    user_token: str
    worker_token: str
    worker_id: str
    worker_name: str
    running: str
    lease_id: str
    queued: str
    prompt: str
    approval: str

    def ids(self) -> dict[str, str]:
        """Its ids, for leak checks."""
        return {
            self.running: GHOST_TASK,
            self.queued: GHOST_TASK,
            self.worker_id: GHOST_WORKER,
            self.approval: GHOST_APPROVAL,
        }


@dataclass
class Answer:
    """What a call got back (an event stream's body is not read: it would not end)."""

    method: str
    path: str
    status: int
    text: str

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.text)


class Walk:
    """The walk's HTTP calls, each recorded."""

    def __init__(self, server: LiveServer) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=10)
        self.calls: list[Answer] = []

    def call(
        self,
        token: str | None,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        request = self.http.build_request(
            method, path, json=body, params=params, headers=all_headers
        )
        response = self.http.send(request, stream=True)
        try:
            streaming = response.headers.get("content-type", "").startswith("text/event-stream")
            text = "" if streaming else response.read().decode()
        finally:
            response.close()
        answer = Answer(method, path, response.status_code, text)
        self.calls.append(answer)
        return answer

    def same_as_ghost(
        self,
        token: str,
        method: str,
        template: str,
        real: dict[str, str],
        ghost: dict[str, str],
        expected: int,
        *,
        body: Callable[[dict[str, str]], Any] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Call ``template`` with the other owner's ids and with ids that exist for nobody:
        both answers must be ``expected`` and identical once the ids are swapped."""
        got, nobody = (
            self.call(
                token,
                method,
                template.format(**ids),
                body=body(ids) if body else None,
                params=params,
                headers=headers,
            )
            for ids in (real, ghost)
        )
        where = f"{method} {template} with {real}"
        assert got.status == expected, f"{where}: {got.status} {got.text}"
        assert nobody.status == expected, f"{where} (ghost): {nobody.status} {nobody.text}"
        text = got.text
        for key, value in real.items():
            text = text.replace(value, ghost[key])
        assert text == nobody.text, f"{where}: the answer differs from a missing id's"
        return got


def _no_leak(answer: Answer, other: Actor, *, name_given: bool = False) -> None:
    """The answer shows nothing of ``other``'s (but the worker name, when the call gave it)."""
    secrets = [*other.ids(), other.prompt, other.lease_id, other.worker_token, other.user_token]
    if not name_given:
        secrets.append(other.worker_name)
    for secret in secrets:
        assert secret not in answer.text, f"{answer.method} {answer.path} shows {secret!r}"


# ---------------------------------------------------------------------------- route checks
# Each check calls one route as `me` (user token, then worker token) against `other`.


def meta_health(walk: Walk, me: Actor, other: Actor) -> None:
    for token in (None, me.user_token, me.worker_token):
        response = walk.call(token, "GET", "/healthz")
        assert response.status == 200
        _no_leak(response, other)


def me_route(walk: Walk, me: Actor, other: Actor) -> None:
    response = walk.call(me.user_token, "GET", "/api/me")
    assert response.json()["name"] == me.name
    _no_leak(response, other)
    assert walk.call(me.worker_token, "GET", "/api/me").status == 403


def create_task(walk: Walk, me: Actor, other: Actor) -> None:
    # Runs before the checks below that give `me` workers named like `other`'s.
    walk.same_as_ghost(
        me.user_token,
        "POST",
        "/api/tasks",
        {"name": other.worker_name},
        {"name": "ghost-box"},
        400,
        body=lambda ids: {"prompt": "route me", "worker": ids["name"]},
    )
    mine = walk.call(
        me.user_token, "POST", "/api/tasks", body={"prompt": "mine", "labels": [NOWHERE]}
    )
    assert mine.status == 201
    assert walk.call(me.worker_token, "POST", "/api/tasks", body={"prompt": "x"}).status == 403


def list_tasks(walk: Walk, me: Actor, other: Actor) -> None:
    for params in ({}, {"status": ["queued", "waiting"]}, {"limit": 200}):
        response = walk.call(me.user_token, "GET", "/api/tasks", params=params)
        assert response.status == 200
        listed = {task["id"] for task in response.json()["items"]}
        assert {me.running, me.queued} <= listed
        _no_leak(response, other)
    assert walk.call(me.worker_token, "GET", "/api/tasks").status == 403


def get_task(walk: Walk, me: Actor, other: Actor) -> None:
    for task_id in (other.running, other.queued):
        walk.same_as_ghost(
            me.user_token, "GET", "/api/tasks/{t}", {"t": task_id}, {"t": GHOST_TASK}, 404
        )
        walk.same_as_ghost(
            me.worker_token, "GET", "/api/tasks/{t}", {"t": task_id}, {"t": GHOST_TASK}, 403
        )


def cancel_task(walk: Walk, me: Actor, other: Actor) -> None:
    for task_id in (other.running, other.queued):
        for token, expected in ((me.user_token, 404), (me.worker_token, 403)):
            walk.same_as_ghost(
                token, "POST", "/api/tasks/{t}/cancel", {"t": task_id}, {"t": GHOST_TASK}, expected
            )


def task_events(walk: Walk, me: Actor, other: Actor) -> None:
    variants: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({}, {"Accept": "text/event-stream"}),
        ({}, {"Accept": "text/event-stream", "Last-Event-ID": "1"}),
        ({"after": 0, "limit": 10}, {"Accept": "application/json"}),
    ]
    for task_id in (other.running, other.queued):
        for params, headers in variants:
            for token, expected in ((me.user_token, 404), (me.worker_token, 403)):
                walk.same_as_ghost(
                    token,
                    "GET",
                    "/api/tasks/{t}/events",
                    {"t": task_id},
                    {"t": GHOST_TASK},
                    expected,
                    params=params,
                    headers=headers,
                )


def list_workers(walk: Walk, me: Actor, other: Actor) -> None:
    response = walk.call(me.user_token, "GET", "/api/workers")
    assert response.status == 200
    assert me.worker_id in {worker["id"] for worker in response.json()}
    _no_leak(response, other)
    assert walk.call(me.worker_token, "GET", "/api/workers").status == 403


def revoke_worker(walk: Walk, me: Actor, other: Actor) -> None:
    for token, expected in ((me.user_token, 404), (me.worker_token, 403)):
        walk.same_as_ghost(
            token,
            "DELETE",
            "/api/workers/{w}",
            {"w": other.worker_id},
            {"w": GHOST_WORKER},
            expected,
        )


def claim(walk: Walk, me: Actor, other: Actor) -> None:
    for token in (me.user_token, me.worker_token):
        walk.same_as_ghost(
            token,
            "POST",
            "/api/workers/{w}/claim",
            {"w": other.worker_id},
            {"w": GHOST_WORKER},
            404,
            params={"wait": 0},
        )
    # As itself, a worker finds nothing of the other's (only `me`'s unroutable tasks queue).
    response = walk.call(
        me.worker_token, "POST", f"/api/workers/{me.worker_id}/claim", params={"wait": 0}
    )
    assert response.status == 204


def signals(walk: Walk, me: Actor, other: Actor) -> None:
    for token in (me.user_token, me.worker_token):
        walk.same_as_ghost(
            token,
            "POST",
            "/api/workers/{w}/signals",
            {"w": other.worker_id},
            {"w": GHOST_WORKER},
            404,
            params={"wait": 0},
            body=lambda _ids: {"task_ids": [me.running]},
        )
        # Asking, as itself, about the other's task: it is simply not held (like a ghost).
        answer = walk.same_as_ghost(
            token,
            "POST",
            f"/api/workers/{me.worker_id}/signals",
            {"t": other.running},
            {"t": GHOST_TASK},
            200,
            params={"wait": 0},
            body=lambda ids: {"task_ids": [ids["t"]]},
        )
        assert answer.json() == {
            "cancel": [other.running],
            "interrupt": [],
            "replies": [],
            "answers": [],
            "workspaces": False,
        }


def _worker_write_routes(
    walk: Walk,
    me: Actor,
    other: Actor,
    suffix: str,
    body: Callable[[dict[str, str]], Any],
    method: str = "POST",
) -> None:
    template = "/api/workers/{w}/tasks/{t}/" + suffix
    for token in (me.user_token, me.worker_token):
        # The other's worker and task; `me`'s worker and the other's task; the other's worker
        # and `me`'s task: each with the other's real lease id, each a plain 404.
        for real, ghost in (
            ({"w": other.worker_id, "t": other.running}, {"w": GHOST_WORKER, "t": GHOST_TASK}),
            ({"w": me.worker_id, "t": other.running}, {"w": me.worker_id, "t": GHOST_TASK}),
            ({"w": other.worker_id, "t": me.running}, {"w": GHOST_WORKER, "t": me.running}),
        ):
            walk.same_as_ghost(token, method, template, real, ghost, 404, body=body)


def upload_events(walk: Walk, me: Actor, other: Actor) -> None:
    batch = EventBatch(
        lease_id=other.lease_id,
        first_index=0,
        events=[EventIn(ts=utcnow(), kind=EventKind.STDOUT, data={"line": "injected"})],
    ).model_dump(mode="json")
    _worker_write_routes(walk, me, other, "events", lambda _ids: batch)


def upload_all(walk: Walk, me: Actor, other: Actor) -> None:
    """The worker's upload of every task's events: another owner's worker is a 404 for the
    whole upload; another owner's task in a part of one's own worker's upload is answered as
    a task that does not exist (a 404 problem in that part's answer)."""
    event = EventIn(ts=utcnow(), kind=EventKind.STDOUT, data={"line": "injected"})

    def body(ids: dict[str, str]) -> dict[str, Any]:
        part = TaskEvents(task_id=ids["t"], lease_id=other.lease_id, first_index=0, events=[event])
        return {"tasks": [part.model_dump(mode="json", exclude_none=True)]}

    template = "/api/workers/{w}/events"  # the task ({t}) goes in the body
    for token in (me.user_token, me.worker_token):
        for real, ghost, expected in (
            ({"w": other.worker_id, "t": other.running}, {"w": GHOST_WORKER, "t": GHOST_TASK}, 404),
            ({"w": me.worker_id, "t": other.running}, {"w": me.worker_id, "t": GHOST_TASK}, 200),
            ({"w": other.worker_id, "t": me.running}, {"w": GHOST_WORKER, "t": me.running}, 404),
        ):
            answer = walk.same_as_ghost(token, "POST", template, real, ghost, expected, body=body)
            if expected == 200:
                (part,) = answer.json()["tasks"]
                assert part["problem"]["status"] == 404 and part.get("next_index") is None


def events_of_tasks(walk: Walk, me: Actor, other: Actor) -> None:
    """One stream of several tasks: another owner's task is a 404, as one that does not
    exist, also beside one's own; a worker token is a 403."""
    sse = {"Accept": "text/event-stream"}
    for task_id in (other.running, other.queued):
        for token, expected in ((me.user_token, 404), (me.worker_token, 403)):
            for positions in (["{t}"], ["{t}:1"], [me.running, "{t}"]):
                got, nobody = (
                    walk.call(
                        token,
                        "GET",
                        "/api/events",
                        params={"task": [p.format(t=t) for p in positions]},
                        headers=sse,
                    )
                    for t in (task_id, GHOST_TASK)
                )
                assert got.status == nobody.status == expected, (positions, got.text)
                assert got.text.replace(task_id, GHOST_TASK) == nobody.text


def finish(walk: Walk, me: Actor, other: Actor) -> None:
    body = FinishRequest(
        lease_id=other.lease_id, status=TaskStatus.FAILED, event_count=0, error="hijacked"
    ).model_dump(mode="json")
    _worker_write_routes(walk, me, other, "finish", lambda _ids: body)


def reply(walk: Walk, me: Actor, other: Actor) -> None:
    for task_id in (other.running, other.queued):
        for token, expected in ((me.user_token, 404), (me.worker_token, 403)):
            walk.same_as_ghost(
                token,
                "POST",
                "/api/tasks/{t}/replies",
                {"t": task_id},
                {"t": GHOST_TASK},
                expected,
                body=lambda _ids: {"prompt": "hijack"},
            )


def interrupt(walk: Walk, me: Actor, other: Actor) -> None:
    for task_id in (other.running, other.queued):
        for token, expected in ((me.user_token, 404), (me.worker_token, 403)):
            walk.same_as_ghost(
                token,
                "POST",
                "/api/tasks/{t}/interrupt",
                {"t": task_id},
                {"t": GHOST_TASK},
                expected,
            )


def list_approvals(walk: Walk, me: Actor, other: Actor) -> None:
    for params in ({}, {"state": "pending"}, {"task_id": other.running}):
        response = walk.call(me.user_token, "GET", "/api/approvals", params=params)
        assert response.status == 200
        listed = {approval["id"] for approval in response.json()}
        assert listed == (set() if "task_id" in params else {me.approval})
        _no_leak(response, other)
    assert walk.call(me.worker_token, "GET", "/api/approvals").status == 403


def get_approval(walk: Walk, me: Actor, other: Actor) -> None:
    for token, expected in ((me.user_token, 404), (me.worker_token, 403)):
        walk.same_as_ghost(
            token,
            "GET",
            "/api/approvals/{a}",
            {"a": other.approval},
            {"a": GHOST_APPROVAL},
            expected,
        )


def answer_approval(walk: Walk, me: Actor, other: Actor) -> None:
    for token, expected in ((me.user_token, 404), (me.worker_token, 403)):
        walk.same_as_ghost(
            token,
            "POST",
            "/api/approvals/{a}",
            {"a": other.approval},
            {"a": GHOST_APPROVAL},
            expected,
            body=lambda _ids: {"decision": "accept"},
        )


def request_approval(walk: Walk, me: Actor, other: Actor) -> None:
    body = {"lease_id": other.lease_id, "item_id": "hijack", "kind": "command", "command": "x"}
    _worker_write_routes(walk, me, other, "approvals", lambda _ids: body)


def acks(walk: Walk, me: Actor, other: Actor) -> None:
    for token in (me.user_token, me.worker_token):
        walk.same_as_ghost(
            token,
            "POST",
            "/api/workers/{w}/acks",
            {"w": other.worker_id},
            {"w": GHOST_WORKER},
            404,
            body=lambda _ids: {"approvals": [me.approval]},
        )
        # As itself, acknowledging the other's approval changes nothing (checked after).
        walk.same_as_ghost(
            token,
            "POST",
            f"/api/workers/{me.worker_id}/acks",
            {"a": other.approval},
            {"a": GHOST_APPROVAL},
            204,
            body=lambda ids: {"approvals": [ids["a"]], "replies": [ids["a"]]},
        )


def connect(walk: Walk, me: Actor, other: Actor) -> None:
    # A user token registers a worker by name: the other's name makes `me` a worker of its own.
    made = walk.call(
        me.user_token, "POST", "/api/workers/connect", body={"name": other.worker_name}
    )
    assert made.status == 200 and made.json()["id"] != other.worker_id
    _no_leak(made, other, name_given=True)
    # A worker token updates only its own worker, whatever name it gives. (Not `me`'s main
    # worker: a connect starts a new worker process, which ends the runs of its old one.)
    code = walk.call(me.user_token, "POST", "/api/pairing-codes").json()["code"]
    spare = walk.call(None, "POST", "/api/pair", body={"code": code, "name": f"{me.name}-spare"})
    assert spare.status == 200
    same = walk.call(
        spare.json()["token"],
        "POST",
        "/api/workers/connect",
        body={"name": other.worker_name, "workdir_roots": ["/srv"]},
    )
    assert same.status == 200 and same.json()["id"] == spare.json()["worker"]["id"]
    assert same.json()["name"] == f"{me.name}-spare"
    _no_leak(same, other)


def create_pairing_code(walk: Walk, me: Actor, other: Actor) -> None:
    assert walk.call(me.worker_token, "POST", "/api/pairing-codes").status == 403
    made = walk.call(me.user_token, "POST", "/api/pairing-codes")
    assert made.status == 201
    # Redeemed under the other's worker name, it pairs a worker of `me`'s: the other's worker
    # and its token are untouched (checked after the walk).
    paired = walk.call(
        None, "POST", "/api/pair", body={"code": made.json()["code"], "name": other.worker_name}
    )
    assert paired.status == 200 and paired.json()["worker"]["id"] != other.worker_id
    _no_leak(paired, other, name_given=True)


def pair(walk: Walk, me: Actor, other: Actor) -> None:
    for token in (None, me.user_token, me.worker_token):
        refused = walk.call(token, "POST", "/api/pair", body={"code": "0000-0000", "name": "x"})
        assert refused.status == 400
        _no_leak(refused, other)


def _task_read(walk: Walk, me: Actor, other: Actor, method: str, suffix: str) -> None:
    """A user route of one task: the other's task answers as a missing one; a worker token
    is refused."""
    for task_id in (other.running, other.queued):
        for token, expected in ((me.user_token, 404), (me.worker_token, 403)):
            walk.same_as_ghost(
                token,
                method,
                "/api/tasks/{t}/" + suffix,
                {"t": task_id},
                {"t": GHOST_TASK},
                expected,
            )


def get_diff(walk: Walk, me: Actor, other: Actor) -> None:
    _task_read(walk, me, other, "GET", "diff")


def get_patch(walk: Walk, me: Actor, other: Actor) -> None:
    _task_read(walk, me, other, "GET", "patch")


def remove_workspace(walk: Walk, me: Actor, other: Actor) -> None:
    _task_read(walk, me, other, "DELETE", "workspace")


def list_workspaces(walk: Walk, me: Actor, other: Actor) -> None:
    response = walk.call(me.user_token, "GET", "/api/workspaces")
    assert response.status == 200 and response.json() == []
    _no_leak(response, other)
    assert walk.call(me.worker_token, "GET", "/api/workspaces").status == 403


def report_workspace(walk: Walk, me: Actor, other: Actor) -> None:
    body = {"lease_id": other.lease_id, "path": "/tmp/hijack", "base_commit": "a" * 40}
    _worker_write_routes(walk, me, other, "workspace", lambda _ids: body, "PUT")


def upload_diff(walk: Walk, me: Actor, other: Actor) -> None:
    body = {"lease_id": other.lease_id, "base_commit": "a" * 40, "files": [], "patch": ""}
    _worker_write_routes(walk, me, other, "diff", lambda _ids: body, "PUT")


def sync_workspaces(walk: Walk, me: Actor, other: Actor) -> None:
    def body(ids: dict[str, str]) -> dict[str, Any]:
        return {"workspaces": [{"task_id": ids["t"], "path": "/tmp/x", "bytes": 1}]}

    for token in (me.user_token, me.worker_token):
        walk.same_as_ghost(
            token,
            "POST",
            "/api/workers/{w}/workspaces",
            {"w": other.worker_id, "t": other.running},
            {"w": GHOST_WORKER, "t": GHOST_TASK},
            404,
            body=body,
        )
        # As itself, naming the other's task: no order about it (and nothing of it changes).
        answer = walk.same_as_ghost(
            token,
            "POST",
            f"/api/workers/{me.worker_id}/workspaces",
            {"t": other.running},
            {"t": GHOST_TASK},
            200,
            body=body,
        )
        assert answer.json() == {"remove": []}


#: Every route of the OpenAPI document and its check, in the order they run.
ROUTES: dict[tuple[str, str], Callable[[Walk, Actor, Actor], None]] = {
    ("get", "/healthz"): meta_health,
    ("get", "/api/me"): me_route,
    ("post", "/api/tasks"): create_task,
    ("get", "/api/tasks"): list_tasks,
    ("get", "/api/tasks/{task_id}"): get_task,
    ("post", "/api/tasks/{task_id}/cancel"): cancel_task,
    ("get", "/api/tasks/{task_id}/events"): task_events,
    ("get", "/api/workers"): list_workers,
    ("delete", "/api/workers/{worker_id}"): revoke_worker,
    ("post", "/api/workers/{worker_id}/claim"): claim,
    ("post", "/api/workers/{worker_id}/signals"): signals,
    ("post", "/api/workers/{worker_id}/tasks/{task_id}/events"): upload_events,
    ("post", "/api/workers/{worker_id}/tasks/{task_id}/finish"): finish,
    ("post", "/api/workers/{worker_id}/events"): upload_all,
    ("get", "/api/events"): events_of_tasks,
    ("post", "/api/tasks/{task_id}/replies"): reply,
    ("post", "/api/tasks/{task_id}/interrupt"): interrupt,
    ("get", "/api/approvals"): list_approvals,
    ("get", "/api/approvals/{approval_id}"): get_approval,
    ("post", "/api/approvals/{approval_id}"): answer_approval,
    ("post", "/api/workers/{worker_id}/tasks/{task_id}/approvals"): request_approval,
    ("post", "/api/workers/{worker_id}/acks"): acks,
    ("get", "/api/tasks/{task_id}/diff"): get_diff,
    ("get", "/api/tasks/{task_id}/patch"): get_patch,
    ("get", "/api/workspaces"): list_workspaces,
    ("delete", "/api/tasks/{task_id}/workspace"): remove_workspace,
    ("put", "/api/workers/{worker_id}/tasks/{task_id}/workspace"): report_workspace,
    ("put", "/api/workers/{worker_id}/tasks/{task_id}/diff"): upload_diff,
    ("post", "/api/workers/{worker_id}/workspaces"): sync_workspaces,
    ("post", "/api/workers/connect"): connect,
    ("post", "/api/pairing-codes"): create_pairing_code,
    ("post", "/api/pair"): pair,
}


# ---------------------------------------------------------------------------- the test


async def _actor(server: LiveServer, name: str, token: str) -> Actor:
    """A user with a paired, connected worker, a task it runs and a task left queued."""
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=auth) as http:
        code = (await http.post("/api/pairing-codes")).json()["code"]
        paired = await redeem_pairing_code(server.url, code, name=f"{name}-box")
        api = WorkerApi(server.url, paired.token)
        try:
            worker = await api.connect(WorkerHello(name=f"{name}-box"))
            prompt = f"{name}'s secret prompt"
            running = (await http.post("/api/tasks", json={"prompt": prompt})).json()["id"]
            claimed = await api.claim(worker.id, 5)
            assert claimed is not None and claimed.task.id == running
            # Codex asks under the lease: an approval of `name`'s (others must not see it).
            ask = {"lease_id": claimed.lease_id, "item_id": "i1", "kind": "command"}
            path = f"/api/workers/{worker.id}/tasks/{running}/approvals"
            auth_worker = {"Authorization": f"Bearer {paired.token}"}
            asked = await http.post(path, json={**ask, "command": prompt}, headers=auth_worker)
            assert asked.status_code == 200, asked.text
            body = {"prompt": prompt, "labels": [NOWHERE]}
            queued = (await http.post("/api/tasks", json=body)).json()["id"]
        finally:
            await api.aclose()
    return Actor(
        name=name,
        user_token=token,
        worker_token=paired.token,
        worker_id=worker.id,
        worker_name=worker.name,
        running=running,
        lease_id=claimed.lease_id,
        queued=queued,
        prompt=prompt,
        approval=asked.json()["id"],
    )


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server without a local worker: the actors' workers only act when told to."""
    return server_factory(local_worker=False)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _tasks(http: httpx.AsyncClient, actor: Actor) -> list[Any]:
    """The actor's two tasks as they read them."""
    return [
        (await http.get(f"/api/tasks/{task_id}", headers=_auth(actor.user_token))).json()
        for task_id in (actor.running, actor.queued)
    ]


async def test_every_route_keeps_each_owners_tasks_and_workers_to_themselves(
    server: LiveServer,
) -> None:
    added = await asyncio.to_thread(server.cli, "admin", "user", "add", "bob")
    assert added.returncode == 0, added.stderr
    async with httpx.AsyncClient(base_url=server.url) as http:
        alice_name = (await http.get("/api/me", headers=_auth(server.token))).json()["name"]
        alice = await _actor(server, alice_name, server.token)
        bob = await _actor(server, "bob", added.stdout.strip())
        before = {actor.name: await _tasks(http, actor) for actor in (alice, bob)}
        spec = (await http.get("/openapi.json")).json()

    documented = {(method, path) for path, methods in spec["paths"].items() for method in methods}
    assert set(ROUTES) == documented, (
        f"routes without an owner-scope check: {sorted(documented - set(ROUTES))}; "
        f"checks for routes that are gone: {sorted(set(ROUTES) - documented)}"
    )

    walk = Walk(server)  # synchronous calls: nothing else runs in this test meanwhile
    try:
        for me, other in ((bob, alice), (alice, bob)):
            for (method, path), check in ROUTES.items():
                first = len(walk.calls)
                check(walk, me, other)
                pattern = re.compile("^" + re.sub(r"\{[a-z_]+\}", "[^/]+", path) + "$")
                made = walk.calls[first:]
                assert [c for c in made if c.method == method.upper() and pattern.match(c.path)]
                assert not [c for c in made if c.status >= 500], "a route failed with a 5xx"
    finally:
        walk.http.close()
    assert len(walk.calls) > 150, len(walk.calls)

    async with httpx.AsyncClient(base_url=server.url) as http:
        # Nothing of either owner changed: same tasks, same workers, leases and tokens good.
        for actor in (alice, bob):
            auth = _auth(actor.user_token)
            assert await _tasks(http, actor) == before[actor.name], f"{actor.name}'s tasks changed"
            events = await http.get(
                f"/api/tasks/{actor.running}/events",
                headers={**auth, "Accept": "application/json"},
            )
            statuses = [e["data"].get("status") for e in events.json()]
            assert statuses == ["queued", "running", "waiting"]
            approval = await http.get(f"/api/approvals/{actor.approval}", headers=auth)
            assert approval.json()["state"] == "pending"
            listed = (await http.get("/api/workers", headers=auth)).json()
            assert actor.worker_id in {w["id"] for w in listed}
            api = WorkerApi(server.url, actor.worker_token)
            try:
                batch = EventBatch(
                    lease_id=actor.lease_id,
                    first_index=0,
                    events=[EventIn(ts=utcnow(), kind=EventKind.STDOUT, data={"line": "mine"})],
                )
                uploaded = await api.upload(
                    actor.worker_id, actor.running, batch.model_dump_json().encode()
                )
                assert uploaded.next_index == 1
                done = await api.finish(
                    actor.worker_id,
                    actor.running,
                    FinishRequest(
                        lease_id=actor.lease_id, status=TaskStatus.COMPLETED, event_count=1
                    ),
                )
                assert done.status is TaskStatus.COMPLETED
            finally:
                await api.aclose()

        # A worker never claims another owner's task: bob's worker waits, alice's takes it.
        waiting = await http.post(
            "/api/tasks", json={"prompt": "for alice"}, headers=_auth(alice.user_token)
        )
    bob_api = WorkerApi(server.url, bob.worker_token)
    alice_api = WorkerApi(server.url, alice.worker_token)
    try:
        assert await bob_api.claim(bob.worker_id, 1.0) is None
        taken = await alice_api.claim(alice.worker_id, 1.0)
        assert taken is not None and taken.task.id == waiting.json()["id"]
    finally:
        await bob_api.aclose()
        await alice_api.aclose()
