"""What the simulator measured about the media it received, per SSRC and per socket.

A bot's audio quality problems (a sender that falls behind, a counter that jumps, bursts after a
stall) show up only in the timing and numbering of its packets, never in any single packet. So
each stream keeps its counters and every inter-arrival gap, and tests assert on those instead of
on sleeps. Arrival times come from the kernel's receive timestamp when the socket provides one:
a timestamp taken in Python after a scheduler hop would measure the event loop, not the sender.

Pure bookkeeping: no sockets, no clocks; the media server passes arrival times in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from .._core.rtp import SAMPLES_PER_FRAME, sequence_distance, timestamp_distance
from .._core.speaking import OPUS_SILENCE_FRAME

__all__ = ["ClockSource", "MediaStats", "StreamStats", "keep_newest", "percentile"]

#: ``"kernel"``: SO_TIMESTAMPNS receive timestamps; ``"monotonic"``: ``time.monotonic_ns`` taken
#: when the packet was read, which includes scheduling delay.
ClockSource = Literal["kernel", "monotonic"]

#: How many recent sequence numbers are remembered to tell a duplicate from a late packet.
_DUPLICATE_WINDOW = 1024

_T = TypeVar("_T")


def keep_newest(items: list[_T], keep: int | None) -> None:
    """Bound a per-packet history to (at least) its newest ``keep`` items; None keeps all.

    The list is cut back to ``keep`` only once it holds twice that, so a long run pays O(1) per
    item amortised instead of copying the list on every append; the price is holding up to
    ``2 * keep`` items. Lists stay lists, so callers keep slicing and comparing them.
    """
    if keep is not None and len(items) > 2 * keep:
        del items[: len(items) - keep]


def percentile(values: list[int], fraction: float) -> int:
    """Nearest-rank percentile: always a value that was really observed, never an interpolation."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(eq=False)
class StreamStats:
    """One sender's stream (one SSRC) as the receiver saw it.

    Sequence numbers are extended past their 16-bit wrap, so ``lost`` stays right on long
    streams: it is what should have arrived between the first and the highest packet, minus what
    did (duplicates excluded). Reordered packets therefore do not count as lost once they arrive.
    """

    ssrc: int
    clock: ClockSource = "monotonic"
    packets: int = 0
    octets: int = 0
    silence_frames: int = 0
    duplicates: int = 0
    reordered: int = 0
    #: In-order successors whose timestamp did not advance by 960 per sequence step.
    timestamp_jumps: int = 0
    #: Sequence gaps seen when they opened (a later reordered packet may fill one).
    gap_events: int = 0
    #: Inter-arrival gaps in nanoseconds, in arrival order.
    gaps_ns: list[int] = field(default_factory=list, repr=False)
    #: Keep only (at least) the newest this many gaps (see :func:`keep_newest`); None: all.
    #: Simulated members set it, so a long run with many listeners stays bounded.
    max_gaps: int | None = field(default=None, repr=False)
    _first_ext: int | None = field(default=None, repr=False)
    _highest_ext: int = field(default=0, repr=False)
    _highest_seq: int = field(default=0, repr=False)
    _highest_ts: int = field(default=0, repr=False)
    _unique: int = field(default=0, repr=False)
    _recent: deque[int] = field(default_factory=deque, repr=False)
    _recent_set: set[int] = field(default_factory=set, repr=False)
    _last_arrival_ns: int | None = field(default=None, repr=False)

    def observe(self, sequence: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        """Account for one decrypted packet."""
        self.packets += 1
        self.octets += len(payload)
        if payload == OPUS_SILENCE_FRAME:
            self.silence_frames += 1
        if self._last_arrival_ns is not None:
            self.gaps_ns.append(max(0, arrival_ns - self._last_arrival_ns))
            keep_newest(self.gaps_ns, self.max_gaps)
        self._last_arrival_ns = arrival_ns
        if self._first_ext is None:
            self._first_ext = self._highest_ext = sequence
            self._highest_seq, self._highest_ts = sequence, timestamp
            self._unique = 1
            self._remember(sequence)
            return
        step = sequence_distance(self._highest_seq, sequence)
        extended = self._highest_ext + step
        if extended in self._recent_set:
            self.duplicates += 1
            return
        self._unique += 1
        self._remember(extended)
        if step > 0:
            if step > 1:
                self.gap_events += 1
            expected = (self._highest_ts + step * SAMPLES_PER_FRAME) & 0xFFFFFFFF
            if timestamp_distance(expected, timestamp) != 0:
                self.timestamp_jumps += 1
            self._highest_ext, self._highest_seq, self._highest_ts = extended, sequence, timestamp
        else:
            self.reordered += 1
            self._first_ext = min(self._first_ext, extended)

    def _remember(self, extended: int) -> None:
        self._recent.append(extended)
        self._recent_set.add(extended)
        if len(self._recent) > _DUPLICATE_WINDOW:
            self._recent_set.discard(self._recent.popleft())

    @property
    def expected(self) -> int:
        """Packets between the lowest and the highest sequence number seen, inclusive."""
        if self._first_ext is None:
            return 0
        return self._highest_ext - self._first_ext + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self._unique)

    def gap_percentile_ms(self, fraction: float) -> float:
        return percentile(self.gaps_ns, fraction) / 1e6

    @property
    def gap_p50_ms(self) -> float:
        return self.gap_percentile_ms(0.50)

    @property
    def gap_p99_ms(self) -> float:
        return self.gap_percentile_ms(0.99)

    @property
    def gap_max_ms(self) -> float:
        return max(self.gaps_ns, default=0) / 1e6

    def summary(self) -> dict[str, object]:
        """A plain dict for logs and reports (no secrets: a stream has none)."""
        return {
            "ssrc": self.ssrc,
            "clock": self.clock,
            "packets": self.packets,
            "octets": self.octets,
            "silence_frames": self.silence_frames,
            "lost": self.lost,
            "gap_events": self.gap_events,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "timestamp_jumps": self.timestamp_jumps,
            "gap_p50_ms": self.gap_p50_ms,
            "gap_p99_ms": self.gap_p99_ms,
            "gap_max_ms": self.gap_max_ms,
        }


@dataclass(eq=False)
class MediaStats:
    """The UDP socket as a whole: what arrived, what was answered, and why the rest was dropped.

    Drops are counted by reason and never raise: a bot that sends garbage must see its audio
    missing from the recording, not a crashed simulator.
    """

    clock: ClockSource = "monotonic"
    #: Datagrams read from the socket, before inbound faults dropped or duplicated any.
    received: int = 0
    #: Datagrams handled (after inbound faults).
    datagrams: int = 0
    ip_discovery_requests: int = 0
    rtcp_packets: int = 0
    rtp_packets: int = 0
    relayed: int = 0
    sent: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    streams: dict[int, StreamStats] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def stream(self, ssrc: int) -> StreamStats:
        stats = self.streams.get(ssrc)
        if stats is None:
            stats = self.streams[ssrc] = StreamStats(ssrc, self.clock)
        return stats
