"""Simulated members: users in a voice channel who speak to the bot and listen to it.

A member lives in the simulator's process, not on the network: it has an SSRC and a place in a
channel like any client, but hands its Opus frames straight to the media server, which encrypts
them with each bot's own key and counter. A bot therefore receives a member's audio exactly as it
would receive a Discord user's, while a test keeps full control of what is said and when.

DAVE plugs in through hooks, so the media path stays the same with or without it:
``frame_encryptor`` wraps each Opus frame before the transport encrypts it, and
``frame_decryptor`` unwraps what the member hears. In a DAVE call the gateway's DAVE layer gives
the member its own MLS client (``dave``, see ``_dave_members``) and sets both hooks to it. The
silence frame bypasses both, as DAVE specifies.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import trio

from .._core.rtp import next_sequence, next_timestamp
from .._core.speaking import OPUS_SILENCE_FRAME, SILENCE_FRAMES_AFTER_AUDIO, SpeakingFlags
from .._core.voice.frames import ServerBinaryMessage
from .._core.voice.opcodes import VoiceOpcode
from .._core.voice.payloads import ServerMessage
from .._errors import UsageError
from ._recording import ReceivedPacket, Recording
from ._stats import StreamStats

if TYPE_CHECKING:
    from ._dave.members import SimDaveMember
    from ._media import MediaEndpoint, MediaServer

__all__ = ["FRAME_SECONDS", "FrameTransform", "SimMember"]

logger = logging.getLogger("discore_voice.testing.members")

FRAME_SECONDS = 0.02
_DAVE_JSON_OPS = frozenset(
    {
        VoiceOpcode.DAVE_PREPARE_TRANSITION,
        VoiceOpcode.DAVE_EXECUTE_TRANSITION,
        VoiceOpcode.DAVE_PREPARE_EPOCH,
    }
)
_PCM_FRAME = 960 * 2 * 2

#: A DAVE hook: ``(user_id, frame) -> frame``. For the encryptor, ``user_id`` is the member's own.
FrameTransform = Callable[[int, bytes], bytes]


class _Host(Protocol):
    """What a member needs from the voice server that placed it in a channel."""

    @property
    def media(self) -> MediaServer: ...

    def member_speaking(self, member: SimMember, flags: int) -> None: ...

    def member_left(self, member: SimMember) -> None: ...

    def changed(self) -> None: ...


class SimMember:
    """A simulated user in a voice channel; create it with ``VoiceServer.add_member``."""

    def __init__(
        self, host: _Host, guild_id: int, channel_id: int, user_id: int, ssrc: int
    ) -> None:
        self._host = host
        self.guild_id = guild_id
        self.channel_id = channel_id
        self._user_id = user_id
        self.ssrc = ssrc
        #: Voice gateway messages this member was sent (Speaking, Clients Connect...), in order.
        self.events: list[ServerMessage] = []
        #: What it heard, by the sender's user id, after DAVE decryption.
        self.heard: dict[int, Recording] = {}
        #: Statistics of what it heard, by the sender's SSRC.
        self.heard_stats: dict[int, StreamStats] = {}
        #: Frames it sent, as handed to the transport (after the DAVE hook).
        self.sent: list[ReceivedPacket] = []
        self.frame_encryptor: FrameTransform | None = None
        self.frame_decryptor: FrameTransform | None = None
        #: DAVE messages the gateway addressed to this member (binary and JSON), in order.
        self.dave_messages: list[ServerMessage | ServerBinaryMessage] = []
        #: The DAVE layer's handler for them (the member's own MLS client, added later).
        self.dave_handler: Callable[[ServerMessage | ServerBinaryMessage], None] | None = None
        #: The member's own MLS client in a DAVE call, set by the gateway's DAVE layer.
        self.dave: SimDaveMember | None = None
        #: Non-silence frames that reached this member while it listened, opened or not.
        self.frames_heard = 0
        self.listening = True
        self.left = False
        self.speaking = 0
        # Random starting points, as real senders use: receivers must not assume zero.
        self._sequence = secrets.randbelow(1 << 16)
        self._timestamp = secrets.randbelow(1 << 32)
        self.endpoint: MediaEndpoint | None = None

    def __repr__(self) -> str:
        return f"<SimMember user={self._user_id} ssrc={self.ssrc} channel={self.channel_id}>"

    @property
    def user_id(self) -> int:
        return self._user_id

    # -- DAVE, as a test reads it ----------------------------------------------------------------

    @property
    def epoch(self) -> int | None:
        """The member's MLS epoch (``None`` outside DAVE); equal epochs, one group generation."""
        return None if self.dave is None else self.dave.client.epoch

    @property
    def voice_privacy_code(self) -> str | None:
        """The code Discord's clients display; equal codes mean one shared group."""
        return None if self.dave is None else self.dave.client.voice_privacy_code

    @property
    def dave_protocol_version(self) -> int:
        return 0 if self.dave is None else self.dave.client.protocol_version

    @property
    def dave_decrypt_failures(self) -> int:
        """Frames this member could not trust or open: lost audio for a real user."""
        return 0 if self.dave is None else self.dave.client.decrypt_failures

    @property
    def frames_decrypted(self) -> int:
        """Frames that arrived end-to-end encrypted and opened."""
        return 0 if self.dave is None else self.dave.frames_decrypted

    # -- what the server tells it --------------------------------------------------------------

    def notify(self, message: ServerMessage) -> None:
        self.events.append(message)
        if message.OPCODE in _DAVE_JSON_OPS:
            self._dave(message)
        self._host.changed()

    def notify_binary(self, message: ServerBinaryMessage) -> None:
        """A DAVE binary message (ops 25, 27, 29, 30) for this member's MLS client."""
        self._dave(message)
        self._host.changed()

    def _dave(self, message: ServerMessage | ServerBinaryMessage) -> None:
        self.dave_messages.append(message)
        if self.dave_handler is not None:
            self.dave_handler(message)

    def receive_audio(self, source: MediaEndpoint, packet: ReceivedPacket) -> None:
        """The media server's sink: record a frame another participant sent."""
        if not self.listening:
            return
        payload = packet.payload
        if payload != OPUS_SILENCE_FRAME:
            self.frames_heard += 1
        if self.frame_decryptor is not None and payload != OPUS_SILENCE_FRAME:
            try:
                payload = self.frame_decryptor(source.user_id, payload)
            except Exception:
                # A frame the E2EE layer cannot open is lost audio, as for a real client.
                logger.info("a member could not decrypt a frame from user %d", source.user_id)
                return
            packet = ReceivedPacket(packet.sequence, packet.timestamp, payload, packet.arrival_ns)
        recording = self.heard.get(source.user_id)
        if recording is None:
            recording = self.heard[source.user_id] = Recording(source.user_id, source.ssrc)
        recording.add(packet)
        stats = self.heard_stats.get(source.ssrc)
        if stats is None:
            stats = self.heard_stats[source.ssrc] = StreamStats(source.ssrc, self._host.media.clock)
        stats.observe(packet.sequence, packet.timestamp, packet.payload, packet.arrival_ns)

    def heard_pcm(self, user_id: int) -> bytes:
        """What ``user_id`` said to this member, decoded to 48 kHz stereo s16le."""
        recording = self.heard.get(user_id)
        return b"" if recording is None else recording.pcm()

    # -- speaking --------------------------------------------------------------------------------

    def set_speaking(self, flags: int = SpeakingFlags.MICROPHONE) -> None:
        """Announce (or, with 0, end) speaking: bots learn this member's SSRC from it."""
        self._check_present()
        self.speaking = int(flags)
        self._host.member_speaking(self, self.speaking)

    def send_opus(self, frame: bytes) -> ReceivedPacket:
        """Send one 20 ms Opus frame now, with the next sequence number and timestamp."""
        self._check_present()
        if not frame:
            raise UsageError("an Opus frame cannot be empty")
        payload = bytes(frame)
        if self.frame_encryptor is not None and payload != OPUS_SILENCE_FRAME:
            payload = self.frame_encryptor(self._user_id, payload)
        packet = ReceivedPacket(self._sequence, self._timestamp, payload, self._host.media.now_ns())
        self._sequence = next_sequence(self._sequence)
        self._timestamp = next_timestamp(self._timestamp)
        self.sent.append(packet)
        assert self.endpoint is not None
        self._host.media.relay(self.endpoint, packet)
        self._host.changed()
        return packet

    async def speak_opus(
        self, frames: Iterable[bytes], *, silence_tail: bool = True, announce: bool = True
    ) -> None:
        """Send frames on an absolute 20 ms schedule, as a well-behaved client does.

        The schedule is absolute (``sleep_until``), so a slow iteration shortens the next wait
        instead of drifting; it runs on trio's clock, so ``MockClock`` tests finish instantly.
        Ends with five silence frames and a Speaking of 0, like Discord's clients.
        """
        if announce:
            self.set_speaking(SpeakingFlags.MICROPHONE)
        start = trio.current_time()
        tail = [OPUS_SILENCE_FRAME] * (SILENCE_FRAMES_AFTER_AUDIO if silence_tail else 0)
        for index, frame in enumerate([*frames, *tail]):
            await trio.sleep_until(start + index * FRAME_SECONDS)
            self.send_opus(frame)
        if announce:
            self.set_speaking(0)

    async def speak_pcm(self, pcm: bytes, *, bitrate: int = 64_000) -> None:
        """Encode 48 kHz stereo s16le PCM (zero-padded to whole frames) and speak it."""
        from .._audio.opus import OpusEncoder

        if len(pcm) % _PCM_FRAME:
            pcm = pcm + bytes(_PCM_FRAME - len(pcm) % _PCM_FRAME)
        with OpusEncoder(bitrate=bitrate) as encoder:
            frames = [
                encoder.encode(pcm[offset : offset + _PCM_FRAME])
                for offset in range(0, len(pcm), _PCM_FRAME)
            ]
        await self.speak_opus(frames)

    # -- leaving ---------------------------------------------------------------------------------

    def leave(self) -> None:
        """Leave the channel: bots get Client Disconnect, and the SSRC is freed."""
        if self.left:
            return
        self.left = True
        self._host.member_left(self)

    def _check_present(self) -> None:
        if self.left:
            raise UsageError("this simulated member has left the channel")
