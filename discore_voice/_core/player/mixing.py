"""Summing 20 ms PCM frames: per-input gain ramps, ducking, and a soft clip.

A mix is computed once per sent frame, for every connection that plays more than one thing (or
one thing at a gain other than 1.0), so it is vector arithmetic in numpy: a frame is 1920
samples, and a Python loop over them costs ~300 µs where numpy costs a few.

Gain changes ramp linearly across one frame instead of stepping at its start: a step in the
middle of a waveform is a click, and a volume knob turned by a user (or a duck that starts under
speech) must not click. A sum that goes past full scale is bent smoothly into it (a tanh knee
from :data:`SOFT_CLIP_KNEE`) instead of being cut flat, which is what makes two loud tracks
sound loud rather than broken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ..._errors import UsageError
from ..pcm_buffer import PCM_BLOCK_SIZE

__all__ = ["SOFT_CLIP_KNEE", "Ducking", "DuckingEnvelope", "MixInput", "mix"]

#: Samples per channel in one frame.
_SAMPLES: Final = PCM_BLOCK_SIZE // 4
_FULL_SCALE: Final = 32_767.0
#: Where the soft clip starts bending, as a fraction of full scale: below it samples are exact.
SOFT_CLIP_KNEE: Final = 0.8
_KNEE: Final = SOFT_CLIP_KNEE * _FULL_SCALE
_HEADROOM: Final = _FULL_SCALE - _KNEE
# One ramp from 0 to 1 across a frame, per sample pair (both channels share a gain).
_RAMP: Final = np.repeat(
    np.linspace(0.0, 1.0, _SAMPLES, endpoint=False, dtype=np.float32) + (1.0 / _SAMPLES), 2
).astype(np.float32)

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class MixInput:
    """One input's frame, and its gain at the frame's start and at its end."""

    pcm: bytes
    gain_from: float
    gain_to: float


def _scaled(item: MixInput) -> Samples:
    samples = np.frombuffer(item.pcm, dtype="<i2").astype(np.float32)
    if item.gain_from == item.gain_to:
        if item.gain_to != 1.0:
            samples *= np.float32(item.gain_to)
        return samples
    gains = np.float32(item.gain_from) + _RAMP * np.float32(item.gain_to - item.gain_from)
    samples *= gains
    return samples


def soft_clip(samples: Samples) -> Samples:
    """Bend what lies above the knee into the range left, so no sample passes full scale."""
    magnitude = np.abs(samples)
    if float(magnitude.max(initial=0.0)) <= _KNEE:
        return samples
    over = magnitude > _KNEE
    bent = _KNEE + _HEADROOM * np.tanh((magnitude[over] - _KNEE) / _HEADROOM)
    samples[over] = np.copysign(bent, samples[over])
    return samples


def mix(inputs: Sequence[MixInput]) -> bytes:
    """One frame of s16le stereo: the inputs scaled, summed and soft-clipped."""
    if not inputs:
        return bytes(PCM_BLOCK_SIZE)
    if len(inputs) == 1 and inputs[0].gain_from == inputs[0].gain_to == 1.0:
        return inputs[0].pcm
    total = _scaled(inputs[0])
    for item in inputs[1:]:
        total += _scaled(item)
    total = soft_clip(total)
    return np.rint(total).astype("<i2").tobytes()


@dataclass(frozen=True, slots=True)
class Ducking:
    """Lower the other tracks while a track that ducks them plays (speech over music).

    ``level`` is the gain the others fall to; ``attack`` and ``release`` are how long, in
    seconds, the fall and the recovery take. The recovery is slower, so that pauses between
    sentences do not pump the music up and down.
    """

    level: float = 0.25
    attack: float = 0.04
    release: float = 0.4

    def __post_init__(self) -> None:
        for name in ("level", "attack", "release"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"Ducking.{name} must be a number, got {type(value).__name__}")
        if not 0.0 <= self.level <= 1.0:
            raise UsageError(f"Ducking.level must be from 0.0 to 1.0, got {self.level!r}")
        if not (0.0 <= self.attack <= 10.0 and 0.0 <= self.release <= 10.0):
            raise UsageError("Ducking.attack and Ducking.release must be 0 to 10 seconds")


class DuckingEnvelope:
    """The gain ducking applies to the other tracks, moved one frame at a time."""

    __slots__ = ("_gain", "ducking")

    def __init__(self, ducking: Ducking) -> None:
        self.ducking = ducking
        self._gain = 1.0

    @property
    def gain(self) -> float:
        return self._gain

    def step(self, ducked: bool) -> tuple[float, float]:
        """Advance one frame; the gain at its start and at its end."""
        start = self._gain
        d = self.ducking
        target = d.level if ducked else 1.0
        span = d.attack if ducked else d.release
        step = (1.0 - d.level) * 0.02 / span if span > 0 else 1.0
        gain = max(target, start - step) if start > target else min(target, start + step)
        # Land exactly on the target: a gain of 0.9999999 would keep a lone Ogg track from
        # passing through again once the ducking is over.
        self._gain = target if abs(gain - target) < 1e-6 else gain
        return start, self._gain
