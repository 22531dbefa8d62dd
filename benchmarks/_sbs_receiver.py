"""The receiver of side_by_side.py: the local Discord simulator alone in its own process.

It creates ``--guilds`` guilds (one voice channel each, the default bot a member of all), prints
one JSON line with what a sender needs, then waits for commands on stdin: ``report`` prints the
per-SSRC stream statistics the media server counted (packets, inter-arrival gaps in ns, and each
packet's RTP timestamp with its arrival time) plus this
process's own CPU time and drop counters, so the benchmark can show the receiver kept up. EOF (or
``quit``) ends it. It never sends media; it decrypts and counts.

``--lean`` is the counting mode for runs the full media server cannot keep up with (50 000
packets a second at N=1000): every waiting datagram is drained in one synchronous loop per
wake-up instead of one trio receive each, and an RTP packet from a known SSRC is only stamped
(sequence, timestamp, kernel arrival), never decrypted. IP discovery and everything else still
go through the simulator. Silence frames are then not told apart from audio.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import gc
import itertools
import json
import os
import resource
import socket
import struct
import sys
import time

import trio

from discore_voice._core.rtp import is_rtcp
from discore_voice._core.transport import XCHACHA20_POLY1305_RTPSIZE
from discore_voice.testing import open_local_discord
from discore_voice.testing._media import MediaServer, _kernel_arrival
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

#: Lean mode: per SSRC, the sequence numbers, RTP timestamps and arrival ns of every packet, in
#: arrays: 50 000 tuples a second would make this process's own garbage collector pause for
#: long enough to overflow the socket's receive buffer.
LEAN: dict[int, tuple[array.array[int], array.array[int], array.array[int]]] = {}
_RTP_NUMBERS = struct.Struct(">xxHII")
#: Datagrams handled per wake-up before trio gets the thread back.
_LEAN_BATCH = 512


async def _lean_receive_loop(self: MediaServer, sock: object) -> None:
    """MediaServer's receive loop, draining the socket without a trio receive per datagram."""
    raw = self._raw
    assert raw is not None
    ancbufsize = socket.CMSG_SPACE(16)
    known = self._by_ssrc
    stats = self.stats
    unpack = _RTP_NUMBERS.unpack_from
    while True:
        await trio.lowlevel.wait_readable(raw)
        for _ in range(_LEAN_BATCH):
            try:
                data, ancdata, _flags, address = raw.recvmsg(4096, ancbufsize)
            except BlockingIOError:
                break
            except OSError:
                continue  # ICMP errors from earlier sends: a bot went away
            arrival = _kernel_arrival(ancdata) or time.time_ns()
            stats.received += 1
            if len(data) >= 12 and data[0] & 0xC0 == 0x80 and not is_rtcp(data):
                sequence, timestamp, ssrc = unpack(data)
                if ssrc in known:
                    stats.datagrams += 1
                    stats.rtp_packets += 1
                    stamps = LEAN.get(ssrc)
                    if stamps is None:
                        stamps = LEAN[ssrc] = (array.array("q"), array.array("q"), array.array("q"))
                    stamps[0].append(sequence)
                    stamps[1].append(timestamp)
                    stamps[2].append(arrival)
                    continue
            self.handle_datagram(data, (str(address[0]), int(address[1])), arrival)


def lean_streams() -> list[dict[str, object]]:
    """The report's per-stream entries, computed from the lean mode's stamps."""
    streams = []
    for ssrc, (sequences, timestamps, arrivals) in LEAN.items():
        first = sequences[0]
        extended = [(sequence - first) & 0xFFFF for sequence in sequences]
        distinct = len(set(extended))
        streams.append(
            {
                "ssrc": ssrc,
                "packets": len(sequences),
                "silence_frames": None,
                "lost": max(extended) + 1 - distinct,
                "duplicates": len(extended) - distinct,
                "reordered": sum(1 for a, b in itertools.pairwise(extended) if b < a),
                "clock": "kernel",
                "gaps_ns": [b - a for a, b in itertools.pairwise(arrivals)],
                "arrivals": list(zip(timestamps, arrivals, strict=True)),
            }
        )
    return streams


#: The media socket's receive buffer: at N=100 the default (~208 KiB) overflows in bursts and the
#: kernel drops datagrams, which would be charged to the sender as lost packets and 40 ms gaps.
RCVBUF = 4 << 20
LEAN_RCVBUF = 64 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def udp_rcvbuf_errors() -> int:
    """The kernel's UDP RcvbufErrors counter (machine-wide: other work on the box adds to it)."""
    with open("/proc/net/snmp") as snmp:
        lines = [line.split() for line in snmp if line.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(args: argparse.Namespace) -> None:
    if args.lean:
        MediaServer._receive_loop = _lean_receive_loop  # type: ignore[assignment,method-assign]
        # This process holds 1000 simulated sessions: a full collection of them pauses it for a
        # few hundred milliseconds, long enough to overflow the socket. A run is short; its
        # few cycles can wait for the process to end.
        gc.disable()
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
            if args.lean:
                # Past net.core.rmem_max where allowed (root): a second of packets at N=1000.
                with contextlib.suppress(OSError):
                    media_socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, LEAN_RCVBUF)
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
                    streams = (
                        lean_streams()
                        if args.lean
                        else [
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
                    )
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
    parser.add_argument("--lean", action="store_true", help="count and stamp; do not decrypt")
    parser.add_argument("--voice-events-gap", type=float, default=0.02)
    trio.run(serve, parser.parse_args())


if __name__ == "__main__":
    main()
