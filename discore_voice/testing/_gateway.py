"""The main gateway (v10, JSON, optional zlib-stream) over trio-websocket.

Each connection is contained: whatever a client sends, it gets the close code Discord documents,
and an unexpected failure in its handler is logged and ends that connection only, so one bad
client never takes down the simulator's nursery (and the other clients' sessions) with it.
"""

from __future__ import annotations

import json
import logging
import ssl
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import trio
import trio_websocket

from .._core.fields import Fields, decode_json_object
from .._errors import ProtocolError
from ._world import (
    KNOWN_INTENTS,
    NON_RESUMABLE_CLOSE_CODES,
    PRIVILEGED_INTENTS,
    GatewaySession,
    World,
)
from ._ws_server import CLOSE_TIMEOUT, ServedConnection, Violation, serve_websockets

__all__ = ["ConnectionInfo", "GatewayClientConnection", "GatewayServer"]

logger = logging.getLogger("discore_voice.testing.gateway")

#: Discord closes with 4002 above this many bytes per client payload.
MAX_PAYLOAD_BYTES = 4096
_CLIENT_OPS_AFTER_IDENTIFY = frozenset({3, 4, 8, 31, 43})


@dataclass(eq=False)
class ConnectionInfo:
    """One websocket connection to the gateway, identified or not, as plain data."""

    path: str
    compress: bool
    received_ops: list[int] = field(default_factory=list)
    sent_ops: list[int] = field(default_factory=list)
    close_code: int | None = None
    closed_by: Literal["server", "client"] | None = None
    session: GatewaySession | None = None

    @property
    def closed(self) -> bool:
        return self.close_code is not None


def _redacted(payload: dict[str, Any]) -> dict[str, Any]:
    data = payload.get("d")
    if isinstance(data, dict) and "token" in data:
        return {**payload, "d": {**data, "token": "<redacted>"}}
    return payload


