"""What a user sent, kept twice: the exact Opus packets, and PCM/WAV/Ogg made from them on demand.

The raw packets (in arrival order, with their RTP numbers) are what byte-identical passthrough
tests compare against; PCM is decoded only when asked for, because most tests never listen and
decoding costs far more than keeping bytes. The Ogg Opus writer is our own (RFC 3533 pages with
their CRC, RFC 7845 headers), so writing a recording needs no libopusenc and copies each packet
through unchanged: the file holds exactly what the bot sent.
"""

from __future__ import annotations

import io
import struct
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .._core.rtp import sequence_distance

__all__ = [
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
#: The encoder delay RFC 7845 recommends announcing when the real one is unknown; libopus' own
#: lookahead at 48 kHz is 312 samples, which is what our encoder and Discord's clients use.
DEFAULT_PRE_SKIP = 312
#: A gap longer than this (in packets) is a new talk spurt, not loss: concealing it would only
#: fill the recording with a second of synthetic noise.
_MAX_CONCEALED_FRAMES = 25
_MAX_SEGMENTS = 255


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
        from .._audio.opus import OpusDecoder

        out = bytearray()
        with OpusDecoder() as decoder:
            previous: ReceivedPacket | None = None
            for packet in self.in_order():
                if previous is not None:
                    missing = sequence_distance(previous.sequence, packet.sequence) - 1
                    if 0 < missing <= _MAX_CONCEALED_FRAMES:
                        for _ in range(missing):
                            out += decoder.decode(None)
                out += decoder.decode(packet.payload)
                previous = packet
        return bytes(out)

    def wav_bytes(self) -> bytes:
        return pcm_to_wav_bytes(self.pcm())

    def write_wav(self, target: str | Path | BinaryIO) -> None:
        _write(target, self.wav_bytes())

    def ogg_bytes(self, *, serial: int = 0x5EC0DE, pre_skip: int = DEFAULT_PRE_SKIP) -> bytes:
        return ogg_opus_bytes(
            [packet.payload for packet in self.in_order()], serial=serial, pre_skip=pre_skip
        )

    def write_ogg(self, target: str | Path | BinaryIO, *, serial: int = 0x5EC0DE) -> None:
        _write(target, self.ogg_bytes(serial=serial))


def _write(target: str | Path | BinaryIO, data: bytes) -> None:
    if isinstance(target, str | Path):
        Path(target).write_bytes(data)
    else:
        target.write(data)


def pcm_to_wav_bytes(pcm: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(CHANNELS)
        writer.setsampwidth(SAMPLE_WIDTH)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(pcm)
    return buffer.getvalue()


# --- Ogg (RFC 3533) -----------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    # Ogg's CRC: polynomial 0x04C11DB7, MSB first, initial value 0, no final XOR (unlike zlib's).
    table = []
    for index in range(256):
        crc = index << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()
_PAGE_HEADER = struct.Struct("<4sBBqIII")
_CONTINUED = 0x01
_BOS = 0x02
_EOS = 0x04


def ogg_crc32(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def _page(
    flags: int, granule: int, serial: int, sequence: int, segments: Sequence[int], body: bytes
) -> bytes:
    header = _PAGE_HEADER.pack(b"OggS", 0, flags, granule, serial, sequence, 0)
    header += bytes((len(segments),)) + bytes(segments)
    crc = ogg_crc32(header + body)
    return header[:22] + struct.pack("<I", crc) + header[26:] + body


def _lacing(size: int) -> list[int]:
    # A packet is 255-byte segments then one shorter segment (0 when the size is a multiple).
    return [255] * (size // 255) + [size % 255]


class _OggStream:
    """Pages of one logical stream; a packet that does not fit continues on the next page."""

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.sequence = 0
        self.out = bytearray()

    def packet_page(self, packet: bytes, granule: int, *, flags: int = 0) -> None:
        """One packet on its own page(s): simple, and every page ends at a packet boundary."""
        lacing = _lacing(len(packet))
        offset = 0
        continued = False
        while True:
            chunk = lacing[:_MAX_SEGMENTS]
            lacing = lacing[_MAX_SEGMENTS:]
            size = sum(chunk)
            last = not lacing
            page_flags = flags | (_CONTINUED if continued else 0)
            if not last:
                page_flags &= ~_EOS
            # A page on which no packet ends carries granule -1 (RFC 3533).
            self.out += _page(
                page_flags,
                granule if last else -1,
                self.serial,
                self.sequence,
                chunk,
                packet[offset : offset + size],
            )
            self.sequence += 1
            offset += size
            continued = True
            flags &= ~_BOS
            if last:
                return


def opus_packet_samples(packet: bytes) -> int:
    """Samples (at 48 kHz) one Opus packet decodes to, from its TOC byte (RFC 6716, 3.1).

    Needed for Ogg granule positions; Discord's packets are 20 ms, but a recording must stay
    correct for whatever a bot sends.
    """
    if not packet:
        return 0
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        count = packet[1] & 0x3F if len(packet) > 1 else 0
    return frame * count


def ogg_opus_bytes(
    packets: Iterable[bytes],
    *,
    serial: int = 0x5EC0DE,
    pre_skip: int = DEFAULT_PRE_SKIP,
    vendor: str = "discore_voice simulator",
) -> bytes:
    """An Ogg Opus file (RFC 7845) holding ``packets`` unchanged, one packet per page."""
    stream = _OggStream(serial & 0xFFFFFFFF)
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, CHANNELS, pre_skip, SAMPLE_RATE, 0, 0)
    stream.packet_page(head, 0, flags=_BOS)
    vendor_bytes = vendor.encode()
    tags = b"OpusTags" + struct.pack("<I", len(vendor_bytes)) + vendor_bytes + struct.pack("<I", 0)
    stream.packet_page(tags, 0)
    items = [bytes(packet) for packet in packets]
    granule = 0
    for index, packet in enumerate(items):
        granule += opus_packet_samples(packet)
        last = index == len(items) - 1
        stream.packet_page(packet, granule, flags=_EOS if last else 0)
    if not items:
        # A stream must end with an EOS page; an empty one is legal.
        stream.out += _page(_EOS, 0, stream.serial, stream.sequence, [], b"")
    return bytes(stream.out)
