"""The Opus encoder and decoder against the real libopus.

numpy is not a dependency, so signal checks use ``array`` and ``math``: a second of audio is
48 000 samples, which pure Python handles in milliseconds.
"""

from __future__ import annotations

import array
import dataclasses
import gc
import itertools
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice._audio.opus import (
    CHANNELS,
    MAX_FRAME_SAMPLES,
    OPUS_SILENCE_FRAME,
    PCM_BLOCK_SIZE,
    SAMPLE_RATE,
    Application,
    OpusDecoder,
    OpusEncoder,
    OpusError,
)
from discore_voice._errors import DiscoreVoiceError, UsageError

TONE_HZ = 440.0


def _stereo(left: list[float], right: list[float]) -> bytes:
    samples = array.array("h")
    for a, b in zip(left, right, strict=True):
        samples.append(max(-32768, min(32767, round(a))))
        samples.append(max(-32768, min(32767, round(b))))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def _channels(pcm: bytes) -> tuple[list[int], list[int]]:
    samples = array.array("h", pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    return list(samples[0::2]), list(samples[1::2])


def _sine(seconds: float, hz: float = TONE_HZ, amplitude: float = 12_000.0) -> list[float]:
    step = 2 * math.pi * hz / SAMPLE_RATE
    return [amplitude * math.sin(step * i) for i in range(int(SAMPLE_RATE * seconds))]


def _noise(count: int, seed: int = 1, amplitude: float = 6_000.0) -> list[float]:
    # A fixed LCG: reproducible, and rich enough that a low bitrate cannot describe it exactly.
    out, x = [], seed
    for _ in range(count):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(amplitude * (x / 0x3FFFFFFF - 1.0))
    return out


def _frames(pcm: bytes) -> Iterator[bytes]:
    for start in range(0, len(pcm), PCM_BLOCK_SIZE):
        yield pcm[start : start + PCM_BLOCK_SIZE]


def _correlation(a: list[int] | list[float], b: list[int] | list[float]) -> float:
    n = len(a)
    mean_a, mean_b = sum(a) / n, sum(b) / n
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True))
    var_a = sum((x - mean_a) ** 2 for x in a)
    var_b = sum((y - mean_b) ** 2 for y in b)
    return cov / math.sqrt(var_a * var_b)


def _zero_crossing_hz(signal: list[int]) -> float:
    crossings = sum(1 for x, y in itertools.pairwise(signal) if (x < 0) != (y < 0))
    return crossings / 2 / (len(signal) / SAMPLE_RATE)


def _goertzel_power(signal: list[int], hz: float) -> float:
    coeff = 2 * math.cos(2 * math.pi * hz / SAMPLE_RATE)
    s1 = s2 = 0.0
    for x in signal:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def _roundtrip(encoder: OpusEncoder, pcm: bytes) -> bytes:
    """Encode then decode, one frame at a time, with a silent frame to flush the codec delay."""
    with OpusDecoder() as decoder:
        padded = pcm + bytes(PCM_BLOCK_SIZE)
        return b"".join(decoder.decode(encoder.encode(frame)) for frame in _frames(padded))


# ---------------------------------------------------------------------------------------------
# Signal fidelity


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"bitrate": 64_000},
        {"fec": True},
        {"application": Application.VOIP, "bitrate": 64_000, "fec": True},
        {"application": Application.RESTRICTED_LOWDELAY, "complexity": 0},
    ],
    ids=["default", "64k", "fec", "voip-fec", "lowdelay-c0"],
)
def test_sine_keeps_its_frequency_and_shape(options: dict[str, Any]) -> None:
    # 1 s of 440 Hz on the left, the same tone at a lower level and inverted on the right, so a
    # swapped or mixed-down channel would show up.
    left = _sine(1.0)
    right = [-0.5 * x for x in left]
    with OpusEncoder(**options) as encoder:
        delay = encoder.lookahead
        decoded = _roundtrip(encoder, _stereo(left, right))
    assert len(decoded) == len(left) * CHANNELS * 2 + PCM_BLOCK_SIZE
    out_left, out_right = _channels(decoded)
    # Skip the first 100 ms (the encoder's start-up) and align by the codec delay. The reported
    # lookahead is exact for CELT; SILK and hybrid frames (VOIP, FEC) come out up to ~6 samples
    # earlier, so search a window that is far narrower than half the tone's 109-sample period.
    start, end = SAMPLE_RATE // 10, SAMPLE_RATE * 9 // 10

    def score(lag: int) -> float:
        return _correlation(left[start:end], out_left[start + lag : end + lag])

    lag = max(range(delay - 24, delay + 25), key=score)
    aligned_left = out_left[start + lag : end + lag]
    aligned_right = out_right[start + lag : end + lag]
    assert score(lag) >= 0.95
    assert _correlation(right[start:end], aligned_right) >= 0.95
    assert abs(_zero_crossing_hz(aligned_left) - TONE_HZ) < 3
    candidates = [TONE_HZ + d for d in (-40, -20, 0, 20, 40)] + [TONE_HZ / 2, TONE_HZ * 2]
    powers = {hz: _goertzel_power(aligned_left, hz) for hz in candidates}
    assert max(powers, key=powers.__getitem__) == TONE_HZ


