"""The session task: the one reader of a connection's messages and the only caller of its core.

Every other task of the connection (the websocket reader, the UDP task, the timers, the gateway
listener, the send task) and every user call sends a typed message (``messages.py``) into one
memory channel; this task handles them one at a time, in order: it hands each to the voice core
with the time, and carries out what comes back. It pushes state to the tasks that need it (the
sender gets an immutable link to send through, the UDP task its keys, the timers their
deadlines) instead of being polled through callbacks, and publishes a snapshot of the
connection's state for the user's side to read.

It decides nothing about Discord: that is the core's job (``_core/voice/protocol.py``).
"""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio

from ..._core.snowflake import Snowflake
from ..._core.voice.commands import (
    CloseWebSocket,
    Log,
    MediaChanged,
    OpenWebSocket,
    SendBinary,
    SendText,
    SendVoiceStateUpdate,
    SetTimer,
    StartUdp,
)
from ..._core.voice.events import Connected, Invalidated, InvalidationReason, VoiceEvent
from ..._core.voice.protocol import Output, VoiceProtocol
from ..._errors import NativeLibraryMissing
from ..hub import Hub
from .gateway_writer import GatewayWriter
from .messages import (
    AudioReady,
    Connect,
    DaveFailing,
    Disconnect,
    Dispatch,
    GatewayGone,
    MediaFlowing,
    Message,
    SetSpeaking,
    TaskFailed,
    TimerFired,
    UdpDiscovered,
    UdpFailed,
    UdpSilent,
    UpdateVoiceState,
    WebSocketClosed,
    WebSocketFailed,
    WebSocketFrame,
    WebSocketOpened,
    report,
)
from .receive.tap import ReceiveTap
from .sending.sender import VoiceSender
from .sending.stepper import SendLink
from .timers import Timers
from .udp import UdpStats, VoiceUdp
from .websocket import VoiceWebSocket

__all__ = ["INBOX_SIZE", "ConnectionState", "SessionTask"]

#: Messages that may wait for the session task. Bounded, so a flooding server is slowed down by
#: TCP back-pressure on its websocket instead of filling memory.
INBOX_SIZE: Final = 64
#: Seconds to open the voice websocket (TCP, TLS and the HTTP upgrade) before it counts as failed.
WEBSOCKET_CONNECT_TIMEOUT: Final = 10.0

Log_ = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """What the user's side reads about a connection, replaced whole after every change."""

    valid: bool
    connected: bool
    connecting: bool
    channel_id: Snowflake | None
    ssrc: int | None
    mode: str | None
    self_mute: bool
    self_deaf: bool
    speaking: int
    gateway_up: bool
    invalidation: Invalidated | None
    dave_protocol_version: int
    dave_epoch: int | None
    voice_privacy_code: str | None


