"""Task workspaces over HTTP (issue 15) on a real server process (uvicorn on loopback, a SQLite
file; the diff flow on PostgreSQL too): the test plays a paired worker through the worker
protocol and the owner through the SDK and plain HTTP.

- Submit: ``repo`` and ``ref`` are stored; ``ref`` needs ``repo``, ``repo`` excludes
  ``workdir`` and a ref never reads as an option (422); a repository path meets the workdir
  roots, a URL the server's ``repo_url_schemes``/``repo_url_hosts`` (400 naming the setting;
  git's command transports and credentials always refused, the secret never echoed).
- Workspace report: fenced by the lease (409), only for a task with a repository, at one base
  commit for good (400); the task then shows it ``present``.
- Diff upload and read: fenced by the lease and the task's end (409), only after the report
  and at its base (400); the diff's counts and the task's summary; the patch byte for byte
  (NUL and non-UTF-8 bytes, on SQLite and PostgreSQL); the latest upload wins; a truncated
  diff's patch is a 409 saying to run ``git diff``; an oversized patch is refused whole.
- Workspaces and their removal: only ``present``/``removing`` ones are listed; removal is
  refused while a turn may run (409), idempotent, 404 without a workspace; it wakes the
  worker's signals long poll that is open, rides along in later polls without ending them,
  and the worker's sync orders it and records it ``removed`` once the workspace is gone.
- Retention: a finished task's workspace is ordered removed once it ended longer ago than
  ``workspace_retention_s``; a running or idle one never is; 0 never orders by age.

Long polls are ordered, never slept on: :meth:`Rig.open_poll` watches the server's wake-up
hub (the ``codex_tui_wake_keys`` gauge) to know that a signals poll has read the store and
is waiting, before the test acts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import httpx
import pytest

from server_client.client import ApiError, CodexTuiClient, NotFoundError, redeem_pairing_code
from server_client.models import (
    MAX_PATCH_BYTES,
    Claim,
    DiffUpload,
    FileChange,
    FinishRequest,
    Runtime,
    Signals,
    Task,
    TaskStatus,
    Worker,
    WorkerHello,
    WorkspaceHeld,
    WorkspaceOrders,
    WorkspaceReport,
    WorkspaceState,
    WorkspaceSync,
    utcnow,
)
from server_client.worker.api import WorkerApi
from tests.conftest import LiveServer, ServerFactory, wait_until_async
from tests.server.test_audit import audit_rows

#: Base commits a worker reports (40 hex digits).
BASE = "a" * 40
OTHER_BASE = "b" * 40
#: A label no worker carries: tasks that must stay queued have it.
NOWHERE = "nowhere"
#: A long poll that only a wake-up may cut short (s); the server caps it at the worker's
#: heartbeat.
LONG_POLL_S = 30.0
#: How a worker ends a lease (or a turn).
Ending = Literal[TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.IDLE]
#: Schemes that let file:// URLs in.
WITH_FILE = {"CODEX_TUI_SERVER_REPO_URL_SCHEMES": json.dumps(["https", "ssh", "file"])}

#: A patch as ``git diff --binary`` writes it: text, a binary part with a NUL byte and bytes
#: that are not UTF-8 (kept exactly, never decoded).
PATCH = (
    b"diff --git a/notes.txt b/notes.txt\n"
    b"--- a/notes.txt\n+++ b/notes.txt\n@@ -1,2 +1,4 @@\n-old\n+new\n+caf\xc3\xa9\n+more\n"
    b"diff --git a/logo.png b/logo.png\nGIT binary patch\nliteral 4\n"
    b"\x00\xff\xfe\x80 latin-1 \xe9t\xe9\r\n\n"
)
PATCH_FILES = [
    FileChange(path="notes.txt", added=3, removed=1),
    FileChange(path="logo.png"),  # binary: no line counts
]
#: A later diff of the same workspace (it replaces the first).
PATCH2 = b"diff --git a/notes.txt b/notes.txt\n@@ -1 +1 @@\n-old\n+newer \xff\n"
PATCH2_FILES = [FileChange(path="notes.txt", added=1, removed=1)]


def workspace_path(task_id: str) -> str:
    """Where the test's worker says a task's workspace is."""
    return f"/var/lib/codex-tui/workspaces/{task_id}"


def detail(response: httpx.Response) -> str:
    """The problem detail of a refusal."""
    value = response.json().get("detail")
    assert isinstance(value, str), response.text
    return value


@dataclass
class Rig:
    """One server's owner (SDK and plain HTTP with the user token) and a worker paired to
    them (its protocol calls with the worker token), for the test to drive step by step."""

    server: LiveServer
    client: CodexTuiClient
    http: httpx.AsyncClient
    api: WorkerApi
    worker_http: httpx.AsyncClient
    #: Synchronous calls, for the conditions of :func:`wait_until_async`.
    sync_http: httpx.Client
    worker: Worker
    worker_token: str

    # ---------------------------------------------------------------- the owner

    async def submit(self, **body: Any) -> httpx.Response:
        """``POST /api/tasks`` with ``body`` (the prompt given unless ``body`` has one)."""
        return await self.http.post("/api/tasks", json={"prompt": "change things", **body})

    async def start(self, repo: str | None) -> Claim:
        """Submit a task on ``repo`` (None: no repository) and have the worker claim it."""
        task = await self.client.create_task("change things", repo=repo)
        claim = await self.api.claim(self.worker.id, 5)
        assert claim is not None and claim.task.id == task.id, claim
        return claim

    def wake_keys(self) -> float:
        """Keys in the server's wake-up hub now (``codex_tui_wake_keys``)."""
        text = self.sync_http.get("/metrics").text
        [line] = [x for x in text.splitlines() if x.startswith("codex_tui_wake_keys ")]
        return float(line.split()[1])

    async def wake_signals(self) -> None:
        """Wake the owner's signals long polls with nothing for them: a task queued for no
        worker is cancelled (which notifies the owner's cancel key)."""
        spare = await self.client.create_task("spare", labels=[NOWHERE])
        assert (await self.client.cancel_task(spare.id)).status is TaskStatus.CANCELED

    async def open_poll(self, task_ids: list[str]) -> asyncio.Task[Signals]:
        """A signals long poll of :data:`LONG_POLL_S` that has read the store at least once
        and is waiting (or has returned, which the caller then sees).

        The poll takes the owner's cancel key *before* its first read and again only after a
        wake-up ended its wait, so once a wake-up with nothing for it has popped the key, the
        key's return means the poll's first round (what it saw when it started) is done.
        """
        await self.wake_signals()  # drops a key a poll that returned left behind
        before = self.wake_keys()
        poll = asyncio.create_task(self.api.signals(self.worker.id, task_ids, LONG_POLL_S))
        await wait_until_async(
            lambda: poll.done() or self.wake_keys() > before, what="the poll to take its key"
        )
        await self.wake_signals()
        await wait_until_async(
            lambda: poll.done() or self.wake_keys() > before,
            what="the poll to wait again after a wake-up with nothing for it",
        )
        return poll

    # ---------------------------------------------------------------- the worker

    async def report(self, claim: Claim, base: str = BASE) -> Task:
        """Report the claimed task's workspace at ``base``."""
        body = WorkspaceReport(
            lease_id=claim.lease_id, path=workspace_path(claim.task.id), base_commit=base
        )
        return await self.api.report_workspace(self.worker.id, claim.task.id, body)

    async def upload(
        self,
        claim: Claim,
        patch: bytes,
        files: list[FileChange],
        *,
        base: str = BASE,
        lease_id: str | None = None,
        truncated: bool = False,
    ) -> None:
        """Upload the claimed task's diff (``patch`` raw; the model takes it base64-encoded)."""
        body = DiffUpload(
            lease_id=lease_id or claim.lease_id,
            base_commit=base,
            files=files,
            patch=base64.b64encode(patch),
            truncated=truncated,
        )
        await self.api.upload_diff(self.worker.id, claim.task.id, body)

    async def end(self, claim: Claim, status: Ending = TaskStatus.COMPLETED) -> Task:
        """Finish the claimed task (or, ``idle``, its turn); it uploaded no events."""
        body = FinishRequest(lease_id=claim.lease_id, status=status, event_count=0)
        return await self.api.finish(self.worker.id, claim.task.id, body)

    async def sync(self, held: dict[str, int]) -> WorkspaceOrders:
        """Sync the workspaces ``held`` (task id: bytes)."""
        return await self.api.sync_workspaces(self.worker.id, _held(held))

    def sync_now(self, held: dict[str, int]) -> WorkspaceOrders:
        """:meth:`sync`, synchronously (for a :func:`wait_until_async` condition)."""
        response = self.sync_http.post(
            f"/api/workers/{self.worker.id}/workspaces",
            content=_held(held).model_dump_json(),
            headers={
                "Authorization": f"Bearer {self.worker_token}",
                "Content-Type": "application/json",
            },
        )
        assert response.status_code == 200, response.text
        return WorkspaceOrders.model_validate_json(response.content)


