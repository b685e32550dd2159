"""Provides codex's own events and items, typed once for every layer (worker, server, SDK,
TUI): :func:`parse_event` and :func:`parse_item` read what codex printed into the models of
:mod:`~server_client.codex.events` and :mod:`~server_client.codex.items`, and
:mod:`~server_client.codex.lines` turns one line of codex's output into what the worker
uploads. Nothing here imports Textual or Rich.
"""

from __future__ import annotations

from server_client.codex.events import (
    CodexError,
    CodexEvent,
    ItemEvent,
    ItemPhase,
    ThreadStarted,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    UnknownEvent,
    Usage,
    event_type,
    parse_event,
)
from server_client.codex.items import (
    AgentMessage,
    CommandExecution,
    ErrorItem,
    FileChange,
    FileUpdate,
    Item,
    McpToolCall,
    Reasoning,
    TodoEntry,
    TodoList,
    UnknownItem,
    UserMessage,
    WebSearch,
    parse_item,
)

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
