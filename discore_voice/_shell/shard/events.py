"""Fan-out of gateway dispatches to subscribers, without letting any of them hold the shard up.

Each subscription has its own bounded buffer. Publishing never waits: when a subscriber's buffer
is full the event is dropped for that subscriber alone, counted in ``dropped`` and logged, and
the shard and the other subscribers carry on. A gateway shard that waited for its slowest reader
would stop heartbeating and be closed as a zombie.

A subscription may be for one guild's dispatches only. The hub then routes by ``d.guild_id``
instead of offering every dispatch to every subscriber: a shard carrying 100 voice connections
would otherwise wake 100 listener tasks for each voice event, and connecting them all would cost
10 000 wake-ups instead of 200 (measured: connecting 1000 voice connections through ten shards
did not finish in a minute with broadcast).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import trio

from ..._closing import ClosesOnExit
from ..._core.snowflake import Snowflake, validate_snowflake
from ..._errors import UsageError

__all__ = ["EventHub", "Subscription"]

DEFAULT_BUFFER_SIZE = 256


class Subscription(ClosesOnExit):
    """A stream of ``(event_name, data)`` from a shard or a bridge.

    Use it as ``with``/``async with`` (closing it on exit) and ``async for``; iteration ends when
    the shard or bridge stops. ``data`` is the dispatch's ``d`` as received, shared with other
    subscribers: treat it as read-only.
    """

    __slots__ = (
        "__weakref__",
        "_hub",
        "_receive",
        "_send",
        "dropped",
        "event_names",
        "guild_id",
    )

    def __init__(
        self,
        hub: EventHub,
        event_names: frozenset[str] | None,
        buffer_size: int,
        guild_id: Snowflake | None = None,
    ) -> None:
        self._hub = hub
        self.event_names = event_names
        """The names subscribed to; None means every event."""
        self.guild_id = guild_id
        """Only dispatches whose ``guild_id`` is this; None means from every guild (and none)."""
        self.dropped = 0
        """Events dropped because this subscriber's buffer was full."""
        self._send, self._receive = trio.open_memory_channel[tuple[str, Any]](buffer_size)

    def __repr__(self) -> str:
        names = "all events" if self.event_names is None else ",".join(sorted(self.event_names))
        where = "" if self.guild_id is None else f" guild={self.guild_id}"
        state = "closed" if self.closed else "open"
        return f"<Subscription {names}{where} {state} dropped={self.dropped}>"

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

    __slots__ = ("_buffer_size", "_by_guild", "_closed", "_everywhere", "_log", "_subscriptions")

    def __init__(
        self, log: logging.Logger | logging.LoggerAdapter[logging.Logger], buffer_size: int
    ) -> None:
        self._log = log
        self._buffer_size = _check_buffer_size(buffer_size)
        # Insertion-ordered sets: every live subscription, and the same split by guild filter.
        self._subscriptions: dict[Subscription, None] = {}
        self._everywhere: dict[Subscription, None] = {}
        self._by_guild: dict[int, dict[Subscription, None]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(
        self,
        event_names: Iterable[str],
        buffer_size: int | None = None,
        *,
        guild_id: int | str | None = None,
    ) -> Subscription:
        names = tuple(event_names)
        for name in names:
            if not isinstance(name, str) or not name:
                raise UsageError("event names must be non-empty strings, such as 'GUILD_CREATE'")
        size = self._buffer_size if buffer_size is None else _check_buffer_size(buffer_size)
        guild = None if guild_id is None else validate_snowflake(guild_id, name="guild_id")
        subscription = Subscription(self, frozenset(names) if names else None, size, guild)
        if self._closed:
            subscription._end()
            return subscription
        self._subscriptions[subscription] = None
        if guild is None:
            self._everywhere[subscription] = None
        else:
            self._by_guild.setdefault(guild, {})[subscription] = None
        return subscription

    def publish(self, name: str, data: Any) -> None:
        """Offer one event to every interested subscriber; never blocks."""
        guild = _guild_of(data) if self._by_guild else None
        for subscription in list(self._everywhere):
            self._offer(subscription, name, data)
        if guild is not None:
            for subscription in list(self._by_guild.get(guild, ())):
                self._offer(subscription, name, data)

    def broadcast(self, name: str, data: Any) -> None:
        """Offer one event to every subscriber of ``name``, whatever guild it filters on.

        For news about the source itself (its gateway session ended), which concerns every
        guild's subscribers and carries no ``guild_id`` to route by.
        """
        for subscription in list(self._subscriptions):
            self._offer(subscription, name, data)

    def _offer(self, subscription: Subscription, name: str, data: Any) -> None:
        if not subscription.wants(name):
            return
        before = subscription.dropped
        if not subscription._offer(name, data):
            self._detach(subscription)
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

    def close(self) -> None:
        """The source stopped: end every subscription (readers still get what is buffered)."""
        self._closed = True
        subscriptions = list(self._subscriptions)
        self._subscriptions.clear()
        self._everywhere.clear()
        self._by_guild.clear()
        for subscription in subscriptions:
            subscription._end()

    def _detach(self, subscription: Subscription) -> None:
        if self._subscriptions.pop(subscription, False) is False:
            return
        self._everywhere.pop(subscription, None)
        guild = subscription.guild_id
        if guild is not None:
            subscribers = self._by_guild.get(guild)
            if subscribers is not None:
                subscribers.pop(subscription, None)
                if not subscribers:
                    del self._by_guild[guild]
        subscription._end()

    def _is_detached(self, subscription: Subscription) -> bool:
        return subscription not in self._subscriptions


def _guild_of(data: Any) -> int | None:
    """The dispatch's ``guild_id`` as a number, or None if it has none (or a malformed one)."""
    if not isinstance(data, dict):
        return None
    value = data.get("guild_id")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _check_buffer_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UsageError("buffer_size must be a positive integer")
    return size
