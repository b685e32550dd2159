"""Provides codex's own events and items, typed once for every layer (worker, server, SDK,
TUI): :func:`parse_event` and :func:`parse_item` read what codex printed into the models of
:mod:`~server_client.codex.events` and :mod:`~server_client.codex.items`, and
:mod:`~server_client.codex.lines` turns one line of codex's output into what the worker
uploads. Nothing here imports Textual or Rich.

The names below load their module on first use (PEP 562), not with the package: building the
models costs some 15 ms of pydantic work that the TUI's first frame does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server_client.codex.events import CodexError as CodexError
    from server_client.codex.events import CodexEvent as CodexEvent
    from server_client.codex.events import ItemEvent as ItemEvent
    from server_client.codex.events import ItemPhase as ItemPhase
    from server_client.codex.events import ThreadStarted as ThreadStarted
    from server_client.codex.events import TurnCompleted as TurnCompleted
    from server_client.codex.events import TurnFailed as TurnFailed
    from server_client.codex.events import TurnStarted as TurnStarted
    from server_client.codex.events import UnknownEvent as UnknownEvent
    from server_client.codex.events import Usage as Usage
    from server_client.codex.events import event_type as event_type
    from server_client.codex.events import parse_event as parse_event
    from server_client.codex.items import AgentMessage as AgentMessage
    from server_client.codex.items import CommandExecution as CommandExecution
    from server_client.codex.items import ErrorItem as ErrorItem
    from server_client.codex.items import FileChange as FileChange
    from server_client.codex.items import FileUpdate as FileUpdate
    from server_client.codex.items import Item as Item
    from server_client.codex.items import McpToolCall as McpToolCall
    from server_client.codex.items import Reasoning as Reasoning
    from server_client.codex.items import TodoEntry as TodoEntry
    from server_client.codex.items import TodoList as TodoList
    from server_client.codex.items import UnknownItem as UnknownItem
    from server_client.codex.items import UserMessage as UserMessage
    from server_client.codex.items import WebSearch as WebSearch
    from server_client.codex.items import parse_item as parse_item

#: Each public name and the submodule that defines it.
_HOMES = {
    **dict.fromkeys(
        (
            "CodexError",
            "CodexEvent",
            "ItemEvent",
            "ItemPhase",
            "ThreadStarted",
            "TurnCompleted",
            "TurnFailed",
            "TurnStarted",
            "UnknownEvent",
            "Usage",
            "event_type",
            "parse_event",
        ),
        "events",
    ),
    **dict.fromkeys(
        (
            "AgentMessage",
            "CommandExecution",
            "ErrorItem",
            "FileChange",
            "FileUpdate",
            "Item",
            "McpToolCall",
            "Reasoning",
            "TodoEntry",
            "TodoList",
            "UnknownItem",
            "UserMessage",
            "WebSearch",
            "parse_item",
        ),
        "items",
    ),
}

__all__ = [
    "AgentMessage",
    "CodexError",
    "CodexEvent",
    "CommandExecution",
    "ErrorItem",
    "FileChange",
    "FileUpdate",
    "Item",
    "ItemEvent",
    "ItemPhase",
    "McpToolCall",
    "Reasoning",
    "ThreadStarted",
    "TodoEntry",
    "TodoList",
    "TurnCompleted",
    "TurnFailed",
    "TurnStarted",
    "UnknownEvent",
    "UnknownItem",
    "Usage",
    "UserMessage",
    "WebSearch",
    "event_type",
    "parse_event",
    "parse_item",
]


def __getattr__(name: str) -> Any:
    """Load the submodule that defines ``name`` and keep the name here.

    Raises:
        AttributeError: no such name.
    """
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
