"""Provides the keys that hints name: the binding that starts a task, and :func:`key_hint`,
its current key as the footer writes it (after ``[keymap]``).

Imported by widgets and screens alike (no screen, no app), before the first frame.
"""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.binding import Binding

from codex_tui.textual_internals import keymap

__all__ = ["NEW_TASK_ID", "NEW_TASK_KEYS", "key_hint"]

#: The binding that opens the compose screen (the dashboard's), and its keys without a
#: keymap: hints that tell how to start a task name its current key (:func:`key_hint`).
NEW_TASK_ID = "new-task"
NEW_TASK_KEYS = "n,ctrl+n"


def key_hint(app: App[Any], binding_id: str, default: str) -> str:
    """The first key that triggers the binding ``binding_id`` now, written as the footer
    writes it (``^n`` for ctrl+n): the keymap's, or the first of ``default`` (the binding's
    own keys, comma-separated) when the keymap does not name it. For hints such as "Press n
    to start one", which must name the key the user has."""
    mapped = keymap(app).get(binding_id) or default
    keys = [key.strip() for key in mapped.split(",") if key.strip()]
    return app.get_key_display(Binding(keys[0] if keys else default, ""))
