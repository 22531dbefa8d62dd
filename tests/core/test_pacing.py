"""The pacing engine: an absolute 20 ms grid, no burst after a stall, RTP numbers by real time."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice._core.pacing import (
    DEFAULT_LATE_TOLERANCE,
    DEFAULT_MAX_EARLY,
    FRAME_INTERVAL,
    Action,
    Pacer,
    Send,
    Skip,
    Wait,
)
from discore_voice._core.rtp import sequence_distance, timestamp_distance
from discore_voice._errors import UsageError

T = FRAME_INTERVAL
EPS = 1e-9


def _send(action: Action) -> Send:
    assert isinstance(action, Send), action
    return action


def _until(action: Action) -> float | None:
    assert isinstance(action, Wait), action
    return action.until


def _run_audio(pacer: Pacer, start: float, frames: int, *, delay: float = 0.0) -> list[Send]:
    """Play ``frames`` audio frames, waking ``delay`` after every Wait; return the sends."""
    sends: list[Send] = []
    now = start
    left = frames
    for _ in range(10 * frames + 100):
        if not left:
            break
        action = pacer.next_action(now, audio_ready=True)
        if isinstance(action, Send):
            sends.append(action)
            left -= 1
        elif isinstance(action, Wait):
            assert action.until is not None
            now = max(now, action.until + delay)
        else:
            pytest.fail(f"unexpected {action}")
    assert not left, "the pacer stopped sending"
    return sends


def _drain(pacer: Pacer, now: float, *, audio_ready: bool = False) -> tuple[list[Send], float]:
    """Follow Waits until the pacer waits for an event; return the sends and the time."""
    sends: list[Send] = []
    for _ in range(1000):
        action = pacer.next_action(now, audio_ready=audio_ready)
        if isinstance(action, Send):
            sends.append(action)
        elif isinstance(action, Wait):
            if action.until is None:
                return sends, now
            now = max(now, action.until)
        else:
            pytest.fail(f"unexpected {action}")
    pytest.fail("the pacer never went idle")


# -- first frame, grid, drift ----------------------------------------------------------------------


def test_idle_pacer_waits_for_audio() -> None:
    pacer = Pacer()
    assert pacer.next_action(5.0, audio_ready=False) == Wait(None)
    assert pacer.due_at is None
    assert not pacer.running


def test_first_frame_goes_out_immediately() -> None:
    pacer = Pacer(sequence=100, timestamp=5000)
    send = _send(pacer.next_action(12.345, audio_ready=True))
    assert send == Send(0, 100, 5000, False, 12.345, 0.0, None)
    assert pacer.next_action(12.345, audio_ready=True) == Wait(12.345 + T)
    assert pacer.due_at == pytest.approx(12.365)


def test_absolute_schedule_has_no_drift() -> None:
    pacer = Pacer()
    sends = _run_audio(pacer, 1000.0, 3000, delay=0.0007)
    for k, send in enumerate(sends):
        assert send.slot == k
        assert send.due == pytest.approx(1000.0 + k * T, abs=1e-9)
        assert send.lateness == pytest.approx(0.0007 if k else 0.0, abs=1e-6)
        assert send.timestamp == k * 960
        assert send.sequence == k % 65536
    assert pacer.stats.frames_sent == 3000
    assert pacer.stats.skipped_late == 0


def test_early_call_waits_and_early_within_max_early_sends() -> None:
    pacer = Pacer(max_early=0.002)
    _send(pacer.next_action(0.0, audio_ready=True))
    assert pacer.next_action(0.0175, audio_ready=True) == Wait(0.02)
    send = _send(pacer.next_action(0.0185, audio_ready=True))
    assert send.lateness == pytest.approx(-0.0015)
    assert send.timestamp == 960


# -- lateness and stalls ---------------------------------------------------------------------------


def test_late_frames_catch_up_by_at_most_max_early_each() -> None:
    pacer = Pacer(max_early=0.002, late_tolerance=0.010)
    _send(pacer.next_action(0.0, audio_ready=True))
    late = _send(pacer.next_action(0.028, audio_ready=True))  # 8 ms late, within tolerance
    assert late.lateness == pytest.approx(0.008)
    sends = [late]
    now = 0.028
    for _ in range(6):
        action = pacer.next_action(now, audio_ready=True)
        assert isinstance(action, Wait) and action.until is not None
        now = action.until
        sends.append(_send(pacer.next_action(now, audio_ready=True)))
    assert [round(s.lateness * 1000, 6) for s in sends] == [8, 6, 4, 2, 0, 0, 0]
    gaps = [s.gap for s in sends[1:]]
    assert gaps == pytest.approx([0.018, 0.018, 0.018, 0.018, 0.020, 0.020])


def test_stall_skips_passed_slots_and_resumes_on_the_grid() -> None:
    pacer = Pacer(sequence=7)
    sends = _run_audio(pacer, 0.0, 3)
    # The shell stalls for 200 ms after slot 2 (sent at 40 ms).
    skip = pacer.next_action(0.26, audio_ready=True)
    assert skip == Skip(10, False)
    send = _send(pacer.next_action(0.26, audio_ready=True))
    assert send.slot == 13
    assert send.due == pytest.approx(0.26)
    assert send.timestamp == 13 * 960
    assert send.sequence == sends[-1].sequence + 1
    assert _until(pacer.next_action(0.26, audio_ready=True)) == pytest.approx(0.28)
    assert pacer.stats.skipped_late == 10
    assert pacer.stats.stalls == 1


def test_stall_ending_between_slots_waits_for_the_next_one() -> None:
    pacer = Pacer()
    _run_audio(pacer, 0.0, 3)
    assert pacer.next_action(0.265, audio_ready=True) == Skip(11, False)
    # Never a frame off the grid right after a stall: wait for slot 14 at 280 ms.
    assert _until(pacer.next_action(0.265, audio_ready=True)) == pytest.approx(0.28)
    send = _send(pacer.next_action(0.28, audio_ready=True))
    assert (send.slot, send.timestamp) == (14, 14 * 960)


def test_lateness_just_over_tolerance_skips_one_slot() -> None:
    pacer = Pacer(max_early=0.002, late_tolerance=0.010)
    _run_audio(pacer, 0.0, 1)
    assert pacer.next_action(0.0305, audio_ready=True) == Skip(1, False)
    assert _until(pacer.next_action(0.0305, audio_ready=True)) == pytest.approx(0.04)


# -- silence tails ---------------------------------------------------------------------------------


def test_five_paced_silence_frames_when_audio_runs_out() -> None:
    pacer = Pacer()
    audio = _run_audio(pacer, 0.0, 3)
    tail, now = _drain(pacer, audio[-1].due)
    assert [s.is_silence for s in tail] == [True] * 5
    assert [s.slot for s in tail] == [3, 4, 5, 6, 7]
    assert [s.due for s in tail] == pytest.approx([0.06, 0.08, 0.10, 0.12, 0.14])
    assert [s.timestamp for s in tail] == [2880, 3840, 4800, 5760, 6720]
    assert not pacer.running
    assert pacer.stats.silence_sent == 5
    assert pacer.next_action(now + 1, audio_ready=False) == Wait(None)


def test_underrun_tail_is_cut_short_by_returning_audio() -> None:
    pacer = Pacer()
    _run_audio(pacer, 0.0, 2)
    silence = _send(pacer.next_action(0.04, audio_ready=False))
    assert silence.is_silence
    back = _send(pacer.next_action(0.06, audio_ready=True))
    assert not back.is_silence
    assert (back.slot, back.timestamp) == (3, 2880)
    assert back.gap == pytest.approx(0.02)


def test_pause_sends_five_silence_frames_then_nothing_until_resume() -> None:
    pacer = Pacer(sequence=65533, timestamp=2**32 - 1000)
    audio = _run_audio(pacer, 10.0, 4)
    pacer.pause()
    assert pacer.paused
    tail, now = _drain(pacer, audio[-1].due, audio_ready=True)
    assert [s.is_silence for s in tail] == [True] * 5
    assert [s.gap for s in tail] == pytest.approx([T] * 5)
    last = tail[-1]
    assert pacer.next_action(now + 5.0, audio_ready=True) == Wait(None)
    pacer.resume()
    resumed = _send(pacer.next_action(13.0, audio_ready=True))
    assert not resumed.is_silence
    assert resumed.gap is None
    assert resumed.due == 13.0
    # Continuity: seq +1 across the wrap, timestamp jumps by the real time that passed.
    assert [s.sequence for s in audio + tail] == [65533, 65534, 65535, *range(6)]
    assert sequence_distance(last.sequence, resumed.sequence) == 1
    assert timestamp_distance(last.timestamp, resumed.timestamp) == round((13.0 - last.due) * 48000)
    assert pacer.stats.runs == 2


def test_pause_while_idle_sends_nothing() -> None:
    pacer = Pacer()
    pacer.pause()
    assert pacer.next_action(1.0, audio_ready=True) == Wait(None)
    pacer.resume()
    assert _send(pacer.next_action(1.0, audio_ready=True)).slot == 0
    assert pacer.stats.silence_sent == 0


def test_resume_during_pause_tail_lets_audio_continue_on_the_grid() -> None:
    pacer = Pacer()
    _run_audio(pacer, 0.0, 2)
    pacer.pause()
    assert _send(pacer.next_action(0.04, audio_ready=True)).is_silence
    pacer.resume()
    send = _send(pacer.next_action(0.06, audio_ready=True))
    assert not send.is_silence and send.slot == 3


def test_stop_sends_five_silence_frames_and_ignores_audio_meanwhile() -> None:
    pacer = Pacer()
    audio = _run_audio(pacer, 0.0, 3)
    pacer.stop()
    # Audio is offered throughout: the tail ignores it, then a new run starts right after.
    sends = _run_audio(pacer, audio[-1].due, 7)
    assert [s.is_silence for s in sends] == [True] * 5 + [False] * 2
    assert sends[5].gap is None  # a new run, not a continuation
    assert sends[5].due == pytest.approx(sends[4].due + T)
    assert sends[5].timestamp - sends[4].timestamp == 960
    assert pacer.stats.runs == 2


def test_stop_while_idle_changes_nothing() -> None:
    pacer = Pacer()
    pacer.stop()
    assert _send(pacer.next_action(0.0, audio_ready=True)).slot == 0


def test_resume_right_after_a_tail_keeps_the_spacing() -> None:
    pacer = Pacer()
    _run_audio(pacer, 0.0, 1)
    pacer.pause()
    tail, _ = _drain(pacer, 0.0)
    pacer.resume()
    action = pacer.next_action(tail[-1].due + 0.001, audio_ready=True)
    assert _until(action) == pytest.approx(tail[-1].due + T)
    send = _send(pacer.next_action(tail[-1].due + T, audio_ready=True))
    assert send.timestamp - tail[-1].timestamp == 960


def test_pause_before_the_first_frame_sends_no_silence() -> None:
    pacer = Pacer()
    _run_audio(pacer, 0.0, 1)
    _drain(pacer, 0.0)  # tail ends at 100 ms
    assert isinstance(pacer.next_action(0.105, audio_ready=True), Wait)  # run starts at 120 ms
    pacer.pause()
    assert pacer.next_action(0.12, audio_ready=True) == Wait(None)
    assert pacer.stats.silence_sent == 5


def test_audio_gone_before_a_started_run_sends_nothing() -> None:
    pacer = Pacer()
    _run_audio(pacer, 0.0, 1)
    _drain(pacer, 0.0)
    assert isinstance(pacer.next_action(0.105, audio_ready=True), Wait)
    assert pacer.next_action(0.12, audio_ready=False) == Wait(None)
    assert pacer.stats.silence_sent == 5
    assert pacer.stats.frames_sent == 1
    assert pacer.stats.runs == 1


# -- scheduler hooks, counters, arguments ----------------------------------------------------------


def test_due_at_drives_a_shared_heap_scheduler() -> None:
    """Many pacers on one clock: pop the earliest, act, push back; each stays on its grid."""
    pacers = [Pacer() for _ in range(20)]
    heap: list[tuple[float, int]] = []
    for index, pacer in enumerate(pacers):
        due = pacer.on_audio_available(index * 0.0013)
        assert due == pytest.approx(index * 0.0013)
        heapq.heappush(heap, (index * 0.0013, index))
    sends: dict[int, list[Send]] = {i: [] for i in range(20)}
    while heap:
        now, index = heapq.heappop(heap)
        pacer = pacers[index]
        while True:
            action = pacer.next_action(now, audio_ready=len(sends[index]) < 50)
            if isinstance(action, Send):
                sends[index].append(action)
                continue
            break
        assert isinstance(action, Wait)
        if action.until is not None:
            assert pacer.due_at == pytest.approx(action.until)
            heapq.heappush(heap, (action.until, index))
    for index, got in sends.items():
        assert len(got) == 55
        assert [s.due for s in got] == pytest.approx([index * 0.0013 + k * T for k in range(55)])


def test_on_audio_available_while_paused_does_not_wake() -> None:
    pacer = Pacer()
    pacer.pause()
    assert pacer.on_audio_available(1.0) is None
    assert pacer.due_at is None


def test_max_lateness_counter() -> None:
    pacer = Pacer()
    _send(pacer.next_action(0.0, audio_ready=True))
    _send(pacer.next_action(0.025, audio_ready=True))
    assert pacer.stats.max_lateness == pytest.approx(0.005)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sequence": -1},
        {"sequence": 65536},
        {"timestamp": 2**32},
        {"max_early": -0.001},
        {"max_early": 0.011},
        {"max_early": 0.003, "late_tolerance": 0.002},
        {"late_tolerance": 0.02},
    ],
)
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        Pacer(**kwargs)  # type: ignore[arg-type]


def test_defaults_bound_a_late_frames_gap_to_30_ms() -> None:
    assert DEFAULT_MAX_EARLY == 0.002
    assert pytest.approx(0.030) == FRAME_INTERVAL + DEFAULT_LATE_TOLERANCE


# -- properties ------------------------------------------------------------------------------------


@dataclass
class _Event:
    at: float
    kind: str
    frames: int = 0


@dataclass
class _Trace:
    sends: list[tuple[float, Send]] = field(default_factory=list)
    skipped: int = 0
    paused_audio_sends: int = 0


_kinds = st.sampled_from(["audio", "audio", "audio", "pause", "resume", "stop"])
_events = st.lists(
    st.builds(_Event, st.floats(0.0, 1.5), _kinds, st.integers(1, 40)), max_size=10
).map(lambda events: sorted(events, key=lambda e: e.at))
# Mostly scheduling jitter, sometimes a stall (GC, CPU contention) of up to 300 ms.
_delays = st.lists(
    st.one_of(st.floats(0.0, 0.0015), st.floats(0.0, 0.012), st.floats(0.0, 0.3)),
    min_size=1,
    max_size=40,
)


def _simulate(pacer: Pacer, events: list[_Event], delays: list[float], *, start: float) -> _Trace:
    trace = _Trace()
    frames = 0
    paused = False
    pending = [_Event(start + e.at, e.kind, e.frames) for e in events]
    now = start
    step = 0
    end = start + 4.0
    while now < end and step < 5000:
        while pending and pending[0].at <= now:
            event = pending.pop(0)
            if event.kind == "audio":
                frames += event.frames
                pacer.on_audio_available(now)
            elif event.kind == "pause":
                pacer.pause()
                paused = True
            elif event.kind == "resume":
                pacer.resume()
                paused = False
            else:
                pacer.stop()
                frames = 0  # the shell clears the buffer on stop
        action = pacer.next_action(now, audio_ready=frames > 0)
        step += 1
        if isinstance(action, Send):
            trace.sends.append((now, action))
            if not action.is_silence:
                assert frames > 0, "audio sent with no audio ready"
                trace.paused_audio_sends += paused
                frames -= 1
            continue
        if isinstance(action, Skip):
            trace.skipped += action.frames
            continue
        delay = delays[step % len(delays)]
        if action.until is None:
            if not pending:
                break
            now = max(now, pending[0].at) + delay
        else:
            wake = action.until + delay
            now = max(now, min(wake, pending[0].at) if pending else wake)
    return trace


@settings(max_examples=300, deadline=None)
@given(
    _events,
    _delays,
    st.sampled_from([0.0, 0.001, 0.002, 0.005]),
    st.floats(0.0, 0.019),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 1e6),
)
def test_pacing_invariants(
    events: list[_Event],
    delays: list[float],
    max_early: float,
    extra_tolerance: float,
    sequence: int,
    timestamp: int,
    start: float,
) -> None:
    tolerance = min(max_early + extra_tolerance, 0.0199)
    pacer = Pacer(
        sequence=sequence, timestamp=timestamp, max_early=max_early, late_tolerance=tolerance
    )
    trace = _simulate(pacer, events, delays, start=start)
    sends = trace.sends
    assert trace.paused_audio_sends == 0
    # Precision of floats around ``start`` (up to 1e6 s): absolute slack of a microsecond.
    slack = 1e-6
    for (t1, a), (t2, b) in itertools.pairwise(sends):
        # Never a burst: no two sends closer than one frame minus the allowed earliness.
        assert t2 - t1 >= T - max_early - slack
        # One sequence number per packet sent.
        assert sequence_distance(a.sequence, b.sequence) == 1
        # Timestamps advance by the real time between the slots, at least a frame.
        advance = timestamp_distance(a.timestamp, b.timestamp)
        assert advance >= 960
        assert abs(advance - (b.due - a.due) * 48000) <= 1 + slack * 48000
        assert abs(advance / 48000 - (t2 - t1)) <= tolerance + max_early + 1 / 48000 + slack
    for now, send in sends:
        assert 0 <= send.sequence <= 0xFFFF
        assert 0 <= send.timestamp <= 0xFFFF_FFFF
        # No frame later than the tolerance (stalls skip instead), none earlier than allowed.
        assert -max_early - slack <= now - send.due <= tolerance + slack
    if sends:
        assert (sends[0][1].sequence, sends[0][1].timestamp) == (sequence, timestamp)
    stats = pacer.stats
    assert stats.frames_sent == sum(not s.is_silence for _, s in sends)
    assert stats.silence_sent == sum(s.is_silence for _, s in sends)
    assert stats.skipped_late == trace.skipped
    # Silence comes in tails; a tail that ends its run is exactly five frames, others shorter.
    runs: list[list[Send]] = []
    for _, send in sends:
        if send.gap is None:
            runs.append([])
        runs[-1].append(send)
    assert stats.runs == len(runs)
    for index, run in enumerate(runs):
        assert not run[0].is_silence, "a run starts with audio"
        streak = 0
        for send in run:
            streak = streak + 1 if send.is_silence else 0
            assert streak <= 5
        ended = index < len(runs) - 1 or not pacer.running
        if ended:
            assert [s.is_silence for s in run[-5:]] == [True] * 5
