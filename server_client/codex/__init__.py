"""Provides codex's own events and items, typed once for every layer (worker, server, SDK,
TUI): :func:`parse_event` and :func:`parse_item` read what codex printed into the models of
:mod:`~server_client.codex.events` and :mod:`~server_client.codex.items`, and
:mod:`~server_client.codex.lines` turns one line of codex's output into what the worker
uploads. Nothing here imports Textual or Rich.

Importing the package loads neither: a name is looked up in :mod:`~server_client.codex.events`
and then :mod:`~server_client.codex.items` on its first use (PEP 562), since building their
models costs some 15 ms of pydantic work that the TUI's first frame does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server_client.codex.events import CodexError as CodexError
    from server_client.codex.events import CodexEvent as CodexEvent
    from server_client.codex.events import DeltaStream as DeltaStream
    from server_client.codex.events import ItemDelta as ItemDelta
    from server_client.codex.events import ItemEvent as ItemEvent
    from server_client.codex.events import ItemPhase as ItemPhase
    from server_client.codex.events import ThreadStarted as ThreadStarted
    from server_client.codex.events import TokenUsage as TokenUsage
    from server_client.codex.events import TurnCompleted as TurnCompleted
    from server_client.codex.events import TurnFailed as TurnFailed
    from server_client.codex.events import TurnInterrupted as TurnInterrupted
    from server_client.codex.events import TurnStarted as TurnStarted
    from server_client.codex.events import UnknownEvent as UnknownEvent
    from server_client.codex.events import Usage as Usage
    from server_client.codex.events import UsageUpdated as UsageUpdated
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

#: Where the names of the package are defined, in the order they are looked up.
_MODULES = ("events", "items")


def __getattr__(name: str) -> Any:
    """The public name ``name`` of the events or items module, loaded on first use and kept.

    Raises:
        AttributeError: neither module defines ``name`` among its public names.
    """
    for module_name in _MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        if name in module.__all__:
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
