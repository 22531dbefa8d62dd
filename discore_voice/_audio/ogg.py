"""Ogg Opus files read packet by packet, so their audio reaches Discord without re-encoding.

pyogg cannot hand out raw packets (its ``ogg_sync_buffer`` returns a copy), and decoding then
re-encoding would cost CPU and quality for nothing: an Ogg Opus file already holds Opus packets,
and Discord wants exactly those, provided each lasts 20 ms. So this module parses the container
itself. It is sans-IO and incremental (feed bytes as they are read, get packets back), which lets
a file be streamed from disk in chunks and lets hypothesis fuzz the parser without files.

Three layers, each checked strictly, because a corrupt file must fail loudly with its name in
the message rather than send noise:

* :class:`OggPageReader` (RFC 3533): capture pattern, version, flags, the CRC, the segment table.
* :class:`OggOpusReader`: picks the first Opus logical stream, joins 255-byte lacing into packets
  across pages, reads ``OpusHead`` and ``OpusTags`` (RFC 7845), then yields audio packets.
* :func:`opus_packet_samples` (RFC 6716 section 3.1): a packet's duration from its TOC byte.
  20 ms packets pass through byte for byte. A 40, 60... ms packet made of 20 ms frames (what
  libopus produces for music at longer frame sizes) is re-framed exactly, one frame per packet
  (:func:`split_opus_packet`). Anything else (10 ms frames, SILK's 40/60 ms frames) is rejected
  instead of being played at the wrong speed: re-timing those would need a decode.

Passthrough ignores ``pre_skip``, the output gain and end trimming: Discord receivers decode
whole packets with their own delay handling, and the differences are a few milliseconds of
codec priming at the start and of padding at the end.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Final, NamedTuple

from .._errors import ProtocolError, UsageError

__all__ = [
    "OPUS_FRAME_SAMPLES",
    "AudioSourceError",
    "OggFormatError",
    "OggOpusReader",
    "OggPage",
    "OggPageReader",
    "OpusHead",
    "UnsupportedAudio",
    "build_ogg_page",
    "last_granule_position",
    "ogg_crc32",
    "opus_packet_frames",
    "opus_packet_samples",
    "split_opus_packet",
]

#: Samples per channel at 48 kHz in the only packet duration Discord accepts (20 ms).
OPUS_FRAME_SAMPLES: Final = 960
_MAX_PACKET_SAMPLES: Final = 5760  # 120 ms, RFC 6716's limit for one packet
_MAX_FRAME_BYTES: Final = 1275  # RFC 6716's limit for one compressed frame

_CAPTURE: Final = b"OggS"
_HEADER: Final = struct.Struct("<4sBBqIIIB")
_HEADER_SIZE: Final = _HEADER.size  # 27
_CRC_OFFSET: Final = 22
FLAG_CONTINUED: Final = 0x01
FLAG_BOS: Final = 0x02
FLAG_EOS: Final = 0x04
_KNOWN_FLAGS: Final = FLAG_CONTINUED | FLAG_BOS | FLAG_EOS

_OPUS_HEAD: Final = b"OpusHead"
_OPUS_TAGS: Final = b"OpusTags"
_OPUS_HEAD_FIXED: Final = struct.Struct("<8sBBHIhB")  # 19 bytes

# First bytes of formats people hand to an Ogg Opus reader by mistake, to say what it was.
_FILE_MAGIC: Final = (
    (b"RIFF", "a WAV (RIFF) file"),
    (b"ID3", "an MP3 file with an ID3 tag"),
    (b"\xff\xfb", "an MP3 file"),
    (b"\xff\xf3", "an MP3 file"),
    (b"\xff\xf2", "an MP3 file"),
    (b"fLaC", "a FLAC file"),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM file"),
)
# First packets of Ogg streams that are not Opus, to name the codec in the error.
_STREAM_MAGIC: Final = (
    (b"\x01vorbis", "Vorbis"),
    (b"\x7fFLAC", "FLAC"),
    (b"Speex   ", "Speex"),
    (b"\x80theora", "Theora"),
    (b"OVP80", "VP8"),
    (b"fishead\x00", "Skeleton"),
)

_REVERSED_BITS: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


class AudioSourceError(UsageError):
    """Audio handed to the library cannot be played; ``source`` names it (a path or a label).

    A usage error rather than a protocol error: the file or stream came from the caller, and
    the voice connection stays healthy (what was already queued keeps playing).
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class OggFormatError(AudioSourceError):
    """The bytes are not a well-formed Ogg Opus stream: corrupt, truncated or not Ogg at all."""


