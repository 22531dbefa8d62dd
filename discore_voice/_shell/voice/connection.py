"""Voice connections: Discore's lifecycle in trio's shape.

A connection is an ``async with`` block that owns a nursery: the session task, the gateway
listener, the timers, the op 4 writer, the send task, the websocket and the UDP socket run in
it, and leaving the block leaves nothing running. Discore's rules hold inside: connecting either
succeeds or raises; any end (normal or fatal) *invalidates* the connection with a reason; nothing
reconnects silently after a fatal error; and an invalid connection turns every operation into a
no-op. Invalidation never raises into the user's block: it wakes whoever waits and is recorded,
and the user decides whether to leave.

This class is the user's side: it validates arguments, sends requests to the session task
(``session_task.py``) and reads the state snapshot it publishes. Every protocol decision lives in
the voice core (``_core/voice/protocol.py``).
"""

from __future__ import annotations

import logging
import ssl
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Final

import trio

from ..._audio.opus import EncoderSettings
from ..._audio.sources import AudioSource
from ..._checks import check_bool
from ..._core.gateway.guilds import ChannelVerdict
from ..._core.gateway.intents import Intents
from ..._core.gateway.voice import (
    GATEWAY_DISCONNECTED,
    GATEWAY_RESUMED,
    GATEWAY_SESSION_LOST,
    VOICE_SERVER_UPDATE,
    VOICE_STATE_SENT,
    VOICE_STATE_UPDATE,
)
from ..._core.pcm_buffer import PCM_BLOCK_SIZE
from ..._core.player.events import TrackEnd
from ..._core.player.mixing import Ducking
from ..._core.receive.stats import ReceiveStats
from ..._core.snowflake import Snowflake, validate_snowflake
from ..._core.speaking import SpeakingFlags
from ..._core.voice import dave as _dave
from ..._core.voice.events import Invalidated, InvalidationReason, VoiceEvent
from ..._core.voice.protocol import VoiceProtocol, WebSocketStats
from ..._errors import DaveError, DiscoreVoiceError, UsageError
from ..bridge import ForwardedBridge, GatewayVoiceBridge
from ..dispatches import Dispatch
from ..hub import Hub, Subscription
from ..shard.connection import Shard, shard_for_guild
from ..websocket import shielded_nursery
from .gateway_listener import run_gateway_listener
from .gateway_writer import GatewayWriter
from .messages import (
    Connect,
    Disconnect,
    Leave,
    Message,
    SetSpeaking,
    TaskFailed,
    UpdateVoiceState,
)
from .player.queue import TrackQueue
from .player.track import TrackHandle
from .receive.receiver import DEFAULT_DEPTH, VoiceReceiver, check_depth
from .sending.producer import DEFAULT_BUFFER_SIZE
from .sending.sender import VoiceSender
from .sending.stepper import SendStats
from .session_task import INBOX_SIZE, ConnectionState, SessionTask, guarded
from .timers import Timers
from .udp import UdpStats
from .websocket import CLOSE_GRACE

__all__ = [
    "DEFAULT_EVENT_BUFFER",
    "GuildNotOnShard",
    "MissingVoiceIntent",
    "VoiceConnection",
    "VoiceConnectionBusy",
    "VoiceConnectionFailed",
    "VoiceEvents",
    "voice_connection",
]

_logger = logging.getLogger("discore_voice.voice")

#: Seconds op 4 may wait to be sent, beyond the connect timeout: Discord allows a gateway
#: connection 120 commands a minute, so a shard asked to join more voice channels at once than
#: that queues the rest for up to one window. The handshake's own timeout starts when it is sent.
OP4_QUEUE_ALLOWANCE: Final = 60.0
#: Events a subscriber may fall behind by before it loses some; events are rare (a handful per
#: member joining or speaking), so this only overflows for a reader that stopped altogether.
DEFAULT_EVENT_BUFFER: Final = 256
#: Seconds leaving may wait for the op 4 leave to be handed over and the websocket to close.
_EXIT_GRACE: Final = 5.0 + CLOSE_GRACE

_Request = Connect | UpdateVoiceState | Disconnect | SetSpeaking

