"""Provides the ``codex-tui`` command (:func:`main`), assembled from a module per audience.

- :mod:`~codex_tui.cli.tui`: the group itself; with no subcommand it opens the TUI.
- :mod:`~codex_tui.cli.tasks`: the task verbs (submit, ls, logs, rerun, cancel, pair).
- :mod:`~codex_tui.cli.conversations`: the conversation verbs (reply, interrupt, approvals,
  approve, decline).
- :mod:`~codex_tui.cli.review`: the review verbs of tasks in a workspace (diff, apply,
  branch, workspaces).
- :mod:`~codex_tui.cli.serve`: ``server`` and ``worker``, where both are put together.
- :mod:`~codex_tui.cli.admin`: ``admin``, directly in the server's store.
- :mod:`~codex_tui.cli.common`: what they share (exit codes, connection, choices).

This package is the composition root: the one place in ``codex_tui`` that imports
``server_client.server`` and ``server_client.worker`` (``serve`` and ``admin`` do).

Start-up time: importing the command loads click, :mod:`server_client.enums` and the group
only; a subcommand's module is imported when the subcommand is named, and each command imports
what it uses (the TUI Textual, ``server`` the server, the client verbs the SDK, ...) inside
its callback, so that ``--help`` and the TUI pay for nothing else (tests/test_tui_startup.py
checks it).
"""

from __future__ import annotations

from codex_tui.cli.common import (
    DEFAULT_PORT,
    DEFAULT_SANDBOX,
    EXIT_TASK_NOT_COMPLETED,
    EXIT_USAGE,
    SANDBOXES,
    TASK_STATUSES,
)
from codex_tui.cli.tui import main

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_SANDBOX",
    "EXIT_TASK_NOT_COMPLETED",
    "EXIT_USAGE",
    "SANDBOXES",
    "TASK_STATUSES",
    "main",
]
