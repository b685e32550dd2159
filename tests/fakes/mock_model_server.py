"""Provides a scriptable mock of the OpenAI Responses API for driving the real codex binary.

The real ``codex exec --json`` talks to ``POST {base_url}/responses`` with ``stream: true`` and
reads server-sent events. :class:`MockModel` serves that endpoint on ``127.0.0.1`` (an
OS-assigned port) from a uvicorn server in a background thread, so it works from sync and async
tests alike::

    with MockModel() as model:
        model.script([call_shell("echo hi"), say("all done")])
        write_codex_home(tmp_path / "codex-home", model.base_url)
        ...  # run codex
        assert "hi" in model.function_call_outputs()[0]

A script is a list of :class:`Step` objects, one per model response. The step a request gets is
derived from the conversation history the request carries (how many model outputs it already
holds: ``function_call`` items plus assistant ``message`` items), not from a request counter, so
a retried request gets the same answer and a resumed thread (``codex exec resume``) continues
with the next step. Failure steps (:func:`fail_http`, :func:`fail_response`) leave nothing in the
history, so each is served exactly once, just before the step that follows it. When the script
runs out the mock answers with the message ``"done."`` so that codex ends its turn.

Every request (any method, any path) is recorded in :attr:`MockModel.requests` with its parsed
JSON body; :attr:`MockModel.responses_requests` holds only the ``/responses`` bodies.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = [
    "DEFAULT_FINAL_MESSAGE",
    "MockModel",
    "RecordedRequest",
    "Step",
    "call_shell",
    "apply_patch",
    "call_tool",
    "fail_http",
    "fail_response",
    "say",
    "say_streamed",
    "think",
    "user_texts",
]

DEFAULT_FINAL_MESSAGE = "done."

_JSON = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShellCall:
    """A request for the model to run ``cmd`` with whichever shell tool codex advertises."""

    cmd: str
    workdir: str | None = None
    yield_time_ms: int | None = None
    extra: _JSON = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCall:
    """A raw function call: ``name`` with JSON ``arguments``."""

    name: str
    arguments: _JSON


@dataclass(frozen=True)
class Message:
    """An assistant message with ``text``; ``chunks`` (joined: ``text``) are streamed as
    separate deltas with ``pause_s`` seconds between them when given."""

    text: str
    chunks: tuple[str, ...] = ()
    pause_s: float = 0.0


@dataclass(frozen=True)
class CustomToolCall:
    """A freeform tool call (``custom_tool_call``): ``name`` with raw text ``input``, e.g.
    codex's ``apply_patch`` tool."""

    name: str
    input: str


@dataclass(frozen=True)
class Reasoning:
    """A reasoning item whose summary is ``text``."""

    text: str


OutputPart = ShellCall | ToolCall | CustomToolCall | Message | Reasoning


@dataclass(frozen=True)
class Step:
    """One scripted model response.

    Either a successful response made of ``parts`` (in output order), an HTTP error
    (``http_status``), or a ``response.failed`` event (``failed_message``).
    """

    parts: tuple[OutputPart, ...] = ()
    http_status: int | None = None
    failed_message: str | None = None

    @property
    def is_failure(self) -> bool:
        """Whether this step fails the request instead of producing output."""
        return self.http_status is not None or self.failed_message is not None

    @property
    def history_weight(self) -> int:
        """How many counted items (function calls, assistant messages) it leaves in history."""
        return sum(
            1 for p in self.parts if isinstance(p, ShellCall | ToolCall | CustomToolCall | Message)
        )

    def __add__(self, other: Step) -> Step:
        """Concatenate two successful steps into one response (``think("x") + say("y")``)."""
        if self.is_failure or other.is_failure:
            raise ValueError("failure steps cannot be combined")
        return Step(parts=self.parts + other.parts)


def call_shell(
    cmd: str,
    *,
    workdir: str | None = None,
    yield_time_ms: int | None = None,
    **extra: Any,
) -> Step:
    """A response that asks codex to run the shell command ``cmd``.

    The tool name and argument shape are taken from the request's ``tools`` list (codex 0.169
    offers ``exec_command`` with ``{"cmd": ...}``). ``yield_time_ms`` (exec_command only) is how
    long codex waits for the command before returning partial output to the model; ``extra`` is
    merged into the arguments as-is.
    """
    return Step(parts=(ShellCall(cmd, workdir, yield_time_ms, dict(extra)),))


