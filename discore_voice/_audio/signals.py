"""PCM helpers for checking what a listener heard against what a bot sent.

The demo, the simulator and the tests all ask the same question: "is this the audio we sent,
after a lossy codec and an unknown delay?". Answering it needs a test tone, an alignment search
and a correlation, in plain Python: numpy is not a dependency, and ``sum(map(mul, ...))`` over
``array`` objects is fast enough for the few seconds of audio involved.
"""

from __future__ import annotations

import array
import math
import sys
from dataclasses import dataclass
from itertools import pairwise
from operator import mul

__all__ = [
    "AlignedMatch",
    "channel",
    "correlation",
    "find_alignment",
    "melody_pcm",
    "sine_pcm",
    "zero_crossing_frequency",
]

SAMPLE_RATE = 48_000
_CHANNELS = 2


def sine_pcm(seconds: float, *, hz: float = 440.0, amplitude: float = 0.3) -> bytes:
    """A stereo s16le tone, the same on both channels, at 48 kHz."""
    peak = amplitude * 32767
    step = 2 * math.pi * hz / SAMPLE_RATE
    count = round(seconds * SAMPLE_RATE)
    samples = array.array("h", bytes(count * _CHANNELS * 2))
    for i in range(count):
        value = round(peak * math.sin(step * i))
        samples[2 * i] = value
        samples[2 * i + 1] = value
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def melody_pcm(seconds: float = 3.0, *, amplitude: float = 0.3) -> bytes:
    """An arpeggio (C5 E5 G5 C6, repeated) with short fades: the demo's clip.

    Unlike a steady tone, it lines up with a copy of itself at one delay only, so matching what
    a listener heard against it proves order and timing as well as pitch.
    """
    notes = (523.25, 659.25, 783.99, 1046.5)
    note_samples = SAMPLE_RATE // 4
    fade = SAMPLE_RATE // 200
    peak = amplitude * 32767
    count = round(seconds * SAMPLE_RATE)
    samples = array.array("h", bytes(count * _CHANNELS * 2))
    phase = 0.0
    for i in range(count):
        position = i % note_samples
        hz = notes[(i // note_samples) % len(notes)]
        phase += 2 * math.pi * hz / SAMPLE_RATE
        envelope = min(1.0, position / fade, (note_samples - position) / fade)
        value = round(peak * envelope * math.sin(phase))
        samples[2 * i] = value
        samples[2 * i + 1] = value
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def channel(pcm: bytes, index: int = 0) -> array.array[int]:
    """One channel of interleaved stereo s16le PCM."""
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 4])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples[index::_CHANNELS]


def correlation(a: array.array[int] | list[float], b: array.array[int] | list[float]) -> float:
    """Pearson correlation of two equally long signals; 0.0 when either is constant."""
    n = min(len(a), len(b))
    if n == 0:
        return 0.0
    a, b = a[:n], b[:n]
    mean_a, mean_b = sum(a) / n, sum(b) / n
    cov = sum(map(mul, a, b)) - n * mean_a * mean_b
    var_a = sum(map(mul, a, a)) - n * mean_a * mean_a
    var_b = sum(map(mul, b, b)) - n * mean_b * mean_b
    if var_a <= 0 or var_b <= 0:
        return 0.0
    return float(cov / math.sqrt(var_a * var_b))


@dataclass(frozen=True, slots=True)
class AlignedMatch:
    """How well ``received`` matches ``reference`` once shifted by ``lag`` samples."""

    lag: int
    correlation: float


def find_alignment(
    reference: array.array[int], received: array.array[int], *, max_lag: int = 2_000
) -> AlignedMatch:
    """Search the codec and network delay, then correlate the whole overlap at that delay.

    The search uses one 20 ms window, so its cost stays small for any length; the final
    correlation covers everything both signals share.
    """
    window = min(960, len(reference))
    probe = reference[:window]
    best_lag, best = 0, -2.0
    for lag in range(max(0, min(max_lag, len(received) - window) + 1)):
        score = correlation(probe, received[lag : lag + window])
        if score > best:
            best_lag, best = lag, score
    overlap = min(len(reference), len(received) - best_lag)
    if overlap <= 0:
        return AlignedMatch(best_lag, 0.0)
    whole = correlation(reference[:overlap], received[best_lag : best_lag + overlap])
    return AlignedMatch(best_lag, whole)


def zero_crossing_frequency(samples: array.array[int]) -> float:
    """A pure tone's frequency, from its sign changes; enough to tell 440 Hz from 880 Hz."""
    if len(samples) < 2:
        return 0.0
    crossings = sum(1 for x, y in pairwise(samples) if (x < 0) != (y < 0))
    return crossings / 2 / (len(samples) / SAMPLE_RATE)
