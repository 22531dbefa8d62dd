"""Voice connections: Discore's lifecycle in trio's shape.

A connection is an ``async with`` block that owns a nursery: the gateway listener, the voice
websocket reader, the heartbeat and the UDP socket run in it, and leaving the block leaves
nothing running. Discore's rules hold inside: connecting either succeeds or raises; any end
(normal or fatal) *invalidates* the connection with a reason; nothing reconnects silently after a
fatal error; and an invalid connection turns every operation into a no-op. Invalidation never
raises into the user's block: it wakes whoever waits and is recorded, and the user decides whether
to leave.

The protocol decisions all live in the sans-IO :class:`~discore_voice._core.voice.session.
VoiceSession`. This module feeds it events from the tasks and carries out the actions it returns;
it decides nothing about Discord itself.
"""

from __future__ import annotations

import logging
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Final

import trio

from .._core.gateway.errors import BridgeClosed
from .._core.gateway.intents import Intents
from .._core.gateway.voice import GATEWAY_SESSION_LOST, VOICE_SERVER_UPDATE, VOICE_STATE_UPDATE
from .._core.ip_discovery import DiscoveredAddress
from .._core.snowflake import Snowflake, validate_snowflake
from .._core.transport import PROCESS_NONCE_LEDGER, SUPPORTED_MODES, create_cipher
from .._core.voice.frames import encode_client_text
from .._core.voice.session import (
    Action,
    CloseWebSocket,
    Connected,
    DaveMessage,
    InstallCipher,
    Invalidated,
    InvalidationReason,
    MemberConnected,
    MemberDisconnected,
    MemberSpeaking,
    NewDaveSession,
    OpenWebSocket,
    SendVoiceMessage,
    SendVoiceStateUpdate,
    StartMoveGrace,
    StartUdp,
    VoiceSession,
)
from .._errors import (
    DiscoreVoiceError,
    NativeLibraryMissing,
    ProtocolError,
    UnknownOpcode,
    UsageError,
    shorten,
)
from .bridge import ForwardedBridge, GatewayVoiceBridge
from .shard.connection import Shard
from .shard.events import Subscription
from .voice_dave import VoiceDave, offered_dave_version, passthrough
from .voice_events import DEFAULT_EVENT_BUFFER, VoiceEventHub, VoiceEvents
from .voice_gateway_listener import run_gateway_listener
from .voice_heartbeat import run_heartbeat
from .voice_sender import (
    DEFAULT_BUFFER_SIZE,
    EncoderSettings,
    VoiceSender,
    VoiceSendingMixin,
)
from .voice_udp import VoiceUdp
from .voice_websocket import CLOSE_GRACE, VoiceWebSocket

__all__ = [
    "GuildNotOnShard",
    "MissingVoiceIntent",
    "VoiceConnection",
    "VoiceConnectionBusy",
    "VoiceConnectionFailed",
    "offered_dave_protocol_version",
    "voice_connection",
]

_logger = logging.getLogger("discore_voice.voice")

#: Seconds leaving the block may spend telling Discord we left (op 4 with a null channel). It is
#: shielded from cancellation, so it must be bounded: a shard that is reconnecting would wait.
LEAVE_TIMEOUT: Final = 5.0
#: Seconds op 4 may wait to be sent, beyond the connect timeout: Discord allows a gateway
#: connection 120 commands a minute, so a shard asked to join more voice channels at once than
#: that queues the rest for up to one window. The handshake's own timeout starts when it is sent.
OP4_QUEUE_ALLOWANCE: Final = 60.0
#: Seconds to open the voice websocket (TCP, TLS and the HTTP upgrade) before trying again.
WEBSOCKET_CONNECT_TIMEOUT: Final = 10.0


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


# --- the DAVE seam --------------------------------------------------------------------------


def offered_dave_protocol_version() -> int:
    """The ``max_dave_protocol_version`` voice Identify advertises.

    The highest version the installed davey supports; 0 when it is missing, so that a voice
    server requiring DAVE closes with 4017 and the connection says how to install it.
    """
    return offered_dave_version()


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
            where = f" (it is on shard {(guild_id >> 22) % shard_count} of {shard_count})"
        raise GuildNotOnShard(
            f"guild {guild_id} is not served by this shard{where}; open the voice connection "
            "through the shard that serves it: shard_id == (guild_id >> 22) % shard_count"
        )


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be a bool, got {type(value).__name__}")
    return value