def call_tool(name: str, arguments: _JSON) -> Step:
    """A response with a raw ``function_call`` of tool ``name``."""
    return Step(parts=(ToolCall(name, dict(arguments)),))


def say(text: str) -> Step:
    """A response with a final assistant message (codex ends its turn after it)."""
    return Step(parts=(Message(text),))


def say_streamed(*chunks: str, pause_s: float = 0.3) -> Step:
    """A final assistant message streamed as one delta per chunk, ``pause_s`` seconds apart
    (so that a client sees the deltas well before the message completes)."""
    return Step(parts=(Message("".join(chunks), tuple(chunks), pause_s),))


def apply_patch(patch: str) -> Step:
    """A response that asks codex to apply ``patch`` (``*** Begin Patch`` … ``*** End
    Patch``) with its ``apply_patch`` tool: a freeform call when codex advertises it as a
    custom tool, else a function call with ``{"input": patch}``."""
    return Step(parts=(CustomToolCall("apply_patch", patch),))


def think(text: str, then: Step | None = None) -> Step:
    """A response with a reasoning item followed by ``then`` (default: ``say("done.")``)."""
    follow = then if then is not None else say(DEFAULT_FINAL_MESSAGE)
    return Step(parts=(Reasoning(text),)) + follow


def fail_http(status: int = 500) -> Step:
    """A response with HTTP ``status`` and a JSON error body instead of a stream."""
    return Step(http_status=status)


def fail_response(message: str = "mock model failure") -> Step:
    """A 200 stream that ends with ``response.failed`` carrying ``message``."""
    return Step(failed_message=message)


# --------------------------------------------------------------------------------------------
# Request bookkeeping
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request the mock received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    """Parsed JSON body, or the raw text when it is not JSON (``None`` when empty)."""
    step_index: int | None = None
    """Index of the script step served, ``None`` for the fallback message or other routes."""


def _input_items(body: Any) -> list[_JSON]:
    if not isinstance(body, dict):
        return []
    items = body.get("input")
    if not isinstance(items, list):
        return []
    return [i for i in items if isinstance(i, dict)]


def count_model_outputs(body: Any) -> int:
    """Count the model outputs a request's history holds (function calls + assistant messages)."""
    n = 0
    for item in _input_items(body):
        kind = item.get("type")
        if kind in ("function_call", "custom_tool_call", "local_shell_call") or (
            kind == "message" and item.get("role") == "assistant"
        ):
            n += 1
    return n


def function_call_outputs(body: Any) -> list[str]:
    """The ``output`` texts of the ``function_call_output`` items in a request body."""
    out: list[str] = []
    for item in _input_items(body):
        if item.get("type") not in ("function_call_output", "custom_tool_call_output"):
            continue
        output = item.get("output")
        if isinstance(output, str):
            out.append(output)
        elif isinstance(output, list):  # content-item form: [{"type": "input_text", "text": ...}]
            out.append("".join(str(c.get("text", "")) for c in output if isinstance(c, dict)))
        elif output is not None:
            out.append(json.dumps(output))
    return out


def user_texts(body: Any) -> list[str]:
    """The texts of the user messages in a request's ``input`` (the prompts of every turn so
    far, plus codex's own context messages), in order."""
    out: list[str] = []
    for item in _input_items(body):
        if item.get("type") == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                out.extend(
                    str(c.get("text", "")) for c in content if isinstance(c, dict) and "text" in c
                )
    return out


def _tool_names(body: Any, kind: str | None = None) -> set[str]:
    """Names of the tools a request advertises (only those of type ``kind`` when given)."""
    names: set[str] = set()
    if isinstance(body, dict):
        for tool in body.get("tools") or []:
            if isinstance(tool, dict) and (kind is None or tool.get("type") == kind):
                name = tool.get("name") or (tool.get("function") or {}).get("name")
                if isinstance(name, str):
                    names.add(name)
    return names


def _shell_call_item(call: ShellCall, tools: set[str]) -> tuple[str, _JSON]:
    """Pick the shell tool codex advertised and build its arguments."""
    if "exec_command" in tools or not tools & {"shell_command", "shell"}:
        args: _JSON = {"cmd": call.cmd}
        if call.workdir is not None:
            args["workdir"] = call.workdir
        if call.yield_time_ms is not None:
            args["yield_time_ms"] = call.yield_time_ms
        return "exec_command", args | call.extra
    if "shell_command" in tools:
        args = {"command": call.cmd}
    else:
        args = {"command": ["bash", "-lc", call.cmd]}
    if call.workdir is not None:
        args["workdir"] = call.workdir
    if call.yield_time_ms is not None:
        args["timeout_ms"] = call.yield_time_ms
    name = "shell_command" if "shell_command" in tools else "shell"
    return name, args | call.extra


