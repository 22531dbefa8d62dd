"""A connection's track queue: one track after another, gapless, with skip, shuffle and loops.

A task (one per connection, asleep while the queue is empty) starts each track. The next one is
preloaded two seconds before the playing track's end (when its length is known; for a stream,
once it has read its last frame, a fifth of a second ahead): its source is opened and read
ahead, and the mixer starts it on the frame right after the current one's last, so consecutive
tracks are consecutive frames on the 20 ms grid. Until then the upcoming tracks can be
reordered freely.

When the connection becomes invalid the queue ends: the playing track and every waiting one end
``INVALIDATED`` with the connection's reason, and :meth:`TrackQueue.wait_idle` returns it.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from typing import Final

import trio

from ...._audio.sources import AudioSource
from ...._core.player.events import TrackOutcome
from ...._core.voice.events import Invalidated
from ...._errors import UsageError
from .player import Player
from .track import TrackHandle

__all__ = ["QueueLoop", "TrackQueue"]


#: How long before the current track's end the next one is opened and read ahead, when the
#: current one's length is known: time enough for a slow open (a URL, a decoder's start-up).
PRELOAD_LEAD: Final = 2.0


def _remaining(track: TrackHandle) -> float:
    """Seconds left of ``track`` (infinite when its length is unknown or it loops)."""
    duration = track.duration
    if duration is None or track.loops != 0 or track.paused:
        return math.inf
    return max(0.0, duration - track.position)


class QueueLoop(enum.Enum):
    """What the queue repeats."""

    OFF = "off"
    #: The playing track, until the mode changes or it is skipped.
    ONE = "one"
    #: The whole queue: each track that finishes goes to the back again (files and bytes only).
    ALL = "all"


async def _wait_any(*events: trio.Event) -> None:
    if any(event.is_set() for event in events):
        return
    async with trio.open_nursery() as nursery:

        async def wait_then_cancel(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait_then_cancel, event)


class TrackQueue:
    """Tracks played one after another on a connection: ``vc.queue``.

    Every method is synchronous and takes effect at once; each track's handle (returned by
    :meth:`enqueue`) reports its own end.
    """

    def __init__(self, player: Player) -> None:
        self._player = player
        self._items: deque[TrackHandle] = deque()
        self._current: TrackHandle | None = None
        self._preloaded: TrackHandle | None = None
        self._loop = QueueLoop.OFF
        self._changed = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._invalidation: Invalidated | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<TrackQueue {len(self)} tracks loop={self._loop.value}>"

    def __len__(self) -> int:
        """The tracks not yet ended: the playing one and those after it."""
        return (self._current is not None) + (self._preloaded is not None) + len(self._items)

    # --- state -------------------------------------------------------------------------------

    @property
    def current(self) -> TrackHandle | None:
        """The track playing (or loading) now."""
        return self._current

    @property
    def upcoming(self) -> tuple[TrackHandle, ...]:
        """The tracks after the current one, in the order they will play."""
        first = (self._preloaded,) if self._preloaded is not None else ()
        return (*first, *self._items)

    @property
    def loop(self) -> QueueLoop:
        """``OFF``, ``ONE`` (repeat the current track) or ``ALL`` (repeat the queue)."""
        return self._loop

    @loop.setter
    def loop(self, mode: QueueLoop) -> None:
        if not isinstance(mode, QueueLoop):
            raise UsageError(f"loop must be a QueueLoop, got {type(mode).__name__}")
        self._loop = mode
        current = self._current
        if current is not None and current.source.seekable:
            current.loops = None if mode is QueueLoop.ONE else 0
        self._poke()

    @property
    def invalidation(self) -> Invalidated | None:
        """Why the queue ended with its connection; None while it can play."""
        return self._invalidation

    # --- changes -------------------------------------------------------------------------------

    def enqueue(self, source: AudioSource, *, volume: float = 1.0) -> TrackHandle:
        """Add ``source`` at the end; its handle, at once (``QUEUED`` until it starts).

        On an invalid connection the handle has already ended ``INVALIDATED``.
        """
        track = self._player.new_track(source, volume=volume)
        if self._closed:
            self._player.start(track)  # ends it with the connection's invalidation
            return track
        self._items.append(track)
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._poke()
        return track

    def skip(self) -> TrackHandle | None:
        """Stop the current track (``STOPPED``); the next starts on the next frame."""
        current = self._current
        if current is not None:
            current.stop()
        return current

    def remove(self, track: TrackHandle) -> bool:
        """Take ``track`` out of the queue, ending it ``STOPPED``; False if it was not in it."""
        if track is self._current or track is self._preloaded:
            track.stop()
            return True
        try:
            self._items.remove(track)
        except ValueError:
            return False
        track.stop()
        self._poke()
        return True

    def clear(self) -> int:
        """Remove every track after the current one; how many were removed."""
        removed = [*self.upcoming]
        self._items.clear()
        for track in removed:
            track.stop()
        self._poke()
        return len(removed)

    def stop(self) -> None:
        """Clear the queue and stop the current track."""
        self.clear()
        self.skip()

    def shuffle(self) -> None:
        """Put the upcoming tracks in a random order (a preloaded next track stays next)."""
        items = list(self._items)
        random.shuffle(items)
        self._items = deque(items)

    async def wait_idle(self) -> Invalidated | None:
        """Until the queue has nothing left to play: None, or the invalidation that ended it."""
        await self._idle.wait()
        return self._invalidation

    # --- the task ------------------------------------------------------------------------------

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> None:
        """Start each track in turn; one task per connection."""
        while not self._closed:
            if self._preloaded is None and not self._items:
                self._idle.set()
                await self._changed.wait()
                continue
            if self._preloaded is not None:
                current, self._preloaded = self._preloaded, None
            else:
                current = self._items.popleft()
                self._player.start(current)
            self._current = current
            if self._loop is QueueLoop.ONE and current.source.seekable:
                current.loops = None
            await self._play_out(current)
            self._current = None
            end = current.outcome
            if (
                self._loop is QueueLoop.ALL
                and end is not None
                and end.outcome is TrackOutcome.FINISHED
                and current.source.seekable
            ):
                self._items.append(self._player.new_track(current.source, volume=current.volume))

    async def _play_out(self, current: TrackHandle) -> None:
        """Until ``current`` ends, preloading the next track in its last seconds (when its
        length is known) or once it has read its last frame (streams)."""
        while current.outcome is None:
            remaining = _remaining(current)
            if (
                self._preloaded is None
                and self._items
                and current.loops == 0
                and (current._source_done or remaining <= PRELOAD_LEAD)
            ):
                self._preloaded = self._items.popleft()
                self._player.start(self._preloaded, after=current)
            read_all = current._read_all
            events = [current._ended, self._changed]
            if not read_all.is_set():
                events.append(read_all)
            # A track's position moves without an event: with a track to preload, look again
            # when the lead is reached (once: by then it was preloaded).
            # (A length not known yet, from a source not opened yet: look once a second.)
            pending = self._preloaded is None and bool(self._items)
            if not pending or remaining <= PRELOAD_LEAD:
                timeout = math.inf
            elif remaining == math.inf:
                timeout = 1.0 if current.duration is None and not current.paused else math.inf
            else:
                timeout = remaining - PRELOAD_LEAD
            with trio.move_on_after(timeout):
                await _wait_any(*events)

    def close(self, invalidation: Invalidated | None) -> None:
        """The connection is invalid: every waiting track ends with it."""
        if self._closed:
            return
        self._closed = True
        self._invalidation = invalidation
        waiting = [*self._items]
        self._items.clear()
        for track in waiting:
            self._player.start(track)  # the player is closed: ends INVALIDATED
        self._idle.set()
        self._poke()
