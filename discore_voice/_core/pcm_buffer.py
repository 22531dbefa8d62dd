"""Discore's PCM send buffer, without the I/O: bytes in, whole 20 ms frames out.

Discore lets a bot queue PCM without blocking and poll for room (``CanSendVoiceData``,
``SendVoiceData``, ``BytesToSend``, ``ClearVoiceBuffer``). This is that buffer as a plain object,
so the trio shell can wrap :meth:`PcmBuffer.write` in an ``await`` that waits for room instead of
polling, and the tests can drive it byte by byte.

Why a bounded buffer, and why one second by default: the sender takes exactly one frame every
20 ms, so anything queued beyond what covers a producer's hiccup (a slow disk read, a garbage
collection, a thread hop) is only latency: ``clear_voice_buffer()`` and ``paused`` act on what is
queued, and a user who pauses expects silence now, not after ten seconds of backlog. One second
(50 frames, 192 000 bytes) rides out any realistic stall of a producer, keeps a pause or a skip
under a second, and costs at most 192 KB per connection, allocated only as it fills.

The module also has the volume transform for s16le PCM: ``audioop`` left the standard library in
Python 3.13 and numpy is not a dependency, so it maps every sample through a lookup table built
once per gain, which costs about a fifth of a per-sample multiply-and-clip loop.
"""

from __future__ import annotations

import array
import math
import sys
from typing import Final

from .._errors import UsageError

__all__ = [
    "BYTES_PER_SAMPLE",
    "DEFAULT_CAPACITY",
    "DEFAULT_CAPACITY_FRAMES",
    "PCM_BLOCK_SIZE",
    "PcmBuffer",
    "VoiceBufferFull",
    "apply_volume",
    "check_gain",
]

#: One 20 ms frame of 48 kHz, 16-bit, stereo PCM; Discore's ``PCM_BLOCK_SIZE``. The value is
#: repeated here (and checked against ``_audio.opus`` by the tests) because the core must not
#: import the codec layer, which loads native libraries.
PCM_BLOCK_SIZE: Final = 3840
#: Bytes in one stereo sample pair: PCM can only be cut on multiples of this.
BYTES_PER_SAMPLE: Final = 4
DEFAULT_CAPACITY_FRAMES: Final = 50
DEFAULT_CAPACITY: Final = DEFAULT_CAPACITY_FRAMES * PCM_BLOCK_SIZE

#: The largest gain accepted: beyond it every non-zero sample clips, which is a mistake, not a
#: volume.
MAX_GAIN: Final = 32_768.0
_S16_MIN: Final = -32_768
_S16_MAX: Final = 32_767
_LITTLE_ENDIAN: Final = sys.byteorder == "little"
# Tables for the gains in use; a bot has a handful of volume settings, so a tiny cache suffices.
_MAX_TABLES: Final = 8
_tables: dict[float, list[int]] = {}


class VoiceBufferFull(UsageError):
    """The PCM buffer has no room for the data offered; nothing was queued.

    A caller that cannot wait should check ``can_accept`` first; the trio shell's
    ``send_voice_data`` waits for room instead of raising.
    """


def _length(data: bytes | bytearray | memoryview) -> int:
    if isinstance(data, bytes | bytearray):
        return len(data)
    if isinstance(data, memoryview):
        return data.nbytes
    raise UsageError(f"PCM data must be bytes-like, got {type(data).__name__}")


def _check_whole_samples(size: int, what: str) -> None:
    if size % BYTES_PER_SAMPLE:
        raise UsageError(
            f"{what} is {size} bytes, not a whole number of {BYTES_PER_SAMPLE}-byte stereo s16le "
            f"samples (48 kHz, 16-bit, 2 channels); PCM can only be queued in whole samples"
        )