def _held(held: dict[str, int]) -> WorkspaceSync:
    return WorkspaceSync(
        workspaces=[
            WorkspaceHeld(task_id=task_id, path=workspace_path(task_id), bytes=size)
            for task_id, size in held.items()
        ]
    )


@asynccontextmanager
async def rig(server: LiveServer, *, name: str = "box") -> AsyncIterator[Rig]:
    """The server's local user with a worker paired and connected as ``name`` (app-server
    runtime, so its tasks can end a turn idle; the server's roots only)."""
    auth = {"Authorization": f"Bearer {server.token}"}
    http = httpx.AsyncClient(base_url=server.url, headers=auth, timeout=30)
    code = (await http.post("/api/pairing-codes")).json()["code"]
    paired = await redeem_pairing_code(server.url, code, name=name)
    worker_auth = {"Authorization": f"Bearer {paired.token}"}
    api = WorkerApi(server.url, paired.token)
    made = Rig(
        server=server,
        client=CodexTuiClient(server.url, server.token),
        http=http,
        api=api,
        worker_http=httpx.AsyncClient(base_url=server.url, headers=worker_auth, timeout=30),
        sync_http=httpx.Client(base_url=server.url, timeout=30),
        worker=await api.connect(WorkerHello(name=name, runtime=Runtime.APP_SERVER)),
        worker_token=paired.token,
    )
    try:
        yield made
    finally:
        await made.client.aclose()
        await made.api.aclose()
        await made.http.aclose()
        await made.worker_http.aclose()
        made.sync_http.close()


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server with default settings and no local worker (the test is the worker)."""
    return server_factory(local_worker=False)


def repo_in(server: LiveServer) -> str:
    """A repository path inside the server's workdir roots."""
    return str(server.workdir / "repo")


