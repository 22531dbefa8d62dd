"""Transport decompression for ``compress=zlib-stream``.

Discord compresses the whole connection with one zlib stream and ends every message with a
``Z_SYNC_FLUSH`` (the bytes ``00 00 FF FF``). A websocket message may hold only part of a gateway
message, so input is buffered until that suffix arrives. The inflater keeps its dictionary across
messages: a new connection needs a new inflater, and a corrupt stream cannot be recovered.
"""

from __future__ import annotations

import zlib

from ..._errors import ProtocolError

__all__ = ["ZLIB_SUFFIX", "ZlibStreamInflater"]

ZLIB_SUFFIX = b"\x00\x00\xff\xff"

# A guild-heavy READY can be a few MiB; anything far beyond that is a decompression bomb.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class ZlibStreamInflater:
    """One connection's zlib-stream decoder."""

    __slots__ = ("_broken", "_buffer", "_inflater", "_max_message_size")

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._inflater = zlib.decompressobj()
        self._buffer = bytearray()
        self._max_message_size = max_message_size
        self._broken = False

    @property
    def buffered(self) -> int:
        """Compressed bytes waiting for the end of their message."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """Add one websocket message; return the decompressed gateway message once it is whole."""
        if self._broken:
            raise ProtocolError("the zlib stream is already corrupt; reconnect")
        self._buffer += data
        if len(self._buffer) > self._max_message_size:
            self._broken = True
            raise ProtocolError("a compressed gateway message exceeds the size limit")
        if len(self._buffer) < len(ZLIB_SUFFIX) or self._buffer[-4:] != ZLIB_SUFFIX:
            return None
        compressed = bytes(self._buffer)
        self._buffer.clear()
        try:
            message = self._inflater.decompress(compressed, self._max_message_size)
        except zlib.error as exc:
            self._broken = True
            raise ProtocolError("the gateway sent corrupt zlib-stream data") from exc
        if self._inflater.unconsumed_tail:
            self._broken = True
            raise ProtocolError("a decompressed gateway message exceeds the size limit")
        if self._inflater.eof:
            # A Z_FINISH ended the stream: nothing more can follow on this connection.
            self._broken = True
            raise ProtocolError("the gateway ended its zlib stream")
        return message
