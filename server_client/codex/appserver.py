"""Provides the ``codex app-server`` dialect: the JSON-RPC messages the worker exchanges with it
over stdio, and :func:`to_event`, which turns its notifications into stored codex events.

Wire (codex-cli 0.169.0; docs/codex-facts.md): one JSON object a line on stdin/stdout, no
``"jsonrpc"`` field. Messages from app-server are of three kinds, told apart by their keys:

- a **response** to one of our requests: ``{"id", "result"}`` or ``{"id", "error"}``;
- a **notification**: ``{"method", "params", "emittedAtMs"}`` (no ``id``);
- a **server request**, which waits for our response: ``{"id", "method", "params"}``
  (approvals). Its ids count from 0 per process and collide with ours: a message with both
  ``id`` and ``method`` is always app-server's request, never the answer to ours.

The models below are written from the protocol schema of that version
(``codex app-server generate-json-schema``): only the fields the worker sends or reads;
every received model ignores (and keeps) unknown fields, so a newer codex's additions pass.

Events (the ``codex`` kind; server_client/codex/events.py reads them):

=========================================  ===================================================
notification                               stored event
=========================================  ===================================================
``thread/started {thread}``                ``{"type": "thread.started", "thread_id"}``
``turn/started {turn}``                    ``{"type": "turn.started", "turn_id"}``
``item/started|completed {item}``          ``{"type": "item.started|item.completed", "item"}``
``item/agentMessage/delta``                ``{"type": "item.delta", "item_id",
                                           "stream": "agent_message", "delta"}``
``item/reasoning/summaryTextDelta``,       same, ``"stream": "reasoning"``
``item/reasoning/textDelta``
``item/commandExecution/outputDelta``      same, ``"stream": "command_output"``
``thread/tokenUsage/updated``              ``{"type": "usage.updated", "token_usage"}``
``turn/completed`` completed               ``{"type": "turn.completed", "turn_id", "usage"}``
``turn/completed`` failed                  ``{"type": "turn.failed", "turn_id",
                                           "error": {"message"}}``
``turn/completed`` interrupted             ``{"type": "turn.interrupted", "turn_id"}``
``error`` with ``willRetry`` true          ``{"type": "error", "message"}``
=========================================  ===================================================

``turn.completed.usage`` is the thread's total so far (``input_tokens``,
``cached_input_tokens``, ``output_tokens``, ``reasoning_output_tokens``), like exec's: taken
from the latest ``thread/tokenUsage/updated``. An ``error`` with ``willRetry`` false is not
stored: the ``turn/completed`` (failed) that follows carries it. The notifications in
:data:`QUIET` are dropped; any other becomes ``{"type": <method>, **params}`` (an
:class:`~server_client.codex.events.UnknownEvent`: nothing else is lost).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "NOISY",
    "QUIET",
    "ClientInfo",
    "CommandApprovalParams",
    "EventTranslator",
    "FileChangeApprovalParams",
    "InitializeCapabilities",
    "InitializeParams",
    "Notification",
    "Response",
    "ServerRequest",
    "TextInput",
    "ThreadResumeParams",
    "ThreadStartParams",
    "TurnInterruptParams",
    "TurnStartParams",
    "UserInputParams",
    "UserInputQuestionParams",
    "encode_request",
    "encode_response",
    "parse_message",
    "to_event",
]

#: Notifications the worker asks app-server not to send at all
#: (``initialize.capabilities.optOutNotificationMethods``): sent after every model request or
#: many times a turn, and nothing the owner needs.
NOISY: tuple[str, ...] = (
    "account/rateLimits/updated",
    "thread/status/changed",
    "turn/diff/updated",
    "remoteControl/status/changed",
    "mcpServer/startupStatus/updated",
    "item/reasoning/summaryPartAdded",
)

#: Notifications :func:`to_event` drops (the noisy ones, should they come anyway, and
#: bookkeeping the stored events already show).
QUIET: frozenset[str] = frozenset(
    (
        *NOISY,
        "configWarning",
        "serverRequest/resolved",
        "thread/settings/updated",
        # a resumed thread's goal bookkeeping (0.169.0 sends it on every thread/resume)
        "thread/goal/cleared",
    )
)

_DELTA_STREAMS: dict[str, str] = {
    "item/agentMessage/delta": "agent_message",
    "item/reasoning/summaryTextDelta": "reasoning",
    "item/reasoning/textDelta": "reasoning",
    "item/commandExecution/outputDelta": "command_output",
}


class _Out(BaseModel):
    """A message part the worker sends (field names as on the wire): unset optional fields
    are left out."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _In(BaseModel):
    """A message part app-server sends (field names as on the wire): unknown fields are
    kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# ---- client → server ---------------------------------------------------------------------


class ClientInfo(_Out):
    """``initialize.clientInfo``."""

    name: str
    version: str


class InitializeCapabilities(_Out):
    """``initialize.capabilities``: ``optOutNotificationMethods`` are not sent to us."""

    experimentalApi: bool = False
    optOutNotificationMethods: list[str] | None = None


class InitializeParams(_Out):
    """``initialize`` (then the notification ``initialized``)."""

    clientInfo: ClientInfo
    capabilities: InitializeCapabilities | None = None


class ThreadStartParams(_Out):
    """``thread/start``: answered with ``{thread: {id, …}}``; ``sandbox`` is ``read-only``,
    ``workspace-write`` or ``danger-full-access``, ``approvalPolicy`` ``untrusted``,
    ``on-request`` or ``never``; ``model`` None keeps codex's default."""

    cwd: str
    sandbox: str
    approvalPolicy: str
    model: str | None = None


