"""The voice connection's handshake state machine: sans-IO, so every ordering of events is testable.

It is fed events (the two main-gateway dispatches, every voice websocket frame, the websocket
closing, the IP discovery result, timers, the caller's requests) with the time they happened,
and returns what to do, in order. It never touches a socket or a clock: time comes in as an
argument, and "open a websocket" or "send Identify" go out as objects. The voice core
(``protocol.py``) wraps it with DAVE, the media keys and the speaking state, and encodes what it
sends.

Its policy:

- Entering needs both dispatches, in either order, filtered on our guild and our user.
- A VOICE_SERVER_UPDATE for a live connection (a server move or a channel switch, which always
  brings a new token) starts a new voice session; a null endpoint means "wait for the next one".
- A resume (same SSRC, same UDP socket, ``seq_ack`` so v8 re-delivers what was missed) follows
  4015, transport-level closes, a dropped connection, a heartbeat that was never ACKed and an
  attempt that did not get as far as Hello and Resumed in time.
- A UDP path that stopped answering keep-alives is re-established: a fresh socket, IP discovery,
  and Select Protocol again on the live websocket.
- Every reconnect waits an exponential backoff with jitter, reset only by real progress: the
  websocket stayed up for two heartbeat intervals, or media flowed. Without progress, a bounded
  number of attempts (and never more than :data:`MAX_ATTEMPTS_PER_MINUTE` in a minute) ends the
  connection with ``RECONNECT_FAILED``. Nothing loops.
- Every other close ends the connection with a reason.

Websockets and UDP sockets are numbered. Every event from one carries the number it was opened
with, so a late event from a socket that was already replaced is ignored instead of being
mistaken for news about the current one.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from ..._errors import NoCompatibleEncryptionMode, UsageError, shorten
from ..gateway.voice import parse_voice_server_update, parse_voice_state_update
from ..ip_discovery import DiscoveredAddress
from ..snowflake import Snowflake
from ..transport import SUPPORTED_MODES, choose_mode
from .commands import (
    CloseWebSocket,
    Log,
    OpenWebSocket,
    SendVoiceStateUpdate,
    SetTimer,
    StartUdp,
    TimerKind,
)
from .events import (
    Connected,
    Invalidated,
    InvalidationReason,
    MemberConnected,
    MemberDisconnected,
    MemberSpeaking,
)
from .frames import SeqTracker, ServerBinaryMessage, decode_server_binary, decode_server_text
from .opcodes import CloseAction, classify_close, describe_close
from .payloads import (
    MAX_HEARTBEAT_NONCE,
    ClientDisconnect,
    ClientMessage,
    ClientsConnect,
    ClientSpeaking,
    ClientSsrcs,
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
    "ATTEMPT_TIMEOUT",
    "MAX_ATTEMPTS_PER_MINUTE",
    "MAX_ATTEMPTS_WITHOUT_PROGRESS",
    "MAX_HEARTBEAT_INTERVAL",
    "MIN_HEARTBEAT_INTERVAL",
    "MOVE_GRACE_SECONDS",
    "NO_DAVE_PROTOCOL_VERSION",
    "DaveMessage",
    "InstallCipher",
    "NewDaveSession",
    "Phase",
    "SendVoiceMessage",
    "SessionOutput",
    "SessionStats",
    "SsrcAnnounced",
    "VoiceSession",
    "endpoint_url",
]

#: What Identify advertises without DAVE: 0 tells Discord this client has no E2EE.
NO_DAVE_PROTOCOL_VERSION: Final = 0
#: Reconnect attempts in a row without progress before the connection is given up (Songbird
#: gives up after 5 retries too). With the backoff below they span about 25 seconds.
MAX_ATTEMPTS_WITHOUT_PROGRESS: Final = 6
#: And never more than this many attempts within any minute, progress or not: a server that lets
#: media flow between crashes every few seconds is not worth a storm of reconnects either.
MAX_ATTEMPTS_PER_MINUTE: Final = 10
#: The backoff before attempt n (1-based) is drawn from [d/2, d) with d = base * 2**(n-1), capped.
RECONNECT_BACKOFF_BASE: Final = 0.5
RECONNECT_BACKOFF_MAX: Final = 10.0
#: Seconds an attempt (a new websocket) has to get Hello and Ready (or Resumed): a server that
#: accepts the connection and then says nothing must not leave us waiting forever.
ATTEMPT_TIMEOUT: Final = 15.0
#: Bounds of the heartbeat interval a Hello may ask for. Discord's is 13.75 s; a hostile 1 ms
#: would be a thousand heartbeats a second, and 1e308 ms none at all.
MIN_HEARTBEAT_INTERVAL: Final = 1.0
MAX_HEARTBEAT_INTERVAL: Final = 60.0
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
_MINUTE: Final = 60.0


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
#: Phases with a websocket we asked for (open, opening, or waiting out a backoff to open).
_WITH_WEBSOCKET: Final = frozenset(
    {Phase.IDENTIFYING, Phase.DISCOVERING, Phase.SELECTING, Phase.CONNECTED, Phase.RESUMING}
)


class _Udp(enum.Enum):
    """The UDP path, apart from the websocket: a dead path is re-established on a live one."""

    OK = "ok"
    WAITING = "waiting"  # a restart waits out its backoff
    DISCOVERING = "discovering"  # a fresh socket's IP discovery is under way
    DISCOVERED = "discovered"  # its address is known; Select Protocol waits for the websocket
    SELECTING = "selecting"  # Select Protocol sent again; waiting for Session Description


# --- what only the voice core sees (the rest are commands.py's commands and events.py's events) ---


@dataclass(frozen=True, slots=True)
class SendVoiceMessage:
    """Send a JSON message on websocket ``generation``; the core encodes it. May hold secrets."""

    generation: int
    message: ClientMessage = field(repr=False)


@dataclass(frozen=True, slots=True)
class InstallCipher:
    """Use this transport mode and key for UDP from now on."""

    mode: str
    secret_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DaveMessage:
    """Hand a server message to the DAVE layer; replies go back on websocket ``generation``.

    Only emitted when Identify offered DAVE: without it the server sends no DAVE, and the
    membership and version messages matter to nothing else.
    """

    generation: int
    message: ServerBinaryMessage | ServerMessage


@dataclass(frozen=True, slots=True)
class SsrcAnnounced:
    """Op 12 named a member's audio SSRC before it spoke: receive may map it already."""

    user_id: Snowflake
    ssrc: int


