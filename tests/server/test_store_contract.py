"""The store's contract, the same on SQLite and on PostgreSQL (issue 5): users and tokens,
task listing and search, claims under a race (R7, R8), idempotent event uploads (R4) with
contiguous seqs (E1), exactly one terminal state under racing finish, cancel, revoke and sweep
(R6), lease fencing (R3), lost leases (R2) and single-use pairing codes (S2).

Every test runs against a real database of each kind, migrated by the server's own Alembic
migrations; the races are real (``asyncio.gather`` over the engine's connection pool, which on
PostgreSQL means concurrent transactions and ``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import select, update

from server_client.models import (
    Claim,
    EventBatch,
    EventIn,
    EventKind,
    FinishRequest,
    PairRequest,
    TaskCreate,
    TaskEvents,
    TaskStatus,
    TurnEnd,
    Worker,
    WorkerHello,
    utcnow,
)
from server_client.server.db import create_engine, migrate, tasks, tokens, workers
from server_client.server.store import (
    Conflict,
    LeaseLost,
    NotFound,
    PairingError,
    Principal,
    Store,
    StoredEvent,
    TokenRevoked,
    User,
    decode_cursor,
    encode_cursor,
)

#: The states a worker may finish a task in.
FinishStatus = Literal[TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED]

TERMINAL = {s.value for s in TaskStatus if s.is_terminal}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A store on ``db_url``, migrated to the newest revision."""
    engine = create_engine(db_url)
    await migrate(engine)
    try:
        store = Store(engine, lease_ttl_s=30.0)
        yield store
        await store.aclose()
    finally:
        await engine.dispose()


async def _worker(store: Store, owner: User, name: str, **hello: Any) -> Worker:
    return await store.connect_worker(owner, WorkerHello(name=name, max_tasks=1000, **hello))


async def _task(store: Store, owner: User, prompt: str = "do it", **body: Any) -> str:
    return (await store.create_task(owner, TaskCreate(prompt=prompt, **body), None)).id


def _batch(lease_id: str, first_index: int, texts: list[str]) -> EventBatch:
    return EventBatch(
        lease_id=lease_id,
        first_index=first_index,
        events=[EventIn(ts=utcnow(), kind=EventKind.CODEX, data={"text": t}) for t in texts],
    )


async def _events(store: Store, owner: User, task_id: str) -> list[StoredEvent]:
    pk, _ = await store.task_pk(owner, task_id)
    return await store.read_events(pk, 0, 100_000)


def _statuses(events: list[StoredEvent]) -> list[str]:
    return [json.loads(e.data)["status"] for e in events if e.kind == EventKind.STATUS]


