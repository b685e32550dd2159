"""Provides ``CuttingProxy``: a loopback TCP proxy that breaks connections on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import random
from urllib.parse import urlsplit


class CuttingProxy:
    """A TCP proxy that drops each connection after a random number of response bytes.

    With ``drop_first=N`` the first N connections forward the request but lose the whole
    response, as when a network fails after the server has acted.
    """

    def __init__(
        self, upstream: str, seed: int, low: int = 150, high: int = 6000, drop_first: int = 0
    ) -> None:
        parts = urlsplit(upstream)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.random = random.Random(seed)
        self.low, self.high = low, high
        self.connections = 0
        self.cuts = 0
        self.drop_first = drop_first
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.connections <= self.drop_first:
            budget = 0
        else:
            budget = self.random.randint(self.low, self.high)
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)

        async def pump_up() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()

        async def pump_down() -> None:
            nonlocal budget
            with contextlib.suppress(ConnectionError):
                while data := await up_reader.read(512):
                    if len(data) >= budget:
                        writer.write(data[:budget])
                        await writer.drain()
                        self.cuts += 1
                        return
                    budget -= len(data)
                    writer.write(data)
                    await writer.drain()

        up = asyncio.create_task(pump_up())
        await pump_down()
        up.cancel()
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