# ---------------------------------------------------------------------------- submit


async def test_submit_stores_repo_and_ref_and_refuses_what_cannot_go_together(
    server: LiveServer,
) -> None:
    async with rig(server) as r:
        repo = repo_in(server)
        made = await r.submit(repo=repo + "/./", ref="release/1.2")
        assert made.status_code == 201, made.text
        task = Task.model_validate_json(made.content)
        assert (task.repo, task.ref, task.workdir) == (repo, "release/1.2", None), "normalised"
        assert task.workspace_state is None and task.workspace_path is None
        again = await r.client.get_task(task.id)
        assert (again.repo, again.ref) == (repo, "release/1.2")
        listed = (await r.client.list_tasks()).items
        assert [(t.repo, t.ref) for t in listed if t.id == task.id] == [(repo, "release/1.2")]

        ref_alone = await r.submit(ref="main")
        assert ref_alone.status_code == 422, ref_alone.text
        assert "ref needs repo" in detail(ref_alone)
        both = await r.submit(repo=repo, workdir=str(server.workdir))
        assert both.status_code == 422, both.text
        assert "give workdir or repo, not both" in detail(both)
        for bad_ref in ("-c", "--upload-pack=evil", "two words", "tab\there"):
            refused = await r.submit(repo=repo, ref=bad_ref)
            assert refused.status_code == 422, (bad_ref, refused.text)
            assert "no spaces, no leading '-'" in detail(refused), bad_ref

        outside = await r.submit(repo="/etc/elsewhere")
        assert outside.status_code == 400, outside.text
        roots = str(server.workdir.parent)  # the server's --workdir-root
        assert "/etc/elsewhere" in detail(outside) and roots in detail(outside)
        assert detail(outside).startswith("repo /etc/elsewhere is outside the allowed roots")
        assert "--workdir-root" in detail(outside), "it names what changes the roots"


