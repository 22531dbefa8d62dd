"""RTP headers as Discord's voice servers use them, and wrap-around arithmetic on their counters.

The sender builds one header every 20 ms for each of possibly a thousand connections, so the common
header (no CSRCs, no extension) has its own fast path that packs three ints with one precompiled
:class:`struct.Struct`. The general :class:`RtpHeader` exists for receivers, which see CSRCs and
header extensions from Discord's own clients, and for the simulator.

Sequence numbers and timestamps wrap (16 and 32 bits), so receivers must never compare them with
``<``; the ``*_distance`` functions give the RFC 3550 serial-number answer instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .._errors import ProtocolError, UsageError

__all__ = [
    "OPUS_PAYLOAD_TYPE",
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "SAMPLES_PER_FRAME",
    "SEQUENCE_MODULUS",
    "TIMESTAMP_MODULUS",
    "RtpHeader",
    "is_rtcp",
    "next_sequence",
    "next_timestamp",
    "pack_opus_header",
    "sequence_distance",
    "timestamp_distance",
]

RTP_VERSION = 2
#: Discord's dynamic payload type for Opus.
OPUS_PAYLOAD_TYPE = 0x78
#: The fixed part of every RTP header: flags, payload type, sequence, timestamp, SSRC.
RTP_HEADER_SIZE = 12
#: Opus on Discord runs a 48 kHz RTP clock, and a frame lasts 20 ms, whatever the channel count.
SAMPLES_PER_FRAME = 960
SEQUENCE_MODULUS = 1 << 16
TIMESTAMP_MODULUS = 1 << 32

_MAX_CSRCS = 15
_VERSION_BITS = RTP_VERSION << 6
_PADDING_BIT = 0x20
_EXTENSION_BIT = 0x10
_CC_MASK = 0x0F
_MARKER_BIT = 0x80
_PT_MASK = 0x7F
_EXTENSION_PREAMBLE_SIZE = 4
# RTCP packet types 200-204 (SR, RR, SDES, BYE, APP) occupy the RTP marker+payload-type byte when
# RTP and RTCP share a socket; RFC 5761 keeps RTP payload types 72-76 free for that reason.
_RTCP_FIRST_TYPE = 200
_RTCP_LAST_TYPE = 204

_FIXED = struct.Struct(">BBHII")
_PREAMBLE = struct.Struct(">HH")
# One precompiled Struct per possible CSRC count, so neither build nor parse formats a string.
_CSRC_STRUCTS = tuple(struct.Struct(f">{count}I") for count in range(_MAX_CSRCS + 1))

_SEQ_MASK = SEQUENCE_MODULUS - 1
_SEQ_HALF = SEQUENCE_MODULUS >> 1
_TS_MASK = TIMESTAMP_MODULUS - 1
_TS_HALF = TIMESTAMP_MODULUS >> 1


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """One RTP header, up to and including the 4-byte extension preamble.

    The extension *body* is not part of it: in Discord's ``*_rtpsize`` modes the body is encrypted
    with the payload while the preamble stays in the clear as associated data, so the header ends
    exactly where the AEAD's associated data ends. ``extension_length`` counts the body in 32-bit
    words, as the wire does; ``extension_profile`` is ``None`` when the X bit is clear.

    Fields are checked when the header is built rather than on construction, so that parsing (on
    the receive path, for every packet) pays nothing for checks the wire format already enforces.
    """

    sequence: int
    timestamp: int
    ssrc: int
    payload_type: int = OPUS_PAYLOAD_TYPE
    marker: bool = False
    padding: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension_length: int = 0

    @property
    def size(self) -> int:
        """Bytes this header takes on the wire; also the length of the AEAD associated data."""
        size = RTP_HEADER_SIZE + 4 * len(self.csrcs)
        if self.extension_profile is not None:
            size += _EXTENSION_PREAMBLE_SIZE
        return size

    @property
    def extension_body_size(self) -> int:
        """Bytes of extension body that follow the header (encrypted, in the rtpsize modes)."""
        return 4 * self.extension_length

    def build(self) -> bytes:
        """Serialize; a field out of its wire range is the caller's :class:`UsageError`."""
        csrc_count = len(self.csrcs)
        if csrc_count > _MAX_CSRCS:
            raise UsageError(f"an RTP header holds at most {_MAX_CSRCS} CSRCs, got {csrc_count}")
        if not 0 <= self.payload_type <= _PT_MASK:
            raise UsageError(f"RTP payload type must be in 0..127, got {self.payload_type}")
        if self.extension_profile is None and self.extension_length:
            raise UsageError("extension_length is set but extension_profile is None (no X bit)")
        first = _VERSION_BITS | csrc_count
        if self.padding:
            first |= _PADDING_BIT
        if self.extension_profile is not None:
            first |= _EXTENSION_BIT
        second = self.payload_type | (_MARKER_BIT if self.marker else 0)
        try:
            data = _FIXED.pack(first, second, self.sequence, self.timestamp, self.ssrc)
            if csrc_count:
                data += _CSRC_STRUCTS[csrc_count].pack(*self.csrcs)
            if self.extension_profile is not None:
                data += _PREAMBLE.pack(self.extension_profile, self.extension_length)
        except struct.error as exc:
            raise UsageError(f"RTP header field out of range: {exc}") from None
        return data

    @classmethod
    def parse(cls, data: bytes) -> tuple[RtpHeader, int]:
        """Parse the header at the start of ``data``; also return its size in bytes.

        The size is what a cipher needs to split the associated data from the ciphertext. The
        extension body must fit in ``data``, which holds for an encrypted packet too, since the
        body is encrypted in place and keeps its length.
        """
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise ProtocolError(
                f"RTP packet is {size} bytes, shorter than the {RTP_HEADER_SIZE}-byte fixed header"
            )
        first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise ProtocolError(f"RTP version is {version}, expected {RTP_VERSION}")
        csrc_count = first & _CC_MASK
        offset = RTP_HEADER_SIZE
        csrcs: tuple[int, ...] = ()
        if csrc_count:
            offset += 4 * csrc_count
            if offset > size:
                raise ProtocolError(
                    f"RTP CSRC count {csrc_count} needs a {offset}-byte header, "
                    f"but the packet is {size} bytes"
                )
            csrcs = _CSRC_STRUCTS[csrc_count].unpack_from(data, RTP_HEADER_SIZE)
        extension_profile: int | None = None
        extension_length = 0
        if first & _EXTENSION_BIT:
            if offset + _EXTENSION_PREAMBLE_SIZE > size:
                raise ProtocolError(
                    f"RTP X bit is set but the packet ends before the extension preamble "
                    f"({size} bytes, preamble at offset {offset})"
                )
            extension_profile, extension_length = _PREAMBLE.unpack_from(data, offset)
            offset += _EXTENSION_PREAMBLE_SIZE
            if offset + 4 * extension_length > size:
                raise ProtocolError(
                    f"RTP extension length {extension_length} words runs past the end of the "
                    f"{size}-byte packet (body starts at offset {offset})"
                )
        header = cls(
            sequence,
            timestamp,
            ssrc,
            second & _PT_MASK,
            bool(second & _MARKER_BIT),
            bool(first & _PADDING_BIT),
            csrcs,
            extension_profile,
            extension_length,
        )
        return header, offset


