"""Provides ``run_worker``: run a :class:`WorkerAgent` until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from server_client.heap import frozen_heap
from server_client.worker.agent import FatalWorkerError, WorkerAgent
from server_client.worker.procs import become_subreaper
from server_client.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (a dependency except on Windows: its
    C event loop takes about a sixth off the worker's CPU per event), else on asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        asyncio.run(main)
        return
    uvloop.run(main)


async def serve(config: WorkerSettings) -> None:
    """Run the agent; SIGTERM/SIGINT stop it (running tasks are cancelled and reported)."""
    agent = WorkerAgent(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    with frozen_heap():  # start-up is done: spare its objects the full collections
        await agent.run()


def run_worker(config: WorkerSettings) -> None:
    """Blocking entry point of ``codex-tui worker``; exits 1 when the server refuses it."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s worker %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    become_subreaper()
    try:
        _run(serve(config))
    except FatalWorkerError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
