"""The hub's in-memory tail: what a process committed reaches its own streams without a store
read, but only when it continues exactly where a stream stands, and never outlives its
watchers (docs/reliability.md E4)."""

from __future__ import annotations

from datetime import UTC, datetime

from server_client.server.hub import TAIL_EVENTS, Hub
from server_client.server.store import StoredEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _events(*seqs: int) -> list[StoredEvent]:
    return [StoredEvent(seq, T0, "codex", f'{{"n":{seq}}}') for seq in seqs]


def _seqs(events: list[StoredEvent] | None) -> list[int] | None:
    return None if events is None else [e.seq for e in events]


async def test_the_tail_serves_only_what_continues_a_stream() -> None:
    hub = Hub()
    with hub.watch("task:1") as watch:
        wake = watch.current()
        hub.publish("task:1", _events(1, 2, 3))
        assert wake.is_set()
        assert _seqs(watch.tail(0)) == [1, 2, 3]
        assert _seqs(watch.tail(2)) == [3]
        assert watch.tail(3) is None  # nothing newer here: the store may have other writes
        hub.publish("task:1", _events(4))
        assert _seqs(watch.tail(3)) == [4]
        # Seq 5 was written without the tail (e.g. a status event): the tail starts afresh
        # at 6, and a stream at 4 must read 5 from the store.
        hub.publish("task:1", _events(6, 7))
        assert watch.tail(4) is None
        assert _seqs(watch.tail(5)) == [6, 7]


async def test_a_tail_exists_only_while_watched_and_stays_bounded() -> None:
    hub = Hub()
    hub.publish("task:1", _events(1))  # nobody watches: nothing is kept
    with hub.watch("task:1") as watch:
        assert watch.tail(0) is None
        hub.publish("task:1", _events(*range(1, TAIL_EVENTS + 11)))
        assert watch.tail(0) is None  # the first ten fell out: a stream at 0 reads the store
        assert _seqs(watch.tail(10)) == list(range(11, TAIL_EVENTS + 11))
        with hub.watch("task:1") as second:
            assert _seqs(second.tail(TAIL_EVENTS + 9)) == [TAIL_EVENTS + 10]
        assert watch.tail(10) is not None  # one watcher left: the tail stays
    with hub.watch("task:1") as later:
        assert later.tail(10) is None  # the last watcher left: the tail went with it
    assert len(hub) == 0
