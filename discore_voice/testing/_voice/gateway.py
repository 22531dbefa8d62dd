"""The simulator's voice gateway (v8): sessions, channels and scripted faults over trio-websocket.

It speaks the server side of the same sans-IO core the client uses (payload classes, framing and
close codes), so the two cannot drift apart without a test noticing. What Discord documents is
enforced with its close codes, because the point of a simulator is to catch a client that only
works against a lenient server.

Sessions outlive connections: a v8 resume re-delivers the numbered messages a client missed, so
each session keeps its own seq counter and a buffer of what it sent, trimmed by the client's
``seq_ack``; its UDP side (SSRC, key, address) is untouched by a resume. A session ends when a
close code says it cannot be resumed, or when the client closes normally (1000).

Each connection is contained: whatever a client sends, it gets the documented close code, and an
unexpected failure in the simulator itself is logged and closes that connection with 4015 (voice
server crashed, which tells a client to resume) instead of taking down the server.

Documented choices where Discord's docs are silent:

- Hello is the only unnumbered message: it precedes any session, so on a resuming connection
  a number would belong to no session. Heartbeat ACKs are numbered but not buffered (re-delivering
  an old ACK helps nobody). Numbers start at 1 and wrap at 2**16, like binary frames' u16.
- Undecodable text (not JSON, not an object, no integer ``op``) or an empty binary frame ->
  4002; an op that is not a client op of that framing (JSON or binary) -> 4001; a known op
  whose ``d`` is malformed -> 4002; a well-formed request that makes no sense (a Speaking SSRC
  that is not the session's, a ``seq_ack`` beyond what was sent) -> 4020; anything but
  Identify, Resume or Heartbeat before identifying -> 4003.
- Identify for a user with no voice session, or with another session id -> 4006; the right
  session id with a wrong token -> 4004. A second Identify for a live session replaces it (the
  old connection is closed with 4006).
- A server requiring DAVE (``dave_protocol_version > 0``, or ``dave_mode="required"``) closes
  4017 on an Identify whose ``max_dave_protocol_version`` is lower.
- ``dave_mode`` other than ``"off"`` installs the simulator's own DAVE layer
  (``_dave_gateway``); see there for what ``"optional"`` does in mixed calls.
- ``send_op12`` (off by default) sends the undocumented op 12 some receivers see in the wild,
  ``{"user_id", "audio_ssrc", "video_ssrc": 0, "rtx_ssrc": 0, "streams": []}``, numbered like
  any message: to the bots already in a channel about whoever joins (after its op 11), and to a
  joining bot about everyone already there. When Discord sends it to a joining client is not
  known; the simulator's choice gives a receiver every SSRC before anyone speaks.
"""

from __future__ import annotations

import functools
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio
import trio_websocket

from ..._core.snowflake import Snowflake, validate_snowflake
from ..._core.transport import SUPPORTED_MODES, create_cipher
from ..._core.voice.frames import MAX_TEXT_FRAME, ClientBinaryMessage
from ..._core.voice.opcodes import CloseAction, VoiceCloseCode, classify_close
from ..._core.voice.payloads import (
    SECRET_KEY_LENGTH,
    ClientDisconnect,
    ClientMessage,
    ClientsConnect,
    ClientSpeaking,
    ClientSsrcs,
    Identify,
    Ready,
    Resume,
    Resumed,
    SelectProtocol,
    ServerSpeaking,
    SessionDescription,
)
from ..._errors import UsageError
from .._dave.gateway import DEFAULT_TRANSITION_TIMEOUT, DaveGateway, DaveMode
from .._faults import WebSocketFault
from .._media import AudioSink, MediaEndpoint, MediaServer
from .._members import DEFAULT_HISTORY, SimMember
from .._ws_server import CLOSE_TIMEOUT, Violation, serve_websockets
from .auth import (
    StaticVoiceAuthority,
    VoiceAuthority,
    VoiceCredentials,
    VoiceGrant,
    WorldVoiceAuthority,
    _same,
    _VoiceSessionLike,
)
from .connection import VoiceClientConnection, VoiceConnectionInfo, VoiceGatewaySession

