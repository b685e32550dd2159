"""Provides DeferredClient: the SDK client, imported and built after the TUI's first frame.

Importing the SDK (:mod:`server_client.client`: httpx and the pydantic wire models) takes
longer than Textual needs to draw the first frame, which shows no server data (the task
list's first poll waits for it). ``codex-tui`` therefore hands the app a DeferredClient: it
stands for the :class:`~server_client.client.CodexTuiClient` of one server and token, and
builds it on first use — in a thread when awaited through :func:`client_ready` (what the task
list's first poll does), so that the import never blocks the event loop; synchronously when an
attribute is read before that (correct, only slower).
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server_client.client import CodexTuiClient

    _Base = CodexTuiClient
else:
    _Base = object

__all__ = ["DeferredClient", "client_ready"]


class DeferredClient(_Base):
    """A :class:`~server_client.client.CodexTuiClient` built on first use.

    Every attribute of the SDK client is read from the one built by :meth:`build`; for the
    type checker a DeferredClient *is* a CodexTuiClient.

    Made without a server (``DeferredClient()``), it waits for :meth:`connect` (or
    :meth:`fail`): ``codex-tui`` settles where to connect in a thread after the first frame
    (reading config.toml imports pydantic), and hands the client to the app before that.

    Args:
        base_url: The server's URL (None: given later to :meth:`connect`).
        token: The user token.
    """

    def __init__(self, base_url: str | None = None, token: str | None = None) -> None:
        self._deferred_args: tuple[str, str] | None = None
        self.base_url = ""
        """The server's URL, as the SDK client holds it (read without building that); ""
        until :meth:`connect`."""
        self._deferred_client: CodexTuiClient | None = None
        self._deferred_lock = threading.Lock()
        self._deferred_known = False
        self._deferred_error: str | None = None
        self._deferred_waiters: list[asyncio.Future[None]] = []
        if base_url is not None:
            self.connect(base_url, token or "")

    @property
    def is_built(self) -> bool:
        """True once the SDK client exists."""
        return self._deferred_client is not None

    @property
    def is_connected(self) -> bool:
        """True once the server and token are known (:meth:`connect`)."""
        return self._deferred_args is not None

    def connect(self, base_url: str, token: str) -> None:
        """Give the server and token; what waits for them (:meth:`ready`) goes on. Call it
        once, from the event loop's thread (or before the loop runs)."""
        self._deferred_args = (base_url, token)
        self.base_url = base_url.rstrip("/")
        self._wake()

    def fail(self, message: str) -> None:
        """No server will be given: what waits (and whatever calls later) raises
        ``httpx.ConnectError`` with ``message``. From the event loop's thread."""
        self._deferred_error = message
        self._wake()

    def _wake(self) -> None:
        self._deferred_known = True
        waiters, self._deferred_waiters = self._deferred_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def build(self) -> CodexTuiClient:
        """The SDK client: imported and made now if it was not yet (thread-safe; the import
        takes some 100 ms on a busy machine).

        Raises:
            httpx.ConnectError: the server is not known yet (:meth:`connect` not called), or
                will not be (:meth:`fail`); the message says which. Never waits: on the event
                loop's thread, waiting would keep :meth:`connect` from ever being called.
        """
        with self._deferred_lock:
            if self._deferred_client is None:
                if self._deferred_args is None:
                    raise self._not_connected()
                from server_client.client import CodexTuiClient

                self._deferred_client = CodexTuiClient(*self._deferred_args)
            return self._deferred_client

    def _not_connected(self) -> Exception:
        import httpx  # what the TUI's request and action failures already catch and word

        return httpx.ConnectError(
            self._deferred_error or "codex-tui is still finding its server; try again"
        )

    async def ready(self) -> CodexTuiClient:
        """The SDK client, built in a thread if it was not yet (the event loop runs on);
        before :meth:`connect`, it waits for that first.

        Raises:
            httpx.ConnectError: :meth:`fail` was called instead.
        """
        if self._deferred_client is not None:
            return self._deferred_client
        if not self._deferred_known:
            waiter = asyncio.get_running_loop().create_future()
            self._deferred_waiters.append(waiter)
            await waiter
        if self._deferred_args is None:
            raise await asyncio.to_thread(self._not_connected)  # httpx: not on the loop
        return await asyncio.to_thread(self.build)

    def __getattr__(self, name: str) -> Any:
        """An attribute of the SDK client (built now if it was not yet)."""
        if name.startswith("_deferred_"):  # not set yet (e.g. while being copied)
            raise AttributeError(name)
        client = self._deferred_client
        return getattr(client if client is not None else self.build(), name)

    async def aclose(self) -> None:
        """Close the SDK client if it was built (nothing to close otherwise)."""
        if self._deferred_client is not None:
            await self._deferred_client.aclose()


async def client_ready(client: CodexTuiClient) -> None:
    """Wait until ``client`` can be used without blocking the event loop: a
    :class:`DeferredClient` is built in a thread; any other client is ready already."""
    if isinstance(client, DeferredClient):
        await client.ready()
