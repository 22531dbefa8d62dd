"""The playout buffer: order, latency, concealment, talkspurt ends, timeline jumps, spikes, bounds.

Time is the caller's: each "tick" below pushes whatever arrived in that 20 ms, then pops once.
Packets carry distinct payloads, so an output slot can be traced back to the packet it came from.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from discore_voice._core.receive.playout import (
    _PLAYING,
    DECAY_POPS,
    OVERFLOW_MARGIN,
    PlayoutBuffer,
    Slot,
    SlotKind,
)
from discore_voice._core.rtp import SAMPLES_PER_FRAME
from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice._errors import UsageError

FRAME = SAMPLES_PER_FRAME
TS_MOD = 1 << 32
SEQ_MOD = 1 << 16

Packet = tuple[int, int, bytes]


def _payload(index: int) -> bytes:
    return b"op" + index.to_bytes(4, "big")


def _stream(count: int, seq: int = 1000, ts: int = 50_000, first: int = 0) -> list[Packet]:
    """``count`` consecutive packets from (seq, ts), payloads numbered from ``first``."""
    return [
        ((seq + i) % SEQ_MOD, (ts + i * FRAME) % TS_MOD, _payload(first + i)) for i in range(count)
    ]


def _check(buffer: PlayoutBuffer, pushes: int) -> None:
    """The conservation laws, which must hold after every push and every pop."""
    s = buffer.stats
    assert s["accepted"] == s["played"] + s["overflow"] + s["flushed"] + buffer.buffered
    assert pushes == s["accepted"] + s["late"] + s["duplicate"] + s["stale"]
    assert s["plc"] == s["lost"] + s["underrun"] + s["gap"]
    assert s["overflow"] <= s["skipped"]


class Run:
    """Drives a buffer tick by tick and keeps every output, checking the laws at each step."""

    def __init__(self, buffer: PlayoutBuffer | None = None) -> None:
        self.buffer = buffer if buffer is not None else PlayoutBuffer()
        self.pushes = 0
        self.kept: list[bool] = []
        self.out: list[Slot | None] = []

    def push(self, packets: Iterable[Packet]) -> None:
        for seq, ts, opus in packets:
            self.kept.append(self.buffer.push(seq, ts, opus))
            self.pushes += 1
            _check(self.buffer, self.pushes)
            assert self.buffer.buffered <= self.buffer._max_slots

    def tick(self, packets: Iterable[Packet] = ()) -> Slot | None:
        self.push(packets)
        slot = self.buffer.pop()
        _check(self.buffer, self.pushes)
        self.out.append(slot)
        return slot

    def ticks(self, count: int) -> list[Slot | None]:
        return [self.tick() for _ in range(count)]

    def feed(self, packets: Sequence[Packet], lost: Iterable[int] = ()) -> list[Slot | None]:
        """One packet per tick, in order: a jitter-free network, which may lose some."""
        missing = set(lost)
        return [self.tick([] if i in missing else [p]) for i, p in enumerate(packets)]


def _kinds(slots: Iterable[Slot | None]) -> list[str]:
    return ["-" if s is None else s.kind.value for s in slots]


def _played(slots: Iterable[Slot | None]) -> list[bytes]:
    return [s.opus for s in slots if s is not None and s.kind is SlotKind.PACKET]


# --- order and latency -------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 5, 9])
def test_an_in_order_stream_comes_out_identical_after_depth_frames(depth: int) -> None:
    # Starting just before both counters wrap, which must be invisible.
    packets = _stream(60, seq=SEQ_MOD - 3, ts=TS_MOD - 2 * FRAME)
    run = Run(PlayoutBuffer(depth))
    out = run.feed(packets)
    # The first packet comes out on the depth-th pop after it arrived (100 ms by default)...
    assert out[: depth - 1] == [None] * (depth - 1)
    assert not any(s is None for s in out[depth - 1 :])
    # ...and then every packet, unchanged, in order.
    played = [s for s in out + run.ticks(depth - 1) if s is not None]
    assert [(s.kind, s.sequence, s.timestamp, s.opus) for s in played] == [
        (SlotKind.PACKET, seq, ts, opus) for seq, ts, opus in packets
    ]
    assert run.buffer.is_playing
    assert run.buffer.stats["played"] == 60
    assert run.buffer.stats["plc"] == run.buffer.stats["fec"] == 0


def test_a_short_burst_is_played_after_the_depth_not_withheld() -> None:
    run = Run()
    out = run.tick(_stream(2))
    assert out is None and not run.buffer.is_playing
    out2 = run.ticks(4)
    assert _kinds(out2) == ["-", "-", "-", "packet"]
    assert _kinds(run.ticks(1)) == ["packet"]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(5, 80),
    st.integers(0, SEQ_MOD - 1),
    st.integers(0, TS_MOD - 1),
    st.randoms(use_true_random=False),
)
def test_reordering_within_the_depth_is_transparent(
    depth: int, count: int, seq: int, ts: int, rng: random.Random
) -> None:
    packets = _stream(count, seq, ts)
    # One packet a tick, each window of ``depth`` packets in a random order.
    arrivals: list[Packet] = []
    for start in range(0, count, depth):
        window = packets[start : start + depth]
        rng.shuffle(window)
        arrivals += window
    run = Run(PlayoutBuffer(depth))
    out = run.feed(arrivals) + run.ticks(depth)
    assert _played(out) == [p[2] for p in packets]
    played_at = [i for i, s in enumerate(out) if s is not None and s.kind is SlotKind.PACKET]
    assert played_at == list(range(depth - 1, depth - 1 + count))  # no hole, no concealment
    assert all(run.kept)
    assert run.buffer.stats["late"] == run.buffer.stats["overflow"] == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(5, 80), st.randoms(use_true_random=False))
def test_jitter_within_the_depth_loses_nothing_when_the_first_packet_is_on_time(
    depth: int, count: int, rng: random.Random
) -> None:
    packets = _stream(count)
    arrivals: dict[int, list[Packet]] = {0: [packets[0]]}
    for i, packet in enumerate(packets[1:], 1):
        # Up to depth - 1 ticks late, several arriving together.
        arrivals.setdefault(i + rng.randrange(depth), []).append(packet)
    run = Run(PlayoutBuffer(depth))
    for t in range(count + 2 * depth):
        run.tick(arrivals.get(t, ()))
    assert _played(run.out) == [p[2] for p in packets]
    assert run.buffer.stats["fec"] == run.buffer.stats["lost"] == 0


# --- loss and concealment ----------------------------------------------------------------------


def test_a_single_loss_is_recovered_by_fec_from_the_next_packet() -> None:
    packets = _stream(12)
    run = Run()
    out = run.feed(packets, lost={5}) + run.ticks(5)
    slots = [s for s in out if s is not None]
    assert [s.kind for s in slots[4:7]] == [SlotKind.PACKET, SlotKind.FEC, SlotKind.PACKET]
    fec = slots[5]
    assert fec.timestamp == packets[5][1]
    assert fec.opus == packets[6][2]  # the next frame, whose in-band FEC holds this one
    assert fec.sequence is None
    assert slots[6].opus == packets[6][2]  # and still played itself
    assert run.buffer.stats["fec"] == 1 and run.buffer.stats["lost"] == 0


def test_two_losses_in_a_row_are_one_plc_then_fec() -> None:
    packets = _stream(12)
    run = Run()
    out = run.feed(packets, lost={5, 6}) + run.ticks(5)
    slots = [s for s in out if s is not None]
    assert _kinds(slots[4:8]) == ["packet", "plc", "fec", "packet"]
    assert slots[5].opus == b"" and slots[5].timestamp == packets[5][1]
    assert slots[6].opus == packets[7][2]
    assert run.buffer.stats["lost"] == 1 and run.buffer.stats["fec"] == 1


def test_late_duplicate_and_stale_packets_are_counted_and_dropped() -> None:
    packets = _stream(10)
    run = Run()
    run.feed(packets[:8])  # packets 0-3 played, 4-7 buffered
    b = run.buffer
    assert b.is_playing
    assert not b.push(*packets[0])  # its slot was played
    assert b.stats["late"] == 1
    seq, ts, _ = packets[5]
    assert not b.push(seq, ts, b"again")  # a slot already holding a packet
    assert not b.push(packets[7][0], packets[7][1] + FRAME, b"x")  # the newest number again
    assert b.stats["duplicate"] == 2
    # Older by sequence number but not by timestamp: no coherent sender does that.
    assert not b.push((seq - 20) % SEQ_MOD, packets[7][1], b"straggler")
    assert b.stats["stale"] == 1
    run.pushes += 4
    _check(b, run.pushes)
    assert _played(run.ticks(4)) == [p[2] for p in packets[4:8]]


def test_a_talkspurt_ending_in_silence_frames_ends_cleanly() -> None:
    packets = _stream(10)
    silence = [
        (s, t, OPUS_SILENCE_FRAME) for s, t, _ in _stream(5, seq=1010, ts=50_000 + 10 * FRAME)
    ]
    run = Run()
    run.feed(packets + silence)
    tail = run.ticks(6)
    assert _kinds(tail) == ["packet"] * 4 + ["-", "-"]
    assert tail[3] is not None and tail[3].opus == OPUS_SILENCE_FRAME
    s = run.buffer.stats
    assert s["finished"] == 1 and s["plc"] == 0 and s["ended"] == 0
    assert not run.buffer.is_playing and run.buffer.is_idle


@pytest.mark.parametrize("max_concealed", [0, 1, 5, 8])
def test_a_stream_that_stops_is_concealed_then_ends(max_concealed: int) -> None:
    run = Run(PlayoutBuffer(max_concealed=max_concealed))
    run.feed(_stream(10))
    tail = run.ticks(4 + max_concealed + 3)
    assert _kinds(tail) == ["packet"] * 4 + ["plc"] * max_concealed + ["-"] * 3
    s = run.buffer.stats
    assert s["underrun"] == max_concealed and s["ended"] == 1 and s["finished"] == 0
    assert run.buffer.is_idle


def test_the_next_talkspurt_fills_again_and_stragglers_of_the_last_are_late() -> None:
    first = _stream(10)
    run = Run()
    run.feed(first)
    run.ticks(4 + 5 + 1)  # played out, concealed, ended
    assert run.buffer.is_idle
    assert not run.buffer.push(*first[3])  # a straggler of the talkspurt that ended
    assert run.buffer.stats["late"] == 1
    run.pushes += 1
    # The sender paused 2 s (its timestamps count the pause), then speaks again.
    second = _stream(10, seq=1010, ts=50_000 + 110 * FRAME, first=100)
    out = run.feed(second) + run.ticks(4)
    assert out[:4] == [None] * 4
    assert _played(out) == [p[2] for p in second]


def test_a_sender_that_does_not_count_its_pauses_resumes_at_once() -> None:
    # A bot that stops without silence frames and whose timestamps carry on from its last packet.
    run = Run()
    run.feed(_stream(10))
    run.ticks(4 + 5 + 1)
    assert run.buffer.is_idle
    again = _stream(10, seq=1010, ts=50_000 + 10 * FRAME, first=100)
    out = run.feed(again) + run.ticks(4)
    assert _played(out) == [p[2] for p in again]


def test_a_pause_after_silence_frames_is_a_gap_not_a_loss() -> None:
    # The sender's timestamps count its 3-frame pause, which is shorter than the buffer, so the
    # next talkspurt is already buffered when the last silence frame plays.
    start = _stream(5) + [
        (s, t, OPUS_SILENCE_FRAME) for s, t, _ in _stream(5, seq=1005, ts=50_000 + 5 * FRAME)
    ]
    resumed = _stream(10, seq=1010, ts=50_000 + 13 * FRAME, first=100)
    run = Run()
    run.feed(start)
    run.ticks(3)
    out = run.feed(resumed) + run.ticks(4)
    assert _kinds(out[:5]) == ["packet", "plc", "plc", "plc", "packet"]
    assert [s.timestamp for s in out[1:4] if s is not None] == [
        50_000 + i * FRAME for i in (10, 11, 12)
    ]
    s = run.buffer.stats
    assert s["gap"] == 3 and s["lost"] == s["fec"] == s["underrun"] == 0
    assert _played(out)[-10:] == [p[2] for p in resumed]


# --- timeline jumps (Songbird #261) ------------------------------------------------------------


def _jump_run(
    before: list[Packet], after: list[Packet], depth: int = 5
) -> tuple[Run, list[Slot | None]]:
    run = Run(PlayoutBuffer(depth))
    run.feed(before)
    assert run.buffer.is_playing
    out = run.feed(after) + run.ticks(depth + 2)
    return run, out


def _resumed_within(out: list[Slot | None], after: list[Packet], pops: int) -> None:
    first = after[0][2]
    played_at = next(i for i, s in enumerate(out) if s is not None and s.opus == first)
    assert played_at < pops, f"the first packet after the jump came out on pop {played_at + 1}"
    assert _played(out[played_at:]) == [p[2] for p in after]


def _seamless(run: Run, sent: Sequence[Packet]) -> None:
    """Every packet sent came out once, in order, with its own timestamp, and nothing else.

    Nothing else until the last one, that is: the stream's end is concealed as usual after it.
    """
    at = [i for i, s in enumerate(run.out) if s is not None and s.kind is SlotKind.PACKET]
    # No pop came out empty or concealed in between: the jump is not even a pause.
    assert at == list(range(at[0], at[0] + len(sent)))
    slots = [run.out[i] for i in at]
    assert [(s.kind, s.sequence, s.timestamp, s.opus) for s in slots if s is not None] == [
        (SlotKind.PACKET, seq, ts, opus) for seq, ts, opus in sent
    ]
    s = run.buffer.stats
    assert s["played"] == len(sent) and s["flushed"] == s["overflow"] == s["skipped"] == 0


@pytest.mark.parametrize(
    ("start", "jump"),
    [
        (50_000, -403_200),  # issue #261: 8.4 s back
        (50_000 + 100 * FRAME, -65 * FRAME),  # just beyond the window, back
        (50_000, -FRAME),  # one frame back
        (50_000, -3 * FRAME),
        (50_000, 65 * FRAME),  # just beyond the window, forward
        (50_000, 403_200),
        (50_000, 1 << 31),  # half the 32-bit space: read as behind
        (50_000, (1 << 31) - FRAME),  # as far ahead as can be
        (TS_MOD - 25 * FRAME, 100 * FRAME),  # forward across the wrap
        (10 * FRAME, -1000 * FRAME),  # back across the wrap
        (TS_MOD - 10 * FRAME, -403_200),  # the stream wraps, then the jump unwraps it
    ],
)
def test_a_timestamp_jump_loses_nothing_and_adds_no_pause(start: int, jump: int) -> None:
    before = _stream(20, seq=65_520, ts=start)
    last_seq, last_ts, _ = before[-1]
    after = _stream(30, seq=last_seq + 1, ts=(last_ts + FRAME + jump) % TS_MOD, first=100)
    run, out = _jump_run(before, after)
    # The 4 packets buffered before the jump are played while the new timeline fills, so the
    # first packet after it comes out when it would have had the buffer been empty.
    _resumed_within(out, after, 5)
    assert _played(out[:4]) == [p[2] for p in before[-4:]]
    assert run.buffer.stats["resync"] == 1
    _seamless(run, before + after)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(0, SEQ_MOD - 1),
    st.integers(0, TS_MOD - 1),
    # Whole frames, give or take samples: a timestamp a little off the grid lands in its slot.
    st.builds(
        lambda frames, off: frames * FRAME + off,
        st.integers(-(1 << 31) // FRAME, ((1 << 31) - 1) // FRAME),
        st.integers(-400, 400),
    ),
    # The sequence numbers carry on, or leap ahead (a counter restarted); a restart that lands
    # behind the newest number is another story (below).
    st.one_of(st.just(1), st.integers(100, SEQ_MOD // 2 - 1)),
)
# Back one frame (two, three) while the number leaps: the packets land on slots that still hold
# the old timeline's, and were once dropped as duplicates in favour of those.
@example(depth=2, seq=0, ts=0, jump=-FRAME, seq_step=100)
@example(depth=5, seq=SEQ_MOD - 30, ts=TS_MOD - 10 * FRAME, jump=-3 * FRAME + 200, seq_step=1000)
@example(depth=8, seq=7, ts=123_456, jump=-FRAME, seq_step=SEQ_MOD // 2 - 1)
def test_audio_resumes_after_any_jump(
    depth: int, seq: int, ts: int, jump: int, seq_step: int
) -> None:
    before = _stream(3 * depth + 5, seq, ts)
    last_seq, last_ts, _ = before[-1]
    after = _stream(
        3 * depth + 20, seq=last_seq + seq_step, ts=(last_ts + FRAME + jump) % TS_MOD, first=1000
    )
    run, out = _jump_run(before, after, depth)
    s = run.buffer.stats
    if not 0 <= round(jump / FRAME) < 64:
        # Back, however little and however far the number leapt, or beyond the window.
        assert s["resync"] == 1
    if s["resync"]:
        # What was buffered plays while the new timeline fills, then the new timeline: every
        # packet, in order, without a pause.
        _seamless(run, before + after)
    else:
        # Only a forward jump within the window is not one: it reads as a pause in the sender's
        # timeline, concealed slot by slot, and the overflow limit cuts the latency that added,
        # at the cost of a few packets (counted) if the pause was longer than the buffer's margin
        # (as long as the delay itself).
        limit = run.buffer.overflow_limit
        assert limit == max(2 * depth, depth + OVERFLOW_MARGIN)
        out += run.ticks(limit)  # the latency the pause added, up to the limit, plays out too
        sent = [p[2] for p in after]
        played = [opus for opus in _played(out) if opus in sent]
        assert played == sent[len(sent) - len(played) :]
        assert len(sent) - len(played) <= s["overflow"]
        played_at = next(i for i, x in enumerate(out) if x is not None and x.opus == played[0])
        assert played_at < limit + 1


@pytest.mark.parametrize("seq_step", [100, 30_000])
@pytest.mark.parametrize(("lost", "back"), [((), 1), ((), 3), ((18,), 2), ((17, 18), 3)])
def test_a_jump_back_into_the_buffered_slots_resyncs_however_far_the_number_leaps(
    seq_step: int, lost: tuple[int, ...], back: int
) -> None:
    # The number too far ahead to say how far the timestamp should have moved, the timestamp
    # back onto a slot buffered (or a hole among them): the timeline went back all the same.
    # Taken for a duplicate of the packet held there, or (in a hole) for the newest packet,
    # it or the next one was dropped and the old timeline's packet played in its place.
    before = _stream(20)
    after = _stream(30, seq=1019 + seq_step, ts=50_000 + (20 - back) * FRAME, first=100)
    run = Run()
    run.feed(before, lost=lost)  # 0-15 played, 16-19 buffered but for those lost
    out = run.feed(after) + run.ticks(6)
    s = run.buffer.stats
    assert s["resync"] == 1 and s["flushed"] == 0
    assert s["duplicate"] == s["late"] == s["stale"] == s["overflow"] == 0
    _resumed_within(out, after, 5)
    # The old timeline's packets played first, its holes skipped (not concealed) and counted.
    kept = [p for i, p in enumerate(before) if i not in lost]
    assert _played(run.out) == [p[2] for p in kept + after]
    assert s["played"] == len(kept) + len(after) and s["skipped"] == len(lost)
    assert s["lost"] == s["fec"] == 0  # (the 2 PLC slots are the end's underrun)


@pytest.mark.parametrize("seq_step", [-10, -100, -30_000])
def test_a_sequence_restart_behind_the_newest_number_resumes_after_the_talkspurt_ends(
    seq_step: int,
) -> None:
    # Sequence numbers behind the newest one and timestamps behind the slot due: for all the
    # buffer can tell, late packets, until the old talkspurt has ended. Then it starts afresh.
    before = _stream(20)
    after = _stream(40, seq=(1020 + seq_step) % SEQ_MOD, ts=50_000 - 5000 * FRAME, first=100)
    run = Run()
    run.feed(before)
    out = run.feed(after) + run.ticks(10)
    played = _played(out)
    resumed = [p[2] for p in after if p[2] in played]
    assert resumed  # it does resume...
    assert resumed == [p[2] for p in after][len(after) - len(resumed) :]  # ...losing a prefix:
    # 4 buffered, 5 concealed, then idle; at worst until the sequence numbers pass the newest.
    assert len(after) - len(resumed) <= 4 + 5 + 1 + (-seq_step if -seq_step <= 64 else 0)
    assert run.buffer.stats["ended"] == 2  # the talkspurt before, then this one
    assert run.buffer.stats["resync"] == 0


def test_a_straggler_from_before_a_jump_back_does_not_drag_the_buffer_back() -> None:
    before = _stream(20)
    straggler = before[-1]
    after = _stream(20, seq=1020, ts=50_000 - 1000 * FRAME, first=100)
    run = Run()
    run.feed(before[:-1])
    run.tick(after[:1])  # the jump arrives first...
    run.tick([straggler, after[1]])  # ...the last packet of the old timeline after it
    out = run.feed(after[2:]) + run.ticks(6)
    s = run.buffer.stats
    assert s["resync"] == 1 and s["stale"] == 1
    assert _played(out)[-20:] == [p[2] for p in after]
    # The 4 old packets buffered at the jump were played all the same; only the straggler,
    # which joins no timeline, is lost.
    assert _played(run.out) == [p[2] for p in before[:-1] + after]
    assert s["flushed"] == s["overflow"] == 0


def test_a_jump_while_filling_plays_the_packets_of_the_fill_first() -> None:
    old = _stream(3)
    new = _stream(10, seq=1003, ts=50_000 - 1000 * FRAME, first=100)
    run = Run()
    run.feed(old)  # filling, nothing played yet
    out = run.feed(new) + run.ticks(5)
    assert run.buffer.stats["resync"] == 1
    # The old packets come out at once (they have waited their turn), then the new timeline
    # after its own fill, as early as without them.
    assert _kinds(out[:7]) == ["packet"] * 3 + ["-"] + ["packet"] * 3
    assert _played(run.out) == [p[2] for p in old + new]
    assert out[4] is not None and out[4].opus == new[0][2]
    assert run.buffer.stats["flushed"] == 0


def test_a_jump_during_a_drain_queues_that_timeline_too() -> None:
    a = _stream(20)
    b = _stream(2, seq=1020, ts=50_000 - 1000 * FRAME, first=100)  # back 20 s...
    c = _stream(20, seq=1022, ts=50_000 + 100_000 * FRAME, first=200)  # ...then 33 min ahead
    run = Run()
    run.feed(a)  # 16-19 buffered
    run.feed(b)  # a resync: 16 and 17 played, 18 and 19 left to drain; b filling
    assert run.buffer.draining == 2 and run.buffer.is_playing
    run.feed(c)  # another: b joins the drain behind a
    run.ticks(6)
    assert run.buffer.stats["resync"] == 2
    _seamless(run, a + b + c)


def test_the_drain_counts_in_the_memory_bound() -> None:
    a = _stream(14)
    b = _stream(5, seq=1014, ts=50_000 - 1000 * FRAME, first=100)
    run = Run(PlayoutBuffer(3, max_slots=9))
    run.feed(a[:10])  # 8 and 9 buffered
    run.push(a[10:])  # a burst: 6 held, the overflow limit
    assert run.buffer.buffered == run.buffer.overflow_limit == 6
    run.push(b)  # 6 old and 5 new would be 11: the 2 oldest old ones go (Run checks the bound)
    s = run.buffer.stats
    assert s["resync"] == 1 and s["overflow"] == s["skipped"] == 2 and s["flushed"] == 0
    assert run.buffer.draining == 4 and run.buffer.buffered == 9
    run.ticks(4 + 5 + 3)
    assert _played(run.out) == [p[2] for p in a[:8] + a[10:] + b]
    assert run.buffer.buffered == 0


def test_a_drain_longer_than_the_fill_is_bounded_by_the_overflow_limit() -> None:
    # 4 old packets (a burst held) and a fill of 2: the new timeline waits 2 pops more, and
    # starts with 5 held, one more than the limit: the latency the drain added is cut.
    a = _stream(13)
    b = _stream(20, seq=1013, ts=50_000 - 1000 * FRAME, first=100)
    run = Run(PlayoutBuffer(2))
    run.feed(a[:10])
    run.push(a[10:])
    out = run.feed(b) + run.ticks(5)
    s = run.buffer.stats
    assert s["resync"] == 1 and s["overflow"] == s["skipped"] == 1 and s["flushed"] == 0
    assert _kinds(out[:20]) == ["packet"] * 20
    assert _played(run.out) == [p[2] for p in a + b[1:]]


def test_the_seam_after_a_drain_keeps_its_promise_when_a_reordered_packet_opens_a_hole() -> None:
    a = _stream(20)
    b = _stream(20, seq=1020, ts=50_000 - 1000 * FRAME, first=100)
    run = Run()
    run.feed(a, lost={18, 19})  # 16 and 17 buffered
    run.push(b[2:7])  # a resync, and the new timeline full at once: b0 and b1 come later
    out = [run.tick(), run.tick()]  # the drain; then the fill is full, so the seam is no pause
    assert run.buffer.is_playing and not run.buffer.draining
    out.append(run.tick(b[:1]))  # b0 moves the start back: b1 is now a hole in the fill
    assert run.buffer.is_playing
    out += run.feed(b[7:]) + run.ticks(10)
    assert _kinds(out[:5]) == ["packet", "packet", "packet", "fec", "packet"]
    assert _played(out) == [p[2] for p in a[16:18] + b[:1] + b[2:]]
    assert run.buffer.stats["late"] == 0  # b0 was in time (b1 never came)


def test_reset_during_a_drain_flushes_it_too() -> None:
    run = Run()
    run.feed(_stream(20))
    run.push(_stream(1, seq=1020, ts=50_000 - 1000 * FRAME, first=100))
    assert run.buffer.draining == 4 and run.buffer.buffered == 5
    assert run.buffer.reset() == 5
    s = run.buffer.stats
    assert s["flushed"] == 5 and run.buffer.buffered == run.buffer.draining == 0
    assert run.buffer.is_idle and not run.buffer.is_playing and run.buffer.pop() is None
    _check(run.buffer, run.pushes)


def test_a_very_late_packet_from_before_a_pause_does_not_resync() -> None:
    # Older by sequence number and far older by timestamp: late, not a jump.
    run = Run()
    run.feed(_stream(20, ts=50_000 + 500 * FRAME))
    assert not run.buffer.push(990, 50_000 - 10 * FRAME, b"old")
    assert run.buffer.stats["late"] == 1 and run.buffer.stats["resync"] == 0


# --- spikes, overflow, decay -------------------------------------------------------------------


def test_a_delay_spike_grows_the_target_depth_which_then_decays() -> None:
    packets = _stream(400)
    run = Run()
    run.feed(packets[:20])
    run.ticks(6)  # 4 buffered packets, then 2 underrun slots: the path stalled
    assert run.buffer.stats["underrun"] == 2
    run.tick(packets[20:27])  # the burst: the packets of the 2 concealed slots are late
    s = run.buffer.stats
    assert s["spike"] == 1 and s["late"] == 2
    assert run.buffer.target_depth == 5 + 2
    run.feed(packets[27:])
    assert s["spike"] == 1 and s["underrun"] == 2
    # 400 - 26 pops since the underrun: one decay step (250 pops), not yet a second.
    assert run.buffer.target_depth == 6
    assert _kinds(run.ticks(4 + 5)) == ["packet"] * 4 + ["plc"] * 5  # the end: an underrun...
    run.ticks(DECAY_POPS - 1)
    assert run.buffer.is_idle and run.buffer.target_depth == 6
    run.ticks(1)  # ...and 5 s since it
    assert run.buffer.target_depth == 5


def test_the_target_depth_is_capped_and_takes_effect_at_the_next_fill() -> None:
    packets = _stream(100)
    run = Run(PlayoutBuffer(2, max_depth=4))
    run.feed(packets[:10])
    run.ticks(1 + 5)  # 1 buffered, then 5 concealed
    run.tick(packets[10:20])
    assert run.buffer.target_depth == 4
    run.ticks(30)
    assert run.buffer.is_idle
    out = run.feed(_stream(10, seq=2000, ts=9_000_000, first=100))
    assert out[:3] == [None] * 3 and out[3] is not None


@pytest.mark.parametrize(("depth", "limit"), [(1, 3), (2, 4), (3, 6), (5, 10), (9, 18)])
def test_the_overflow_limit_is_twice_the_depth_and_at_least_two_frames_more(
    depth: int, limit: int
) -> None:
    b = PlayoutBuffer(depth, max_slots=64)
    assert b.overflow_limit == limit
    b._set_target(depth + 1)  # as a delay spike does: the limit follows at once
    assert b.overflow_limit == max(2 * (depth + 1), depth + 1 + OVERFLOW_MARGIN)


@pytest.mark.parametrize("more", [0, 1])
@pytest.mark.parametrize("depth", [1, 2, 5, 8])
def test_a_burst_as_long_as_the_delay_is_kept_whole(depth: int, more: int) -> None:
    # A sender whose clock stalled sends what it owes at once (discord.py does): not loss, so
    # the buffer holds a burst as long as its delay (at depth 5, 5 frames ahead, where the old
    # limit of depth + 2 dropped 3); one frame more and the oldest is dropped.
    packets = _stream(80)
    run = Run(PlayoutBuffer(depth))
    run.feed(packets[:20])  # depth - 1 buffered after each pop
    limit = run.buffer.overflow_limit
    early = limit - depth + more  # beyond the one due this tick
    run.tick(packets[20 : 21 + early])
    assert run.buffer.stats["overflow"] == more
    # The rest arrives on time: the latency the burst added stays, bounded by the limit.
    run.feed(packets[21 + early :])
    assert run.buffer.buffered == limit - 1
    out = run.ticks(limit + 5)
    dropped = {packets[21 - depth][2]} if more else set()
    assert _played(run.out) == [p[2] for p in packets if p[2] not in dropped]
    assert _kinds(out[: limit - 1]) == ["packet"] * (limit - 1)
    s = run.buffer.stats
    assert s["overflow"] == s["skipped"] == more and s["lost"] == s["fec"] == 0


def test_a_burst_is_cut_to_twice_the_target() -> None:
    packets = _stream(60)
    run = Run()
    run.feed(packets[:10])
    for packet in packets[10:30]:  # 20 frames at once: a queue somewhere let go
        run.push([packet])
        assert run.buffer.buffered <= 2 * run.buffer.target_depth == 10
    s = run.buffer.stats
    assert s["overflow"] == 4 + 20 - 10 and s["skipped"] == s["overflow"]
    run.feed(packets[30:])
    run.ticks(10)
    slots = [x for x in run.out if x is not None and x.kind is SlotKind.PACKET]
    gaps = [(b.timestamp - a.timestamp) % TS_MOD for a, b in itertools.pairwise(slots)]
    assert gaps.count(FRAME) == len(gaps) - 1  # one step over the dropped frames
    assert sum(gaps) == (len(slots) - 1 + s["skipped"]) * FRAME
    assert len(slots) == 60 - s["overflow"]


def test_memory_is_bounded_by_max_slots() -> None:
    run = Run(PlayoutBuffer(4, max_slots=10))
    # Every other slot, far ahead of each other: sparse, so the count and the span differ.
    for i in range(200):
        run.push([((7 + i) % SEQ_MOD, (2 * i * FRAME) % TS_MOD, _payload(i))])
        assert run.buffer.buffered <= 10


def test_reset_forgets_the_timeline_and_counts_the_drops() -> None:
    run = Run()
    run.feed(_stream(8))
    assert run.buffer.reset() == 4
    assert run.buffer.stats["flushed"] == 4 and run.buffer.buffered == 0
    assert run.buffer.is_idle and run.buffer.pop() is None
    # Any packet starts afresh, even one that would have been late before.
    assert run.buffer.push(1000, 50_000, b"x")


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 0},
        {"depth": -1},
        {"depth": 2.0},
        {"depth": True},
        {"depth": "5"},
        {"depth": 5, "max_depth": 4},
        {"depth": 5, "max_slots": 4},
        {"depth": 5, "max_depth": 20, "max_slots": 10},
        {"max_slots": 0},
        {"max_slots": 100_000},
        {"max_concealed": -1},
        {"max_concealed": None},
    ],
)
def test_bad_arguments_are_usage_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        PlayoutBuffer(**kwargs)  # type: ignore[arg-type]


def test_the_defaults() -> None:
    b = PlayoutBuffer()
    assert (b.depth, b.target_depth, b._max_depth, b._max_slots, b._max_concealed) == (
        5,
        5,
        15,
        64,
        5,
    )
    assert PlayoutBuffer(30)._max_depth == 64  # three times the depth, within the window
    assert "idle" in repr(b)


@pytest.mark.parametrize(
    ("seq", "ts", "opus"),
    [
        (-1, 0, b""),
        (SEQ_MOD, 0, b""),
        (0, -1, b""),
        (0, TS_MOD, b""),
        (1.0, 0, b""),
        (True, 0, b""),
        (0, None, b""),
        (0, 0, bytearray(b"x")),
    ],
)
def test_bad_packets_are_usage_errors(seq: object, ts: object, opus: object) -> None:
    b = PlayoutBuffer()
    with pytest.raises(UsageError):
        b.push(seq, ts, opus)  # type: ignore[arg-type]
    assert b.stats["accepted"] == 0


# --- the whole machine under a hostile network -------------------------------------------------


@st.composite
def _schedules(draw: st.DrawFn) -> tuple[PlayoutBuffer, dict[int, list[Packet]], int]:
    depth = draw(st.integers(1, 6))
    max_slots = draw(st.integers(3 * depth, 80))
    buffer = PlayoutBuffer(depth, max_slots=max_slots, max_concealed=draw(st.integers(0, 6)))
    rng = random.Random(draw(st.integers(0, 2**32)))
    seq = draw(st.integers(0, SEQ_MOD - 1))
    ts = draw(st.integers(0, TS_MOD - 1))
    loss, dup, late = rng.random() * 0.3, rng.random() * 0.2, rng.randrange(0, 3 * depth + 3)
    arrivals: dict[int, list[Packet]] = {}
    tick = 0
    index = 0
    for _ in range(draw(st.integers(1, 6))):  # talkspurts or timelines
        for i in range(rng.randrange(1, 120)):
            silent = rng.random() < 0.05
            packet = (seq, ts, OPUS_SILENCE_FRAME if silent else _payload(index))
            index += 1
            if rng.random() >= loss:
                at = tick + i + (rng.randrange(late + 1) if rng.random() < 0.5 else 0)
                arrivals.setdefault(at, []).append(packet)
                if rng.random() < dup:
                    arrivals.setdefault(at + rng.randrange(late + 1), []).append(packet)
            seq = (seq + 1) % SEQ_MOD
            ts = (ts + FRAME) % TS_MOD
        tick += rng.randrange(0, 150)
        # What happens between them: a pause counted in timestamps, one that is not, or a jump.
        ts = (ts + rng.choice([0, rng.randrange(1 << 20), rng.randrange(TS_MOD)])) % TS_MOD
        if rng.random() < 0.2:
            seq = rng.randrange(SEQ_MOD)
    for batch in arrivals.values():
        rng.shuffle(batch)
    return buffer, arrivals, max(arrivals, default=0)


@settings(max_examples=300, deadline=None)
@given(_schedules())
def test_any_schedule_keeps_order_bounds_and_conservation(
    case: tuple[PlayoutBuffer, dict[int, list[Packet]], int],
) -> None:
    buffer, arrivals, last_tick = case
    run = Run(buffer)
    accepted: Counter[bytes] = Counter()
    played: Counter[bytes] = Counter()
    sent_at = {p[2]: p[1] for batch in arrivals.values() for p in batch}
    previous: Slot | None = None
    skipped = resyncs = 0
    # A timeline's pops follow each other one frame apart, but for the seams: a resync, and the
    # end of a drain (the old timeline's packets played during the fill), which is a seam of its
    # own, and more when a drain holds several timelines (a jump during a drain): no checks then.
    was_draining = several = False
    # The old timelines' packets, then the newest timeline's whole window and its concealment.
    drain = 2 * buffer._max_slots + buffer._max_concealed + 3 * buffer._max_depth + 5
    for t in range(last_tick + 1 + drain):
        batch = arrivals.get(t, [])
        draining, resyncs_before = buffer.draining, buffer.stats["resync"]
        run.push(batch)
        jumps = buffer.stats["resync"] - resyncs_before
        several = several or jumps > 1 or (jumps > 0 and draining > 0)
        for packet, kept in zip(batch, run.kept[len(run.kept) - len(batch) :], strict=True):
            if kept and packet[2] != OPUS_SILENCE_FRAME:
                accepted[packet[2]] += 1
        draining = buffer.draining
        assert buffer.is_playing or not draining
        # Playing while filling (a drain, or its seam) is a promise that this pop hands out.
        promised = buffer.is_playing and buffer._state != _PLAYING
        slot = buffer.pop()
        _check(buffer, run.pushes)
        s = buffer.stats
        if draining:
            assert slot is not None and slot.kind is SlotKind.PACKET
        if promised:
            assert slot is not None
        seam = (was_draining and not draining) or several
        was_draining = draining > 0
        if not draining:
            several = False
        if slot is not None:
            if slot.kind is SlotKind.PACKET:
                if slot.opus != OPUS_SILENCE_FRAME:
                    played[slot.opus] += 1
                    # Its own timestamp, or the slot it was rounded to if it was off the grid.
                    off = (slot.timestamp - sent_at[slot.opus] + FRAME) % TS_MOD - FRAME
                    assert abs(off) <= FRAME // 2
                assert slot.sequence is not None
            else:
                assert slot.sequence is None
                assert (slot.opus == b"") == (slot.kind is SlotKind.PLC)
            if previous is not None and s["resync"] == resyncs and not seam:
                # Within a talkspurt: one frame further on, plus any frames cut by overflow.
                step = (slot.timestamp - previous.timestamp) % TS_MOD
                assert step == FRAME * (1 + s["skipped"] - skipped)
                if previous.kind is SlotKind.FEC and s["skipped"] == skipped:
                    # The frame that lent its FEC is played next.
                    assert (slot.kind, slot.opus) == (SlotKind.PACKET, previous.opus)
        previous = slot
        skipped, resyncs = s["skipped"], s["resync"]
    # Every packet kept was played at most once; once drained, exactly once or counted dropped.
    assert all(played[p] <= accepted[p] for p in played)
    assert buffer.buffered == 0 and buffer.is_idle
    s = buffer.stats
    assert s["accepted"] == s["played"] + s["overflow"] + s["flushed"]
