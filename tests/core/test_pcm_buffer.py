"""The PCM send buffer (Discore's CanSendVoiceData/SendVoiceData/BytesToSend) and the volume map."""

from __future__ import annotations

import array
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice._audio import opus
from discore_voice._core.pcm_buffer import (
    BYTES_PER_SAMPLE,
    DEFAULT_CAPACITY,
    PCM_BLOCK_SIZE,
    PcmBuffer,
    VoiceBufferFull,
    apply_volume,
    check_gain,
)
from discore_voice._errors import UsageError

FRAME = PCM_BLOCK_SIZE


def _pattern(size: int, seed: int = 0) -> bytes:
    return bytes((seed + i * 7) % 251 for i in range(size))


def _samples(pcm: bytes) -> list[int]:
    values = array.array("h", pcm)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def _pcm(values: list[int]) -> bytes:
    data = array.array("h", values)
    if sys.byteorder == "big":
        data.byteswap()
    return data.tobytes()


def test_block_size_matches_the_codec() -> None:
    assert PCM_BLOCK_SIZE == opus.PCM_BLOCK_SIZE == 3840


def test_default_capacity_is_one_second() -> None:
    assert DEFAULT_CAPACITY == 50 * FRAME == 192_000
    assert PcmBuffer().capacity == DEFAULT_CAPACITY


def test_whole_frames_come_out_in_order() -> None:
    buffer = PcmBuffer()
    data = _pattern(3 * FRAME)
    buffer.write(data)
    assert buffer.bytes_queued == 3 * FRAME
    assert buffer.frames_ready == 3
    frames = [buffer.read_frame() for _ in range(3)]
    assert b"".join(f for f in frames if f is not None) == data
    assert buffer.read_frame() is None
    assert buffer.bytes_queued == 0


def test_partial_frame_waits_for_more_data() -> None:
    buffer = PcmBuffer()
    buffer.write(_pattern(FRAME - 4))
    assert buffer.read_frame() is None
    assert buffer.frames_ready == 0
    assert buffer.bytes_queued == FRAME - 4
    buffer.write(_pattern(8, seed=3))
    frame = buffer.read_frame()
    assert frame == _pattern(FRAME - 4) + _pattern(4, seed=3)
    assert buffer.bytes_queued == 4


def test_flush_pads_the_tail_with_silence() -> None:
    buffer = PcmBuffer()
    buffer.write(_pattern(FRAME + 400))
    assert buffer.read_frame() == _pattern(FRAME + 400)[:FRAME]
    assert buffer.flush_padded() == FRAME - 400
    assert buffer.read_frame() == _pattern(FRAME + 400)[FRAME:] + bytes(FRAME - 400)
    assert buffer.read_frame() is None
    assert buffer.flush_padded() == 0


def test_write_refuses_when_full_and_queues_nothing() -> None:
    buffer = PcmBuffer(capacity=2 * FRAME)
    buffer.write(_pattern(FRAME + 100 * 4))
    assert buffer.can_accept(FRAME - 400)
    assert not buffer.can_accept(FRAME - 396)
    with pytest.raises(VoiceBufferFull, match="room for 3440 of the 3844 bytes"):
        buffer.write(_pattern(FRAME + 4))
    assert buffer.bytes_queued == FRAME + 400
    assert isinstance(VoiceBufferFull("x"), UsageError)
    buffer.read_frame()
    buffer.write(_pattern(FRAME + 4))
    assert buffer.bytes_queued == 404 + FRAME


def test_block_larger_than_capacity_is_a_usage_error_not_full() -> None:
    buffer = PcmBuffer(capacity=FRAME)
    with pytest.raises(UsageError, match="can never fit") as info:
        buffer.write(bytes(FRAME + 4))
    assert not isinstance(info.value, VoiceBufferFull)
    assert "buffer_size=" in str(info.value)  # the parameter to change, by its name


def test_write_partial_takes_what_fits() -> None:
    buffer = PcmBuffer(capacity=FRAME)
    data = _pattern(FRAME + 40)
    taken = buffer.write_partial(data)
    assert taken == FRAME
    assert buffer.write_partial(data[taken:]) == 0
    assert buffer.read_frame() == data[:FRAME]
    assert buffer.write_partial(memoryview(data)[taken:]) == 40
    assert buffer.bytes_queued == 40


@pytest.mark.parametrize("size", [1, 2, 3, 5, FRAME - 1, FRAME + 2])
def test_odd_length_is_rejected_naming_the_problem(size: int) -> None:
    buffer = PcmBuffer()
    for call in (buffer.write, buffer.write_partial):
        with pytest.raises(UsageError, match=rf"{size} bytes, not a whole number of 4-byte"):
            call(bytes(size))
    assert buffer.bytes_queued == 0


