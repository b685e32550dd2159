"""Provides codex's items (agent messages, reasoning, commands, file changes, ...) as typed
models, read from either of codex's two dialects.

``codex exec --json`` names items and fields in snake_case (``command_execution`` with
``aggregated_output``, ``exit_code``); ``codex app-server`` in camelCase (``commandExecution``
with ``aggregatedOutput``, ``exitCode``, ``durationMs``) and nests a few values differently
(a file change's ``kind`` is ``{"type": "add"}``, reasoning comes as ``summary`` parts). Both
read into the same models here (docs/codex-facts.md lists the shapes). Models are lenient the
way a reader of codex's output must be: a field of the wrong type reads as its empty value
(``""``, ``None``, ``[]``), never as an error, and an item type this version does not know
becomes :class:`UnknownItem`, which keeps the raw object. :func:`parse_item` never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

__all__ = [
    "AgentMessage",
    "CommandExecution",
    "ErrorItem",
    "FileChange",
    "FileUpdate",
    "Item",
    "ItemStatus",
    "McpToolCall",
    "Reasoning",
    "TodoEntry",
    "TodoList",
    "UnknownItem",
    "UserMessage",
    "WebSearch",
    "parse_item",
    "read_or",
    "snake_case",
]

R = TypeVar("R")

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_case(name: str) -> str:
    """``commandExecution`` → ``command_execution``; snake_case names stay as they are."""
    return _CAMEL.sub(r"_\1", name).lower() if name and not name.islower() else name


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mappings(value: object) -> list[Any]:
    if not isinstance(value, list):
        return []
    return [entry for entry in value if isinstance(entry, Mapping)]


def _status(value: object) -> str:
    """A status word in snake_case (app-server's ``inProgress`` reads ``in_progress``)."""
    return snake_case(value) if isinstance(value, str) else ""


def _message(value: object) -> str:
    """An error's text: a string, or the ``message`` of an object."""
    if isinstance(value, Mapping):
        return _text(value.get("message"))
    return _text(value)


def _command(value: object) -> str:
    """A command line: codex prints a string; anything else shows as compact JSON."""
    if isinstance(value, str) or value is None:
        return value or ""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


#: A string field; any other value reads as ``""``.
Text = Annotated[str, BeforeValidator(_text)]
#: An integer field; booleans and any other value read as None.
OptInt = Annotated[int | None, BeforeValidator(_int_or_none)]
#: A status word, normalised to snake_case.
ItemStatus = Annotated[str, BeforeValidator(_status)]


class _Lenient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)


class _ItemBase(_Lenient):
    """Fields every item has: its id (unique per thread with app-server; ``item_N``,
    restarting in every process, with exec — docs/codex-facts.md)."""

    id: Text = ""


class AgentMessage(_ItemBase):
    """What the agent says to the user (Markdown)."""

    type: Literal["agent_message"] = "agent_message"
    text: Text = ""


def _part_text(part: object) -> str:
    return _text(part.get("text")) if isinstance(part, Mapping) else ""


def _text_from_parts(
    data: Any, field: str, separator: str, text_of: Callable[[object], str]
) -> Any:
    """``data`` with a ``text`` made of the texts of its ``field`` list joined by
    ``separator`` (app-server sends parts where exec sends one ``text``); as it is when it has
    a ``text`` already or no such list."""
    if isinstance(data, Mapping) and "text" not in data:
        parts = data.get(field)
        if isinstance(parts, list):
            return {**data, "text": separator.join(t for t in map(text_of, parts) if t)}
    return data


class UserMessage(_ItemBase):
    """The user's prompt as app-server echoes it at the start of a turn (its ``text``
    parts joined by newlines)."""

    type: Literal["user_message"] = "user_message"
    text: Text = ""

    @model_validator(mode="before")
    @classmethod
    def _join_content(cls, data: Any) -> Any:
        return _text_from_parts(data, "content", "\n", _part_text)


class Reasoning(_ItemBase):
    """The model's reasoning summary (exec: ``text``; app-server: ``summary`` parts)."""

    type: Literal["reasoning"] = "reasoning"
    text: Text = ""

    @model_validator(mode="before")
    @classmethod
    def _join_summary(cls, data: Any) -> Any:
        return _text_from_parts(data, "summary", "\n\n", _text)


