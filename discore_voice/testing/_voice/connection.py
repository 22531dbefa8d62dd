"""One voice websocket and the voice session it carries, for the simulator's voice gateway.

A session outlives its connections: a v8 resume re-delivers the numbered messages a client
missed, so each session keeps its own seq counter and a buffer of what it sent, trimmed by the
client's ``seq_ack``. A connection is only the transport: it decodes what the client sends into
the core's message classes, turns protocol violations into the documented close codes, and hands
each valid message to the server (see ``_voice_gateway``, which holds the policy).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import trio
import trio_websocket

from ..._core.fields import Fields, decode_json_object
from ..._core.voice.frames import (
    MAX_BINARY_FRAME,
    MAX_TEXT_FRAME,
    SEQ_MODULUS,
    ServerBinaryMessage,
    decode_client_binary,
    encode_server_binary,
    encode_server_text,
)
from ..._core.voice.opcodes import CLIENT_BINARY_OPCODES, VoiceCloseCode, VoiceOpcode
from ..._core.voice.payloads import (
    CLIENT_MESSAGE_TYPES,
    NO_SEQ_ACK,
    ClientMessage,
    ClientSpeaking,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    Resume,
    SelectProtocol,
    ServerMessage,
    parse_client_payload,
)
from ..._errors import ProtocolError, UnknownOpcode
from .._faults import ABRUPT
from .._media import MediaEndpoint
from .._ws_server import ServedConnection, Violation
from .auth import VoiceGrant

if TYPE_CHECKING:
    from .gateway import VoiceServer

__all__ = ["VoiceClientConnection", "VoiceConnectionInfo", "VoiceGatewaySession"]

logger = logging.getLogger("discore_voice.testing.voice")

_C = VoiceCloseCode
_HALF_SEQ = SEQ_MODULUS // 2
_BEFORE_IDENTIFY = frozenset({VoiceOpcode.IDENTIFY, VoiceOpcode.RESUME, VoiceOpcode.HEARTBEAT})
_DAVE_JSON_OPS = frozenset(
    {VoiceOpcode.DAVE_TRANSITION_READY, VoiceOpcode.DAVE_MLS_INVALID_COMMIT_WELCOME}
)


# --- observability --------------------------------------------------------------------------------


@dataclass(eq=False)
class VoiceConnectionInfo:
    """One websocket connection, identified or not, as plain data."""

    path: str
    received_ops: list[int] = field(default_factory=list)
    sent_ops: list[int] = field(default_factory=list)
    close_code: int | None = None
    closed_by: Literal["server", "client"] | None = None
    session: VoiceGatewaySession | None = None

    @property
    def closed(self) -> bool:
        return self.close_code is not None


def _ahead(seq: int, reference: int | None) -> bool:
    """Whether ``seq`` is newer than ``reference`` in 16-bit serial order (RFC 1982)."""
    if reference is None:
        return True
    return 0 < (seq - reference) % SEQ_MODULUS < _HALF_SEQ


# --- sessions -------------------------------------------------------------------------------------


class VoiceGatewaySession:
    """One voice session: identified once, possibly carried by several connections (resumes)."""

    def __init__(
        self, server: VoiceServer, grant: VoiceGrant, identify: Identify, ssrc: int
    ) -> None:
        self._server = server
        self.guild_id = grant.guild_id
        self.channel_id = grant.channel_id
        self._user_id = grant.user_id
        self._session_id = identify.session_id
        self._token = identify.token
        self.ssrc = ssrc
        self.max_dave_protocol_version = identify.max_dave_protocol_version
        #: The Identify as received, without its session id and token.
        self.identify: dict[str, Any] = {
            "server_id": str(identify.server_id),
            "user_id": str(identify.user_id),
            "max_dave_protocol_version": identify.max_dave_protocol_version,
        }
        self.dave_protocol_version = 0
        self.select_protocol: SelectProtocol | None = None
        self.mode: str | None = None
        self._secret_key: bytes | None = None
        #: Every Speaking flags value the client sent, in order.
        self.speaking_states: list[int] = []
        #: Every heartbeat (nonce and seq_ack), in order.
        self.heartbeats: list[Heartbeat] = []
        self.resumes = 0
        #: Close codes of this session's connections, whichever side closed (1006: dropped).
        self.close_codes: list[int] = []
        #: ``(seq, op)`` of everything sent, re-deliveries included.
        self.sent: list[tuple[int | None, int]] = []
        self.received_ops: list[int] = []
        self.stall_heartbeat_acks = False
        self.state: Literal["connected", "disconnected", "ended"] = "connected"
        #: Free for the DAVE layer's per-session state.
        self.dave_state: object | None = None
        self.endpoint = MediaEndpoint(self, grant.guild_id, grant.channel_id, ssrc)
        self._last_seq: int | None = None
        self._buffer: deque[tuple[int, int, str | bytes]] = deque()
        self._connection: VoiceClientConnection | None = None

    def __repr__(self) -> str:
        return (
            f"<VoiceGatewaySession user={self._user_id} guild={self.guild_id} "
            f"channel={self.channel_id} ssrc={self.ssrc} mode={self.mode} state={self.state}>"
        )

    @property
    def user_id(self) -> int:
        return self._user_id

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def secret_key(self) -> bytes | None:
        """The transport key of the Session Description (None before Select Protocol)."""
        return self._secret_key

    @property
    def last_seq(self) -> int | None:
        """The seq of the latest numbered message sent, or None before any."""
        return self._last_seq

    @property
    def connected(self) -> bool:
        return self._connection is not None

    @property
    def speaking(self) -> int:
        return self.endpoint.speaking

    # -- sending -------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = 1 if self._last_seq is None else (self._last_seq + 1) % SEQ_MODULUS
        self._last_seq = seq
        return seq

    def send(self, message: ServerMessage, *, buffered: bool = True) -> int:
        """Number, buffer (for resume) and send one JSON message; returns its seq."""
        seq = self._next_seq()
        frame = encode_server_text(message, seq=seq)
        if buffered:
            self._remember(seq, int(message.OPCODE), frame)
        self._push(seq, int(message.OPCODE), frame)
        return seq

    def send_binary(self, message: ServerBinaryMessage) -> int:
        """Number, buffer and send one DAVE binary message; returns its seq."""
        seq = self._next_seq()
        frame = encode_server_binary(message, seq=seq)
        self._remember(seq, int(message.op), frame)
        self._push(seq, int(message.op), frame)
        return seq

    def notify(self, message: ServerMessage) -> None:
        self.send(message)

    def notify_binary(self, message: ServerBinaryMessage) -> None:
        self.send_binary(message)

    def send_raw(self, frame: str | bytes) -> None:
        """Send ``frame`` exactly as given on the live connection: unnumbered, not buffered.

        For tests of what a client does with frames no encoder would build (garbage, truncated
        DAVE ops). Nothing happens without a live connection.
        """
        if self._connection is not None:
            self._connection.push(0, frame)

    def _remember(self, seq: int, op: int, frame: str | bytes) -> None:
        self._buffer.append((seq, op, frame))
        while len(self._buffer) > self._server.max_buffered:
            self._buffer.popleft()

    def _push(self, seq: int | None, op: int, frame: str | bytes) -> None:
        self.sent.append((seq, op))
        if self._connection is not None:
            self._connection.push(op, frame)
        self._server.changed()

    def _acknowledged(self, seq_ack: int) -> None:
        # v8: what the client has seen need not be kept for a resume any more.
        if seq_ack == NO_SEQ_ACK:
            return
        while self._buffer and not _ahead(self._buffer[0][0], seq_ack):
            self._buffer.popleft()

    def _redeliver(self, seq_ack: int) -> None:
        for seq, op, frame in list(self._buffer):
            if seq_ack == NO_SEQ_ACK or _ahead(seq, seq_ack):
                self._push(seq, op, frame)

    def _check_seq_ack(self, seq_ack: int) -> None:
        if seq_ack == NO_SEQ_ACK:
            return
        if seq_ack >= SEQ_MODULUS or _ahead(seq_ack, self._last_seq):
            raise Violation(_C.BAD_REQUEST, "seq_ack is ahead of what the server sent")


# --- connections ----------------------------------------------------------------------------------


class VoiceClientConnection(ServedConnection):
    """The protocol state of one voice websocket; sessions talk to it through push/close."""

    def __init__(
        self,
        server: VoiceServer,
        ws: trio_websocket.WebSocketConnection,
        stream: trio.abc.Stream,
        info: VoiceConnectionInfo,
    ) -> None:
        super().__init__(
            ws, stream, crash=(_C.VOICE_SERVER_CRASHED, "Voice server crashed"), log=logger
        )
        self._server = server
        self.info = info
        self.session: VoiceGatewaySession | None = None
        self._op_counts: dict[int, int] = {}

    # -- the sessions' side --------------------------------------------------------------------

    def push(self, op: int, frame: str | bytes) -> None:
        if self.closing:
            return
        self.info.sent_ops.append(op)
        self.queue(frame)

    def close(self, code: int, reason: str = "") -> bool:
        """Close with ``code`` (or drop the TCP connection, for :data:`ABRUPT`)."""
        if not super().close(code, reason):
            return False
        session = self.session
        if session is not None and code != ABRUPT:
            # At once, not when the socket is gone: a test that saw the code can rely on it.
            self._server._closing_session(session, code, by_server=True)
        return True

    # -- the skeleton's hooks --------------------------------------------------------------------

    def greet(self) -> None:
        self._send_unnumbered(Hello(self._server.heartbeat_interval_ms))
        if self._server.heartbeat_timeout is not None:
            self.heartbeat_deadline = trio.current_time() + self._server.heartbeat_timeout

    def heartbeat_timed_out(self) -> tuple[int, str]:
        return _C.SESSION_TIMEOUT, "Session timeout: no heartbeat"

    def handled(self) -> None:
        self._server.changed()

    def finished(self, code: int, by: Literal["server", "client"]) -> None:
        self.info.close_code, self.info.closed_by = code, by
        self._server._connection_ended(self, code, by_server=by == "server")

    def _send_unnumbered(self, message: ServerMessage) -> None:
        frame = encode_server_text(message, seq=None)
        if self.session is not None:
            self.session.sent.append((None, int(message.OPCODE)))
        self.push(int(message.OPCODE), frame)
        self._server.changed()

    # -- protocol ------------------------------------------------------------------------------

    def handle(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._handle_binary(message)
            return
        if len(message) > MAX_TEXT_FRAME:
            raise Violation(_C.FAILED_TO_DECODE_PAYLOAD, "Payload too large")
        try:
            raw = decode_json_object(message, what="voice client JSON frame")
            op = Fields(raw, "voice client JSON frame").integer("op")
        except ProtocolError:
            raise Violation(_C.FAILED_TO_DECODE_PAYLOAD, "Failed to decode payload") from None
        self._received(op)
        if op not in CLIENT_MESSAGE_TYPES:
            raise Violation(_C.UNKNOWN_OPCODE, "Unknown opcode")
        try:
            parsed = parse_client_payload(op, raw.get("d"))
        except ProtocolError:
            raise Violation(_C.FAILED_TO_DECODE_PAYLOAD, "Invalid payload") from None
        self._dispatch(parsed)

    def _handle_binary(self, message: bytes) -> None:
        if len(message) > MAX_BINARY_FRAME:
            raise Violation(_C.FAILED_TO_DECODE_PAYLOAD, "Payload too large")
        if message:
            self._received(message[0])
            if message[0] not in CLIENT_BINARY_OPCODES:
                raise Violation(_C.UNKNOWN_OPCODE, "Unknown opcode")
        try:
            parsed = decode_client_binary(message)
        except UnknownOpcode:
            raise Violation(_C.UNKNOWN_OPCODE, "Unknown opcode") from None
        except ProtocolError:
            raise Violation(_C.FAILED_TO_DECODE_PAYLOAD, "Failed to decode payload") from None
        session = self.session
        if session is None:
            raise Violation(_C.NOT_AUTHENTICATED, "Not authenticated")
        hook = self._server.dave
        if hook is not None:
            hook.client_binary(session, parsed)

    def _received(self, op: int) -> None:
        self.info.received_ops.append(op)
        if self.session is not None:
            self.session.received_ops.append(op)
        count = self._op_counts[op] = self._op_counts.get(op, 0) + 1
        user = None if self.session is None else self.session.user_id
        for fault in list(self._server.faults):
            if fault.on_op == op and fault.after == count and fault.user_id in (None, user):
                self._server.faults.remove(fault)
                raise Violation(fault.code, fault.reason)

    def _dispatch(self, message: ClientMessage) -> None:
        op = message.OPCODE
        session = self.session
        if isinstance(message, Heartbeat):
            self._heartbeat(message)
            return
        if session is None and op not in _BEFORE_IDENTIFY:
            raise Violation(_C.NOT_AUTHENTICATED, "Not authenticated")
        if isinstance(message, Identify):
            if session is not None:
                raise Violation(_C.ALREADY_AUTHENTICATED, "Already authenticated")
            self._server._identify(self, message)
        elif isinstance(message, Resume):
            if session is not None:
                raise Violation(_C.ALREADY_AUTHENTICATED, "Already authenticated")
            self._server._resume(self, message)
        elif session is None:
            raise Violation(_C.NOT_AUTHENTICATED, "Not authenticated")
        elif isinstance(message, SelectProtocol):
            self._server._select_protocol(session, message)
        elif isinstance(message, ClientSpeaking):
            self._server._speaking(session, message)
        elif op in _DAVE_JSON_OPS:
            hook = self._server.dave
            if hook is not None:
                hook.client_message(session, message)

    def _heartbeat(self, message: Heartbeat) -> None:
        if self._server.heartbeat_timeout is not None:
            self.heartbeat_deadline = trio.current_time() + self._server.heartbeat_timeout
        session = self.session
        if session is None:
            self._send_unnumbered(HeartbeatAck(message.nonce))
            return
        session.heartbeats.append(message)
        session._check_seq_ack(message.seq_ack)
        session._acknowledged(message.seq_ack)
        if not session.stall_heartbeat_acks:
            session.send(HeartbeatAck(message.nonce), buffered=False)
