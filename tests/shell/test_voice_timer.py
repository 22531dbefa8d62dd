"""The send clock's timerfd: never early, woken on demand, and absent where it cannot work."""

from __future__ import annotations

import os
import sys

import pytest
import trio
from trio.testing import MockClock

from discore_voice._shell.voice.timerfd import open_timer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")


async def test_fires_at_its_deadline_and_never_before() -> None:
    timer = open_timer()
    assert timer is not None
    try:
        for delay in (0.0, 0.01, 0.03):
            deadline = trio.current_time() + delay
            timer.arm(deadline)
            with trio.fail_after(5):
                await timer.wait()
            assert trio.current_time() >= deadline
    finally:
        timer.close()


async def test_fire_wakes_a_waiter_armed_far_ahead_or_disarmed() -> None:
    timer = open_timer()
    assert timer is not None
    try:
        for arm in (lambda: timer.arm(trio.current_time() + 3600), timer.disarm):
            arm()
            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(timer.wait)
                    await trio.testing.wait_all_tasks_blocked()
                    timer.fire()
    finally:
        timer.close()


async def test_close_releases_its_descriptor() -> None:
    before = len(os.listdir("/proc/self/fd"))
    timer = open_timer()
    assert timer is not None
    assert len(os.listdir("/proc/self/fd")) == before + 1
    timer.close()
    timer.close()  # idempotent
    assert len(os.listdir("/proc/self/fd")) == before
    assert "closed" in repr(timer)


async def test_no_timer_under_a_mock_clock(jump_clock: MockClock) -> None:
    assert open_timer() is None


async def test_the_send_clock_falls_back_if_the_timer_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from discore_voice._shell.voice.sending import clock as voice_sender_clock
    from discore_voice._shell.voice.timerfd import PreciseTimer

    def failing_arm(self: PreciseTimer, deadline: float) -> None:
        raise OSError(22, "timerfd_settime: Invalid argument")

    monkeypatch.setattr(PreciseTimer, "arm", failing_arm)
    clock = voice_sender_clock.send_clock()
    calls: list[float] = []

    class Sender:
        def step(self, now: float) -> float | None:
            calls.append(now)
            return now + 0.02 if len(calls) < 3 else None

        def fill(self) -> None:
            pass

        def detached(self, error: BaseException | None) -> None:
            done.set()

    done = trio.Event()
    clock.attach(Sender(), trio.current_time())
    with trio.fail_after(5):
        await done.wait()
    assert len(calls) == 3 and not clock.precise