class ThreadResumeParams(_Out):
    """``thread/resume``: loads a thread from ``$CODEX_HOME`` (the same fields override what
    it restores). ``excludeTurns`` leaves the earlier turns out of the answer (the task's log
    has them; without it codex 0.169.0 sends them all and a ``deprecationNotice``)."""

    threadId: str
    cwd: str | None = None
    sandbox: str | None = None
    approvalPolicy: str | None = None
    model: str | None = None
    excludeTurns: bool = True


class TextInput(_Out):
    """One ``UserInput`` of type ``text``."""

    type: Literal["text"] = "text"
    text: str


class TurnStartParams(_Out):
    """``turn/start``: a new turn, or steering text for the running one (codex returns the
    running turn's id then)."""

    threadId: str
    input: list[TextInput]


class TurnInterruptParams(_Out):
    """``turn/interrupt``."""

    threadId: str
    turnId: str


def encode_request(request_id: int, method: str, params: _Out | None) -> bytes:
    """One request (``params`` None: a notification) as a line of JSON, newline included."""
    message: dict[str, Any] = {"method": method}
    if params is not None:
        message["params"] = params.model_dump(exclude_none=True)
    if request_id >= 0:
        message = {"id": request_id, **message}
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def encode_response(request_id: int | str, result: Mapping[str, Any]) -> bytes:
    """Our response to app-server's request ``request_id``, as a line of JSON."""
    return (json.dumps({"id": request_id, "result": result}, separators=(",", ":")) + "\n").encode()


# ---- server → client ---------------------------------------------------------------------


class CommandApprovalParams(_In):
    """``item/commandExecution/requestApproval``: codex wants to run ``command`` in ``cwd``;
    ``reason`` is the model's justification; ``availableDecisions`` lists strings and objects
    (``{"acceptWithExecpolicyAmendment": …}``)."""

    threadId: str
    turnId: str
    itemId: str
    command: str | None = None
    cwd: str | None = None
    reason: str | None = None
    availableDecisions: list[Any] | None = None


class FileChangeApprovalParams(_In):
    """``item/fileChange/requestApproval``: no diff here (it is in the ``item/started``
    fileChange item with the same ``itemId``)."""

    threadId: str
    turnId: str
    itemId: str
    reason: str | None = None
    grantRoot: str | None = None


class UserInputOptionParams(_In):
    """``ToolRequestUserInputOption``."""

    label: str
    description: str = ""


class UserInputQuestionParams(_In):
    """``ToolRequestUserInputQuestion``."""

    id: str
    header: str = ""
    question: str = ""
    options: list[UserInputOptionParams] | None = None
    isOther: bool = False
    isSecret: bool = False


class UserInputParams(_In):
    """``item/tool/requestUserInput``: answered with ``{answers: {qid: {answers: [..]}}}``."""

    threadId: str
    turnId: str
    itemId: str
    questions: list[UserInputQuestionParams] = Field(default_factory=list)


class ServerRequest(_In):
    """A request from app-server (it waits for our response with the same ``id``)."""

    id: int | str
    method: str
    params: dict[str, Any] = Field(default_factory=dict)


class Notification(_In):
    """A notification from app-server."""

    method: str
    params: dict[str, Any] = Field(default_factory=dict)


