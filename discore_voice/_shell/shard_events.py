"""Fan-out of gateway dispatches to subscribers, without letting any of them hold the shard up.

Each subscription has its own bounded buffer. Publishing never waits: when a subscriber's buffer
is full the event is dropped for that subscriber alone, counted in ``dropped`` and logged, and
the shard and the other subscribers carry on. A gateway shard that waited for its slowest reader
would stop heartbeating and be closed as a zombie.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import trio

from .._closing import ClosesOnExit
from .._errors import UsageError

__all__ = ["EventHub", "Subscription"]

DEFAULT_BUFFER_SIZE = 256


class Subscription(ClosesOnExit):
    """A stream of ``(event_name, data)`` from a shard or a bridge.

    Use it as ``with``/``async with`` (closing it on exit) and ``async for``; iteration ends when
    the shard or bridge stops. ``data`` is the dispatch's ``d`` as received, shared with other
    subscribers: treat it as read-only.
    """

    __slots__ = ("__weakref__", "_hub", "_receive", "_send", "dropped", "event_names")

    def __init__(self, hub: EventHub, event_names: frozenset[str] | None, buffer_size: int) -> None:
        self._hub = hub
        self.event_names = event_names
        """The names subscribed to; None means every event."""
        self.dropped = 0
        """Events dropped because this subscriber's buffer was full."""
        self._send, self._receive = trio.open_memory_channel[tuple[str, Any]](buffer_size)

    def __repr__(self) -> str:
        names = "all events" if self.event_names is None else ",".join(sorted(self.event_names))
        state = "closed" if self.closed else "open"
        return f"<Subscription {names} {state} dropped={self.dropped}>"

    @property
    def closed(self) -> bool:
        """The subscriber closed it, or its source stopped (buffered events may remain)."""
        return self._hub._is_detached(self)

    def wants(self, name: str) -> bool:
        """Whether events called ``name`` are delivered to this subscription."""
        return self.event_names is None or name in self.event_names

    async def receive(self) -> tuple[str, Any]:
        """The next event; raises ``trio.EndOfChannel`` once the source stopped and all was read."""
        try:
            return await self._receive.receive()
        except trio.ClosedResourceError:
            raise trio.EndOfChannel from None

    def receive_nowait(self) -> tuple[str, Any]:
        """Like :meth:`receive`, or ``trio.WouldBlock`` when nothing is buffered."""
        try:
            return self._receive.receive_nowait()
        except trio.ClosedResourceError:
            raise trio.EndOfChannel from None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe; events still buffered are discarded."""
        self._hub._detach(self)
        self._receive.close()

    async def aclose(self) -> None:
        """:meth:`close`, for ``async with`` and trio's resource protocol."""
        self.close()
        await trio.lowlevel.checkpoint()

    # Called by the hub.

    def _offer(self, name: str, data: Any) -> bool:
        """Queue one event; False once the subscriber has gone."""
        try:
            self._send.send_nowait((name, data))
        except trio.WouldBlock:
            self.dropped += 1
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def _end(self) -> None:
        self._send.close()


class EventHub:
    """The set of a source's live subscriptions."""

    __slots__ = ("_buffer_size", "_closed", "_log", "_subscriptions")

    def __init__(
        self, log: logging.Logger | logging.LoggerAdapter[logging.Logger], buffer_size: int
    ) -> None:
        self._log = log
        self._buffer_size = _check_buffer_size(buffer_size)
        self._subscriptions: list[Subscription] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, event_names: Iterable[str], buffer_size: int | None = None) -> Subscription:
        names = tuple(event_names)
        for name in names:
            if not isinstance(name, str) or not name:
                raise UsageError("event names must be non-empty strings, such as 'GUILD_CREATE'")
        size = self._buffer_size if buffer_size is None else _check_buffer_size(buffer_size)
        subscription = Subscription(self, frozenset(names) if names else None, size)
        if self._closed:
            subscription._end()
        else:
            self._subscriptions.append(subscription)
        return subscription

    def publish(self, name: str, data: Any) -> None:
        """Offer one event to every interested subscriber; never blocks."""
        gone: list[Subscription] = []
        for subscription in self._subscriptions:
            if not subscription.wants(name):
                continue
            before = subscription.dropped
            if not subscription._offer(name, data):
                gone.append(subscription)
            elif subscription.dropped != before:
                dropped = subscription.dropped
                # Log the first drop and then each power of two, so a stuck reader is visible
                # without flooding the log.
                if dropped & (dropped - 1) == 0:
                    self._log.warning(
                        "a subscriber is not keeping up; dropped %s (%d dropped so far)",
                        name,
                        dropped,
                    )
        for subscription in gone:
            self._detach(subscription)

    def close(self) -> None:
        """The source stopped: end every subscription (readers still get what is buffered)."""
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription._end()

    def _detach(self, subscription: Subscription) -> None:
        try:
            self._subscriptions.remove(subscription)
        except ValueError:
            return
        subscription._end()

    def _is_detached(self, subscription: Subscription) -> bool:
        return subscription not in self._subscriptions


def _check_buffer_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UsageError("buffer_size must be a positive integer")
    return size
