"""The main gateway's send limits, and reconnect backoff, as pure arithmetic on given times.

Discord disconnects a connection that sends more than 120 events in 60 seconds, and answers an
identify over the concurrency limit (``max_concurrency`` per 5 seconds) with an invalid session.
Both limiters take ``now`` as a number so they can be tested without a clock; the trio shell
passes ``trio.current_time()``.
"""

from __future__ import annotations

from collections import deque

from ..._errors import UsageError

__all__ = ["IdentifyLimiter", "ReconnectBackoff", "SendRateLimiter"]


class SendRateLimiter:
    """A sliding-window log of one connection's sends.

    Ordinary sends may use ``limit - reserved`` slots of each window; priority sends (heartbeats,
    identify, resume) may use all ``limit``. A burst of voice state updates therefore never
    delays a heartbeat, which would get the connection closed as a zombie. The default limit of
    110 leaves headroom under Discord's 120 for clock skew between us and Discord.

    A send at time ``t`` occupies its slot while ``t + window > now``.
    """

    __slots__ = ("_limit", "_reserved", "_sent", "_window")

    def __init__(self, *, limit: int = 110, window: float = 60.0, reserved: int = 5) -> None:
        if not 0 <= reserved < limit:
            raise UsageError("reserved must be at least 0 and below limit")
        if not window > 0:
            raise UsageError("window must be positive")
        self._limit = limit
        self._window = window
        self._reserved = reserved
        self._sent: deque[float] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] + self._window <= now:
            self._sent.popleft()

    def delay(self, now: float, *, priority: bool = False) -> float:
        """Seconds to wait before the next send may go; 0 means now."""
        self._expire(now)
        cap = self._limit if priority else self._limit - self._reserved
        if len(self._sent) < cap:
            return 0.0
        # The send that must expire to free a slot for us.
        return self._sent[len(self._sent) - cap] + self._window - now

    def record(self, now: float) -> None:
        """Count a send made at ``now`` (call it only after :meth:`delay` returned 0)."""
        self._sent.append(now)

    def free(self, now: float, *, priority: bool = False) -> int:
        """How many sends may go at ``now`` without waiting."""
        self._expire(now)
        cap = self._limit if priority else self._limit - self._reserved
        return cap - len(self._sent)

    def in_window(self, now: float) -> int:
        self._expire(now)
        return len(self._sent)

    def reset(self) -> None:
        """The limit is per connection: a new connection starts with an empty window."""
        self._sent.clear()


class IdentifyLimiter:
    """Spaces identifies by ``interval`` seconds within each ``shard_id % max_concurrency`` bucket.

    Shards of one bot in one process should share one limiter; ``max_concurrency`` comes from
    ``session_start_limit.max_concurrency`` of ``GET /gateway/bot`` (1 for most bots).
    """

    __slots__ = ("_interval", "_max_concurrency", "_next_free")

    def __init__(self, *, max_concurrency: int = 1, interval: float = 5.0) -> None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise UsageError("max_concurrency must be an integer")
        if max_concurrency < 1:
            raise UsageError("max_concurrency must be at least 1")
        if not interval > 0:
            raise UsageError("interval must be positive")
        self._max_concurrency = max_concurrency
        self._interval = interval
        self._next_free: dict[int, float] = {}

    @property
    def max_concurrency(self) -> int:
        """How many shards may identify per 5 seconds, one per bucket (``GET /gateway/bot``)."""
        return self._max_concurrency

    def reserve(self, now: float, shard_id: int) -> float:
        """Book the next identify slot of ``shard_id``'s bucket; return when it may be sent."""
        bucket = shard_id % self._max_concurrency
        free = self._next_free.get(bucket, now)
        if free - now > self._interval * 1000:
            # The booking came from another clock (another trio run); it is meaningless here.
            free = now
        at = max(now, free)
        self._next_free[bucket] = at + self._interval
        return at


class ReconnectBackoff:
    """Exponential backoff with jitter for reconnects that keep failing."""

    __slots__ = ("_attempts", "_base", "_maximum")

    def __init__(self, *, base: float = 1.0, maximum: float = 60.0) -> None:
        self._base = base
        self._maximum = maximum
        self._attempts = 0

    @property
    def attempts(self) -> int:
        return self._attempts

    def next_delay(self, fraction: float) -> float:
        """The next wait; ``fraction`` in [0, 1) spreads it over [delay / 2, delay)."""
        delay: float = min(self._maximum, self._base * 2.0 ** min(self._attempts, 32))
        self._attempts += 1
        return delay / 2 + delay / 2 * min(max(fraction, 0.0), 1.0)

    def reset(self) -> None:
        self._attempts = 0
