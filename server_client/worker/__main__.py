"""Provides ``python -m server_client.worker``: the local worker ``codex-tui server`` starts.

Its settings come from the environment (:class:`server_client.worker.settings.WorkerSettings`:
``CODEX_TUI_WORKER_*`` and ``CODEX_TUI_TOKEN``), as the server set them for it.
"""

from __future__ import annotations

import sys

import pydantic

from server_client.worker.main import run_worker
from server_client.worker.settings import WorkerSettings


def main() -> None:
    """Read the settings from the environment and run the worker; exit 2 when they are
    missing or invalid."""
    try:
        settings = WorkerSettings()  # type: ignore[call-arg]  # server and token: environment
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        sys.stderr.write(f"worker settings (CODEX_TUI_WORKER_*, CODEX_TUI_TOKEN): {problems}\n")
        raise SystemExit(2) from None
    run_worker(settings)


if __name__ == "__main__":
    main()
