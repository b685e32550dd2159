"""Provides codex's events (thread, turn and item events) as typed models.

The models read the JSONL objects ``codex exec --json`` prints (docs/codex-facts.md):
``thread.started {thread_id}``, ``turn.started``, ``turn.completed {usage}``,
``turn.failed {error: {message}}``, ``error {message}`` (a notice, not fatal) and
``item.started`` / ``item.updated`` / ``item.completed {item}``. Any other object becomes
:class:`UnknownEvent`, which keeps it whole: newer codex builds add types, and nothing codex
prints is ever dropped. :func:`parse_event` never raises; :func:`event_type` reads only the
tag, for the hot paths that need no more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SkipValidation,
    model_validator,
)
from pydantic.dataclasses import dataclass

from server_client.codex.items import Item, Text, UnknownItem, parse_item, read_or

__all__ = [
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
]

#: Where an item is in its life: ``item.started``, ``item.updated`` or ``item.completed``.
ItemPhase = Literal["started", "updated", "completed"]


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


_Count = Annotated[int, BeforeValidator(_count)]


class _Lenient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)


@dataclass(frozen=True, config=ConfigDict(extra="ignore", defer_build=True))
class Usage:
    """Token counts of ``turn.completed``; codex reports the thread's running total, not the
    turn's (docs/codex-facts.md). A missing or malformed count reads as 0. (A pydantic
    dataclass: ``Usage(1000, 800, 50)`` builds one positionally.)"""

    input_tokens: _Count = 0
    cached_input_tokens: _Count = 0
    output_tokens: _Count = 0
    reasoning_output_tokens: _Count = 0

    def minus(self, other: Usage) -> Usage:
        """The difference ``self - other``, count by count."""
        return Usage(
            input_tokens=self.input_tokens - other.input_tokens,
            cached_input_tokens=self.cached_input_tokens - other.cached_input_tokens,
            output_tokens=self.output_tokens - other.output_tokens,
            reasoning_output_tokens=self.reasoning_output_tokens - other.reasoning_output_tokens,
        )


def _usage(value: object) -> object:
    return value if isinstance(value, Mapping) else Usage()


def _error_message(value: object) -> str:
    if isinstance(value, Mapping):
        value = value.get("message")
    return value if isinstance(value, str) else ""


class ThreadStarted(_Lenient):
    """Codex started (or resumed) a thread; its first event."""

    type: Literal["thread.started"] = "thread.started"
    thread_id: Text = ""


class TurnStarted(_Lenient):
    """A turn began."""

    type: Literal["turn.started"] = "turn.started"


class TurnCompleted(_Lenient):
    """A turn ended normally; ``usage`` is the thread's cumulative token count."""

    type: Literal["turn.completed"] = "turn.completed"
    usage: Annotated[Usage, BeforeValidator(_usage)] = Usage()


class TurnFailed(_Lenient):
    """A turn failed; ``message`` is codex's reason (``""`` when it gave none) and ``error``
    the ``error`` value as codex sent it."""

    type: Literal["turn.failed"] = "turn.failed"
    message: Annotated[str, BeforeValidator(_error_message)] = ""
    error: Any = None

    @model_validator(mode="before")
    @classmethod
    def _from_error(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "message" not in data:
            return {**data, "message": data.get("error")}
        return data


class CodexError(_Lenient):
    """A top-level ``error`` line: a notice such as "Reconnecting... 1/3", not fatal by
    itself (only ``turn.failed`` is; docs/codex-facts.md)."""

    type: Literal["error"] = "error"
    message: Annotated[str, BeforeValidator(_error_message)] = ""


def _item(value: object) -> Item:
    return parse_item(value)


class ItemEvent(_Lenient):
    """``item.<phase>``: an item started, changed or completed (``item`` as of then)."""

    type: Literal["item.started", "item.updated", "item.completed"]
    item: Annotated[SkipValidation[Item], BeforeValidator(_item)] = UnknownItem()

    @property
    def phase(self) -> ItemPhase:
        """``started``, ``updated`` or ``completed``."""
        phase: ItemPhase = self.type.removeprefix("item.")  # type: ignore[assignment]
        return phase


class UnknownEvent(_Lenient):
    """An event this version does not model (or a value that is not an object); ``raw`` is
    it as codex printed it and ``type`` its ``type`` (``""`` when none)."""

    type: str = ""
    raw: Any = None

    @classmethod
    def of(cls, data: Any) -> UnknownEvent:
        """The unknown event that keeps ``data``, with its ``type`` when it has one."""
        return cls(type=event_type(data), raw=data)


#: Every codex event; ``type`` tells them apart (:func:`parse_event` picks the model by it).
CodexEvent = (
    ThreadStarted | TurnStarted | TurnCompleted | TurnFailed | CodexError | ItemEvent | UnknownEvent
)

_MODELS: dict[str, type[_Lenient]] = {
    "thread.started": ThreadStarted,
    "turn.started": TurnStarted,
    "turn.completed": TurnCompleted,
    "turn.failed": TurnFailed,
    "error": CodexError,
    "item.started": ItemEvent,
    "item.updated": ItemEvent,
    "item.completed": ItemEvent,
}


def event_type(data: Any) -> str:
    """Codex's ``type`` of an event object (``""`` when it has none); reads nothing else."""
    if isinstance(data, Mapping):
        kind = data.get("type")
        if isinstance(kind, str):
            return kind
    return ""


def parse_event(data: Any) -> CodexEvent:
    """Read one codex event object; never raises.

    The model is chosen by the event's ``type``. Returns :class:`UnknownEvent` (keeping
    ``data``) for a type this version does not model, a value that is not an object, or an
    object it cannot read.
    """
    event: CodexEvent = read_or(_MODELS.get(event_type(data)), data, UnknownEvent.of)  # type: ignore[assignment]
    return event