def test_any_contiguous_buffer_is_accepted() -> None:
    buffer = PcmBuffer()
    samples = array.array("h", range(FRAME // 2))
    buffer.write(memoryview(samples))
    buffer.write(bytearray(FRAME))
    assert buffer.read_frame() == samples.tobytes()
    assert buffer.read_frame() == bytes(FRAME)


@pytest.mark.parametrize("data", ["text", 42, None, [0, 0, 0, 0]])
def test_non_bytes_are_a_usage_error(data: object) -> None:
    buffer = PcmBuffer()
    for call in (buffer.write, buffer.write_partial):
        with pytest.raises(UsageError, match="bytes-like"):
            call(data)  # type: ignore[arg-type]


def test_clear_drops_everything() -> None:
    buffer = PcmBuffer()
    buffer.write(_pattern(2 * FRAME + 8))
    buffer.read_frame()
    assert buffer.clear() == FRAME + 8
    assert buffer.bytes_queued == 0
    assert buffer.read_frame() is None
    buffer.write(_pattern(FRAME, seed=9))
    assert buffer.read_frame() == _pattern(FRAME, seed=9)


@pytest.mark.parametrize("capacity", [0, FRAME - 4, FRAME + 2, -FRAME, 3.5, True])
def test_bad_capacity(capacity: object) -> None:
    with pytest.raises(UsageError, match="capacity"):
        PcmBuffer(capacity=capacity)  # type: ignore[arg-type]


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(0, 3 * FRAME // 4)),
            st.tuples(st.just("read"), st.just(0)),
            st.tuples(st.just("flush"), st.just(0)),
        ),
        max_size=60,
    )
)
def test_buffer_is_a_fifo_of_whole_frames(ops: list[tuple[str, int]]) -> None:
    """Against a model: bytes come out in order, only in whole frames, never beyond capacity."""
    buffer = PcmBuffer(capacity=3 * FRAME)
    model = bytearray()
    counter = 0
    for op, samples in ops:
        if op == "write":
            data = bytes((counter + i) % 256 for i in range(samples * BYTES_PER_SAMPLE))
            counter += 1
            if buffer.can_accept(len(data)):
                buffer.write(data)
                model += data
            else:
                with pytest.raises(VoiceBufferFull):
                    buffer.write(data)
        elif op == "read":
            frame = buffer.read_frame()
            if len(model) >= FRAME:
                assert frame == bytes(model[:FRAME])
                del model[:FRAME]
            else:
                assert frame is None
        else:
            added = buffer.flush_padded()
            assert added == (-len(model)) % FRAME
            model += bytes(added)
        assert buffer.bytes_queued == len(model)
        assert buffer.bytes_queued <= buffer.capacity + FRAME
        assert buffer.frames_ready == len(model) // FRAME


def test_volume_scales_rounds_and_clips() -> None:
    pcm = _pcm([1000, -1000, 3, -3, 30000, -30000, 32767, -32768])
    assert _samples(apply_volume(pcm, 0.5)) == [500, -500, 2, -2, 15000, -15000, 16384, -16384]
    assert _samples(apply_volume(pcm, 2.0)) == [
        2000,
        -2000,
        6,
        -6,
        32767,
        -32768,
        32767,
        -32768,
    ]


def test_volume_identity_and_mute() -> None:
    pcm = _pattern(FRAME)
    assert apply_volume(pcm, 1.0) is pcm
    assert apply_volume(pcm, 0) == bytes(FRAME)


@given(st.lists(st.integers(-32768, 32767), max_size=32), st.floats(0.0, 8.0))
def test_volume_matches_the_definition(left: list[int], gain: float) -> None:
    values = [v for sample in left for v in (sample, -sample // 2)]
    expected = [max(-32768, min(32767, round(v * gain))) for v in values]
    assert _samples(apply_volume(_pcm(values), gain)) == expected


@pytest.mark.parametrize("gain", [-0.1, float("nan"), float("inf"), "1", None, True, 1e9])
def test_bad_gain(gain: object) -> None:
    with pytest.raises(UsageError, match="volume"):
        check_gain(gain)
    with pytest.raises(UsageError, match="volume"):
        apply_volume(bytes(4), gain)  # type: ignore[arg-type]


def test_volume_refuses_partial_samples() -> None:
    with pytest.raises(UsageError, match="6 bytes, not a whole number"):
        apply_volume(bytes(6), 0.5)