#: (repo URL, expected status, words of the detail) with the default settings.
DEFAULT_URLS: list[tuple[str, int, str]] = [
    ("ext::sh -c x", 400, "git transport (ext::, fd::)"),
    ("fd::3", 400, "git transport"),
    ("https://user:secret@example.com/x.git", 400, "carries credentials"),
    ("ssh://git:secret@example.com/x.git", 400, "carries credentials"),
    ("https://secret@example.com/x.git", 400, "carries credentials"),
    ("http://example.com/x.git", 400, "CODEX_TUI_SERVER_REPO_URL_SCHEMES"),
    ("file:///srv/git/x.git", 400, "CODEX_TUI_SERVER_REPO_URL_SCHEMES"),
    ("git://example.com/x.git", 400, "scheme 'git' is not allowed"),
    ("relative/repo", 400, "neither a URL nor a local repository path"),
    ("-uhttps://example.com/x.git", 400, "starts with '-'"),
    ("https://example.com/o/r.git", 201, ""),
    ("ssh://git@example.com/o/r.git", 201, ""),
    ("git@github.com:o/r.git", 201, ""),  # scp-like: ssh
]


async def test_repo_urls_meet_the_default_policy(server: LiveServer) -> None:
    async with rig(server) as r:
        for url, status, words in DEFAULT_URLS:
            response = await r.submit(repo=url)
            assert response.status_code == status, (url, response.text)
            if status == 201:
                assert Task.model_validate_json(response.content).repo == url
                continue
            assert words in detail(response), (url, detail(response))
            assert detail(response).startswith("repo: "), url
            assert "secret" not in response.text, f"{url}: the secret was echoed"


async def test_repo_urls_meet_the_configured_schemes_and_hosts(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        local_worker=False,
        extra_env={**WITH_FILE, "CODEX_TUI_SERVER_REPO_URL_HOSTS": json.dumps(["github.com"])},
    )
    async with rig(server) as r:
        for url in (
            "file:///srv/git/x.git",  # no host to check
            "https://github.com/o/r.git",
            "https://GitHub.com/o/r.git",
            "git@github.com:o/r.git",
        ):
            response = await r.submit(repo=url, ref="main")
            assert response.status_code == 201, (url, response.text)
            assert Task.model_validate_json(response.content).ref == "main"
        for url in ("https://gitlab.com/o/r.git", "git@gitlab.com:o/r.git"):
            response = await r.submit(repo=url)
            assert response.status_code == 400, (url, response.text)
            assert "host 'gitlab.com' is not allowed" in detail(response)
            assert "CODEX_TUI_SERVER_REPO_URL_HOSTS" in detail(response)
        http = await r.submit(repo="http://github.com/o/r.git")
        assert http.status_code == 400 and "CODEX_TUI_SERVER_REPO_URL_SCHEMES" in detail(http)
        transport = await r.submit(repo="ext::git@github.com:o/r.git")
        assert transport.status_code == 400 and "git transport" in detail(transport)


# ---------------------------------------------------------------------------- workspace report


