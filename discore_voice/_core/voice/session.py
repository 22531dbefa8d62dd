"""The voice connection state machine: sans-IO, so every ordering of events can be tested.

The trio shell feeds it events (the two main-gateway dispatches, every voice websocket frame, the
websocket closing, the IP discovery result, heartbeat deadlines, the caller's requests) and
carries out the actions it returns, in order. It never touches a socket or a clock: time comes in
as an argument, and "open a websocket" or "send Identify" go out as action objects.

Policy lives here and nowhere else:

- Entering needs both dispatches, in either order, filtered on our guild and our user.
- A VOICE_SERVER_UPDATE for a live connection (a server move or a channel switch, which always
  brings a new token) starts a new voice session; a null endpoint means "wait for the next one".
- A resume (same SSRC, same UDP socket, ``seq_ack`` so v8 re-delivers what was missed) follows
  4015, transport-level closes, a dropped connection and a heartbeat that was never ACKed.
- Every other close ends the connection with a reason; nothing loops: a bounded number of attempts
  without progress also ends it.

Websocket connections are numbered. Every event from a websocket carries the number it was opened
with, so a late event from a connection that was already replaced is ignored instead of being
mistaken for news about the current one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from ..._errors import NoCompatibleEncryptionMode, UsageError, shorten
from ..gateway.voice import parse_voice_server_update, parse_voice_state_update
from ..ip_discovery import DiscoveredAddress
from ..snowflake import Snowflake
from ..transport import SUPPORTED_MODES, choose_mode
from .frames import (
    SeqTracker,
    ServerBinaryMessage,
    decode_server_binary,
    decode_server_text,
)
from .opcodes import CloseAction, classify_close, describe_close
from .payloads import (
    MAX_HEARTBEAT_NONCE,
    ClientDisconnect,
    ClientMessage,
    ClientsConnect,
    ClientSpeaking,
    DaveExecuteTransition,
    DavePrepareEpoch,
    DavePrepareTransition,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    Ready,
    Resume,
    Resumed,
    SelectProtocol,
    ServerMessage,
    ServerSpeaking,
    SessionDescription,
)

__all__ = [
    "MAX_ATTEMPTS_WITHOUT_PROGRESS",
    "MOVE_GRACE_SECONDS",
    "NO_DAVE_PROTOCOL_VERSION",
    "Action",
    "CloseWebSocket",
    "Connected",
    "DaveMessage",
    "InstallCipher",
    "Invalidated",
    "InvalidationReason",
    "MemberConnected",
    "MemberDisconnected",
    "MemberSpeaking",
    "NewDaveSession",
    "OpenWebSocket",
    "Phase",
    "SendVoiceMessage",
    "SendVoiceStateUpdate",
    "StartMoveGrace",
    "StartUdp",
    "VoiceSession",
    "endpoint_url",
]

#: What Identify advertises until DAVE lands: 0 tells Discord this client has no E2EE.
NO_DAVE_PROTOCOL_VERSION: Final = 0
#: Websocket attempts in a row that may fail before the connection is given up (a resume that
#: never reaches Resumed, an identify that never reaches Ready). Bounded so nothing loops.
MAX_ATTEMPTS_WITHOUT_PROGRESS: Final = 5
#: Close code for closing a websocket we mean to resume: 1000 would end the voice session.
RESUMABLE_CLOSE_CODE: Final = 4000
#: Close code for a websocket whose session we are done with.
FINAL_CLOSE_CODE: Final = 1000
#: Seconds to wait, after 4014 or 4022, for the VOICE_SERVER_UPDATE of a move. Discord closes the
#: old voice websocket when the bot is moved, switches channel or changes voice server, and that
#: close can overtake the main-gateway dispatches announcing the new place; only when no new
#: server follows was it really a kick or the end of the call.
MOVE_GRACE_SECONDS: Final = 5.0
#: Characters of an invalidation's detail: it ends up in logs and in VoiceConnectionFailed.
_MAX_DETAIL: Final = 1000


class InvalidationReason(enum.Enum):
    """Why a voice connection ended. Discore's four, plus the distinctions Discord makes."""

    NORMAL = "normal"
    TIMED_OUT = "timed_out"
    ERROR = "error"
    NATIVE_LIBRARY_MISSING = "native_library_missing"
    KICKED = "kicked"
    CALL_TERMINATED = "call_terminated"
    RATE_LIMITED = "rate_limited"
    SESSION_INVALID = "session_invalid"
    DAVE_REQUIRED = "dave_required"
    GATEWAY_CLOSED = "gateway_closed"