__all__ = [
    "DaveHook",
    "StaticVoiceAuthority",
    "VoiceAuthority",
    "VoiceConnectionInfo",
    "VoiceCredentials",
    "VoiceGatewaySession",
    "VoiceGrant",
    "VoiceServer",
    "WorldVoiceAuthority",
    "open_voice_server",
]

logger = logging.getLogger("discore_voice.testing.voice")

_C = VoiceCloseCode


class _GuildLike(Protocol):
    @property
    def channels(self) -> Mapping[Snowflake, object]: ...


class _FollowableWorld(Protocol):
    """What :meth:`VoiceServer.follow_world` needs: the world's lookups and change events."""

    def voice_session(
        self, guild_id: Snowflake, user_id: Snowflake
    ) -> _VoiceSessionLike | None: ...

    def guild(self, guild_id: Snowflake) -> _GuildLike: ...

    async def wait_for(self, predicate: Callable[[], object]) -> None: ...


# --- the DAVE layer's place -----------------------------------------------------------------------


class DaveHook(Protocol):
    """Where the server side of DAVE plugs in; the simulator's own is ``_dave_gateway``.

    Every method is called synchronously from the code handling the event, so the hook can
    answer in order: to a websocket session with ``session.send``/``session.send_binary``, and to
    anyone in a channel (sessions and simulated members alike) through the ``notify`` and
    ``notify_binary`` of ``endpoint.owner`` for the endpoints of ``server.media.peers(...)``.
    Per-session state belongs in ``session.dave_state``; members carry their own frame hooks and
    ``dave_handler`` (see ``SimMember``).
    """

    def participant_joined(self, endpoint: MediaEndpoint) -> None:
        """A session identified, or a member was placed, in ``endpoint.room``."""

    def session_started(self, session: VoiceGatewaySession) -> None:
        """After Session Description: the session may now take part in the MLS group."""

    def client_binary(self, session: VoiceGatewaySession, message: ClientBinaryMessage) -> None:
        """Op 26 (key package) or 28 (commit, welcome)."""

    def client_message(self, session: VoiceGatewaySession, message: ClientMessage) -> None:
        """Op 23 (transition ready) or 31 (invalid commit/welcome)."""

    def participant_left(self, endpoint: MediaEndpoint) -> None:
        """A user left the channel: its leaf must be removed from the group."""


# --- the server -----------------------------------------------------------------------------------