async def test_the_workspace_report_is_fenced_by_the_lease_and_keeps_its_base(
    server: LiveServer,
) -> None:
    async with rig(server) as r:
        plain = await r.start(None)
        with pytest.raises(ApiError) as no_repo:
            await r.report(plain)
        assert no_repo.value.status == 400
        assert "has no repository" in (no_repo.value.problem.detail or "")
        await r.end(plain)

        claim = await r.start(repo_in(server))
        stranger = claim.model_copy(update={"lease_id": "not-the-lease"})
        with pytest.raises(ApiError) as wrong_lease:
            await r.report(stranger)
        assert wrong_lease.value.status == 409
        assert (await r.client.get_task(claim.task.id)).workspace_state is None

        first = await r.report(claim)
        again = await r.report(claim)  # a worker retrying its report
        for task in (first, again, await r.client.get_task(claim.task.id)):
            assert task.workspace_path == workspace_path(claim.task.id)
            assert task.base_commit == BASE
            assert task.workspace_state is WorkspaceState.PRESENT
            assert task.status is TaskStatus.RUNNING

        with pytest.raises(ApiError) as moved:
            await r.report(claim, OTHER_BASE)
        assert moved.value.status == 400
        assert f"started at {BASE}, not {OTHER_BASE}" in (moved.value.problem.detail or "")
        assert (await r.client.get_task(claim.task.id)).base_commit == BASE

        bad = await r.worker_http.put(
            f"/api/workers/{r.worker.id}/tasks/{claim.task.id}/workspace",
            json={"lease_id": claim.lease_id, "path": "/w", "base_commit": "HEAD"},
        )
        assert bad.status_code == 422, bad.text

        await r.end(claim)

    created = audit_rows(server, "--action", "workspace.create")
    assert [(row["target"], row["detail"]["base_commit"]) for row in created] == [
        (f"task:{claim.task.id}", BASE)
    ], "one audit row per workspace, not per report"


# ---------------------------------------------------------------------------- diff and patch


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> LiveServer:
    """A server without a local worker on SQLite, or on a fresh PostgreSQL database (skipped
    without ``CODEX_TUI_TEST_PG_URL``, see tests/support/pg.py)."""
    db_url = str(request.getfixturevalue("pg_url")) if request.param == "postgresql" else None
    return server_factory(local_worker=False, db_url=db_url)