class Phase(enum.Enum):
    """Where the handshake is; the shell shows it only through is_connecting/is_connected."""

    IDLE = "idle"
    AWAITING_GATEWAY = "awaiting_gateway"  # op 4 sent; waiting for one or both dispatches
    AWAITING_SERVER = "awaiting_server"  # the voice server went away (null endpoint)
    IDENTIFYING = "identifying"  # websocket asked for; Identify goes out when it opens
    DISCOVERING = "discovering"  # Ready received; UDP IP discovery under way
    SELECTING = "selecting"  # Select Protocol sent; waiting for Session Description
    CONNECTED = "connected"
    RESUMING = "resuming"  # a new websocket; Resume goes out when it opens
    INVALID = "invalid"


_HANDSHAKE: Final = frozenset(
    {
        Phase.AWAITING_GATEWAY,
        Phase.AWAITING_SERVER,
        Phase.IDENTIFYING,
        Phase.DISCOVERING,
        Phase.SELECTING,
        Phase.RESUMING,
    }
)
#: Phases with a websocket we asked for (open or opening).
_WITH_WEBSOCKET: Final = frozenset(
    {Phase.IDENTIFYING, Phase.DISCOVERING, Phase.SELECTING, Phase.CONNECTED, Phase.RESUMING}
)

# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendVoiceStateUpdate:
    """Send main-gateway op 4 through the bridge (``channel_id`` None leaves)."""

    channel_id: Snowflake | None
    self_mute: bool
    self_deaf: bool


@dataclass(frozen=True, slots=True)
class OpenWebSocket:
    """Open the voice websocket; events from it carry ``connection_id``.

    The shell closes any earlier websocket it still holds before opening this one.
    """

    connection_id: int
    url: str


@dataclass(frozen=True, slots=True)
class CloseWebSocket:
    """Close one websocket; ``code`` 4000 keeps the voice session resumable, 1000 ends it."""

    connection_id: int
    code: int


@dataclass(frozen=True, slots=True)
class SendVoiceMessage:
    """Send a JSON message on one websocket. It may hold secrets: never log it."""

    connection_id: int
    message: ClientMessage


@dataclass(frozen=True, slots=True)
class StartUdp:
    """(Re)start the UDP socket towards the voice server and run IP discovery for ``ssrc``.

    The result comes back through :meth:`VoiceSession.ip_discovered` with ``connection_id``.
    """

    connection_id: int
    ip: str
    port: int
    ssrc: int


@dataclass(frozen=True, slots=True)
class StartMoveGrace:
    """Call :meth:`VoiceSession.move_grace_expired` with ``grace_id`` after ``seconds``."""

    grace_id: int
    seconds: float


@dataclass(frozen=True, slots=True)
class InstallCipher:
    """Use this transport mode and key for UDP from now on."""

    mode: str
    secret_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake finished: first connect, a channel switch or a server move."""

    channel_id: Snowflake
    ssrc: int
    mode: str


@dataclass(frozen=True, slots=True)
class Invalidated:
    """The connection ended for good; ``detail`` is for humans and holds no secrets."""

    reason: InvalidationReason
    detail: str


@dataclass(frozen=True, slots=True)
class MemberSpeaking:
    """Another member's speaking state: also the only way to learn which user owns an SSRC."""

    user_id: Snowflake
    ssrc: int
    flags: int


@dataclass(frozen=True, slots=True)
class DaveMessage:
    """Hand a server message to the DAVE layer; replies go back on websocket ``connection_id``.

    Only emitted when Identify offered DAVE: without it the server sends no DAVE, and the
    membership and version messages matter to nothing else.
    """

    connection_id: int
    message: ServerBinaryMessage | ServerMessage


@dataclass(frozen=True, slots=True)
class NewDaveSession:
    """A new voice session (first join, server move, channel switch): DAVE starts afresh.

    Not emitted for a resume, which keeps the group: the server re-delivers what was missed.
    """

    channel_id: Snowflake


@dataclass(frozen=True, slots=True)
class MemberConnected:
    user_id: Snowflake


@dataclass(frozen=True, slots=True)
class MemberDisconnected:
    user_id: Snowflake