#: What a voice connection hears from a shard: the two voice dispatches, and the shard's own news.
_SHARD_EVENTS: Final = (
    VOICE_STATE_UPDATE,
    VOICE_SERVER_UPDATE,
    VOICE_STATE_SENT,
    GATEWAY_DISCONNECTED,
    GATEWAY_RESUMED,
    GATEWAY_SESSION_LOST,
)


class VoiceEvents(Subscription[VoiceEvent]):
    """An async iterable of one connection's events; it ends once the connection is invalid.

    Use it as ``with`` (or ``async with``) to unsubscribe on exit; ``dropped`` counts the events
    lost because this subscriber fell too far behind.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<VoiceEvents {'closed' if self.closed else 'open'} dropped={self.dropped}>"


# --- errors ---------------------------------------------------------------------------------


class VoiceConnectionFailed(DiscoreVoiceError):
    """Connecting did not complete: the handshake failed, timed out or the gateway went away.

    ``reason`` is the :class:`InvalidationReason`; ``cause`` says what happened, in words. By the
    time this is raised the connection left nothing behind: no task, no socket, and the bot has
    left the channel.
    """

    def __init__(self, reason: InvalidationReason, cause: str) -> None:
        super().__init__(f"the voice connection failed ({reason.name}): {cause}")
        self.reason = reason
        self.cause = cause


class VoiceConnectionBusy(UsageError):
    """The guild already has an open voice connection through this bridge.

    Discord allows one voice connection per guild per bot; a second op 4 would silently move the
    first connection instead of opening another.
    """


class MissingVoiceIntent(UsageError):
    """The shard lacks the GUILD_VOICE_STATES intent, so no voice connection could ever finish."""


class GuildNotOnShard(UsageError):
    """The guild is served by another shard, which is the only one Discord accepts op 4 from."""


# --- one connection per guild per bridge ----------------------------------------------------

_open_guilds: weakref.WeakKeyDictionary[object, set[Snowflake]] = weakref.WeakKeyDictionary()
_open_guilds_by_id: dict[int, set[Snowflake]] = {}


def _guilds_of(bridge: object) -> set[Snowflake]:
    try:
        return _open_guilds.setdefault(bridge, set())
    except TypeError:  # a bridge that cannot be weakly referenced (``__slots__``)
        return _open_guilds_by_id.setdefault(id(bridge), set())


def _release(bridge: object, guild_id: Snowflake) -> None:
    guilds = _guilds_of(bridge)
    guilds.discard(guild_id)
    if guilds:
        return
    try:
        _open_guilds.pop(bridge, None)
    except TypeError:
        _open_guilds_by_id.pop(id(bridge), None)


class _GuildLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"guild {extra['guild_id']}: {msg}", kwargs


#: How long a join waits for the shard to hear of a guild or channel it does not know yet
#: (created a moment ago) before refusing it: dispatches trail REST answers by milliseconds.
DIRECTORY_GRACE: Final = 2.0
_REFUSALS: Final = {
    ChannelVerdict.NOT_IN_GUILD: InvalidationReason.NOT_IN_GUILD,
    ChannelVerdict.NO_SUCH_CHANNEL: InvalidationReason.NO_SUCH_CHANNEL,
    ChannelVerdict.NOT_A_VOICE_CHANNEL: InvalidationReason.NOT_A_VOICE_CHANNEL,
}


def _check_bridge(bridge: object, guild_id: Snowflake) -> None:
    """Fail at once for set-ups that Discore would leave hanging forever."""
    for name in ("user_id", "subscribe", "update_voice_state"):
        if not hasattr(bridge, name):
            raise UsageError(
                "bridge must be a Shard or a GatewayVoiceBridge (user_id, subscribe, "
                f"update_voice_state); got {type(bridge).__name__}"
            )
    intents = getattr(bridge, "intents", None)
    if isinstance(intents, int) and not intents & Intents.GUILD_VOICE_STATES:
        raise MissingVoiceIntent(
            "the shard was opened without the GUILD_VOICE_STATES intent, so Discord would never "
            "send the VOICE_STATE_UPDATE a voice connection needs; open it with "
            "intents=Intents.GUILDS | Intents.GUILD_VOICE_STATES (or Intents.VOICE_DEFAULT)"
        )
    serves_guild = getattr(bridge, "serves_guild", None)
    if callable(serves_guild) and not serves_guild(guild_id):
        shard_count = getattr(bridge, "shard_count", None)
        where = ""
        if isinstance(shard_count, int) and shard_count > 0:
            where = f" (it is on shard {shard_for_guild(guild_id, shard_count)} of {shard_count})"
        raise GuildNotOnShard(
            f"guild {guild_id} is not served by this shard{where}; open the voice connection "
            "through the shard that serves it: shard_for_guild(guild_id, shard_count)"
        )


class VoiceConnection:
    """A voice connection to one guild, through a shard or any gateway-voice bridge.

    Create it, subscribe to its events if you want every one of them, then
    ``async with conn.connect(channel_id):``. Or use :func:`voice_connection` for both steps.
    """

    #: One 20 ms frame of 48 kHz s16le stereo: Discore's ``PCM_BLOCK_SIZE``.
    PCM_BLOCK_SIZE: Final = PCM_BLOCK_SIZE

    def __init__(
        self,
        bridge: GatewayVoiceBridge,
        guild_id: int | str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        encoder: EncoderSettings | None = None,
    ) -> None:
        guild = validate_snowflake(guild_id, name="guild_id")
        _check_bridge(bridge, guild)
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise UsageError("ssl_context must be an ssl.SSLContext")
        if encoder is not None and not isinstance(encoder, EncoderSettings):
            raise UsageError(f"encoder must be an EncoderSettings, got {type(encoder).__name__}")
        self._bridge = bridge
        self._log = _GuildLog(_logger, {"guild_id": guild})
        self._inbox, messages = trio.open_memory_channel[Message](INBOX_SIZE)
        self._events: Hub[VoiceEvent] = Hub(
            self._log, DEFAULT_EVENT_BUFFER, what="a voice event", kind=VoiceEvents
        )
        self._sender = VoiceSender(
            buffer_size, encoder or EncoderSettings(), self._inbox, self._log
        )
        self._sender.player.mixer.events = self._events  # track events join the voice events
        self._writer = GatewayWriter(bridge, guild, self._inbox, self._log)
        self._timers = Timers(self._inbox)
        user_id = validate_snowflake(bridge.user_id, name="bridge.user_id")
        self._task = SessionTask(
            VoiceProtocol(
                guild,
                user_id,
                # Read through the module, so that a test can patch it and see a davey-less build.
                max_dave_protocol_version=_dave.max_supported_dave_version(),
            ),
            inbox=self._inbox,
            messages=messages,
            writer=self._writer,
            sender=self._sender,
            timers=self._timers,
            events=self._events,
            log=self._log,
            ssl_context=ssl_context,
        )
        self._receiver: VoiceReceiver | None = None
        self._receive_totals: Counter[str] = Counter()
        self._guild_id = guild
        self._used = False
        self._running = False

    def __repr__(self) -> str:
        s = self._task.state
        state = (
            "connected"
            if s.connected
            else "connecting"
            if s.connecting
            else "invalid"
            if not s.valid
            else "new"
        )
        return f"<VoiceConnection guild={self._guild_id} channel={s.channel_id} {state}>"

    # --- state ----------------------------------------------------------------------------

    @property
    def guild_id(self) -> Snowflake:
        """The guild this connection belongs to; one connection per guild and bridge."""
        return self._guild_id

    @property
    def channel_id(self) -> Snowflake | None:
        """The channel we are in (or joining); it follows switches and server-side moves."""
        return self._task.state.channel_id

    @property
    def self_mute(self) -> bool:
        """Whether we asked Discord to show us muted (op 4); it does not stop sending."""
        return self._task.state.self_mute

    @property
    def self_deaf(self) -> bool:
        """Whether we asked Discord to show us deafened (op 4)."""
        return self._task.state.self_deaf

    @property
    def ssrc(self) -> int | None:
        """Our RTP source id from Ready; None before the first handshake. Kept across resumes."""
        return self._task.state.ssrc

    @property
    def encryption_mode(self) -> str | None:
        """The transport mode negotiated with the voice server (AES-256-GCM when offered)."""
        return self._task.state.mode

    @property
    def is_valid(self) -> bool:
        """False once invalidated, for good: every call then does nothing (see ``invalidation``)."""
        return self._task.state.valid

    @property
    def is_connected(self) -> bool:
        """Handshake complete and not currently resuming, switching or moving."""
        return self._task.state.connected

    @property
    def is_connecting(self) -> bool:
        """Handshaking: the first time, after a switch or a server move, or while resuming."""
        return self._task.state.connecting

    @property
    def invalidation(self) -> Invalidated | None:
        """None while valid; then the reason and a detail for humans."""
        return self._task.state.invalidation

    # --- statistics ---------------------------------------------------------------------------

    @property
    def send_stats(self) -> SendStats:
        """What this connection sent so far, for monitoring: counts, encode time, send gaps."""
        return self._sender.stats()

    @property
    def udp_stats(self) -> UdpStats:
        """What the UDP path received and dropped (by reason), keep-alives, and restarts."""
        return self._task.udp_stats

    @property
    def websocket_stats(self) -> WebSocketStats:
        """The voice websocket's history: opens, resumes, reconnects, drops, closes, RTT."""
        return self._task.protocol.websocket_stats

    @property
    def dave_stats(self) -> dict[str, int]:
        """DAVE media counters (``encrypted``, ``encrypt_failed``, ``decrypted``,
        ``passed_through``, ``decrypt_failed``, ``recoveries``), for statistics and tests.
        Received frames are only decrypted while :meth:`receive` runs."""
        return self._task.protocol.dave_stats

    @property
    def receive_stats(self) -> ReceiveStats:
        """Everything the receive path counted, by stage: see :class:`ReceiveStats`."""
        extra = Counter(self._receive_totals)
        if self._receiver is not None:
            extra.update(self._receiver.counts)
        return self._task.protocol.receive.snapshot(extra)

    # --- receiving ------------------------------------------------------------------------

    @asynccontextmanager
    async def receive(
        self, *, decode: bool = True, delay: float = DEFAULT_DEPTH * 0.02
    ) -> AsyncIterator[VoiceReceiver]:
        """Hear the channel while the block runs: open streams on what it yields.

        ``decode`` gives 48 kHz stereo PCM as well as the Opus packets; ``delay`` is the
        playout buffer's depth in seconds (0.1 by default): the jitter it rides out, and the
        latency it adds. Members' audio is end-to-end decrypted in DAVE calls.

        One receiver at a time per connection (open as many streams on it as you like). On a
        connection that is not valid, or once it ends, the streams end: no error.
        """
        check_bool("decode", decode)
        depth = check_depth(delay)
        if self._receiver is not None:
            raise UsageError(
                "this connection is already receiving: open more streams on the receiver "
                "its vc.receive() block yielded"
            )
        receiver = VoiceReceiver(
            self,
            self._task.protocol.receive,
            decode=decode,
            depth=depth,
            tap=self._task.receive_tap,
            next_send_at=self._sender.next_send_at,
        )
        self._receiver = receiver
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(receiver.run)
                try:
                    yield receiver
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._receiver = None
            self._receive_totals.update(receiver.counts)

    # --- DAVE ----------------------------------------------------------------------------

    @property
    def dave_protocol_version(self) -> int:
        """The DAVE version the call uses now; 0 means transport encryption only."""
        return self._task.state.dave_protocol_version

    @property
    def dave_epoch(self) -> int | None:
        """The MLS epoch of our DAVE group (None without one): equal epochs, one group."""
        return self._task.state.dave_epoch

    @property
    def voice_privacy_code(self) -> str | None:
        """The code Discord's clients show for this call; equal codes mean one shared group.

        None while the call is not end-to-end encrypted (no DAVE, or the group not ready yet).
        """
        return self._task.state.voice_privacy_code

    async def verification_code(self, user_id: int | str) -> str:
        """The code to compare with ``user_id`` out of band, to rule out a man in the middle.

        Costly: davey computes it with scrypt (0.2-0.3 s) while holding the GIL, so even from the
        worker thread it runs in, every task of the program stalls meanwhile and audio being sent
        goes out about a dozen frames late, once. Ask for it when a user asks, not in a loop; the
        result is cached until the group changes. Raises :class:`DaveError` when the call has no
        DAVE group (yet) or ``user_id`` is not in it.
        """
        uid = validate_snowflake(user_id, name="user_id")
        client = self._task.protocol.dave
        if client is None or client.protocol_version == 0 or client.voice_privacy_code is None:
            raise DaveError("no DAVE group yet: the call is not end-to-end encrypted right now")
        return await trio.to_thread.run_sync(client.cached_verification_code, uid)

    # --- events and waits -----------------------------------------------------------------

    def subscribe(self, *, buffer_size: int = DEFAULT_EVENT_BUFFER) -> VoiceEvents:
        """Events from now on; subscribe before ``connect`` to see the first Connected."""
        events = self._events.subscribe(buffer_size)
        assert isinstance(events, VoiceEvents)
        return events

    async def wait_connected(self) -> bool:
        """Wait until connected (True) or invalid (False)."""
        await self._wait(_settled)
        return self.is_connected

    async def wait_invalidated(self) -> Invalidated:
        """Wait until the connection is invalid, and say why."""
        await self._wait(_over)
        invalidation = self.invalidation
        assert invalidation is not None
        return invalidation

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        """Wait until ``predicate()`` is true, re-checked after every change of the connection's
        state (valid, connecting, connected, channel, mute and deaf, speaking, DAVE).

        For the states no event announces, such as a resume in progress:
        ``await vc.wait_for(lambda: vc.is_connecting)``. Statistics change without waking it.
        """
        while True:
            changed = self._task.changed
            if predicate():
                return
            await changed.wait()

    async def _wait(self, done: Callable[[ConnectionState], bool]) -> None:
        while True:
            changed = self._task.changed
            if done(self._task.state):
                return
            await changed.wait()

    # --- requests to the session task ---------------------------------------------------------

    async def _request(
        self, message: Connect | UpdateVoiceState | Disconnect | SetSpeaking
    ) -> None:
        """Hand a request to the session task and wait until it was carried out.

        Outside the ``connect`` block there is no session task, and nothing to do: the
        connection is new (no-op, as in Discore) or over (invalid, no-op).
        """
        if not self._running:
            return
        await self._inbox.send(message)
        await message.done.wait()

    async def update_voice_state(
        self,
        channel_id: int | str | None,
        *,
        self_mute: bool | None = None,
        self_deaf: bool | None = None,
    ) -> None:
        """Switch channel, or change mute/deaf (omitted ones stay as they are).

        Returns once the update is sent, before a switch completes: Connected fires again when
        it has. ``channel_id=None`` disconnects. A no-op on an invalid connection.
        """
        channel = None if channel_id is None else validate_snowflake(channel_id, name="channel_id")
        mute = self.self_mute if self_mute is None else check_bool("self_mute", self_mute)
        deaf = self.self_deaf if self_deaf is None else check_bool("self_deaf", self_deaf)
        await self._request(UpdateVoiceState(channel, mute, deaf))

    async def disconnect(self) -> None:
        """Leave the channel; the connection becomes invalid with reason NORMAL."""
        await self._request(Disconnect())

    @property
    def is_speaking(self) -> bool:
        """Whether speaking is on (Discord drops audio from an SSRC that is not speaking)."""
        return bool(self._task.state.speaking)

    @property
    def speaking_flags(self) -> SpeakingFlags:
        """The flags last announced, or to announce when the connection is next ready."""
        return SpeakingFlags(self._task.state.speaking)

    async def set_speaking(self, flags: SpeakingFlags | int | bool = True) -> None:
        """Announce speaking (op 5). Sending turns it on by itself; set it to use other flags."""
        if isinstance(flags, bool):
            value = int(SpeakingFlags.MICROPHONE) if flags else 0
        elif isinstance(flags, int):
            value = int(flags)
            if value & ~0b111 or value < 0:
                raise UsageError(
                    f"speaking flags must combine MICROPHONE=1, SOUNDSHARE=2 and PRIORITY=4, "
                    f"got {flags!r}"
                )
        else:
            raise UsageError(f"speaking must be SpeakingFlags or a bool, got {type(flags)}")
        await self._request(SetSpeaking(value))

    # --- sending: Discore's PCM buffer, and play() --------------------------------------------

    def can_send_voice_data(self, size: int) -> bool:
        """Whether ``send_voice_data_nowait`` of ``size`` bytes would queue them now."""
        return self._sender.producer.can_accept(size)

    def send_voice_data_nowait(self, pcm: bytes | bytearray | memoryview) -> None:
        """Queue 48 kHz s16le stereo PCM, all or nothing; raise ``VoiceBufferFull`` without room.

        Blocks need not be whole frames: the remainder waits for the next block, and is padded
        with silence if the audio stops.
        """
        self._sender.producer.write_nowait(pcm)

    async def send_voice_data(self, pcm: bytes | bytearray | memoryview) -> None:
        """Queue PCM, waiting for room: back-pressure in place of Discore's poll-and-sleep."""
        await self._sender.producer.write(pcm)

    @property
    def bytes_to_send(self) -> int:
        """Queued PCM not yet sent (Discore's ``BytesToSend``)."""
        return self._sender.producer.bytes_to_send

    def clear_voice_buffer(self) -> int:
        """Drop queued audio; five silence frames end what was playing. Returns bytes dropped."""
        return self._sender.producer.clear()

    @property
    def paused(self) -> bool:
        """Discore's ``IsPaused``: pausing sends five silence frames and keeps the queue, and
        resuming carries on from it, stamped with the time that passed."""
        return self._sender.paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self._sender.paused = value

    # --- the player ---------------------------------------------------------------------------

    def start_track(
        self,
        source: AudioSource,
        *,
        volume: float = 1.0,
        loops: int | None = 0,
        ducks_others: bool = False,
    ) -> TrackHandle:
        """Start playing ``source`` now, mixed with whatever else plays; its handle, at once.

        Any number of tracks play together (music, an effect over it, speech over both), each
        at its own ``volume``; ``loops`` plays it that many more times (None: until stopped);
        ``ducks_others`` lowers the other tracks while it plays, as :attr:`ducking` says.
        ``await`` the handle for its :class:`TrackEnd`. On an invalid connection the handle
        has already ended ``INVALIDATED``; a source already playing raises
        :class:`UsageError`.
        """
        player = self._sender.player
        track = player.new_track(source, volume=volume, loops=loops, ducks_others=ducks_others)
        return player.start(track)

    async def play(
        self,
        source: AudioSource,
        *,
        volume: float = 1.0,
        loops: int | None = 0,
        ducks_others: bool = False,
    ) -> TrackEnd:
        """Play ``source`` to its end (as :meth:`start_track`, then wait); its :class:`TrackEnd`.

        The outcome is explicit: ``FINISHED``, or ``INVALIDATED`` with the connection's reason
        if it ended first (a kicked bot's playlist loop must check it, or use :attr:`queue`).
        A source that fails raises its error, naming it, after what it delivered was heard.
        Cancelling ``play()`` stops the track.
        """
        player = self._sender.player
        track = player.new_track(source, volume=volume, loops=loops, ducks_others=ducks_others)
        return await player.play(track)

    @property
    def tracks(self) -> tuple[TrackHandle, ...]:
        """The tracks playing (or paused, or preloaded) now, in the order they started."""
        return self._sender.player.tracks

    @property
    def queue(self) -> TrackQueue:
        """Tracks played one after another, gapless: enqueue, skip, remove, shuffle, loop."""
        return self._sender.queue

    @property
    def is_playing(self) -> bool:
        """Some track is playing and not paused (the queue's, or one started directly)."""
        return self._sender.player.mixer.playing

    def stop(self) -> None:
        """Stop every track and clear the queue (each ends ``STOPPED``)."""
        self._sender.queue.stop()
        self._sender.player.stop_all()

    @property
    def ducking(self) -> Ducking | None:
        """How tracks started with ``ducks_others=True`` lower the others; None (the default)
        disables ducking. A :class:`Ducking` sets the level and the attack and release times."""
        return self._sender.player.ducking

    @ducking.setter
    def ducking(self, value: Ducking | None) -> None:
        self._sender.player.ducking = value

    # --- the block ----------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(
        self,
        channel_id: int | str,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
        timeout: float = 60.0,  # noqa: ASYNC109 (the spec: a connect timeout, as Discore)
    ) -> AsyncIterator[VoiceConnection]:
        """Join ``channel_id`` and finish the handshake, or raise :class:`VoiceConnectionFailed`.

        ``timeout`` bounds the handshake from the moment op 4 is sent; before that, op 4 may
        wait its turn under the shard's rate limit (see :data:`OP4_QUEUE_ALLOWANCE`).

        Leaving the block leaves the channel, stops every task, closes every socket and
        invalidates the connection with reason NORMAL (if it was still valid).
        """
        channel = validate_snowflake(channel_id, name="channel_id")
        check_bool("self_mute", self_mute)
        check_bool("self_deaf", self_deaf)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise UsageError("timeout must be a positive number of seconds")
        if self._used:
            raise UsageError("a VoiceConnection connects once; create a new one to connect again")
        guilds = _guilds_of(self._bridge)
        if self.guild_id in guilds:
            raise VoiceConnectionBusy(
                f"guild {self.guild_id} already has a voice connection through this bridge; "
                "Discord allows one per guild: leave it first, or switch its channel with "
                "update_voice_state()"
            )
        self._used = True
        guilds.add(self.guild_id)
        failure: VoiceConnectionFailed | None = None
        try:
            async with trio.open_nursery() as nursery:
                # The connection's tasks live in a nursery that a cancellation of the caller's
                # block does not reach: leaving (the leave, the websocket's close handshake) is
                # the session task's work, and it must still run when the block is cancelled.
                # The block's end cancels them itself, always.
                tasks: trio.Nursery = await nursery.start(shielded_nursery)
                try:
                    self._start_tasks(tasks)
                    failure = await self._handshake(channel, self_mute, self_deaf, timeout)
                    if failure is None:
                        yield self
                finally:
                    with trio.CancelScope(shield=True):
                        await self._leave()
                    tasks.cancel_scope.cancel()
        finally:
            self._running = False
            _release(self._bridge, self.guild_id)
        if failure is not None:
            raise failure

    def _start_tasks(self, nursery: trio.Nursery) -> None:
        inbox, log = self._inbox, self._log
        self._running = True
        self._sender.player.attach(nursery)
        nursery.start_soon(self._task.run, nursery)
        for task in (
            self._listen,
            self._timers.run,
            self._writer.run,
            self._sender.run,
            self._sender.queue.run,
        ):
            nursery.start_soon(guarded, trio.CancelScope(), task, inbox, log)

    async def _listen(self) -> None:
        await run_gateway_listener(self._subscribe_voice_events(), self._inbox)

    def _subscribe_voice_events(self) -> Subscription[Dispatch]:
        """This guild's voice dispatches; our own bridges route them by guild, so a shard with
        hundreds of voice connections wakes only the one listener an event is for."""
        bridge = self._bridge
        if isinstance(bridge, Shard):
            return bridge.subscribe(*_SHARD_EVENTS, guild_id=self.guild_id)
        if isinstance(bridge, ForwardedBridge):
            return bridge.subscribe(guild_id=self.guild_id)  # all it carries
        return bridge.subscribe(VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE)

    async def _handshake(
        self, channel: Snowflake, self_mute: bool, self_deaf: bool, limit: float
    ) -> VoiceConnectionFailed | None:
        """Join and wait for the handshake; the failure to raise, or None once connected."""
        refusal = await self._refusal(channel)
        if refusal is not None:
            # Discord would never answer this op 4: fail now, with the reason, not in a minute.
            await self._inbox.send(TaskFailed(*refusal))
            await self._wait(_over)
            invalidation = self.invalidation
            assert invalidation is not None
            return VoiceConnectionFailed(invalidation.reason, invalidation.detail)
        start = trio.current_time()
        # The handshake's timeout starts once op 4 is out: a shard whose voice joins outrun its
        # rate limit queues them, for up to one more window.
        # A shard reports when it sent the op 4 (VOICE_STATE_SENT, in order with the guild's
        # dispatches): voice dispatches before that answer an earlier connection.
        marker = isinstance(self._bridge, Shard)
        with trio.move_on_after(limit + OP4_QUEUE_ALLOWANCE) as sending:
            await self._request(Connect(channel, self_mute, self_deaf, sent_marker=marker))
        if not sending.cancelled_caught:
            await self._wait_handshake(limit)
        if self.is_connecting:
            detail = (
                f"the voice handshake did not finish within {limit:g} s (is the channel "
                "full, the bot missing permission to join it, or the guild or channel id "
                "wrong?)"
                if not sending.cancelled_caught
                else f"op 4 could not be sent within {sending.deadline - start:g} s (the "
                "gateway is down, or far over its rate limit)"
            )
            await self._inbox.send(TaskFailed(InvalidationReason.TIMED_OUT, detail))
            await self._wait(_over)
        invalidation = self.invalidation
        if invalidation is not None:
            return VoiceConnectionFailed(invalidation.reason, invalidation.detail)
        return None

    async def _refusal(self, channel: Snowflake) -> tuple[InvalidationReason, str] | None:
        """Why a join of ``channel`` cannot work, if the shard's guild list already says so."""
        if not isinstance(self._bridge, Shard):
            return None  # a bridge forwards dispatches, not the guild list
        check = await self._bridge.wait_voice_channel(self.guild_id, channel, grace=DIRECTORY_GRACE)
        reason = _REFUSALS.get(check.verdict)
        return None if reason is None else (reason, check.detail)

    async def _wait_handshake(self, limit: float) -> None:
        """Wait for the handshake for ``limit`` seconds of a live gateway.

        While the shard is away its dispatches cannot come (they are replayed after its
        resume), so that time does not count, up to :data:`OP4_QUEUE_ALLOWANCE` of it: a join
        made just before a gateway outage still completes after it.
        """
        remaining, paused = limit, 0.0
        while self.is_connecting:
            started = trio.current_time()
            if not self._task.state.gateway_up and paused < OP4_QUEUE_ALLOWANCE:
                with trio.move_on_after(OP4_QUEUE_ALLOWANCE - paused):
                    await self._wait(_not_waiting_for_gateway)
                paused += trio.current_time() - started
                continue
            if remaining <= 0:
                return
            with trio.move_on_after(remaining):
                await self._wait(_settled_or_gateway_away)
            remaining -= trio.current_time() - started

    async def _leave(self) -> None:
        """Leave the channel, stop every task and close every socket (runs shielded, bounded)."""
        with trio.move_on_after(_EXIT_GRACE):
            leave = Leave(gateway_closed=getattr(self._bridge, "is_closed", False) is True)
            await self._inbox.send(leave)
            await leave.done.wait()
            # The voice websocket closes before we leave on the main gateway, so the voice server
            # sees a normal close rather than a member it has to disconnect; then the leave.
            await self._task.wait_closed()
            if self._task.leave_due:
                state = self._task.state
                self._writer.request(None, self_mute=state.self_mute, self_deaf=state.self_deaf)
            await self._writer.wait_idle()


