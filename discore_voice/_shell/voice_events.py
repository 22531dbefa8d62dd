"""A voice connection's events, delivered to each subscriber through its own trio memory channel.

The events are the core's own dataclasses (``Connected``, ``Invalidated``, ``MemberSpeaking``,
``MemberConnected``, ``MemberDisconnected``, and DAVE's ``DaveStateChanged``): the state machines
already say exactly what happened, and a second set of classes would only drift from them.

Publishing never waits. A subscriber that stops reading would otherwise hold up the websocket
reader, the heartbeat behind it, and the whole connection; instead its overflow is dropped and
counted for that subscriber alone. A subscription ends (``async for`` stops) after the connection
is invalidated, so a loop over events cannot outlive the connection.
"""

from __future__ import annotations

import logging
from typing import TypeAlias

import trio

from .._closing import ClosesOnExit
from .._core.voice.dave import DaveStateChanged
from .._core.voice.session import (
    Connected,
    Invalidated,
    MemberConnected,
    MemberDisconnected,
    MemberSpeaking,
)
from .._errors import UsageError

__all__ = ["DEFAULT_EVENT_BUFFER", "VoiceEvent", "VoiceEventHub", "VoiceEvents"]

VoiceEvent: TypeAlias = (
    Connected
    | Invalidated
    | MemberSpeaking
    | MemberConnected
    | MemberDisconnected
    | DaveStateChanged
)

#: Events a subscriber may fall behind by before it loses some; events are rare (a handful per
#: member joining or speaking), so this only overflows for a reader that stopped altogether.
DEFAULT_EVENT_BUFFER = 256


class VoiceEvents(ClosesOnExit):
    """An async iterable of one connection's events; it ends once the connection is invalid.

    Use it as ``with`` (or ``async with``) to unsubscribe on exit; ``dropped`` counts the events
    lost because this subscriber fell too far behind.
    """

    __slots__ = ("_receive", "_send", "dropped")

    def __init__(self, buffer_size: int) -> None:
        self._send, self._receive = trio.open_memory_channel[VoiceEvent](buffer_size)
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<VoiceEvents dropped={self.dropped}>"

    async def receive(self) -> VoiceEvent:
        """The next event; ``trio.EndOfChannel`` once the connection ended and all was read."""
        try:
            return await self._receive.receive()
        except trio.ClosedResourceError:
            raise trio.EndOfChannel from None

    def __aiter__(self) -> VoiceEvents:
        return self

    async def __anext__(self) -> VoiceEvent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe; what is still buffered is discarded."""
        self._receive.close()

    def _offer(self, event: VoiceEvent) -> bool:
        """Queue one event without waiting; False once the subscriber has gone."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def _end(self) -> None:
        self._send.close()


class VoiceEventHub:
    """The live subscriptions of one connection."""

    __slots__ = ("_closed", "_log", "_subscriptions")

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        self._log = log
        self._subscriptions: list[VoiceEvents] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(self, buffer_size: int = DEFAULT_EVENT_BUFFER) -> VoiceEvents:
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise UsageError("buffer_size must be a positive integer")
        events = VoiceEvents(buffer_size)
        if self._closed:
            events._end()
        else:
            self._subscriptions.append(events)
        return events

    def publish(self, event: VoiceEvent) -> None:
        kept: list[VoiceEvents] = []
        for events in self._subscriptions:
            before = events.dropped
            if not events._offer(event):
                continue
            kept.append(events)
            if events.dropped != before and events.dropped & (events.dropped - 1) == 0:
                # The first drop, then each power of two: visible without flooding the log.
                self._log.warning(
                    "a voice event subscriber is not keeping up (%d events dropped)",
                    events.dropped,
                )
        self._subscriptions = kept

    def close(self) -> None:
        """End every subscription; readers still get what is buffered (the Invalidated last)."""
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, []
        for events in subscriptions:
            events._end()