Action: TypeAlias = (
    SendVoiceStateUpdate
    | OpenWebSocket
    | CloseWebSocket
    | SendVoiceMessage
    | StartUdp
    | StartMoveGrace
    | InstallCipher
    | Connected
    | Invalidated
    | MemberSpeaking
    | MemberConnected
    | MemberDisconnected
    | DaveMessage
    | NewDaveSession
)


def endpoint_url(endpoint: str) -> str:
    """The voice websocket URL for a VOICE_SERVER_UPDATE endpoint.

    Discord sends a bare ``host:port``; the simulator may send a full ``ws://`` URL (plain
    websockets for speed), which is used exactly as given.
    """
    if endpoint.startswith(("ws://", "wss://")):
        return endpoint
    return f"wss://{endpoint}/?v=8"


_FATAL_REASONS: Final[dict[int, InvalidationReason]] = {
    4014: InvalidationReason.KICKED,
    4017: InvalidationReason.DAVE_REQUIRED,
    4021: InvalidationReason.RATE_LIMITED,
    4022: InvalidationReason.CALL_TERMINATED,
}

_DAVE_ADVICE: Final = (
    "; this connection identified without DAVE (max_dave_protocol_version=0) because the davey "
    "package, which provides DAVE end-to-end encryption, is not installed or cannot be imported "
    "(it is a native wheel: check that one exists for this platform and Python). Discord "
    "requires DAVE for voice since 2026-03-01: pip install 'davey>=0.1.7,<0.2'"
)