class Response(_In):
    """app-server's answer to our request ``id``: ``result``, or ``error`` (``{code,
    message}``)."""

    id: int | str
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def error_message(self) -> str | None:
        """The error's message, or None for a success."""
        if self.error is None:
            return None
        return str(self.error.get("message") or self.error)


def parse_message(data: object) -> ServerRequest | Notification | Response | None:
    """Classify one message from app-server (a decoded JSON line); None when it is none of
    the three kinds (not an object, or fields of the wrong type)."""
    if not isinstance(data, dict):
        return None
    try:
        if "method" in data:
            if "id" in data:
                return ServerRequest.model_validate(data)
            return Notification.model_validate(data)
        if "id" in data:
            return Response.model_validate(data)
    except ValidationError:
        return None
    return None


# ---- notifications → events --------------------------------------------------------------


def _usage_total(token_usage: object) -> dict[str, int]:
    """``ThreadTokenUsage.total`` in exec's ``usage`` words (zeros when unknown)."""
    total = token_usage.get("total") if isinstance(token_usage, Mapping) else None
    if not isinstance(total, Mapping):
        total = {}

    def count(key: str) -> int:
        value = total.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return {
        "input_tokens": count("inputTokens"),
        "cached_input_tokens": count("cachedInputTokens"),
        "output_tokens": count("outputTokens"),
        "reasoning_output_tokens": count("reasoningOutputTokens"),
    }


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _message(error: object) -> str:
    if isinstance(error, Mapping):
        return _text(error.get("message"))
    return _text(error)


def to_event(
    method: str, params: Mapping[str, Any], *, token_usage: object = None
) -> dict[str, Any] | None:
    """The stored event for one notification (see the module docstring), or None to drop it.

    Args:
        method: the notification's ``method``.
        params: its ``params``.
        token_usage: the latest ``thread/tokenUsage/updated`` ``tokenUsage`` of the thread,
            for ``turn.completed``'s usage (None: zeros).

    Never raises for odd params: missing fields become ``""``.
    """
    if method in QUIET:
        return None
    stream = _DELTA_STREAMS.get(method)
    if stream is not None:
        return {
            "type": "item.delta",
            "item_id": _text(params.get("itemId")),
            "stream": stream,
            "delta": _text(params.get("delta")),
        }
    if method in ("item/started", "item/completed"):
        item = params.get("item")
        phase = method.rsplit("/", 1)[1]
        return {"type": f"item.{phase}", "item": item if isinstance(item, Mapping) else {}}
    turn = params.get("turn")
    turn = turn if isinstance(turn, Mapping) else {}
    if method == "thread/started":
        thread = params.get("thread")
        thread_id = thread.get("id") if isinstance(thread, Mapping) else None
        return {"type": "thread.started", "thread_id": _text(thread_id)}
    if method == "turn/started":
        return {"type": "turn.started", "turn_id": _text(turn.get("id"))}
    if method == "turn/completed":
        turn_id = _text(turn.get("id"))
        status = turn.get("status")
        if status == "interrupted":
            return {"type": "turn.interrupted", "turn_id": turn_id}
        if status == "failed":
            message = _message(turn.get("error")) or "codex reported the turn failed"
            return {"type": "turn.failed", "turn_id": turn_id, "error": {"message": message}}
        return {"type": "turn.completed", "turn_id": turn_id, "usage": _usage_total(token_usage)}
    if method == "thread/tokenUsage/updated":
        usage = params.get("tokenUsage")
        return {"type": "usage.updated", "token_usage": usage if isinstance(usage, Mapping) else {}}
    if method == "error":
        if params.get("willRetry") is not True:
            return None
        return {"type": "error", "message": _message(params.get("error"))}
    return {**params, "type": method}


class EventTranslator:
    """:func:`to_event` with the state it needs across notifications: the latest token usage
    (for ``turn.completed``) and the last fatal ``error`` (for a failed turn without its own
    message). One per app-server process."""

    def __init__(self) -> None:
        self.token_usage: object = None
        self.last_error: str | None = None

    def event(self, method: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored event for one notification, or None to drop it."""
        if method == "thread/tokenUsage/updated":
            self.token_usage = params.get("tokenUsage")
        elif method == "error" and params.get("willRetry") is not True:
            self.last_error = _message(params.get("error")) or None
        event = to_event(method, params, token_usage=self.token_usage)
        if (
            event is not None
            and event["type"] == "turn.failed"
            and self.last_error
            and not _message(params.get("turn", {}).get("error"))
        ):
            event["error"] = {"message": self.last_error}
        return event
