"""The floor under receiving in CPython: the least any Python receive path can cost per packet.

No library code: a plain loop that wakes every 20 ms (``time.sleep``, cheaper than any event
loop's wake-up), reads every datagram waiting on a UDP socket with ``recv`` and opens each with
``cryptography``'s AES-GCM, as the rtpsize transport requires; with ``--decode``, decodes each
frame with libopus through our ctypes binding as well. Nothing else: no replay filter, no SSRC
map, no jitter buffer, no DAVE, no frames handed to anyone. The sender is a second process
sending N streams of 20 ms packets, so the kernel work of receiving is the real thing.

CPU is the receiving process's ``getrusage`` (user + system, the wake-ups included) over the
window, per speaker-second: directly comparable with ``receive_cost.py``'s rows. DAVE's own
per-frame decryption (``dave_cost.py``: ~8 µs a frame, 0.0004 CPU-s per speaker-second) comes
on top for a real Discord call, where DAVE is mandatory.

    .venv/bin/python benchmarks/receive_floor.py --speakers 100 --seconds 10 [--decode]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY = bytes(range(32))
TICK = 0.02
_HEADER = struct.Struct(">BBHII")


def _packets(speakers: int, frames: int, payload: list[bytes]) -> list[list[bytes]]:
    """``frames`` ticks of rtpsize AES-GCM packets, one per speaker per tick."""
    aead = AESGCM(KEY)
    out: list[list[bytes]] = []
    for tick in range(frames):
        row = []
        for speaker in range(speakers):
            header = _HEADER.pack(0x80, 0x78, tick & 0xFFFF, tick * 960, 1000 + speaker)
            nonce = (tick * speakers + speaker).to_bytes(4, "big")
            sealed = aead.encrypt(nonce + bytes(8), payload[tick % len(payload)], header)
            row.append(header + sealed + nonce)
        out.append(row)
    return out


def _send(address: tuple[str, int], speakers: int, seconds: float, payload: list[bytes]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(address)
    ticks = int(seconds / TICK) + 100
    rows = _packets(speakers, min(ticks, 250), payload)
    start = time.monotonic()
    for tick in range(ticks):
        for datagram in rows[tick % len(rows)]:
            sock.send(datagram)
        delay = start + (tick + 1) * TICK - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _opus_frames() -> list[bytes]:
    from discore_voice._audio.signals import sine_pcm
    from discore_voice.testing._members import encode_pcm

    return encode_pcm(sine_pcm(1.0, hz=660.0), bitrate=64_000)


def measure(speakers: int, seconds: float, decode: bool) -> dict[str, Any]:
    payload = _opus_frames()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    decoders: dict[int, Any] = {}
    if decode:
        from discore_voice._audio.opus import OpusDecoder

        decoders = {1000 + s: OpusDecoder() for s in range(speakers)}
    sender = multiprocessing.Process(
        target=_send, args=(sock.getsockname(), speakers, seconds + 2.0, payload)
    )
    sender.start()
    aead_open = AESGCM(KEY).decrypt
    unpack = _HEADER.unpack_from
    padding = bytes(8)
    received = 0
    warm_until = time.monotonic() + 1.0
    started: tuple[float, float] | None = None
    end = warm_until + seconds
    next_tick = time.monotonic()
    while True:
        now = time.monotonic()
        if started is None and now >= warm_until:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            started, received = (usage.ru_utime + usage.ru_stime, now), 0
        if now >= end:
            break
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            ssrc = unpack(data)[4]
            opus = aead_open(data[-4:] + padding, data[12:-4], data[:12])
            if decode:
                decoders[ssrc].decode(opus)
            received += 1
        next_tick += TICK
        time.sleep(max(0.0, next_tick - time.monotonic()))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    assert started is not None
    cpu = usage.ru_utime + usage.ru_stime - started[0]
    wall = time.monotonic() - started[1]
    sender.join()
    return {
        "speakers": speakers,
        "decode": decode,
        "seconds": round(wall, 2),
        "received": received,
        "expected": round(speakers * wall / TICK),
        "cpu_per_speaker_second": cpu / (speakers * wall),
        "us_per_packet": cpu / max(received, 1) * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speakers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--decode", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    row = measure(args.speakers, args.seconds, args.decode)
    print(
        f"N={row['speakers']} decode={'on' if row['decode'] else 'off'}: "
        f"{row['cpu_per_speaker_second']:.5f} CPU-s per speaker-second, "
        f"{row['us_per_packet']:.1f} µs a packet all in "
        f"({row['received']}/{row['expected']} packets in {row['seconds']} s)"
    )
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
