"""One send clock per trio run: it paces every connection's frames from a single heap.

Why not one sleeping task per connection? Measured on the project's 2-core machine (trio 0.35,
N streams of 50 UDP packets a second, scripts in the report of issue 6):

=====================  ===================  ==================  ==========================
N streams              task + sleep_until   tasks parked on a   one clock, no task switch
                                            shared timer        per frame (this module)
=====================  ===================  ==================  ==========================
100: CPU per stream-s  0.0022               0.0017              0.00055
1000: CPU per stream-s saturated (1 core),  0.00078, p99 late   0.00035, p99 late 14 ms
                       frames seconds late  16 ms
=====================  ===================  ==================  ==========================

Waking a task costs far more than the few microseconds of pacing, encrypting and sending a
frame, so the clock calls each due sender's synchronous :meth:`step` itself. Each connection
still has its own task in its own nursery (``VoiceSender.run``): it waits for the connection,
announces speaking, waits for audio, then *attaches* to the clock and sleeps until the clock
hands it back (the audio ran out and the silence tail went out, or the connection is not ready,
or a step failed). So per-frame work costs no task switch, and per-connection events still
happen in the connection's own task, where its failures end that connection only.

Encoding never delays a send: the clock sends every frame that is due first, and encodes
ahead (:data:`~discore_voice._shell.voice_sender.ENCODE_AHEAD` frames per sender) only in the
slack before the next due frame, yielding to trio about every millisecond.

The clock itself is a trio *system task*, started on first use: it must outlive any one
connection's nursery, holds no connection state of its own, and never lets a sender's error
escape (it hands the error to that sender's task instead).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Final, Protocol

import trio

from ...._errors import DiscoreVoiceError
from ..timerfd import PreciseTimer, open_timer

__all__ = ["BATCH_SLACK", "SendClock", "SenderCrashed", "send_clock"]

#: Frames due within this much of now go out in the same batch. Inside the pacer's 2 ms
#: allowance for early sends, so batching never makes a gap shorter than the pacer allows; and
#: wide enough that 1000 streams spread over the 20 ms period wake the clock every millisecond,
#: not every few frames (each wake costs more CPU than a dozen sends).
BATCH_SLACK: Final = 0.001
#: Longest run of work (sends or encodes) between two trio checkpoints, in seconds: other tasks
#: (websockets, producers filling buffers) must get the thread regularly.
_WORK_SLICE: Final = 0.001
#: The clock is read after every 4th send only (a send takes ~15 µs, a clock read ~1 µs), and a
#: step rarely encodes (that happens ahead, in the slack), so a step's ``now`` is rarely more
#: than ~0.1 ms old.
_TIME_CHECK_MASK: Final = 3


class SenderCrashed(DiscoreVoiceError):
    """A sender's step raised a BaseException that is not an Exception; it is the cause."""


#: Ours to propagate: trio's cancellation and Ctrl-C. Every other error of a sender is its own.
_NEVER_CONTAINED: Final = (trio.Cancelled, KeyboardInterrupt)


def _contained(exc: BaseException) -> Exception:
    """What a failing sender's task gets: an Exception, whatever the step raised.

    The clock is a system task, and an error escaping it is a ``TrioInternalError`` that ends
    the whole run; a sender's own task that re-raised a bare ``BaseException`` would take down
    its connection's nursery and the user's with it. Either way, one connection's failure would
    end every connection, so it is wrapped into an error that invalidates that one alone.
    """
    if isinstance(exc, Exception):
        return exc
    error = SenderCrashed(f"a voice sender raised {type(exc).__name__}")
    error.__cause__ = exc
    return error


class Steppable(Protocol):
    """What the clock drives: a sender's synchronous send step and encode-ahead step."""

    def step(self, now: float) -> float | None:
        """Send what is due at ``now``; return when to be called next (None: detach)."""
        ...

    def fill(self) -> None:
        """Encode ahead, in the slack between sends."""
        ...

    def detached(self, error: BaseException | None) -> None:
        """The clock let go of the sender (its step said so, or failed with ``error``)."""
        ...


