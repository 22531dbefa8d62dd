from __future__ import annotations

import array

from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice._audio.signals import (
    channel,
    correlation,
    find_alignment,
    sine_pcm,
    zero_crossing_frequency,
)


@settings(max_examples=6, deadline=None)
@given(st.integers(min_value=0, max_value=1_500))
def test_alignment_finds_a_known_delay(delay: int) -> None:
    # A chirp-like mix, so that no delay but the true one lines up.
    reference = channel(sine_pcm(0.2, hz=440.0))
    mixed = array.array(
        "h",
        (
            a // 2 + b // 2
            for a, b in zip(reference, channel(sine_pcm(0.2, hz=1234.5)), strict=True)
        ),
    )
    received = array.array("h", bytes(2 * delay)) + mixed
    match = find_alignment(mixed, received)
    assert match.lag == delay
    assert match.correlation > 0.999


def test_unrelated_signals_do_not_match() -> None:
    a = channel(sine_pcm(0.1, hz=440.0))
    b = channel(sine_pcm(0.1, hz=1000.0))
    assert abs(correlation(a, b)) < 0.2
    assert correlation(a, array.array("h", bytes(len(a) * 2))) == 0.0


def test_frequency_estimate() -> None:
    assert abs(zero_crossing_frequency(channel(sine_pcm(0.5, hz=440.0))) - 440.0) < 3
    assert abs(zero_crossing_frequency(channel(sine_pcm(0.5, hz=880.0))) - 880.0) < 3