class PcmBuffer:
    """A bounded FIFO of s16le stereo PCM that hands out exactly one frame at a time.

    Reading advances an offset instead of deleting from the front, so a frame costs one copy of
    3840 bytes rather than a move of the whole backlog; the consumed prefix is dropped once it
    is at least half the storage, which keeps that amortised constant.
    """

    __slots__ = ("_capacity", "_data", "_read")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool):
            raise UsageError(f"capacity must be an int, got {type(capacity).__name__}")
        if capacity < PCM_BLOCK_SIZE or capacity % BYTES_PER_SAMPLE:
            raise UsageError(
                f"capacity must be at least one frame ({PCM_BLOCK_SIZE} bytes) and a whole "
                f"number of {BYTES_PER_SAMPLE}-byte samples, got {capacity}"
            )
        self._capacity = capacity
        self._data = bytearray()
        self._read = 0

    def __repr__(self) -> str:
        return f"<PcmBuffer {self.bytes_queued}/{self._capacity} bytes>"

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def bytes_queued(self) -> int:
        """Discore's ``BytesToSend``: PCM accepted and not yet handed out as a frame."""
        return len(self._data) - self._read

    @property
    def free(self) -> int:
        return self._capacity - self.bytes_queued

    @property
    def frames_ready(self) -> int:
        """Whole frames :meth:`read_frame` can return now (a partial tail does not count)."""
        return self.bytes_queued // PCM_BLOCK_SIZE

    def can_accept(self, size: int) -> bool:
        """Discore's ``CanSendVoiceData``: whether ``write`` of ``size`` bytes would succeed."""
        return 0 <= size <= self.free

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue all of ``data`` or nothing; raise :class:`VoiceBufferFull` when it does not fit.

        All or nothing, so a caller that catches the error can retry the same block later
        without tracking how much of it went in.
        """
        size = _length(data)
        _check_whole_samples(size, "PCM data")
        if size > self._capacity:
            raise UsageError(
                f"{size} bytes of PCM can never fit in a {self._capacity}-byte voice buffer; "
                "write it in smaller blocks, await send_voice_data() (it waits for room as the "
                "buffer drains), or open the connection with a larger buffer_size="
            )
        if size > self.free:
            raise VoiceBufferFull(
                f"the voice buffer has room for {self.free} of the {size} bytes offered "
                f"({self.bytes_queued} of {self._capacity} queued); wait for room"
            )
        self._data += data

    def write_partial(self, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as fits, in whole samples; return how many bytes went in.

        This is what lets an awaiting writer push a block larger than the whole buffer: queue a
        part, wait for room, queue the rest.
        """
        size = _length(data)
        _check_whole_samples(size, "PCM data")
        room = self.free
        if size <= room:
            self._data += data
            return size
        # ``room`` is a whole number of samples: capacity and everything queued are.
        self._data += memoryview(data).cast("B")[:room]
        return room

    def read_frame(self) -> bytes | None:
        """One whole frame, or ``None`` while less than a frame is queued (the rest waits)."""
        start = self._read
        end = start + PCM_BLOCK_SIZE
        data = self._data
        if end > len(data):
            return None
        frame = bytes(data[start:end])
        if end == len(data):
            data.clear()
            self._read = 0
        elif end >= len(data) - end:
            del data[:end]
            self._read = 0
        else:
            self._read = end
        return frame

    def flush_padded(self) -> int:
        """Pad a trailing partial frame with silence so it can be read; return the bytes added.

        Called when the audio stops: without it the last few milliseconds would wait forever
        for data that is not coming. The padding may overshoot the capacity by under one frame,
        which is harmless and better than dropping the tail.
        """
        partial = self.bytes_queued % PCM_BLOCK_SIZE
        if not partial:
            return 0
        padding = PCM_BLOCK_SIZE - partial
        self._data += bytes(padding)
        return padding

    def clear(self) -> int:
        """Discore's ``ClearVoiceBuffer``: drop everything queued; return how many bytes."""
        dropped = self.bytes_queued
        self._data.clear()
        self._read = 0
        return dropped


def check_gain(gain: object) -> float:
    """Validate a volume: a finite number from 0 (mute) to :data:`MAX_GAIN`; 1.0 is unchanged."""
    if isinstance(gain, bool) or not isinstance(gain, int | float):
        raise UsageError(f"volume must be a number, got {type(gain).__name__}")
    value = float(gain)
    if not math.isfinite(value) or not 0.0 <= value <= MAX_GAIN:
        raise UsageError(f"volume must be a finite number from 0.0 to {MAX_GAIN}, got {gain!r}")
    return value


def _table(gain: float) -> list[int]:
    table = _tables.get(gain)
    if table is None:
        # Indexed by the sample's bits read as unsigned, so lookup needs no sign handling; the
        # entries are the scaled, rounded and clipped samples, again as unsigned bits.
        table = [
            min(_S16_MAX, max(_S16_MIN, round((u - 65_536 if u > _S16_MAX else u) * gain))) & 0xFFFF
            for u in range(65_536)
        ]
        if len(_tables) >= _MAX_TABLES:
            _tables.pop(next(iter(_tables)))
        _tables[gain] = table
    return table


def apply_volume(pcm: bytes, gain: float) -> bytes:
    """Scale s16le samples by ``gain``, rounding, and clipping to the 16-bit range.

    Clipping instead of wrapping: a sample pushed past 32767 that wrapped to -32768 would be a
    loud click, while a clipped one is merely distorted. Gain 1.0 returns ``pcm`` itself, so a
    source at full volume pays nothing.
    """
    gain = check_gain(gain)
    _check_whole_samples(len(pcm), "PCM data")
    if gain == 1.0:
        return pcm
    if gain == 0.0:
        return bytes(len(pcm))
    samples = array.array("H", pcm)
    if not _LITTLE_ENDIAN:
        samples.byteswap()
    table = _table(gain)
    out = array.array("H", [table[u] for u in samples])
    if not _LITTLE_ENDIAN:
        out.byteswap()
    return out.tobytes()
