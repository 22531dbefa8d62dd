"""Which RTP packets were received already: duplicates and replays never reach DAVE or a decoder.

A voice server may deliver a packet twice (a network duplicate), and a hostile one may replay
old packets at will; both would decrypt again, since the transport key and nonce still match.
DAVE rejects a frame it has opened before (its own replay protection), so a duplicate that
reached it would count as a decryption failure, and without DAVE it would play twice. So each
sender's RTP sequence numbers are remembered over a window, as IPsec and SRTP do:

- ahead of the highest seen: new (the window slides);
- within :data:`WINDOW` behind it: new if not seen yet (reordered), else a duplicate;
- further behind: too old to tell, so dropped as stale (20 s of audio: no receiver plays it).

Sequence numbers are compared in 16-bit serial order, so the wrap from 65535 to 0 is "ahead".
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final

__all__ = ["WINDOW", "ReplayFilter", "Verdict"]

#: Sequence numbers remembered per sender: 1024 packets, about 20 s of audio.
WINDOW: Final = 1024
_MASK: Final = (1 << WINDOW) - 1
_MODULUS: Final = 1 << 16
_HALF: Final = _MODULUS // 2


class Verdict(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    STALE = "stale"


class ReplayFilter:
    """The window of each SSRC heard; the ``max_sources`` most recently heard are kept."""

    __slots__ = ("_max_sources", "_sources")

    def __init__(self, max_sources: int = 256) -> None:
        self._max_sources = max_sources
        # ssrc -> (highest sequence, bit i set: highest - i was received)
        self._sources: OrderedDict[int, tuple[int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def check(self, ssrc: int, sequence: int) -> Verdict:
        """Whether packet ``sequence`` of ``ssrc`` is new, and remember it if so."""
        sources = self._sources
        state = sources.get(ssrc)
        if state is None:
            sources[ssrc] = (sequence, 1)
            if len(sources) > self._max_sources:
                sources.popitem(last=False)
            return Verdict.NEW
        sources.move_to_end(ssrc)
        highest, seen = state
        ahead = (sequence - highest) % _MODULUS
        if ahead == 0:
            return Verdict.DUPLICATE
        if ahead < _HALF:
            shifted = (seen << ahead) & _MASK if ahead < WINDOW else 0
            sources[ssrc] = (sequence, shifted | 1)
            return Verdict.NEW
        behind = _MODULUS - ahead
        if behind >= WINDOW:
            return Verdict.STALE
        bit = 1 << behind
        if seen & bit:
            return Verdict.DUPLICATE
        sources[ssrc] = (highest, seen | bit)
        return Verdict.NEW

    def forget(self, ssrc: int) -> None:
        """A sender left: its next packets (a new stream) start a new window."""
        self._sources.pop(ssrc, None)
