"""A main gateway (v10, JSON, zlib-stream) that tests can make lie, one step at a time.

Well-behaved by default: HELLO, IDENTIFY -> READY, heartbeats -> ACK, RESUME -> RESUMED, and op 4
answered with VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE pointing at the hostile voice server.
Each step is a method of :class:`GatewayScript`; a test overrides the one it attacks. Messages go
through the zlib stream when the shard asks for it (it always does), exactly as Discord frames
them, so a hostile payload reaches the shard's real decoder.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio
import trio_websocket

__all__ = ["BOT_ID", "GatewayConn", "GatewayScript", "GatewayServer", "open_gateway"]

BOT_ID = 4_000_000_000_000_000_001
DISPATCH, HEARTBEAT, IDENTIFY, VOICE_STATE, RESUME = 0, 1, 2, 4, 6
HELLO, HEARTBEAT_ACK = 10, 11


@dataclass(frozen=True)
class GatewayReceived:
    """One message from the shard: when (trio's clock), on which connection, what (no token)."""

    at: float
    connection: int
    op: int | None
    d: Any


class GatewayScript:
    """The well-behaved main gateway; each ``on_*`` step is one method to override."""

    def __init__(self, *, heartbeat_interval_ms: float = 41_250.0) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms

    async def on_open(self, conn: GatewayConn) -> None:
        await conn.send({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})

    async def on_identify(self, conn: GatewayConn, d: Any) -> None:
        server = conn.server
        server.new_session()
        await conn.dispatch(
            "READY",
            {
                "v": 10,
                "user": {"id": str(BOT_ID), "username": "hostile bot", "bot": True},
                "session_id": server.session_id,
                "resume_gateway_url": server.url,
                "guilds": [{"id": str(guild), "unavailable": True} for guild in server.guilds],
            },
        )
        await self.after_session(conn)

    async def on_resume(self, conn: GatewayConn, d: Any) -> None:
        await conn.dispatch("RESUMED", {})
        await self.after_session(conn)

    async def after_session(self, conn: GatewayConn) -> None:
        """READY or RESUMED went out: a test that attacks a live session starts here."""

    async def on_heartbeat(self, conn: GatewayConn, d: Any) -> None:
        await conn.send({"op": HEARTBEAT_ACK, "d": None})

    async def on_voice_state(self, conn: GatewayConn, d: Any) -> None:
        guild, channel = d["guild_id"], d["channel_id"]
        state = {
            "guild_id": guild,
            "channel_id": channel,
            "user_id": str(BOT_ID),
            "session_id": "hostile-voice-session",
            "self_mute": d.get("self_mute", False),
            "self_deaf": d.get("self_deaf", False),
        }
        await conn.dispatch("VOICE_STATE_UPDATE", state)
        if channel is not None:
            server_update = {
                "token": "hostile-voice-token",
                "guild_id": guild,
                "endpoint": conn.server.voice_endpoint,
            }
            await conn.dispatch("VOICE_SERVER_UPDATE", server_update)

    async def on_message(self, conn: GatewayConn, op: int | None, d: Any) -> None:
        """Any other op."""


class GatewayConn:
    """One websocket connection to the hostile gateway."""

    def __init__(
        self, server: GatewayServer, number: int, ws: trio_websocket.WebSocketConnection, path: str
    ) -> None:
        self.server = server
        self.number = number
        self.ws = ws
        self.compressed = parse_qs(urlsplit(path).query).get("compress") == ["zlib-stream"]
        self._zlib = zlib.compressobj()
        self.opened_at = trio.current_time()
        self.close_code: int | None = None

    async def send(self, payload: dict[str, Any]) -> None:
        """A gateway payload; ``s`` and ``t`` default to null, as Discord sends them."""
        payload = {"s": None, "t": None, **payload}
        await self.send_text(json.dumps(payload, separators=(",", ":")))

    async def dispatch(self, name: str, d: Any) -> None:
        """An op 0 dispatch, numbered with the session's next sequence."""
        await self.send({"op": DISPATCH, "t": name, "s": self.server.next_seq(), "d": d})

    async def send_text(self, text: str) -> None:
        """Any text as one gateway message, through the zlib stream if the shard asked for it."""
        if self.compressed:
            data = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
            await self.send_frame(data)
        else:
            await self.send_frame(text)

    async def send_frame(self, frame: str | bytes) -> None:
        """A websocket frame as it is, outside the zlib stream's framing."""
        with suppress(trio_websocket.ConnectionClosed, trio.BrokenResourceError):
            await self.ws.send_message(frame)

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code``; returns once the client answered (or after 2 s)."""
        self.close_code = code
        with trio.move_on_after(2.0):
            await self.ws.aclose(code, reason)


class GatewayServer:
    """The hostile main gateway on 127.0.0.1; start it with :func:`open_gateway`."""

    def __init__(self, script: GatewayScript | None = None, *, voice_endpoint: str = "") -> None:
        self.script = script if script is not None else GatewayScript()
        #: What VOICE_SERVER_UPDATE carries: the hostile voice server's full ws:// URL.
        self.voice_endpoint = voice_endpoint
        #: The guilds READY lists (unavailable ones: no GUILD_CREATE follows).
        self.guilds: list[int] = []
        self.port = 0
        #: Every connection so far, in order; the latest is where the shard is now.
        self.connections: list[GatewayConn] = []
        self.received: list[GatewayReceived] = []
        #: READYs sent: each starts a new session.
        self.sessions = 0
        self._seq = 0
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def session_id(self) -> str:
        return f"hostile-session-{self.sessions}"

    def new_session(self) -> None:
        self.sessions += 1
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def ops(self, op: int) -> list[GatewayReceived]:
        return [r for r in self.received if r.op == op]

    @property
    def latest(self) -> GatewayConn:
        assert self.connections, "the shard never connected"
        return self.connections[-1]

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever the server records something."""
        while not predicate():
            await self._changed.wait()

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        listener = listeners[0]
        assert isinstance(listener, trio.SocketListener)
        self.port = listener.socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle_stream, listeners)

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                request = await trio_websocket.wrap_server_stream(nursery, stream)
                ws = await request.accept()
                conn = GatewayConn(self, len(self.connections) + 1, ws, request.path)
                self.connections.append(conn)
                self.changed()
                try:
                    await self._serve(conn)
                finally:
                    # The shard's code, unless the server closed first. The reader task is left
                    # to end with the TCP connection, so that a close handshake can complete.
                    reason = ws.closed
                    if conn.close_code is None and reason is not None:
                        conn.close_code = reason.code
                    self.changed()
        except (trio_websocket.HandshakeError, trio.BrokenResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, conn: GatewayConn) -> None:
        script = self.script
        await script.on_open(conn)
        while True:
            try:
                message = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            try:
                payload = json.loads(message)
                op, d = payload.get("op"), payload.get("d")
            except (ValueError, AttributeError):
                op, d = None, None
            if isinstance(d, dict) and "token" in d:
                d = {**d, "token": "<redacted>"}
            self.received.append(GatewayReceived(trio.current_time(), conn.number, op, d))
            self.changed()
            if op == IDENTIFY:
                await script.on_identify(conn, d)
            elif op == RESUME:
                await script.on_resume(conn, d)
            elif op == HEARTBEAT:
                await script.on_heartbeat(conn, d)
            elif op == VOICE_STATE:
                await script.on_voice_state(conn, d)
            else:
                await script.on_message(conn, op, d)


@asynccontextmanager
async def open_gateway(
    script: GatewayScript | None = None,
    *,
    voice_endpoint: str = "",
    guilds: list[int] | None = None,
) -> AsyncIterator[GatewayServer]:
    """Run a hostile main gateway for the block."""
    server = GatewayServer(script, voice_endpoint=voice_endpoint)
    server.guilds = list(guilds or [])
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