class CommandExecution(_ItemBase):
    """A shell command codex runs.

    ``output`` is codex's aggregated stdout and stderr (exec caps it near 1 MiB, eliding the
    middle); ``status`` is ``in_progress``, ``completed``, ``failed`` or ``declined``;
    ``duration_ms`` is only sent by app-server.
    """

    type: Literal["command_execution"] = "command_execution"
    command: Annotated[str, BeforeValidator(_command)] = ""
    cwd: Text = ""
    output: Text = Field(
        default="", validation_alias=AliasChoices("aggregated_output", "aggregatedOutput")
    )
    exit_code: OptInt = Field(default=None, validation_alias=AliasChoices("exit_code", "exitCode"))
    status: ItemStatus = ""
    duration_ms: OptInt = Field(
        default=None, validation_alias=AliasChoices("duration_ms", "durationMs")
    )

    @property
    def running(self) -> bool:
        """True while codex reports the command as running (no status counts as running)."""
        return self.status in ("", "in_progress")


def _change_kind(value: object) -> str:
    if isinstance(value, Mapping):
        value = value.get("type")
    return value if isinstance(value, str) else ""


class FileUpdate(_Lenient):
    """One file of a file change: ``kind`` is ``add``, ``delete`` or ``update``; ``diff`` is
    the change as a unified diff (app-server only)."""

    path: Text = ""
    kind: Annotated[str, BeforeValidator(_change_kind)] = ""
    diff: Text = ""


class FileChange(_ItemBase):
    """Files codex's ``apply_patch`` edited (never shell edits: docs/codex-facts.md)."""

    type: Literal["file_change"] = "file_change"
    changes: Annotated[list[FileUpdate], BeforeValidator(_mappings)] = []
    status: ItemStatus = ""


class McpToolCall(_ItemBase):
    """A call of an MCP server's tool."""

    type: Literal["mcp_tool_call"] = "mcp_tool_call"
    server: Text = ""
    tool: Text = ""
    status: ItemStatus = ""
    error: Annotated[str, BeforeValidator(_message)] = ""


class WebSearch(_ItemBase):
    """A web search."""

    type: Literal["web_search"] = "web_search"
    query: Text = ""


def _completed(value: object) -> bool:
    return value is True


class TodoEntry(_Lenient):
    """One entry of codex's to-do list."""

    text: Text = ""
    completed: Annotated[bool, BeforeValidator(_completed)] = False


class TodoList(_ItemBase):
    """Codex's plan as a to-do list."""

    type: Literal["todo_list"] = "todo_list"
    items: Annotated[list[TodoEntry], BeforeValidator(_mappings)] = []


class ErrorItem(_ItemBase):
    """A warning codex shows inside a turn (not fatal; docs/codex-facts.md)."""

    type: Literal["error"] = "error"
    message: Text = ""


class UnknownItem(_Lenient):
    """An item this version does not model; ``raw`` is the object as codex sent it.

    ``type`` is codex's own name for it (``""`` when it had none or was not a string).
    """

    type: str = ""
    id: str = ""
    raw: Any = None

    @classmethod
    def of(cls, data: Any) -> UnknownItem:
        """The unknown item that keeps ``data``, with its ``type`` and ``id`` when present."""
        if isinstance(data, Mapping):
            return cls(type=_text(data.get("type")), id=_text(data.get("id")), raw=data)
        return cls(raw=data)


#: Every item; ``type`` tells them apart (:func:`parse_item` picks the model by it).
Item = (
    AgentMessage
    | UserMessage
    | Reasoning
    | CommandExecution
    | FileChange
    | McpToolCall
    | WebSearch
    | TodoList
    | ErrorItem
    | UnknownItem
)

_MODELS: dict[str, type[_ItemBase]] = {
    "agent_message": AgentMessage,
    "user_message": UserMessage,
    "reasoning": Reasoning,
    "command_execution": CommandExecution,
    "file_change": FileChange,
    "mcp_tool_call": McpToolCall,
    "web_search": WebSearch,
    "todo_list": TodoList,
    "error": ErrorItem,
}


def parse_item(data: Any) -> Item:
    """Read one item object of either dialect; never raises.

    The model is chosen by the item's ``type`` (camelCase names read as snake_case).
    Returns :class:`UnknownItem` (keeping ``data``) for a type this version does not model,
    a value that is not an object, or an object it cannot read.
    """
    if isinstance(data, Mapping):
        kind = data.get("type")
        if isinstance(kind, str):
            model = _MODELS.get(kind)
            if model is None and not kind.islower():
                kind = snake_case(kind)
                model = _MODELS.get(kind)
                data = {**data, "type": kind}
            item: Item = read_or(model, data, UnknownItem.of)  # type: ignore[assignment]
            return item
    return UnknownItem.of(data)


def read_or(
    model: type[BaseModel] | None, data: Any, fallback: Callable[[Any], R]
) -> BaseModel | R:
    """``data`` read as ``model``, or ``fallback(data)`` when there is no model or ``data``
    cannot be read as one (validation fails, or it nests too deep); never raises itself."""
    if model is not None:
        try:
            return model.model_validate(data)
        except (ValidationError, RecursionError):
            pass
    return fallback(data)