def _sse(events: list[_JSON]) -> bytes:
    return "".join(
        f"event: {ev['type']}\ndata: {json.dumps(ev, separators=(',', ':'))}\n\n" for ev in events
    ).encode()


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class MockModel:
    """A mock Responses API server on ``127.0.0.1`` serving a per-test script.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). Thread-safe: the script may
    be replaced and the recorded requests read while codex is talking to the server.
    """

    def __init__(self, steps: list[Step] | None = None, *, final_message: str = "done.") -> None:
        self.final_message = final_message
        self._lock = threading.Lock()
        self._steps: list[Step] = list(steps or [])
        self._served_failures: set[int] = set()
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # ---- public API ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The provider base URL for codex's config, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self._port is None:
            raise RuntimeError("MockModel is not started")
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError("MockModel is not started")
        return self._port

    def script(self, steps: list[Step]) -> None:
        """Replace the script (and forget which failure steps were already served)."""
        with self._lock:
            self._steps = list(steps)
            self._served_failures.clear()

    @property
    def requests(self) -> list[_JSON]:
        """JSON bodies of every ``POST .../responses`` request received, in order."""
        with self._lock:
            return [
                r.body
                for r in self._requests
                if r.path.endswith("/responses") and isinstance(r.body, dict)
            ]

    @property
    def all_requests(self) -> list[RecordedRequest]:
        """Every request received on any route, with method, path, headers and body."""
        with self._lock:
            return list(self._requests)

    def function_call_outputs(self) -> list[str]:
        """Distinct ``function_call_output`` texts sent back by codex, in first-seen order."""
        seen: dict[str, None] = {}
        for body in self.requests:
            for out in function_call_outputs(body):
                seen.setdefault(out, None)
        return list(seen)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[_JSON]:
        """Block until at least ``n`` ``/responses`` requests arrived (polling, with deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            reqs = self.requests
            if len(reqs) >= n:
                return reqs
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {n} requests, got {len(reqs)}")
            time.sleep(0.01)

    def start(self) -> MockModel:
        """Start serving in a background thread; returns once the socket is listening."""
        if self._server is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        self._server = server
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="mock-model", daemon=True
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("mock model server thread died on startup")
            if time.monotonic() > deadline:
                raise RuntimeError("mock model server did not start within 10 s")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop the server and join its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> MockModel:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- internals ----------------------------------------------------------------------

    def _pick_step(self, body: Any) -> tuple[int | None, Step]:
        """Map a request to a script step (see the module docstring)."""
        history = count_model_outputs(body)
        with self._lock:
            consumed = 0
            for index, step in enumerate(self._steps):
                if step.is_failure:
                    if index not in self._served_failures and consumed >= history:
                        self._served_failures.add(index)
                        return index, step
                    continue
                weight = max(step.history_weight, 1)
                if consumed + weight > history:
                    return index, step
                consumed += weight
        return None, say(self.final_message)

    def _app(self) -> Starlette:
        async def responses(request: Request) -> Response:
            raw = await request.body()
            body = _parse_body(raw)
            index, step = self._pick_step(body)
            self._record(request, body, index)
            return self._render(step, body)

        async def other(request: Request) -> Response:
            raw = await request.body()
            self._record(request, _parse_body(raw), None)
            return JSONResponse({"error": {"message": "not mocked"}}, status_code=404)

        return Starlette(
            routes=[
                Route("/{prefix:path}/responses", responses, methods=["POST"]),
                Route("/responses", responses, methods=["POST"]),
                Route(
                    "/{rest:path}",
                    other,
                    methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"],
                ),
            ]
        )

    def _record(self, request: Request, body: Any, index: int | None) -> None:
        rec = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            step_index=index,
        )
        with self._lock:
            self._requests.append(rec)

    def _render(self, step: Step, body: Any) -> Response:
        if step.http_status is not None:
            return JSONResponse(
                {
                    "error": {
                        "message": f"mock HTTP {step.http_status}",
                        "type": "server_error",
                        "code": None,
                    }
                },
                status_code=step.http_status,
            )
        resp_id = f"resp_mock_{next(self._ids)}"
        events = list(self._events(step, body, resp_id))
        if not any(isinstance(ev, float) for ev in events):
            return Response(
                _sse([ev for ev in events if isinstance(ev, dict)]),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )

        async def paced() -> AsyncIterator[bytes]:
            for ev in events:
                if isinstance(ev, float):
                    await asyncio.sleep(ev)
                else:
                    yield _sse([ev])

        return StreamingResponse(
            paced(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    def _events(self, step: Step, body: Any, resp_id: str) -> Iterator[_JSON | float]:
        """The SSE events of ``step``'s response; a float is a pause of that many seconds."""
        model = body.get("model", "gpt-5.5") if isinstance(body, dict) else "gpt-5.5"
        base = {"id": resp_id, "object": "response", "model": model}
        yield {"type": "response.created", "response": base | {"status": "in_progress"}}
        yield {"type": "response.in_progress", "response": base | {"status": "in_progress"}}
        if step.failed_message is not None:
            yield {
                "type": "response.failed",
                "response": base
                | {
                    "status": "failed",
                    "error": {"code": "server_error", "message": step.failed_message},
                },
            }
            return
        tools = _tool_names(body)
        custom_tools = _tool_names(body, kind="custom")
        output: list[_JSON] = []
        for index, part in enumerate(step.parts):
            n = next(self._ids)
            if isinstance(part, Message):
                item_id = f"msg_mock_{n}"
                added = {"type": "message", "id": item_id, "role": "assistant", "content": []}
                done: _JSON = {
                    "type": "message",
                    "id": item_id,
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": part.text, "annotations": []}],
                }
                yield {"type": "response.output_item.added", "output_index": index, "item": added}
                common = {"item_id": item_id, "output_index": index, "content_index": 0}
                for number, chunk in enumerate(part.chunks or (part.text,)):
                    if number and part.pause_s:
                        yield part.pause_s
                    yield {"type": "response.output_text.delta", **common, "delta": chunk}
                yield {"type": "response.output_text.done", **common, "text": part.text}
            elif isinstance(part, Reasoning):
                item_id = f"rs_mock_{n}"
                yield {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {"type": "reasoning", "id": item_id, "summary": []},
                }
                common = {"item_id": item_id, "output_index": index, "summary_index": 0}
                yield {"type": "response.reasoning_summary_part.added", **common,
                       "part": {"type": "summary_text", "text": ""}}  # fmt: skip
                yield {"type": "response.reasoning_summary_text.delta", **common,
                       "delta": part.text}  # fmt: skip
                yield {"type": "response.reasoning_summary_text.done", **common,
                       "text": part.text}  # fmt: skip
                done = {
                    "type": "reasoning",
                    "id": item_id,
                    "summary": [{"type": "summary_text", "text": part.text}],
                }
            elif isinstance(part, CustomToolCall) and part.name in custom_tools:
                item_id = f"ctc_mock_{n}"
                added = {
                    "type": "custom_tool_call",
                    "id": item_id,
                    "call_id": f"call_mock_{n}",
                    "name": part.name,
                    "input": "",
                    "status": "in_progress",
                }
                done = added | {"input": part.input, "status": "completed"}
                yield {"type": "response.output_item.added", "output_index": index, "item": added}
                common = {"item_id": item_id, "output_index": index}
                yield {"type": "response.custom_tool_call_input.delta", **common,
                       "delta": part.input}  # fmt: skip
                yield {"type": "response.custom_tool_call_input.done", **common,
                       "input": part.input}  # fmt: skip
            else:
                if isinstance(part, ShellCall):
                    name, args = _shell_call_item(part, tools)
                elif isinstance(part, CustomToolCall):
                    name, args = part.name, {"input": part.input}
                else:
                    name, args = part.name, part.arguments
                item_id = f"fc_mock_{n}"
                arguments = json.dumps(args)
                added = {
                    "type": "function_call",
                    "id": item_id,
                    "call_id": f"call_mock_{n}",
                    "name": name,
                    "arguments": "",
                    "status": "in_progress",
                }
                done = added | {"arguments": arguments, "status": "completed"}
                yield {"type": "response.output_item.added", "output_index": index, "item": added}
                common = {"item_id": item_id, "output_index": index}
                yield {"type": "response.function_call_arguments.delta", **common,
                       "delta": arguments}  # fmt: skip
                yield {"type": "response.function_call_arguments.done", **common,
                       "arguments": arguments}  # fmt: skip
            output.append(done)
            yield {"type": "response.output_item.done", "output_index": index, "item": done}
        usage = {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 110,
        }
        yield {
            "type": "response.completed",
            "response": base | {"status": "completed", "output": output, "usage": usage},
        }


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
