"""A bounded stream of received items that loses its *oldest* when its reader falls behind.

The event hub (``_shell/hub.py``) drops the newest item for a full subscriber, which is right for
events: the first ones say what happened. Audio is the other way round: a reader that stalled
for two seconds wants to resume with what is being said now, not with what was said two seconds
ago while everything after it is lost. So a full stream discards from its head, counts it in
``dropped``, and the receive task never waits for a reader: one slow consumer stalls nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

from ...._closing import ClosesOnExit
from ...._errors import UsageError

__all__ = ["AudioStream", "check_stream_size"]

T = TypeVar("T")

#: The most items a stream may buffer: a minute of 20 ms frames.
MAX_STREAM_SIZE = 3000


def check_stream_size(size: object, what: str = "buffer") -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_STREAM_SIZE:
        raise UsageError(f"{what} must be 1 to {MAX_STREAM_SIZE} items (20 ms frames)")
    return size


class AudioStream(ClosesOnExit, Generic[T]):
    """Received audio or speaking events, in order; ``async for`` it, ``with`` it to close it.

    Iteration ends when the stream ends: its receiver closed, the connection ended, or its end
    condition (see :meth:`VoiceReceiver.user`) was met. Items left are still delivered first.
    """

    __slots__ = (
        "_closed",
        "_fresh",
        "_items",
        "_lot",
        "_on_close",
        "_over",
        "dropped",
        "size",
        "what",
    )

    def __init__(self, size: int, what: str, on_close: Callable[[AudioStream[T]], None]) -> None:
        self._items: deque[T] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._over = False  # no more items will come
        self._closed = False  # the reader closed it
        self._fresh = False  # items came since the reader last yielded to other tasks
        self._on_close = on_close
        self.what = what
        self.size = size
        self.dropped = 0
        """Items lost because the reader fell more than ``size`` behind."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else "ended" if self._over else "open"
        return (
            f"<AudioStream {self.what} {state} buffered={len(self._items)} dropped={self.dropped}>"
        )

    @property
    def ended(self) -> bool:
        """No more items will come (some may still be buffered)."""
        return self._over

    # --- the reader's side --------------------------------------------------------------------

    def receive_nowait(self) -> T:
        """The next item, else ``trio.WouldBlock`` (none yet) or ``trio.EndOfChannel`` (the end)."""
        if self._items:
            return self._items.popleft()
        if self._over:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> T:
        """The next item; ``trio.EndOfChannel`` once the stream ended and all was read.

        A checkpoint as trio's channels are, with one difference: the frames of one tick come
        together, and reading them yields to other tasks once per tick, not once per frame
        (for the rest, it only checks for cancellation). A reader of a hundred members' frames
        would otherwise pass through trio's scheduler 5000 times a second.
        """
        items = self._items
        if items:
            if self._fresh:
                self._fresh = False
                await trio.lowlevel.checkpoint()
                if not items:  # pragma: no cover - items are only taken by this reader
                    raise trio.EndOfChannel
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
            return items.popleft()
        while not items:
            if self._over:
                await trio.lowlevel.checkpoint()
                raise trio.EndOfChannel
            await self._lot.park()
        self._fresh = False  # parking yielded
        return items.popleft()

    def __aiter__(self) -> AudioStream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving into this stream; what is buffered is discarded."""
        if not self._closed:
            self._closed = True
            self._end()
            self._items.clear()
            self._on_close(self)

    async def aclose(self) -> None:
        """:meth:`close`, for ``async with`` and trio's resource protocol."""
        self.close()
        await trio.lowlevel.checkpoint()

    # --- the receive task's side --------------------------------------------------------------

    def _put(self, item: T) -> None:
        if self._over:
            return
        items = self._items
        if len(items) >= self.size:
            items.popleft()
            self.dropped += 1
        items.append(item)
        self._fresh = True
        if self._lot:
            self._lot.unpark_all()

    def _end(self) -> None:
        self._over = True
        if self._lot:
            self._lot.unpark_all()
