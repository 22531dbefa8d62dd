"""Mixing 20 ms PCM frames of several speakers into one, without a per-sample Python loop.

A recorder that wants one track sums every speaker's decoded frame each tick: 1920 samples per
frame, 50 frames a second, per speaker. A Python loop over samples would cost more than the
Opus decoding it follows, numpy is not a dependency for this alone, and ``audioop`` left the
standard library in 3.13. So the sum is done in C by Python's big integers:

- each signed 16-bit sample is biased to unsigned (flip the sign bit) and widened to a 32-bit
  lane, with byte slicing and ``bytes.translate``;
- the lanes of a frame are one integer (``int.from_bytes``), and adding the integers adds every
  lane at once: a lane never carries into the next, since ``n`` biased samples stay below 2**32;
- a constant integer takes the ``n - 1`` surplus biases off every lane and puts 2**31 on it, so
  no lane ever goes negative (no borrow), and a sum that fits 16 bits leaves the lane's top two
  bytes at exactly ``00 80``: two slice comparisons check every lane at once, and the low two
  bytes of each lane, sign bit flipped back, are the mixed frame.

Only a sum that clips (loud speakers together) takes a per-sample loop, and only for that frame.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from typing import Final

from ..._errors import UsageError

__all__ = ["mix_frames"]

_FLIP_SIGN: Final = bytes(range(128, 256)) + bytes(range(128))
_LITTLE: Final = sys.byteorder == "little"
_lane_constants: dict[tuple[int, int], int] = {}


def _widen(frame: bytes) -> int:
    """The frame's samples, biased to unsigned, as 32-bit little-endian lanes of one integer."""
    lanes = bytearray(len(frame) * 2)
    lanes[0::4] = frame[0::2]
    lanes[1::4] = frame[1::2].translate(_FLIP_SIGN)
    return int.from_bytes(lanes, "little")


def _offset(count: int, samples: int) -> int:
    """``2**31 - (count - 1) * 32768`` in each of ``samples`` lanes (see :func:`mix_frames`)."""
    key = (count, samples)
    value = _lane_constants.get(key)
    if value is None:
        lane = ((1 << 31) - (count - 1) * 32768).to_bytes(4, "little")
        value = int.from_bytes(lane * samples, "little")
        if len(_lane_constants) > 64:
            _lane_constants.clear()
        _lane_constants[key] = value
    return value


def mix_frames(frames: Sequence[bytes]) -> bytes:
    """The sum of equally long s16le frames, clipped to 16 bits; one frame is returned as is."""
    if not frames:
        raise UsageError("mix_frames needs at least one frame")
    if len(frames) == 1:
        return bytes(frames[0])
    size = len(frames[0])
    if size % 2 or any(len(frame) != size for frame in frames):
        raise UsageError("mix_frames needs s16le frames of one and the same length")
    samples = size // 2
    count = len(frames)
    if count > 32767:
        raise UsageError("mix_frames mixes at most 32767 frames at once")
    # Each lane ends up as 2**31 + (the sum, biased once): a sum that fits 16 bits leaves bytes
    # 2 and 3 of every lane at exactly 00 80, which two slice comparisons check in C.
    total = _offset(count, samples)
    for frame in frames:
        total += _widen(frame)
    lanes = total.to_bytes(samples * 4, "little")
    if lanes[2::4] == bytes(samples) and lanes[3::4] == b"\x80" * samples:
        out = bytearray(size)
        out[0::2] = lanes[0::4]
        out[1::2] = lanes[1::4].translate(_FLIP_SIGN)
        return bytes(out)
    wide = array.array("I", lanes)
    if not _LITTLE:  # pragma: no cover - every platform we run on is little-endian
        wide.byteswap()
    bias = (1 << 31) + 32768
    clipped = array.array("h", (max(-32768, min(32767, lane - bias)) for lane in wide))
    if not _LITTLE:  # pragma: no cover
        clipped.byteswap()
    return clipped.tobytes()
