"""CPU cost of one 20 ms stereo frame through our Opus wrappers.

Each live stream encodes 50 frames a second, so this number times 50 is the fraction of a core
one stream costs; it decides how many streams a process can carry and whether encoding needs
worker threads. The input is a tone plus noise, because libopus encodes silence far faster than
music and would flatter the result.

Run from the repository root:

    .venv/bin/python benchmarks/opus_cost.py [--seconds 2.0]
"""

from __future__ import annotations

import argparse
import array
import math
import sys
import time
from collections.abc import Callable

from discore_voice._audio.opus import (
    FRAME_SAMPLES,
    PCM_BLOCK_SIZE,
    SAMPLE_RATE,
    OpusDecoder,
    OpusEncoder,
)
from discore_voice._native import load_opus

CLIP_FRAMES = 250  # 5 s of audio, cycled


def _clip() -> list[bytes]:
    samples = array.array("h")
    x = 1
    for i in range(CLIP_FRAMES * FRAME_SAMPLES):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        noise = 3000.0 * (x / 0x3FFFFFFF - 1.0)
        tone = 8000.0 * math.sin(2 * math.pi * 440.0 * i / SAMPLE_RATE)
        chord = 4000.0 * math.sin(2 * math.pi * 659.25 * i / SAMPLE_RATE)
        samples.append(int(tone + noise))
        samples.append(int(chord + noise))
    if sys.byteorder == "big":
        samples.byteswap()
    pcm = samples.tobytes()
    return [pcm[i : i + PCM_BLOCK_SIZE] for i in range(0, len(pcm), PCM_BLOCK_SIZE)]


def _per_call_us(fn: Callable[[int], None], seconds: float) -> float:
    """Best of five timed runs, each of about ``seconds / 5``; the minimum filters out noise."""
    fn(50)  # warm up
    count = 50
    start = time.perf_counter()
    fn(count)
    once = max(time.perf_counter() - start, 1e-9)
    count = max(50, int(count * (seconds / 5) / once))
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        fn(count)
        best = min(best, (time.perf_counter() - start) / count)
    return best * 1e6


def _encode_loop(encoder: OpusEncoder, frames: list[bytes]) -> Callable[[int], None]:
    def run(n: int) -> None:
        encode = encoder.encode
        for i in range(n):
            encode(frames[i % CLIP_FRAMES])

    return run


def _decode_loop(packets: list[bytes | None]) -> Callable[[int], None]:
    decoder = OpusDecoder()

    def run(n: int) -> None:
        decode = decoder.decode
        for i in range(n):
            decode(packets[i % len(packets)])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()

    lib = load_opus()
    frames = _clip()
    print(f"{lib.version}, Python {sys.version.split()[0]}, µs per 20 ms stereo frame")

    for label, options in [
        ("encode  64 kbps, FEC off", {"bitrate": 64_000, "fec": False}),
        ("encode 128 kbps, FEC off", {"bitrate": 128_000, "fec": False}),
        ("encode 128 kbps, FEC on (15 % loss)", {"bitrate": 128_000, "fec": True}),
    ]:
        with OpusEncoder(**options) as encoder:  # type: ignore[arg-type]
            cost = _per_call_us(_encode_loop(encoder, frames), args.seconds)
        print(f"  {label:<38} {cost:8.1f}")

    with OpusEncoder(bitrate=128_000) as encoder:
        packets: list[bytes | None] = [encoder.encode(frame) for frame in frames]
    mean_size = sum(len(p) for p in packets if p is not None) / len(packets)
    cost = _per_call_us(_decode_loop(packets), args.seconds)
    print(f"  {'decode 128 kbps packets':<38} {cost:8.1f}   (mean packet {mean_size:.0f} B)")
    # Concealment repeated forever fades to silence and gets almost free; one lost packet among
    # real ones is the case that matters, so alternate them and report the mean per frame.
    alternating: list[bytes | None] = [p if i % 2 else None for i, p in enumerate(packets)]
    cost = _per_call_us(_decode_loop(alternating), args.seconds)
    print(f"  {'decode, every other packet lost (PLC)':<38} {cost:8.1f}")

    # What the Python side adds: the same libopus call without validation or the result copy.
    with OpusEncoder(bitrate=128_000) as encoder:
        state, out, raw = encoder._state, encoder._out, lib.encode
        assert state is not None

        def bare(n: int) -> None:
            for i in range(n):
                raw(state, frames[i % CLIP_FRAMES], FRAME_SAMPLES, out, 4000)

        # Interleaved rounds, so load from other processes hits both sides alike.
        bare_cost = wrapped_cost = math.inf
        for _ in range(3):
            bare_cost = min(bare_cost, _per_call_us(bare, args.seconds / 3))
            wrapped_cost = min(
                wrapped_cost, _per_call_us(_encode_loop(encoder, frames), args.seconds / 3)
            )
    print(f"  {'wrapper overhead on encode':<38} {wrapped_cost - bare_cost:8.1f}")


if __name__ == "__main__":
    main()
