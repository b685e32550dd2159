"""Provides ``python -m server_client.worker``: the local worker ``codex-tui server`` starts.

Its settings come from the environment: ``CODEX_TUI_WORKER_CONFIG`` (JSON with the fields of
:class:`server_client.worker.agent.WorkerConfig` but the token) and ``CODEX_TUI_TOKEN``.
"""

from __future__ import annotations

import json
import os

from server_client.worker.agent import WorkerConfig
from server_client.worker.main import run_worker


def main() -> None:
    """Read the settings from the environment and run the worker."""
    fields = json.loads(os.environ["CODEX_TUI_WORKER_CONFIG"])
    token = os.environ["CODEX_TUI_TOKEN"]
    run_worker(WorkerConfig(token=token, **fields))


if __name__ == "__main__":
    main()
