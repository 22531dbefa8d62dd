"""A raw gateway client for the simulator's tests, and the fixtures that hand it out.

The client opens its TCP (and TLS) stream itself and closes it explicitly: trio-websocket leaves
a client socket open when the peer closes, which would surface as a ResourceWarning (an error
under ``-W error``) in some later, unrelated test.
"""

from __future__ import annotations

import json
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import trio_websocket

from discore_voice.testing import LocalDiscord, open_local_discord

ZLIB_SUFFIX = b"\x00\x00\xff\xff"
WAIT = 5.0


class Closed(Exception):
    """The server closed the websocket; ``code`` is its close code."""

    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


class RawGateway:
    """Just enough of a gateway client to drive the simulator payload by payload."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, compress: bool) -> None:
        self.ws = ws
        self.compress = compress
        self._inflator = zlib.decompressobj()
        self._buffer = bytearray()
        self.received: list[dict[str, Any]] = []
        self.raw_frames: list[str | bytes] = []

    async def send(self, payload: object) -> None:
        if isinstance(payload, str | bytes):
            await self.ws.send_message(payload)
        else:
            await self.ws.send_message(json.dumps(payload))

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            while True:
                try:
                    message = await self.ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    raise Closed(exc.reason.code if exc.reason else None) from None
                self.raw_frames.append(message)
                if self.compress:
                    assert isinstance(message, bytes)
                    self._buffer += message
                    if not message.endswith(ZLIB_SUFFIX):
                        continue
                    message = self._inflator.decompress(bytes(self._buffer)).decode()
                    self._buffer.clear()
                payload: dict[str, Any] = json.loads(message)
                self.received.append(payload)
                return payload

    async def recv_op(self, op: int) -> dict[str, Any]:
        while True:
            payload = await self.recv()
            if payload["op"] == op:
                return payload

    async def dispatch(self, kind: str) -> dict[str, Any]:
        """The next dispatch of type ``kind``, skipping any other message."""
        while True:
            payload = await self.recv()
            if payload["op"] == 0 and payload["t"] == kind:
                return payload

    async def close_code(self) -> int | None:
        """Read until the server closes; fail if it sends anything but dispatches/acks first."""
        try:
            while True:
                await self.recv()
        except Closed as closed:
            return closed.code

    async def hello(self) -> dict[str, Any]:
        payload = await self.recv()
        assert payload["op"] == 10
        return payload

    async def identify(
        self,
        token: str,
        *,
        intents: int = (1 << 0) | (1 << 7),
        shard: list[int] | None = None,
        hello: bool = True,
    ) -> dict[str, Any]:
        if hello:
            await self.hello()
        data: dict[str, Any] = {
            "token": token,
            "intents": intents,
            "properties": {"os": "linux", "browser": "tests", "device": "tests"},
        }
        if shard is not None:
            data["shard"] = shard
        await self.send({"op": 2, "d": data})
        ready = await self.dispatch("READY")
        return ready


ConnectGateway = Callable[..., AbstractAsyncContextManager[RawGateway]]


@asynccontextmanager
async def connect_gateway(
    url: str,
    query: str = "?v=10&encoding=json",
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RawGateway]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    tcp = await trio.open_tcp_stream(parts.hostname, parts.port)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
    try:
        if ssl_context is not None:
            stream = trio.SSLStream(tcp, ssl_context, server_hostname=parts.hostname)
            with trio.fail_after(WAIT):
                await stream.do_handshake()
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WAIT):
                ws = await trio_websocket.wrap_client_stream(nursery, stream, parts.hostname, query)
            try:
                yield RawGateway(ws, "compress=zlib-stream" in query)
            finally:
                with trio.move_on_after(1):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


@pytest.fixture(scope="session")
def connect() -> ConnectGateway:
    return connect_gateway


@pytest.fixture
async def discord() -> AsyncIterator[LocalDiscord]:
    async with open_local_discord(heartbeat_interval=1000) as sim:
        yield sim
