"""Every JSON payload of the voice websocket (v8), in both directions.

The client builds what it sends and parses what the server sends; the local Discord simulator does
the opposite. Both directions live in one module so a round trip through our own builder and parser
tests each against the other, and the simulator cannot drift from the client.

Each message is a frozen dataclass that knows its opcode, how to read itself from a peer's ``d``
(through :class:`~discore_voice._core.fields.Fields`, so every malformed field becomes one
:class:`ProtocolError` naming the field) and how to write its ``d``. Two registries map opcodes to
classes, one per direction, because op 5 (Speaking) carries a different payload each way.

Dataclasses that hold a token, a session id or a key hide them from ``repr``, because messages get
logged. The dicts the builders return still contain them: the shell must never log an outgoing
payload.

Parsers are strict about types and ranges (a wrong type means the peer is broken, and guessing
would hide it) but ignore unknown fields, which Discord adds without notice.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self, TypeAlias, TypeVar

from ..._errors import ProtocolError, UnknownOpcode
from ..fields import Fields
from ..snowflake import Snowflake, snowflake_to_wire
from .opcodes import VoiceOpcode

__all__ = [
    "CLIENT_MESSAGE_TYPES",
    "MAX_HEARTBEAT_NONCE",
    "NO_SEQ_ACK",
    "SECRET_KEY_LENGTH",
    "SERVER_MESSAGE_TYPES",
    "ClientDisconnect",
    "ClientMessage",
    "ClientSpeaking",
    "ClientSsrcs",
    "ClientsConnect",
    "DaveExecuteTransition",
    "DaveMlsInvalidCommitWelcome",
    "DavePrepareEpoch",
    "DavePrepareTransition",
    "DaveTransitionReady",
    "Heartbeat",
    "HeartbeatAck",
    "Hello",
    "Identify",
    "Ready",
    "Resume",
    "Resumed",
    "SelectProtocol",
    "ServerMessage",
    "ServerSpeaking",
    "SessionDescription",
    "build_client_payload",
    "build_server_payload",
    "parse_client_payload",
    "parse_server_payload",
]

#: Both supported AEAD transport modes use 256-bit keys.
SECRET_KEY_LENGTH: Final = 32
#: Heartbeat nonces pass through JSON numbers on Discord's side; past 2**53 - 1 they would not
#: come back exactly, and the ACK would never match.
MAX_HEARTBEAT_NONCE: Final = (1 << 53) - 1
#: v8 accepts ``seq_ack: -1`` for "no numbered message received yet".
NO_SEQ_ACK: Final = -1

_T = TypeVar("_T")

_U16: Final = (1 << 16) - 1
_U32: Final = (1 << 32) - 1
_U64: Final = (1 << 64) - 1


class _Payload:
    """What every message dataclass shares: its opcode, its parser and its ``d`` builder."""

    __slots__ = ()

    OPCODE: ClassVar[VoiceOpcode]

    @classmethod
    def what(cls) -> str:
        """Names the payload in error messages, e.g. ``voice Hello (op 8)``."""
        return f"voice {cls.__name__} (op {int(cls.OPCODE)})"

    @classmethod
    def from_d(cls, d: object) -> Self:
        """Parse a peer's ``d``; anything malformed is the peer's :class:`ProtocolError`."""
        return cls._from_fields(Fields(d, cls.what()))

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        raise NotImplementedError

    def to_d(self) -> dict[str, Any] | None:
        """The ``d`` object for the wire, with ids as decimal strings."""
        raise NotImplementedError


# --- field helpers: each names the payload and field, never the value ---------------------------


def _nonempty(f: Fields, key: str, what: str) -> str:
    value = f.string(key)
    if not value:
        raise ProtocolError(f"{what}: field {key!r} must not be empty")
    return value


def _optional_int(f: Fields, key: str, *, default: int, minimum: int, maximum: int) -> int:
    # Absent and null both mean "not sent"; a present value must still be a proper integer.
    if f.optional_int(key) is None:
        return default
    return f.integer(key, minimum=minimum, maximum=maximum)


def _transition_id(f: Fields) -> int:
    # Binary ops 29/30 carry the same id as a u16, so a larger one could never be acknowledged.
    return f.integer("transition_id", minimum=0, maximum=_U16)


def _version(f: Fields, key: str) -> int:
    return f.integer(key, minimum=0, maximum=_U16)


def _ssrc(f: Fields) -> int:
    return f.integer("ssrc", minimum=0, maximum=_U32)


def _port(f: Fields) -> int:
    return f.integer("port", minimum=1, maximum=_U16)


def _nonce(f: Fields) -> int:
    return f.integer("t", minimum=0, maximum=MAX_HEARTBEAT_NONCE)


def _seq_ack(f: Fields) -> int:
    return _optional_int(f, "seq_ack", default=NO_SEQ_ACK, minimum=NO_SEQ_ACK, maximum=_U64)


# --- client -> server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identify(_Payload):
    """Op 0. A ``max_dave_protocol_version`` of 0 (or none at all) tells Discord we lack E2EE."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.IDENTIFY

    server_id: Snowflake
    user_id: Snowflake
    session_id: str = field(repr=False)
    token: str = field(repr=False)
    max_dave_protocol_version: int

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        what = cls.what()
        return cls(
            server_id=f.snowflake("server_id"),
            user_id=f.snowflake("user_id"),
            session_id=_nonempty(f, "session_id", what),
            token=_nonempty(f, "token", what),
            max_dave_protocol_version=_optional_int(
                f, "max_dave_protocol_version", default=0, minimum=0, maximum=_U16
            ),
        )

    def to_d(self) -> dict[str, Any]:
        return {
            "server_id": snowflake_to_wire(self.server_id),
            "user_id": snowflake_to_wire(self.user_id),
            "session_id": self.session_id,
            "token": self.token,
            "max_dave_protocol_version": self.max_dave_protocol_version,
        }


