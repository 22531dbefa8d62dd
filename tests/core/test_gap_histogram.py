"""The send-gap histogram agrees with exact percentiles to within its bin width."""

from __future__ import annotations

import math
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from discore_voice._core.gap_histogram import GapHistogram


def exact_percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def tolerance(value: float) -> float:
    """Half a bin where the value lies, plus float slack."""
    return (0.00005 if value < 0.05 else 0.0005) + 1e-9


gaps = st.lists(
    st.one_of(
        st.floats(min_value=0.0, max_value=0.3),
        st.floats(min_value=0.018, max_value=0.022),
    ),
    min_size=1,
    max_size=400,
)


@given(gaps, st.sampled_from([0.01, 0.5, 0.9, 0.99, 1.0]))
def test_percentile_within_half_a_bin(values: list[float], fraction: float) -> None:
    histogram = GapHistogram()
    for value in values:
        histogram.record(value)
    exact = exact_percentile(values, fraction)
    got = histogram.percentile(fraction)
    if exact < 0.25:
        assert abs(got - exact) <= tolerance(exact)
    else:
        # Beyond a quarter of a second everything shares one bin: the answer is the maximum.
        assert got == max(values)
    assert min(values) <= got <= max(values)
    assert histogram.minimum == min(values)
    assert histogram.maximum == max(values)
    assert histogram.count == len(values)


def test_steady_stream_reports_the_frame_exactly() -> None:
    histogram = GapHistogram()
    for _ in range(1000):
        histogram.record(0.020)
    assert histogram.percentile(0.5) == 0.020
    assert histogram.percentile(0.99) == 0.020


def test_empty_reports_zero() -> None:
    assert GapHistogram().percentile(0.99) == 0.0


def test_memory_does_not_grow_with_the_number_of_gaps() -> None:
    histogram = GapHistogram()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(100_000):
            histogram.record(0.019 + (index % 200) * 0.00001)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1024
    assert histogram.count == 100_000