class GatewayClientConnection(ServedConnection):
    """The protocol state of one gateway websocket; the world talks to it through send/close."""

    def __init__(
        self,
        world: World,
        ws: trio_websocket.WebSocketConnection,
        stream: trio.abc.Stream,
        info: ConnectionInfo,
        *,
        version: str | None,
        encoding: str | None,
        compress: str | None,
    ) -> None:
        # A simulator bug must look like Discord's own hiccup: 4000, resumable.
        super().__init__(ws, stream, crash=(4000, "Unknown error."), log=logger)
        self._world = world
        self.info = info
        self._compressor = zlib.compressobj() if info.compress else None
        self._session: GatewaySession | None = None
        self._recent: deque[float] = deque()
        self._query = (version, encoding, compress)

    # -- the world's side (_Outbox) ------------------------------------------------------------

    def send(self, payload: dict[str, Any]) -> None:
        if self.closing:
            return
        self.info.sent_ops.append(payload["op"])
        text = json.dumps(payload, separators=(",", ":"))
        if self._compressor is None:
            self.queue(text)
            return
        data = self._compressor.compress(text.encode())
        self.queue(data + self._compressor.flush(zlib.Z_SYNC_FLUSH))

    def close(self, code: int, reason: str = "") -> bool:
        if not super().close(code, reason):
            return False
        if self._session is not None and code in NON_RESUMABLE_CLOSE_CODES:
            # At once, not when the socket is gone: a test that saw the close code can rely
            # on the session's state.
            self._world.invalidate(self._session)
        return True

    # -- the skeleton's hooks --------------------------------------------------------------------

    def greet(self) -> None:
        version, encoding, compress = self._query
        if version not in (None, "10"):
            self.close(4012, "Invalid API version")
        elif encoding not in (None, "json"):
            self.close(4002, "Unsupported encoding: the simulator speaks json only")
        elif compress not in (None, "zlib-stream"):
            self.close(4002, "Unsupported compression: only zlib-stream")
        else:
            self.send(self._hello())

    def heartbeat_timed_out(self) -> tuple[int, str]:
        return 4009, "Session timed out: no heartbeat"

    def finished(self, code: int, by: Literal["server", "client"]) -> None:
        self.info.close_code, self.info.closed_by = code, by
        if self._session is not None:
            self._world.detach(self._session, self, code)
        else:
            self._world._changed()

    def _hello(self) -> dict[str, Any]:
        interval = self._world.heartbeat_interval
        if self._world.heartbeat_timeout is not None:
            self.heartbeat_deadline = trio.current_time() + self._world.heartbeat_timeout
        return {"op": 10, "d": {"heartbeat_interval": interval}, "s": None, "t": None}

    # -- protocol ------------------------------------------------------------------------------

    def _rate_limit(self) -> None:
        limit, window = self._world.rate_limit
        now = trio.current_time()
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - window:
            self._recent.popleft()
        if len(self._recent) > limit:
            raise Violation(4008, "Rate limited.")

    def handle(self, message: str | bytes) -> None:
        self._rate_limit()
        raw = message.encode() if isinstance(message, str) else message
        if len(raw) > MAX_PAYLOAD_BYTES:
            raise Violation(4002, "Payload too large.")
        try:
            payload = decode_json_object(raw, what="gateway payload")
        except ProtocolError:
            raise Violation(4002, "Error while decoding payload.") from None
        if self._session is not None and not self._session.alive:
            # After op 9 (false) the connection is unauthenticated again: Discord answers 4003
            # to anything but a new Identify or Resume.
            self._world.detach(self._session, self, None)
            self._session = None
        op = payload.get("op")
        if isinstance(op, int) and not isinstance(op, bool):
            self.info.received_ops.append(op)
        if self._session is not None:
            self._session.received.append(_redacted(payload))
        if not isinstance(op, int) or isinstance(op, bool):
            raise Violation(4001, "Unknown opcode.")
        data = payload.get("d")
        try:
            if op == 1:
                self._heartbeat(data)
            elif op == 2:
                self._identify(data)
            elif op == 6:
                self._resume(data)
            elif op in _CLIENT_OPS_AFTER_IDENTIFY:
                if self._session is None:
                    raise Violation(4003, "Not authenticated.")
                self._after_identify(self._session, op, data)
            else:
                raise Violation(4001, "Unknown opcode.")
        except ProtocolError as exc:
            raise Violation(4001, "Invalid payload for an opcode.") from exc
        self._world._changed()

    def _heartbeat(self, data: object) -> None:
        if data is not None and (not isinstance(data, int) or isinstance(data, bool)):
            raise Violation(4001, "Invalid heartbeat payload.")
        if self._world.heartbeat_timeout is not None:
            self.heartbeat_deadline = trio.current_time() + self._world.heartbeat_timeout
        if self._session is not None and self._session.heartbeat_acks_stalled:
            return
        ack = {"op": 11, "d": None, "s": None, "t": None}
        if self._session is not None:
            self._world.send_op(self._session, ack)
        else:
            self.send(ack)

    def _identify(self, data: object) -> None:
        if self._session is not None:
            raise Violation(4005, "Already authenticated.")
        fields = Fields(data, "identify")
        token = fields.string("token")
        fields.mapping("properties")
        intents = fields.integer("intents")
        bot = self._world.bot_for_token(token)
        if bot is None:
            raise Violation(4004, "Authentication failed.")
        if intents < 0 or intents & ~KNOWN_INTENTS:
            raise Violation(4013, "Invalid intent(s).")
        if intents & PRIVILEGED_INTENTS & ~bot.privileged_intents:
            raise Violation(4014, "Disallowed intent(s).")
        shard: tuple[int, int] | None = None
        if isinstance(data, dict) and data.get("shard") is not None:
            try:
                pair = fields.int_list("shard")
            except ProtocolError:
                raise Violation(4010, "Invalid shard.") from None
            if len(pair) != 2 or not 0 <= pair[0] < pair[1]:
                raise Violation(4010, "Invalid shard.")
            shard = (pair[0], pair[1])
        outbox = self
        # Fields accepted it, so it is the dict json.loads made.
        identify = {k: v for k, v in data.items() if k != "token"} if isinstance(data, dict) else {}
        session = GatewaySession(bot, "", identify, intents, shard)
        if len(self._world.guilds_for(session)) > self._world.max_guilds_per_shard:
            raise Violation(4011, "Sharding required.")
        self._session = self._world.start_session(bot, identify, intents, shard, outbox)
        self.info.session = self._session
        self._session.received.append(_redacted({"op": 2, "d": data}))

    def _resume(self, data: object) -> None:
        if self._session is not None:
            raise Violation(4005, "Already authenticated.")
        fields = Fields(data, "resume")
        token = fields.string("token")
        session_id = fields.string("session_id")
        seq = fields.optional_int("seq", default=0)
        assert seq is not None
        bot = self._world.bot_for_token(token)
        if bot is None:
            raise Violation(4004, "Authentication failed.")
        session = self._world.find_session(session_id)
        if session is None or not session.alive or session.bot is not bot:
            logger.info("resume of an unknown or invalidated session: op 9")
            self.send({"op": 9, "d": False, "s": None, "t": None})
            return
        if not 0 <= seq <= session.seq:
            raise Violation(4007, "Invalid seq.")
        self._session = session
        self.info.session = session
        session.received.append(_redacted({"op": 6, "d": data}))
        self._world.resume_session(session, seq, self)

    def _after_identify(self, session: GatewaySession, op: int, data: object) -> None:
        fields = Fields(data, f"op {op}")
        if op == 4:
            guild_id = fields.snowflake("guild_id")
            if "channel_id" not in fields:
                raise ProtocolError("op 4: field 'channel_id' is missing")
            channel_id = fields.optional_snowflake("channel_id")
            self_mute = fields.boolean("self_mute")
            self_deaf = fields.boolean("self_deaf")
            self._world.handle_voice_state_update(
                session, guild_id, channel_id, self_mute, self_deaf
            )
        elif op == 8:
            self._request_members(session, fields)

    def _request_members(self, session: GatewaySession, fields: Fields) -> None:
        guild_id = fields.snowflake("guild_id")
        nonce = fields.optional_str("nonce")
        world = self._world
        guild = world._guilds.get(guild_id)
        if guild is None or not session.covers(guild_id):
            return
        members = [world._member(guild, user) for user in world._members(guild)]
        chunk: dict[str, Any] = {
            "guild_id": str(guild_id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if nonce is not None:
            chunk["nonce"] = nonce
        world._dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)


class GatewayServer:
    """Accepts websocket connections, each a contained :class:`GatewayClientConnection`."""

    def __init__(self, world: World, ssl_context: ssl.SSLContext | None) -> None:
        self._world = world
        self._ssl_context = ssl_context
        self.connections: list[ConnectionInfo] = []

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await serve_websockets(
            self._accept,
            host,
            port,
            ssl_context=self._ssl_context,
            max_message_size=1 << 20,
            log=logger,
            task_status=task_status,
        )

    async def _accept(
        self, request: trio_websocket.WebSocketRequest, stream: trio.abc.Stream
    ) -> None:
        query = parse_qs(urlsplit(request.path).query)

        def param(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        compress = param("compress")
        info = ConnectionInfo(request.path, compress == "zlib-stream")
        self.connections.append(info)
        ws = await request.accept()
        connection = GatewayClientConnection(
            self._world,
            ws,
            stream,
            info,
            version=param("v"),
            encoding=param("encoding"),
            compress=compress,
        )
        try:
            await connection.run()
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose()