@dataclass(frozen=True, slots=True)
class SelectProtocol(_Payload):
    """Op 1. ``protocol`` is kept unchecked, so the simulator can answer a wrong one with 4012."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.SELECT_PROTOCOL

    address: str
    port: int
    mode: str
    protocol: str = "udp"

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        data = f.mapping("data")
        what = f"{cls.what()}.data"
        return cls(
            protocol=_nonempty(f, "protocol", cls.what()),
            address=_nonempty(data, "address", what),
            port=_port(data),
            mode=_nonempty(data, "mode", what),
        )

    def to_d(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "data": {"address": self.address, "port": self.port, "mode": self.mode},
        }


@dataclass(frozen=True, slots=True)
class Heartbeat(_Payload):
    """Op 3. v8 needs ``seq_ack`` so the server knows what it may drop from its resume buffer."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.HEARTBEAT

    nonce: int
    seq_ack: int = NO_SEQ_ACK

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls(nonce=_nonce(f), seq_ack=_seq_ack(f))

    def to_d(self) -> dict[str, Any]:
        return {"t": self.nonce, "seq_ack": self.seq_ack}


@dataclass(frozen=True, slots=True)
class ClientSpeaking(_Payload):
    """Op 5 from a client: it binds our SSRC, so it must precede any audio."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.SPEAKING

    speaking: int
    ssrc: int
    delay: int = 0

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls(
            speaking=f.integer("speaking", minimum=0, maximum=_U32),
            ssrc=_ssrc(f),
            delay=f.integer("delay", minimum=0, maximum=_U32),
        )

    def to_d(self) -> dict[str, Any]:
        return {"speaking": self.speaking, "delay": self.delay, "ssrc": self.ssrc}


@dataclass(frozen=True, slots=True)
class Resume(_Payload):
    """Op 7. Carries ``seq_ack`` so the v8 server re-delivers exactly what we missed."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.RESUME

    server_id: Snowflake
    session_id: str = field(repr=False)
    token: str = field(repr=False)
    seq_ack: int = NO_SEQ_ACK

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        what = cls.what()
        return cls(
            server_id=f.snowflake("server_id"),
            session_id=_nonempty(f, "session_id", what),
            token=_nonempty(f, "token", what),
            seq_ack=_seq_ack(f),
        )

    def to_d(self) -> dict[str, Any]:
        return {
            "server_id": snowflake_to_wire(self.server_id),
            "session_id": self.session_id,
            "token": self.token,
            "seq_ack": self.seq_ack,
        }


