"""A raw DAVE bot for the simulator's DAVE tests: the core codecs plus :class:`DaveClient`.

The library's own voice connection is not wired to DAVE yet, so these tests drive the simulator
with the smallest client that speaks the protocol for real: it feeds every server message to a
:class:`DaveClient`, sends back whatever that asks for, and encrypts Opus with it before the
transport does. It calls ``server.changed()`` after each message, so a test waits on
``server.wait_for`` for bot and simulator state alike, never on a sleep. No test lives here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio
import trio_websocket

from discore_voice._audio.opus import OpusEncoder
from discore_voice._audio.signals import channel, find_alignment, sine_pcm
from discore_voice._core.transport import create_cipher
from discore_voice._core.voice.dave import DaveClient, DaveRecovering, DaveStateChanged
from discore_voice._core.voice.frames import (
    ClientBinaryMessage,
    decode_server_binary,
    decode_server_text,
    encode_client_binary,
)
from discore_voice._core.voice.payloads import (
    ClientSpeaking,
    Ready,
    Resume,
    Resumed,
    SelectProtocol,
    SessionDescription,
)
from discore_voice._errors import DaveError, ProtocolError
from discore_voice.testing import SimMember, VoiceServer
from discore_voice.testing._voice.gateway import VoiceCredentials

from .voice_client import (
    WAIT,
    Handshake,
    RawVoice,
    connect_voice,
    identify,
    open_udp,
)

PCM_FRAME = 3840


def tone_frames(seconds: float = 0.6) -> tuple[bytes, list[bytes]]:
    """A 440 Hz tone and its Opus frames."""
    pcm = sine_pcm(seconds, hz=440.0)
    with OpusEncoder(bitrate=64_000) as encoder:
        frames = [encoder.encode(pcm[i : i + PCM_FRAME]) for i in range(0, len(pcm), PCM_FRAME)]
    return pcm, frames


def matches(reference_pcm: bytes, heard_pcm: bytes) -> float:
    """How well what a member heard matches the tone, past the encoder's ramp-in."""
    skip = 960 * 5
    reference, heard = channel(reference_pcm)[skip:], channel(heard_pcm)[skip:]
    return find_alignment(reference, heard, max_lag=1000).correlation


class DaveBot:
    """A bot's voice session with DAVE: reads in the background, answers DAVE at once."""

    def __init__(
        self, server: VoiceServer, voice: RawVoice, hs: Handshake, dave: DaveClient
    ) -> None:
        self.server = server
        self.voice = voice
        self.hs = hs
        self.dave = dave
        self.changes: list[DaveStateChanged] = []
        self.recoveries: list[DaveRecovering] = []
        self.errors: list[str] = []
        self.close_code: int | None = None
        self.closed = False
        self._seq = 100
        self._ts = 1000
        self.sent_frames: list[bytes] = []

    @property
    def user_id(self) -> int:
        return self.dave.user_id

    async def handle(self, message: object) -> None:
        try:
            outputs = self.dave.handle(message)  # type: ignore[arg-type]
        except (ProtocolError, DaveError) as exc:
            self.errors.append(str(exc))
            return
        for output in outputs:
            if isinstance(output, DaveStateChanged):
                self.changes.append(output)
            elif isinstance(output, DaveRecovering):
                self.recoveries.append(output)
            elif isinstance(output, ClientBinaryMessage):
                await self.voice.ws.send_message(encode_client_binary(output))
            else:
                await self.voice.send(output)

    async def pump(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                frame = await self.voice.ws.get_message()
                item: tuple[int | None, object]
                if isinstance(frame, bytes):
                    item = decode_server_binary(frame, self.voice.tracker)
                else:
                    item = decode_server_text(frame, self.voice.tracker)
                self.voice.received.append(item)
                await self.handle(item[1])
                self.server.changed()
        except trio_websocket.ConnectionClosed as exc:
            self.close_code = exc.reason.code if exc.reason else None
            self.closed = True
            self.server.changed()

    async def send_opus(self, frames: list[bytes]) -> None:
        """DAVE-encrypt (when the group can), transport-encrypt and send, back to back."""
        for frame in frames:
            payload = self.dave.encrypt_opus(frame)
            self.sent_frames.append(payload)
            datagram = self.hs.cipher.encrypt_opus(self._seq, self._ts, self.hs.ready.ssrc, payload)
            await self.hs.udp.send(datagram)
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + 960) & 0xFFFFFFFF


@asynccontextmanager
async def dave_bot(
    server: VoiceServer,
    credentials: VoiceCredentials,
    *,
    url: str | None = None,
    offer: int = 1,
) -> AsyncIterator[DaveBot]:
    """A bot through the handshake with ``max_dave_protocol_version=offer``, pumping DAVE."""
    async with connect_voice(url or server.endpoint_url) as voice:
        await voice.expect_hello()
        await voice.send(identify(credentials, dave=offer))
        _, ready = await voice.expect(Ready)
        async with open_udp(ready.ip, ready.port) as udp:
            address, port = await udp.discover(ready.ssrc)
            await voice.send(
                SelectProtocol(address=address, port=port, mode="aead_aes256_gcm_rtpsize")
            )
            _, description = await voice.expect(SessionDescription)
            cipher = create_cipher(description.mode, description.secret_key)
            bot = DaveBot(
                server,
                voice,
                Handshake(ready, description, cipher, udp),
                DaveClient(credentials.user_id, credentials.channel_id),
            )
            # Clients Connect may precede Session Description: replay what expect() skipped.
            for _, message in list(voice.received):
                await bot.handle(message)
            await voice.send(ClientSpeaking(speaking=1, delay=0, ssrc=ready.ssrc))
            async with trio.open_nursery() as nursery:
                await nursery.start(bot.pump)
                try:
                    yield bot
                finally:
                    nursery.cancel_scope.cancel()


@asynccontextmanager
async def resumed(bot: DaveBot, credentials: VoiceCredentials) -> AsyncIterator[None]:
    """Resume the bot's session on a new websocket, keeping its seq tracker and DAVE state."""
    async with connect_voice(bot.server.endpoint_url) as voice:
        voice.tracker = bot.voice.tracker
        await voice.expect_hello()
        await voice.send(
            Resume(
                server_id=credentials.guild_id,
                session_id=credentials.session_id,
                token=credentials.token,
                seq_ack=voice.tracker.seq_ack,
            )
        )
        bot.voice, bot.closed, bot.close_code = voice, False, None
        # What the server re-delivers comes before Resumed: DAVE handles it as it arrives.
        while True:
            _, message = await voice.recv()
            if isinstance(message, Resumed):
                break
            await bot.handle(message)
        async with trio.open_nursery() as nursery:
            await nursery.start(bot.pump)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()


async def wait(server: VoiceServer, predicate: Callable[[], object]) -> None:
    with trio.fail_after(WAIT):
        await server.wait_for(predicate)


def in_one_group(bot: DaveBot, members: list[SimMember]) -> bool:
    """Everyone can encrypt, at one epoch, with one privacy code."""
    code = bot.dave.voice_privacy_code
    return (
        bot.dave.can_encrypt
        and code is not None
        and all(
            m.epoch == bot.dave.epoch and m.voice_privacy_code == code and m.dave is not None
            for m in members
        )
    )


def heard_all(members: list[SimMember], count: int) -> Callable[[], bool]:
    return lambda: all(m.frames_heard >= count for m in members)


__all__ = [
    "PCM_FRAME",
    "DaveBot",
    "dave_bot",
    "heard_all",
    "in_one_group",
    "matches",
    "resumed",
    "tone_frames",
    "wait",
]