def pack_opus_header(sequence: int, timestamp: int, ssrc: int) -> bytes:
    """Build the header every outgoing Opus packet uses, on the sender's hot path.

    Equivalent to ``RtpHeader(sequence, timestamp, ssrc).build()`` without creating an object.
    """
    try:
        return _FIXED.pack(_VERSION_BITS, OPUS_PAYLOAD_TYPE, sequence, timestamp, ssrc)
    except struct.error as exc:
        raise UsageError(f"RTP header field out of range: {exc}") from None


def is_rtcp(packet: bytes) -> bool:
    """Tell RTCP from RTP on the shared voice socket before handing a packet to the RTP parser.

    Discord multiplexes both on one socket (RFC 5761): an RTCP packet type 200-204 reads, to an RTP
    parser, as the marker bit plus payload type 72-76, which no RTP stream may use.
    """
    return (
        len(packet) >= 2
        and packet[0] >> 6 == RTP_VERSION
        and _RTCP_FIRST_TYPE <= packet[1] <= _RTCP_LAST_TYPE
    )


def next_sequence(sequence: int) -> int:
    """The sequence number after ``sequence``; wraps from 65535 to 0."""
    return (sequence + 1) & _SEQ_MASK


def next_timestamp(timestamp: int, samples: int = SAMPLES_PER_FRAME) -> int:
    """The timestamp ``samples`` ticks later (one 20 ms frame by default); wraps at 2**32."""
    return (timestamp + samples) & _TS_MASK


def sequence_distance(start: int, end: int) -> int:
    """How many packets ``end`` is ahead of ``start`` (negative: behind), across the wrap.

    The answer lies in ``[-32768, 32767]``: two numbers exactly half the space apart are ambiguous,
    and this reads them as ``end`` being behind, so a stale packet is never mistaken for a new one.
    """
    return ((end - start + _SEQ_HALF) & _SEQ_MASK) - _SEQ_HALF


def timestamp_distance(start: int, end: int) -> int:
    """How many clock ticks ``end`` is ahead of ``start`` (negative: behind), across the wrap.

    The 32-bit counterpart of :func:`sequence_distance`, in ``[-2**31, 2**31 - 1]``.
    """
    return ((end - start + _TS_HALF) & _TS_MASK) - _TS_HALF
