"""What both benchmark senders measure about themselves, with the standard library only.

The two senders run in different venvs (ours, and discord.py's own), so this module imports
nothing but the standard library; both are started as scripts, which puts this folder on
``sys.path``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import struct
from pathlib import Path
from typing import Any

__all__ = ["cpu_seconds", "machine", "read_packets", "rss_bytes", "sender_arguments"]


def sender_arguments() -> argparse.ArgumentParser:
    """The options side_by_side.py passes to either sender; each adds its own."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--info", required=True)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--pcm")
    parser.add_argument("--opus")
    parser.add_argument("--timeout", type=float, default=120.0)
    return parser


def cpu_seconds() -> float:
    """User plus system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """Resident memory of this process now (not the peak, which never goes down)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def read_packets(path: str) -> list[bytes]:
    """The pre-encoded Opus packets the driver wrote: a little-endian u16 length, then bytes."""
    data = Path(path).read_bytes()
    packets, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from("<H", data, offset)
        packets.append(data[offset + 2 : offset + 2 + size])
        offset += 2 + size
    return packets


def machine() -> dict[str, Any]:
    """What a benchmark's JSON says about the machine it ran on (shared by every benchmark)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg(),
    }
