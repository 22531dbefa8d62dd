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

Everything a receiver has to survive from a real user can be produced on purpose: RTP padding
and header extensions (``padding``, ``extension_words``), timestamp jumps
(``jump_timestamp``), a new SSRC after a reconnect (``reconnect``), audio before or without
Speaking (``speak_opus(announce_after=...)``, ``announce=False``) and a leave mid-word (a
speaking task just stops). Per-packet histories (``sent``, ``heard``, ``heard_stats`` gaps)
are bounded by ``history`` so that a long run with many members stays within a fixed memory.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import trio

from .._core.rtp import TIMESTAMP_MODULUS, next_sequence, next_timestamp
from .._core.speaking import OPUS_SILENCE_FRAME, SILENCE_FRAMES_AFTER_AUDIO, SpeakingFlags
from .._core.voice.frames import ServerBinaryMessage
from .._core.voice.opcodes import VoiceOpcode
from .._core.voice.payloads import ServerMessage
from .._errors import UsageError
from ._recording import ReceivedPacket, Recording
from ._stats import StreamStats, keep_newest

if TYPE_CHECKING:
    from ._dave.members import SimDaveMember
    from ._media import MediaEndpoint, MediaServer

__all__ = [
    "DEFAULT_HISTORY",
    "FRAME_SECONDS",
    "FrameTransform",
    "SentFrame",
    "SimMember",
    "encode_pcm",
    "extension_body",
]

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
#: Packets a member keeps in ``sent`` and per sender in ``heard`` (one minute of 20 ms frames);
#: ``heard`` and the gaps of ``heard_stats`` may briefly hold up to twice as many.
DEFAULT_HISTORY = 3000
_MAX_PADDING = 255
_MAX_EXTENSION_WORDS = 0xFFFF
# RFC 8285 one-byte-header element IDs run 1-14 (15 stops a parser, 0 is padding).
_EXTENSION_IDS = 14

#: A DAVE hook: ``(user_id, frame) -> frame``. For the encryptor, ``user_id`` is the member's own.
FrameTransform = Callable[[int, bytes], bytes]


