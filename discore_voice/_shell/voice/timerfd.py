"""A precise, cheap wake-up for the send clock and the receive tick: a Linux timerfd trio waits on.

trio sleeps in ``epoll_wait``, whose timeout is in whole milliseconds, rounded up: a task asking
to wake at ``t`` wakes anywhere in ``[t, t + 1 ms]`` plus the kernel's latency, a different amount
each time. For a frame that is the send gap's jitter (measured on the project's machine: median
0.87 ms late). A timerfd armed with an absolute ``CLOCK_MONOTONIC`` deadline fires at the
nanosecond it is given (median 0.25 ms late, most of it the virtual machine's wake-up), and
waiting on it raises no ``Cancelled`` the way a timed-out cancel scope does.

trio's own clock is ``perf_counter`` plus an offset, and on Linux ``perf_counter`` is
``CLOCK_MONOTONIC``, so a trio deadline converts with one subtraction. Under any other clock
(``MockClock`` in tests) or on another OS, :func:`open_timer` returns None and the caller falls
back to trio's timeouts.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from typing import Final

import trio

__all__ = ["PreciseTimer", "open_timer"]

_CLOCK_MONOTONIC: Final = 1
_TFD_CLOEXEC: Final = 0o2000000
_TFD_NONBLOCK: Final = 0o4000
_TFD_TIMER_ABSTIME: Final = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class PreciseTimer:
    """One timerfd: :meth:`arm` it for a trio time, then :meth:`wait`; :meth:`fire` wakes it now."""

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._settime = libc.timerfd_settime
        self._fd = fd
        self._spec = _Itimerspec()
        self._closed = False

    def __repr__(self) -> str:
        return f"<PreciseTimer fd={self._fd}{' closed' if self._closed else ''}>"

    def arm(self, deadline: float) -> None:
        """Fire at trio time ``deadline`` (at once if it has passed)."""
        monotonic = deadline - trio.current_time() + time.perf_counter()
        nanoseconds = max(1, int(monotonic * 1e9))
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(nanoseconds, 1_000_000_000)
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"timerfd_settime: {os.strerror(errno)}")

    def disarm(self) -> None:
        """No deadline: only :meth:`fire` wakes the waiter."""
        self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
        self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None)

    def fire(self) -> None:
        """Wake the waiter now (an attach, say, that cannot wait for the deadline)."""
        self.arm(trio.current_time())

    async def wait(self) -> None:
        """Until the timer fires (a checkpoint even if it already has)."""
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(self._fd)
            with contextlib.suppress(BlockingIOError):
                os.read(self._fd, 8)
        else:
            await trio.lowlevel.checkpoint()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self._fd)
            os.close(self._fd)


def open_timer() -> PreciseTimer | None:
    """A timerfd for this trio run, or None where one cannot help (see the module docstring)."""
    if not sys.platform.startswith("linux"):
        return None
    if type(trio.lowlevel.current_clock()).__name__ != "SystemClock":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's included
        create = libc.timerfd_create
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        return None
    fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:
        return None
    return PreciseTimer(libc, fd)
