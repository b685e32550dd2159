"""Provides ``run_worker``: run a :class:`WorkerAgent` until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from server_client.worker.agent import FatalWorkerError, WorkerAgent, WorkerConfig

log = logging.getLogger(__name__)

#: The settings object ``codex-tui worker`` builds from its flags.
WorkerSettings = WorkerConfig


async def serve(config: WorkerConfig) -> None:
    """Run the agent; SIGTERM/SIGINT stop it (running tasks are cancelled and reported)."""
    agent = WorkerAgent(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    await agent.run()


def run_worker(config: WorkerConfig) -> None:
    """Blocking entry point of ``codex-tui worker``; exits 1 when the server refuses it."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s worker %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        from server_client.worker.runner import become_subreaper

        become_subreaper()
    except ImportError:  # pragma: no cover - older runner without it
        pass
    try:
        asyncio.run(serve(config))
    except FatalWorkerError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
