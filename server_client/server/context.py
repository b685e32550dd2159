"""Provides the per-request context: request id, client address and actor, in a contextvar.

The request-id middleware sets it for every HTTP request; the auth dependencies fill in the
actor. Audit rows (store) and log lines (logs) read it, so neither has to be handed it
through every call. Outside a request (the lease sweeper, admin commands) it holds defaults.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass, replace

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Header carrying the request id, in both directions.
REQUEST_ID_HEADER = "X-Request-ID"
#: The same, as ASGI spells header names (lower-case bytes).
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")

#: An incoming request id is kept only when it looks like one (no log injection).
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True)
class RequestContext:
    """What is known about the current call.

    Attributes:
        request_id: The request's id (``X-Request-ID``, given or generated); None outside
            requests.
        client_addr: The client's address as uvicorn reports it (the proxy's client when
            ``trusted_proxies`` names the proxy, docs/reliability.md S11); None outside
            requests.
        actor: Who acts: ``user:<name>``, ``worker:<name>``, ``admin`` (CLI) or ``server``.
        task_id: The task the call is about, once known (for log lines).
    """

    request_id: str | None = None
    client_addr: str | None = None
    actor: str = "server"
    task_id: str | None = None


_current: ContextVar[RequestContext] = ContextVar(
    "codex_tui_request",
    default=RequestContext(),  # noqa: B039 - frozen, so sharing it is safe
)


def current() -> RequestContext:
    """The current call's context (defaults outside a request)."""
    return _current.get()


def update(**changes: str | None) -> RequestContext:
    """Replace fields of the current context (e.g. ``actor=...``, ``task_id=...``)."""
    ctx = replace(_current.get(), **changes)  # type: ignore[arg-type]
    _current.set(ctx)
    return ctx


def set_actor(actor: str) -> None:
    """Set who acts for the rest of this call (``user:<name>``, ``admin``, ...)."""
    update(actor=actor)


class RequestContextMiddleware:
    """ASGI middleware: gives each HTTP request a context and echoes ``X-Request-ID``.

    A sane incoming ``X-Request-ID`` (1-64 of ``[A-Za-z0-9._:-]``) is kept, so a request can
    be followed from a proxy's log; anything else is replaced by a fresh 16-hex-digit id.
    Plain ASGI rather than ``BaseHTTPMiddleware`` so streaming responses are not buffered.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope.get("headers", ()):
            if name == _HEADER:
                given = value.decode("latin-1")
                break
        request_id = given if given and _SANE_ID.match(given) else secrets.token_hex(8)
        client = scope.get("client")
        token = _current.set(
            RequestContext(
                request_id=request_id,
                client_addr=client[0] if client else None,
                actor="anonymous",
            )
        )
        raw_id = request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((_HEADER, raw_id))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
