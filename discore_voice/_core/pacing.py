"""When each voice frame goes out, and with which RTP numbers: the sender's clock, without a clock.

The field's recurring complaints about voice bots are stutter, speed-up after a lag and drift.
They all come from pacing with relative sleeps ("send, sleep 20 ms, repeat"): every wake-up's
lateness adds up, and after a stall the loop sends everything it owes at once. This engine
avoids both by construction:

* **Absolute schedule.** A run of frames starts at an anchor time; slot ``k`` is due at
  ``anchor + k * 20 ms``. A late wake-up delays one frame, never the ones after it.
* **No burst, ever.** Two sends are never closer than ``20 ms - max_early``. A frame that is late
  by at most ``late_tolerance`` still goes out, and the following frames catch up by at most
  ``max_early`` each. Later than that (a stall: GC, CPU contention), the slots that passed are
  skipped and counted, and sending resumes on the original grid, so the offset from the grid
  stays bounded. With the defaults a late frame makes a gap of at most 30 ms.
* **RTP timestamps follow real time.** Skipped slots still advance the timestamp by 960 each, and
  the first frame after a pause or an underrun is stamped with the time that really passed, so
  the receiver's jitter buffer plays silence for the gap instead of squeezing audio together.
  The sequence number advances by one per packet actually sent.
* **Five paced silence frames** (on the same grid) when the audio runs out, on pause and on
  stop, so receivers do not interpolate the last frame into a drone.

Time is passed in (float seconds from any monotonic clock, e.g. ``trio.current_time()``), so the
tests can drive it with hypothesis and a benchmark can serve many connections from one clock:
:attr:`Pacer.due_at` is all a shared scheduler needs to keep every pacer in one heap.

A connection keeps one pacer for its whole life, across pauses, voice-server reconnects and
moves: the pacer owns the RTP sequence number and timestamp, so continuity needs nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, NamedTuple

from .._errors import UsageError
from .rtp import SAMPLES_PER_FRAME
from .speaking import SILENCE_FRAMES_AFTER_AUDIO

__all__ = [
    "DEFAULT_LATE_TOLERANCE",
    "DEFAULT_MAX_EARLY",
    "FRAME_INTERVAL",
    "Action",
    "Pacer",
    "PacerStats",
    "Send",
    "Skip",
    "Wait",
]

#: Seconds per frame: 20 ms of audio per Opus packet, Discord's only frame size.
FRAME_INTERVAL: Final = 0.020
#: How much earlier than its slot (or than 20 ms after the previous send) a frame may go out.
#: Small enough that no listener notices two frames 18 ms apart; large enough that a shared
#: scheduler waking a little before a slot need not sleep again for a fraction of a millisecond.
DEFAULT_MAX_EARLY: Final = 0.002
#: How late a frame may still be sent instead of skipped: half a frame, which bounds the gap a
#: late frame can make at 30 ms while a few milliseconds of scheduling jitter never lose audio.
DEFAULT_LATE_TOLERANCE: Final = 0.010

_RTP_RATE: Final = 48_000
_SEQ_MASK: Final = 0xFFFF
_TS_MASK: Final = 0xFFFF_FFFF


class Send(NamedTuple):
    """Send one packet now: Opus audio, or the silence frame when ``is_silence``.

    The pacer has already counted it, so the caller must send it (or, if it cannot, accept a
    hole in the sequence). ``slot`` is the frame's index in the current run, ``due`` the time
    its slot began, ``lateness`` how far past ``due`` it goes out (negative: early), and ``gap``
    the time since the previous send of the same run (``None`` for a run's first frame): the
    inputs of a send-gap histogram.
    """

    slot: int
    sequence: int
    timestamp: int
    is_silence: bool
    due: float
    lateness: float
    gap: float | None


class Wait(NamedTuple):
    """Nothing to send before ``until``; ``None`` means wait for audio or :meth:`Pacer.resume`."""

    until: float | None


class Skip(NamedTuple):
    """``frames`` slots passed during a stall and will never be sent (the timestamp moved on).

    Informational: ask again for the next action. The skipped slots would have carried silence
    when ``is_silence``; otherwise the caller chooses whether to drop ``frames`` frames of audio
    (stay in real time, as live audio must) or keep them (a track loses nothing, it starts late).
    """

    frames: int
    is_silence: bool


Action = Send | Wait | Skip

_WAIT_FOR_EVENT: Final = Wait(None)


@dataclass(slots=True)
class PacerStats:
    """Counters the connection reports; cumulative over the pacer's life."""

    #: Audio frames sent.
    frames_sent: int = 0
    #: Silence frames sent (the tails after audio, pause and stop).
    silence_sent: int = 0
    #: Slots skipped because a stall made them later than ``late_tolerance``.
    skipped_late: int = 0
    #: Stalls that caused skipping (each may skip many slots).
    stalls: int = 0
    #: The largest lateness of any frame actually sent, in seconds.
    max_lateness: float = 0.0
    #: Runs started: the first frame after idle, pause or stop begins a new one.
    runs: int = 0


class Pacer:
    """One connection's send schedule and RTP counters; see the module docstring for the rules.

    Drive it by calling :meth:`next_action` whenever its last answer says so: at ``Wait.until``,
    immediately after a ``Send`` or ``Skip``, and, after ``Wait(None)``, when audio becomes
    available or the connection is resumed. ``audio_ready`` tells it whether a frame of audio is
    ready to go at this moment; when it is not at a slot's time, the audio has run out.
    """

    __slots__ = (
        "_anchor",
        "_last_due",
        "_last_sent_at",
        "_last_ts",
        "_late_tolerance",
        "_max_early",
        "_paused",
        "_run_started",
        "_running",
        "_sequence",
        "_silence_left",
        "_slot",
        "_stopping",
        "_ts_base",
        "_wake_at",
        "stats",
    )

    def __init__(
        self,
        *,
        sequence: int = 0,
        timestamp: int = 0,
        max_early: float = DEFAULT_MAX_EARLY,
        late_tolerance: float = DEFAULT_LATE_TOLERANCE,
    ) -> None:
        if not 0 <= sequence <= _SEQ_MASK or not 0 <= timestamp <= _TS_MASK:
            raise UsageError("sequence must fit in 16 bits and timestamp in 32 bits")
        if not 0.0 <= max_early < FRAME_INTERVAL / 2:
            raise UsageError(
                f"max_early must be from 0 to under half a frame (10 ms), got {max_early!r}"
            )
        if not max_early <= late_tolerance < FRAME_INTERVAL:
            raise UsageError(
                "late_tolerance must be at least max_early and under one frame (20 ms), "
                f"got {late_tolerance!r}"
            )
        self._max_early = float(max_early)
        self._late_tolerance = float(late_tolerance)
        self._sequence = sequence
        # The timestamp of slot 0 of the current run; slot k carries base + 960 k.
        self._ts_base = timestamp
        self._running = False
        self._run_started = False
        self._anchor = 0.0
        self._slot = 0
        self._silence_left = 0
        self._paused = False
        self._stopping = False
        # Due time and timestamp of the last frame sent, for the next run's spacing and stamp.
        self._last_due: float | None = None
        self._last_ts = timestamp
        self._last_sent_at = -math.inf
        self._wake_at: float | None = None
        self.stats = PacerStats()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self._running else "idle"
        return f"<Pacer {state} seq={self._sequence} slot={self._slot}>"

    # -- state the shell and a shared scheduler read -------------------------------------------

    @property
    def sequence(self) -> int:
        """The RTP sequence number the next packet will carry."""
        return self._sequence

    @property
    def timestamp(self) -> int:
        """The RTP timestamp of the last packet sent (the initial one before any)."""
        return self._last_ts

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def running(self) -> bool:
        """Whether a run is in progress: audio, or its silence tail, is on the schedule."""
        return self._running

    @property
    def due_at(self) -> float | None:
        """When :meth:`next_action` will next have something to do; ``None``: only on an event.

        Exact for a running pacer: a scheduler may call it at this time (or up to ``max_early``
        before) and get a ``Send``.
        """
        if not self._running:
            return self._wake_at
        due = self._anchor + self._slot * FRAME_INTERVAL
        return max(due, self._last_sent_at + FRAME_INTERVAL - self._max_early)

    # -- events ---------------------------------------------------------------------------------

    def on_audio_available(self, now: float) -> float | None:
        """Note that audio arrived while idle; return :attr:`due_at` for a scheduler's heap.

        The first frame goes out as soon as there is audio, so an idle pacer becomes due at
        ``now``; the run itself starts on the next :meth:`next_action` with ``audio_ready``.
        """
        if not self._running and not self._paused:
            self._wake_at = now
        return self.due_at

    def pause(self) -> None:
        """Stop sending audio: five paced silence frames follow, then nothing until resume."""
        self._paused = True
        self._wake_at = None
        self._begin_tail()

    def resume(self) -> None:
        """Allow audio again; the next run starts when audio is ready, stamped by real time."""
        self._paused = False

    def stop(self) -> None:
        """End the current audio: five paced silence frames, then idle until new audio.

        Unlike :meth:`pause`, no resume is needed; audio offered during the tail is ignored, so
        the end of the old track cannot leak into the silence.
        """
        if self._running:
            self._stopping = True
            self._begin_tail()

    def _begin_tail(self) -> None:
        if self._running and not self._silence_left:
            if self._run_started:
                self._silence_left = SILENCE_FRAMES_AFTER_AUDIO
            else:
                # Paused or stopped before the first frame went out: nothing to end.
                self._end_run()

    def _end_run(self) -> None:
        self._running = False
        self._run_started = False
        self._silence_left = 0
        self._stopping = False

    def _start_run(self, now: float) -> None:
        # The first frame goes out now, unless that would follow the previous send too closely.
        anchor = now
        if self._last_due is None:
            self._ts_base = self._last_ts
        else:
            anchor = max(now, self._last_due + FRAME_INTERVAL)
            elapsed = round((anchor - self._last_due) * _RTP_RATE)
            self._ts_base = (self._last_ts + max(SAMPLES_PER_FRAME, elapsed)) & _TS_MASK
        self._anchor = anchor
        self._slot = 0
        self._running = True
        self._run_started = False
        self._silence_left = 0
        self._wake_at = None

    # -- the schedule ---------------------------------------------------------------------------

    def next_action(self, now: float, *, audio_ready: bool) -> Action:
        """What to do at ``now``: send a frame (audio or silence), skip stalled slots, or wait."""
        if not self._running:
            self._wake_at = None
            if not audio_ready or self._paused:
                return _WAIT_FOR_EVENT
            self._start_run(now)

        slot = self._slot
        due = self._anchor + slot * FRAME_INTERVAL
        if now - due > self._late_tolerance:
            return self._skip(now)
        max_early = self._max_early
        spaced = self._last_sent_at + FRAME_INTERVAL
        if now < due - max_early or now < spaced - max_early:
            return Wait(max(due, spaced - max_early))

        silence_left = self._silence_left
        if silence_left:
            if audio_ready and not self._paused and not self._stopping:
                # Audio came back during an underrun's tail: carry on, on the same grid.
                self._silence_left = silence_left = 0
        elif not audio_ready:
            if not self._run_started:
                # Asked to start, but the audio is gone again before the first frame.
                self._end_run()
                return _WAIT_FOR_EVENT
            self._silence_left = silence_left = SILENCE_FRAMES_AFTER_AUDIO

        lateness = now - due
        gap = now - self._last_sent_at if self._run_started else None
        sequence = self._sequence
        timestamp = (self._ts_base + slot * SAMPLES_PER_FRAME) & _TS_MASK
        action = Send(
            slot,
            sequence,
            timestamp,
            bool(silence_left),
            due,
            lateness,
            gap,
        )
        self._sequence = (sequence + 1) & _SEQ_MASK
        self._slot = slot + 1
        self._last_due = due
        self._last_ts = timestamp
        self._last_sent_at = now
        stats = self.stats
        if not self._run_started:
            self._run_started = True
            stats.runs += 1
        if lateness > stats.max_lateness:
            stats.max_lateness = lateness
        if silence_left:
            stats.silence_sent += 1
            self._silence_left = silence_left - 1
            if silence_left == 1:
                self._end_run()
        else:
            stats.frames_sent += 1
        return action

    def _skip(self, now: float) -> Skip:
        # Resume at the first slot that has not passed (allowing max_early), on the same grid.
        slot = self._slot
        target = math.ceil((now - self._max_early - self._anchor) / FRAME_INTERVAL)
        # Float rounding must neither keep a passed slot nor skip a future one.
        while self._anchor + target * FRAME_INTERVAL < now - self._max_early:
            target += 1
        while (
            target - 1 > slot
            and self._anchor + (target - 1) * FRAME_INTERVAL >= now - self._max_early
        ):
            target -= 1
        target = max(target, slot + 1)
        count = target - slot
        self._slot = target
        self.stats.skipped_late += count
        self.stats.stalls += 1
        return Skip(count, bool(self._silence_left))
