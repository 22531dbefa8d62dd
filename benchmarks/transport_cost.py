"""CPU cost of the per-packet work after Opus: RTP header, transport encryption, decryption.

Every stream does this 50 times a second, so at 1000 pre-encoded streams it is the whole send
path; the numbers say how much of a core the transport layer takes before any socket call.

Run from the repository root:

    .venv/bin/python benchmarks/transport_cost.py [--packets 200000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from discore_voice._core.rtp import RtpHeader, pack_opus_header
from discore_voice._core.transport import SUPPORTED_MODES, create_cipher

PAYLOAD = bytes(range(160))  # a typical 128 kbps Opus frame is 150-330 bytes


def _per_call_us(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    count = parser.parse_args().packets

    rows = [
        ("RTP header, fast path", _per_call_us(lambda: pack_opus_header(1, 960, 7), count)),
        ("RTP header, dataclass", _per_call_us(lambda: RtpHeader(1, 960, 7).build(), count)),
    ]
    for mode in SUPPORTED_MODES:
        sender = create_cipher(mode, bytes(32))
        packet = sender.encrypt_opus(1, 960, 7, PAYLOAD)
        receiver = create_cipher(mode, bytes(32))
        rows.append(
            (
                f"{mode} encrypt",
                _per_call_us(lambda s=sender: s.encrypt_opus(1, 960, 7, PAYLOAD), count),
            )
        )
        rows.append(
            (f"{mode} decrypt", _per_call_us(lambda r=receiver, p=packet: r.decrypt(p), count))
        )

    print(f"{'operation (160-byte payload)':42} µs/packet   core share at 1000 streams")
    for name, us in rows:
        print(f"{name:42} {us:9.2f}   {us * 50 * 1000 / 1e6:6.1%}")


if __name__ == "__main__":
    main()