@dataclass(frozen=True, slots=True)
class DaveTransitionReady(_Payload):
    """Op 23: our local state is ready, so the gateway may execute the transition."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.DAVE_TRANSITION_READY

    transition_id: int

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls(transition_id=_transition_id(f))

    def to_d(self) -> dict[str, Any]:
        return {"transition_id": self.transition_id}


@dataclass(frozen=True, slots=True)
class DaveMlsInvalidCommitWelcome(_Payload):
    """Op 31: asks the gateway to remove and re-add us after an unprocessable commit or welcome."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.DAVE_MLS_INVALID_COMMIT_WELCOME

    transition_id: int

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls(transition_id=_transition_id(f))

    def to_d(self) -> dict[str, Any]:
        return {"transition_id": self.transition_id}


# --- server -> client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(_Payload):
    """Op 8. The only trustworthy heartbeat interval (Ready's is wrong); it may be fractional."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.HELLO

    heartbeat_interval_ms: float

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        interval = f.number("heartbeat_interval")
        # Python's json accepts NaN, Infinity and 1e999; none of them is an interval.
        if not (math.isfinite(interval) and interval > 0):
            raise ProtocolError(
                f"{cls.what()}: field 'heartbeat_interval' must be a positive finite number"
            )
        return cls(heartbeat_interval_ms=interval)

    def to_d(self) -> dict[str, Any]:
        interval = float(self.heartbeat_interval_ms)
        # Discord sends whole milliseconds as JSON integers; look the same.
        return {"heartbeat_interval": int(interval) if interval.is_integer() else interval}


@dataclass(frozen=True, slots=True)
class Ready(_Payload):
    """Op 2. Its ``heartbeat_interval`` is documented as wrong, so it is not even read."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.READY

    ssrc: int
    ip: str
    port: int
    modes: tuple[str, ...]

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        ssrc = _ssrc(f)
        ip = _nonempty(f, "ip", cls.what())
        try:
            # An address, never a name: a name would be resolved, a DNS lookup chosen by a peer.
            ipaddress.ip_address(ip)
        except ValueError:
            raise ProtocolError(f"{cls.what()}: field 'ip' is not an IP address") from None
        return cls(ssrc=ssrc, ip=ip, port=_port(f), modes=tuple(f.str_list("modes")))

    def to_d(self) -> dict[str, Any]:
        return {"ssrc": self.ssrc, "ip": self.ip, "port": self.port, "modes": list(self.modes)}


@dataclass(frozen=True, slots=True)
class SessionDescription(_Payload):
    """Op 4: the transport key, and the DAVE version the call starts with (0 = no E2EE)."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.SESSION_DESCRIPTION

    mode: str
    secret_key: bytes = field(repr=False)
    dave_protocol_version: int = 0

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        what = cls.what()
        key = f.int_list("secret_key")
        if len(key) != SECRET_KEY_LENGTH:
            raise ProtocolError(
                f"{what}: field 'secret_key' must hold {SECRET_KEY_LENGTH} bytes, got {len(key)}"
            )
        if not all(0 <= byte <= 0xFF for byte in key):
            raise ProtocolError(f"{what}: field 'secret_key' must hold integers from 0 to 255")
        return cls(
            mode=_nonempty(f, "mode", what),
            secret_key=bytes(key),
            # Absent only when the server does not do DAVE at all, which means version 0.
            dave_protocol_version=_optional_int(
                f, "dave_protocol_version", default=0, minimum=0, maximum=_U16
            ),
        )

    def to_d(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "secret_key": list(self.secret_key),
            "dave_protocol_version": self.dave_protocol_version,
        }


@dataclass(frozen=True, slots=True)
class HeartbeatAck(_Payload):
    """Op 6: echoes the nonce of the heartbeat it answers."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.HEARTBEAT_ACK

    nonce: int

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls(nonce=_nonce(f))

    def to_d(self) -> dict[str, Any]:
        return {"t": self.nonce}