class SessionTask:
    """See the module docstring. Run :meth:`run` in the connection's nursery."""

    def __init__(
        self,
        protocol: VoiceProtocol,
        *,
        inbox: trio.MemorySendChannel[Message],
        messages: trio.MemoryReceiveChannel[Message],
        writer: GatewayWriter,
        sender: VoiceSender,
        timers: Timers,
        events: Hub[VoiceEvent],
        log: Log_,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.protocol = protocol
        self._inbox = inbox
        self._messages = messages
        self._writer = writer
        self._sender = sender
        self._timers = timers
        self._events = events
        self._log = log
        self._ssl_context = ssl_context
        self._nursery: trio.Nursery | None = None
        self._websocket: VoiceWebSocket | None = None
        self._closing: list[VoiceWebSocket] = []
        self._udp: VoiceUdp | None = None
        self._udp_scope: trio.CancelScope | None = None
        self._udp_totals: Counter[str] = Counter()
        self._media: MediaChanged = MediaChanged(None, False)
        self._request_done: trio.Event | None = None
        self._gateway_gone = False
        self.leave_due = False
        """After :class:`Leave`: whether the op 4 leave is still to be sent."""
        self.state = self._snapshot()
        self.changed = trio.Event()
        """Set (and replaced) whenever :attr:`state` changes."""
        self.receive_tap = ReceiveTap()
        """Where the UDP sockets and the receiver meet (``receive/tap.py``)."""

    # --- what the user's side reads ---------------------------------------------------------

    @property
    def udp_stats(self) -> UdpStats:
        totals = Counter(self._udp_totals)
        udp = self._udp
        if udp is not None:
            totals.update(_udp_counters(udp))
        dropped = {key[8:]: value for key, value in totals.items() if key.startswith("dropped:")}
        pipeline = self.protocol.receive
        for key, value in pipeline.dropped.items():
            stage, _, reason = key.partition(".")
            if stage in ("transport", "replay"):
                dropped[reason] = dropped.get(reason, 0) + value
        return UdpStats(
            received=pipeline.received,
            dropped=dropped,
            keepalives_sent=totals["keepalives_sent"],
            keepalives_answered=totals["keepalives_answered"],
            restarts=self.protocol.websocket_stats.udp_restarts,
        )

    async def wait_closed(self) -> None:
        """Until the websockets closed their close handshakes (bounded by the caller)."""
        for websocket in [*self._closing, *([self._websocket] if self._websocket else [])]:
            await websocket.done.wait()

    # --- the task ---------------------------------------------------------------------------

    async def run(self, nursery: trio.Nursery) -> None:
        """Handle messages until cancelled (the connection's nursery ends)."""
        self._nursery = nursery
        async with self._messages:
            async for message in self._messages:
                await self._handle(message)

    async def _handle(self, message: Message) -> None:
        now = trio.current_time()
        done = getattr(message, "done", None)
        self._request_done = done if isinstance(done, trio.Event) else None
        try:
            await self._carry_out(self._dispatch(message, now))
        except Exception as exc:
            # A bug of ours: end this connection with it (never the user's nursery).
            self._log.exception("internal error in the voice session task")
            detail = f"internal error: {type(exc).__name__}"
            try:
                await self._carry_out(self.protocol.fail(InvalidationReason.ERROR, detail, now))
            except Exception:
                self._log.exception("could not end the voice connection cleanly")
                self._stop_everything()
        finally:
            if self._request_done is not None:
                # Carried out (an op 4 among the outputs sets it once sent instead).
                self._request_done.set()
                self._request_done = None
            self._publish_state()

    def _dispatch(self, message: Message, now: float) -> list[Output]:
        protocol = self.protocol
        if isinstance(message, WebSocketFrame):
            return protocol.websocket_frame(message.generation, message.frame, now)
        if isinstance(message, TimerFired):
            return protocol.timer_expired(message.kind, now)
        if isinstance(message, Dispatch):
            return protocol.gateway_dispatch(message.name, message.data, now)
        if isinstance(message, WebSocketOpened):
            return protocol.websocket_opened(message.generation, now)
        if isinstance(message, WebSocketClosed):
            self._log.info("voice websocket #%d closed (code %s)", message.generation, message.code)
            return protocol.websocket_closed(message.generation, message.code, now)
        if isinstance(message, WebSocketFailed):
            self._log.warning(
                "voice websocket #%d failed to open: %s", message.generation, message.detail
            )
            return protocol.websocket_failed(
                message.generation, message.detail, fatal=message.fatal, now=now
            )
        if isinstance(message, UdpDiscovered):
            return protocol.udp_discovered(message.generation, message.address, now)
        if isinstance(message, UdpFailed):
            return protocol.udp_failed(message.generation, message.detail, now)
        if isinstance(message, UdpSilent):
            return protocol.udp_silent(message.generation, now)
        if isinstance(message, MediaFlowing):
            return protocol.media_received(message.generation, now)
        if isinstance(message, DaveFailing):
            return protocol.dave_failing(now)
        if isinstance(message, AudioReady):
            return protocol.audio_ready(now)
        if isinstance(message, TaskFailed):
            return protocol.fail(message.reason, message.detail, now)
        if isinstance(message, GatewayGone):
            self._gateway_gone = True
            return protocol.gateway_closed(now)
        if isinstance(message, Connect):
            self._log.info("connecting to channel %d", message.channel_id)
            return protocol.connect(
                message.channel_id,
                self_mute=message.self_mute,
                self_deaf=message.self_deaf,
                now=now,
                sent_marker=message.sent_marker,
            )
        if isinstance(message, UpdateVoiceState):
            return protocol.update_voice_state(
                message.channel_id,
                self_mute=message.self_mute,
                self_deaf=message.self_deaf,
                now=now,
            )
        if isinstance(message, Disconnect):
            return protocol.disconnect(now)
        if isinstance(message, SetSpeaking):
            return protocol.set_speaking(message.flags, now)
        if message.gateway_closed:
            self._gateway_gone = True
        return self._leave(now)

    def _leave(self, now: float) -> list[Output]:
        """The user's block is ending: close the websocket and invalidate NORMAL. The op 4
        leave waits for the websocket's close (see ``VoiceConnection._leave``): it is due also
        after a failure that may have left us in the channel, unless the gateway is gone."""
        protocol = self.protocol
        outputs = protocol.gateway_closed(now) if self._gateway_gone else []
        outputs += protocol.disconnect(now)
        invalidation = protocol.session.invalidation
        self.leave_due = (
            self._writer.joined
            and invalidation is not None
            and invalidation.reason is not InvalidationReason.GATEWAY_CLOSED
        )
        return [o for o in outputs if not isinstance(o, SendVoiceStateUpdate)]

    # --- carrying out -------------------------------------------------------------------------

    async def _carry_out(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, SendText | SendBinary):
                websocket = self._websocket
                if websocket is not None and websocket.generation == output.generation:
                    await websocket.send(
                        output.text if isinstance(output, SendText) else output.data
                    )
            elif isinstance(output, SetTimer):
                self._timers.set(output.kind, output.at)
            elif isinstance(output, MediaChanged):
                self._media = output
                self._push_media()
            elif isinstance(output, Log):
                self._log.log(output.level, "%s", output.message)
            elif isinstance(output, SendVoiceStateUpdate):
                done, self._request_done = self._request_done, None
                self._writer.request(
                    output.channel_id,
                    self_mute=output.self_mute,
                    self_deaf=output.self_deaf,
                    done=done,
                )
            elif isinstance(output, OpenWebSocket):
                self._open_websocket(output)
            elif isinstance(output, CloseWebSocket):
                websocket = self._websocket
                if websocket is not None and websocket.generation == output.generation:
                    self._close_websocket(output.code)
            elif isinstance(output, StartUdp):
                self._start_udp(output)
            elif isinstance(output, Invalidated):
                level = (
                    logging.INFO if output.reason is InvalidationReason.NORMAL else logging.WARNING
                )
                self._log.log(level, "invalidated (%s): %s", output.reason.name, output.detail)
                self._events.publish(output)
                self._stop_everything()
            else:
                if isinstance(output, Connected):
                    self._log.info(
                        "connected to channel %d (ssrc %d, %s)",
                        output.channel_id,
                        output.ssrc,
                        output.mode,
                    )
                self._events.publish(output)

    def _push_media(self) -> None:
        """The keys to the UDP task; a link (or None) to the sender."""
        media, sending = self._media.media, self._media.sending
        udp = self._udp
        if udp is not None:
            udp.set_media(media)
        link = None
        if (
            sending
            and media is not None
            and udp is not None
            and udp.generation == media.udp_generation
            and udp.sock is not None
        ):
            link = SendLink(udp.sock, media.cipher, media.crypto, media.ssrc)
        self._sender.set_link(link)

    def _open_websocket(self, command: OpenWebSocket) -> None:
        if self._websocket is not None:
            self._close_websocket(4000)
        self._closing = [w for w in self._closing if not w.done.is_set()]
        websocket = VoiceWebSocket(
            command.generation,
            command.url,
            self._inbox,
            self._log,
            ssl_context=self._ssl_context,
            connect_timeout=WEBSOCKET_CONNECT_TIMEOUT,
        )
        self._websocket = websocket
        self._log.debug("opening voice websocket #%d", command.generation)
        # Not cancelled with the connection: it is told to close, so its close handshake runs.
        self._spawn(websocket.run)

    def _close_websocket(self, code: int) -> None:
        websocket = self._websocket
        if websocket is not None:
            websocket.close(code)
            self._closing.append(websocket)
            self._websocket = None

    def _start_udp(self, command: StartUdp) -> None:
        self._stop_udp()
        udp = VoiceUdp(
            command.generation,
            command.ip,
            command.port,
            command.ssrc,
            self._inbox,
            self._log,
            self.receive_tap,
        )
        self._udp = udp
        self._udp_scope = self._spawn(udp.run)
        self._push_media()

    def _stop_udp(self) -> None:
        if self._udp_scope is not None:
            self._udp_scope.cancel()
            self._udp_scope = None
        if self._udp is not None:
            self._udp_totals.update(_udp_counters(self._udp))
            self._udp = None

    def _stop_everything(self) -> None:
        """The connection is invalid: stop sending (the tracks end with the reason), close the
        sockets, end the subscriptions."""
        self._sender.close(self.protocol.session.invalidation)
        self._stop_udp()
        self._close_websocket(1000)
        self._events.close()

    # --- tasks --------------------------------------------------------------------------------

    def _spawn(self, task: Callable[[], Awaitable[None]]) -> trio.CancelScope:
        scope = trio.CancelScope()
        if self._nursery is None:
            scope.cancel()
            return scope
        self._nursery.start_soon(guarded, scope, task, self._inbox, self._log)
        return scope

    # --- state for the user's side ------------------------------------------------------------

    def _snapshot(self) -> ConnectionState:
        protocol = self.protocol
        session = protocol.session
        dave = protocol.dave
        return ConnectionState(
            valid=session.is_valid,
            connected=session.is_connected,
            connecting=session.is_connecting,
            channel_id=session.channel_id,
            ssrc=session.ssrc,
            mode=session.encryption_mode,
            self_mute=session.self_mute,
            self_deaf=session.self_deaf,
            speaking=protocol.speaking,
            gateway_up=session.gateway_up,
            invalidation=session.invalidation,
            dave_protocol_version=0 if dave is None else dave.protocol_version,
            dave_epoch=None if dave is None else dave.epoch,
            voice_privacy_code=None if dave is None else dave.voice_privacy_code,
        )

    def _publish_state(self) -> None:
        state = self._snapshot()
        if state != self.state:
            self.state = state
            self.changed.set()
            self.changed = trio.Event()
            self.receive_tap.wake()


async def guarded(
    scope: trio.CancelScope,
    task: Callable[[], Awaitable[None]],
    inbox: trio.MemorySendChannel[Message],
    log: Log_,
) -> None:
    """Run one task of the connection; its failure ends the connection, never the nursery."""
    try:
        with scope:
            await task()
    except NativeLibraryMissing as exc:
        # Discore's DllNotFound: the machine lacks libopus, and the message says how to fix it.
        await report(inbox, TaskFailed(InvalidationReason.NATIVE_LIBRARY_MISSING, str(exc)))
    except Exception as exc:
        log.exception("internal error in a voice connection task")
        detail = f"internal error: {type(exc).__name__}"
        await report(inbox, TaskFailed(InvalidationReason.ERROR, detail))


def _udp_counters(udp: VoiceUdp) -> Counter[str]:
    counters: Counter[str] = Counter(
        keepalives_sent=udp.keepalives_sent,
        keepalives_answered=udp.keepalives_answered,
    )
    for reason, count in udp.dropped.items():
        counters[f"dropped:{reason}"] = count
    return counters
