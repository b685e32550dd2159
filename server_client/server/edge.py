"""Provides the server's HTTP edge guards: bounded request reads and the body size limit
(docs/reliability.md S12, S10).

uvicorn bounds the idle time between requests of a keep-alive connection
(``timeout_keep_alive``) but not the reading of a request: a client that sends half its
headers, or headers and half a body, holds a connection (a file descriptor, a task) for ever
(uvicorn 0.54's ``httptools_impl``/``h11_impl`` arm no timer before a response completes).
Two guards close that:

- :class:`GuardedHttpToolsProtocol`, uvicorn's httptools protocol with a header deadline:
  a request's headers must be complete within ``request_read_timeout_s`` of the connection
  (first request) or of the request's first byte (later ones), else the connection is closed.
- :class:`RequestBodyGuard`, an ASGI middleware: a body read that stalls for
  ``request_read_timeout_s`` is answered 408, and a body over ``max_body_bytes`` 413 (up front
  from ``Content-Length``, else once the bytes read pass it), each an
  ``application/problem+json`` body with ``Connection: close``.

Only reading the request is bounded: a response may last as long as it likes (event streams,
the workers' long polls), and a request whose body is read completely is never cut.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server_client.server.problems import problem_response

log = logging.getLogger(__name__)


class BodyReadTimeout(HTTPException):
    """The request body stalled (408, rendered as a problem by server_client.server.problems)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408, f"the request body stalled: no data for {timeout_s:g} s; send it again"
        )


class BodyTooLarge(HTTPException):
    """The request body is over the server's ``max_body_bytes`` (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_detail(limit))


def too_large_detail(limit: int) -> str:
    """The detail of a 413 for a body over ``limit`` bytes (names the setting)."""
    return (
        f"the request body is larger than {limit} bytes "
        "(server setting max_body_bytes, CODEX_TUI_SERVER_MAX_BODY_BYTES)"
    )


def _expects_body(scope: Scope) -> tuple[bool, int | None]:
    """Whether the request announces a body, and its ``Content-Length`` (None: absent or
    not a number)."""
    length: int | None = None
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding":
            chunked = True
    return chunked or bool(length), length


class RequestBodyGuard:
    """ASGI middleware: bounds the size (bytes) and the stall time (s) of request bodies.

    Args:
        app: The app it wraps.
        max_body_bytes: Largest body (bytes): a larger ``Content-Length`` is answered 413
            before the app runs; a body without one is refused (413, raised from
            ``receive``) once more bytes than this arrived.
        read_timeout_s: Longest wait (s) for the next piece of a body the app reads; past
            it ``receive`` raises :class:`BodyReadTimeout` (408).

    A response that starts before its request's body was read to the end carries
    ``Connection: close``, so the rest of a refused or unread body never holds the connection.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, read_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        expects_body, length = _expects_body(scope)
        if length is not None and length > self.max_body_bytes:
            response = problem_response(
                413, "Content Too Large", too_large_detail(self.max_body_bytes)
            )
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        done = not expects_body
        received = 0

        async def guarded_receive() -> Message:
            nonlocal done, received
            if done:
                return await receive()
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    message = await receive()
            except TimeoutError:
                log.info("request body stalled for %g s: answered 408", self.read_timeout_s)
                raise BodyReadTimeout(self.read_timeout_s) from None
            if message["type"] != "http.request":
                done = True
                return message
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)
            if not message.get("more_body", False):
                done = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != b"connection"
                ]
                headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, guarded_receive, closing_send)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that closes a connection whose request headers do not
    arrive within :attr:`header_timeout_s` (s) of the connection (its first request) or of
    the request's first byte (a later request on a keep-alive connection, whose idle time
    before that byte uvicorn's ``timeout_keep_alive`` bounds).

    Use :func:`guarded_protocol` to get one with a given timeout, and give it to
    ``uvicorn.Config(http=...)``.
    """

    header_timeout_s: ClassVar[float] = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(
                self.header_timeout_s, self._headers_too_slow
            )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            log.info(
                "closed a connection whose request headers did not arrive within %g s",
                self.header_timeout_s,
            )
            self.transport.close()


def guarded_protocol(header_timeout_s: float) -> type[GuardedHttpToolsProtocol]:
    """A :class:`GuardedHttpToolsProtocol` class whose header deadline is
    ``header_timeout_s`` (s)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout_s": header_timeout_s},
    )
