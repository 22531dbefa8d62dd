"""The mixer's arithmetic: sums, ramps, the soft clip and the ducking envelope."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice._core.pcm_buffer import PCM_BLOCK_SIZE
from discore_voice._core.player.mixing import (
    SOFT_CLIP_KNEE,
    Ducking,
    DuckingEnvelope,
    MixInput,
    mix,
    soft_clip,
)
from discore_voice._errors import UsageError

SAMPLES = PCM_BLOCK_SIZE // 2
frames = st.binary(min_size=PCM_BLOCK_SIZE, max_size=PCM_BLOCK_SIZE)
gains = st.floats(min_value=0.0, max_value=4.0, allow_nan=False)


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


def constant(value: int) -> bytes:
    return np.full(SAMPLES, value, dtype="<i2").tobytes()


@given(st.lists(st.tuples(frames, gains, gains), min_size=1, max_size=5))
def test_a_mix_is_a_frame_that_never_wraps(inputs: list[tuple[bytes, float, float]]) -> None:
    out = mix([MixInput(*item) for item in inputs])
    assert len(out) == PCM_BLOCK_SIZE
    values = samples(out)
    assert values.max() <= 32767 and values.min() >= -32768


@given(frames)
def test_one_input_at_unity_is_untouched(frame: bytes) -> None:
    assert mix([MixInput(frame, 1.0, 1.0)]) is frame


@given(st.integers(-9000, 9000), st.integers(-9000, 9000))
def test_below_the_knee_a_sum_is_exact(a: int, b: int) -> None:
    out = mix([MixInput(constant(a), 1.0, 1.0), MixInput(constant(b), 1.0, 1.0)])
    assert set(samples(out).tolist()) == {a + b}


def test_loud_sums_bend_smoothly_instead_of_clipping() -> None:
    ramp = np.linspace(-3.0, 3.0, 10_001, dtype=np.float32) * 32767
    bent = soft_clip(ramp.copy())
    assert np.all(np.abs(bent) <= 32767)
    assert np.all(np.diff(bent) >= 0)  # monotonic: no fold-back
    moderate = np.abs(ramp) < 1.5 * 32767
    assert np.all(np.diff(bent[moderate]) > 0)  # and still rising well past full scale
    knee = SOFT_CLIP_KNEE * 32767
    inside = np.abs(ramp) <= knee
    assert np.array_equal(bent[inside], ramp[inside])
    two_loud = mix([MixInput(constant(30000), 1.0, 1.0)] * 2)
    assert 32000 < samples(two_loud)[0] <= 32767


def test_a_gain_change_ramps_across_the_frame() -> None:
    out = samples(mix([MixInput(constant(10000), 1.0, 0.5)]))
    left = out[0::2]
    assert left[0] == pytest.approx(10000, abs=15)
    assert left[-1] == pytest.approx(5000, abs=15)
    assert np.all(np.diff(left) <= 0)
    assert np.array_equal(out[0::2], out[1::2])  # both channels share the gain


def test_ducking_falls_in_its_attack_and_recovers_in_its_release() -> None:
    envelope = DuckingEnvelope(Ducking(level=0.2, attack=0.04, release=0.2))
    falls = [envelope.step(True) for _ in range(3)]
    assert falls[0] == (1.0, pytest.approx(0.6)) and falls[1][1] == pytest.approx(0.2)
    assert falls[2] == (pytest.approx(0.2), pytest.approx(0.2))
    rises = [envelope.step(False)[1] for _ in range(10)]
    assert rises[9] == pytest.approx(1.0) and rises[8] < 1.0  # 0.2 s: ten frames
    assert envelope.gain == 1.0  # exactly: a lone track passes through again
    instant = DuckingEnvelope(Ducking(level=0.0, attack=0.0, release=0.0))
    assert instant.step(True) == (1.0, 0.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"level": 1.5},
        {"level": -0.1},
        {"attack": -1},
        {"release": 11},
        {"level": "loud"},
        {"attack": True},
        {"release": math.nan},
    ],
)
def test_ducking_settings_are_checked(bad: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Ducking(**bad)  # type: ignore[arg-type]