def test_digital_silence_stays_silent() -> None:
    with OpusEncoder() as encoder:
        decoded = _roundtrip(encoder, bytes(PCM_BLOCK_SIZE * 10))
    left, right = _channels(decoded)
    assert max(map(abs, left + right)) <= 2


def test_silence_frame_decodes_to_20ms_of_silence() -> None:
    with OpusDecoder() as decoder:
        pcm = decoder.decode(OPUS_SILENCE_FRAME)
    assert pcm == bytes(PCM_BLOCK_SIZE)


# ---------------------------------------------------------------------------------------------
# Settings


def test_settings_are_applied() -> None:
    with OpusEncoder(
        bitrate=96_000,
        fec=True,
        packet_loss_percent=7,
        complexity=3,
        application=Application.VOIP,
    ) as encoder:
        assert encoder.bitrate == 96_000
        assert encoder.fec is True
        assert encoder.packet_loss_percent == 7
        assert encoder.complexity == 3
        assert encoder.application is Application.VOIP
        encoder.bitrate = 24_000
        encoder.fec = False
        encoder.packet_loss_percent = 0
        encoder.complexity = 10
        assert (encoder.bitrate, encoder.fec, encoder.packet_loss_percent) == (24_000, False, 0)
        assert encoder.complexity == 10
        assert "bitrate=24000" in repr(encoder)


def test_defaults() -> None:
    with OpusEncoder() as encoder:
        assert encoder.bitrate == 128_000
        assert encoder.fec is False
        assert encoder.packet_loss_percent == 0
        assert encoder.complexity == 10
        assert encoder.application is Application.AUDIO


def test_application_as_libopus_number() -> None:
    with OpusEncoder(application=2048) as encoder:
        assert encoder.application is Application.VOIP


def test_fec_brings_a_loss_estimate_unless_given_one() -> None:
    with OpusEncoder(fec=True) as encoder:
        assert encoder.packet_loss_percent == 15
    with OpusEncoder(fec=True, packet_loss_percent=3) as encoder:
        assert encoder.packet_loss_percent == 3


def _total_size(encoder: OpusEncoder, pcm: bytes) -> int:
    return sum(len(encoder.encode(frame)) for frame in _frames(pcm))


