"""What a user sent, kept twice: the exact Opus packets, and PCM/WAV/Ogg made from them on demand.

The raw packets (in arrival order, with their RTP numbers) are what byte-identical passthrough
tests compare against; PCM is decoded only when asked for, because most tests never listen and
decoding costs far more than keeping bytes. Files are written by the library's own streaming
writers (:mod:`discore_voice._audio.ogg_writer`), the ones recording bots use, so the simulator
exercises them and an Ogg file holds exactly the packets the bot sent.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from .._audio.ogg import ogg_crc32
from .._audio.ogg import opus_packet_samples as _toc_samples
from .._audio.ogg_writer import DEFAULT_PRE_SKIP, OggOpusPaginator, OggOpusWriter, WavWriter
from .._core.rtp import sequence_distance

__all__ = [
    "DEFAULT_PRE_SKIP",
    "ReceivedPacket",
    "Recording",
    "ogg_crc32",
    "ogg_opus_bytes",
    "opus_packet_samples",
    "pcm_to_wav_bytes",
]

SAMPLE_RATE = 48_000
CHANNELS = 2
SAMPLE_WIDTH = 2
#: A gap longer than this (in packets) is a new talk spurt, not loss: concealing it would only
#: fill the recording with a second of synthetic noise.
_MAX_CONCEALED_FRAMES = 25


@dataclass(frozen=True, slots=True)
class ReceivedPacket:
    """One Opus frame as it arrived, after transport (and, later, DAVE) decryption."""

    sequence: int
    timestamp: int
    payload: bytes = field(repr=False)
    arrival_ns: int = 0


class Recording:
    """Everything one user sent to the simulator, in arrival order."""

    def __init__(self, user_id: int, ssrc: int | None = None) -> None:
        self.user_id = user_id
        self.ssrc = ssrc
        self.packets: list[ReceivedPacket] = []

    def __repr__(self) -> str:
        return f"<Recording user={self.user_id} ssrc={self.ssrc} packets={len(self.packets)}>"

    def add(self, packet: ReceivedPacket) -> None:
        self.packets.append(packet)

    @property
    def opus_packets(self) -> list[bytes]:
        """The Opus payloads exactly as received, duplicates and all."""
        return [packet.payload for packet in self.packets]

    def in_order(self) -> list[ReceivedPacket]:
        """Packets in sequence order without duplicates: what a jitter buffer would play."""
        if not self.packets:
            return []
        base = self.packets[0].sequence
        seen: dict[int, ReceivedPacket] = {}
        extended_base = 0
        last = base
        for packet in self.packets:
            # Extend relative to the previous packet, so a long stream survives the u16 wrap.
            extended_base += sequence_distance(last, packet.sequence)
            last = packet.sequence
            seen.setdefault(extended_base, packet)
        return [seen[key] for key in sorted(seen)]

    def pcm(self) -> bytes:
        """48 kHz stereo s16le, with lost frames concealed (PLC) so timing is preserved."""
        return b"".join(self._pcm_blocks())

    def _pcm_blocks(self) -> Iterator[bytes]:
        """The PCM one packet (or one concealed loss) at a time, so a WAV is written in blocks."""
        from .._audio.opus import OpusDecoder

        with OpusDecoder() as decoder:
            previous: ReceivedPacket | None = None
            for packet in self.in_order():
                if previous is not None:
                    missing = sequence_distance(previous.sequence, packet.sequence) - 1
                    if 0 < missing <= _MAX_CONCEALED_FRAMES:
                        for _ in range(missing):
                            yield decoder.decode(None)
                yield decoder.decode(packet.payload)
                previous = packet

    def wav_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self._write_wav(buffer)
        return buffer.getvalue()

    def write_wav(self, target: str | os.PathLike[str] | BinaryIO) -> None:
        if isinstance(target, str | os.PathLike) or _seekable(target):
            self._write_wav(target)
        else:
            # A pipe cannot have its header patched; the recording is in memory anyway, so
            # build the file first and give the pipe exact sizes.
            target.write(self.wav_bytes())

    def _write_wav(self, target: str | os.PathLike[str] | BinaryIO) -> None:
        with WavWriter(target, channels=CHANNELS, sample_rate=SAMPLE_RATE) as writer:
            for block in self._pcm_blocks():
                writer.write(block)

    def ogg_bytes(self, *, serial: int = 0x5EC0DE, pre_skip: int = DEFAULT_PRE_SKIP) -> bytes:
        buffer = io.BytesIO()
        self._write_ogg(buffer, serial=serial, pre_skip=pre_skip)
        return buffer.getvalue()

    def write_ogg(
        self, target: str | os.PathLike[str] | BinaryIO, *, serial: int = 0x5EC0DE
    ) -> None:
        self._write_ogg(target, serial=serial, pre_skip=DEFAULT_PRE_SKIP)

    def _write_ogg(
        self, target: str | os.PathLike[str] | BinaryIO, *, serial: int, pre_skip: int
    ) -> None:
        with OggOpusWriter(target, serial=serial & 0xFFFF_FFFF, pre_skip=pre_skip) as writer:
            for packet in self.in_order():
                writer.write(packet.payload)


def _seekable(target: BinaryIO) -> bool:
    seekable = getattr(target, "seekable", None)
    return callable(seekable) and bool(seekable())


def pcm_to_wav_bytes(pcm: bytes) -> bytes:
    buffer = io.BytesIO()
    with WavWriter(buffer, channels=CHANNELS, sample_rate=SAMPLE_RATE) as writer:
        writer.write(pcm)
    return buffer.getvalue()


def opus_packet_samples(packet: bytes) -> int:
    """:func:`discore_voice._audio.ogg.opus_packet_samples`, but 0 for an empty packet.

    The TOC parsing lives there; this only keeps the simulator's old answer for an empty
    payload (no TOC, so no duration) instead of that function's ProtocolError.
    """
    return _toc_samples(packet) if packet else 0


def ogg_opus_bytes(
    packets: Iterable[bytes],
    *,
    serial: int = 0x5EC0DE,
    pre_skip: int = DEFAULT_PRE_SKIP,
    vendor: str = "discore_voice simulator",
) -> bytes:
    """An Ogg Opus file (RFC 7845) holding ``packets`` unchanged, one packet per page.

    One packet per page on purpose: the reader's tests cut, drop and corrupt single pages and
    want to know which packet they hit. Recordings use the writer's usual packing instead.
    """
    paginator = OggOpusPaginator(
        serial=serial & 0xFFFF_FFFF,
        pre_skip=pre_skip,
        vendor=vendor,
        max_page_samples=0,
        # A fixture holds whatever it is given: the reader's tests need packets continued
        # across pages, which only packets larger than players accept produce.
        max_packet_bytes=None,
    )
    out = bytearray()
    for packet in packets:
        out += paginator.packet(packet)
    out += paginator.finish()
    return bytes(out)
