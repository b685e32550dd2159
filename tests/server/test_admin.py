"""Users and tokens (issue 3, docs/reliability.md S2): ``codex-tui admin`` creates users whose token
is shown once, lists users and tokens without ever showing a token, and revokes tokens so that
their very next request fails; the store keeps only SHA-256 hashes of 256-bit random tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import sqlite3
import time

import httpx
import pytest

from server_client.client import ApiError, CodexTuiClient, redeem_pairing_code
from server_client.server.store import hash_token, new_token
from tests.conftest import LiveServer, ServerFactory, wait_until_async

TOKEN_RE = re.compile(r"^ctu_[A-Za-z0-9_-]{43}$")


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    """A server without a local worker."""
    return server_factory(local_worker=False)


def _add_user(server: LiveServer, name: str) -> str:
    added = server.cli("admin", "user", "add", name)
    assert added.returncode == 0, added.stderr
    return added.stdout.strip()


def _tokens(server: LiveServer) -> list[dict[str, object]]:
    listed = server.cli("admin", "token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def _me(server: LiveServer, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/me", headers={"Authorization": f"Bearer {token}"})


def _db_cells(server: LiveServer) -> list[tuple[str, str, str]]:
    """Every cell of every table of the server's SQLite file, as text: (table, column, value)."""
    path = server.home / "data" / "codex-tui.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        cells = []
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from the schema
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                cells += [(table, col, str(value)) for col, value in zip(columns, row, strict=True)]
    return cells


def test_user_add_prints_the_token_once_and_only_its_hash_is_stored(server: LiveServer) -> None:
    added = server.cli("admin", "user", "add", "bob")
    assert added.returncode == 0, added.stderr
    token = added.stdout.removesuffix("\n")
    assert added.stdout == token + "\n" and TOKEN_RE.match(token), added.stdout
    assert "bob" in added.stderr and token not in added.stderr
    me = _me(server, token)
    assert me.status_code == 200 and me.json()["name"] == "bob"

    listed = server.cli("admin", "user", "list")
    assert listed.returncode == 0, listed.stderr
    local = _me(server, server.token).json()["name"]
    users = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert set(users) == {local, "bob"} and users["bob"].endswith("tokens 1")

    rows = _tokens(server)
    assert {r["user"] for r in rows} == {local, "bob"} and all(r["kind"] == "user" for r in rows)
    assert all(isinstance(r["id"], int) for r in rows)
    for shown in (listed.stdout, json.dumps(rows)):
        for secret in (token, server.token, hash_token(token)):
            assert secret not in shown

    dup = server.cli("admin", "user", "add", "bob")
    assert dup.returncode == 1 and "already exists" in dup.stderr and not dup.stdout

    cells = _db_cells(server)
    for secret in (token, server.token):
        assert not [c for c in cells if secret in c[2]], "a token is stored in clear"
        assert ("tokens", "token_hash", hashlib.sha256(secret.encode()).hexdigest()) in cells


async def test_a_revoked_token_fails_on_its_next_request_even_mid_session(
    server: LiveServer,
) -> None:
    token = _add_user(server, "bob")
    bob_id = next(r["id"] for r in _tokens(server) if r["user"] == "bob")
    outcomes: list[tuple[float, float, int]] = []  # (request started, ended, status)
    stop = asyncio.Event()

    async def keep_using(client: CodexTuiClient) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await client.list_tasks(limit=1)
                status = 200
            except ApiError as exc:
                status = exc.status
            outcomes.append((started, time.monotonic(), status))
            await asyncio.sleep(0.02)  # pace, so the CLI below is not starved of CPU

    async with CodexTuiClient(server.url, token) as bob:
        await bob.create_task("bob's task")
        user = asyncio.create_task(keep_using(bob))
        try:
            await wait_until_async(lambda: len(outcomes) >= 5, 10, "some requests")
            revoking = time.monotonic()
            revoked = await asyncio.to_thread(server.cli, "admin", "token", "revoke", str(bob_id))
            revoked_at = time.monotonic()
            await wait_until_async(
                lambda: [o for o in outcomes if o[0] > revoked_at], 10, "a request after it"
            )
        finally:
            stop.set()
            await user
        with pytest.raises(ApiError) as refused:
            await bob.me()  # the same client, on its kept-alive connection
        assert refused.value.status == 401
    assert revoked.returncode == 0 and "revoked 1 token" in revoked.stdout, revoked.stderr
    before = [status for _, ended, status in outcomes if ended < revoking]
    after = [status for started, _, status in outcomes if started > revoked_at]
    assert len(before) >= 5 and set(before) == {200}
    assert after and set(after) == {401}, outcomes[-5:]
    # Once refused, always refused: no request succeeds after the first 401.
    first_401 = next(i for i, o in enumerate(outcomes) if o[2] == 401)
    assert {o[2] for o in outcomes[first_401:]} == {401}

    assert _me(server, server.token).status_code == 200  # other users are untouched


async def test_worker_tokens_are_listed_by_kind_and_revocable(server: LiveServer) -> None:
    async with server.client() as client:
        code = await client.create_pairing_code()
    paired = await redeem_pairing_code(server.url, code.code, name="box-1")
    auth = {"Authorization": f"Bearer {paired.token}"}
    hello = {"name": "box-1"}
    async with httpx.AsyncClient(base_url=server.url, headers=auth) as http:
        assert (await http.post("/api/workers/connect", json=hello)).is_success
    text = server.cli("admin", "token", "list").stdout
    line = next(line for line in text.splitlines() if " worker " in line)
    assert line.split()[2:5] == ["worker", "worker", "box-1"] and line.endswith("active"), text
    assert paired.token not in text and hash_token(paired.token) not in text
    revoked = server.cli("admin", "token", "revoke", line.split()[0])
    assert revoked.returncode == 0 and "revoked 1 token" in revoked.stdout
    async with httpx.AsyncClient(base_url=server.url, headers=auth) as http:
        refused = await http.post("/api/workers/connect", json=hello)
    assert refused.status_code == 401 and paired.token not in refused.text
    assert not [c for c in _db_cells(server) if paired.token in c[2]]


def test_tokens_are_256_bit_random_and_hashed_with_sha256() -> None:
    tokens = [new_token() for _ in range(2000)]
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert TOKEN_RE.match(token), token
        raw = base64.urlsafe_b64decode(token.removeprefix("ctu_") + "=")
        assert len(raw) == 32  # 256 bits >= 128
        assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    # Every position varies: no fixed or counter-like part.
    body = [t.removeprefix("ctu_") for t in tokens]
    assert all(len({b[i] for b in body}) > 32 for i in range(42))