def _assert_log_sound(events: list[StoredEvent], final: TaskStatus) -> None:
    """E1 and R6 on one task's log: seqs 1..N, exactly one terminal status event, and it is
    the last event and agrees with the task's state."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    terminal = [e for e in events if e.is_terminal]
    assert len(terminal) == 1, _statuses(events)
    assert terminal[0] is events[-1]
    assert _statuses([terminal[0]]) == [final.value]


# ------------------------------------------------------------------ users and tokens


async def test_tokens_are_stored_hashed_authenticate_and_revoke(store: Store) -> None:
    alice = await store.create_user("alice")
    with pytest.raises(Conflict):
        await store.create_user("alice")
    token = await store.issue_token(alice.id)
    other = await store.issue_token(alice.id)

    principal = await store.authenticate(token)
    assert principal is not None and principal.user == alice and principal.kind == "user"
    assert await store.authenticate(token + "x") is None

    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(tokens))).all()
    stored = " ".join(str(value) for row in rows for value in row)
    assert token not in stored and other not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored

    infos = await store.list_tokens(alice)
    first = infos[0]
    assert first.created_at.tzinfo is not None
    assert abs((utcnow() - first.created_at).total_seconds()) < 60
    assert await store.revoke_tokens([first.id]) == 1
    assert await store.revoke_tokens([first.id]) == 0  # rowcount of an UPDATE matching nothing
    assert await store.authenticate(token) is None
    assert await store.authenticate(other) is not None
    revoked = (await store.list_tokens(alice))[0].revoked_at
    assert revoked is not None and revoked.tzinfo is not None
    assert abs((utcnow() - revoked).total_seconds()) < 60
    assert await store.revoke_tokens(user=alice) == 1
    assert await store.authenticate(other) is None


# ------------------------------------------------------------------ create, list, get


async def test_get_and_list_are_scoped_to_the_owner(store: Store) -> None:
    alice = await store.create_user("alice")
    bob = await store.create_user("bob")
    task = await store.create_task(alice, TaskCreate(prompt="hello"), "/tmp")  # noqa: S108
    assert task.status is TaskStatus.QUEUED and task.last_seq == 1
    assert task.created_at.tzinfo == UTC
    assert abs((utcnow() - task.created_at).total_seconds()) < 60
    assert (await store.get_task(alice, task.id)).workdir == "/tmp"  # noqa: S108
    with pytest.raises(NotFound):
        await store.get_task(bob, task.id)
    with pytest.raises(NotFound):
        await store.request_cancel(bob, task.id)
    assert (await store.list_tasks(bob)).items == []


async def test_search_is_literal_and_ignores_case_and_paging_is_complete(store: Store) -> None:
    alice = await store.create_user("alice")
    prompts = [
        "Fix 100% of the bugs",
        "fix 100 of the bugs",
        "rename snake_case names",
        "rename snakeXcase names",
        "path a/b and C:\\dir",
        "FIX the LOGIN page",
        "unrelated",
    ]
    for prompt in prompts:
        await _task(store, alice, prompt)

    async def search(q: str) -> list[str]:
        return [t.prompt for t in (await store.list_tasks(alice, q=q)).items]

    assert await search("100%") == ["Fix 100% of the bugs"]
    assert await search("snake_case") == ["rename snake_case names"]
    assert await search("a/b") == ["path a/b and C:\\dir"]
    assert await search("c:\\DIR") == ["path a/b and C:\\dir"]
    assert await search("%") == ["Fix 100% of the bugs"]
    assert await search("_") == ["rename snake_case names"]
    assert sorted(await search("fix")) == sorted(
        ["Fix 100% of the bugs", "fix 100 of the bugs", "FIX the LOGIN page"]
    )
    assert await search("login") == ["FIX the LOGIN page"]

    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_tasks(alice, cursor=cursor, limit=3)
        assert len(page.items) <= 3
        seen += [t.prompt for t in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(prompts))

    first = await store.list_tasks(alice, q="fix", limit=2)
    assert first.next_cursor is not None
    rest = await store.list_tasks(alice, q="fix", limit=2, cursor=first.next_cursor)
    assert [t.prompt for t in first.items + rest.items] == [
        "FIX the LOGIN page",
        "fix 100 of the bugs",
        "Fix 100% of the bugs",
    ]
    assert rest.next_cursor is None


async def test_a_cursor_past_any_key_is_malformed_not_a_database_error(store: Store) -> None:
    alice = await store.create_user("alice")
    await _task(store, alice)
    with pytest.raises(ValueError, match="cursor"):
        await store.list_tasks(alice, cursor=encode_cursor(2**70))
    assert decode_cursor(encode_cursor(2**63 - 1)) == 2**63 - 1
    assert (await store.list_tasks(alice, cursor=encode_cursor(2**63 - 1))).items


# ------------------------------------------------------------------ claims


async def test_two_owners_race_for_hundreds_of_tasks_each_claimed_once_by_its_owner(
    store: Store,
) -> None:
    owners = [await store.create_user("alice"), await store.create_user("bob")]
    expected: dict[str, str] = {}
    for owner in owners:
        for n in range(150):
            expected[await _task(store, owner, f"{owner.name} {n}")] = owner.id
    fleets = [
        (owner, [await _worker(store, owner, f"{owner.name}-{i}") for i in range(6)])
        for owner in owners
    ]
    claims: list[tuple[str, str, Claim]] = []

    async def drain(owner: User, worker: Worker) -> None:
        while (got := await store.claim(owner, worker)) is not None:
            claims.append((owner.id, worker.id, got))

    await asyncio.gather(*(drain(owner, w) for owner, fleet in fleets for w in fleet))

    counts = Counter(claim.task.id for _, _, claim in claims)
    assert set(counts) == set(expected), "some task was never claimed"
    assert max(counts.values()) == 1, "a task was handed to two workers"
    worker_owner = {w.id: owner.id for owner, fleet in fleets for w in fleet}
    for owner_id, worker_id, claim in claims:
        assert expected[claim.task.id] == owner_id == worker_owner[worker_id]
        assert claim.task.worker_id == worker_id and claim.task.status is TaskStatus.RUNNING
    for owner in owners:
        assert not (await store.list_tasks(owner, statuses=[TaskStatus.QUEUED])).items


async def test_simultaneous_claims_do_not_starve_each_other(store: Store) -> None:
    """N claims at once for N queued tasks all succeed: a claim in flight holds at most the
    one task it takes, so the others are never told "nothing queued" (which would park their
    workers for a whole long poll, R8) while tasks wait."""
    alice = await store.create_user("alice")
    count = 20
    for n in range(count):
        await _task(store, alice, f"task {n}")
    fleet = [await _worker(store, alice, f"w{i}") for i in range(count)]
    got = await asyncio.gather(*(store.claim(alice, w) for w in fleet))
    assert all(claim is not None for claim in got), sum(claim is None for claim in got)
    assert len({claim.task.id for claim in got if claim is not None}) == count


async def test_claims_follow_routing_by_name_and_labels(store: Store) -> None:
    alice = await store.create_user("alice")
    gpu = await _worker(store, alice, "gpu", labels=["gpu"])
    plain = await _worker(store, alice, "plain")
    for_gpu = await _task(store, alice, labels=["gpu"])
    named = await _task(store, alice, worker="gpu")
    assert await store.claim(alice, plain) is None
    first, second = await store.claim(alice, gpu), await store.claim(alice, gpu)
    assert first is not None and second is not None
    assert {first.task.id, second.task.id} == {for_gpu, named}


# ------------------------------------------------------------------ events


async def test_uploads_are_idempotent_by_index_and_a_gap_names_the_next_index(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    worker = await _worker(store, alice, "w")
    task_id = await _task(store, alice)
    claim = await store.claim(alice, worker)
    assert claim is not None
    lease = claim.lease_id

    result, pk, fresh, committed = await store.append_events(
        alice, worker.id, task_id, _batch(lease, 0, ["a", "b"])
    )
    assert result.next_index == 2 and fresh == 2
    again, _, fresh, _ = await store.append_events(
        alice, worker.id, task_id, _batch(lease, 0, ["a", "b"])
    )
    assert again.next_index == 2 and fresh == 0
    overlap, _, fresh, _ = await store.append_events(
        alice, worker.id, task_id, _batch(lease, 1, ["b", "c", "d"])
    )
    assert overlap.next_index == 4 and fresh == 2
    with pytest.raises(Conflict) as gap:
        await store.append_events(alice, worker.id, task_id, _batch(lease, 6, ["g"]))
    assert gap.value.next_index == 4 and not isinstance(gap.value, LeaseLost)

    events = await store.read_events(pk, 0)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    # The rows an append hands to this process's streams are the rows as read back.
    as_read = {e.seq: e.envelope_json() for e in events}
    assert len(committed) == 2
    assert [e.envelope_json() for e in committed] == [as_read[e.seq] for e in committed]
    assert [e.data for e in events[2:]] == [f'{{"text":"{t}"}}' for t in "abcd"]
    assert (await store.get_task(alice, task_id)).last_seq == 6


async def test_concurrent_resent_batches_keep_seqs_contiguous(store: Store) -> None:
    """Retries of overlapping batches for several tasks, all at once: every event is stored
    once, in index order, with seqs 1..N per task (R4, E1)."""
    alice = await store.create_user("alice")
    worker = await _worker(store, alice, "w")
    task_ids = [await _task(store, alice, f"t{n}") for n in range(4)]
    leases: dict[str, str] = {}
    for _ in task_ids:
        claim = await store.claim(alice, worker)
        assert claim is not None
        leases[claim.task.id] = claim.lease_id
    texts = [f"e{i}" for i in range(40)]

    async def upload(task_id: str, start: int, size: int) -> None:
        batch = _batch(leases[task_id], start, texts[start : start + size])
        try:
            await store.append_events(alice, worker.id, task_id, batch)
        except Conflict as exc:  # a gap: the uploader re-sends from next_index
            assert exc.next_index is not None and exc.next_index < start

    for rounds in range(3):
        await asyncio.gather(
            *(
                upload(task_id, start, 7 + rounds)
                for task_id in task_ids
                for start in range(0, 40, 5)
            )
        )
    for task_id in task_ids:  # fill whatever gaps the races left, as the uploader would
        while (await store.get_task(alice, task_id)).last_seq < 2 + 40:
            events = await _events(store, alice, task_id)
            await upload(task_id, len(events) - 2, 40)
        events = await _events(store, alice, task_id)
        assert [e.seq for e in events] == list(range(1, 43))
        assert [e.data for e in events[2:]] == [f'{{"text":"{t}"}}' for t in texts]


async def test_read_events_before_pages_backwards(store: Store) -> None:
    alice = await store.create_user("alice")
    worker = await _worker(store, alice, "w")
    task_id = await _task(store, alice)
    claim = await store.claim(alice, worker)
    assert claim is not None
    _, pk, _, _ = await store.append_events(
        alice, worker.id, task_id, _batch(claim.lease_id, 0, [str(n) for n in range(8)])
    )
    assert [e.seq for e in await store.read_events_before(pk, 8, 3)] == [5, 6, 7]
    assert [e.seq for e in await store.read_events_before(pk, 8, 3, after=5)] == [6, 7]
    assert [e.seq for e in await store.read_events_before(pk, 100, 2)] == [9, 10]
    assert await store.read_events_before(pk, 1, 5) == []
    assert [e.seq for e in await store.read_events(pk, 8, 2)] == [9, 10]
    assert all(e.ts.tzinfo is not None for e in await store.read_events(pk, 0))


async def test_event_reads_past_any_seq_are_empty_not_errors(store: Store) -> None:
    alice = await store.create_user("alice")
    task_id = await _task(store, alice)
    pk, _ = await store.task_pk(alice, task_id)
    assert await store.read_events(pk, 2**40) == []
    assert await store.read_events(pk, 2**70) == []
    assert [e.seq for e in await store.read_events_before(pk, 2**70, 5)] == [1]


# ------------------------------------------------------------------ terminal states


async def test_finish_is_idempotent_and_races_with_cancel_end_in_one_state(store: Store) -> None:
    alice = await store.create_user("alice")
    worker = await _worker(store, alice, "w")
    task_ids = [await _task(store, alice, f"t{n}") for n in range(12)]
    claims = {}
    for _ in task_ids:
        claim = await store.claim(alice, worker)
        assert claim is not None
        claims[claim.task.id] = claim

    async def finish(task_id: str, status: FinishStatus) -> bool:
        body = FinishRequest(lease_id=claims[task_id].lease_id, status=status, event_count=0)
        _, changed = await store.finish(alice, worker.id, task_id, body)
        return changed

    outcomes = await asyncio.gather(
        *(
            asyncio.gather(
                finish(task_id, TaskStatus.COMPLETED),
                store.request_cancel(alice, task_id),
                finish(task_id, TaskStatus.CANCELED),
                store.request_cancel(alice, task_id),
            )
            for task_id in task_ids
        )
    )
    for task_id, (first, _, second, _) in zip(task_ids, outcomes, strict=True):
        assert [first, second].count(True) == 1, "exactly one finish ends the task"
        task = await store.get_task(alice, task_id)
        assert task.status in (TaskStatus.COMPLETED, TaskStatus.CANCELED)
        _assert_log_sound(await _events(store, alice, task_id), task.status)
        assert await finish(task_id, TaskStatus.FAILED) is False  # a retry changes nothing
        assert (await store.get_task(alice, task_id)).status is task.status


async def test_cancel_racing_claim_of_a_queued_task_ends_in_one_state(store: Store) -> None:
    alice = await store.create_user("alice")
    fleet = [await _worker(store, alice, f"w{i}") for i in range(3)]
    task_ids = [await _task(store, alice, f"t{n}") for n in range(15)]
    results = await asyncio.gather(
        *(store.request_cancel(alice, task_id) for task_id in task_ids),
        *(store.claim(alice, w) for w in fleet for _ in range(5)),
    )
    claims = [r for r in results[len(task_ids) :] if r is not None]
    assert all(isinstance(c, Claim) for c in claims)
    claimed = {c.task.id: c for c in claims if isinstance(c, Claim)}
    assert len(claimed) == len(claims), "a task was claimed twice"
    for task_id in task_ids:
        task = await store.get_task(alice, task_id)
        if task_id in claimed:
            assert task.status is TaskStatus.RUNNING and task.cancel_requested
            claim = claimed[task_id]
            assert task.worker_id is not None
            body = FinishRequest(lease_id=claim.lease_id, status=TaskStatus.CANCELED, event_count=0)
            await store.finish(alice, task.worker_id, task_id, body)
            task = await store.get_task(alice, task_id)
        assert task.status is TaskStatus.CANCELED
        _assert_log_sound(await _events(store, alice, task_id), TaskStatus.CANCELED)


async def test_revoke_racing_finish_ends_in_one_state_and_fences_the_worker(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    worker = await _worker(store, alice, "w")
    task_ids = [await _task(store, alice, f"t{n}") for n in range(10)]
    claims = {}
    for _ in task_ids:
        claim = await store.claim(alice, worker)
        assert claim is not None
        claims[claim.task.id] = claim

    async def finish(task_id: str) -> str:
        body = FinishRequest(
            lease_id=claims[task_id].lease_id, status=TaskStatus.COMPLETED, event_count=0
        )
        try:
            await store.finish(alice, worker.id, task_id, body)
        except LeaseLost:
            return "fenced"
        return "finished"

    results = await asyncio.gather(
        *(finish(task_id) for task_id in task_ids), store.revoke_worker(alice, worker.id)
    )
    lost = set(results[-1])
    for task_id, result in zip(task_ids, results[:-1], strict=True):
        task = await store.get_task(alice, task_id)
        if result == "finished":
            assert task.status is TaskStatus.COMPLETED and task_id not in lost
        else:
            assert task.status is TaskStatus.LOST and task_id in lost
        _assert_log_sound(await _events(store, alice, task_id), task.status)


async def test_a_worker_that_lost_its_lease_can_neither_append_nor_finish(store: Store) -> None:
    alice = await store.create_user("alice")
    worker = await _worker(store, alice, "w")
    other = await _worker(store, alice, "other")
    task_id = await _task(store, alice)
    claim = await store.claim(alice, worker)
    assert claim is not None
    lease = claim.lease_id
    with pytest.raises(LeaseLost):
        await store.append_events(alice, other.id, task_id, _batch(lease, 0, ["x"]))
    with pytest.raises(LeaseLost):
        await store.append_events(alice, worker.id, task_id, _batch("not-the-lease", 0, ["x"]))
    await store.append_events(alice, worker.id, task_id, _batch(lease, 0, ["x"]))

    assert await store.end_previous_runs(alice, worker)  # its process restarted
    with pytest.raises(LeaseLost):
        await store.append_events(alice, worker.id, task_id, _batch(lease, 1, ["y"]))
    body = FinishRequest(lease_id=lease, status=TaskStatus.COMPLETED, event_count=1)
    with pytest.raises(LeaseLost):
        await store.finish(alice, worker.id, task_id, body)
    events = await _events(store, alice, task_id)
    _assert_log_sound(events, TaskStatus.LOST)
    assert [e.seq for e in events] == [1, 2, 3, 4]


async def test_an_upload_by_token_checks_token_worker_and_lease_in_its_one_read(
    store: Store,
) -> None:
    alice, bob = await store.create_user("alice"), await store.create_user("bob")
    code, _ = await store.create_pairing_code(alice)
    _, worker, worker_token = await store.redeem_pairing_code(PairRequest(code=code, name="w"))
    other = await _worker(store, alice, "other")
    user_token = await store.issue_token(alice.id)
    bob_token = await store.issue_token(bob.id)
    task_id = await _task(store, alice)
    claim = await store.claim(alice, worker)
    assert claim is not None
    lease = claim.lease_id

    got = await store.append_events_by_token(
        worker_token, worker.id, task_id, _batch(lease, 0, ["a"])
    )
    assert got is not None
    principal, appended = got
    assert principal == Principal(alice, kind="worker", worker_id=worker.id)
    assert appended.result.next_index == 1 and [e.seq for e in appended.events] == [3]
    # The owner's own token may upload as the owner's worker (the local worker does).
    got = await store.append_events_by_token(
        user_token, worker.id, task_id, _batch(lease, 1, ["b"])
    )
    assert got is not None and got[0].kind == "user" and got[1].result.next_index == 2

    with pytest.raises(NotFound):  # a worker token speaks only for its own worker
        await store.append_events_by_token(worker_token, other.id, task_id, _batch(lease, 2, ["x"]))
    with pytest.raises(LeaseLost):
        await store.append_events_by_token(user_token, other.id, task_id, _batch(lease, 2, ["x"]))
    with pytest.raises(LeaseLost):
        await store.append_events_by_token(worker_token, worker.id, task_id, _batch("no", 2, ["x"]))
    for stranger in (user_token + "x", bob_token):  # unknown, or not the task owner's
        assert (
            await store.append_events_by_token(
                stranger, worker.id, task_id, _batch(lease, 2, ["x"])
            )
            is None
        )
    assert await store.revoke_tokens(user=alice) == 2  # a revoked token fails on its next upload
    for revoked in (user_token, worker_token):
        assert (
            await store.append_events_by_token(revoked, worker.id, task_id, _batch(lease, 2, ["x"]))
            is None
        )
    assert [json.loads(e.data).get("text") for e in await _events(store, alice, task_id)][2:] == [
        "a",
        "b",
    ]


def _part(task_id: str, lease_id: str, first: int, texts: list[str], **more: Any) -> TaskEvents:
    return TaskEvents(task_id=task_id, **_batch(lease_id, first, texts).model_dump(), **more)


async def test_a_worker_upload_judges_each_part_alone_in_one_transaction(store: Store) -> None:
    alice, bob = await store.create_user("alice"), await store.create_user("bob")
    token = await store.issue_token(alice.id)
    me = Principal(alice, kind="user", worker_id=None)
    worker = await _worker(store, alice, "w")
    ids = [await _task(store, alice, f"t{n}") for n in range(4)]
    bobs = await _task(store, bob)
    claims = {}
    for _ in ids:
        claim = await store.claim(alice, worker)
        assert claim is not None
        claims[claim.task.id] = claim.lease_id
    done = TurnEnd(status=TaskStatus.COMPLETED, event_count=2, exit_code=0)
    parts = [
        _part(ids[0], claims[ids[0]], 0, ["a", "b"]),
        _part(ids[1], claims[ids[1]], 0, ["c", "d"], finish=done),
        _part(ids[2], "stale", 0, ["x"]),
        _part(ids[3], claims[ids[3]], 5, ["gap"]),
        _part(bobs, "whatever", 0, ["x"]),
    ]
    out = await store.append_uploads(me, token, worker.id, parts)
    got = {r.task_id: r for r in out.results}
    assert [r.task_id for r in out.results] == [p.task_id for p in parts]
    assert got[ids[0]].next_index == 2 and got[ids[0]].problem is None
    assert got[ids[1]].finished is TaskStatus.COMPLETED and got[ids[1]].problem is None
    problems = {t: got[t].problem for t in (ids[2], ids[3], bobs)}
    assert all(problems.values())
    assert [(p.status, p.next_index) for p in problems.values() if p] == [
        (409, None),  # lease lost: final
        (409, 0),  # a gap: resend from index 0
        (404, None),  # not alice's task
    ]
    assert out.fresh == 4
    assert [(t, s) for t, s, _ in out.ended] == [(ids[1], TaskStatus.COMPLETED)]
    published = dict(out.published)
    assert [e.seq for e in published[ids[1]]] == [3, 4, 5] and published[ids[1]][-1].is_terminal
    _assert_log_sound(await _events(store, alice, ids[1]), TaskStatus.COMPLETED)
    assert [json.loads(e.data).get("text") for e in await _events(store, alice, ids[0])][2:] == [
        "a",
        "b",
    ]
    assert len(await _events(store, alice, ids[2])) == 2  # queued, running: nothing appended

    # Resent (a lost answer): nothing is stored twice, the finish is answered again.
    again = await store.append_uploads(me, token, worker.id, parts[:2])
    assert again.fresh == 0 and again.ended == []
    assert again.results[1].finished is TaskStatus.COMPLETED and again.results[1].problem is None
    # A finish that counts events the server does not have says where to resume.
    short = TurnEnd(status=TaskStatus.COMPLETED, event_count=3)
    early = await store.append_uploads(
        me, token, worker.id, [_part(ids[0], claims[ids[0]], 2, [], finish=short)]
    )
    assert early.results[0].problem is not None and early.results[0].problem.next_index == 2

    # Two uploads over the same tasks in opposite orders at once: no deadlock, no gap.
    async def burst(order: list[str], text: str) -> None:
        start = {ids[0]: 2, ids[3]: 0}  # each task's next index before the bursts
        for n in range(10):
            batch = [_part(t, claims[t], start[t] + n, [f"{text}{n}"]) for t in order]
            await store.append_uploads(me, token, worker.id, batch)

    start_count = {ids[0]: 2, ids[3]: 0}
    await asyncio.gather(burst([ids[0], ids[3]], "p"), burst([ids[3], ids[0]], "q"))
    for t in (ids[0], ids[3]):
        stored = await _events(store, alice, t)
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
        # each index once: the two bursts' copies of index n are one event
        assert len([e for e in stored if e.kind == EventKind.CODEX]) == start_count[t] + 10

    with pytest.raises(NotFound):  # a worker that is not alice's
        await store.append_uploads(me, token, (await _worker(store, bob, "b")).id, parts[:1])
    await store.revoke_tokens(user=alice)
    with pytest.raises(TokenRevoked):  # a token revoked since it was cached
        await store.append_uploads(me, token, worker.id, parts[:1])


async def test_sweeps_end_silent_workers_tasks_lost_once_even_when_two_race(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    silent = await _worker(store, alice, "silent")
    alive = await _worker(store, alice, "alive")
    silent_tasks = [await _task(store, alice, f"s{n}") for n in range(5)]
    for _ in silent_tasks:
        assert await store.claim(alice, silent) is not None
    alive_task = await _task(store, alice, "alive")
    assert await store.claim(alice, alive) is not None
    assert await store.sweep_lost() == []

    async with store.engine.begin() as conn:
        await conn.execute(
            update(workers)
            .where(workers.c.id == silent.id)
            .values(last_seen_at=utcnow() - timedelta(seconds=120))
        )
    first, second = await asyncio.gather(store.sweep_lost(), store.sweep_lost())
    ended = first + second
    assert sorted(t for t, _ in ended) == sorted(silent_tasks), "each task ends lost exactly once"
    assert {owner for _, owner in ended} == {alice.id}
    for task_id in silent_tasks:
        task = await store.get_task(alice, task_id)
        assert task.status is TaskStatus.LOST and task.error and "silent" in task.error
        _assert_log_sound(await _events(store, alice, task_id), TaskStatus.LOST)
    assert (await store.get_task(alice, alive_task)).status is TaskStatus.RUNNING
    assert await store.sweep_lost() == []


# ------------------------------------------------------------------ pairing


async def test_a_pairing_code_is_redeemed_once_under_concurrent_redemptions(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    code, expires = await store.create_pairing_code(alice)
    assert expires.tzinfo is not None and expires > utcnow()

    async def redeem(n: int) -> str | None:
        try:
            owner, worker, token = await store.redeem_pairing_code(
                PairRequest(code=code.lower(), name=f"w{n}")
            )
        except PairingError:
            return None
        assert owner == alice
        principal = await store.authenticate(token)
        assert principal is not None and principal.worker_id == worker.id
        return worker.name

    winners = [w for w in await asyncio.gather(*(redeem(n) for n in range(12))) if w]
    assert len(winners) == 1
    assert [w.name for w in await store.list_workers(alice)] == winners

    expired, _ = await store.create_pairing_code(alice, ttl_s=-1)
    with pytest.raises(PairingError):
        await store.redeem_pairing_code(PairRequest(code=expired, name="late"))


async def test_workers_are_scoped_to_their_owner(store: Store) -> None:
    alice = await store.create_user("alice")
    bob = await store.create_user("bob")
    worker = await _worker(store, alice, "w")
    with pytest.raises(NotFound):
        await store.get_worker(bob, worker.id)
    with pytest.raises(NotFound):
        await store.revoke_worker(bob, worker.id)
    await _task(store, bob)
    assert await store.claim(alice, worker) is None
    async with store.engine.connect() as conn:
        owners = (await conn.execute(select(tasks.c.owner_id))).scalars().all()
    assert owners == [bob.id]


async def test_audit_rows_are_written_with_the_change_and_cannot_be_altered(
    store: Store,
) -> None:
    from sqlalchemy import delete
    from sqlalchemy.exc import DBAPIError

    from server_client.server import context
    from server_client.server.db import audit_log

    context.update(request_id="req-1", client_addr="10.0.0.9", actor="user:alice")
    alice = await store.create_user("alice")
    task_id = await _task(store, alice)
    await store.request_cancel(alice, task_id)
    with pytest.raises(NotFound):
        await store.request_cancel(alice, "nope")  # refused: rolled back, no row
    rows = await store.list_audit(owner=alice)
    assert [(r.action, r.target) for r in rows] == [
        ("user.create", "user:alice"),
        ("task.create", f"task:{task_id}"),
        ("task.cancel", f"task:{task_id}"),
    ]
    assert {(r.actor, r.request_id, r.client_addr, r.owner) for r in rows} == {
        ("user:alice", "req-1", "10.0.0.9", "alice")
    }
    assert rows[2].detail == {"changed": True, "was": "queued"}
    assert [r.action for r in await store.list_audit(action="task.cancel")] == ["task.cancel"]
    for statement in (update(audit_log).values(actor="mallory"), delete(audit_log)):
        with pytest.raises(DBAPIError, match="append-only"):
            async with store.engine.begin() as conn:
                await conn.execute(statement)
    assert len(await store.list_audit()) == 3


async def test_two_registrations_of_one_worker_name_at_once_make_one_worker(
    store: Store,
) -> None:
    alice = await store.create_user("alice")
    made = await asyncio.gather(*(_worker(store, alice, "same") for _ in range(8)))
    assert len({w.id for w in made}) == 1
    assert [w.name for w in await store.list_workers(alice)] == ["same"]
