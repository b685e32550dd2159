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

    Args:
        base_url: The server's URL.
        token: The user token.
    """

    def __init__(self, base_url: str, token: str) -> None:
        self._deferred_args = (base_url, token)
        self.base_url = base_url.rstrip("/")
        """The server's URL, as the SDK client holds it (read without building that)."""
        self._deferred_client: CodexTuiClient | None = None
        self._deferred_lock = threading.Lock()

    @property
    def is_built(self) -> bool:
        """True once the SDK client exists."""
        return self._deferred_client is not None

    def build(self) -> CodexTuiClient:
        """The SDK client: imported and made now if it was not yet (thread-safe; the import
        takes some 100 ms on a busy machine)."""
        with self._deferred_lock:
            if self._deferred_client is None:
                from server_client.client import CodexTuiClient

                self._deferred_client = CodexTuiClient(*self._deferred_args)
            return self._deferred_client

    async def ready(self) -> CodexTuiClient:
        """The SDK client, built in a thread if it was not yet (the event loop runs on)."""
        if self._deferred_client is not None:
            return self._deferred_client
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
