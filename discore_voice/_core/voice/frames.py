"""Websocket framing for the voice gateway (v8): JSON text frames, DAVE binary frames, seq tracking.

Discord's server numbers what it sends (a top-level ``"seq"`` in JSON, a big-endian u16 prefix on
binary frames) so that a v8 resume can re-deliver what a client missed; the client reports the
latest number it has seen as ``seq_ack``. Clients number nothing, so the two directions are framed
differently, and this module has a decoder and an encoder for each side: the client uses one pair,
the local Discord simulator the other.

Every decoder bounds its input before parsing it, and raises only :class:`ProtocolError` (with
:class:`UnknownOpcode` for opcodes we do not know, which the shell skips) for anything a peer sent.
Encoders raise :class:`UsageError`, because what they are given comes from our own code.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Final

from ..._errors import ProtocolError, UnknownOpcode, UsageError
from ..fields import Fields, decode_json_object
from .opcodes import (
    CLIENT_BINARY_OPCODES,
    SERVER_BINARY_OPCODES,
    VoiceOpcode,
)
from .payloads import (
    NO_SEQ_ACK,
    ClientMessage,
    ServerMessage,
    build_client_payload,
    build_server_payload,
    parse_client_payload,
    parse_server_payload,
)

__all__ = [
    "MAX_BINARY_FRAME",
    "MAX_JSON_SEQ",
    "MAX_TEXT_FRAME",
    "SEQ_MODULUS",
    "ClientBinaryMessage",
    "SeqTracker",
    "ServerBinaryMessage",
    "decode_client_binary",
    "decode_client_text",
    "decode_server_binary",
    "decode_server_text",
    "encode_client_binary",
    "encode_client_text",
    "encode_server_binary",
    "encode_server_text",
]

#: Largest JSON frame accepted, in bytes (or code points, for a ``str``). Voice JSON messages are a
#: few hundred bytes; even Clients Connect for a full channel is a few kilobytes. The bound only
#: caps the work a broken or hostile peer can make us do.
MAX_TEXT_FRAME: Final = 1 << 20
#: Largest binary frame accepted, in bytes. The biggest DAVE message is a Welcome carrying the
#: group's ratchet tree, a few hundred bytes per member: tens of kilobytes for the largest voice
#: channels, far below this.
MAX_BINARY_FRAME: Final = 1 << 20
#: Binary frames carry seq as a u16 and share one counter with JSON frames, so the counter wraps.
SEQ_MODULUS: Final = 1 << 16
#: The largest seq a JSON frame may carry (a signed 64-bit integer, what any server counts in).
MAX_JSON_SEQ: Final = (1 << 63) - 1

_HALF_SEQ: Final = SEQ_MODULUS // 2
_SERVER_BINARY_HEADER: Final = struct.Struct(">HB")
_TRANSITION_ID: Final = struct.Struct(">H")
#: Ops whose payload starts with the u16 transition id the client must acknowledge with op 23.
_TRANSITION_OPS: Final = frozenset(
    {VoiceOpcode.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION, VoiceOpcode.DAVE_MLS_WELCOME}
)


class SeqTracker:
    """The latest server seq, for ``seq_ack`` in heartbeats and resumes.

    "Latest" is in serial-number order over 16 bits (RFC 1982): a seq counts as newer when it is
    less than half the counter ahead, modulo 2**16. That is the highest seq seen, except that it
    also follows the counter across its wrap from 65535 to 0, where a plain maximum would stick at
    65535 and make every later resume ask for messages the server no longer has. A seq that is
    older (a re-delivery, or a message overtaken by another) never moves it back.

    Kept across a resume (that is what the resume acknowledges); :meth:`reset` for a new session.
    """

    __slots__ = ("_latest",)

    def __init__(self) -> None:
        self._latest: int | None = None

    @property
    def latest(self) -> int | None:
        """The latest seq seen, or ``None`` before the first numbered message."""
        return self._latest

    @property
    def seq_ack(self) -> int:
        """What heartbeats and resumes carry: the latest seq, or -1 before any."""
        return NO_SEQ_ACK if self._latest is None else self._latest

    def observe(self, seq: int) -> None:
        """Record a received seq; decoders call this before they look at the opcode."""
        if seq < 0:
            raise UsageError(f"a seq cannot be negative, got {seq}")
        latest = self._latest
        if latest is None or 0 < (seq - latest) % SEQ_MODULUS < _HALF_SEQ:
            self._latest = seq

    def reset(self) -> None:
        """Forget everything: a new voice session numbers its messages from scratch."""
        self._latest = None


@dataclass(frozen=True, slots=True)
class ServerBinaryMessage:
    """A DAVE binary message from the server (ops 25, 27, 29, 30).

    For ops 29 and 30, ``transition_id`` is split off and ``payload`` is the MLS message alone;
    for 25 and 27 ``transition_id`` is ``None`` and ``payload`` is everything after the opcode.
    The payload stays opaque here: the DAVE layer parses MLS.
    """

    op: VoiceOpcode
    payload: bytes
    transition_id: int | None = None

    def __repr__(self) -> str:
        # Payloads can be large; a log line needs their size, not their bytes.
        return (
            f"ServerBinaryMessage(op={self.op.name}, transition_id={self.transition_id}, "
            f"payload=<{len(self.payload)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class ClientBinaryMessage:
    """A DAVE binary message from a client: op 26 (key package) or 28 (commit, then welcome).

    Op 28's commit and optional welcome are back to back with no length prefix between them;
    only an MLS parser can split them, so the payload stays whole.
    """

    op: VoiceOpcode
    payload: bytes

    def __repr__(self) -> str:
        return f"ClientBinaryMessage(op={self.op.name}, payload=<{len(self.payload)} bytes>)"


# --- shared helpers -----------------------------------------------------------------------------


def _check_text(data: object, what: str) -> str | bytes:
    if not isinstance(data, str | bytes | bytearray | memoryview):
        raise UsageError(f"{what} must be str or bytes, got {type(data).__name__}")
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if len(data) > MAX_TEXT_FRAME:
        raise ProtocolError(f"{what} is too large: {len(data)} > {MAX_TEXT_FRAME}")
    return data


def _check_binary(data: object, what: str, header: int) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UsageError(f"{what} must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > MAX_BINARY_FRAME:
        raise ProtocolError(f"{what} is too large: {len(raw)} > {MAX_BINARY_FRAME}")
    if len(raw) < header:
        raise ProtocolError(f"{what} is truncated: {len(raw)} bytes, its header needs {header}")
    return raw


def _binary_opcode(op: int, allowed: frozenset[VoiceOpcode], channel: str) -> VoiceOpcode:
    try:
        opcode = VoiceOpcode(op)
    except ValueError:
        raise UnknownOpcode(op, channel=channel) from None
    if opcode not in allowed:
        raise ProtocolError(f"voice op {op} ({opcode.name}) is not a binary message of {channel}")
    return opcode


def _dump(payload: dict[str, Any]) -> str:
    # Compact and ASCII-only; NaN and infinities are not JSON, and no peer would parse them.
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise UsageError(f"voice op {payload['op']} has a value JSON cannot carry") from exc


# --- client side: decode what the server sends, encode what we send -----------------------------


def decode_server_text(
    data: str | bytes, tracker: SeqTracker | None = None
) -> tuple[int | None, ServerMessage]:
    """Decode a server JSON frame into its seq (``None`` if unnumbered) and typed message.

    The seq is recorded in ``tracker`` as soon as it is read, before the opcode is looked at, so a
    message we cannot use (an unknown op, a malformed ``d``) is still acknowledged: it was received,
    and a resume would only re-deliver the same thing.
    """
    what = "voice server JSON frame"
    raw = decode_json_object(_check_text(data, what), what=what)
    envelope = Fields(raw, what)
    # A seq out of range is malformed, and never recorded: it would go back in every seq_ack.
    seq = (
        None
        if envelope.optional_int("seq") is None
        else envelope.integer("seq", minimum=0, maximum=MAX_JSON_SEQ)
    )
    if seq is not None and tracker is not None:
        tracker.observe(seq)
    op = envelope.integer("op")
    # "d" may be absent or null (Resumed); each payload parser decides whether that is allowed.
    return seq, parse_server_payload(op, raw.get("d"))


def decode_server_binary(
    data: bytes, tracker: SeqTracker | None = None
) -> tuple[int, ServerBinaryMessage]:
    """Decode a server ``[u16 BE seq][u8 op][payload]`` frame, recording its seq first."""
    channel = "voice server binary frame"
    raw = _check_binary(data, channel, _SERVER_BINARY_HEADER.size)
    seq, op = _SERVER_BINARY_HEADER.unpack_from(raw)
    if tracker is not None:
        tracker.observe(seq)
    opcode = _binary_opcode(op, SERVER_BINARY_OPCODES, channel)
    payload = raw[_SERVER_BINARY_HEADER.size :]
    if opcode not in _TRANSITION_OPS:
        return seq, ServerBinaryMessage(op=opcode, payload=payload)
    if len(payload) < _TRANSITION_ID.size:
        raise ProtocolError(f"{channel} op {op} is truncated: it has no transition id")
    (transition_id,) = _TRANSITION_ID.unpack_from(payload)
    return seq, ServerBinaryMessage(
        op=opcode, payload=payload[_TRANSITION_ID.size :], transition_id=transition_id
    )


def encode_client_text(message: ClientMessage) -> str:
    """The JSON text a client sends; it carries secrets (Identify, Resume), so never log it."""
    return _dump(build_client_payload(message))


def encode_client_binary(message: ClientBinaryMessage) -> bytes:
    """``[u8 op][payload]``: clients do not number their frames."""
    if message.op not in CLIENT_BINARY_OPCODES:
        raise UsageError(f"voice op {int(message.op)} is not a binary message a client sends")
    frame = bytes((message.op,)) + message.payload
    if len(frame) > MAX_BINARY_FRAME:
        raise UsageError(f"voice client binary frame is too large: {len(frame)} bytes")
    return frame


# --- server side (the simulator): decode what clients send, encode what the server sends --------


def decode_client_text(data: str | bytes) -> ClientMessage:
    """Decode a client JSON frame; a client has no seq to send, so any ``"seq"`` is ignored."""
    what = "voice client JSON frame"
    raw = decode_json_object(_check_text(data, what), what=what)
    return parse_client_payload(Fields(raw, what).integer("op"), raw.get("d"))


def decode_client_binary(data: bytes) -> ClientBinaryMessage:
    """Decode a client ``[u8 op][payload]`` frame."""
    channel = "voice client binary frame"
    raw = _check_binary(data, channel, 1)
    opcode = _binary_opcode(raw[0], CLIENT_BINARY_OPCODES, channel)
    return ClientBinaryMessage(op=opcode, payload=raw[1:])


def encode_server_text(message: ServerMessage, *, seq: int | None) -> str:
    """The JSON text the server sends; ``seq`` is ``None`` only for unnumbered messages."""
    # One counter numbers text and binary frames alike, and binary frames carry it in 16 bits.
    if seq is not None and not 0 <= seq < SEQ_MODULUS:
        raise UsageError(f"a seq must fit in 16 bits, got {seq}")
    return _dump(build_server_payload(message, seq=seq))


def encode_server_binary(message: ServerBinaryMessage, *, seq: int) -> bytes:
    """``[u16 BE seq][u8 op][payload]``, with the transition id first in ops 29 and 30."""
    if message.op not in SERVER_BINARY_OPCODES:
        raise UsageError(f"voice op {int(message.op)} is not a binary message the server sends")
    if not 0 <= seq < SEQ_MODULUS:
        raise UsageError(f"a binary frame's seq must fit in 16 bits, got {seq}")
    has_id = message.transition_id is not None
    if has_id != (message.op in _TRANSITION_OPS):
        raise UsageError(f"voice op {int(message.op)} needs a transition id if and only if 29/30")
    prefix = b""
    if message.transition_id is not None:
        if not 0 <= message.transition_id < SEQ_MODULUS:
            raise UsageError(f"a transition id must fit in 16 bits, got {message.transition_id}")
        prefix = _TRANSITION_ID.pack(message.transition_id)
    frame = _SERVER_BINARY_HEADER.pack(seq, message.op) + prefix + message.payload
    if len(frame) > MAX_BINARY_FRAME:
        raise UsageError(f"voice server binary frame is too large: {len(frame)} bytes")
    return frame