class VoiceSession:
    """One guild's voice connection, from the first op 4 to invalidation.

    Every method returns the actions to carry out, in order. Calls that make no sense in the
    current phase (anything after invalidation, a stale websocket's events, a second connect)
    return no actions: the caller never has to check the phase first. Methods that parse peer
    input raise only :class:`ProtocolError`, and then change nothing but the seq acknowledgement
    (a frame that was received counts as received, even if it cannot be used); the caller
    reports it through :meth:`malformed`, which decides whether it is fatal.
    """

    def __init__(
        self,
        guild_id: Snowflake,
        user_id: Snowflake,
        *,
        supported_modes: tuple[str, ...] = SUPPORTED_MODES,
        max_dave_protocol_version: int = NO_DAVE_PROTOCOL_VERSION,
    ) -> None:
        self.guild_id = guild_id
        self.user_id = user_id
        self._supported_modes = supported_modes
        self._max_dave = max_dave_protocol_version
        self.phase = Phase.IDLE
        self.channel_id: Snowflake | None = None
        self.self_mute = False
        self.self_deaf = False
        self.ssrc: int | None = None
        self.encryption_mode: str | None = None
        self.invalidation: Invalidated | None = None
        self._session_id: str | None = None
        self._token: str | None = None
        self._endpoint: str | None = None
        self._have_state = False
        self._have_server = False
        self._connection_id = 0
        self._socket_open = False
        self._udp_target: tuple[str, int] | None = None
        self._offered_modes: tuple[str, ...] = ()
        self._ever_connected = False
        self._session_connected = False  # this voice session reached Session Description
        self._attempts = 0
        self._seq = SeqTracker()
        self.heartbeat_interval: float | None = None
        self.next_heartbeat_at: float | None = None
        self._heartbeat_nonce = 0
        self._awaiting_ack: int | None = None
        self._grace_id = 0
        self._pending: Invalidated | None = None  # a 4014/4022 that a move may still explain

    def __repr__(self) -> str:
        return (
            f"<VoiceSession guild={self.guild_id} channel={self.channel_id} "
            f"phase={self.phase.value} ssrc={self.ssrc}>"
        )

    # --- state ----------------------------------------------------------------------------

    @property
    def is_valid(self) -> bool:
        return self.phase is not Phase.INVALID

    @property
    def is_connected(self) -> bool:
        return self.phase is Phase.CONNECTED

    @property
    def is_connecting(self) -> bool:
        return self.phase in _HANDSHAKE

    @property
    def connection_id(self) -> int:
        """The number of the current websocket (0 before the first)."""
        return self._connection_id

    @property
    def seq_ack(self) -> int:
        return self._seq.seq_ack

    # --- the caller's requests ------------------------------------------------------------

    def connect(
        self, channel_id: Snowflake, *, self_mute: bool = False, self_deaf: bool = False
    ) -> list[Action]:
        """Join ``channel_id``: op 4, then wait for both dispatches."""
        if self.phase is not Phase.IDLE:
            return []
        self.phase = Phase.AWAITING_GATEWAY
        self.channel_id = channel_id
        self.self_mute, self.self_deaf = self_mute, self_deaf
        return [SendVoiceStateUpdate(channel_id, self_mute, self_deaf)]

    def update_voice_state(
        self, channel_id: Snowflake | None, *, self_mute: bool, self_deaf: bool
    ) -> list[Action]:
        """Switch channel or change mute/deaf; a null channel is a disconnect.

        A switch completes when Discord's new token arrives (a VOICE_SERVER_UPDATE), which this
        machine treats like any other new voice server.
        """
        if self.phase in (Phase.IDLE, Phase.INVALID):
            return []
        if channel_id is None:
            return self.disconnect()
        self.self_mute, self.self_deaf = self_mute, self_deaf
        return [SendVoiceStateUpdate(channel_id, self_mute, self_deaf)]

    def disconnect(self) -> list[Action]:
        """Leave: op 4 with a null channel, close the websocket, invalidate NORMAL."""
        if self.phase in (Phase.IDLE, Phase.INVALID):
            return []
        leave: list[Action] = [SendVoiceStateUpdate(None, self.self_mute, self.self_deaf)]
        return leave + self._invalidate(InvalidationReason.NORMAL, "the connection was closed")

    def set_speaking(self, flags: int) -> list[Action]:
        """Op 5, which must precede audio; only meaningful on a live websocket."""
        if self.phase is not Phase.CONNECTED or self.ssrc is None:
            return []
        return [self._send(ClientSpeaking(speaking=flags, ssrc=self.ssrc))]

    def fail(self, reason: InvalidationReason, detail: str) -> list[Action]:
        """Invalidate for a reason only the shell can see (a timeout, a missing library)."""
        return self._invalidate(reason, detail)

    def gateway_session_lost(self, detail: str) -> list[Action]:
        """The main gateway session ended without a resume: Discord dropped our voice state
        with it, and the voice server is closing (4014). Over now, not after a move grace."""
        return self._invalidate(
            InvalidationReason.GATEWAY_CLOSED,
            f"{detail}; Discord ends a session's voice connections with it",
        )

    def gateway_closed(self) -> list[Action]:
        """The shard or bridge went away: no op 4 can be sent and no dispatch will come."""
        return self._invalidate(
            InvalidationReason.GATEWAY_CLOSED,
            "the gateway connection (shard or bridge) this voice connection depends on closed",
        )

    # --- the main gateway -----------------------------------------------------------------

    def voice_state_update(self, data: object) -> list[Action]:
        """A VOICE_STATE_UPDATE dispatch (its ``d``), for any user of any guild."""
        update = parse_voice_state_update(data)
        if update.guild_id != self.guild_id or update.user_id != self.user_id:
            return []
        if self.phase in (Phase.IDLE, Phase.INVALID):
            return []
        if update.channel_id is None:
            if not self._have_state:
                # Before our own join shows up, a null channel can only be the echo of an earlier
                # connection leaving this guild: it says nothing about this one.
                return []
            pending = self._pending
            if pending is not None and pending.reason is InvalidationReason.CALL_TERMINATED:
                return self._invalidate(pending.reason, pending.detail)
            return self._invalidate(
                InvalidationReason.KICKED,
                "the bot was disconnected from the voice channel (kicked, or the channel was "
                "deleted)",
            )
        self.channel_id = update.channel_id
        self.self_mute, self.self_deaf = update.self_mute, update.self_deaf
        self._have_state = True
        self._session_id = update.session_id
        if self.phase is Phase.AWAITING_GATEWAY and self._have_server:
            return self._start_session()
        return []

    def voice_server_update(self, data: object) -> list[Action]:
        """A VOICE_SERVER_UPDATE dispatch: a first server, a switch's new token, or a move."""
        update = parse_voice_server_update(data)
        if update.guild_id != self.guild_id or self.phase in (Phase.IDLE, Phase.INVALID):
            return []
        self._token = update.token
        self._endpoint = update.endpoint
        self._pending = None  # a move after all
        actions: list[Action] = []
        if self.phase in _WITH_WEBSOCKET:
            # Whatever the old server was doing, its session is over.
            actions.append(CloseWebSocket(self._connection_id, FINAL_CLOSE_CODE))
            self._socket_open = False
        self._attempts = 0
        if update.endpoint is None:
            self._have_server = False
            self._stop_heartbeat()
            self.phase = Phase.AWAITING_SERVER if self._have_state else Phase.AWAITING_GATEWAY
            return actions
        self._have_server = True
        if not self._have_state:
            self.phase = Phase.AWAITING_GATEWAY
            return actions
        return actions + self._start_session()

    # --- the voice websocket --------------------------------------------------------------

    def websocket_opened(self, connection_id: int) -> list[Action]:
        """The websocket is up: identify or resume on it."""
        if connection_id != self._connection_id or self.phase not in _WITH_WEBSOCKET:
            return []
        self._socket_open = True
        assert self._session_id is not None and self._token is not None
        if self.phase is Phase.RESUMING:
            return [
                self._send(
                    Resume(
                        server_id=self.guild_id,
                        session_id=self._session_id,
                        token=self._token,
                        seq_ack=self._seq.seq_ack,
                    )
                )
            ]
        return [
            self._send(
                Identify(
                    server_id=self.guild_id,
                    user_id=self.user_id,
                    session_id=self._session_id,
                    token=self._token,
                    max_dave_protocol_version=self._max_dave,
                )
            )
        ]

    def receive_text(self, connection_id: int, data: str | bytes) -> list[Action]:
        """A JSON frame. Raises :class:`ProtocolError` (``UnknownOpcode`` for a new op)."""
        if connection_id != self._connection_id or self.phase not in _WITH_WEBSOCKET:
            return []
        # Decoding records the seq even of a message we then cannot use: it was received.
        _, message = decode_server_text(data, self._seq)
        return self.receive_message(connection_id, message)

    def receive_binary(self, connection_id: int, data: bytes) -> list[Action]:
        """A binary (DAVE) frame: acknowledged through seq_ack, and handed to the DAVE layer."""
        if connection_id != self._connection_id or self.phase not in _WITH_WEBSOCKET:
            return []
        _, message = decode_server_binary(data, self._seq)
        return self._to_dave(message)

    def malformed(self, connection_id: int, detail: str) -> list[Action]:
        """A frame failed to parse. Mid-handshake nothing else can move us on, so it ends the
        connection; once connected, one bad message is not worth a live call."""
        if connection_id != self._connection_id or self.phase not in _WITH_WEBSOCKET:
            return []
        if self.phase in (Phase.CONNECTED, Phase.RESUMING):
            return []
        return self._invalidate(
            InvalidationReason.ERROR, f"the voice server sent a malformed message: {detail}"
        )

    def receive_message(self, connection_id: int, message: ServerMessage) -> list[Action]:
        """A decoded server message on websocket ``connection_id``."""
        if connection_id != self._connection_id or self.phase not in _WITH_WEBSOCKET:
            return []
        if isinstance(message, Hello):
            self.heartbeat_interval = message.heartbeat_interval_ms / 1000.0
            self._awaiting_ack = None
            # Due at once: the shell's heartbeat task schedules the rest from its own clock.
            self.next_heartbeat_at = float("-inf")
            return []
        if isinstance(message, HeartbeatAck):
            if message.nonce == self._awaiting_ack:
                self._awaiting_ack = None
            return []
        if isinstance(message, Ready):
            return self._ready(message)
        if isinstance(message, SessionDescription):
            return self._session_description(message)
        if isinstance(message, Resumed):
            if self.phase is Phase.RESUMING:
                self.phase = Phase.CONNECTED
                self._attempts = 0
            return []
        if isinstance(message, ServerSpeaking):
            return [MemberSpeaking(message.user_id, message.ssrc, message.speaking)]
        if isinstance(message, ClientsConnect):
            connected: list[Action] = [MemberConnected(user_id) for user_id in message.user_ids]
            return self._to_dave(message) + connected
        if isinstance(message, ClientDisconnect):
            return [*self._to_dave(message), MemberDisconnected(message.user_id)]
        if isinstance(message, DavePrepareTransition | DaveExecuteTransition | DavePrepareEpoch):
            return self._to_dave(message)
        return []

    def websocket_closed(self, connection_id: int, code: int | None) -> list[Action]:
        """The websocket closed (``code``) or dropped (None); resume or invalidate."""
        if connection_id != self._connection_id or self.phase not in _WITH_WEBSOCKET:
            return []
        self._socket_open = False
        self._stop_heartbeat()
        action = classify_close(code)
        if action is CloseAction.RESUME:
            return self._reconnect(describe_close(code))
        if action is CloseAction.NEW_SESSION:
            return self._invalidate(
                InvalidationReason.SESSION_INVALID, describe_close(code), socket_gone=True
            )
        reason = InvalidationReason.ERROR if code is None else _FATAL_REASONS.get(code)
        detail = describe_close(code)
        if reason is InvalidationReason.DAVE_REQUIRED:
            detail += (
                _DAVE_ADVICE
                if self._max_dave == NO_DAVE_PROTOCOL_VERSION
                else (
                    f"; this connection offered DAVE up to version {self._max_dave}, and the voice "
                    "server wants a newer one: upgrade discore_voice and davey"
                )
            )
        if reason in (InvalidationReason.KICKED, InvalidationReason.CALL_TERMINATED):
            # Maybe a move whose dispatches are still on their way: wait for them, briefly.
            self._pending = Invalidated(reason, detail)
            self._grace_id += 1
            self._have_server = False
            self.phase = Phase.AWAITING_SERVER if self._have_state else Phase.AWAITING_GATEWAY
            return [StartMoveGrace(self._grace_id, MOVE_GRACE_SECONDS)]
        return self._invalidate(reason or InvalidationReason.ERROR, detail, socket_gone=True)

    def move_grace_expired(self, grace_id: int) -> list[Action]:
        """No new voice server followed a 4014/4022: it was a kick or the end of the call."""
        pending = self._pending
        if grace_id != self._grace_id or pending is None:
            return []
        return self._invalidate(pending.reason, pending.detail)

    def websocket_failed(self, connection_id: int, detail: str, *, fatal: bool) -> list[Action]:
        """The websocket could not be opened; ``fatal`` when no retry can help (a bad cert)."""
        if connection_id != self._connection_id or self.phase not in _WITH_WEBSOCKET:
            return []
        if fatal:
            return self._invalidate(InvalidationReason.ERROR, detail, socket_gone=True)
        return self._reconnect(detail)

    # --- heartbeats and UDP ---------------------------------------------------------------

    def heartbeat_due(self, now: float) -> list[Action]:
        """Called at ``next_heartbeat_at``: heartbeat, or resume if the last one had no ACK."""
        if self.heartbeat_interval is None or self.next_heartbeat_at is None:
            return []
        if now < self.next_heartbeat_at or not self._socket_open:
            return []
        if self._awaiting_ack is not None:
            self._stop_heartbeat()
            actions: list[Action] = [CloseWebSocket(self._connection_id, RESUMABLE_CLOSE_CODE)]
            return actions + self._reconnect("the voice server stopped acknowledging heartbeats")
        nonce = max(self._heartbeat_nonce + 1, int(now * 1000)) % (MAX_HEARTBEAT_NONCE + 1)
        self._heartbeat_nonce = nonce
        self._awaiting_ack = nonce
        self.next_heartbeat_at = now + self.heartbeat_interval
        return [self._send(Heartbeat(nonce=nonce, seq_ack=self._seq.seq_ack))]

    def ip_discovered(self, connection_id: int, address: DiscoveredAddress) -> list[Action]:
        """Our public address, as the voice server saw it: select the protocol with it."""
        if connection_id != self._connection_id or self.phase is not Phase.DISCOVERING:
            return []
        if address.ssrc != self.ssrc:
            return []
        try:
            mode = choose_mode(self._offered_modes, supported=self._supported_modes)
        except NoCompatibleEncryptionMode as exc:
            return self._invalidate(InvalidationReason.ERROR, str(exc))
        except UsageError as exc:  # a supported_modes the caller got wrong
            return self._invalidate(InvalidationReason.ERROR, str(exc))
        self.encryption_mode = mode
        self.phase = Phase.SELECTING
        return [self._send(SelectProtocol(address=address.address, port=address.port, mode=mode))]

    def udp_failed(self, connection_id: int, detail: str) -> list[Action]:
        """IP discovery got no answer: without UDP there is no voice."""
        if connection_id != self._connection_id or self.phase is not Phase.DISCOVERING:
            return []
        return self._invalidate(InvalidationReason.ERROR, detail)

    # --- internals ------------------------------------------------------------------------

    def _send(self, message: ClientMessage) -> SendVoiceMessage:
        return SendVoiceMessage(self._connection_id, message)

    def _stop_heartbeat(self) -> None:
        self.heartbeat_interval = None
        self.next_heartbeat_at = None
        self._awaiting_ack = None

    def _open(self, phase: Phase) -> list[Action]:
        assert self._endpoint is not None
        self._connection_id += 1
        self._socket_open = False
        self._stop_heartbeat()
        self.phase = phase
        return [OpenWebSocket(self._connection_id, endpoint_url(self._endpoint))]

    def _start_session(self) -> list[Action]:
        """Identify anew: a new token means a new voice session, with a new SSRC and key."""
        self._seq.reset()
        self._session_connected = False
        self.ssrc = None
        self._udp_target = None
        opened = self._open(Phase.IDENTIFYING)
        if self._max_dave > NO_DAVE_PROTOCOL_VERSION and self.channel_id is not None:
            return [NewDaveSession(self.channel_id), *opened]
        return opened

    def _to_dave(self, message: ServerBinaryMessage | ServerMessage) -> list[Action]:
        if self._max_dave == NO_DAVE_PROTOCOL_VERSION:
            return []
        return [DaveMessage(self._connection_id, message)]

    def _reconnect(self, why: str) -> list[Action]:
        """Resume the session if it got as far as a key; otherwise identify again."""
        self._attempts += 1
        if self._attempts > MAX_ATTEMPTS_WITHOUT_PROGRESS:
            return self._invalidate(
                InvalidationReason.ERROR,
                f"gave up after {MAX_ATTEMPTS_WITHOUT_PROGRESS} reconnection attempts; last: {why}",
                socket_gone=True,
            )
        if self._session_connected:
            return self._open(Phase.RESUMING)
        return self._start_session()

    def _ready(self, ready: Ready) -> list[Action]:
        if self.phase is not Phase.IDENTIFYING:
            return []
        self.ssrc = ready.ssrc
        self._offered_modes = ready.modes
        self._udp_target = (ready.ip, ready.port)
        self.phase = Phase.DISCOVERING
        return [StartUdp(self._connection_id, ready.ip, ready.port, ready.ssrc)]

    def _session_description(self, description: SessionDescription) -> list[Action]:
        if self.phase is Phase.SELECTING:
            if description.mode != self.encryption_mode:
                return self._invalidate(
                    InvalidationReason.ERROR,
                    f"the voice server chose transport mode {shorten(repr(description.mode))}, but "
                    f"{self.encryption_mode!r} was selected",
                )
            self.phase = Phase.CONNECTED
            self._session_connected = True
            self._ever_connected = True
            self._attempts = 0
            assert self.channel_id is not None and self.ssrc is not None
            # Connected stays the first event; DAVE's own (its start) follows it.
            return [
                InstallCipher(description.mode, description.secret_key),
                Connected(self.channel_id, self.ssrc, description.mode),
                *self._to_dave(description),
            ]
        if self.phase in (Phase.CONNECTED, Phase.RESUMING) and (
            description.mode == self.encryption_mode
        ):
            # A fresh key for the same session (sent after a resume, for one).
            return [InstallCipher(description.mode, description.secret_key)]
        return []

    def _invalidate(
        self, reason: InvalidationReason, detail: str, *, socket_gone: bool = False
    ) -> list[Action]:
        if self.phase in (Phase.IDLE, Phase.INVALID):
            return []
        actions: list[Action] = []
        if self.phase in _WITH_WEBSOCKET and not socket_gone:
            actions.append(CloseWebSocket(self._connection_id, FINAL_CLOSE_CODE))
        self.phase = Phase.INVALID
        self._pending = None
        self._socket_open = False
        self._stop_heartbeat()
        # Details quote what peers sent (close descriptions, davey's words): bounded all the same.
        invalidated = Invalidated(reason, shorten(detail, _MAX_DETAIL))
        self.invalidation = invalidated
        actions.append(invalidated)
        if reason not in (InvalidationReason.NORMAL, InvalidationReason.GATEWAY_CLOSED):
            # The main gateway may still show the bot in the channel (a failed handshake, a
            # dead voice session): leave now, not when the caller's block ends.
            actions.append(SendVoiceStateUpdate(None, self.self_mute, self.self_deaf))
        return actions
