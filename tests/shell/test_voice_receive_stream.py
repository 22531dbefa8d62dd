"""``AudioStream``, the receiver's bounded streams, on their own: what a reader's ``await`` does."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from discore_voice import AudioStream
from discore_voice._shell.voice.receive.receiver import _between_sends


def stream(size: int = 10) -> AudioStream[int]:
    return AudioStream(size, "test", lambda _: None)


async def test_a_reader_yields_once_per_delivery_not_once_per_item() -> None:
    """A tick's hundred frames cost the reader one pass through the scheduler, not a hundred."""
    frames = stream()
    others_ran = 0

    async def other_task() -> None:
        nonlocal others_ran
        for _ in range(50):
            await trio.lowlevel.checkpoint()
            others_ran += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        for item in (1, 2, 3):
            frames._put(item)
        with trio.testing.assert_checkpoints():
            assert await frames.receive() == 1  # the delivery's first item: a full checkpoint
        seen = others_ran
        assert await frames.receive() == 2
        assert await frames.receive() == 3
        assert others_ran == seen  # the rest of the delivery did not yield
        frames._put(4)
        with trio.testing.assert_checkpoints():
            assert await frames.receive() == 4  # a new delivery yields again
        nursery.cancel_scope.cancel()


async def test_a_cancelled_reader_is_told_at_once_and_loses_nothing() -> None:
    frames = stream()
    for item in (1, 2):
        frames._put(item)
    assert await frames.receive() == 1
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await frames.receive()  # no yield due, but a cancellation is still a checkpoint's
    assert scope.cancelled_caught is False
    assert frames.receive_nowait() == 2  # the item stayed for the next read


@pytest.mark.parametrize(
    ("tick_at", "send_at", "expected"),
    [
        (100.000, None, 100.000),  # not sending: the grid stays
        (100.000, 100.000, 99.990),  # due together: half a frame away
        (100.000, 99.990, 100.000),  # already halfway
        (100.000, 100.004, 99.994),  # the nearest point halfway: 6 ms earlier...
        (100.000, 100.016, 100.006),  # ...or 6 ms later, never more than half a tick
        (100.000, 57.123, 99.993),  # a send grid far away: only its phase counts
    ],
)
def test_the_receive_tick_keeps_halfway_between_two_sends(
    tick_at: float, send_at: float | None, expected: float
) -> None:
    moved = _between_sends(tick_at, send_at)
    assert moved == pytest.approx(expected, abs=1e-9)
    assert abs(moved - tick_at) <= 0.010 + 1e-9