def test_bitrate_changes_packet_size() -> None:
    noisy = [a + b for a, b in zip(_sine(0.5), _noise(SAMPLE_RATE // 2), strict=True)]
    pcm = _stereo(noisy, list(reversed(noisy)))
    with OpusEncoder(bitrate=16_000) as low, OpusEncoder(bitrate=128_000) as high:
        small, large = _total_size(low, pcm), _total_size(high, pcm)
    # 0.5 s at the target rate: 1 000 vs 8 000 bytes; VBR wanders, the ratio does not.
    assert large > 4 * small
    assert 0.5 * 8_000 < large < 1.5 * 8_000


def test_changing_bitrate_mid_stream_takes_effect() -> None:
    noisy = [a + b for a, b in zip(_sine(0.5), _noise(SAMPLE_RATE // 2), strict=True)]
    pcm = _stereo(noisy, noisy)
    with OpusEncoder(bitrate=128_000) as encoder:
        before = _total_size(encoder, pcm)
        encoder.bitrate = 16_000
        after = _total_size(encoder, pcm)
    assert before > 4 * after


# ---------------------------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bitrate": 0},
        {"bitrate": 499},
        {"bitrate": 512_001},
        {"bitrate": True},
        {"bitrate": 64_000.0},
        {"bitrate": "128k"},
        {"complexity": -1},
        {"complexity": 11},
        {"packet_loss_percent": -1},
        {"packet_loss_percent": 101},
        {"fec": 1},
        {"fec": "yes"},
        {"application": 1234},
        {"application": "AUDIO"},
        {"application": 2049.0},
        {"application": None},
    ],
)
def test_bad_encoder_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError) as info:
        OpusEncoder(**kwargs)
    assert next(iter(kwargs)) in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("bitrate", 100), ("complexity", 42), ("packet_loss_percent", -5), ("fec", None)],
)
def test_bad_setter_values(name: str, value: object) -> None:
    with OpusEncoder() as encoder:
        before = getattr(encoder, name)
        with pytest.raises(UsageError):
            setattr(encoder, name, value)
        assert getattr(encoder, name) == before


@pytest.mark.parametrize("size", [0, 1, 3839, 3841, 3838, 3842, 1920, 7680])
def test_wrong_pcm_size(size: int) -> None:
    with OpusEncoder() as encoder, pytest.raises(UsageError) as info:
        encoder.encode(bytes(size))
    message = str(info.value)
    assert str(size) in message
    if size % 2:
        assert "odd" in message
    else:
        assert "3840" in message


@pytest.mark.parametrize("pcm", ["x" * 3840, 3840, [0] * 3840, None])
def test_pcm_that_is_not_bytes(pcm: Any) -> None:
    with OpusEncoder() as encoder, pytest.raises(UsageError):
        encoder.encode(pcm)


def test_other_buffers_are_accepted() -> None:
    pcm = _stereo(_sine(0.02), _sine(0.02))
    with OpusEncoder() as a, OpusEncoder() as b, OpusEncoder() as c:
        expected = a.encode(pcm)
        assert b.encode(bytearray(pcm)) == expected
        assert c.encode(memoryview(array.array("h", pcm))) == expected


def test_decode_arguments() -> None:
    with OpusDecoder() as decoder:
        with pytest.raises(UsageError):
            decoder.decode(None, fec=True)
        with pytest.raises(UsageError):
            decoder.decode("not bytes")  # type: ignore[arg-type]
        assert decoder.decode(bytearray(OPUS_SILENCE_FRAME)) == bytes(PCM_BLOCK_SIZE)


# ---------------------------------------------------------------------------------------------
# Corrupt input, PLC, FEC


@pytest.mark.parametrize(
    "packet", [b"", b"\x03", b"\xff", b"\x03\x00", b"\x02\x05\x00", b"\x0b\x00"]
)
def test_corrupt_packets_raise_opus_error(packet: bytes) -> None:
    with OpusDecoder() as decoder:
        with pytest.raises(OpusError) as info:
            decoder.decode(packet)
        assert isinstance(info.value, DiscoreVoiceError)
        assert info.value.code < 0
        assert "libopus error" in str(info.value) or not packet
        # The decoder survives and keeps working.
        assert decoder.decode(OPUS_SILENCE_FRAME) == bytes(PCM_BLOCK_SIZE)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=1500))
def test_arbitrary_packets_never_crash(packet: bytes) -> None:
    with OpusDecoder() as decoder:
        try:
            pcm = decoder.decode(packet)
        except OpusError:
            return
    assert len(pcm) % (CHANNELS * 2) == 0
    assert len(pcm) <= MAX_FRAME_SAMPLES * CHANNELS * 2


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=PCM_BLOCK_SIZE, max_size=PCM_BLOCK_SIZE))
def test_any_frame_encodes_and_decodes(pcm: bytes) -> None:
    with OpusEncoder() as encoder, OpusDecoder() as decoder:
        packet = encoder.encode(pcm)
        assert 1 <= len(packet) <= 4000
        assert len(decoder.decode(packet)) == PCM_BLOCK_SIZE