class _Host(Protocol):
    """What a member needs from the voice server that placed it in a channel."""

    @property
    def media(self) -> MediaServer: ...

    def member_speaking(self, member: SimMember, flags: int) -> None: ...

    def member_left(self, member: SimMember) -> None: ...

    def member_reconnect(self, member: SimMember, *, present: bool) -> None: ...

    def changed(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SentFrame:
    """One frame a member sent, as every bot in its channel received it.

    ``opus`` is the frame as spoken, before DAVE: what a receiver must get back, bit for bit,
    after transport decryption, padding and extension stripping, and DAVE. ``payload`` is what
    the transport encrypted (after the DAVE hook, before padding). It reads like a
    :class:`ReceivedPacket` (``sequence``, ``timestamp``, ``payload``, ``arrival_ns``), so code
    written for the older ``sent`` records keeps working.
    """

    sequence: int
    timestamp: int
    payload: bytes = field(repr=False)
    sent_ns: int
    ssrc: int
    opus: bytes = field(repr=False)
    padding: int = 0
    extension_body: bytes = field(default=b"", repr=False)

    @property
    def arrival_ns(self) -> int:
        """``sent_ns`` under :class:`ReceivedPacket`'s name."""
        return self.sent_ns


def extension_body(words: int, sequence: int = 0) -> bytes:
    """A valid RFC 8285 one-byte-header extension body of ``words`` 32-bit words.

    Each word is one element (IDs cycling 1-14, three data bytes each, none of them zero), so a
    receiver that forgets to skip the body finds recognisable garbage in front of its Opus
    frame instead of harmless zero padding.
    """
    body = bytearray()
    for index in range(words):
        ident = 1 + index % _EXTENSION_IDS
        body += bytes(
            ((ident << 4) | 2, 0x80 | (sequence >> 8) & 0x7F, 1 + sequence % 255, 1 + index % 255)
        )
    return bytes(body)


def encode_pcm(pcm: bytes, *, bitrate: int = 64_000) -> list[bytes]:
    """48 kHz stereo s16le PCM (zero-padded to whole 20 ms frames) as Opus frames.

    The encoder's music setting (``Application.AUDIO``) decodes a tone back closely enough
    (correlation above 0.99, at the encoder's 312-sample lookahead) for a test to compare the
    signal a receiver decoded with the one spoken; voice (SILK) coding would not.
    """
    from .._audio.opus import OpusEncoder

    if len(pcm) % _PCM_FRAME:
        pcm = pcm + bytes(_PCM_FRAME - len(pcm) % _PCM_FRAME)
    with OpusEncoder(bitrate=bitrate) as encoder:
        return [
            encoder.encode(pcm[offset : offset + _PCM_FRAME])
            for offset in range(0, len(pcm), _PCM_FRAME)
        ]


def _check_range(name: str, value: object, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise UsageError(f"{name} must be an int in 0..{maximum}, got {value!r}")
    return value


def _check_history(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"history must be None or an int >= 0, got {value!r}")
    return value


class SimMember:
    """A simulated user in a voice channel; create it with ``VoiceServer.add_member``."""

    def __init__(
        self,
        host: _Host,
        guild_id: int,
        channel_id: int,
        user_id: int,
        ssrc: int,
        *,
        history: int | None = DEFAULT_HISTORY,
    ) -> None:
        self._host = host
        self.guild_id = guild_id
        self.channel_id = channel_id
        self._user_id = user_id
        self.ssrc = ssrc
        self._history = _check_history(history)
        #: Voice gateway messages this member was sent (Speaking, Clients Connect...), in order.
        self.events: list[ServerMessage] = []
        #: What it heard, by the sender's user id, after DAVE decryption (the newest
        #: ``history`` packets per sender at least; see :func:`keep_newest`).
        self.heard: dict[int, Recording] = {}
        #: Statistics of what it heard, by the sender's SSRC (gaps bounded like ``heard``).
        self.heard_stats: dict[int, StreamStats] = {}
        #: The newest ``history`` frames it sent (all of them with ``history=None``).
        self.sent: deque[SentFrame] = deque(maxlen=self._history)
        #: Every frame it ever sent, however short ``sent`` is kept.
        self.frames_sent = 0
        self._padding = 0
        self._extension_words = 0
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

    # -- knobs -----------------------------------------------------------------------------------

    @property
    def history(self) -> int | None:
        """How many packets the per-packet records keep (None: all); see ``DEFAULT_HISTORY``.

        A benchmark with many members for minutes sets it low (0 keeps nothing); a test that
        compares a long recording sets None. Setting it re-creates ``sent``.
        """
        return self._history

    @history.setter
    def history(self, value: int | None) -> None:
        self._history = _check_history(value)
        self.sent = deque(self.sent, maxlen=self._history)
        for recording in self.heard.values():
            keep_newest(recording.packets, self._history)
        for stats in self.heard_stats.values():
            stats.max_gaps = self._history
            keep_newest(stats.gaps_ns, self._history)

    @property
    def padding(self) -> int:
        """RTP padding (0-255 bytes, P bit) on every packet bots get from this member.

        Discord's clients pad; a receiver that forgets to strip it moves DAVE's trailing marker
        and loses the frame. 0 (the default) sends no padding and leaves the P bit clear.
        """
        return self._padding

    @padding.setter
    def padding(self, value: int) -> None:
        self._padding = _check_range("padding", value, _MAX_PADDING)

    @property
    def extension_words(self) -> int:
        """Words (32-bit) of one-byte-header RTP extension (profile 0xBEDE) on every packet.

        In the rtpsize modes the body is encrypted with the frame, so a receiver must skip it
        after decrypting. 0 (the default) sends no extension and leaves the X bit clear.
        """
        return self._extension_words

    @extension_words.setter
    def extension_words(self, value: int) -> None:
        self._extension_words = _check_range("extension_words", value, _MAX_EXTENSION_WORDS)

    @property
    def next_sequence(self) -> int:
        """The RTP sequence number the next frame will carry."""
        return self._sequence

    @property
    def next_timestamp(self) -> int:
        """The RTP timestamp the next frame will carry."""
        return self._timestamp

    def jump_timestamp(self, delta: int) -> int:
        """Move the next frame's RTP timestamp by ``delta`` samples (either way, mod 2**32).

        The sequence number carries on as usual, as it does when a real client's clock resyncs
        or it resumes after a pause: a receiver keyed on timestamps must resynchronise rather
        than wait for a timestamp that never comes. Returns the timestamp the next frame gets.
        """
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise UsageError(f"a timestamp jump is an int number of samples, got {delta!r}")
        self._timestamp = (self._timestamp + delta) % TIMESTAMP_MODULUS
        return self._timestamp

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
        keep_newest(recording.packets, self._history)
        stats = self.heard_stats.get(source.ssrc)
        if stats is None:
            stats = self.heard_stats[source.ssrc] = StreamStats(
                source.ssrc, self._host.media.clock, max_gaps=self._history
            )
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

    def send_opus(
        self, frame: bytes, *, padding: int | None = None, extension_words: int | None = None
    ) -> SentFrame:
        """Send one 20 ms Opus frame now, with the next sequence number and timestamp.

        ``padding`` and ``extension_words`` override the member's settings for this packet.
        """
        self._check_present()
        if not frame:
            raise UsageError("an Opus frame cannot be empty")
        pad = self._padding if padding is None else _check_range("padding", padding, _MAX_PADDING)
        words = (
            self._extension_words
            if extension_words is None
            else _check_range("extension_words", extension_words, _MAX_EXTENSION_WORDS)
        )
        opus = bytes(frame)
        payload = opus
        if self.frame_encryptor is not None and payload != OPUS_SILENCE_FRAME:
            payload = self.frame_encryptor(self._user_id, payload)
        body = extension_body(words, self._sequence) if words else b""
        now = self._host.media.now_ns()
        record = SentFrame(
            self._sequence, self._timestamp, payload, now, self.ssrc, opus, pad, body
        )
        packet = ReceivedPacket(self._sequence, self._timestamp, payload, now)
        self._sequence = next_sequence(self._sequence)
        self._timestamp = next_timestamp(self._timestamp)
        self.sent.append(record)
        self.frames_sent += 1
        assert self.endpoint is not None
        self._host.media.relay(self.endpoint, packet, padding=pad, extension_body=body)
        self._host.changed()
        return record

    async def speak_opus(
        self,
        frames: Iterable[bytes],
        *,
        silence_tail: bool = True,
        announce: bool = True,
        announce_after: int = 0,
    ) -> None:
        """Send frames on an absolute 20 ms schedule, as a well-behaved client does.

        The schedule is absolute (``sleep_until``), so a slow iteration shortens the next wait
        instead of drifting; it runs on trio's clock, so ``MockClock`` tests finish instantly.
        Ends with five silence frames and a Speaking of 0, like Discord's clients.

        Speaking (op 5) goes out before the first frame, or with ``announce_after=K`` between
        frames K-1 and K: Discord sometimes forwards a user's first packets before it tells bots
        whose SSRC they are. ``announce=False`` never sends it.

        A member that leaves meanwhile (or had left) stops speaking quietly: a user hanging up
        mid-word is not an error. One that reconnects carries on under its new SSRC.
        """
        if isinstance(announce_after, bool) or not isinstance(announce_after, int):
            raise UsageError(f"announce_after must be an int, got {announce_after!r}")
        if announce_after < 0:
            raise UsageError(f"announce_after cannot be negative, got {announce_after}")
        if self.left:
            return
        announced = False
        start = trio.current_time()
        tail = [OPUS_SILENCE_FRAME] * (SILENCE_FRAMES_AFTER_AUDIO if silence_tail else 0)
        # Lazily: ``frames`` may be endless (``itertools.cycle``), a member talking until
        # cancelled.
        for index, frame in enumerate(itertools.chain(frames, tail)):
            if announce and not announced and index >= announce_after:
                # Before the wait, so the websocket can deliver it ahead of the frame.
                self.set_speaking(SpeakingFlags.MICROPHONE)
                announced = True
            await trio.sleep_until(start + index * FRAME_SECONDS)
            if self.left:
                return
            self.send_opus(frame)
        if announced and not self.left:
            self.set_speaking(0)

    async def speak_pcm(
        self,
        pcm: bytes,
        *,
        bitrate: int = 64_000,
        silence_tail: bool = True,
        announce: bool = True,
        announce_after: int = 0,
    ) -> None:
        """Encode 48 kHz stereo s16le PCM (zero-padded to whole frames) and speak it.

        The exact frames are in ``sent`` (``frame.opus``) afterwards, for bit-exact checks.
        """
        await self.speak_opus(
            encode_pcm(pcm, bitrate=bitrate),
            silence_tail=silence_tail,
            announce=announce,
            announce_after=announce_after,
        )

    async def speak_tone(
        self,
        seconds: float = 1.0,
        *,
        hz: float = 440.0,
        amplitude: float = 0.3,
        bitrate: int = 64_000,
        silence_tail: bool = True,
        announce: bool = True,
        announce_after: int = 0,
    ) -> bytes:
        """Speak a known sine (``signals.sine_pcm``); returns its PCM, to compare against.

        The PCM is made and encoded before the first frame leaves, so a test can start this in a
        nursery and still know what was said.
        """
        from .._audio.signals import sine_pcm

        pcm = sine_pcm(seconds, hz=hz, amplitude=amplitude)
        await self.speak_pcm(
            pcm,
            bitrate=bitrate,
            silence_tail=silence_tail,
            announce=announce,
            announce_after=announce_after,
        )
        return pcm

    # -- leaving ---------------------------------------------------------------------------------

    def leave(self) -> None:
        """Leave the channel: bots get Client Disconnect, and the SSRC is freed.

        A ``speak_*`` task running for this member ends quietly at its next frame.
        """
        if self.left:
            return
        self.left = True
        self._host.member_left(self)

    def reconnect(self, *, announce: bool = True) -> int:
        """Drop and re-establish the voice connection, as a Discord client's reconnect does.

        Bots see Client Disconnect (op 13), then Clients Connect (op 11); the member comes back
        under a new SSRC, with new random RTP starting points (a new sender), and, in a DAVE
        call, a new MLS client: the group removes the old leaf and adds the new one. A member
        that was speaking announces the new SSRC at once (op 5), as a client does before its
        next packet, unless ``announce`` is False (its audio then arrives before any op 5);
        otherwise op 5 comes when it next speaks. A member that had left just rejoins (no
        op 13). A ``speak_*`` task carries on under the new SSRC. Returns the new SSRC.
        """
        flags = 0 if self.left else self.speaking
        self._host.member_reconnect(self, present=not self.left)
        self.left = False
        self.speaking = 0
        self._sequence = secrets.randbelow(1 << 16)
        self._timestamp = secrets.randbelow(1 << 32)
        if flags and announce:
            self.set_speaking(flags)
        return self.ssrc

    def _check_present(self) -> None:
        if self.left:
            raise UsageError("this simulated member has left the channel")