class VoiceServer:
    """A voice gateway and its UDP media server; run it with ``nursery.start(server.serve)``.

    ``modes`` is what Ready offers, in order. ``heartbeat_interval_ms`` goes into Hello;
    ``heartbeat_timeout`` (seconds, off by default) closes a silent connection with 4009.
    ``dave_protocol_version`` is what Session Description announces to clients that support it
    when no DAVE layer is installed (a test plugging in its own hook). ``dave_mode`` installs the
    simulator's DAVE layer: ``"required"`` (4017 for clients without DAVE) or ``"optional"``
    (they get a transport-only call); ``dave_transition_timeout`` is how long (seconds) it waits
    for members' op 23. ``ssl_context`` serves wss://. ``send_op12`` (also settable later)
    sends the undocumented op 12 on every join; see the module's notes.
    """

    def __init__(
        self,
        authority: VoiceAuthority,
        *,
        modes: Sequence[str] = SUPPORTED_MODES,
        heartbeat_interval_ms: float = 13_750.0,
        heartbeat_timeout: float | None = None,
        dave_protocol_version: int = 0,
        dave_mode: DaveMode = "off",
        dave_transition_timeout: float = DEFAULT_TRANSITION_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        resend_session_description_on_resume: bool = False,
        max_buffered: int = 1000,
        send_op12: bool = False,
    ) -> None:
        if not modes:
            raise UsageError("a voice server must offer at least one encryption mode")
        self.authority = authority
        self.modes: tuple[str, ...] = tuple(modes)
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.heartbeat_timeout = heartbeat_timeout
        self.dave_protocol_version = dave_protocol_version
        #: discord.py expects a fresh Session Description after Resumed; Discord's docs do not.
        self.resend_session_description_on_resume = resend_session_description_on_resume
        self.max_buffered = max_buffered
        #: Send the undocumented op 12 (a participant's SSRCs) on every join.
        self.send_op12 = send_op12
        self.dave: DaveHook | None = None
        if dave_mode not in ("off", "optional", "required"):
            raise UsageError(f"dave_mode is 'off', 'optional' or 'required', not {dave_mode!r}")
        self.dave_mode: DaveMode = dave_mode
        if dave_mode != "off":
            self.dave = DaveGateway(self, dave_mode, transition_timeout=dave_transition_timeout)
            if dave_mode == "required":
                self.dave_protocol_version = max(dave_protocol_version, 1)
        #: The serving nursery (None when not serving): DAVE transition timers run in it.
        self.nursery: trio.Nursery | None = None
        self.media = MediaServer(on_change=self.changed)
        self.sessions: list[VoiceGatewaySession] = []
        self.connections: list[VoiceConnectionInfo] = []
        self.members: list[SimMember] = []
        #: Scripted closes, consumed as they fire (see :class:`WebSocketFault`).
        self.faults: list[WebSocketFault] = []
        self.host = ""
        self.port = 0
        self._ssl_context = ssl_context
        self._changed_event = trio.Event()

    def __repr__(self) -> str:
        return f"<VoiceServer {self.endpoint_url} sessions={len(self.sessions)}>"

    # -- addresses -----------------------------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self._ssl_context is not None

    @property
    def endpoint(self) -> str:
        """``host:port``, as VOICE_SERVER_UPDATE carries it (clients then use wss://)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        """The full URL, with the scheme this server really serves."""
        return f"{'wss' if self.tls else 'ws'}://{self.endpoint}/?v=8"

    # -- lifetime ------------------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        media_port: int = 0,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; reports the websocket port once both sockets listen."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(self.media.serve, host, media_port)
            self.host = host
            self.port = await nursery.start(
                functools.partial(
                    serve_websockets,
                    self._accept,
                    host,
                    port,
                    ssl_context=self._ssl_context,
                    max_message_size=MAX_TEXT_FRAME,
                    log=logger,
                )
            )
            task_status.started(self.port)
            try:
                await trio.sleep_forever()
            finally:
                self.nursery = None

    async def _accept(
        self, request: trio_websocket.WebSocketRequest, stream: trio.abc.Stream
    ) -> None:
        info = VoiceConnectionInfo(request.path)
        self.connections.append(info)
        ws = await request.accept()
        try:
            await VoiceClientConnection(self, ws, stream, info).run()
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose()

    # -- change notification -------------------------------------------------------------------

    def changed(self) -> None:
        self._changed_event.set()
        self._changed_event = trio.Event()

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        """Wait until ``predicate()`` is true, re-checked after every change; never sleeps."""
        while not predicate():
            await self._changed_event.wait()

    # -- lookups -------------------------------------------------------------------------------

    def session_for(self, user_id: int, guild_id: int | None = None) -> VoiceGatewaySession | None:
        """The latest live session of a user (in a guild), or None."""
        for session in reversed(self.sessions):
            if (
                session.user_id == user_id
                and guild_id in (None, session.guild_id)
                and session.state != "ended"
            ):
                return session
        return None

    def _allocate_ssrc(self) -> int:
        while True:
            ssrc = secrets.randbelow(0xFFFFFFFF) + 1
            if not self.media.ssrc_in_use(ssrc):
                return ssrc

    # -- members -------------------------------------------------------------------------------

    def add_member(
        self,
        guild_id: int,
        channel_id: int,
        user_id: int,
        *,
        listen: bool = True,
        history: int | None = DEFAULT_HISTORY,
    ) -> SimMember:
        """Place a simulated member in a channel: bots there get Clients Connect for it.

        This is the voice side only; to make the member visible on the main gateway as well,
        give it a voice state in the world (``set_voice_state``) with the same ids.
        ``history`` bounds the member's per-packet records (see ``SimMember.history``); a run
        with many members for minutes also wants ``listen=False``, since every listening
        member receives every other member's frames.
        """
        member = SimMember(
            self,
            validate_snowflake(guild_id, name="guild_id"),
            validate_snowflake(channel_id, name="channel_id"),
            validate_snowflake(user_id, name="user_id"),
            self._allocate_ssrc(),
            history=history,
        )
        member.listening = listen
        endpoint = self._place(member)
        self.members.append(member)
        self._join(endpoint)
        return member

    def _place(self, member: SimMember, sink: AudioSink | None = None) -> MediaEndpoint:
        endpoint = MediaEndpoint(member, member.guild_id, member.channel_id, member.ssrc, "member")
        endpoint.sink = member.receive_audio if sink is None else sink
        member.endpoint = endpoint
        return endpoint

    def member_reconnect(self, member: SimMember, *, present: bool) -> None:
        """Leave (if ``present``) and join again under a new SSRC: see ``SimMember.reconnect``.

        A sink a test installed on the old endpoint moves to the new one, so whatever was
        listening through it keeps hearing the call.
        """
        ssrc = self._allocate_ssrc()
        while ssrc == member.ssrc:  # free again if it had left: a reconnect must change it
            ssrc = self._allocate_ssrc()
        old = member.endpoint
        if present and old is not None:
            self._leave(old)
        member.ssrc = ssrc
        self._join(self._place(member, None if old is None else old.sink))

    def member_speaking(self, member: SimMember, flags: int) -> None:
        assert member.endpoint is not None
        member.endpoint.speaking = flags
        self._announce_speaking(member.endpoint)

    def member_left(self, member: SimMember) -> None:
        if member.endpoint is not None:
            self._leave(member.endpoint)

    # -- channels ------------------------------------------------------------------------------

    def _join(self, endpoint: MediaEndpoint) -> None:
        self.media.add_endpoint(endpoint)
        peers = list(self.media.peers(endpoint))
        if peers:
            endpoint.owner.notify(ClientsConnect(tuple(peer.user_id for peer in peers)))
        for peer in peers:
            peer.owner.notify(ClientsConnect((endpoint.user_id,)))
        if self.send_op12:
            for peer in peers:
                _send_op12(peer, endpoint)
                _send_op12(endpoint, peer)
        for peer in peers:
            if peer.speaking:
                endpoint.owner.notify(ServerSpeaking(peer.user_id, peer.ssrc, peer.speaking))
        if self.dave is not None:
            self.dave.participant_joined(endpoint)
        self.changed()

    def _leave(self, endpoint: MediaEndpoint) -> None:
        peers = list(self.media.peers(endpoint))
        self.media.remove_endpoint(endpoint)
        for peer in peers:
            peer.owner.notify(ClientDisconnect(endpoint.user_id))
        if self.dave is not None:
            self.dave.participant_left(endpoint)
        self.changed()

    def _announce_speaking(self, endpoint: MediaEndpoint) -> None:
        message = ServerSpeaking(endpoint.user_id, endpoint.ssrc, endpoint.speaking)
        for peer in self.media.peers(endpoint):
            peer.owner.notify(message)
        self.changed()

    # -- protocol steps (called by connections) ------------------------------------------------

    def _identify(self, connection: VoiceClientConnection, identify: Identify) -> None:
        grant = self.authority.authorize(
            identify.server_id, identify.user_id, identify.session_id, identify.token
        )
        if not isinstance(grant, VoiceGrant):
            raise Violation(grant, _describe(grant))
        if (
            self.dave_protocol_version > 0
            and identify.max_dave_protocol_version < self.dave_protocol_version
        ):
            raise Violation(_C.DAVE_PROTOCOL_REQUIRED, "E2EE/DAVE protocol required")
        previous = self.session_for(grant.user_id, grant.guild_id)
        if previous is not None:
            if previous._connection is not None:
                previous._connection.close(_C.SESSION_NO_LONGER_VALID, "Session replaced")
            self._end_session(previous)
        session = VoiceGatewaySession(self, grant, identify, self._allocate_ssrc())
        session.dave_protocol_version = min(
            self.dave_protocol_version, identify.max_dave_protocol_version
        )
        self.sessions.append(session)
        self._attach(connection, session)
        session.send(Ready(session.ssrc, self.media.host, self.media.port, self.modes))
        self._join(session.endpoint)
        logger.info("voice session identified: user %d, ssrc %d", session.user_id, session.ssrc)

    def _resume(self, connection: VoiceClientConnection, resume: Resume) -> None:
        session = None
        for candidate in reversed(self.sessions):
            if candidate.guild_id == resume.server_id and _same(
                candidate.session_id, resume.session_id
            ):
                session = candidate
                break
        if session is None or session.state == "ended":
            raise Violation(_C.SESSION_NO_LONGER_VALID, "Session no longer valid")
        if not _same(session._token, resume.token):
            raise Violation(_C.AUTHENTICATION_FAILED, "Authentication failed")
        session._check_seq_ack(resume.seq_ack)
        previous = session._connection
        if previous is not None and previous is not connection:
            previous.session = None
            previous.close(1000, "Session resumed on another connection")
        self._attach(connection, session)
        session.resumes += 1
        session._redeliver(resume.seq_ack)
        session.send(Resumed())
        if self.resend_session_description_on_resume and session.mode is not None:
            self._send_session_description(session)
        logger.info("voice session resumed: user %d", session.user_id)

    def _attach(self, connection: VoiceClientConnection, session: VoiceGatewaySession) -> None:
        connection.session = session
        connection.info.session = session
        session._connection = connection
        session.state = "connected"

    def _select_protocol(self, session: VoiceGatewaySession, select: SelectProtocol) -> None:
        if select.protocol != "udp":
            raise Violation(_C.UNKNOWN_PROTOCOL, "Unknown protocol")
        if select.mode not in self.modes:
            raise Violation(_C.UNKNOWN_ENCRYPTION_MODE, "Unknown encryption mode")
        key = secrets.token_bytes(SECRET_KEY_LENGTH)
        session.select_protocol = select
        session.mode = select.mode
        session._secret_key = key
        endpoint = session.endpoint
        endpoint.cipher_in = create_cipher(select.mode, key)
        endpoint.cipher_out = create_cipher(select.mode, key)
        endpoint.address = (select.address, select.port)
        self._send_session_description(session)
        if self.dave is not None:
            self.dave.session_started(session)

    def _send_session_description(self, session: VoiceGatewaySession) -> None:
        assert session.mode is not None and session._secret_key is not None
        session.send(
            SessionDescription(session.mode, session._secret_key, session.dave_protocol_version)
        )

    def _speaking(self, session: VoiceGatewaySession, speaking: ClientSpeaking) -> None:
        if speaking.ssrc != session.ssrc:
            raise Violation(_C.BAD_REQUEST, "Speaking with an SSRC that is not the session's")
        session.speaking_states.append(speaking.speaking)
        session.endpoint.speaking = speaking.speaking
        self._announce_speaking(session.endpoint)

    # -- endings -------------------------------------------------------------------------------

    def _closing_session(self, session: VoiceGatewaySession, code: int, *, by_server: bool) -> None:
        ends = (code == 1000) if not by_server else classify_close(code) is not CloseAction.RESUME
        if ends:
            self._end_session(session)

    def _connection_ended(
        self, connection: VoiceClientConnection, code: int, *, by_server: bool
    ) -> None:
        session = connection.session
        if session is None:
            self.changed()
            return
        session.close_codes.append(code)
        if session._connection is connection:
            session._connection = None
            if session.state != "ended":
                session.state = "disconnected"
            if not by_server:
                self._closing_session(session, code, by_server=False)
        self.changed()

    def _end_session(self, session: VoiceGatewaySession) -> None:
        if session.state == "ended":
            return
        session.state = "ended"
        self._leave(session.endpoint)
        logger.info("voice session ended: user %d", session.user_id)

    # -- following the main gateway ------------------------------------------------------------

    async def follow_world(self, world: _FollowableWorld) -> None:
        """End voice sessions the main gateway has invalidated, with Discord's close codes.

        Runs until cancelled (start it in the simulator's nursery). A kick, a leave, a move or
        the end of the gateway session closes the voice websocket with 4014; a deleted channel,
        or a new token for the same channel (a voice server change), with 4022. Without this, a
        bot kicked on the main gateway would keep a live voice session, which Discord never
        allows.
        """

        def stale() -> bool:
            return any(self._world_verdict(world, s) is not None for s in self._live_sessions())

        while True:
            await world.wait_for(stale)
            for session in self._live_sessions():
                code = self._world_verdict(world, session)
                if code is not None:
                    logger.info("the main gateway ended a voice session; closing with %d", code)
                    self.end_session(session, code)

    def _live_sessions(self) -> list[VoiceGatewaySession]:
        return [session for session in self.sessions if session.state != "ended"]

    @staticmethod
    def _world_verdict(world: _FollowableWorld, session: VoiceGatewaySession) -> int | None:
        try:
            current = world.voice_session(session.guild_id, session.user_id)
        except UsageError:
            current = None
        if current is not None and current.channel_id == session.channel_id:
            if _same(current.token, session._token):
                return None
            return _C.DISCONNECTED_CALL_TERMINATED
        try:
            exists = session.channel_id in world.guild(session.guild_id).channels
        except UsageError:
            exists = False
        return _C.DISCONNECTED if exists else _C.DISCONNECTED_CALL_TERMINATED

    # -- DAVE ----------------------------------------------------------------------------------

    @property
    def dave_gateway(self) -> DaveGateway:
        """The simulator's DAVE layer (per-channel state, faults); only with a ``dave_mode``."""
        if not isinstance(self.dave, DaveGateway):
            raise UsageError("this voice server runs without the simulator's DAVE layer")
        return self.dave

    def dave_downgrade(self, channel_id: int) -> None:
        """Take a call to transport-only encryption (op 21 version 0, then op 22)."""
        self.dave_gateway.downgrade(channel_id)

    def dave_upgrade(self, channel_id: int) -> None:
        """Bring a transport-only call back to DAVE (op 25, op 24 epoch 1, a new group)."""
        self.dave_gateway.upgrade(channel_id)

    # -- scripted faults -----------------------------------------------------------------------

    def close(self, session: VoiceGatewaySession, code: int, reason: str = "") -> None:
        """Close a session's live connection with any code, or :data:`ABRUPT` (TCP drop).

        Codes after which Discord does not resume (everything but 4015 and 1000-1015) end the
        session at once, with Client Disconnect to the others in the channel.
        """
        connection = session._connection
        if connection is None:
            raise UsageError("that voice session has no live connection")
        connection.close(code, reason or _describe(code))

    def stall_heartbeat_acks(self, session: VoiceGatewaySession, stalled: bool = True) -> None:
        """Stop (or restart) acknowledging heartbeats: the client sees a zombie connection."""
        session.stall_heartbeat_acks = stalled
        self.changed()

    def end_session(self, session: VoiceGatewaySession, code: int = _C.DISCONNECTED) -> None:
        """End a session from the server side (the user was kicked or moved): close and leave."""
        if session._connection is not None:
            session._connection.close(code, _describe(code))
        self._end_session(session)


#: The undocumented op 12; the core's opcode enum may not name it, so the number is used.
def _send_op12(to: MediaEndpoint, about: MediaEndpoint) -> None:
    """Tell a bot ``about``'s audio SSRC; members live in process and need no such hint."""
    owner = to.owner
    if isinstance(owner, VoiceGatewaySession):
        owner.send(ClientSsrcs(about.user_id, about.ssrc))


def _describe(code: int) -> str:
    try:
        return VoiceCloseCode(code).name.replace("_", " ").capitalize()
    except ValueError:
        return "Closed by the simulator"


@asynccontextmanager
async def open_voice_server(
    authority: VoiceAuthority | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> AsyncIterator[VoiceServer]:
    """Run a voice server (with a :class:`StaticVoiceAuthority` by default) for a block."""
    server = VoiceServer(authority if authority is not None else StaticVoiceAuthority(), **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, host, port)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
