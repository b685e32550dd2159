"""Provides :func:`frozen_heap`: keep what a long-running process built at start-up out of the
garbage collector's full passes.

CPython's collector walks every tracked object of the oldest generation on a full collection.
A server or worker holds tens of thousands of objects from start-up (FastAPI's routes and
schemas, SQLAlchemy's compiled statements, pydantic's validators, httpx) that live as long as
the process; a full pass over them took 100-150 ms on the 2-core benchmark machine, a stall
every few seconds under load in which no event moved (``benchmarks/``, sustained rate: the
p99 at 6,400 events/s fell from 114 to 24 ms once they were frozen).
:func:`gc.freeze` moves them to the permanent generation, which collections skip (Python
documentation, ``gc.freeze``); objects made later are collected as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["frozen_heap"]


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect what is garbage now, freeze the rest for the duration of the block, and give it
    back to the collector (:func:`gc.unfreeze`) when the block ends.

    Enter it once start-up is done (the TUI does the same in ``codex_tui.app``).
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
