"""The receive path's replay filter: new, duplicate or stale, per sender, across the wrap."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice._core.receive.replay import RESTART_AFTER, WINDOW, ReplayFilter, Verdict


def test_duplicates_and_reordering_within_the_window() -> None:
    f = ReplayFilter()
    assert f.check(1, 100) is Verdict.NEW
    assert f.check(1, 100) is Verdict.DUPLICATE
    assert f.check(1, 103) is Verdict.NEW
    assert f.check(1, 101) is Verdict.NEW  # late, not seen yet
    assert f.check(1, 101) is Verdict.DUPLICATE
    assert f.check(1, 103 - WINDOW) is Verdict.STALE
    assert f.check(2, 100) is Verdict.NEW  # another sender: its own window


def test_the_wrap_is_ahead() -> None:
    f = ReplayFilter()
    assert f.check(1, 65535) is Verdict.NEW
    assert f.check(1, 0) is Verdict.NEW
    assert f.check(1, 65535) is Verdict.DUPLICATE
    assert f.check(1, 1) is Verdict.NEW


def test_a_big_jump_forgets_the_window_and_the_sources_are_bounded() -> None:
    f = ReplayFilter(max_sources=2)
    f.check(1, 10)
    assert f.check(1, 10 + 5000) is Verdict.NEW
    assert f.check(1, 10 + 4999) is Verdict.NEW
    f.check(2, 1)
    f.check(3, 1)
    assert len(f) == 2
    assert f.check(1, 10 + 5000) is Verdict.NEW  # forgotten, so a new baseline
    f.forget(1)
    assert len(f) == 1


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 65535), st.integers(1, 400), st.integers(0, 2**32))
def test_each_packet_of_a_reordered_duplicated_stream_is_new_exactly_once(
    start: int, count: int, seed: int
) -> None:
    rng = random.Random(seed)
    sequences = [(start + i) % 65536 for i in range(count)]
    arrivals = sequences + rng.sample(sequences, k=min(count, 50))  # duplicates
    # Reordered, but never by more than the window.
    arrivals.sort(key=lambda s: sequences.index(s) + rng.randrange(60))
    f = ReplayFilter()
    new = [s for s in arrivals if f.check(7, s) is Verdict.NEW]
    assert sorted(new) == sorted(sequences)


def test_a_sender_whose_sequence_numbers_restarted_is_heard_again() -> None:
    replays = ReplayFilter()
    for sequence in range(30000, 30100):
        assert replays.check(5, sequence) is Verdict.NEW
    # The sender restarted from 0: far behind the window, so stale at first...
    verdicts = [replays.check(5, sequence) for sequence in range(RESTART_AFTER)]
    assert verdicts[:-1] == [Verdict.STALE] * (RESTART_AFTER - 1)
    # ...until that many in a row show it is a new stream, not stragglers.
    assert verdicts[-1] is Verdict.NEW
    assert replays.check(5, RESTART_AFTER) is Verdict.NEW
    assert replays.check(5, RESTART_AFTER) is Verdict.DUPLICATE
    # Stale packets with the live stream going on in between do not add up to a restart.
    newest = 40000
    for _ in range(3):
        for sequence in range(RESTART_AFTER - 1):
            assert replays.check(6, newest) is Verdict.NEW
            newest += 1
            assert replays.check(6, newest - 2000 - sequence) is Verdict.STALE
    assert replays.check(6, newest) is Verdict.NEW
