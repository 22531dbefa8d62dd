"""Mixing frames through big-integer lanes gives exactly the clipped per-sample sum."""

from __future__ import annotations

import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice import UsageError
from discore_voice._core.receive.mix import mix_frames


def reference(frames: list[bytes]) -> bytes:
    samples = [array.array("h", frame) for frame in frames]
    mixed = [max(-32768, min(32767, sum(column))) for column in zip(*samples, strict=True)]
    return array.array("h", mixed).tobytes()


def frames_of(
    count: int, size: int, values: st.SearchStrategy[int]
) -> st.SearchStrategy[list[bytes]]:
    frame = st.lists(values, min_size=size, max_size=size).map(
        lambda samples: array.array("h", samples).tobytes()
    )
    return st.lists(frame, min_size=count, max_size=count)


@given(
    st.integers(1, 12).flatmap(
        lambda n: frames_of(
            n, 64, st.sampled_from([-32768, -1, 0, 1, 32767]) | st.integers(-32768, 32767)
        )
    )
)
def test_the_mix_is_the_clipped_sum(frames: list[bytes]) -> None:
    assert mix_frames(frames) == reference(frames)


@given(st.integers(2, 40).flatmap(lambda n: frames_of(n, 32, st.integers(-700, 700))))
def test_quiet_speakers_never_clip(frames: list[bytes]) -> None:
    # The fast path: every lane fits, so no per-sample loop runs; still exact.
    assert mix_frames(frames) == reference(frames)


def test_a_whole_20_ms_frame_at_the_extremes() -> None:
    loud = array.array("h", [32767] * 1920).tobytes()
    low = array.array("h", [-32768] * 1920).tobytes()
    assert mix_frames([loud, loud]) == loud
    assert mix_frames([low, low, low]) == low
    assert mix_frames([loud, low]) == array.array("h", [-1] * 1920).tobytes()
    assert mix_frames([loud]) == loud


@pytest.mark.parametrize(
    "frames",
    [[], [b"\x00\x00", b"\x00"], [b"\x00", b"\x00"], [b"\x00\x00", b"\x00\x00\x00\x00"]],
)
def test_bad_frames_are_a_usage_error(frames: list[bytes]) -> None:
    with pytest.raises(UsageError):
        mix_frames(frames)
