"""The TLS presentation language as MLS uses it (RFC 9420 §2.1): fixed-size integers and vectors.

The simulator's DAVE server reads what clients send (key packages, commits, welcomes) with this
reader, so every read is bounds-checked and every malformed input becomes one
:class:`ProtocolError`: a client that sends garbage must be answered by protocol, never crash the
server with an ``IndexError`` or a ``struct.error``.

MLS prefixes vectors with its own variable-length integer (1, 2 or 4 bytes, the top two bits of
the first byte giving the size) and requires the shortest encoding; we enforce that too, because
two encodings of one message would hash to two different proposal references.
"""

from __future__ import annotations

from typing import Final

from ..._errors import ProtocolError, UsageError

__all__ = ["MAX_VARINT", "TlsReader", "TlsWriter", "encode_varint", "opaque_vector"]

#: The largest length an MLS varint can carry (30 bits).
MAX_VARINT: Final = (1 << 30) - 1


def encode_varint(value: int) -> bytes:
    """The shortest MLS varint for ``value``: RFC 9420 rejects longer encodings."""
    if not 0 <= value <= MAX_VARINT:
        raise UsageError(f"an MLS varint holds 0..2**30-1, got {value}")
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    return (value | 0x8000_0000).to_bytes(4, "big")


def opaque_vector(data: bytes) -> bytes:
    """``opaque data<V>``: a varint length, then the bytes."""
    return encode_varint(len(data)) + data


class TlsWriter:
    """Builds a message field by field; ``bytes(writer)`` is the encoding."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)

    def _uint(self, value: int, size: int) -> TlsWriter:
        if not 0 <= value < 1 << (8 * size):
            raise UsageError(f"{value} does not fit in a u{8 * size}")
        self._parts.append(value.to_bytes(size, "big"))
        return self

    def u8(self, value: int) -> TlsWriter:
        return self._uint(value, 1)

    def u16(self, value: int) -> TlsWriter:
        return self._uint(value, 2)

    def u32(self, value: int) -> TlsWriter:
        return self._uint(value, 4)

    def u64(self, value: int) -> TlsWriter:
        return self._uint(value, 8)

    def raw(self, data: bytes) -> TlsWriter:
        """Bytes already encoded (a nested struct): no length prefix."""
        self._parts.append(bytes(data))
        return self

    def vector(self, data: bytes) -> TlsWriter:
        """``opaque<V>``: a varint length, then ``data``."""
        self._parts.append(opaque_vector(bytes(data)))
        return self


class TlsReader:
    """Reads a message front to back; every read checks that the bytes are there.

    ``what`` names the message in error messages, which never quote its bytes (they may be keys).
    """

    __slots__ = ("_data", "_pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UsageError(f"{what} must be bytes, got {type(data).__name__}")
        self._data = bytes(data)
        self._pos = 0
        self.what = what

    @property
    def position(self) -> int:
        """Offset of the next unread byte: lets a caller slice out what it just parsed."""
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def error(self, message: str) -> ProtocolError:
        """A :class:`ProtocolError` naming the message and the offset, for callers' own checks."""
        return ProtocolError(f"{self.what}: {message} (at byte {self._pos})")

    def span(self, start: int, end: int) -> bytes:
        """Bytes already read, ``[start, end)``: a struct exactly as the peer encoded it."""
        if not 0 <= start <= end <= self._pos:
            raise UsageError(f"span [{start}, {end}) is not within the bytes read so far")
        return self._data[start:end]

    def take(self, size: int) -> bytes:
        """The next ``size`` bytes, raw."""
        if size < 0 or size > self.remaining:
            raise self.error(f"truncated: needs {size} bytes, {self.remaining} left")
        start = self._pos
        self._pos += size
        return self._data[start : self._pos]

    def _uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def u8(self) -> int:
        return self._uint(1)

    def u16(self) -> int:
        return self._uint(2)

    def u32(self) -> int:
        return self._uint(4)

    def u64(self) -> int:
        return self._uint(8)

    def varint(self) -> int:
        """An MLS varint; the 4-byte-prefix form (top bits 11) and overlong forms are invalid."""
        first = self.u8()
        prefix = first >> 6
        if prefix == 3:
            raise self.error("invalid varint prefix")
        size = 1 << prefix
        value = first & 0x3F
        for byte in self.take(size - 1):
            value = (value << 8) | byte
        if size > 1 and value < 1 << (8 * (size >> 1) - 2):
            raise self.error("varint is not minimally encoded")
        return value

    def vector(self) -> bytes:
        """``opaque<V>``: a varint length, then that many bytes."""
        return self.take(self.varint())

    def sub_reader(self, what: str) -> TlsReader:
        """A reader over the next vector's content, for vectors of structs."""
        return TlsReader(self.vector(), f"{self.what}: {what}")

    def optional(self) -> bool:
        """``optional<T>``: a presence byte that must be 0 or 1."""
        present = self.u8()
        if present > 1:
            raise self.error(f"optional presence byte must be 0 or 1, got {present}")
        return present == 1

    def expect_end(self) -> None:
        """Trailing bytes mean the peer and we disagree about the format: refuse them."""
        if not self.at_end():
            raise self.error(f"{self.remaining} unexpected trailing bytes")