class VoiceConnection(VoiceSendingMixin):
    """A voice connection to one guild, through a shard or any gateway-voice bridge.

    Create it, subscribe to its events if you want every one of them, then
    ``async with conn.connect(channel_id):``. Or use :func:`voice_connection` for both steps.
    """

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
        self._bridge = bridge
        self._ssl_context = ssl_context
        self._log = _GuildLog(_logger, {"guild_id": guild})
        self._session = VoiceSession(
            guild,
            validate_snowflake(bridge.user_id, name="bridge.user_id"),
            supported_modes=SUPPORTED_MODES,
            max_dave_protocol_version=offered_dave_protocol_version(),
        )
        self._hub = VoiceEventHub(self._log)
        #: Applied by the sender to every non-silence Opus frame before transport encryption;
        #: the DAVE layer swaps it between DAVE encryption and passthrough as the group changes.
        self._media_encryptor: Callable[[bytes], bytes] = passthrough
        self._dave = VoiceDave(
            self._session.user_id,
            self._send_frame,
            self._hub.publish,
            self._set_media_encryptor,
            self._log,
        )
        self._changed = trio.Event()
        self._used = False
        self._left = False
        self._gateway_gone = False
        self._nursery: trio.Nursery | None = None
        self._subscription: Subscription | None = None
        self._scopes: set[trio.CancelScope] = set()
        self._websocket: VoiceWebSocket | None = None
        self._closing: list[VoiceWebSocket] = []
        self._udp: VoiceUdp | None = None
        self._udp_scope: trio.CancelScope | None = None
        self._sender = VoiceSender(
            is_ready=lambda: self.is_connected,
            is_valid=lambda: self.is_valid,
            udp=lambda: self._udp,
            media_encryptor=lambda: self._media_encryptor,
            changed=self._current_event,
            send_speaking=lambda flags: self._drive(self._session.set_speaking(flags)),
            connection_id=lambda: self._session.connection_id,
            buffer_size=buffer_size,
            encoder=encoder,
        )

    def __repr__(self) -> str:
        s = self._session
        state = (
            "connected"
            if s.is_connected
            else "connecting"
            if s.is_connecting
            else "invalid"
            if not s.is_valid
            else "new"
        )
        return f"<VoiceConnection guild={s.guild_id} channel={s.channel_id} {state}>"

    # --- state ----------------------------------------------------------------------------

    @property
    def guild_id(self) -> Snowflake:
        """The guild this connection belongs to; one connection per guild and bridge."""
        return self._session.guild_id

    @property
    def channel_id(self) -> Snowflake | None:
        """The channel we are in (or joining); it follows switches and server-side moves."""
        return self._session.channel_id

    @property
    def self_mute(self) -> bool:
        """Whether we asked Discord to show us muted (op 4); it does not stop sending."""
        return self._session.self_mute

    @property
    def self_deaf(self) -> bool:
        """Whether we asked Discord to show us deafened (op 4)."""
        return self._session.self_deaf

    @property
    def ssrc(self) -> int | None:
        """Our RTP source id from Ready; None before the first handshake. Kept across resumes."""
        return self._session.ssrc

    @property
    def encryption_mode(self) -> str | None:
        """The transport mode negotiated with the voice server (AES-256-GCM when offered)."""
        return self._session.encryption_mode

    @property
    def is_valid(self) -> bool:
        """False once invalidated, for good: every call then does nothing (see ``invalidation``)."""
        return self._session.is_valid

    @property
    def is_connected(self) -> bool:
        """Handshake complete and not currently resuming, switching or moving."""
        return self._session.is_connected

    @property
    def is_connecting(self) -> bool:
        """Handshaking: the first time, after a switch or a server move, or while resuming."""
        return self._session.is_connecting

    @property
    def invalidation(self) -> Invalidated | None:
        """None while valid; then the reason and a detail for humans."""
        return self._session.invalidation

    @property
    def udp(self) -> VoiceUdp | None:
        """The current UDP socket task, for the send and receive paths and their statistics."""
        return self._udp

    # --- DAVE ----------------------------------------------------------------------------

    @property
    def dave_protocol_version(self) -> int:
        """The DAVE version the call uses now; 0 means transport encryption only."""
        return self._dave.protocol_version

    @property
    def dave_epoch(self) -> int | None:
        """The MLS epoch of our DAVE group (None without one): equal epochs, one group."""
        return self._dave.epoch

    @property
    def voice_privacy_code(self) -> str | None:
        """The code Discord's clients show for this call; equal codes mean one shared group.

        None while the call is not end-to-end encrypted (no DAVE, or the group not ready yet).
        """
        return self._dave.voice_privacy_code

    @property
    def dave_stats(self) -> dict[str, int]:
        """DAVE media counters (``encrypted``, ``encrypt_failed``, ``decrypted``,
        ``passed_through``, ``decrypt_failed``, ``unknown_ssrc``), for statistics and tests."""
        return dict(self._dave.stats)

    async def verification_code(self, user_id: int | str) -> str:
        """The code to compare with ``user_id`` out of band, to rule out a man in the middle.

        Costly: davey computes it with scrypt (0.2-0.3 s) while holding the GIL, so even from the
        worker thread it runs in, every task of the program stalls meanwhile and audio being sent
        goes out about a dozen frames late, once. Ask for it when a user asks, not in a loop; the
        result is cached until the group changes. Raises :class:`DaveError` when the call has no
        DAVE group (yet) or ``user_id`` is not in it.
        """
        return await self._dave.verification_code(user_id)

    # --- events and waits -----------------------------------------------------------------

    def subscribe(self, *, buffer_size: int = DEFAULT_EVENT_BUFFER) -> VoiceEvents:
        """Events from now on; subscribe before ``connect`` to see the first Connected."""
        return self._hub.subscribe(buffer_size)

    async def wait_connected(self) -> bool:
        """Wait until connected (True) or invalid (False)."""
        await self._wait(lambda: self.is_connected or not self.is_valid)
        return self.is_connected

    async def wait_invalidated(self) -> Invalidated:
        """Wait until the connection is invalid, and say why."""
        await self._wait(lambda: not self.is_valid)
        invalidation = self._session.invalidation
        assert invalidation is not None
        return invalidation

    async def _wait(self, done: Callable[[], bool]) -> None:
        while True:
            event = self._changed
            if done():
                return
            await event.wait()

    def _notify(self) -> None:
        self._sender.relink()
        self._changed.set()
        self._changed = trio.Event()

    def _current_event(self) -> trio.Event:
        return self._changed

    # --- operations -----------------------------------------------------------------------

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
        mute = self.self_mute if self_mute is None else _check_bool(self_mute, "self_mute")
        deaf = self.self_deaf if self_deaf is None else _check_bool(self_deaf, "self_deaf")
        await self._drive(self._session.update_voice_state(channel, self_mute=mute, self_deaf=deaf))

    async def disconnect(self) -> None:
        """Leave the channel; the connection becomes invalid with reason NORMAL."""
        await self._drive(self._session.disconnect())

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
        _check_bool(self_mute, "self_mute")
        _check_bool(self_deaf, "self_deaf")
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
        body_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    self._subscription = self._subscribe_voice_events()
                    self._spawn(run_gateway_listener, self._subscription, self)
                    self._spawn(run_heartbeat, self._session, self._current_event, self._drive)
                    self._spawn(self._sender.run)
                    self._spawn(self._sender.keep_speaking)
                    self._log.info("connecting to channel %d", channel)
                    start = trio.current_time()
                    # The handshake's timeout starts once op 4 is out: a shard whose voice
                    # joins outrun its rate limit queues them, for up to one more window.
                    with trio.move_on_after(timeout + OP4_QUEUE_ALLOWANCE) as sending:
                        await self._drive(
                            self._session.connect(channel, self_mute=self_mute, self_deaf=self_deaf)
                        )
                    if not sending.cancelled_caught:
                        with trio.move_on_after(timeout):
                            await self._wait(lambda: not self.is_connecting)
                    if self.is_connecting:
                        detail = (
                            f"the voice handshake did not finish within {timeout:g} s (is "
                            "the channel full, or the bot missing permission to join it?)"
                            if not sending.cancelled_caught
                            else f"op 4 could not be sent within {sending.deadline - start:g} s "
                            "(the gateway is down, or far over its rate limit)"
                        )
                        await self._drive(self._session.fail(InvalidationReason.TIMED_OUT, detail))
                    invalidation = self._session.invalidation
                    if invalidation is not None:
                        failure = VoiceConnectionFailed(invalidation.reason, invalidation.detail)
                    else:
                        try:
                            yield self
                        except BaseException as exc:
                            body_error = exc
                finally:
                    with trio.CancelScope(shield=True):
                        await self._leave()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            _release(self._bridge, self.guild_id)
        if failure is not None:
            raise failure
        if body_error is not None:
            raise body_error

    # --- leaving --------------------------------------------------------------------------

    async def _leave(self) -> None:
        """Leave the channel, stop every task and close every socket (runs shielded)."""
        if self._gateway_gone or getattr(self._bridge, "is_closed", False) is True:
            await self._drive(self._session.gateway_closed())
        # Invalidate first, so the Invalidated event goes out even if the op 4 below times out.
        await self._drive(
            [a for a in self._session.disconnect() if not isinstance(a, SendVoiceStateUpdate)]
        )
        self._stop_everything()
        self._notify()
        # Close the voice websocket before leaving on the main gateway, so the voice server sees
        # a normal close rather than a member it has to disconnect.
        await self._finish_closing()
        invalidation = self._session.invalidation
        if invalidation is None or invalidation.reason is not InvalidationReason.GATEWAY_CLOSED:
            # Also after a failed handshake, which may still have put the bot in the channel.
            with trio.move_on_after(LEAVE_TIMEOUT):
                await self._send_leave()

    async def _send_leave(self) -> None:
        if self._left:
            return
        self._left = True
        try:
            await self._bridge.update_voice_state(
                self.guild_id, None, self_mute=self.self_mute, self_deaf=self.self_deaf
            )
        except BridgeClosed:
            self._log.debug("the gateway is gone; cannot send the leave request")

    def _stop_everything(self) -> None:
        self._sender.close()
        for scope in self._scopes:
            scope.cancel()
        if self._websocket is not None:
            self._websocket.close(1000)
            self._closing.append(self._websocket)
            self._websocket = None
        self._udp = None
        self._sender.relink()
        self._hub.close()

    async def _finish_closing(self) -> None:
        """Let websockets finish their close handshake before the nursery is cancelled."""
        with trio.move_on_after(CLOSE_GRACE + 1.0):
            for websocket in self._closing:
                await websocket.done.wait()
        self._closing.clear()

    # --- tasks ----------------------------------------------------------------------------

    def _spawn(
        self, fn: Callable[..., Awaitable[None]], *args: Any, stoppable: bool = True
    ) -> trio.CancelScope:
        """Start a task in the connection's nursery.

        ``stoppable`` tasks are cancelled when the connection ends. A websocket task is not: it
        is told to close instead, so that its close handshake can still run.
        """
        scope = trio.CancelScope()
        if not self.is_valid or self._nursery is None:
            scope.cancel()
            return scope
        if stoppable:
            self._scopes.add(scope)
        self._nursery.start_soon(self._guarded, scope, fn, *args)
        return scope

    async def _guarded(
        self, scope: trio.CancelScope, fn: Callable[..., Awaitable[None]], *args: Any
    ) -> None:
        """Run one task; an unexpected exception ends the connection (ERROR), not the nursery."""
        try:
            with scope:
                await fn(*args)
        except NativeLibraryMissing as exc:
            # Discore's DllNotFound: the machine lacks libopus, and the message says how to fix it.
            await self._drive(
                self._session.fail(InvalidationReason.NATIVE_LIBRARY_MISSING, str(exc))
            )
        except Exception as exc:
            self._log.exception("internal error in a voice connection task")
            detail = f"internal error: {type(exc).__name__}"
            await self._drive(self._session.fail(InvalidationReason.ERROR, detail))
        finally:
            self._scopes.discard(scope)

    # --- carrying out the state machine's actions ----------------------------------------

    async def _drive(self, actions: list[Action]) -> None:
        """Carry out actions in order. Only sends wait; everything else happens at once.

        Called after every event given to the state machine, even with no actions: its state may
        have changed all the same (Resumed, for one), and waiters must look again.
        """
        self._notify()
        for action in actions:
            if isinstance(action, SendVoiceStateUpdate):
                await self._send_voice_state(action)
            elif isinstance(action, SendVoiceMessage):
                websocket = self._websocket
                if websocket is not None and websocket.connection_id == action.connection_id:
                    await websocket.send(encode_client_text(action.message))
            elif isinstance(action, OpenWebSocket):
                self._open_websocket(action)
            elif isinstance(action, CloseWebSocket):
                websocket = self._websocket
                if websocket is not None and websocket.connection_id == action.connection_id:
                    websocket.close(action.code)
                    self._closing.append(websocket)
                    self._websocket = None
            elif isinstance(action, StartUdp):
                self._start_udp(action)
            elif isinstance(action, StartMoveGrace):
                self._log.info("voice websocket closed; waiting for a move's new voice server")
                self._spawn(self._move_grace, action)
            elif isinstance(action, InstallCipher):
                if self._udp is not None:
                    # The process's ledger: a key the server sends again keeps its counter.
                    cipher = create_cipher(
                        action.mode, action.secret_key, ledger=PROCESS_NONCE_LEDGER
                    )
                    self._udp.install(cipher)
                    self._sender.relink()
            elif isinstance(action, Connected):
                self._log.info(
                    "connected to channel %d (ssrc %d, %s)",
                    action.channel_id,
                    action.ssrc,
                    action.mode,
                )
                self._hub.publish(action)
            elif isinstance(action, Invalidated):
                self._invalidated(action)
            elif isinstance(action, DaveMessage):
                await self._dave.receive(action, self._session.channel_id)
            elif isinstance(action, NewDaveSession):
                self._dave.new_session(action)
            elif isinstance(action, MemberSpeaking | MemberConnected | MemberDisconnected):
                if isinstance(action, MemberSpeaking | MemberDisconnected):
                    self._dave.member(action)
                self._hub.publish(action)
        if actions:
            self._notify()

    def _subscribe_voice_events(self) -> Subscription:
        """This guild's voice dispatches; our own bridges route them by guild, so a shard with
        hundreds of voice connections wakes only the one listener an event is for."""
        bridge = self._bridge
        if isinstance(bridge, (Shard, ForwardedBridge)):
            return bridge.subscribe(
                VOICE_STATE_UPDATE,
                VOICE_SERVER_UPDATE,
                GATEWAY_SESSION_LOST,
                guild_id=self.guild_id,
            )
        return bridge.subscribe(VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE)

    def _set_media_encryptor(self, encryptor: Callable[[bytes], bytes]) -> None:
        self._media_encryptor = encryptor
        self._sender.relink()

    async def _send_frame(self, connection_id: int, frame: str | bytes) -> None:
        """Send on websocket ``connection_id`` only if it is still the current one."""
        websocket = self._websocket
        if websocket is not None and websocket.connection_id == connection_id:
            await websocket.send(frame)

    async def _send_voice_state(self, action: SendVoiceStateUpdate) -> None:
        if action.channel_id is None:
            # Shielded: it follows an invalidation, which may be cancelling this very task.
            with trio.CancelScope(shield=True), trio.move_on_after(LEAVE_TIMEOUT):
                await self._send_leave()
            return
        try:
            await self._bridge.update_voice_state(
                self.guild_id,
                action.channel_id,
                self_mute=action.self_mute,
                self_deaf=action.self_deaf,
            )
        except BridgeClosed:
            await self._drive(self._session.gateway_closed())

    def _open_websocket(self, action: OpenWebSocket) -> None:
        if self._websocket is not None:
            self._websocket.close(4000)
            self._closing.append(self._websocket)
        self._closing = [w for w in self._closing if not w.done.is_set()]
        websocket = VoiceWebSocket(
            action.connection_id,
            action.url,
            self,
            self._log,
            ssl_context=self._ssl_context,
            connect_timeout=WEBSOCKET_CONNECT_TIMEOUT,
        )
        self._websocket = websocket
        self._log.debug("opening voice websocket #%d", action.connection_id)
        self._spawn(websocket.run, stoppable=False)

    def _start_udp(self, action: StartUdp) -> None:
        if self._udp_scope is not None:
            self._udp_scope.cancel()
        udp = VoiceUdp(
            action.connection_id,
            action.ip,
            action.port,
            action.ssrc,
            self._log,
            on_change=self._notify,
        )
        udp.on_packet = self._dave.on_packet
        self._udp = udp
        self._sender.relink()
        self._udp_scope = self._spawn(udp.run, self._udp_discovered, self._udp_failed)

    async def _move_grace(self, action: StartMoveGrace) -> None:
        await trio.sleep(action.seconds)
        await self._drive(self._session.move_grace_expired(action.grace_id))

    def _invalidated(self, invalidation: Invalidated) -> None:
        level = (
            logging.INFO if invalidation.reason is InvalidationReason.NORMAL else logging.WARNING
        )
        self._log.log(level, "invalidated (%s): %s", invalidation.reason.name, invalidation.detail)
        self._hub.publish(invalidation)
        self._stop_everything()

    # --- handlers the tasks call ----------------------------------------------------------

    async def _voice_state_update(self, data: Any) -> None:
        try:
            actions = self._session.voice_state_update(data)
        except ProtocolError as exc:
            self._log.warning("skipped a malformed VOICE_STATE_UPDATE: %s", exc)
            return
        await self._drive(actions)

    async def _voice_server_update(self, data: Any) -> None:
        try:
            actions = self._session.voice_server_update(data)
        except ProtocolError as exc:
            self._log.warning("skipped a malformed VOICE_SERVER_UPDATE: %s", exc)
            return
        if any(isinstance(a, OpenWebSocket | CloseWebSocket) for a in actions):
            self._log.info("voice server update: starting a new voice session")
        await self._drive(actions)

    async def _gateway_session_lost(self, data: Any) -> None:
        reason = data.get("reason") if isinstance(data, dict) else None
        detail = shorten(reason) if isinstance(reason, str) else "the gateway session ended"
        await self._drive(self._session.gateway_session_lost(detail))

    async def _gateway_closed(self) -> None:
        self._gateway_gone = True
        await self._drive(self._session.gateway_closed())

    async def _websocket_opened(self, connection_id: int) -> None:
        await self._drive(self._session.websocket_opened(connection_id))

    async def _websocket_message(self, connection_id: int, message: str | bytes) -> None:
        session = self._session
        try:
            if isinstance(message, str):
                actions = session.receive_text(connection_id, message)
            else:
                actions = session.receive_binary(connection_id, message)
        except UnknownOpcode as exc:
            self._log.debug("skipped: %s", exc)
            return
        except ProtocolError as exc:
            self._log.warning("malformed voice gateway message: %s", exc)
            actions = session.malformed(connection_id, str(exc))
        await self._drive(actions)

    async def _websocket_closed(self, connection_id: int, code: int | None) -> None:
        self._log.info("voice websocket #%d closed (code %s)", connection_id, code)
        await self._drive(self._session.websocket_closed(connection_id, code))

    async def _websocket_failed(self, connection_id: int, detail: str, *, fatal: bool) -> None:
        self._log.warning("voice websocket #%d failed to open: %s", connection_id, detail)
        await self._drive(self._session.websocket_failed(connection_id, detail, fatal=fatal))

    async def _udp_discovered(self, connection_id: int, address: DiscoveredAddress) -> None:
        await self._drive(self._session.ip_discovered(connection_id, address))

    async def _udp_failed(self, connection_id: int, detail: str) -> None:
        await self._drive(self._session.udp_failed(connection_id, detail))


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
