"""Scripted network faults for the voice simulator: UDP impairment, and websocket closes on cue.

Every random choice comes from one seeded :class:`random.Random`, so a failing test replays the
same losses in the same places. The UDP impairment is a pure function from a datagram to what
leaves the link and when (:meth:`UdpFaults.apply`); the media server does the waiting. That keeps
the decision logic testable without sockets, and lets a test with a ``MockClock`` control delays.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .._errors import UsageError

__all__ = ["ABRUPT", "UdpFaults", "WebSocketFault"]

#: Close "code" meaning: drop the TCP connection without a close frame (what clients see as 1006).
ABRUPT = 1006

_T = TypeVar("_T")


def _rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"{name} must be a probability between 0 and 1, got {value}")
    return value


@dataclass(eq=False)
class UdpFaults(Generic[_T]):
    """Impairs one direction of the UDP link at fixed rates.

    ``reorder`` holds a datagram back and lets the next one overtake it; ``delay`` adds
    ``delay_seconds`` to a datagram (which also reorders it relative to undelayed ones).
    ``jitter`` (seconds) adds a uniform random delay in ``[0, jitter]`` to every datagram that
    leaves, each copy drawn on its own: a jitter above the 20 ms frame spacing reorders a
    stream the way a congested path does, with no datagram later than the bound.
    Each datagram is decided independently, in the order drop, duplicate, reorder, delay, so a
    dropped datagram is never also duplicated. Items are opaque (the media server passes a
    datagram with its destination), so a held datagram keeps its address.

    Jitter draws from its own generator (seeded from ``seed`` as well), so turning it on leaves
    every drop, duplicate, reorder and delay decision of a seed exactly where it was.
    """

    seed: int = 0
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    delay_seconds: float = 0.05
    jitter: float = 0.0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0
    #: Datagrams that left with a jitter delay added (duplicates counted once per copy).
    jittered: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _jitter_rng: random.Random = field(init=False, repr=False)
    _held: _T | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "delay"):
            _rate(name, getattr(self, name))
        if self.delay_seconds < 0:
            raise UsageError("delay_seconds cannot be negative")
        if not 0.0 <= self.jitter < float("inf"):
            raise UsageError(f"jitter must be a finite number of seconds >= 0, got {self.jitter}")
        self._rng = random.Random(self.seed)
        self._jitter_rng = random.Random(f"jitter-{self.seed}")

    def apply(self, datagram: _T) -> list[tuple[float, _T]]:
        """What leaves the link for one datagram: ``(delay in seconds, datagram)`` pairs."""
        rng = self._rng
        # Draw every number each time, so one rate's value never shifts another's decisions.
        drop, dup, reorder, delay = rng.random(), rng.random(), rng.random(), rng.random()
        if drop < self.drop:
            self.dropped += 1
            return []
        copies = [datagram]
        if dup < self.duplicate:
            self.duplicated += 1
            copies.append(datagram)
        if reorder < self.reorder and self._held is None:
            self.reordered += 1
            self._held = datagram
            copies.pop(0)
            return [(self._jittered(0.0), copy) for copy in copies]
        wait = 0.0
        if delay < self.delay:
            self.delayed += 1
            wait = self.delay_seconds
        out = [(self._jittered(wait), copy) for copy in copies]
        if self._held is not None:
            out.append((self._jittered(wait), self._held))
            self._held = None
        return out

    def flush(self) -> list[tuple[float, _T]]:
        """Release a held datagram (at the end of a stream nothing would overtake it)."""
        held, self._held = self._held, None
        return [] if held is None else [(0.0, held)]

    def _jittered(self, wait: float) -> float:
        if self.jitter <= 0.0:
            return wait
        self.jittered += 1
        return wait + self._jitter_rng.uniform(0.0, self.jitter)


@dataclass(frozen=True)
class WebSocketFault:
    """Close a voice websocket when the server receives op ``on_op`` (the ``after``-th time).

    ``code`` is any close code, or :data:`ABRUPT` to drop the TCP connection without a close
    frame. ``user_id`` limits the fault to one user's connections. Rules fire once.
    """

    on_op: int
    code: int
    after: int = 1
    user_id: int | None = None
    reason: str = "fault injected by the simulator"
