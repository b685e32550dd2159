"""The conversation verbs of ``codex-tui`` (issue 13) as a person runs them, against a real
server; the test plays the worker: ``submit -a``/``--runtime``, ``approvals``, ``approve``
(once: a second answer is refused naming the first), ``decline --cancel-turn``,
``interrupt``, ``reply`` (refused for exec tasks with the fix), ``ls`` showing waiting and
idle, and ``submit --follow``, ``reply --follow`` and ``logs --follow`` ending at the turn's
end with a line telling how to reply."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from server_client.models import (
    Acks,
    ApprovalDecision,
    ApprovalKind,
    ApprovalRequest,
    FinishRequest,
    Runtime,
    TaskStatus,
    WorkerHello,
)
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory
from tests.server.test_conversations_api import owner


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server without a local worker (the test is the worker)."""
    return server_factory(local_worker=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


async def test_approvals_are_listed_approved_once_and_declined_from_the_cli(
    server: LiveServer,
) -> None:
    task_id = ok(server.cli("submit", "-a", "untrusted", "--runtime", "app-server", "go")).strip()
    async with owner(server) as alice:
        assert (await alice.client.get_task(task_id)).approval_policy.value == "untrusted"
        worker = await alice.worker()
        claim = await alice.claim(worker)
        first = (await alice.ask(worker, claim, "cmd-1")).json()
        diff = "--- a/src/app.py\n+++ b/src/app.py\n@@ -1 +1 @@\n-a\n+b\n"
        body = ApprovalRequest(
            lease_id=claim.lease_id, item_id="fc-1", kind=ApprovalKind.FILE_CHANGE, diff=diff
        )
        path = f"/api/workers/{worker.id}/tasks/{task_id}/approvals"
        second = (await alice.http.post(path, content=body.model_dump_json())).json()

        table = ok(await asyncio.to_thread(server.cli, "approvals")).splitlines()
        assert len(table) == 2
        assert table[0].split()[:3] == [second["id"], task_id, "file_change"]
        assert table[0].endswith("edit src/app.py")
        assert table[1].split()[:3] == [first["id"], task_id, "command"]
        assert table[1].endswith("make deploy")
        listed = ok(await asyncio.to_thread(server.cli, "approvals", "--json")).splitlines()
        assert [json.loads(line)["id"] for line in listed] == [second["id"], first["id"]]
        assert "waiting" in ok(await asyncio.to_thread(server.cli, "ls")).split()

        assert first["id"] in ok(await asyncio.to_thread(server.cli, "approve", first["id"]))
        again = await asyncio.to_thread(server.cli, "approve", first["id"])
        assert again.returncode == 2 and "409" in again.stderr
        assert "already answered: accept by" in again.stderr
        ok(await asyncio.to_thread(server.cli, "decline", "--cancel-turn", second["id"]))
        declined = await alice.client.get_approval(second["id"])
        assert declined.decision is ApprovalDecision.CANCEL
        assert ok(await asyncio.to_thread(server.cli, "approvals")) == ""

        said = ok(await asyncio.to_thread(server.cli, "interrupt", task_id))
        assert "interrupt requested" in said
        signals = await alice.api.signals(worker.id, [task_id], 0)
        assert signals.interrupt == [task_id]
        assert {a.id for a in signals.answers} == {first["id"], second["id"]}
        await alice.idle(worker, claim)
        assert "idle" in ok(await asyncio.to_thread(server.cli, "ls")).split()


async def test_a_reply_to_an_exec_task_is_refused_with_the_fix(server: LiveServer) -> None:
    task_id = ok(server.cli("submit", "--runtime", "exec", "once")).strip()
    refused = server.cli("reply", task_id, "more")
    assert refused.returncode == 2
    assert "409" in refused.stderr and "--runtime app-server" in refused.stderr
    refused = server.cli("submit", "-a", "untrusted", "--runtime", "exec", "x")
    assert refused.returncode == 2 and "needs the app-server runtime" in refused.stderr


async def test_follow_ends_when_the_turn_ends_and_reply_starts_the_next(
    server: LiveServer,
) -> None:
    api = WorkerApi(server.url, server.token)
    try:
        worker = await api.connect(
            WorkerHello(name="w1", workdir_roots=["/"], runtime=Runtime.APP_SERVER)
        )
        submitted = asyncio.create_task(
            asyncio.to_thread(server.cli, "submit", "--follow", "--runtime", "app-server", "hi")
        )
        claim = await api.claim(worker.id, 30)
        assert claim is not None
        body = FinishRequest(lease_id=claim.lease_id, status=TaskStatus.IDLE, event_count=0)
        await api.finish(worker.id, claim.task.id, body)
        done = await asyncio.wait_for(submitted, 60)
        assert ok(done).splitlines()[0] == claim.task.id
        assert f"codex-tui reply {claim.task.id} PROMPT" in done.stderr

        task_id = claim.task.id
        replied = asyncio.create_task(
            asyncio.to_thread(server.cli, "reply", "--follow", "--json", task_id, "and more")
        )
        again = await api.claim(worker.id, 30)
        assert again is not None and [r.prompt for r in again.replies] == ["and more"]
        await api.signals(worker.id, [task_id], 0)
        async with owner(server) as alice:
            await alice.ack(worker, Acks(replies=[again.replies[0].id]))
        body = FinishRequest(lease_id=again.lease_id, status=TaskStatus.IDLE, event_count=0)
        await api.finish(worker.id, task_id, body)
        done = await asyncio.wait_for(replied, 60)
        events = [json.loads(line) for line in ok(done).splitlines()]
        assert events[-1]["data"] == {"status": "idle", "turns": 2}
        assert any(e["data"].get("reply", {}).get("prompt") == "and more" for e in events)

        logs = ok(await asyncio.to_thread(server.cli, "logs", "--follow", "--json", task_id))
        statuses = [json.loads(line)["data"].get("status") for line in logs.splitlines()]
        assert statuses[-1] == "idle" and statuses.count("idle") == 2
    finally:
        await api.aclose()