@dataclass(frozen=True, slots=True)
class ServerSpeaking(_Payload):
    """Op 5 from the server: the only place an SSRC is mapped to a user."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.SPEAKING

    user_id: Snowflake
    ssrc: int
    speaking: int

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls(
            user_id=f.snowflake("user_id"),
            ssrc=_ssrc(f),
            speaking=f.integer("speaking", minimum=0, maximum=_U32),
        )

    def to_d(self) -> dict[str, Any]:
        return {
            "user_id": snowflake_to_wire(self.user_id),
            "ssrc": self.ssrc,
            "speaking": self.speaking,
        }


@dataclass(frozen=True, slots=True)
class Resumed(_Payload):
    """Op 9. Its ``d`` is null; an object is tolerated because it carries nothing we need."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.RESUMED

    @classmethod
    def from_d(cls, d: object) -> Self:
        if d is None or isinstance(d, Mapping):
            return cls()
        return cls._from_fields(Fields(d, cls.what()))  # raises: not an object

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls()

    def to_d(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ClientsConnect(_Payload):
    """Op 11. DAVE checks proposed group members against these users."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.CLIENTS_CONNECT

    user_ids: tuple[Snowflake, ...]

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls(user_ids=tuple(f.snowflake_list("user_ids")))

    def to_d(self) -> dict[str, Any]:
        return {"user_ids": [snowflake_to_wire(user_id) for user_id in self.user_ids]}


@dataclass(frozen=True, slots=True)
class ClientSsrcs(_Payload):
    """Op 12 (undocumented): a member's SSRCs, sent when it connects and before it speaks.

    Read leniently, since nothing documents it: only ``user_id`` and ``audio_ssrc`` are used
    (0 means none), and everything else it carries (video and RTX SSRCs, streams) is ignored.
    """

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.VIDEO

    user_id: Snowflake
    audio_ssrc: int

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        audio_ssrc = f.optional_int("audio_ssrc", default=0)
        if audio_ssrc is None or not 0 <= audio_ssrc <= _U32:
            raise ProtocolError(f"{cls.what()}: field 'audio_ssrc' is out of range [0, {_U32}]")
        return cls(user_id=f.snowflake("user_id"), audio_ssrc=audio_ssrc)

    def to_d(self) -> dict[str, Any]:
        return {
            "user_id": snowflake_to_wire(self.user_id),
            "audio_ssrc": self.audio_ssrc,
            "video_ssrc": 0,
            "rtx_ssrc": 0,
            "streams": [],
        }


@dataclass(frozen=True, slots=True)
class ClientDisconnect(_Payload):
    """Op 13: the user left, so its SSRC mapping and DAVE membership go too."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.CLIENT_DISCONNECT

    user_id: Snowflake

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls(user_id=f.snowflake("user_id"))

    def to_d(self) -> dict[str, Any]:
        return {"user_id": snowflake_to_wire(self.user_id)}


@dataclass(frozen=True, slots=True)
class DavePrepareTransition(_Payload):
    """Op 21. Version 0 announces a downgrade; transition id 0 may be executed at once."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.DAVE_PREPARE_TRANSITION

    transition_id: int
    protocol_version: int

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls(
            transition_id=_transition_id(f), protocol_version=_version(f, "protocol_version")
        )

    def to_d(self) -> dict[str, Any]:
        return {"transition_id": self.transition_id, "protocol_version": self.protocol_version}


@dataclass(frozen=True, slots=True)
class DaveExecuteTransition(_Payload):
    """Op 22: every member is ready (or the gateway gave up waiting); switch keys now."""

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.DAVE_EXECUTE_TRANSITION

    transition_id: int

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        return cls(transition_id=_transition_id(f))

    def to_d(self) -> dict[str, Any]:
        return {"transition_id": self.transition_id}


@dataclass(frozen=True, slots=True)
class DavePrepareEpoch(_Payload):
    """Op 24. Epoch 1 means a new MLS group: reinitialise and send a fresh key package.

    The voice docs say it carries a ``transition_id``; the DAVE whitepaper's example omits it. It
    is optional here so neither reading of the spec breaks a connection.
    """

    OPCODE: ClassVar[VoiceOpcode] = VoiceOpcode.DAVE_PREPARE_EPOCH

    epoch: int
    protocol_version: int
    transition_id: int | None = None

    @classmethod
    def _from_fields(cls, f: Fields) -> Self:
        transition_id = None if f.optional_int("transition_id") is None else _transition_id(f)
        return cls(
            epoch=f.integer("epoch", minimum=0, maximum=_U64),
            protocol_version=_version(f, "protocol_version"),
            transition_id=transition_id,
        )

    def to_d(self) -> dict[str, Any]:
        d: dict[str, Any] = {"epoch": self.epoch, "protocol_version": self.protocol_version}
        if self.transition_id is not None:
            d["transition_id"] = self.transition_id
        return d


# --- registries ---------------------------------------------------------------------------------

ClientMessage: TypeAlias = (
    Identify
    | SelectProtocol
    | Heartbeat
    | ClientSpeaking
    | Resume
    | DaveTransitionReady
    | DaveMlsInvalidCommitWelcome
)
ServerMessage: TypeAlias = (
    Hello
    | Ready
    | SessionDescription
    | HeartbeatAck
    | ServerSpeaking
    | Resumed
    | ClientsConnect
    | ClientSsrcs
    | ClientDisconnect
    | DavePrepareTransition
    | DaveExecuteTransition
    | DavePrepareEpoch
)

_CLIENT_CLASSES: Final[tuple[type[ClientMessage], ...]] = (
    Identify,
    SelectProtocol,
    Heartbeat,
    ClientSpeaking,
    Resume,
    DaveTransitionReady,
    DaveMlsInvalidCommitWelcome,
)
_SERVER_CLASSES: Final[tuple[type[ServerMessage], ...]] = (
    Hello,
    Ready,
    SessionDescription,
    HeartbeatAck,
    ServerSpeaking,
    Resumed,
    ClientsConnect,
    ClientSsrcs,
    ClientDisconnect,
    DavePrepareTransition,
    DaveExecuteTransition,
    DavePrepareEpoch,
)

#: The JSON messages a client may send, by opcode.
CLIENT_MESSAGE_TYPES: Final[Mapping[VoiceOpcode, type[ClientMessage]]] = {
    cls.OPCODE: cls for cls in _CLIENT_CLASSES
}
#: The JSON messages the server may send, by opcode.
SERVER_MESSAGE_TYPES: Final[Mapping[VoiceOpcode, type[ServerMessage]]] = {
    cls.OPCODE: cls for cls in _SERVER_CLASSES
}


def _lookup(registry: Mapping[VoiceOpcode, _T], op: int, *, sender: str) -> _T:
    try:
        opcode = VoiceOpcode(op)
    except ValueError:
        raise UnknownOpcode(op, channel=f"voice {sender} JSON") from None
    try:
        return registry[opcode]
    except KeyError:
        # A documented op in the wrong direction or framing is a broken peer, not a new feature.
        raise ProtocolError(
            f"voice op {op} ({opcode.name}) is not a JSON message the {sender} sends"
        ) from None


def parse_client_payload(op: int, d: object) -> ClientMessage:
    """Parse what a client sent (the simulator's side); unknown ops raise :class:`UnknownOpcode`."""
    return _lookup(CLIENT_MESSAGE_TYPES, op, sender="client").from_d(d)


def parse_server_payload(op: int, d: object) -> ServerMessage:
    """Parse what the server sent; an unknown op raises :class:`UnknownOpcode`, to be skipped."""
    return _lookup(SERVER_MESSAGE_TYPES, op, sender="server").from_d(d)


def build_client_payload(message: ClientMessage) -> dict[str, Any]:
    """The full ``{"op", "d"}`` object a client sends; clients never number their messages."""
    return {"op": int(message.OPCODE), "d": message.to_d()}


def build_server_payload(message: ServerMessage, *, seq: int | None) -> dict[str, Any]:
    """The full object the server sends, numbered with ``seq`` so a v8 resume can re-deliver it."""
    payload: dict[str, Any] = {"op": int(message.OPCODE), "d": message.to_d()}
    if seq is not None:
        payload["seq"] = seq
    return payload