class SendClock:
    """The heap of attached senders, by the time their next frame is due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Steppable]] = []
        self._counter = itertools.count()
        # The registration each attached sender holds; a heap entry is live only if it matches.
        self._live: dict[Steppable, int] = {}
        self._fills: deque[Steppable] = deque()
        self._kick = trio.Event()
        # Where the platform allows, the clock sleeps on a timerfd (see ``voice_timer``), and an
        # attach wakes it by firing the timer instead of setting ``_kick``.
        self._timer: PreciseTimer | None = None
        self._timer_unavailable = False
        self._sleeping = False

    def __repr__(self) -> str:
        return f"<SendClock attached={len(self._live)}>"

    @property
    def attached(self) -> int:
        return len(self._live)

    @property
    def precise(self) -> bool:
        """Whether the clock sleeps on a timerfd now (else on trio's own timeouts)."""
        return self._timer is not None

    def attach(self, sender: Steppable, due: float) -> None:
        """Call ``sender.step`` from ``due`` on, until it detaches."""
        token = next(self._counter)
        self._live[sender] = token
        heapq.heappush(self._heap, (due, token, sender))
        if self._timer is None:
            self._kick.set()
        elif self._sleeping:
            self._timer.fire()

    def detach(self, sender: Steppable) -> None:
        """Stop calling ``sender`` (its task ends); a no-op if it is not attached."""
        self._live.pop(sender, None)
        if not self._live and self._sleeping and self._timer is not None:
            self._timer.fire()  # so the idle clock lets go of its timer

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._close_timer()

    def _close_timer(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    async def _run(self) -> None:
        heap = self._heap
        live = self._live
        fills = self._fills
        current_time = trio.current_time
        while True:
            now = current_time()
            slice_end = now + _WORK_SLICE
            sent = 0
            # 1. Every frame that is due goes out before any encoding.
            while heap and heap[0][0] <= now + BATCH_SLACK:
                _, token, sender = heapq.heappop(heap)
                if live.get(sender) != token:
                    continue
                try:
                    due = sender.step(now)
                except _NEVER_CONTAINED:
                    raise
                except BaseException as exc:  # handed to the sender's own task, which fails
                    del live[sender]
                    sender.detached(_contained(exc))
                    continue
                if due is None:
                    del live[sender]
                    sender.detached(None)
                    continue
                heapq.heappush(heap, (due, token, sender))
                fills.append(sender)
                sent += 1
                if not sent & _TIME_CHECK_MASK:
                    # Fresh time for the next steps: a run's grid is anchored at its first
                    # send, so streams started together spread over the batch they went out
                    # in, instead of all coming due at the same instant every 20 ms.
                    now = current_time()
                    if now > slice_end:
                        break
            # 2. Encode ahead in the slack, in the same pass (every due frame is out), until a
            #    frame is nearly due or the slice is used up.
            while fills and trio.current_time() <= slice_end:
                if heap and heap[0][0] <= trio.current_time() + BATCH_SLACK:
                    break
                sender = fills.popleft()
                if sender in live:
                    try:
                        sender.fill()
                    except _NEVER_CONTAINED:
                        raise
                    except BaseException as exc:
                        del live[sender]
                        sender.detached(_contained(exc))
            if fills or (heap and heap[0][0] <= trio.current_time() + BATCH_SLACK):
                # More work, but other tasks (websockets, producers) get the thread first.
                await trio.lowlevel.checkpoint()
                continue
            # 3. Nothing to do before the next frame (or an attach) is due.
            if not live:
                # Idle: no file descriptor is held while no connection sends.
                heap.clear()
                self._close_timer()
                self._timer_unavailable = False
            elif self._timer is None and not self._timer_unavailable:
                self._timer = open_timer()
                self._timer_unavailable = self._timer is None
            timer = self._timer
            if timer is not None and heap:
                try:
                    timer.arm(heap[0][0])
                except OSError:
                    # Never seen, but the clock must not die of it (a system task's error
                    # ends the whole trio run): trio's own timeouts will do instead.
                    self._close_timer()
                    self._timer_unavailable = True
                    continue
                self._sleeping = True
                try:
                    await timer.wait()
                finally:
                    self._sleeping = False
                continue
            kick = self._kick = trio.Event()
            if heap:
                with trio.move_on_at(heap[0][0]):
                    await kick.wait()
            else:
                await kick.wait()


_clock: trio.lowlevel.RunVar[SendClock] = trio.lowlevel.RunVar("discore_voice_send_clock")


def send_clock() -> SendClock:
    """This trio run's send clock, started as a system task the first time it is needed."""
    try:
        return _clock.get()
    except LookupError:
        clock = SendClock()
        _clock.set(clock)
        trio.lowlevel.spawn_system_task(clock.run, name="discore_voice send clock")
        return clock