async def test_the_diff_and_the_patch_round_trip_byte_for_byte(any_db_server: LiveServer) -> None:
    server = any_db_server
    async with rig(server) as r:
        claim = await r.start(repo_in(server))
        task_id = claim.task.id
        diff_path, patch_path = f"/api/tasks/{task_id}/diff", f"/api/tasks/{task_id}/patch"

        with pytest.raises(ApiError) as early:
            await r.upload(claim, PATCH, PATCH_FILES)
        assert early.value.status == 400
        assert "no workspace yet (report it first)" in (early.value.problem.detail or "")
        for path in (diff_path, patch_path):
            none_yet = await r.http.get(path)
            assert none_yet.status_code == 404, none_yet.text
            assert "its worker has not reported one" in detail(none_yet)

        await r.report(claim)
        with pytest.raises(ApiError) as wrong_base:
            await r.upload(claim, PATCH, PATCH_FILES, base=OTHER_BASE)
        assert wrong_base.value.status == 400
        assert f"started at {BASE}, not {OTHER_BASE}" in (wrong_base.value.problem.detail or "")
        with pytest.raises(ApiError) as wrong_lease:
            await r.upload(claim, PATCH, PATCH_FILES, lease_id="not-the-lease")
        assert wrong_lease.value.status == 409
        assert (await r.http.get(diff_path)).status_code == 404, "nothing was kept"

        await r.upload(claim, PATCH, PATCH_FILES)
        diff = await r.client.get_diff(task_id)
        assert diff.task_id == task_id and diff.base_commit == BASE
        assert diff.files == PATCH_FILES
        assert (diff.added, diff.removed) == (3, 1), "the binary file counts 0"
        assert diff.patch_bytes == len(PATCH) and not diff.truncated
        assert not diff.final, "the task still runs"
        task = await r.client.get_task(task_id)
        assert (task.diff_files, task.diff_added, task.diff_removed) == (2, 3, 1)
        assert task.diff_updated_at == diff.updated_at

        patch = await r.http.get(patch_path)
        assert patch.status_code == 200, patch.text
        assert patch.content == PATCH, "the patch comes back byte for byte"
        assert patch.headers["content-type"].split(";")[0] == "text/x-diff"
        assert f'filename="{task_id}.patch"' in patch.headers["content-disposition"]
        assert await r.client.get_patch(task_id) == PATCH

        # The latest upload replaces the one before.
        await r.upload(claim, PATCH2, PATCH2_FILES)
        assert await r.client.get_patch(task_id) == PATCH2
        second = await r.client.get_diff(task_id)
        assert (second.files, second.added, second.removed) == (PATCH2_FILES, 1, 1)
        assert second.patch_bytes == len(PATCH2) and second.updated_at >= diff.updated_at
        task = await r.client.get_task(task_id)
        assert (task.diff_files, task.diff_added, task.diff_removed) == (1, 1, 1)

        # A patch over the limit is refused whole; what was kept stays.
        oversized = {
            "lease_id": claim.lease_id,
            "base_commit": BASE,
            "files": [{"path": "huge.bin"}],
            "patch": base64.b64encode(b"x" * (MAX_PATCH_BYTES + 1)).decode(),
        }
        refused = await r.worker_http.put(
            f"/api/workers/{r.worker.id}/tasks/{task_id}/diff", json=oversized
        )
        assert refused.status_code == 422, refused.text[:500]
        assert "patch" in detail(refused)
        assert await r.client.get_patch(task_id) == PATCH2
        assert (await r.client.get_diff(task_id)).files == PATCH2_FILES
        # The limit is on the patch's bytes, not on its base64 text (a third longer).
        largest = b"\xff" * MAX_PATCH_BYTES
        await r.upload(claim, largest, [FileChange(path="huge.bin")])
        assert await r.client.get_patch(task_id) == largest
        assert patch.headers["content-type"] == "text/x-diff", "no charset: a patch is bytes"

        # A diff too large to keep: its counts only; the patch route says where to read it.
        huge = [FileChange(path="data.csv", added=900_000, removed=2), FileChange(path="b.bin")]
        await r.upload(claim, b"", huge, truncated=True)
        truncated = await r.client.get_diff(task_id)
        assert truncated.truncated and truncated.patch_bytes == 0
        assert (truncated.added, truncated.removed, truncated.files) == (900_000, 2, huge)
        too_large = await r.http.get(patch_path)
        assert too_large.status_code == 409, too_large.text
        words = detail(too_large)
        assert f"`git diff {BASE}`" in words and "too large to keep" in words
        assert f"({workspace_path(task_id)} on {r.worker.name})" in words
        task = await r.client.get_task(task_id)
        assert (task.diff_files, task.diff_added, task.diff_removed) == (2, 900_000, 2)

        await r.upload(claim, PATCH, PATCH_FILES)
        done = await r.end(claim)
        assert done.status is TaskStatus.COMPLETED
        final = await r.client.get_diff(task_id)
        assert final.final and final.files == PATCH_FILES
        with pytest.raises(ApiError) as after_end:
            await r.upload(claim, PATCH2, PATCH2_FILES)
        assert after_end.value.status == 409
        assert await r.client.get_patch(task_id) == PATCH, "an ended task's diff is final"
        # A late workspace report must not bring back a workspace whose removal was asked.
        assert (await r.client.remove_workspace(task_id)).workspace_state is (
            WorkspaceState.REMOVING
        )
        with pytest.raises(ApiError) as late_report:
            await r.report(claim)
        assert late_report.value.status == 409
        assert (await r.client.get_task(task_id)).workspace_state is WorkspaceState.REMOVING

        # A turn that ended idle keeps its final diff too: the lease's reports end with it.
        turn = await r.start(repo_in(server))
        await r.report(turn)
        await r.upload(turn, PATCH, PATCH_FILES)
        assert (await r.end(turn, TaskStatus.IDLE)).status is TaskStatus.IDLE
        for late in (r.upload(turn, PATCH2, PATCH2_FILES), r.report(turn)):
            with pytest.raises(ApiError) as after_idle:
                await late
            assert after_idle.value.status == 409
        assert await r.client.get_patch(turn.task.id) == PATCH

        plain = await r.start(None)
        for path in (f"/api/tasks/{plain.task.id}/diff", f"/api/tasks/{plain.task.id}/patch"):
            no_repo = await r.http.get(path)
            assert no_repo.status_code == 404, no_repo.text
            assert "submit with --repo" in detail(no_repo)
        with pytest.raises(NotFoundError):
            await r.client.get_diff(plain.task.id)


# ---------------------------------------------------------------------------- removal


