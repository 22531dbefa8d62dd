"""Percentiles of the time between sends, in a fixed few kilobytes per connection.

A bot may hold hundreds of connections for days. Keeping each send gap as a float (a minute of
them is 3000 objects, ~100 KiB) costs more memory than the rest of a connection; a histogram
with fixed bins costs 2.8 KiB whatever the duration, and is cumulative over the connection's
life rather than over a sliding window. The bins are fine (0.1 ms) where gaps live, around the
20 ms frame, and coarser (1 ms) out to a quarter of a second; minimum and maximum are exact.
"""

from __future__ import annotations

import math
from array import array
from typing import Final

__all__ = ["GapHistogram"]

_FINE_WIDTH: Final = 0.0001
_FINE_BINS: Final = 500
"""0 to 50 ms in 0.1 ms bins."""
_COARSE_WIDTH: Final = 0.001
_COARSE_BINS: Final = 200
"""50 to 250 ms in 1 ms bins; one more bin holds everything longer."""
_FINE_END: Final = _FINE_WIDTH * _FINE_BINS
_BINS: Final = _FINE_BINS + _COARSE_BINS + 1


def _bin_of(seconds: float) -> int:
    if seconds < _FINE_END:
        return max(0, int(seconds / _FINE_WIDTH))
    return min(_BINS - 1, _FINE_BINS + int((seconds - _FINE_END) / _COARSE_WIDTH))


def _bin_middle(index: int) -> float:
    if index < _FINE_BINS:
        return (index + 0.5) * _FINE_WIDTH
    return _FINE_END + (index - _FINE_BINS + 0.5) * _COARSE_WIDTH


class GapHistogram:
    """Counts of gaps (seconds) per bin, with the exact extremes."""

    __slots__ = ("_counts", "count", "maximum", "minimum")

    def __init__(self) -> None:
        self._counts = array("I", bytes(4 * _BINS))
        self.count = 0
        self.minimum = math.inf
        self.maximum = 0.0

    def record(self, seconds: float) -> None:
        index = _bin_of(seconds)
        if self._counts[index] < 0xFFFFFFFF:
            self._counts[index] += 1
        self.count += 1
        if seconds < self.minimum:
            self.minimum = seconds
        if seconds > self.maximum:
            self.maximum = seconds

    def percentile(self, fraction: float) -> float:
        """The gap below which ``fraction`` of them fall, to within half a bin; 0 with none.

        The answer is the middle of the bin that holds that rank, kept within the exact minimum
        and maximum, so a steady 20 ms stream reports 20 ms, not 20.05.
        """
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index, count in enumerate(self._counts):
            seen += count
            if seen >= rank:
                if index == _BINS - 1:
                    return self.maximum
                return min(self.maximum, max(self.minimum, _bin_middle(index)))
        return self.maximum
