"""The receiver of side_by_side.py: the local Discord simulator alone in its own process.

It creates ``--guilds`` guilds (one voice channel each, the default bot a member of all), prints
one JSON line with what a sender needs, then waits for commands on stdin: ``report`` prints the
per-SSRC stream statistics the media server counted (packets, inter-arrival gaps in ns, and each
packet's RTP timestamp with its arrival time) plus this
process's own CPU time and drop counters, so the benchmark can show the receiver kept up. EOF (or
``quit``) ends it. It never sends media; it decrypts and counts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import time

import trio

from discore_voice._core.transport import XCHACHA20_POLY1305_RTPSIZE
from discore_voice.testing import open_local_discord
from discore_voice.testing._stats import StreamStats

#: Per SSRC, (RTP timestamp, arrival ns) of every packet, so the grid offset is measured against
#: the sender's own RTP clock: a skipped late frame is then no offset, a drift or burst is.
ARRIVALS: dict[int, list[tuple[int, int]]] = {}
_observe = StreamStats.observe


def _observe_and_keep(
    self: StreamStats, sequence: int, timestamp: int, payload: bytes, arrival_ns: int
) -> None:
    _observe(self, sequence, timestamp, payload, arrival_ns)
    ARRIVALS.setdefault(self.ssrc, []).append((timestamp, arrival_ns))


StreamStats.observe = _observe_and_keep  # type: ignore[method-assign]


#: The media socket's receive buffer: at N=100 the default (~208 KiB) overflows in bursts and the
#: kernel drops datagrams, which would be charged to the sender as lost packets and 40 ms gaps.
RCVBUF = 4 << 20


def udp_rcvbuf_errors() -> int:
    """The kernel's UDP RcvbufErrors counter (machine-wide: other work on the box adds to it)."""
    with open("/proc/net/snmp") as snmp:
        lines = [line.split() for line in snmp if line.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(args: argparse.Namespace) -> None:
    options = {}
    if args.xchacha_only:
        options["voice_modes"] = (XCHACHA20_POLY1305_RTPSIZE,)
    async with open_local_discord(
        tls=True,
        dave="off",
        voice_events_gap=args.voice_events_gap,
        resend_session_description_on_resume=True,
        **options,
    ) as discord:
        media_socket = discord.voice.media._raw  # private: the benchmark's receiver only
        if media_socket is not None:
            media_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        guilds = []
        for index in range(args.guilds):
            guild = discord.add_guild(name=f"bench-{index}")
            channel = guild.add_voice_channel(name="voice")
            guilds.append([str(guild.id), str(channel.id)])
        info = {
            "gateway_url": discord.gateway_url,
            "api_url": discord.api_url,
            "ca_pem_path": str(discord.ca_pem_path),
            "bot_token": discord.bot.token,
            "guilds": guilds,
            "rcvbuf": media_socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            if media_socket is not None
            else None,
        }
        print(json.dumps(info), flush=True)
        cpu_start, wall_start = cpu_seconds(), time.monotonic()
        rcvbuf_start = udp_rcvbuf_errors()
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        pending = b""
        while True:
            chunk = await stdin.receive_some(4096)
            if not chunk:
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                command = line.strip().decode()
                if command == "quit":
                    return
                if command == "mark":
                    cpu_start, wall_start = cpu_seconds(), time.monotonic()
                    rcvbuf_start = udp_rcvbuf_errors()
                    print(json.dumps({"event": "marked"}), flush=True)
                elif command == "report":
                    stats = discord.voice.media.stats
                    streams = [
                        {
                            "ssrc": stream.ssrc,
                            "packets": stream.packets,
                            "silence_frames": stream.silence_frames,
                            "lost": stream.lost,
                            "duplicates": stream.duplicates,
                            "reordered": stream.reordered,
                            "clock": stream.clock,
                            "gaps_ns": stream.gaps_ns,
                            "arrivals": ARRIVALS.get(stream.ssrc, []),
                        }
                        for stream in stats.streams.values()
                    ]
                    report = {
                        "event": "report",
                        "cpu_s": cpu_seconds() - cpu_start,
                        "wall_s": time.monotonic() - wall_start,
                        "rtp_packets": stats.rtp_packets,
                        "drops": dict(stats.drops),
                        "udp_rcvbuf_errors": udp_rcvbuf_errors() - rcvbuf_start,
                        "clock": stats.clock,
                        "streams": streams,
                    }
                    print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--guilds", type=int, default=1)
    parser.add_argument("--xchacha-only", action="store_true")
    parser.add_argument("--voice-events-gap", type=float, default=0.02)
    trio.run(serve, parser.parse_args())


if __name__ == "__main__":
    main()
