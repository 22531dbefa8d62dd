"""A voice server (gateway v8 and UDP) that tests can make lie, one step at a time.

The simulator in ``discore_voice.testing`` plays by the rules, so it cannot show what the client
does with a server that does not. This one is well-behaved by default (Hello, Ready, IP discovery,
Session Description with a 32-byte key and DAVE version 0, heartbeat ACKs, Resume -> Resumed) and
every step is a method of :class:`VoiceScript` that a test overrides, or a payload it patches.
Well-formed payloads come from the library's own core classes, so the defaults speak the real
wire format; hostile ones are plain JSON, text or bytes, because being wrong is their job.

Everything the server receives is recorded with trio's clock, so a test asserts on real counts
(connections, identifies, resumes, heartbeats, datagrams) instead of sleeping and hoping.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket

from discore_voice._core.ip_discovery import IP_DISCOVERY_SIZE, build_response
from discore_voice._core.transport import SUPPORTED_MODES, TransportCipher, create_cipher
from discore_voice._core.voice.frames import decode_client_text
from discore_voice._core.voice.payloads import HeartbeatAck, Hello, Ready, SessionDescription
from discore_voice._errors import ProtocolError

__all__ = [
    "DROP",
    "Address",
    "Datagram",
    "Received",
    "VoiceConn",
    "VoiceScript",
    "VoiceServer",
    "open_voice_server",
]

Address = tuple[str, int]
#: A patch value that removes the field from the default payload.
DROP: Any = object()
#: Voice gateway ops: what the client sends, then what the server sends.
IDENTIFY, SELECT_PROTOCOL, HEARTBEAT, RESUME = 0, 1, 3, 7
READY, SESSION_DESCRIPTION, HEARTBEAT_ACK, HELLO, RESUMED = 2, 4, 6, 8, 9
_MAX_MESSAGE = 1 << 21  # what the server accepts; the client never sends anything near it


@dataclass(frozen=True)
class Received:
    """One JSON message from the client: when (trio's clock), on which connection, what.

    ``server_seq`` is the last seq the server had sent by then: no ``seq_ack`` may exceed it.
    """

    at: float
    connection: int
    op: int | None
    d: Any
    server_seq: int


@dataclass(frozen=True)
class Datagram:
    """One UDP datagram from the client."""

    at: float
    data: bytes
    source: Address


class VoiceScript:
    """The well-behaved voice server; each ``on_*`` step is one method to override.

    ``patch`` maps an op the server sends to fields replacing (or, with :data:`DROP`, removing)
    those of the default ``d``; ``raw`` maps an op to a frame (text or bytes) sent instead of it.
    Both apply wherever the default steps send that op, so most hostile cases need no subclass.
    """

    def __init__(
        self,
        *,
        heartbeat_interval_ms: float = 13_750.0,
        modes: tuple[str, ...] = SUPPORTED_MODES,
        dave_protocol_version: int = 0,
        patch: Mapping[int, Mapping[str, Any]] | None = None,
        raw: Mapping[int, str | bytes] | None = None,
    ) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.modes = modes
        self.dave_protocol_version = dave_protocol_version
        self.patch = dict(patch or {})
        self.raw = dict(raw or {})

    async def send(self, conn: VoiceConn, op: int, d: Any, *, numbered: bool = True) -> None:
        """Send op ``op`` as the script says: raw, patched or as given."""
        if op in self.raw:
            await conn.send_frame(self.raw[op])
            return
        patch = self.patch.get(op)
        if patch is not None and isinstance(d, dict):
            d = {**d, **patch}
            d = {key: value for key, value in d.items() if value is not DROP}
        await conn.send_op(op, d, numbered=numbered)

    # --- the steps ------------------------------------------------------------------------

    async def on_open(self, conn: VoiceConn) -> None:
        hello = Hello(self.heartbeat_interval_ms).to_d()
        await self.send(conn, HELLO, hello, numbered=False)

    async def on_identify(self, conn: VoiceConn, d: Any) -> None:
        server = conn.server
        ready = Ready(server.ssrc, server.udp_host, server.udp_port, self.modes).to_d()
        await self.send(conn, READY, ready)

    async def on_select_protocol(self, conn: VoiceConn, d: Any) -> None:
        mode = d["data"]["mode"]
        key = conn.server.new_key(mode)
        description = SessionDescription(mode, key, self.dave_protocol_version).to_d()
        await self.send(conn, SESSION_DESCRIPTION, description)
        await self.after_session_description(conn)

    async def after_session_description(self, conn: VoiceConn) -> None:
        """The handshake is over: a test that attacks a live connection starts here."""

    async def on_heartbeat(self, conn: VoiceConn, d: Any) -> None:
        await self.send(conn, HEARTBEAT_ACK, HeartbeatAck(d["t"]).to_d())

    async def on_resume(self, conn: VoiceConn, d: Any) -> None:
        await self.send(conn, RESUMED, None)
        await self.after_resumed(conn)

    async def after_resumed(self, conn: VoiceConn) -> None:
        """A resume finished."""

    async def on_message(self, conn: VoiceConn, op: int | None, d: Any) -> None:
        """Any other JSON op (Speaking, DAVE's 23 and 31)."""

    async def on_binary(self, conn: VoiceConn, data: bytes) -> None:
        """A binary frame (DAVE ops 26 and 28)."""

    def on_ip_discovery(self, server: VoiceServer, request: bytes, source: Address) -> bytes:
        """The answer to an IP discovery request (or a keep-alive, which is the same datagram)."""
        return build_response(server.ssrc, source[0], source[1])


class VoiceConn:
    """One websocket connection to the hostile server; what a script uses to answer."""

    def __init__(
        self,
        server: VoiceServer,
        number: int,
        ws: trio_websocket.WebSocketConnection,
        stream: trio.abc.Stream,
    ) -> None:
        self.server = server
        self.number = number
        self.ws = ws
        self._stream = stream
        self.opened_at = trio.current_time()
        self.closed_at: float | None = None
        self.close_code: int | None = None

    async def send_op(self, op: int, d: Any, *, numbered: bool = True) -> None:
        """A JSON message; numbered ones carry the server's next ``seq`` (Hello is not)."""
        payload: dict[str, Any] = {"op": op, "d": d}
        if numbered:
            payload["seq"] = self.server.next_seq()
        await self.send_frame(json.dumps(payload, separators=(",", ":")))

    async def send_frame(self, frame: str | bytes) -> None:
        """Any text or binary frame, as it is; a connection the client closed swallows it."""
        with suppress(trio_websocket.ConnectionClosed, trio.BrokenResourceError):
            await self.ws.send_message(frame)

    async def send_dave(self, op: int, payload: bytes) -> None:
        """A binary DAVE frame: ``[u16 seq][u8 op][payload]``."""
        seq = self.server.next_seq() & 0xFFFF
        await self.send_frame(struct.pack(">HB", seq, op) + payload)

    async def send_raw_websocket_frame(self, frame: bytes) -> None:
        """Bytes straight onto the TCP stream, for frames no websocket library would build.

        The client may hang up halfway through (it should, on a frame it refuses).
        """
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._stream.send_all(frame)

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code``; returns once the client answered (or after 2 s)."""
        self.close_code = code
        with trio.move_on_after(2.0):
            await self.ws.aclose(code, reason)


class VoiceServer:
    """The hostile voice server: a websocket listener and a UDP socket on 127.0.0.1.

    Start it with :func:`open_voice_server`. ``url`` is what the hostile gateway puts in
    VOICE_SERVER_UPDATE (the client takes a full ``ws://`` URL as given).
    """

    def __init__(self, script: VoiceScript | None = None) -> None:
        self.script = script if script is not None else VoiceScript()
        self.ssrc = 0x1234
        self.port = 0
        self.udp_host = "127.0.0.1"
        self.udp_port = 0
        #: Every connection so far, in order; the latest is where the client is now.
        self.connections: list[VoiceConn] = []
        #: Every JSON message, and every binary frame, the client sent.
        self.received: list[Received] = []
        self.binary_received: list[tuple[float, bytes]] = []
        #: What the client sent that our own parser rejects: a client bug, not the server's.
        self.client_errors: list[str] = []
        self.datagrams: list[Datagram] = []
        #: Opus payloads decrypted from the client's RTP, with the address they came from.
        self.audio: list[tuple[bytes, Address]] = []
        #: While True, every datagram is dropped, unanswered and unread.
        self.blackhole = False
        #: Every transport key sent in a Session Description, in order.
        self.keys: list[bytes] = []
        self._seq = 0
        self._decrypt: TransportCipher | None = None
        self._mode: str | None = None
        self._udp: trio.socket.SocketType | None = None
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/?v=8"

    # --- what tests look at ---------------------------------------------------------------

    def ops(self, op: int) -> list[Received]:
        return [r for r in self.received if r.op == op]

    @property
    def heartbeats(self) -> list[Received]:
        return self.ops(HEARTBEAT)

    @property
    def resumes(self) -> list[Received]:
        return self.ops(RESUME)

    @property
    def identifies(self) -> list[Received]:
        return self.ops(IDENTIFY)

    @property
    def discovery_requests(self) -> list[Datagram]:
        return [
            d
            for d in self.datagrams
            if len(d.data) == IP_DISCOVERY_SIZE and d.data[:2] == b"\x00\x01"
        ]

    @property
    def latest(self) -> VoiceConn:
        assert self.connections, "the client never connected"
        return self.connections[-1]

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever the server records something."""
        while not predicate():
            await self._changed.wait()

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- what scripts use -----------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def last_seq(self) -> int:
        return self._seq

    def new_key(self, mode: str) -> bytes:
        """A fresh transport key for Session Description; the server decrypts with it from now."""
        key = secrets.token_bytes(32)
        self.keys.append(key)
        self._mode = mode
        self._decrypt = create_cipher(mode, key)
        return key

    def cipher_to_client(self) -> TransportCipher:
        """A cipher with the current key, to build datagrams the client can decrypt."""
        assert self._mode is not None and self.keys, "no Session Description sent yet"
        return create_cipher(self._mode, self.keys[-1])

    async def send_udp(self, data: bytes) -> None:
        """One datagram from the server's own address to where the client last sent from."""
        assert self._udp is not None
        await self._udp.sendto(data, self.client_source())

    def client_source(self) -> Address:
        assert self.datagrams, "the client has sent no datagram yet"
        return self.datagrams[-1].source

    # --- serving --------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with udp:
            await udp.bind(("127.0.0.1", 0))
            self._udp = udp
            self.udp_port = udp.getsockname()[1]
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            listener = listeners[0]
            assert isinstance(listener, trio.SocketListener)
            self.port = listener.socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_udp, udp)
                task_status.started()
                await trio.serve_listeners(self._handle_stream, listeners)

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                request = await trio_websocket.wrap_server_stream(
                    nursery, stream, max_message_size=_MAX_MESSAGE
                )
                ws = await request.accept()
                conn = VoiceConn(self, len(self.connections) + 1, ws, stream)
                self.connections.append(conn)
                self.changed()
                try:
                    await self._serve(conn)
                finally:
                    # The client's code, unless the server closed first. The reader task is left
                    # to end with the TCP connection, so that a close handshake can complete.
                    reason = ws.closed
                    if conn.close_code is None and reason is not None:
                        conn.close_code = reason.code
                    conn.closed_at = trio.current_time()
                    self.changed()
        except (trio_websocket.HandshakeError, trio.BrokenResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, conn: VoiceConn) -> None:
        script = self.script
        await script.on_open(conn)
        while True:
            try:
                message = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            now = trio.current_time()
            if isinstance(message, bytes):
                self.binary_received.append((now, message))
                self.changed()
                await script.on_binary(conn, message)
                continue
            op, d = self._record(conn, now, message)
            if op == IDENTIFY:
                await script.on_identify(conn, d)
            elif op == SELECT_PROTOCOL:
                await script.on_select_protocol(conn, d)
            elif op == HEARTBEAT:
                await script.on_heartbeat(conn, d)
            elif op == RESUME:
                await script.on_resume(conn, d)
            else:
                await script.on_message(conn, op, d)

    def _record(self, conn: VoiceConn, now: float, message: str) -> tuple[int | None, Any]:
        """Keep the message (secrets redacted); the library's own decoder checks the client."""
        try:
            decode_client_text(message)
        except ProtocolError as exc:
            self.client_errors.append(str(exc))
        try:
            payload = json.loads(message)
            op, d = payload.get("op"), payload.get("d")
        except (ValueError, AttributeError):
            op, d = None, None
        if isinstance(d, dict):
            d = {k: ("<redacted>" if k in ("token", "session_id") else v) for k, v in d.items()}
        self.received.append(Received(now, conn.number, op, d, self._seq))
        self.changed()
        return op, d

    async def _receive_udp(self, udp: trio.socket.SocketType) -> None:
        while True:
            data, source = await udp.recvfrom(65536)
            address = (str(source[0]), int(source[1]))
            self.datagrams.append(Datagram(trio.current_time(), data, address))
            if self.blackhole:
                pass
            elif len(data) == IP_DISCOVERY_SIZE and data[:2] == b"\x00\x01":
                await udp.sendto(self.script.on_ip_discovery(self, data, address), address)
            elif self._decrypt is not None:
                with suppress(ProtocolError):  # audio under an older key, during a re-key
                    self.audio.append((self._decrypt.decrypt(data).payload, address))
            self.changed()


@asynccontextmanager
async def open_voice_server(script: VoiceScript | None = None) -> AsyncIterator[VoiceServer]:
    """Run a hostile voice server for the block; nothing of it outlives the block."""
    server = VoiceServer(script)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
