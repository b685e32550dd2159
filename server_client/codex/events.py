"""Provides codex's events (thread, turn and item events) as typed models.

The models read the JSONL objects ``codex exec --json`` prints (docs/codex-facts.md):
``thread.started {thread_id}``, ``turn.started``, ``turn.completed {usage}``,
``turn.failed {error: {message}}``, ``error {message}`` (a notice, not fatal) and
``item.started`` / ``item.updated`` / ``item.completed {item}``.

A worker running ``codex app-server`` stores its notifications in the same dialect
(server_client/codex/appserver.py translates them): its items as app-server sends them
(camelCase; :func:`~server_client.codex.items.parse_item` reads both), plus three types
exec has no words for: ``item.delta {item_id, stream, delta}`` (streamed text of an item
not yet completed, coalesced), ``usage.updated {token_usage}`` (app-server's
``thread/tokenUsage/updated``) and ``turn.interrupted``. Any other object becomes
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
    "DeltaStream",
    "ItemDelta",
    "ItemPhase",
    "ThreadStarted",
    "TokenUsage",
    "TurnCompleted",
    "TurnFailed",
    "TurnInterrupted",
    "TurnStarted",
    "UnknownEvent",
    "Usage",
    "UsageUpdated",
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


def _optional_count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_message(value: object) -> str:
    if isinstance(value, Mapping):
        value = value.get("message")
    return value if isinstance(value, str) else ""


class ThreadStarted(_Lenient):
    """Codex started (or resumed) a thread; its first event."""

    type: Literal["thread.started"] = "thread.started"
    thread_id: Text = ""


class TurnStarted(_Lenient):
    """A turn began (``turn_id``: app-server's id of it; ``""`` from exec)."""

    type: Literal["turn.started"] = "turn.started"
    turn_id: Text = ""


class TurnInterrupted(_Lenient):
    """A turn was interrupted (app-server's ``turn/completed`` with status ``interrupted``):
    by the owner, by a ``cancel`` answer to an approval, or by a worker restart. The thread
    stays usable: the next reply starts a new turn."""

    type: Literal["turn.interrupted"] = "turn.interrupted"
    turn_id: Text = ""


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


#: Which text of an item a delta adds to: an agent message's, a reasoning summary's, or a
#: running command's output.
DeltaStream = Literal["agent_message", "reasoning", "command_output"]


class ItemDelta(_Lenient):
    """Text an item gained while it runs (app-server's ``item/agentMessage/delta``,
    ``item/reasoning/summaryTextDelta`` and ``item/commandExecution/outputDelta``, several
    coalesced into one). Deltas are for watching: the item's ``item.completed`` holds the
    whole text and replaces what they built (codex may leave out a command's first output
    chunk; docs/codex-facts.md)."""

    type: Literal["item.delta"] = "item.delta"
    item_id: Text = ""
    stream: DeltaStream = "agent_message"
    delta: Text = ""


def _breakdown(value: object) -> object:
    """app-server's ``TokenUsageBreakdown`` (camelCase) as :class:`Usage` fields."""
    if not isinstance(value, Mapping):
        return Usage()
    return {
        "input_tokens": value.get("inputTokens", value.get("input_tokens")),
        "cached_input_tokens": value.get("cachedInputTokens", value.get("cached_input_tokens")),
        "output_tokens": value.get("outputTokens", value.get("output_tokens")),
        "reasoning_output_tokens": value.get(
            "reasoningOutputTokens", value.get("reasoning_output_tokens")
        ),
    }


_Breakdown = Annotated[Usage, BeforeValidator(_breakdown)]


class TokenUsage(_Lenient):
    """app-server's ``ThreadTokenUsage``: ``total`` for the thread so far, ``last`` for the
    latest model request, ``context_window`` the model's window in tokens (None: unknown)."""

    total: _Breakdown = Usage()
    last: _Breakdown = Usage()
    last_total_tokens: _Count = 0
    context_window: Annotated[int | None, BeforeValidator(_optional_count)] = None

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return {}
        last = data.get("last")
        return {
            **data,
            "last_total_tokens": last.get("totalTokens") if isinstance(last, Mapping) else 0,
            "context_window": data.get("modelContextWindow", data.get("context_window")),
        }

    @property
    def context_used(self) -> float | None:
        """The share of the context window the latest request filled (0.0–1.0), or None
        when the window is unknown."""
        if not self.context_window:
            return None
        return min(1.0, self.last_total_tokens / self.context_window)


class UsageUpdated(_Lenient):
    """Token usage after a model request (app-server's ``thread/tokenUsage/updated``)."""

    type: Literal["usage.updated"] = "usage.updated"
    token_usage: TokenUsage = TokenUsage()

    @model_validator(mode="before")
    @classmethod
    def _usage_object(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not isinstance(data.get("token_usage"), Mapping):
            return {**data, "token_usage": {}}
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
    ThreadStarted
    | TurnStarted
    | TurnCompleted
    | TurnFailed
    | TurnInterrupted
    | CodexError
    | ItemEvent
    | ItemDelta
    | UsageUpdated
    | UnknownEvent
)

_MODELS: dict[str, type[_Lenient]] = {
    "thread.started": ThreadStarted,
    "turn.started": TurnStarted,
    "turn.completed": TurnCompleted,
    "turn.failed": TurnFailed,
    "turn.interrupted": TurnInterrupted,
    "item.delta": ItemDelta,
    "usage.updated": UsageUpdated,
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