class UnsupportedAudio(AudioSourceError):
    """Well-formed audio that Discord cannot take as is: another codec, a packet duration other
    than 20 ms, or more than two channels."""


def ogg_crc32(data: bytes | bytearray | memoryview) -> int:
    """Ogg's CRC-32: polynomial 0x04C11DB7, MSB first, initial value 0, no final XOR.

    Computed through zlib's reflected CRC-32 on bit-reversed bytes and bit-reversing the result
    (the two algorithms are mirror images), which runs at C speed instead of a Python loop over
    every byte of a file.
    """
    reflected = zlib.crc32(bytes(data).translate(_REVERSED_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


class OggPage(NamedTuple):
    """One Ogg page; ``lacing`` is its segment table, ``offset`` where it began in the input."""

    flags: int
    granule: int
    serial: int
    sequence: int
    lacing: bytes
    body: bytes
    offset: int

    @property
    def continued(self) -> bool:
        return bool(self.flags & FLAG_CONTINUED)

    @property
    def bos(self) -> bool:
        return bool(self.flags & FLAG_BOS)

    @property
    def eos(self) -> bool:
        return bool(self.flags & FLAG_EOS)


def build_ogg_page(
    *,
    flags: int,
    granule: int,
    serial: int,
    sequence: int,
    lacing: Iterable[int],
    body: bytes,
) -> bytes:
    """Serialise one page with its CRC; for tests that need pages a normal writer never makes."""
    table = bytes(lacing)
    header = _HEADER.pack(_CAPTURE, 0, flags, granule, serial, sequence, 0, len(table))
    crc = ogg_crc32(header + table + body)
    return header[:_CRC_OFFSET] + struct.pack("<I", crc) + header[_CRC_OFFSET + 4 :] + table + body


class OggPageReader:
    """Splits a byte stream into checked pages; feed it in chunks of any size.

    Strict: no resynchronisation past garbage. A player could skip a damaged page, but
    passthrough would then send whatever the damage left, so the first fault ends the stream.
    """

    __slots__ = ("_buffer", "_consumed", "_source")

    def __init__(self, source: str) -> None:
        self._source = source
        self._buffer = bytearray()
        self._consumed = 0  # bytes of input before the buffer's start, for error offsets

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    def _error(self, problem: str) -> OggFormatError:
        return OggFormatError(self._source, problem)

    def next_page(self) -> OggPage | None:
        """The next complete page, or ``None`` until more bytes are fed."""
        buffer = self._buffer
        offset = self._consumed
        available = len(buffer)
        if available < 4:
            if buffer and not _CAPTURE.startswith(bytes(buffer)):
                raise self._bad_capture(offset)
            return None
        if buffer[:4] != _CAPTURE:
            raise self._bad_capture(offset)
        if available < _HEADER_SIZE:
            return None
        _, version, flags, granule, serial, sequence, crc, count = _HEADER.unpack_from(buffer)
        if version != 0:
            raise self._error(f"Ogg page at byte {offset} has version {version}; only 0 exists")
        if flags & ~_KNOWN_FLAGS:
            raise self._error(f"Ogg page at byte {offset} has unknown header flags {flags:#04x}")
        body_start = _HEADER_SIZE + count
        if available < body_start:
            return None
        lacing = bytes(buffer[_HEADER_SIZE:body_start])
        end = body_start + sum(lacing)
        if available < end:
            return None
        page = bytes(buffer[:end])
        check = bytearray(page)
        check[_CRC_OFFSET : _CRC_OFFSET + 4] = bytes(4)
        actual = ogg_crc32(check)
        if actual != crc:
            raise self._error(
                f"Ogg page at byte {offset} (stream {serial:#x}, page {sequence}) fails its "
                f"CRC check (stored {crc:#010x}, computed {actual:#010x}): the file is corrupt"
            )
        del buffer[:end]
        self._consumed += end
        return OggPage(flags, granule, serial, sequence, lacing, page[body_start:], offset)

    def _bad_capture(self, offset: int) -> OggFormatError:
        if offset == 0:
            head = bytes(self._buffer[:8])
            for magic, name in _FILE_MAGIC:
                if head.startswith(magic):
                    return self._error(
                        f"this is {name}, not Ogg Opus; play it with the PyAV source "
                        "(the 'av' extra) or convert it to Ogg Opus"
                    )
            return self._error("not an Ogg file: it does not start with the 'OggS' capture pattern")
        return self._error(
            f"no Ogg page at byte {offset} (expected the 'OggS' capture pattern): "
            "the file is corrupt"
        )

    @property
    def pending(self) -> int:
        """Bytes fed but not yet part of a complete page."""
        return len(self._buffer)

    def close(self) -> None:
        """Declare the end of input; a partial page left over means the file was cut short."""
        if self._buffer:
            raise self._error(
                f"truncated: the input ends inside the Ogg page at byte {self._consumed} "
                f"({len(self._buffer)} bytes of it present)"
            )


class OpusHead(NamedTuple):
    """The Ogg Opus identification header (RFC 7845 section 5.1)."""

    version: int
    channels: int
    pre_skip: int
    input_rate: int
    output_gain: int
    mapping_family: int


def opus_packet_samples(packet: bytes) -> int:
    """Samples per channel at 48 kHz that ``packet`` decodes to, from its TOC (RFC 6716 3.1).

    Raises :class:`~discore_voice._errors.ProtocolError` for a packet whose framing is
    impossible, so the same check can serve received packets.
    """
    size = len(packet)
    if not size:
        raise ProtocolError("an Opus packet is empty; it needs at least its TOC byte")
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK-only: 10, 20, 40, 60 ms
        frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame = (480, 960)[config & 1]
    else:  # CELT-only: 2.5, 5, 10, 20 ms
        frame = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        return frame
    if code == 1:
        if (size - 1) % 2:
            raise ProtocolError(
                f"an Opus code 1 packet holds two equal frames, but its {size - 1} bytes "
                "after the TOC are odd"
            )
        return 2 * frame
    if code == 2:
        if size < 2:
            raise ProtocolError("an Opus code 2 packet ends before its first frame's length")
        first = packet[1]
        header = 2
        if first >= 252:
            if size < 3:
                raise ProtocolError("an Opus code 2 packet ends inside its frame length")
            first += 4 * packet[2]
            header = 3
        if header + first > size:
            raise ProtocolError(
                f"an Opus code 2 packet's first frame ({first} bytes) runs past its end"
            )
        return 2 * frame
    if size < 2:
        raise ProtocolError("an Opus code 3 packet ends before its frame count byte")
    count = packet[1] & 0x3F
    if not count:
        raise ProtocolError("an Opus code 3 packet declares zero frames")
    if count * frame > _MAX_PACKET_SAMPLES:
        raise ProtocolError(
            f"an Opus code 3 packet declares {count} frames of {frame / 48:g} ms, "
            "longer than the 120 ms a packet may last"
        )
    return count * frame


def _frame_length(packet: bytes, at: int) -> tuple[int, int]:
    """A 1- or 2-byte frame length (RFC 6716 3.2.1) at ``at``: (length, bytes it took)."""
    if at >= len(packet):
        raise ProtocolError("an Opus packet ends inside a frame length")
    first = packet[at]
    if first < 252:
        return first, 1
    if at + 1 >= len(packet):
        raise ProtocolError("an Opus packet ends inside a two-byte frame length")
    return first + 4 * packet[at + 1], 2


def opus_packet_frames(packet: bytes) -> tuple[int, list[bytes]]:
    """Split a packet into its compressed frames (RFC 6716 3.2): (samples per frame, frames).

    Checks every rule of section 3.4 that concerns framing (lengths, padding, the 1275-byte
    frame limit, the 120 ms packet limit), because re-framing copies frames into new packets
    and must never copy garbage.
    """
    size = len(packet)
    samples = opus_packet_samples(packet)  # validates the TOC-level rules
    toc = packet[0]
    code = toc & 3
    if code == 0:
        frames = [packet[1:]]
    elif code == 1:
        half = (size - 1) // 2
        frames = [packet[1 : 1 + half], packet[1 + half :]]
    elif code == 2:
        first, taken = _frame_length(packet, 1)
        start = 1 + taken
        frames = [packet[start : start + first], packet[start + first :]]
    else:
        count = packet[1] & 0x3F
        vbr = bool(packet[1] & 0x80)
        at = 2
        padding = 0
        if packet[1] & 0x40:
            while True:
                if at >= size:
                    raise ProtocolError("an Opus code 3 packet ends inside its padding length")
                value = packet[at]
                at += 1
                padding += 254 if value == 255 else value
                if value != 255:
                    break
        end = size - padding
        if end < at:
            raise ProtocolError(f"an Opus code 3 packet's {padding} bytes of padding overrun it")
        lengths: list[int] = []
        if vbr:
            for _ in range(count - 1):
                length, taken = _frame_length(packet, at)
                at += taken
                lengths.append(length)
            if at > end or sum(lengths) > end - at:
                raise ProtocolError("an Opus code 3 packet's frame lengths overrun it")
            lengths.append(end - at - sum(lengths))
        else:
            if (end - at) % count:
                raise ProtocolError(
                    f"an Opus code 3 CBR packet's {end - at} bytes of frames do not split "
                    f"into {count} equal frames"
                )
            lengths = [(end - at) // count] * count
        frames = []
        for length in lengths:
            frames.append(packet[at : at + length])
            at += length
    if any(len(frame) > _MAX_FRAME_BYTES for frame in frames):
        raise ProtocolError(f"an Opus frame is longer than {_MAX_FRAME_BYTES} bytes")
    return samples // len(frames), frames


def split_opus_packet(packet: bytes) -> list[bytes] | None:
    """Re-frame a packet of several 20 ms frames as one single-frame packet per frame.

    Exact, not an approximation: each frame is copied unchanged behind its packet's TOC with
    the frame-count code set to 0, which is how libopus' own repacketizer does it, so decoders
    see the very same frames. ``None`` when the frames are not 20 ms each (a 10 ms or 40 ms
    frame cannot be re-timed without decoding).
    """
    frame_samples, frames = opus_packet_frames(packet)
    if frame_samples != OPUS_FRAME_SAMPLES:
        return None
    toc = bytes((packet[0] & 0xFC,))
    return [toc + frame for frame in frames]


def _describe_stream(first_packet: bytes) -> str:
    for magic, name in _STREAM_MAGIC:
        if first_packet.startswith(magic):
            return f"a {name} stream"
    return "an unknown codec"


class OggOpusReader:
    """Turns the bytes of an Ogg Opus file into its 20 ms Opus packets, unchanged.

    Of several logical streams, the first whose first packet is ``OpusHead`` is played and the
    others are skipped (still CRC-checked). A page lost or out of order in the chosen stream, a
    packet cut off, or a stream that never ends is an :class:`OggFormatError`; a stream Discord
    cannot take (another codec, frames that are not 20 ms long, multichannel) an
    :class:`UnsupportedAudio`. Both name ``source``.
    """

    __slots__ = (
        "_audio_packets",
        "_bos_only",
        "_ended",
        "_failure",
        "_first_packets",
        "_head",
        "_input_packets",
        "_next_sequence",
        "_pages",
        "_partial",
        "_serial",
        "_skipped",
        "_source",
        "_tags_seen",
    )

    def __init__(self, source: str) -> None:
        self._source = source
        self._pages = OggPageReader(source)
        self._serial: int | None = None
        self._skipped: set[int] = set()
        self._first_packets: list[bytes] = []
        self._bos_only = True  # still in the leading run of beginning-of-stream pages
        self._next_sequence = 0
        self._partial: bytearray | None = None
        self._head: OpusHead | None = None
        self._tags_seen = False
        self._ended = False
        self._audio_packets = 0
        self._input_packets = 0
        self._failure: OggFormatError | None = None  # damage found after good packets

    @property
    def source(self) -> str:
        return self._source

    @property
    def head(self) -> OpusHead | None:
        """The stream's ``OpusHead`` once read."""
        return self._head

    @property
    def ended(self) -> bool:
        """Whether the Opus stream's end-of-stream page has been read."""
        return self._ended

    @property
    def packets_read(self) -> int:
        """Audio packets returned so far (a re-framed packet counts once per 20 ms frame)."""
        return self._audio_packets

    def _format_error(self, problem: str) -> OggFormatError:
        return OggFormatError(self._source, problem)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add input; return the audio packets it completed, in order.

        Damage in the middle of ``data`` does not cost the good packets before it: they are
        returned, and the error is raised by the next call (``feed`` or ``close``), so a
        damaged file plays up to the damage.
        """
        if self._failure is not None:
            raise self._failure
        self._pages.feed(data)
        out: list[bytes] = []
        try:
            while (page := self._pages.next_page()) is not None:
                self._page(page, out)
        except OggFormatError as exc:  # damage; audio Discord cannot take fails at once
            if not out:
                raise
            self._failure = exc
        return out

    def close(self) -> None:
        """Declare the end of input: anything unfinished means the file was cut short."""
        if self._failure is not None:
            raise self._failure
        self._pages.close()
        if self._serial is None:
            if self._first_packets:
                kinds = ", ".join(sorted({_describe_stream(p) for p in self._first_packets}))
                raise UnsupportedAudio(
                    self._source, f"no Opus stream in this Ogg file (it holds {kinds})"
                )
            raise self._format_error("empty: no Ogg pages at all")
        if not self._ended:
            where = "inside a packet" if self._partial is not None else "before its last page"
            raise self._format_error(
                f"truncated: the Opus stream ends {where} (no end-of-stream page), "
                f"after {self._audio_packets} audio packets"
            )

    def _page(self, page: OggPage, out: list[bytes]) -> None:
        serial = page.serial
        if page.bos and self._bos_only:
            first = page.body[: page.lacing[0]] if page.lacing else b""
            if self._serial is None and first.startswith(_OPUS_HEAD):
                self._serial = serial
            else:
                if serial == self._serial or serial in self._skipped:
                    raise self._format_error(
                        f"Ogg page at byte {page.offset} begins stream {serial:#x} a second time"
                    )
                self._skipped.add(serial)
                self._first_packets.append(first)
                return
        elif page.bos:
            # A chained stream after the first: passthrough plays only the first Opus stream.
            self._skipped.add(serial)
            return
        else:
            self._bos_only = False
        if serial != self._serial:
            if serial in self._skipped:
                return
            if self._serial is None:
                if self._first_packets:
                    kinds = ", ".join(sorted({_describe_stream(p) for p in self._first_packets}))
                    raise UnsupportedAudio(
                        self._source, f"no Opus stream in this Ogg file (it holds {kinds})"
                    )
                raise self._format_error(
                    f"the first Ogg page (byte {page.offset}) does not begin a stream"
                )
            raise self._format_error(
                f"Ogg page at byte {page.offset} belongs to stream {serial:#x}, which never began"
            )
        self._stream_page(page, out)

    def _stream_page(self, page: OggPage, out: list[bytes]) -> None:
        if self._ended:
            raise self._format_error(
                f"Ogg page at byte {page.offset} follows the Opus stream's end-of-stream page"
            )
        if page.sequence != self._next_sequence:
            raise self._format_error(
                f"Ogg page at byte {page.offset} is page {page.sequence} of the Opus stream, "
                f"expected {self._next_sequence}: pages are missing or out of order"
            )
        self._next_sequence = (page.sequence + 1) & 0xFFFFFFFF
        partial = self._partial
        if page.continued != (partial is not None):
            if partial is None:
                problem = "continues a packet, but no packet was left unfinished"
            else:
                problem = "does not continue the packet the previous page left unfinished"
            raise self._format_error(f"Ogg page at byte {page.offset} {problem}")
        body = page.body
        start = 0
        packet = partial if partial is not None else bytearray()
        for value in page.lacing:
            packet += body[start : start + value]
            start += value
            if value < 255:
                self._packet(bytes(packet), page.offset, out)
                packet = bytearray()
        # A final lacing value of 255 leaves the packet open for the next page.
        self._partial = packet if page.lacing and page.lacing[-1] == 255 else None
        if page.eos:
            if self._partial is not None:
                raise self._format_error(
                    f"Ogg page at byte {page.offset} ends the stream inside a packet"
                )
            if self._head is None or not self._tags_seen:
                raise self._format_error("the Opus stream ends before its OpusHead and OpusTags")
            self._ended = True

    def _packet(self, packet: bytes, offset: int, out: list[bytes]) -> None:
        if self._head is None:
            self._head = self._read_head(packet)
            return
        if not self._tags_seen:
            if not packet.startswith(_OPUS_TAGS):
                raise self._format_error(
                    f"the Opus stream's second packet (page at byte {offset}) is not OpusTags"
                )
            self._tags_seen = True
            return
        number = self._input_packets = self._input_packets + 1
        try:
            samples = opus_packet_samples(packet)
            if samples == OPUS_FRAME_SAMPLES:
                self._audio_packets += 1
                out.append(packet)
                return
            split = split_opus_packet(packet)
        except ProtocolError as exc:
            raise self._format_error(
                f"audio packet {number} (page at byte {offset}) is malformed: {exc}"
            ) from None
        if split is None:
            raise UnsupportedAudio(
                self._source,
                f"audio packet {number} lasts {samples / 48:g} ms in frames that are not 20 ms "
                "long, but Discord takes only 20 ms Opus packets, and passthrough never re-times "
                "audio; re-encode the file with 20 ms frames (opusenc --framesize 20, or ffmpeg "
                "-frame_duration 20) or play it through the PyAV source",
            )
        self._audio_packets += len(split)
        out.extend(split)

    def _read_head(self, packet: bytes) -> OpusHead:
        if len(packet) < _OPUS_HEAD_FIXED.size:
            raise self._format_error(
                f"OpusHead is {len(packet)} bytes, shorter than its {_OPUS_HEAD_FIXED.size}"
            )
        _, version, channels, pre_skip, rate, gain, family = _OPUS_HEAD_FIXED.unpack_from(packet)
        if not 1 <= version <= 15:
            # RFC 7845: versions sharing the upper nibble 0 are compatible with version 1.
            raise UnsupportedAudio(
                self._source, f"OpusHead version {version} is not supported (only 1 to 15)"
            )
        if not channels:
            raise self._format_error("OpusHead declares zero channels")
        if family != 0:
            raise UnsupportedAudio(
                self._source,
                f"the Opus stream uses channel mapping family {family} ({channels} channels), "
                "which Discord cannot take; only mono or stereo (family 0) passes through",
            )
        if channels > 2:
            raise self._format_error(
                f"OpusHead declares {channels} channels with mapping family 0, which allows 2"
            )
        return OpusHead(version, channels, pre_skip, rate, gain, family)


def last_granule_position(tail: bytes) -> int | None:
    """The granule position of the last complete page header in ``tail`` (a file's end), if any.

    What a player reads to learn an Ogg Opus file's length without parsing it all: the last
    page's granule position is the stream's length in 48 kHz samples, pre-skip included
    (RFC 7845 section 4). ``-1`` (no packet ends on the page) and damaged headers are passed over.
    """
    end = len(tail)
    while True:
        start = tail.rfind(b"OggS", 0, end)
        if start < 0:
            return None
        header = tail[start : start + 27]
        if len(header) == 27 and header[4] == 0:
            granule = int.from_bytes(header[6:14], "little", signed=True)
            if granule >= 0:
                return granule
        end = start