def test_plc_and_fec_return_one_frame() -> None:
    voice = [a + 0.3 * b for a, b in zip(_sine(0.2, 220.0), _noise(SAMPLE_RATE // 5), strict=True)]
    pcm = _stereo(voice, voice)
    with (
        OpusEncoder(application=Application.VOIP, bitrate=32_000, fec=True) as encoder,
        OpusDecoder() as decoder,
    ):
        packets = [encoder.encode(frame) for frame in _frames(pcm)]
        assert len(decoder.decode(packets[0])) == PCM_BLOCK_SIZE
        # packets[1] is lost: conceal it, then recover it from packets[2]'s redundancy.
        assert len(decoder.decode(None)) == PCM_BLOCK_SIZE
        assert len(decoder.decode(packets[2], fec=True)) == PCM_BLOCK_SIZE
        assert len(decoder.decode(packets[2])) == PCM_BLOCK_SIZE
        for packet in packets[3:]:
            assert len(decoder.decode(packet)) == PCM_BLOCK_SIZE


def test_concealment_follows_the_senders_frame_length() -> None:
    # TOC 0x00 is a 10 ms SILK narrowband frame; concealing after it must produce 10 ms too.
    ten_ms = SAMPLE_RATE // 100 * CHANNELS * 2
    with OpusDecoder() as decoder:
        assert len(decoder.decode(b"\x00")) == ten_ms
        assert len(decoder.decode(None)) == ten_ms
        assert len(decoder.decode(b"\x00", fec=True)) == ten_ms
        decoder.reset()
        assert len(decoder.decode(None)) == PCM_BLOCK_SIZE


def test_concealment_before_any_packet() -> None:
    with OpusDecoder() as decoder:
        assert decoder.decode(None) == bytes(PCM_BLOCK_SIZE)


# ---------------------------------------------------------------------------------------------
# Lifetime


def test_closed_codecs_refuse_work() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    encoder.close()
    decoder.close()
    encoder.close()
    decoder.close()
    assert encoder.closed and decoder.closed
    assert repr(encoder) == "<OpusEncoder closed>"
    with pytest.raises(UsageError):
        encoder.encode(bytes(PCM_BLOCK_SIZE))
    with pytest.raises(UsageError):
        _ = encoder.bitrate
    with pytest.raises(UsageError):
        encoder.reset()
    with pytest.raises(UsageError):
        decoder.decode(OPUS_SILENCE_FRAME)
    with pytest.raises(UsageError):
        decoder.reset()


def test_context_managers_close() -> None:
    with OpusEncoder() as encoder, OpusDecoder() as decoder:
        assert not encoder.closed and not decoder.closed
    assert encoder.closed and decoder.closed


def test_garbage_collection_frees_native_state() -> None:
    destroyed: list[int] = []

    def spy(real: Callable[[int], None]) -> Callable[[int], None]:
        def destroy(state: int) -> None:
            destroyed.append(state)
            real(state)

        return destroy

    encoder, decoder = OpusEncoder(), OpusDecoder()
    lib = encoder._lib
    encoder._lib = dataclasses.replace(lib, encoder_destroy=spy(lib.encoder_destroy))
    decoder._lib = dataclasses.replace(lib, decoder_destroy=spy(lib.decoder_destroy))
    states = {encoder._state, decoder._state}
    del encoder, decoder
    gc.collect()
    assert set(destroyed) == states and len(destroyed) == 2


def test_failed_construction_leaves_nothing_behind() -> None:
    with pytest.raises(UsageError):
        OpusEncoder(complexity=99)
    gc.collect()


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_a_thousand_codecs_do_not_leak() -> None:
    # Each encoder holds ~48 KB and each decoder ~27 KB of native memory: leaking 1 000 of each
    # would add ~75 MB. Half of them are closed explicitly, half left to the garbage collector.
    def churn() -> None:
        for i in range(1000):
            encoder, decoder = OpusEncoder(), OpusDecoder()
            decoder.decode(encoder.encode(bytes(PCM_BLOCK_SIZE)))
            if i % 2:
                encoder.close()
                decoder.close()
        gc.collect()

    churn()  # let the allocator reach its steady state
    before = _rss_bytes()
    churn()
    assert _rss_bytes() - before < 16 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Threads


async def test_encoders_in_worker_threads_match_sequential_output() -> None:
    # Same input, same settings: libopus is deterministic, so any cross-talk between encoders
    # running at once in different threads would change the bytes.
    frames = list(_frames(_stereo(_sine(0.4), _noise(SAMPLE_RATE * 2 // 5))))

    def run() -> list[bytes]:
        with OpusEncoder(bitrate=96_000) as encoder:
            return [encoder.encode(frame) for frame in frames]

    expected = run()
    results: list[list[bytes]] = []

    async def worker() -> None:
        results.append(await trio.to_thread.run_sync(run))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(worker)
    assert results == [expected] * 4