async def test_workspaces_are_listed_and_removed_through_the_workers_signals_and_sync(
    server: LiveServer,
) -> None:
    async with rig(server) as r:
        running = await r.start(repo_in(server))
        await r.report(running)
        ended = await r.start(repo_in(server))
        await r.report(ended)
        await r.upload(ended, PATCH, PATCH_FILES)
        await r.end(ended)
        plain = await r.start(None)
        await r.end(plain)
        never_claimed = await r.client.create_task("x", repo=repo_in(server), labels=[NOWHERE])
        a, b = running.task.id, ended.task.id

        listed = await r.client.list_workspaces()
        assert [t.id for t in listed] == [b, a], "newest first, only tasks with a workspace"
        assert {t.workspace_state for t in listed} == {WorkspaceState.PRESENT}

        for task_id in (plain.task.id, never_claimed.id, "0000000000aa"):
            missing = await r.http.delete(f"/api/tasks/{task_id}/workspace")
            assert missing.status_code == 404, (task_id, missing.text)
        in_use = await r.http.delete(f"/api/tasks/{a}/workspace")
        assert in_use.status_code == 409, in_use.text
        assert "cancel the task first" in detail(in_use)
        assert (await r.client.get_task(a)).workspace_state is WorkspaceState.PRESENT

        # A removal asked for while the worker's signals poll waits ends that poll.
        assert not (await r.api.signals(r.worker.id, [a], 0)).workspaces
        poll = await r.open_poll([a])
        assert not poll.done(), "nothing was there to end the poll"
        waits_s = min(LONG_POLL_S, r.worker.heartbeat_s)
        asked = time.monotonic()
        removing = await r.client.remove_workspace(b)
        assert removing.workspace_state is WorkspaceState.REMOVING
        signals = await asyncio.wait_for(poll, waits_s + 5)
        took = time.monotonic() - asked
        assert took < waits_s / 2, f"the poll ran its course ({took:.1f} s of {waits_s} s)"
        assert signals.workspaces and signals.cancel == []

        again = await r.http.delete(f"/api/tasks/{b}/workspace")
        assert again.status_code == 202, again.text
        assert again.json()["workspace_state"] == "removing", "idempotent"
        listed = await r.client.list_workspaces()
        assert [(t.id, t.workspace_state) for t in listed] == [
            (b, WorkspaceState.REMOVING),
            (a, WorkspaceState.PRESENT),
        ]

        # A removal pending when a poll starts rides along in it without ending it.
        later = await r.open_poll([a])
        assert not later.done(), "a removal pending before the poll ended it"
        await r.client.cancel_task(a)  # news for the poll
        carried = await asyncio.wait_for(later, waits_s + 5)
        assert carried.cancel == [a] and carried.workspaces

        # The sync: sizes recorded, the removal ordered, then the workspace gone.
        orders = await r.sync({a: 1234, b: 5678, "0000000000aa": 1})
        assert orders.remove == [b], "only the one asked for; unknown tasks are ignored"
        sizes = {t.id: t.workspace_bytes for t in await r.client.list_workspaces()}
        assert sizes == {a: 1234, b: 5678}
        assert (await r.client.get_task(b)).workspace_bytes == 5678

        assert (await r.sync({a: 4321})).remove == []
        gone = await r.client.get_task(b)
        assert (gone.workspace_state, gone.workspace_bytes) == (WorkspaceState.REMOVED, 0)
        assert gone.workspace_path == workspace_path(b), "where it was stays known"
        assert [(t.id, t.workspace_bytes) for t in await r.client.list_workspaces()] == [(a, 4321)]
        assert not (await r.api.signals(r.worker.id, [], 0)).workspaces
        after = await r.client.remove_workspace(b)
        assert after.workspace_state is WorkspaceState.REMOVED, "a removed workspace stays so"
        assert await r.client.get_patch(b) == PATCH, "the server keeps the diff"

        # A workspace recorded removed that the worker still holds (its removal failed).
        assert (await r.sync({a: 4321, b: 10})).remove == [b]
        assert (await r.client.get_task(b)).workspace_state is WorkspaceState.REMOVED

    removals = audit_rows(server, "--action", "workspace.remove")
    assert [row["target"] for row in removals] == [f"task:{b}"], "one request audited"
    gone_rows = audit_rows(server, "--action", "workspace.removed")
    assert [row["detail"]["tasks"] for row in gone_rows] == [[b]]