@dataclass(frozen=True, slots=True)
class NewDaveSession:
    """A new voice session (first join, server move, channel switch): DAVE starts afresh.

    Not emitted for a resume, which keeps the group: the server re-delivers what was missed.
    """

    channel_id: Snowflake


SessionOutput: TypeAlias = (
    SendVoiceStateUpdate
    | OpenWebSocket
    | CloseWebSocket
    | SendVoiceMessage
    | StartUdp
    | SetTimer
    | InstallCipher
    | DaveMessage
    | NewDaveSession
    | SsrcAnnounced
    | Log
    | Connected
    | Invalidated
    | MemberSpeaking
    | MemberConnected
    | MemberDisconnected
)


@dataclass(frozen=True, slots=True)
class SessionStats:
    """What the voice websocket went through; cumulative over the connection's life."""

    websockets_opened: int
    identifies: int
    resumes: int
    reconnects: int
    udp_restarts: int
    closes: dict[int | None, int]
    heartbeat_rtt_ms: float | None


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

    Every method returns the outputs to carry out, in order. Calls that make no sense in the
    current phase (anything after invalidation, a stale socket's events, a second connect)
    return nothing: the caller never has to check the phase first. Methods that parse peer
    input raise only :class:`ProtocolError`, and then change nothing but the seq acknowledgement
    (a frame that was received counts as received, even if it cannot be used); the caller
    reports it through :meth:`malformed`, which decides whether it is fatal.

    ``random`` draws the backoff's jitter (in [0, 1)); tests pass their own.
    """

    def __init__(
        self,
        guild_id: Snowflake,
        user_id: Snowflake,
        *,
        supported_modes: tuple[str, ...] = SUPPORTED_MODES,
        max_dave_protocol_version: int = NO_DAVE_PROTOCOL_VERSION,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.guild_id = guild_id
        self.user_id = user_id
        self._supported_modes = supported_modes
        self._max_dave = max_dave_protocol_version
        self._random = random
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
        self._generation = 0
        self._socket_open = False
        self._open_pending = False  # the websocket waits out a backoff before it is opened
        self._hello = False  # Hello arrived on the current websocket
        self._udp_target: tuple[str, int] | None = None
        self._udp_generation = 0
        self._udp = _Udp.OK
        self._rediscovered: DiscoveredAddress | None = None
        self._offered_modes: tuple[str, ...] = ()
        self._session_connected = False  # this voice session reached Session Description
        self._attempts = 0
        self._attempt_times: deque[float] = deque()
        self._established_at: float | None = None  # the current websocket reached Ready/Resumed
        self._progressed = True  # no attempt is waiting for proof of progress
        self._seq = SeqTracker()
        self.heartbeat_interval: float | None = None
        self._heartbeat_nonce = 0
        self._awaiting_ack: int | None = None
        self._heartbeat_sent_at: float | None = None
        self._heartbeat_rtt: float | None = None
        self._timers: dict[TimerKind, float] = {}
        self._pending: Invalidated | None = None  # a 4014/4022 that a move may still explain
        self._join_sent = True  # our join's op 4 went out (see connect's sent_marker)
        self._sent_marker = False
        self._gateway_up = True
        self._counts: Counter[str] = Counter()
        self._closes: Counter[int | None] = Counter()

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
        """Handshake done, websocket live and the UDP path answering."""
        return self.phase is Phase.CONNECTED and self._udp is _Udp.OK

    @property
    def is_connecting(self) -> bool:
        return self.phase in _HANDSHAKE or (
            self.phase is Phase.CONNECTED and self._udp is not _Udp.OK
        )

    @property
    def generation(self) -> int:
        """The number of the current websocket (0 before the first)."""
        return self._generation

    @property
    def udp_generation(self) -> int:
        """The number of the current UDP socket (0 before the first)."""
        return self._udp_generation

    @property
    def seq_ack(self) -> int:
        return self._seq.seq_ack

    def timer(self, kind: TimerKind) -> float | None:
        """When timer ``kind`` is due (None: disarmed); the shell arms it from SetTimer too."""
        return self._timers.get(kind)

    @property
    def stats(self) -> SessionStats:
        rtt = self._heartbeat_rtt
        return SessionStats(
            websockets_opened=self._counts["opened"],
            identifies=self._counts["identifies"],
            resumes=self._counts["resumes"],
            reconnects=self._counts["reconnects"],
            udp_restarts=self._counts["udp_restarts"],
            closes=dict(self._closes),
            heartbeat_rtt_ms=None if rtt is None else rtt * 1000.0,
        )

    # --- the caller's requests ------------------------------------------------------------

    def connect(
        self,
        channel_id: Snowflake,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
        sent_marker: bool = False,
    ) -> list[SessionOutput]:
        """Join ``channel_id``: op 4, then wait for both dispatches.

        ``sent_marker``: the bridge reports when the op 4 went out (:meth:`voice_state_sent`,
        a shard does), and voice dispatches before that are someone else's: the replay, after a
        resume, of what an earlier connection to this guild was sent.
        """
        if self.phase is not Phase.IDLE:
            return []
        self.phase = Phase.AWAITING_GATEWAY
        self.channel_id = channel_id
        self.self_mute, self.self_deaf = self_mute, self_deaf
        self._sent_marker = sent_marker
        self._join_sent = not sent_marker
        return [SendVoiceStateUpdate(channel_id, self_mute, self_deaf)]

    def voice_state_sent(self, data: object) -> list[SessionOutput]:
        """The bridge sent an op 4 for ``d.guild_id``: answers to our join may follow now."""
        if self._join_sent or not isinstance(data, dict):
            return []
        guild, channel = data.get("guild_id"), data.get("channel_id")
        if guild == str(self.guild_id) and channel == str(self.channel_id):
            self._join_sent = True
        return []

    def gateway_disconnected(self) -> list[SessionOutput]:
        """The shard's connection dropped: dispatches wait for its resume (see the move grace)."""
        self._gateway_up = False
        return []

    @property
    def gateway_up(self) -> bool:
        """False while the shard is away (between GATEWAY_DISCONNECTED and GATEWAY_RESUMED)."""
        return self._gateway_up

    def gateway_resumed(self, now: float) -> list[SessionOutput]:
        """The shard resumed: what it missed is replayed now, a move's dispatches included.

        A join still unanswered once the replay is over may have been lost with the connection
        that carried it: it is sent again (Discord answers a repeated join as a re-join).
        """
        self._gateway_up = True
        if self.phase is Phase.AWAITING_GATEWAY and self._join_sent and self.channel_id:
            self._have_state = self._have_server = False
            self._join_sent = not self._sent_marker
            return [SendVoiceStateUpdate(self.channel_id, self.self_mute, self.self_deaf)]
        if self._pending is None or self.phase is Phase.INVALID:
            return []
        due = self._timers.get(TimerKind.MOVE_GRACE)
        if due is not None and due >= now + MOVE_GRACE_SECONDS:
            return []
        # The grace ran out while the gateway was away (or nearly): a new one from the resume.
        return [self._arm(TimerKind.MOVE_GRACE, now + MOVE_GRACE_SECONDS)]

    def update_voice_state(
        self, channel_id: Snowflake | None, *, self_mute: bool, self_deaf: bool
    ) -> list[SessionOutput]:
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

    def disconnect(self) -> list[SessionOutput]:
        """Leave: op 4 with a null channel, close the websocket, invalidate NORMAL."""
        if self.phase in (Phase.IDLE, Phase.INVALID):
            return []
        leave: list[SessionOutput] = [SendVoiceStateUpdate(None, self.self_mute, self.self_deaf)]
        return leave + self._invalidate(InvalidationReason.NORMAL, "the connection was closed")

    def speaking(self, flags: int) -> list[SessionOutput]:
        """Op 5, which must precede audio; only on a live websocket (the core re-sends it)."""
        if self.phase is not Phase.CONNECTED or not self._socket_open or self.ssrc is None:
            return []
        return [self._send(ClientSpeaking(speaking=flags, ssrc=self.ssrc))]

    def fail(self, reason: InvalidationReason, detail: str) -> list[SessionOutput]:
        """Invalidate for a reason only the shell can see (a timeout, a missing library, a
        join the shard's guild list refuses before any op 4 went out)."""
        if self.phase is Phase.IDLE:
            # Nothing was joined, so there is nothing to leave or close: invalid, and said so.
            self.phase = Phase.INVALID
            self.invalidation = Invalidated(reason, shorten(detail, _MAX_DETAIL))
            return [self.invalidation]
        return self._invalidate(reason, detail)

    def gateway_session_lost(self, detail: str) -> list[SessionOutput]:
        """The main gateway session ended without a resume: Discord dropped our voice state
        with it, and the voice server is closing (4014). Over now, not after a move grace."""
        return self._invalidate(
            InvalidationReason.GATEWAY_CLOSED,
            f"{detail}; Discord ends a session's voice connections with it",
        )

    def gateway_closed(self) -> list[SessionOutput]:
        """The shard or bridge went away: no op 4 can be sent and no dispatch will come."""
        return self._invalidate(
            InvalidationReason.GATEWAY_CLOSED,
            "the gateway connection (shard or bridge) this voice connection depends on closed",
        )

    # --- the main gateway -----------------------------------------------------------------

    def voice_state_update(self, data: object, now: float) -> list[SessionOutput]:
        """A VOICE_STATE_UPDATE dispatch (its ``d``), for any user of any guild."""
        update = parse_voice_state_update(data)
        if update.guild_id != self.guild_id or update.user_id != self.user_id:
            return []
        if self.phase in (Phase.IDLE, Phase.INVALID) or not self._join_sent:
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
            return self._start_session(now)
        return []

    def voice_server_update(self, data: object, now: float) -> list[SessionOutput]:
        """A VOICE_SERVER_UPDATE dispatch: a first server, a switch's new token, or a move."""
        update = parse_voice_server_update(data)
        if update.guild_id != self.guild_id or self.phase in (Phase.IDLE, Phase.INVALID):
            return []
        if not self._join_sent:
            return []  # not an answer to our join, which has not gone out yet
        self._token = update.token
        self._endpoint = update.endpoint
        actions: list[SessionOutput] = []
        if self._pending is not None:
            self._pending = None  # a move after all
            actions += self._disarm(TimerKind.MOVE_GRACE)
        if self.phase in _WITH_WEBSOCKET:
            # Whatever the old server was doing, its session is over.
            if not self._open_pending:
                actions.append(CloseWebSocket(self._generation, FINAL_CLOSE_CODE))
            self._socket_open = False
        # A new server is a fresh start: what failed against the old one says nothing about it.
        self._attempts = 0
        actions += self._stop_attempt()
        if update.endpoint is None:
            self._have_server = False
            self.phase = Phase.AWAITING_SERVER if self._have_state else Phase.AWAITING_GATEWAY
            return actions
        self._have_server = True
        if not self._have_state:
            self.phase = Phase.AWAITING_GATEWAY
            return actions
        return actions + self._start_session(now)

    # --- the voice websocket --------------------------------------------------------------

    def websocket_opened(self, generation: int, now: float) -> list[SessionOutput]:
        """The websocket is up: identify or resume on it."""
        if not self._current(generation):
            return []
        self._socket_open = True
        assert self._session_id is not None and self._token is not None
        if self.phase is Phase.RESUMING:
            self._counts["resumes"] += 1
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
        self._counts["identifies"] += 1
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

    def receive_text(self, generation: int, data: str | bytes, now: float) -> list[SessionOutput]:
        """A JSON frame. Raises :class:`ProtocolError` (``UnknownOpcode`` for a new op)."""
        if not self._current(generation):
            return []
        # Decoding records the seq even of a message we then cannot use: it was received.
        _, message = decode_server_text(data, self._seq)
        return self.receive_message(generation, message, now)

    def receive_binary(self, generation: int, data: bytes) -> list[SessionOutput]:
        """A binary (DAVE) frame: acknowledged through seq_ack, and handed to the DAVE layer."""
        if not self._current(generation):
            return []
        _, message = decode_server_binary(data, self._seq)
        return self._to_dave(message)

    def malformed(self, generation: int, detail: str) -> list[SessionOutput]:
        """A frame failed to parse. Mid-handshake nothing else can move us on, so it ends the
        connection; once connected, one bad message is not worth a live call."""
        if not self._current(generation):
            return []
        if self.phase in (Phase.CONNECTED, Phase.RESUMING):
            return []
        return self._invalidate(
            InvalidationReason.ERROR, f"the voice server sent a malformed message: {detail}"
        )

    def receive_message(
        self, generation: int, message: ServerMessage, now: float
    ) -> list[SessionOutput]:
        """A decoded server message on websocket ``generation``."""
        if not self._current(generation):
            return []
        if isinstance(message, Hello):
            return self._on_hello(message, now)
        if isinstance(message, HeartbeatAck):
            return self._on_heartbeat_ack(message, now)
        if isinstance(message, Ready):
            return self._ready(message, now)
        if isinstance(message, SessionDescription):
            return self._session_description(message, now)
        if isinstance(message, Resumed):
            if self.phase is not Phase.RESUMING:
                return []
            self.phase = Phase.CONNECTED
            return self._established(now)
        if isinstance(message, ServerSpeaking):
            return [MemberSpeaking(message.user_id, message.ssrc, message.speaking)]
        if isinstance(message, ClientsConnect):
            connected: list[SessionOutput] = [MemberConnected(u) for u in message.user_ids]
            return self._to_dave(message) + connected
        if isinstance(message, ClientSsrcs):
            if message.audio_ssrc == 0:
                return []
            return [SsrcAnnounced(message.user_id, message.audio_ssrc)]
        if isinstance(message, ClientDisconnect):
            return [*self._to_dave(message), MemberDisconnected(message.user_id)]
        if isinstance(message, DavePrepareTransition | DaveExecuteTransition | DavePrepareEpoch):
            return self._to_dave(message)
        return []

    def websocket_closed(
        self, generation: int, code: int | None, now: float
    ) -> list[SessionOutput]:
        """The websocket closed (``code``) or dropped (None); resume or invalidate."""
        if not self._current(generation) or self._open_pending:
            return []
        self._socket_open = False
        self._closes[code] += 1
        actions = self._stop_heartbeat()
        action = classify_close(code)
        if action is CloseAction.RESUME:
            return actions + self._reconnect(describe_close(code), now)
        if action is CloseAction.NEW_SESSION:
            return actions + self._invalidate(
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
            self._have_server = False
            self.phase = Phase.AWAITING_SERVER if self._have_state else Phase.AWAITING_GATEWAY
            actions += self._stop_attempt()
            return [*actions, self._arm(TimerKind.MOVE_GRACE, now + MOVE_GRACE_SECONDS)]
        return actions + self._invalidate(
            reason or InvalidationReason.ERROR, detail, socket_gone=True
        )

    def websocket_failed(
        self, generation: int, detail: str, *, fatal: bool, now: float
    ) -> list[SessionOutput]:
        """The websocket could not be opened; ``fatal`` when no retry can help (a bad cert)."""
        if not self._current(generation) or self._open_pending:
            return []
        self._socket_open = False
        if fatal:
            return self._invalidate(InvalidationReason.ERROR, detail, socket_gone=True)
        return self._reconnect(detail, now)

    # --- UDP ------------------------------------------------------------------------------

    def ip_discovered(
        self, udp_generation: int, address: DiscoveredAddress, now: float
    ) -> list[SessionOutput]:
        """Our public address, as the voice server saw it: select the protocol with it."""
        if udp_generation != self._udp_generation or address.ssrc != self.ssrc:
            return []
        if self.phase is Phase.DISCOVERING:
            try:
                mode = choose_mode(self._offered_modes, supported=self._supported_modes)
            except (NoCompatibleEncryptionMode, UsageError) as exc:
                # UsageError: a supported_modes the caller got wrong.
                return self._invalidate(InvalidationReason.ERROR, str(exc))
            self.encryption_mode = mode
            self.phase = Phase.SELECTING
            return [self._send(SelectProtocol(address.address, address.port, mode))]
        if self._udp is _Udp.DISCOVERING and self.encryption_mode is not None:
            if self.phase is Phase.CONNECTED and self._socket_open:
                return self._reselect(address, now)
            # The websocket is reconnecting meanwhile: select once it is back (_established).
            self._udp = _Udp.DISCOVERED
            self._rediscovered = address
        return []

    def udp_failed(self, udp_generation: int, detail: str, now: float) -> list[SessionOutput]:
        """IP discovery failed: fatal on the first handshake, a failed attempt on a restart."""
        if udp_generation != self._udp_generation:
            return []
        if self.phase is Phase.DISCOVERING:
            return self._invalidate(InvalidationReason.ERROR, detail)
        if self._udp is _Udp.DISCOVERING:
            return self._restart_udp(f"re-establishing UDP failed: {detail}", now)
        return []

    def udp_silent(self, udp_generation: int, now: float) -> list[SessionOutput]:
        """The voice server stopped answering keep-alives: re-establish the UDP path."""
        if udp_generation != self._udp_generation or self._udp is not _Udp.OK:
            return []
        if self.phase is not Phase.CONNECTED:
            return []
        return self._restart_udp("the voice server stopped answering UDP keep-alives", now)

    def media_received(self, udp_generation: int, now: float) -> list[SessionOutput]:
        """Media from the voice server decrypted: the path works, which is progress."""
        if udp_generation != self._udp_generation:
            return []
        if self._established_at is not None:
            self._made_progress()
        return []

    # --- timers ---------------------------------------------------------------------------

    def timer_expired(self, kind: TimerKind, now: float) -> list[SessionOutput]:
        """Timer ``kind`` fired at ``now``; a timer re-armed for later in between is ignored."""
        due = self._timers.get(kind)
        if due is None or now < due:
            return []
        del self._timers[kind]
        if kind is TimerKind.HEARTBEAT:
            return self._heartbeat_due(now)
        if kind is TimerKind.RECONNECT:
            return self._open_now(now)
        if kind is TimerKind.ATTEMPT:
            return self._attempt_timed_out(now)
        if kind is TimerKind.UDP_RESTART:
            if self._udp is _Udp.SELECTING:
                return self._restart_udp(
                    "the voice server did not answer Select Protocol for a new UDP path"
                    f" within {ATTEMPT_TIMEOUT:g} s",
                    now,
                )
            return self._start_udp_again()
        pending = self._pending
        if pending is None:
            return []
        if not self._gateway_up:
            # The move's dispatches may be waiting in the gateway's replay: they cannot arrive
            # before it resumes, which starts a new grace (gateway_resumed).
            return []
        # The move grace: no new voice server followed a 4014/4022, so it was a kick or the end.
        return self._invalidate(pending.reason, pending.detail)

    # --- internals: sending, timers -------------------------------------------------------

    def _current(self, generation: int) -> bool:
        return generation == self._generation and self.phase in _WITH_WEBSOCKET

    def _send(self, message: ClientMessage) -> SendVoiceMessage:
        return SendVoiceMessage(self._generation, message)

    def _arm(self, kind: TimerKind, at: float) -> SetTimer:
        self._timers[kind] = at
        return SetTimer(kind, at)

    def _disarm(self, kind: TimerKind) -> list[SessionOutput]:
        if self._timers.pop(kind, None) is None:
            return []
        return [SetTimer(kind, None)]

    def _stop_heartbeat(self) -> list[SessionOutput]:
        self.heartbeat_interval = None
        self._awaiting_ack = None
        return self._disarm(TimerKind.HEARTBEAT)

    def _stop_attempt(self) -> list[SessionOutput]:
        self._open_pending = False
        return self._disarm(TimerKind.ATTEMPT) + self._disarm(TimerKind.RECONNECT)

    # --- internals: heartbeats ------------------------------------------------------------

    def _on_hello(self, hello: Hello, now: float) -> list[SessionOutput]:
        asked = hello.heartbeat_interval_ms / 1000.0
        interval = min(MAX_HEARTBEAT_INTERVAL, max(MIN_HEARTBEAT_INTERVAL, asked))
        out: list[SessionOutput] = []
        if interval != asked:
            out.append(
                Log(
                    logging.WARNING,
                    f"the voice server asked for a heartbeat every {shorten(asked, 40)} s; "
                    f"heartbeating every {interval:g} s instead (the sane range is "
                    f"{MIN_HEARTBEAT_INTERVAL:g}-{MAX_HEARTBEAT_INTERVAL:g} s)",
                )
            )
        self._hello = True
        self.heartbeat_interval = interval
        self._awaiting_ack = None
        # The first heartbeat goes at once; a second Hello re-times, it never adds beats.
        out.append(self._arm(TimerKind.HEARTBEAT, now))
        return out + self._attempt_done(now)

    def _heartbeat_due(self, now: float) -> list[SessionOutput]:
        interval = self.heartbeat_interval
        if interval is None or not self._socket_open:
            return []
        if self._awaiting_ack is not None:
            actions = self._stop_heartbeat()
            actions.append(CloseWebSocket(self._generation, RESUMABLE_CLOSE_CODE))
            self._socket_open = False
            return actions + self._reconnect(
                "the voice server stopped acknowledging heartbeats", now
            )
        nonce = max(self._heartbeat_nonce + 1, int(now * 1000)) % (MAX_HEARTBEAT_NONCE + 1)
        self._heartbeat_nonce = nonce
        self._awaiting_ack = nonce
        self._heartbeat_sent_at = now
        return [
            self._send(Heartbeat(nonce=nonce, seq_ack=self._seq.seq_ack)),
            self._arm(TimerKind.HEARTBEAT, now + interval),
        ]

    def _on_heartbeat_ack(self, ack: HeartbeatAck, now: float) -> list[SessionOutput]:
        if ack.nonce != self._awaiting_ack:
            return []
        self._awaiting_ack = None
        if self._heartbeat_sent_at is not None:
            self._heartbeat_rtt = now - self._heartbeat_sent_at
        established = self._established_at
        interval = self.heartbeat_interval
        if established is not None and interval is not None and now - established >= 2 * interval:
            self._made_progress()
        return []

    # --- internals: attempts and progress -------------------------------------------------

    def _open(self, phase: Phase, now: float, delay: float = 0.0) -> list[SessionOutput]:
        """A new websocket for ``phase``: at once, or after ``delay`` (a backoff)."""
        assert self._endpoint is not None
        self._generation += 1
        self._socket_open = False
        self._hello = False
        self._established_at = None
        self.phase = phase
        out = self._stop_heartbeat()
        if delay > 0:
            self._open_pending = True
            return [*out, self._arm(TimerKind.RECONNECT, now + delay)]
        return out + self._open_now(now)

    def _open_now(self, now: float) -> list[SessionOutput]:
        if self.phase not in _WITH_WEBSOCKET or self._endpoint is None:
            return []
        self._open_pending = False
        self._counts["opened"] += 1
        return [
            OpenWebSocket(self._generation, endpoint_url(self._endpoint)),
            self._arm(TimerKind.ATTEMPT, now + ATTEMPT_TIMEOUT),
        ]

    def _attempt_timed_out(self, now: float) -> list[SessionOutput]:
        if self.phase not in _WITH_WEBSOCKET or self._established_at is not None:
            return []
        if not self._hello:
            why = "the voice server sent no Hello"
        elif self.phase is Phase.SELECTING:
            why = "the voice server did not answer Select Protocol"
        else:
            why = "the voice server did not finish the handshake"
        actions = self._stop_heartbeat()
        actions.append(CloseWebSocket(self._generation, RESUMABLE_CLOSE_CODE))
        self._socket_open = False
        return actions + self._reconnect(f"{why} within {ATTEMPT_TIMEOUT:g} s", now)

    def _established(self, now: float) -> list[SessionOutput]:
        """The websocket is CONNECTED again (Session Description, or Resumed)."""
        out = self._attempt_done(now)
        address = self._rediscovered
        if self._udp is _Udp.DISCOVERED and address is not None:
            out += self._reselect(address, now)
        return out

    def _attempt_done(self, now: float) -> list[SessionOutput]:
        """An attempt is over once its websocket is CONNECTED and heartbeating (Hello came)."""
        if self.phase is not Phase.CONNECTED or not self._hello or self._established_at is not None:
            return []
        self._established_at = now
        return self._disarm(TimerKind.ATTEMPT)

    def _reselect(self, address: DiscoveredAddress, now: float) -> list[SessionOutput]:
        """Select Protocol again, for a re-established UDP path: the voice server learns our new
        address from it, and answers with a Session Description (the key may be the same).

        Unanswered, it would leave the connection valid and mute for good, so it has the
        attempt's deadline (the UDP restart timer): then it counts as a failed attempt.
        """
        assert self.encryption_mode is not None
        self._udp = _Udp.SELECTING
        self._rediscovered = None
        return [
            self._send(SelectProtocol(address.address, address.port, self.encryption_mode)),
            self._arm(TimerKind.UDP_RESTART, now + ATTEMPT_TIMEOUT),
        ]

    def _made_progress(self) -> None:
        self._attempts = 0
        self._progressed = True

    def _next_attempt(self, why: str, now: float) -> tuple[float, list[SessionOutput]] | None:
        """Count an attempt; the backoff before it, or None (after invalidating) if over."""
        self._attempts += 1
        self._progressed = False
        self._counts["reconnects"] += 1
        times = self._attempt_times
        times.append(now)
        while times and times[0] <= now - _MINUTE:
            times.popleft()
        if self._attempts > MAX_ATTEMPTS_WITHOUT_PROGRESS or len(times) > MAX_ATTEMPTS_PER_MINUTE:
            return None
        base = min(RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_BASE * 2.0 ** (self._attempts - 1))
        delay = base / 2 + base / 2 * min(max(self._random(), 0.0), 1.0)
        log = Log(
            logging.WARNING,
            f"{why}; reconnecting in {delay:.1f} s (attempt {self._attempts} of "
            f"{MAX_ATTEMPTS_WITHOUT_PROGRESS} without progress)",
        )
        return delay, [log]

    def _give_up(self, why: str) -> list[SessionOutput]:
        if len(self._attempt_times) > MAX_ATTEMPTS_PER_MINUTE:
            count = f"{len(self._attempt_times)} attempts within a minute"
        else:
            count = f"{MAX_ATTEMPTS_WITHOUT_PROGRESS} attempts in a row without progress"
        return self._invalidate(
            InvalidationReason.RECONNECT_FAILED,
            f"gave up reconnecting after {count}; last: {why}",
            socket_gone=True,
        )

    def _reconnect(self, why: str, now: float) -> list[SessionOutput]:
        """Resume the session if it got as far as a key; otherwise identify again."""
        attempt = self._next_attempt(why, now)
        if attempt is None:
            return self._give_up(why)
        delay, log = attempt
        if self._session_connected:
            return log + self._open(Phase.RESUMING, now, delay)
        return log + self._start_session(now, delay)

    def _restart_udp(self, why: str, now: float) -> list[SessionOutput]:
        """A fresh UDP socket and IP discovery, after a backoff, on the same websocket."""
        attempt = self._next_attempt(why, now)
        if attempt is None:
            return self._give_up(why)
        delay, log = attempt
        self._counts["udp_restarts"] += 1
        self._udp = _Udp.WAITING
        return [*log, self._arm(TimerKind.UDP_RESTART, now + delay)]

    def _start_udp_again(self) -> list[SessionOutput]:
        if self._udp is not _Udp.WAITING or self._udp_target is None or self.ssrc is None:
            return []
        self._udp_generation += 1
        self._udp = _Udp.DISCOVERING
        ip, port = self._udp_target
        return [StartUdp(self._udp_generation, ip, port, self.ssrc)]

    def _start_session(self, now: float, delay: float = 0.0) -> list[SessionOutput]:
        """Identify anew: a new token means a new voice session, with a new SSRC and key."""
        self._seq.reset()
        self._session_connected = False
        self.ssrc = None
        self._udp_target = None
        self._udp = _Udp.OK
        self._rediscovered = None
        opened = self._open(Phase.IDENTIFYING, now, delay) + self._disarm(TimerKind.UDP_RESTART)
        if self._max_dave > NO_DAVE_PROTOCOL_VERSION and self.channel_id is not None:
            return [NewDaveSession(self.channel_id), *opened]
        return opened

    def _to_dave(self, message: ServerBinaryMessage | ServerMessage) -> list[SessionOutput]:
        if self._max_dave == NO_DAVE_PROTOCOL_VERSION:
            return []
        return [DaveMessage(self._generation, message)]

    def _ready(self, ready: Ready, now: float) -> list[SessionOutput]:
        if self.phase is not Phase.IDENTIFYING:
            return []
        self.ssrc = ready.ssrc
        self._offered_modes = ready.modes
        self._udp_target = (ready.ip, ready.port)
        self._udp_generation += 1
        self.phase = Phase.DISCOVERING
        return [StartUdp(self._udp_generation, ready.ip, ready.port, ready.ssrc)]

    def _session_description(
        self, description: SessionDescription, now: float
    ) -> list[SessionOutput]:
        if description.mode != self.encryption_mode and self.phase in (
            Phase.SELECTING,
            Phase.CONNECTED,
        ):
            return self._invalidate(
                InvalidationReason.ERROR,
                f"the voice server chose transport mode {shorten(repr(description.mode))}, but "
                f"{self.encryption_mode!r} was selected",
            )
        if self.phase is Phase.SELECTING:
            self.phase = Phase.CONNECTED
            self._session_connected = True
            assert self.channel_id is not None and self.ssrc is not None
            # Connected stays the first event; DAVE's own (its start) follows it.
            return [
                *self._established(now),
                InstallCipher(description.mode, description.secret_key),
                Connected(self.channel_id, self.ssrc, description.mode),
                *self._to_dave(description),
            ]
        if self.phase in (Phase.CONNECTED, Phase.RESUMING):
            out: list[SessionOutput] = []
            if self._udp is _Udp.SELECTING and self.phase is Phase.CONNECTED:
                self._udp = _Udp.OK
                self._made_progress()
                out += self._disarm(TimerKind.UDP_RESTART)
                out.append(Log(logging.INFO, "the UDP path is re-established"))
            # A key for the same session: after a resume, or for a re-established UDP path.
            return [*out, InstallCipher(description.mode, description.secret_key)]
        return []

    def _invalidate(
        self, reason: InvalidationReason, detail: str, *, socket_gone: bool = False
    ) -> list[SessionOutput]:
        if self.phase in (Phase.IDLE, Phase.INVALID):
            return []
        actions: list[SessionOutput] = []
        if self.phase in _WITH_WEBSOCKET and not socket_gone and not self._open_pending:
            actions.append(CloseWebSocket(self._generation, FINAL_CLOSE_CODE))
        actions += self._stop_heartbeat()
        actions += self._stop_attempt()
        actions += self._disarm(TimerKind.MOVE_GRACE)
        actions += self._disarm(TimerKind.UDP_RESTART)
        self.phase = Phase.INVALID
        self._pending = None
        self._socket_open = False
        # Details quote what peers sent (close descriptions, davey's words): bounded all the same.
        invalidated = Invalidated(reason, shorten(detail, _MAX_DETAIL))
        self.invalidation = invalidated
        actions.append(invalidated)
        if reason not in (InvalidationReason.NORMAL, InvalidationReason.GATEWAY_CLOSED):
            # The main gateway may still show the bot in the channel (a failed handshake, a
            # dead voice session): leave now, not when the caller's block ends.
            actions.append(SendVoiceStateUpdate(None, self.self_mute, self.self_deaf))
        return actions