def _settled(state: ConnectionState) -> bool:
    return state.connected or not state.valid


def _not_waiting_for_gateway(state: ConnectionState) -> bool:
    return state.gateway_up or not state.connecting


def _settled_or_gateway_away(state: ConnectionState) -> bool:
    return not state.connecting or not state.gateway_up


def _over(state: ConnectionState) -> bool:
    return not state.valid


@asynccontextmanager
async def voice_connection(
    bridge: GatewayVoiceBridge,
    guild_id: int | str,
    channel_id: int | str,
    *,
    self_mute: bool = False,
    self_deaf: bool = False,
    timeout: float = 60.0,  # noqa: ASYNC109 (the spec: a connect timeout, as Discore)
    ssl_context: ssl.SSLContext | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    encoder: EncoderSettings | None = None,
) -> AsyncIterator[VoiceConnection]:
    """Connect to a voice channel for the duration of the block; see :class:`VoiceConnection`.

    ``ssl_context`` verifies the voice server's ``wss://`` (default: the system's trust store);
    pass the simulator's ``client_ssl_context()`` to test against a local Discord with TLS.
    ``buffer_size`` bounds the queued PCM (bytes) and ``encoder`` sets the Opus encoder.
    """
    connection = VoiceConnection(
        bridge, guild_id, ssl_context=ssl_context, buffer_size=buffer_size, encoder=encoder
    )
    async with connection.connect(
        channel_id, self_mute=self_mute, self_deaf=self_deaf, timeout=timeout
    ) as connected:
        yield connected
