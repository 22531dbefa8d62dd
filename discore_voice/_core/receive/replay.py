"""Which RTP packets were received already: duplicates and replays never reach DAVE or a decoder.

A voice server may deliver a packet twice (a network duplicate), and a hostile one may replay
old packets at will; both would decrypt again, since the transport key and nonce still match.
DAVE rejects a frame it has opened before (its own replay protection), so a duplicate that
reached it would count as a decryption failure, and without DAVE it would play twice. So each
sender's RTP sequence numbers are remembered over a window, as IPsec and SRTP do:

- ahead of the highest seen: new (the window slides);
- within :data:`WINDOW` behind it: new if not seen yet (reordered), else a duplicate;
- further behind: too old to tell, so dropped as stale (20 s of audio: no receiver plays it),
  unless :data:`RESTART_AFTER` of them come in a row: then the sender restarted its sequence
  numbers, and the window starts over from them rather than staying deaf until they wrap
  around (up to 22 minutes: Songbird #261's withheld audio, one layer earlier). Only the voice
  server can send packets that authenticate, and it could forge new ones anyway; what this
  filter stops is the network's duplicates, and DAVE's own check stops replays of its frames.

Sequence numbers are compared in 16-bit serial order, so the wrap from 65535 to 0 is "ahead".
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final

__all__ = ["RESTART_AFTER", "WINDOW", "ReplayFilter", "Verdict"]

#: Sequence numbers remembered per sender: 1024 packets, about 20 s of audio.
WINDOW: Final = 1024
#: Stale packets in a row from one sender that mean its sequence numbers restarted (0.6 s).
RESTART_AFTER: Final = 32
_MASK: Final = (1 << WINDOW) - 1
_MODULUS: Final = 1 << 16
_HALF: Final = _MODULUS // 2


class Verdict(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    STALE = "stale"


class ReplayFilter:
    """The window of each SSRC heard; the ``max_sources`` most recently heard are kept."""

    __slots__ = ("_max_sources", "_sources", "_stale_runs")

    def __init__(self, max_sources: int = 256) -> None:
        self._max_sources = max_sources
        # ssrc -> (highest sequence, bit i set: highest - i was received)
        self._sources: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._stale_runs: dict[int, int] = {}  # ssrc -> stale packets in a row

    def __len__(self) -> int:
        return len(self._sources)

    def check(self, ssrc: int, sequence: int) -> Verdict:
        """Whether packet ``sequence`` of ``ssrc`` is new, and remember it if so."""
        sources = self._sources
        state = sources.get(ssrc)
        if state is None:
            sources[ssrc] = (sequence, 1)
            if len(sources) > self._max_sources:
                evicted, _ = sources.popitem(last=False)
                self._stale_runs.pop(evicted, None)
            return Verdict.NEW
        sources.move_to_end(ssrc)
        highest, seen = state
        ahead = (sequence - highest) % _MODULUS
        if ahead == 0:
            return Verdict.DUPLICATE
        if ahead < _HALF:
            if self._stale_runs:
                self._stale_runs.pop(ssrc, None)
            shifted = (seen << ahead) & _MASK if ahead < WINDOW else 0
            sources[ssrc] = (sequence, shifted | 1)
            return Verdict.NEW
        behind = _MODULUS - ahead
        if behind >= WINDOW:
            run = self._stale_runs.get(ssrc, 0) + 1
            if run < RESTART_AFTER:
                self._stale_runs[ssrc] = run
                return Verdict.STALE
            self._stale_runs.pop(ssrc, None)
            sources[ssrc] = (sequence, 1)  # a restarted sender: its window starts over
            return Verdict.NEW
        if self._stale_runs:
            self._stale_runs.pop(ssrc, None)
        bit = 1 << behind
        if seen & bit:
            return Verdict.DUPLICATE
        sources[ssrc] = (highest, seen | bit)
        return Verdict.NEW

    def forget(self, ssrc: int) -> None:
        """A sender left: its next packets (a new stream) start a new window."""
        self._sources.pop(ssrc, None)
        self._stale_runs.pop(ssrc, None)
