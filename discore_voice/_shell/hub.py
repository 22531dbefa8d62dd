"""Fan-out to subscribers, each with its own bounded buffer: a shard's dispatches, a voice
connection's events. One implementation for both.

Publishing never waits. When a subscriber's buffer is full the item is dropped for that
subscriber alone, counted in ``dropped`` and logged (the first drop, then every power of two),
and the publisher and the other subscribers carry on: a shard that waited for its slowest reader
would stop heartbeating and be closed as a zombie, and a voice connection would stop reading its
websocket.

A subscription may filter on names (a shard's dispatch names) and on a guild. Guild
subscriptions are routed by the publisher's guild instead of being offered every item: a shard
carrying 100 voice connections would otherwise wake 100 listener tasks for each voice event
(measured: connecting 1000 voice connections through ten shards did not finish in a minute with
broadcast). A subscription ends (``async for`` stops) once its source closes the hub.
"""

from __future__ import annotations

import logging
from typing import Generic, TypeVar

import trio

from .._closing import ClosesOnExit
from .._core.snowflake import Snowflake
from .._errors import UsageError

__all__ = ["Hub", "Subscription", "check_buffer_size"]

T = TypeVar("T")

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


class Subscription(ClosesOnExit, Generic[T]):
    """A stream of items from a shard (``(event_name, data)``) or a voice connection (events).

    Use it as ``with``/``async with`` (closing it on exit) and ``async for``; iteration ends when
    the source stops. Items are shared with other subscribers: treat them as read-only.
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
        hub: Hub[T],
        buffer_size: int,
        event_names: frozenset[str] | None = None,
        guild_id: Snowflake | None = None,
    ) -> None:
        self._hub = hub
        self.event_names = event_names
        """The names subscribed to; None means every item."""
        self.guild_id = guild_id
        """Only items of this guild; None means from every guild (and none)."""
        self.dropped = 0
        """Items dropped because this subscriber's buffer was full."""
        self._send, self._receive = trio.open_memory_channel[T](buffer_size)

    def __repr__(self) -> str:
        names = "" if self.event_names is None else " " + ",".join(sorted(self.event_names))
        where = "" if self.guild_id is None else f" guild={self.guild_id}"
        state = "closed" if self.closed else "open"
        return f"<Subscription{names}{where} {state} dropped={self.dropped}>"

    @property
    def closed(self) -> bool:
        """The subscriber closed it, or its source stopped (buffered items may remain)."""
        return self._hub._is_detached(self)

    def wants(self, name: str | None, *, explicit: bool = False) -> bool:
        """Whether items called ``name`` are delivered to this subscription; ``explicit`` items
        only to those that name them (a shard's news about itself is not a Discord dispatch)."""
        if self.event_names is None:
            return not explicit
        return name in self.event_names

    async def receive(self) -> T:
        """The next item; raises ``trio.EndOfChannel`` once the source stopped and all was read."""
        try:
            return await self._receive.receive()
        except trio.ClosedResourceError:
            raise trio.EndOfChannel from None

    def receive_nowait(self) -> T:
        """Like :meth:`receive`, or ``trio.WouldBlock`` when nothing is buffered."""
        try:
            return self._receive.receive_nowait()
        except trio.ClosedResourceError:
            raise trio.EndOfChannel from None

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe; items still buffered are discarded."""
        self._hub._detach(self)
        self._receive.close()

    async def aclose(self) -> None:
        """:meth:`close`, for ``async with`` and trio's resource protocol."""
        self.close()
        await trio.lowlevel.checkpoint()

    # Called by the hub.

    def _offer(self, item: T) -> bool:
        """Queue one item; False once the subscriber has gone."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def _end(self) -> None:
        self._send.close()


class Hub(Generic[T]):
    """The live subscriptions of one source. ``what`` names its items in the drop warning."""

    __slots__ = (
        "_buffer_size",
        "_by_guild",
        "_closed",
        "_everywhere",
        "_kind",
        "_log",
        "_subscriptions",
        "_what",
    )

    def __init__(
        self,
        log: Log,
        buffer_size: int,
        *,
        what: str = "an event",
        kind: type[Subscription[T]] = Subscription,
    ) -> None:
        self._log = log
        self._kind = kind
        self._buffer_size = check_buffer_size(buffer_size)
        self._what = what
        # Insertion-ordered sets: every live subscription, and the same split by guild filter.
        self._subscriptions: dict[Subscription[T], None] = {}
        self._everywhere: dict[Subscription[T], None] = {}
        self._by_guild: dict[Snowflake, dict[Subscription[T], None]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def routes_by_guild(self) -> bool:
        """Whether any subscription filters on a guild (a publisher skips finding it if not)."""
        return bool(self._by_guild)

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(
        self,
        buffer_size: int | None = None,
        *,
        event_names: frozenset[str] | None = None,
        guild_id: Snowflake | None = None,
    ) -> Subscription[T]:
        size = self._buffer_size if buffer_size is None else check_buffer_size(buffer_size)
        subscription = self._kind(self, size, event_names, guild_id)
        if self._closed:
            subscription._end()
            return subscription
        self._subscriptions[subscription] = None
        if guild_id is None:
            self._everywhere[subscription] = None
        else:
            self._by_guild.setdefault(guild_id, {})[subscription] = None
        return subscription

    def publish(
        self,
        item: T,
        *,
        name: str | None = None,
        guild: Snowflake | None = None,
        explicit: bool = False,
    ) -> None:
        """Offer ``item`` to the subscribers of every guild, and to those of ``guild``."""
        for subscription in list(self._everywhere):
            self._offer(subscription, item, name, explicit)
        if guild is not None:
            for subscription in list(self._by_guild.get(guild, ())):
                self._offer(subscription, item, name, explicit)

    def broadcast(self, item: T, *, name: str | None = None, explicit: bool = False) -> None:
        """Offer ``item`` to every subscriber of ``name``, whatever guild it filters on: news
        about the source itself, which concerns every guild and has none to route by."""
        for subscription in list(self._subscriptions):
            self._offer(subscription, item, name, explicit)

    def close(self) -> None:
        """The source stopped: end every subscription (readers still get what is buffered)."""
        self._closed = True
        subscriptions = list(self._subscriptions)
        self._subscriptions.clear()
        self._everywhere.clear()
        self._by_guild.clear()
        for subscription in subscriptions:
            subscription._end()

    def _offer(
        self, subscription: Subscription[T], item: T, name: str | None, explicit: bool
    ) -> None:
        if not subscription.wants(name, explicit=explicit):
            return
        before = subscription.dropped
        if not subscription._offer(item):
            self._detach(subscription)
            return
        dropped = subscription.dropped
        if dropped != before and dropped & (dropped - 1) == 0:
            # The first drop, then each power of two: visible without flooding the log.
            self._log.warning(
                "a subscriber is not keeping up; dropped %s%s (%d dropped so far)",
                self._what,
                "" if name is None else f" ({name})",
                dropped,
            )

    def _detach(self, subscription: Subscription[T]) -> None:
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

    def _is_detached(self, subscription: Subscription[T]) -> bool:
        return subscription not in self._subscriptions


def check_buffer_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UsageError("buffer_size must be a positive integer")
    return size
