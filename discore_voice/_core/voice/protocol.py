"""The voice core: one object that decides everything about one voice connection.

It holds the handshake state machine (:class:`VoiceSession`), the DAVE client of the current
voice session, the transport key, the speaking state and the map of SSRCs to users, and keeps
them consistent with each other. The shell's session task is its only caller: it hands over
every event (a dispatch, a websocket frame, a UDP report, a timer, a user request) with the time
it happened, and carries out what comes back, in order:

- commands (``commands.py``): websocket frames already encoded, sockets to open or close,
  timers to arm, the media state for the send and receive paths;
- public events (``events.py``) for the connection's subscribers.

As h11 does for HTTP, it encodes what it sends as well as decoding what it receives, so the
shell never touches a payload. Its rules, besides the session's own:

- Speaking (op 5) goes out before any audio on each websocket: sending turns it on by itself,
  and a resume or a move re-announces it on the new websocket before audio may flow again.
- An SSRC belongs to the user a Speaking (op 5) named; a user who left (op 13) owns none.
- The DAVE group of a voice session is the channel its Session Description was for: a switch's
  two dispatches may arrive in either order, so the id is taken when the description arrives.
- A transport key the server sends again keeps its nonce counter (the process's ledger).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from ..._errors import DaveError, ProtocolError, UnknownOpcode
from ..gateway.voice import (
    GATEWAY_DISCONNECTED,
    GATEWAY_RESUMED,
    GATEWAY_SESSION_LOST,
    VOICE_SERVER_UPDATE,
    VOICE_STATE_SENT,
    VOICE_STATE_UPDATE,
)
from ..ip_discovery import DiscoveredAddress
from ..receive.pipeline import ReceivePipeline
from ..snowflake import Snowflake
from ..speaking import SpeakingFlags
from ..transport import (
    PROCESS_NONCE_LEDGER,
    SUPPORTED_MODES,
    NonceLedger,
    TransportCipher,
    create_cipher,
)
from .commands import (
    Command,
    Log,
    Media,
    MediaChanged,
    SendBinary,
    SendText,
    TimerKind,
)
from .dave import DaveClient, DaveOutput, DaveRecovering
from .events import (
    DaveChange,
    DaveStateChanged,
    InvalidationReason,
    MemberDisconnected,
    MemberSpeaking,
    VoiceEvent,
)
from .frames import ClientBinaryMessage, encode_client_binary, encode_client_text
from .media import FAILURE_TOLERANCE, MediaCrypto
from .payloads import SessionDescription
from .session import (
    NO_DAVE_PROTOCOL_VERSION,
    DaveMessage,
    InstallCipher,
    NewDaveSession,
    SendVoiceMessage,
    SessionOutput,
    SsrcAnnounced,
    VoiceSession,
)

__all__ = ["Output", "VoiceProtocol", "WebSocketStats"]

#: What every input returns: commands for the shell and events for the subscribers, in order.
Output: TypeAlias = Command | VoiceEvent


@dataclass(frozen=True, slots=True)
class WebSocketStats:
    """What a connection's voice websocket went through; cumulative over the connection's life.

    ``closes`` counts closes by code (None: the connection dropped without one); ``malformed``
    and ``unknown_opcodes`` count frames that were dropped; ``reconnects`` counts attempts after
    a failure (resumes, identifies again, UDP restarts).
    """

    websockets_opened: int
    identifies: int
    resumes: int
    reconnects: int
    udp_restarts: int
    malformed: int
    unknown_opcodes: int
    closes: dict[int | None, int]
    heartbeat_rtt_ms: float | None


class VoiceProtocol:
    """One guild's voice connection, sans-IO; see the module docstring.

    ``max_dave_protocol_version`` is what Identify offers (0 without davey). ``ledger`` keeps
    each transport key's nonce counter; ``random`` draws the reconnect backoff's jitter.
    """

    def __init__(
        self,
        guild_id: Snowflake,
        user_id: Snowflake,
        *,
        max_dave_protocol_version: int,
        supported_modes: tuple[str, ...] = SUPPORTED_MODES,
        ledger: NonceLedger = PROCESS_NONCE_LEDGER,
        random: Callable[[], float] | None = None,
    ) -> None:
        options = {} if random is None else {"random": random}
        self._session = VoiceSession(
            guild_id,
            user_id,
            supported_modes=supported_modes,
            max_dave_protocol_version=max_dave_protocol_version,
            **options,
        )
        self._ledger = ledger
        self._crypto = MediaCrypto()
        self._receive = ReceivePipeline(self._crypto)
        self._dave: DaveClient | None = None
        self._cipher: TransportCipher | None = None
        self._speaking = 0
        self._speaking_sent_on: int | None = None  # the websocket that heard the current flags
        self._speaking_asked = False  # the caller set the flags: announce them even if 0
        self._media_state: tuple[Media | None, bool] = (None, False)
        self._counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        return repr(self._session).replace("VoiceSession", "VoiceProtocol", 1)

    # --- state the shell reads (and publishes to the user's side) ------------------------------

    @property
    def session(self) -> VoiceSession:
        """The handshake state machine, for its state (phase, ids, timers); never call it."""
        return self._session

    @property
    def speaking(self) -> int:
        """The speaking flags last asked for (announced whenever the connection can)."""
        return self._speaking

    @property
    def dave(self) -> DaveClient | None:
        """The current voice session's DAVE client; None before one starts or without DAVE."""
        return self._dave

    @property
    def dave_stats(self) -> dict[str, int]:
        return dict(self._crypto.stats)

    @property
    def websocket_stats(self) -> WebSocketStats:
        s = self._session.stats
        return WebSocketStats(
            websockets_opened=s.websockets_opened,
            identifies=s.identifies,
            resumes=s.resumes,
            reconnects=s.reconnects,
            udp_restarts=s.udp_restarts,
            malformed=self._counts["malformed"],
            unknown_opcodes=self._counts["unknown_opcodes"],
            closes=s.closes,
            heartbeat_rtt_ms=s.heartbeat_rtt_ms,
        )

    @property
    def receive(self) -> ReceivePipeline:
        """The receive pipeline: the UDP task feeds it, a receive task ticks it."""
        return self._receive

    def user_for_ssrc(self, ssrc: int) -> Snowflake | None:
        return self._receive.user_for_ssrc(ssrc)

    # --- the caller's requests -----------------------------------------------------------------

    def connect(
        self,
        channel_id: Snowflake,
        *,
        self_mute: bool,
        self_deaf: bool,
        now: float,
        sent_marker: bool = False,
    ) -> list[Output]:
        """Join; ``sent_marker`` when the bridge reports its op 4s (VOICE_STATE_SENT)."""
        join = self._session.connect(
            channel_id, self_mute=self_mute, self_deaf=self_deaf, sent_marker=sent_marker
        )
        return self._run(join, now)

    def update_voice_state(
        self, channel_id: Snowflake | None, *, self_mute: bool, self_deaf: bool, now: float
    ) -> list[Output]:
        return self._run(
            self._session.update_voice_state(channel_id, self_mute=self_mute, self_deaf=self_deaf),
            now,
        )

    def disconnect(self, now: float) -> list[Output]:
        return self._run(self._session.disconnect(), now)

    def fail(self, reason: InvalidationReason, detail: str, now: float) -> list[Output]:
        return self._run(self._session.fail(reason, detail), now)

    def set_speaking(self, flags: int, now: float) -> list[Output]:
        """The caller's flags: announced now if the connection can, else when it can."""
        if not self._session.is_valid:
            return []
        self._speaking = flags
        self._speaking_asked = True
        self._speaking_sent_on = None
        return self._run([], now)

    def audio_ready(self, now: float) -> list[Output]:
        """The sender has audio: Discord drops audio from an SSRC that is not speaking."""
        if not self._session.is_valid or self._speaking:
            return []
        return self.set_speaking(int(SpeakingFlags.MICROPHONE), now)

    # --- the main gateway ----------------------------------------------------------------------

    def gateway_dispatch(self, name: str, data: object, now: float) -> list[Output]:
        """One of the dispatches a voice connection subscribes to; malformed ones are logged."""
        session = self._session
        try:
            if name == VOICE_STATE_UPDATE:
                out = session.voice_state_update(data, now)
            elif name == VOICE_SERVER_UPDATE:
                out = session.voice_server_update(data, now)
            elif name == GATEWAY_SESSION_LOST:
                reason = data.get("reason") if isinstance(data, dict) else None
                detail = reason if isinstance(reason, str) else "the gateway session ended"
                out = session.gateway_session_lost(detail)
            elif name == VOICE_STATE_SENT:
                out = session.voice_state_sent(data)
            elif name == GATEWAY_DISCONNECTED:
                out = session.gateway_disconnected()
            elif name == GATEWAY_RESUMED:
                out = session.gateway_resumed(now)
            else:
                return []
        except ProtocolError as exc:
            return [Log(logging.WARNING, f"skipped a malformed {name}: {exc}")]
        return self._run(out, now)

    def gateway_closed(self, now: float) -> list[Output]:
        return self._run(self._session.gateway_closed(), now)

    # --- the voice websocket -------------------------------------------------------------------

    def websocket_opened(self, generation: int, now: float) -> list[Output]:
        return self._run(self._session.websocket_opened(generation, now), now)

    def websocket_frame(self, generation: int, frame: str | bytes, now: float) -> list[Output]:
        """A frame as received (JSON text or DAVE binary); garbage is counted and logged."""
        session = self._session
        try:
            if isinstance(frame, str):
                out = session.receive_text(generation, frame, now)
            else:
                out = session.receive_binary(generation, frame)
        except UnknownOpcode as exc:
            # Discord adds undocumented ops now and then (12, 18, 20 are seen in the wild).
            self._counts["unknown_opcodes"] += 1
            return [Log(logging.DEBUG, f"skipped: {exc}")]
        except ProtocolError as exc:
            count = self._counts["malformed"] = self._counts["malformed"] + 1
            log: list[Output] = []
            if count & (count - 1) == 0:
                log.append(
                    Log(logging.WARNING, f"malformed voice gateway message ({count} so far): {exc}")
                )
            return log + self._run(session.malformed(generation, str(exc)), now)
        return self._run(out, now)

    def websocket_closed(self, generation: int, code: int | None, now: float) -> list[Output]:
        return self._run(self._session.websocket_closed(generation, code, now), now)

    def websocket_failed(
        self, generation: int, detail: str, *, fatal: bool, now: float
    ) -> list[Output]:
        return self._run(
            self._session.websocket_failed(generation, detail, fatal=fatal, now=now), now
        )

    # --- UDP and timers ------------------------------------------------------------------------

    def udp_discovered(
        self, udp_generation: int, address: DiscoveredAddress, now: float
    ) -> list[Output]:
        return self._run(self._session.ip_discovered(udp_generation, address, now), now)

    def udp_failed(self, udp_generation: int, detail: str, now: float) -> list[Output]:
        return self._run(self._session.udp_failed(udp_generation, detail, now), now)

    def udp_silent(self, udp_generation: int, now: float) -> list[Output]:
        return self._run(self._session.udp_silent(udp_generation, now), now)

    def media_received(self, udp_generation: int, now: float) -> list[Output]:
        return self._run(self._session.media_received(udp_generation, now), now)

    def timer_expired(self, kind: TimerKind, now: float) -> list[Output]:
        return self._run(self._session.timer_expired(kind, now), now)

    def dave_failing(self, now: float) -> list[Output]:
        """The receive pipeline could not open frames for too long: a fresh DAVE group."""
        self._receive.dave_recovery_wanted = False
        client = self._dave
        if client is None or not self._crypto.failing:
            return []
        self._crypto.recovering()
        return self._dave_replies(
            client.recover_from_failures(FAILURE_TOLERANCE), self._session.generation
        )

    # --- carrying the session's outputs through DAVE, the key and the speaking state ----------

    def _run(self, outputs: list[SessionOutput], now: float) -> list[Output]:
        result: list[Output] = []
        for output in outputs:
            if isinstance(output, SendVoiceMessage):
                result.append(SendText(output.generation, encode_client_text(output.message)))
            elif isinstance(output, DaveMessage):
                result += self._dave_message(output)
            elif isinstance(output, NewDaveSession):
                result += self._new_dave_session(output)
            elif isinstance(output, InstallCipher):
                # The ledger: a key the server sends again keeps its counter.
                self._cipher = create_cipher(output.mode, output.secret_key, ledger=self._ledger)
            elif isinstance(output, MemberSpeaking):
                self._receive.name(output.ssrc, output.user_id)
                result.append(output)
            elif isinstance(output, SsrcAnnounced):
                self._receive.name(output.ssrc, output.user_id)
            elif isinstance(output, MemberDisconnected):
                self._receive.user_left(output.user_id, now)
                result.append(output)
            else:
                result.append(output)
        result += self._sync_speaking()
        result += self._sync_media()
        return result

    def _sync_speaking(self) -> list[Output]:
        """Announce the flags on the current websocket once, as soon as it can carry them."""
        session = self._session
        if self._speaking_sent_on == session.generation:
            return []
        if not self._speaking and not self._speaking_asked:
            return []
        outputs = session.speaking(self._speaking)
        if not outputs:
            return []  # not connected yet: announced when it is
        self._speaking_sent_on = session.generation
        return self._run_plain(outputs)

    def _run_plain(self, outputs: list[SessionOutput]) -> list[Output]:
        # Speaking only ever yields a SendVoiceMessage; the rest of _run would recurse.
        return [
            SendText(o.generation, encode_client_text(o.message))
            for o in outputs
            if isinstance(o, SendVoiceMessage)
        ]

    def _sync_media(self) -> list[Output]:
        session = self._session
        if session.ssrc is None:
            self._cipher = None  # a new voice session (no Ready yet): the old key is over
        media = None
        if session.is_valid and session.ssrc is not None and self._cipher is not None:
            media = Media(
                session.udp_generation, session.ssrc, self._cipher, self._crypto, self._receive
            )
        sending = (
            media is not None
            and session.is_connected
            and self._speaking != 0
            and self._speaking_sent_on == session.generation
        )
        state = (media, sending)
        if state == self._media_state:
            return []
        self._media_state = state
        return [MediaChanged(media, sending)]

    # --- DAVE ----------------------------------------------------------------------------------

    def _new_dave_session(self, action: NewDaveSession) -> list[Output]:
        """A new voice session: a fresh group, and nobody's SSRC known yet."""
        previous = self._dave
        self._dave = DaveClient(self._session.user_id, action.channel_id)
        self._crypto.use(self._dave)
        self._receive.new_session()
        if previous is not None and previous.protocol_version > NO_DAVE_PROTOCOL_VERSION:
            return [DaveStateChanged(DaveChange.RESET, 0, None, False, None)]
        return []

    def _dave_message(self, action: DaveMessage) -> list[Output]:
        client = self._dave
        if client is None:
            return []
        message = action.message
        channel_id = self._session.channel_id
        if isinstance(message, SessionDescription) and channel_id is not None:
            # The group is the channel this session was described for (see the module docstring).
            client.channel_id = channel_id
        try:
            replies = client.handle(message)
        except (ProtocolError, DaveError) as exc:
            # Refused outright (no op 31 applies): the server will resend or re-key; a call
            # must not end over one message.
            return [Log(logging.WARNING, f"DAVE: ignored a server message: {exc}")]
        return self._dave_replies(replies, action.generation)

    def _dave_replies(self, replies: list[DaveOutput], generation: int) -> list[Output]:
        out: list[Output] = []
        for reply in replies:
            if isinstance(reply, ClientBinaryMessage):
                out.append(SendBinary(generation, encode_client_binary(reply)))
            elif isinstance(reply, DaveStateChanged):
                self._receive.dave_changed()
                out.append(
                    Log(
                        logging.INFO,
                        f"DAVE {reply.cause.value}: version {reply.protocol_version}, epoch "
                        f"{reply.epoch}, "
                        + ("end-to-end encrypted" if reply.can_encrypt else "transport-only"),
                    )
                )
                out.append(reply)
            elif isinstance(reply, DaveRecovering):
                out.append(
                    Log(
                        logging.WARNING,
                        f"DAVE: could not process a {reply.what} (transition "
                        f"{reply.transition_id}), re-joining: {reply.reason}",
                    )
                )
            else:
                out.append(SendText(generation, encode_client_text(reply)))
        return out
