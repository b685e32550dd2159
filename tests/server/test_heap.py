"""Provides tests of the frozen start-up heap (server_client.heap): what start-up built stays out
of the garbage collector's full passes while the server runs, garbage made before is still
collected, and everything is handed back when it stops."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from server_client.heap import frozen_heap
from server_client.server.app import create_app
from server_client.server.settings import ServerSettings


class _Node:
    """A cycle member (only the cyclic collector frees a cycle)."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def test_garbage_made_before_is_collected_and_the_rest_frozen_until_the_end() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gone() is None, "a cycle made before was frozen instead of collected"
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


async def test_the_server_freezes_its_start_up_while_it_runs(tmp_path: Path) -> None:
    app = create_app(ServerSettings(db_url=f"sqlite:///{tmp_path / 'heap.db'}"))
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 1000  # FastAPI, SQLAlchemy, pydantic...
    assert gc.get_freeze_count() == 0