async def test_an_idle_conversations_workspace_is_removable_until_a_reply_queues_it(
    server: LiveServer,
) -> None:
    async with rig(server) as r:
        talk = await r.start(repo_in(server))
        await r.report(talk)
        await r.upload(talk, PATCH, PATCH_FILES)
        idle = await r.end(talk, TaskStatus.IDLE)
        assert idle.status is TaskStatus.IDLE and idle.finished_at is None
        assert (await r.client.get_diff(talk.task.id)).final, "no turn runs"

        other = await r.start(repo_in(server))
        await r.report(other)
        await r.end(other, TaskStatus.IDLE)
        removing = await r.client.remove_workspace(other.task.id)
        assert removing.workspace_state is WorkspaceState.REMOVING

        await r.client.reply(talk.task.id, "and the tests")
        assert (await r.client.get_task(talk.task.id)).status is TaskStatus.QUEUED
        queued = await r.http.delete(f"/api/tasks/{talk.task.id}/workspace")
        assert queued.status_code == 409, queued.text
        assert "is queued" in detail(queued) and "cancel" in detail(queued)
        assert (await r.client.get_task(talk.task.id)).workspace_state is WorkspaceState.PRESENT


# ---------------------------------------------------------------------------- retention

#: The retention of the test servers that age workspaces (s).
RETENTION_S = 2


async def test_workspaces_of_tasks_that_ended_long_enough_ago_are_ordered_removed(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        local_worker=False,
        extra_env={"CODEX_TUI_SERVER_WORKSPACE_RETENTION_S": str(RETENTION_S)},
    )
    async with rig(server) as r:
        idle = await r.start(repo_in(server))
        await r.report(idle)
        await r.end(idle, TaskStatus.IDLE)  # the oldest turn end
        running = await r.start(repo_in(server))
        await r.report(running)
        ended = await r.start(repo_in(server))
        await r.report(ended)
        finished = await r.end(ended, TaskStatus.FAILED)
        assert finished.finished_at is not None
        held = {idle.task.id: 1, running.task.id: 2, ended.task.id: 3}

        assert (await r.sync(held)).remove == [], "it ended just now"
        seen: list[WorkspaceOrders] = []

        def ordered() -> bool:
            seen.append(r.sync_now(held))
            return bool(seen[-1].remove)

        await wait_until_async(
            ordered, timeout_s=RETENTION_S + 15, what="the ended task's workspace to be ordered"
        )
        orders = seen[-1]
        assert utcnow() - finished.finished_at >= timedelta(seconds=RETENTION_S)
        assert orders.remove == [ended.task.id], "a running or idle task's workspace stays"
        task = await r.client.get_task(ended.task.id)
        assert task.workspace_state is WorkspaceState.PRESENT, "ordered, not yet removed"


async def test_a_retention_of_zero_never_orders_a_removal_by_age(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        local_worker=False, extra_env={"CODEX_TUI_SERVER_WORKSPACE_RETENTION_S": "0"}
    )
    async with rig(server) as r:
        ended = await r.start(repo_in(server))
        await r.report(ended)
        await r.end(ended, TaskStatus.CANCELED)
        assert (await r.sync({ended.task.id: 7})).remove == []
        task = await r.client.get_task(ended.task.id)
        assert (task.workspace_state, task.workspace_bytes) == (WorkspaceState.PRESENT, 7)


def test_module_constants_fit_the_models() -> None:
    """The test's base commits and patches are what the worker protocol takes."""
    for base in (BASE, OTHER_BASE):
        WorkspaceReport(lease_id="l", path="/w", base_commit=base)
    for raw in (PATCH, PATCH2):
        upload = DiffUpload(lease_id="l", base_commit=BASE, patch=base64.b64encode(raw))
        assert upload.patch == raw
    assert b"\x00" in PATCH
    with pytest.raises(UnicodeDecodeError):
        PATCH.decode("utf-8")
