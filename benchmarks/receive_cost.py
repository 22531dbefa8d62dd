"""What receiving costs the bot: CPU per speaker-second, sending while receiving, recording memory.

Two processes on this machine, over loopback:

* the simulator (``_rcv_sim.py``): the local Discord (DAVE off or required, no TLS) with one
  voice channel of N simulated members, who speak pre-encoded Opus (one second of a 440 Hz tone
  at 64 kbps, encoded once, looped) on one absolute 20 ms schedule driven by one task, Speaking
  (op 5) announced first. It reports its own CPU and whether it kept to the schedule;
* the bot (this process): one shard, one voice connection, ``vc.receive(decode=...)`` with a
  task consuming ``rx.all()`` (counting frames, concealed frames, frames per user; an
  ``async for``, or ``--consumer batch``; its buffer one second of every speaker's frames unless
  ``--buffer``). Its CPU (``getrusage(RUSAGE_SELF)``, user + system, every thread) is the
  bot's alone.

Three measurements:

1. The matrix (the default): speakers N x decode off/on x DAVE off/required. Per row the bot's
   CPU-seconds per speaker-second over a steady window (``--seconds``, after ``--skip`` seconds
   of warm-up), frames received against expected (N x 50 per second), concealed frames, the
   receive path's drops by reason (``vc.receive_stats``), the stream's own drops, and the
   simulator's CPU share and frames sent against expected (a simulator that cannot keep up
   shows there, not as a cheap bot). Per (DAVE, N) a baseline row first: the same connection
   with the receiver open and nobody speaking (CPU-seconds per second).
2. ``--send-while-receiving``: the bot plays pre-encoded Opus while nobody speaks, then while
   ``--speakers`` (default 10) members speak; the simulator reports the inter-arrival gaps of
   the bot's stream (kernel receive timestamps): p50/p99/max. The two rows side by side.
3. ``--record-minutes M``: ``record(rx, tmpdir)`` for M minutes while ``--speakers`` (default
   10) members speak; every ``--sample-every`` seconds (30) RSS (VmRSS) and
   ``sys.getallocatedblocks()`` after ``gc.collect()``; the slope over the second half in MiB
   per minute (and blocks per minute): memory must stay flat.

Targets (the receive issue), printed next to the numbers: at N=100, at most 0.0005 CPU-s per
speaker-second undecoded and 0.004 decoded (the floor is Opus decoding, about 50 µs a frame =
0.0025).

Run from the repository root, the machine otherwise idle (the simulator needs 30-45 % of a core
at N=100; with DAVE it takes a minute or more to put 100 members in one MLS group, untimed):

    .venv/bin/python benchmarks/receive_cost.py [--speakers 1,10,100] [--decode off,on]
        [--dave off,required] [--seconds 10] [--json benchmarks/results/receive_cost.json]
    .venv/bin/python benchmarks/receive_cost.py --send-while-receiving [--speakers 10]
    .venv/bin/python benchmarks/receive_cost.py --record-minutes 10 --speakers 10 --dave required

Nothing here asserts a timing: it prints tables and, with ``--json``, writes the rows.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import trio
from _sbs_process import machine  # benchmarks/, first on sys.path as a script

from discore_voice import (
    AudioSource,
    AudioStream,
    Intents,
    ReceivedAudio,
    VoiceConnection,
    VoiceReceiver,
    open_shard,
    record,
    voice_connection,
)
from discore_voice._audio.signals import sine_pcm
from discore_voice._audio.sources import SourceKind
from discore_voice.testing._members import encode_pcm

HERE = Path(__file__).resolve().parent
FRAMES_PER_SECOND = 50
#: The issue's targets at N=100, CPU-seconds per speaker-second.
TARGETS = {False: 0.0005, True: 0.004}
TARGET_N = 100
#: Opus decoding alone, ~50 µs a frame: the floor of the decoded cost.
DECODE_FLOOR = 0.0025


# --- the simulator process --------------------------------------------------------------------


class SimLink:
    """The simulator process: one command a line in, one JSON line out, every wait bounded."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.pending = b""

    async def next(self, want: str, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        stdout = self.process.stdout
        assert stdout is not None
        with trio.fail_after(timeout):
            while True:
                while b"\n" in self.pending:
                    line, self.pending = self.pending.split(b"\n", 1)
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("event") == "error":
                        raise RuntimeError(f"simulator: {event.get('message')}")
                    if event.get("event") == want:
                        return dict(event)
                chunk = await stdout.receive_some(1 << 16)
                if not chunk:
                    raise RuntimeError(f"the simulator exited before {want!r}:\n{self.tail()}")
                self.pending += chunk

    async def call(self, command: str, want: str, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        stdin = self.process.stdin
        assert stdin is not None
        with trio.fail_after(timeout):
            await stdin.send_all(command.encode() + b"\n")
        return await self.next(want, timeout)

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    async def close(self) -> None:
        """``quit``, then a kill if it has not gone within five seconds; never leaves it behind."""
        with trio.CancelScope(shield=True):
            stdin = self.process.stdin
            if stdin is not None and self.process.returncode is None:
                with trio.move_on_after(2.0):
                    try:
                        await stdin.send_all(b"quit\n")
                        await stdin.aclose()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
            with trio.move_on_after(5.0):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()


async def open_sim(members: int, dave: str, scratch: Path) -> tuple[SimLink, dict[str, Any]]:
    log = scratch / f"sim-{dave}-{members}.log"
    with log.open("wb") as errors:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                str(HERE / "_rcv_sim.py"),
                *("--members", str(members)),
                *("--dave", dave),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    link = SimLink(process, log)
    try:
        info = await link.next("ready", 60.0 + members * 0.5)
    except BaseException:
        await link.close()
        raise
    return link, info


# --- the bot's side -------------------------------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib() -> float:
    """VmRSS now (not the peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def udp_rcvbuf_errors() -> int:
    """The kernel's UDP RcvbufErrors (machine-wide: other work on the box adds to it)."""
    try:
        with open("/proc/net/snmp") as snmp:
            lines = [line.split() for line in snmp if line.startswith("Udp:")]
        return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])
    except (OSError, KeyError, IndexError, ValueError):
        return 0


@dataclass
class Counts:
    """What the consumer of ``rx.all()`` saw."""

    frames: int = 0
    concealed: int = 0
    by_user: Counter[int] = field(default_factory=Counter)
    #: The longest wait between the first frames of consecutive ticks (a stall of the bot).
    tick_gap_max: float = 0.0
    tick: int = -1
    tick_at: float = 0.0
    #: Set once frames of ``want`` different members arrived.
    want: int = 1 << 30
    heard_all: trio.Event = field(default_factory=trio.Event)

    def new_tick(self, tick: int) -> None:
        now = time.monotonic()
        if self.tick >= 0:
            self.tick_gap_max = max(self.tick_gap_max, now - self.tick_at)
        self.tick, self.tick_at = tick, now


async def consume(stream: AudioStream[ReceivedAudio], counts: Counts, batch: bool) -> None:
    """Counts every frame: one ``async for`` step per frame (the documented way), or, with
    ``batch``, one wake-up per tick that takes every frame waiting (``receive_nowait``)."""
    by_user = counts.by_user
    async for first in stream:
        frames = [first]
        if batch:
            while True:
                try:
                    frames.append(stream.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
        for frame in frames:
            if frame.tick != counts.tick:
                counts.new_tick(frame.tick)
            counts.frames += 1
            if frame.concealed:
                counts.concealed += 1
            if frame.user_id not in by_user and len(by_user) + 1 >= counts.want:
                counts.heard_all.set()
            by_user[frame.user_id] += 1


class GcPauses:
    """The garbage collector's pauses by generation: a long one stalls every stream."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        gc.callbacks.append(self.observe)

    def observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self.started)

    def reset(self) -> None:
        for pauses in self.pauses.values():
            pauses.clear()

    def summary(self) -> dict[str, Any]:
        return {
            f"gen{generation}": {
                "count": len(pauses),
                "max_ms": round(max(pauses, default=0.0) * 1000, 3),
                "total_ms": round(sum(pauses) * 1000, 3),
            }
            for generation, pauses in self.pauses.items()
        }


GC_PAUSES = GcPauses()


class LoopedOpus(AudioSource):
    """Pre-encoded 20 ms Opus packets, looped until cancelled, passed through untouched."""

    kind: ClassVar[SourceKind] = SourceKind.OPUS

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__("<looped pre-encoded opus>")
        self._packets = packets
        self._index = 0
        self._closed = False

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        packet = self._packets[self._index % len(self._packets)]
        self._index += 1
        return packet

    async def aclose(self) -> None:
        self._closed = True


@dataclass
class Snapshot:
    cpu: float
    wall: float
    frames: int
    concealed: int
    by_user: Counter[int]
    received: int
    dropped: dict[str, int]
    passed: dict[str, int]
    stream_dropped: int
    udp_dropped: dict[str, int]
    rcvbuf_errors: int
    sim: dict[str, Any]
    tick_gap_max: float
    gc: dict[str, Any]


async def snapshot(
    vc: VoiceConnection, stream: AudioStream[ReceivedAudio], counts: Counts, link: SimLink
) -> Snapshot:
    sim = await link.call("mark", "mark")
    stats = vc.receive_stats
    result = Snapshot(
        cpu=cpu_seconds(),
        wall=time.monotonic(),
        frames=counts.frames,
        concealed=counts.concealed,
        by_user=Counter(counts.by_user),
        received=stats.received,
        dropped=dict(stats.dropped),
        passed=dict(stats.passed),
        stream_dropped=stream.dropped,
        udp_dropped=dict(vc.udp_stats.dropped),
        rcvbuf_errors=udp_rcvbuf_errors(),
        sim=sim,
        tick_gap_max=counts.tick_gap_max,
        gc=GC_PAUSES.summary(),
    )
    counts.tick_gap_max = 0.0
    GC_PAUSES.reset()
    return result


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    keys = set(after) | set(before)
    return {
        k: after.get(k, 0) - before.get(k, 0)
        for k in sorted(keys)
        if after.get(k, 0) != before.get(k, 0)
    }


def window_row(a: Snapshot, b: Snapshot, speakers: int) -> dict[str, Any]:
    """The numbers of one steady window, from the snapshots at its ends."""
    wall = b.wall - a.wall
    cpu = b.cpu - a.cpu
    expected = speakers * FRAMES_PER_SECOND * wall
    frames = b.frames - a.frames
    concealed = b.concealed - a.concealed
    per_user = [b.by_user[user] - a.by_user.get(user, 0) for user in b.by_user]
    sim_wall = b.sim["wall_s"] - a.sim["wall_s"]
    sim_sent = b.sim["frames_sent"] - a.sim["frames_sent"]
    dropped = delta(b.dropped, a.dropped)
    passed = delta(b.passed, a.passed)
    return {
        "window_s": wall,
        "cpu_s": cpu,
        "cpu_per_second": cpu / wall,
        "cpu_per_speaker_second": cpu / (speakers * wall) if speakers else None,
        "frames_received": frames,
        "frames_expected": expected,
        "received_ratio": frames / expected if expected else None,
        "concealed": concealed,
        "concealed_pct": 100 * concealed / frames if frames else 0.0,
        "users_heard": sum(1 for count in per_user if count),
        "frames_per_user_min": min(per_user, default=0),
        "frames_per_user_max": max(per_user, default=0),
        "datagrams_received": b.received - a.received,
        "dropped_total": sum(dropped.values()),
        "dropped": dropped,
        "passed": passed,
        "stream_dropped": b.stream_dropped - a.stream_dropped,
        "udp_dropped": delta(b.udp_dropped, a.udp_dropped),
        "udp_rcvbuf_errors_machine": b.rcvbuf_errors - a.rcvbuf_errors,
        "sim_cpu_share": (b.sim["cpu_s"] - a.sim["cpu_s"]) / sim_wall if sim_wall else None,
        "sim_frames_sent": sim_sent,
        "sim_sent_ratio": sim_sent / (speakers * FRAMES_PER_SECOND * sim_wall)
        if speakers and sim_wall
        else None,
        "sim_ticks_late": b.sim["ticks_late"] - a.sim["ticks_late"],
        "sim_ticks_skipped": b.sim["ticks_skipped"] - a.sim["ticks_skipped"],
        "sim_max_late_ms": b.sim["max_late_ms"],
        "sim_send_failed": b.sim["send_failed"] - a.sim["send_failed"],
        "tick_gap_max_ms": b.tick_gap_max * 1000,
        "load_average_1m": os.getloadavg()[0],
        "gc_pauses": b.gc,
    }


async def wait_for_group(vc: VoiceConnection, link: SimLink, timeout: float) -> str:  # noqa: ASYNC109
    """DAVE ready on both sides: the bot's voice privacy code is every member's."""
    with trio.fail_after(timeout):
        while True:
            code = vc.voice_privacy_code
            if code is not None:
                codes = (await link.call("codes", "codes"))["codes"]
                if codes == [code]:
                    return code
            await trio.sleep(0.2)


async def measure_receive(
    vc: VoiceConnection,
    link: SimLink,
    args: argparse.Namespace,
    *,
    decode: bool,
    speakers: int,
) -> dict[str, Any]:
    """One steady window with the receiver open and a task consuming ``rx.all()``."""
    rx: VoiceReceiver
    async with vc.receive(decode=decode, delay=args.delay) as rx:
        stream = rx.all(buffer=stream_buffer(args, speakers))
        counts = Counts()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume, stream, counts, args.consumer == "batch")
            warmup = await hear_everyone(counts, speakers)
            await trio.sleep(args.skip)
            before = await snapshot(vc, stream, counts, link)
            await trio.sleep(args.seconds)
            after = await snapshot(vc, stream, counts, link)
            nursery.cancel_scope.cancel()
        counters = dict(rx.counts)
    return {
        **window_row(before, after, speakers),
        "hear_everyone_s": warmup,
        "stream_buffer": stream.size,
        "consumer": args.consumer,
        "receiver_counts": counters,
    }


def stream_buffer(args: argparse.Namespace, speakers: int) -> int:
    """``--buffer``, or by default one second of everyone's frames (250 at least, 3000 at most).

    The API's default (250 frames) is five seconds of one member, but a quarter of a second of
    a hundred: a bot stalled that long would lose frames of the stream, not of the receive path.
    """
    if args.buffer:
        return int(args.buffer)
    return max(250, min(3000, FRAMES_PER_SECOND * speakers))


async def hear_everyone(counts: Counts, speakers: int, timeout: float = 30.0) -> float | None:  # noqa: ASYNC109
    """Waits until the consumer has frames of every speaker (their op 5 handled, DAVE opening
    their frames): the start of a call is not its steady state. Returns how long it took."""
    start = time.monotonic()
    if len(counts.by_user) >= speakers:
        return 0.0
    counts.want = speakers
    with trio.move_on_after(timeout):
        await counts.heard_all.wait()
        return time.monotonic() - start
    return None


# --- the three measurements -----------------------------------------------------------------


@dataclass
class Config:
    dave: str
    speakers: int


async def with_connection(
    config: Config, scratch: Path, limit: float, body: Any
) -> list[dict[str, Any]]:
    """A fresh simulator with ``config.speakers`` members, the bot joined, then ``body``."""
    with trio.fail_after(limit):
        started = time.monotonic()
        link, info = await open_sim(config.speakers, config.dave, scratch)
        setup = {"sim_ready_s": time.monotonic() - started}
        try:
            async with open_shard(
                info["bot_token"], intents=Intents.VOICE_DEFAULT, gateway_url=info["gateway_url"]
            ) as shard:
                joining = time.monotonic()
                async with voice_connection(
                    shard, info["guild_id"], info["channel_id"], timeout=60 + config.speakers
                ) as vc:
                    setup["join_s"] = time.monotonic() - joining
                    code = None
                    if config.dave == "required":
                        code = await wait_for_group(vc, link, 60.0 + config.speakers * 1.5)
                        setup["dave_group_s"] = time.monotonic() - joining - setup["join_s"]
                    print(
                        f"  (N={config.speakers} DAVE {config.dave}: "
                        + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in setup.items())
                        + f"; load average {os.getloadavg()[0]:.2f})",
                        flush=True,
                    )
                    rows: list[dict[str, Any]] = await body(vc, link, info)
                    for row in rows:
                        row["setup"] = setup
                        row["voice_privacy_code_agreed"] = code is not None
                        row["encryption_mode"] = vc.encryption_mode
                    return rows
        finally:
            await link.close()


async def run_matrix(
    config: Config, decodes: list[bool], args: argparse.Namespace, scratch: Path
) -> list[dict[str, Any]]:
    async def body(vc: VoiceConnection, link: SimLink, info: dict[str, Any]) -> list[dict]:
        rows = []
        base = {"mode": "matrix", "dave": config.dave, "n": config.speakers}
        if args.baseline:
            row = await measure_receive(vc, link, args, decode=decodes[-1], speakers=0)
            rows.append({**base, "decode": decodes[-1], "speaking": False, **row})
            emit_row(rows[-1])
        await link.call(f"speak {config.speakers}", "speaking")
        try:
            for decode in decodes:
                row = await measure_receive(vc, link, args, decode=decode, speakers=config.speakers)
                rows.append({**base, "decode": decode, "speaking": True, **row})
                emit_row(rows[-1])
        finally:
            with trio.move_on_after(10.0):
                await link.call("silence", "silent")
        return rows

    windows = (len(decodes) + args.baseline) * (args.seconds + args.skip + 5.0)
    return await with_connection(config, scratch, 180.0 + 2 * config.speakers + windows, body)


async def run_send_while_receiving(
    config: Config, args: argparse.Namespace, scratch: Path
) -> list[dict[str, Any]]:
    packets = encode_pcm(sine_pcm(1.0, hz=660.0), bitrate=64_000)
    decode = args.sw_decode == "on"

    async def body(vc: VoiceConnection, link: SimLink, info: dict[str, Any]) -> list[dict]:
        ssrc = vc.ssrc
        assert ssrc is not None
        rows = []
        base = {
            "mode": "send_while_receiving",
            "dave": config.dave,
            "n": config.speakers,
            "decode": decode,
        }
        async with (
            vc.receive(decode=decode, delay=args.delay) as rx,
            trio.open_nursery() as nursery,
        ):
            stream = rx.all(buffer=stream_buffer(args, config.speakers))
            counts = Counts()
            nursery.start_soon(consume, stream, counts, args.consumer == "batch")
            nursery.start_soon(vc.play, LoopedOpus(packets))
            await trio.sleep(args.skip)
            for speaking in (False, True):
                warmup = None
                if speaking:
                    await link.call(f"speak {config.speakers}", "speaking")
                    warmup = await hear_everyone(counts, config.speakers)
                    await trio.sleep(args.skip)
                send_before = vc.send_stats
                marked = await link.call(f"stream_mark {ssrc}", "stream_marked")
                before = await snapshot(vc, stream, counts, link)
                await trio.sleep(args.seconds)
                after = await snapshot(vc, stream, counts, link)
                report = await link.call(f"stream_report {ssrc}", "stream_report")
                send_after = vc.send_stats
                row = window_row(before, after, config.speakers if speaking else 0)
                rows.append(
                    {
                        **base,
                        "speaking": speaking,
                        **row,
                        "hear_everyone_s": warmup,
                        "bot_gaps": report["gaps"],
                        "bot_gap_p50_ms": report["p50_ms"],
                        "bot_gap_p99_ms": report["p99_ms"],
                        "bot_gap_max_ms": report["max_ms"],
                        "bot_lost": report["lost"] - marked["lost"],
                        "bot_packets": report["packets"] - marked["packets"],
                        "bot_clock": report["clock"],
                        "send_frames": send_after.frames_sent - send_before.frames_sent,
                        "send_skipped_late": send_after.skipped_late - send_before.skipped_late,
                        "send_stalls": send_after.stalls - send_before.stalls,
                        "send_gap_max_ms_connection": send_after.gap_max_ms,
                    }
                )
            with trio.move_on_after(10.0):
                await link.call("silence", "silent")
            nursery.cancel_scope.cancel()
        return rows

    limit = 180.0 + 2 * config.speakers + 2 * (args.seconds + 2 * args.skip + 5.0)
    return await with_connection(config, scratch, limit, body)


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y); None for fewer than two points."""
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def sample(start: float, start_cpu: float, sim: dict[str, Any], sim0: dict[str, Any]) -> dict:
    gc.collect()
    now = time.monotonic()
    return {
        "t_min": (now - start) / 60,
        "rss_mib": rss_mib(),
        "blocks": sys.getallocatedblocks(),
        "cpu_s": cpu_seconds() - start_cpu,
        "sim_frames_sent": sim["frames_sent"] - sim0["frames_sent"],
        "sim_cpu_share": (sim["cpu_s"] - sim0["cpu_s"]) / max(1e-9, sim["wall_s"] - sim0["wall_s"]),
    }


def directory_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())


async def run_record(config: Config, args: argparse.Namespace, scratch: Path) -> list[dict]:
    audio_format = args.record_format
    decode = audio_format == "wav" or args.record_decode == "on"

    async def body(vc: VoiceConnection, link: SimLink, info: dict[str, Any]) -> list[dict]:
        directory = Path(tempfile.mkdtemp(prefix="rcv-record-", dir=scratch))
        samples: list[dict[str, Any]] = []
        async with vc.receive(decode=decode, delay=args.delay) as rx:
            async with record(rx, directory, format=audio_format) as recording:
                await link.call(f"speak {config.speakers}", "speaking")
                await trio.sleep(args.skip)
                start, start_cpu = time.monotonic(), cpu_seconds()
                clock_start = trio.current_time()
                sim0 = await link.call("mark", "mark")
                samples.append(sample(start, start_cpu, sim0, sim0))
                print_sample(samples[-1], 0)
                count = math.floor(args.record_minutes * 60 / args.sample_every + 1e-6)
                for index in range(1, count + 1):
                    await trio.sleep_until(clock_start + index * args.sample_every)
                    sim = await link.call("mark", "mark")
                    samples.append(sample(start, start_cpu, sim, sim0))
                    samples[-1]["disk_mib"] = (
                        await trio.to_thread.run_sync(directory_bytes, directory) / 2**20
                    )
                    print_sample(samples[-1], len(samples) - 1)
                with trio.move_on_after(10.0):
                    await link.call("silence", "silent")
            stats = recording.stats
            stats_after = vc.receive_stats
        files = len(recording.files)
        disk = await trio.to_thread.run_sync(directory_bytes, directory)
        await trio.to_thread.run_sync(shutil.rmtree, directory, True)
        half = samples[0]["t_min"] + (samples[-1]["t_min"] - samples[0]["t_min"]) / 2
        second_half = [s for s in samples if s["t_min"] >= half - 1e-9]
        rss_slope = slope([(s["t_min"], s["rss_mib"]) for s in second_half])
        blocks_slope = slope([(s["t_min"], s["blocks"]) for s in second_half])
        return [
            {
                "mode": "record",
                "dave": config.dave,
                "n": config.speakers,
                "decode": decode,
                "format": audio_format,
                "minutes": args.record_minutes,
                "samples": samples,
                "rss_slope_mib_per_min": rss_slope,
                "rss_slope_mib_per_min_per_speaker": None
                if rss_slope is None
                else rss_slope / config.speakers,
                "blocks_slope_per_min": blocks_slope,
                "rss_growth_mib": samples[-1]["rss_mib"] - samples[0]["rss_mib"],
                "files": files,
                "disk_mib": disk / 2**20,
                "recorded_frames": sum(stats.frames.values()),
                "recorded_silence": sum(stats.silence.values()),
                "recorded_lost": sum(stats.lost.values()),
                "receive_dropped": dict(stats_after.dropped),
                "cpu_per_speaker_second": samples[-1]["cpu_s"]
                / (config.speakers * 60 * max(1e-9, samples[-1]["t_min"])),
            }
        ]

    limit = 180.0 + config.speakers + args.record_minutes * 60 + args.skip
    return await with_connection(config, scratch, limit, body)


# --- printing -------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


MATRIX_HEADER = (
    f"{'N':>4} {'DAVE':<8} {'decode':<6} {'CPU/spk-s':>10} {'target':>8} {'CPU/s':>7}"
    f" {'rcv/exp':>15} {'concl%':>6} {'drops':>5} {'strm':>5} {'stall':>6} {'sim CPU':>7}"
    f" {'sim sent':>8}"
    "  drops by reason"
)


def matrix_line(row: dict[str, Any]) -> str:
    speaking = row["speaking"]
    target = TARGETS[row["decode"]]
    per_speaker = row["cpu_per_speaker_second"]
    verdict = ""
    if speaking and row["n"] == TARGET_N and per_speaker is not None:
        verdict = "ok" if per_speaker <= target else "OVER"
    received = (
        f"{row['frames_received']}/{row['frames_expected']:.0f}"
        if speaking
        else f"{row['frames_received']}/0"
    )
    reasons = ",".join(f"{k}={v}" for k, v in row["dropped"].items()) or "-"
    kind = ("on" if row["decode"] else "off") if speaking else "idle"
    return (
        f"{row['n']:>4} {row['dave']:<8} {kind:<6}"
        f" {fmt(per_speaker, '.5f'):>10}"
        f" {(f'≤{target:g}' if speaking else '-'):>8} {row['cpu_per_second']:>7.4f}"
        f" {received:>15} {row['concealed_pct']:>6.2f} {row['dropped_total']:>5}"
        f" {row['stream_dropped']:>5} {row['tick_gap_max_ms']:>6.0f}"
        f" {fmt(100 * (row['sim_cpu_share'] or 0), '.0f'):>6}%"
        f" {fmt(100 * row['sim_sent_ratio'] if row['sim_sent_ratio'] else None, '.1f'):>7}%"
        f"  {reasons} {verdict}"
    )


def emit_row(row: dict[str, Any]) -> None:
    if row["mode"] == "matrix":
        print(matrix_line(row), flush=True)


SW_HEADER = (
    f"{'DAVE':<8} {'speakers':>8} {'decode':<6} {'gap p50':>8} {'p99':>7} {'max':>7} {'lost':>5}"
    f" {'sent':>5} {'late':>5} {'CPU/s':>7} {'rcv/exp':>15} {'concl%':>6} {'drops':>5}"
    f" {'sim CPU':>7}"
)


def sw_line(row: dict[str, Any]) -> str:
    speakers = row["n"] if row["speaking"] else 0
    return (
        f"{row['dave']:<8} {speakers:>8} {'on' if row['decode'] else 'off':<6}"
        f" {fmt(row['bot_gap_p50_ms'], '.2f'):>8} {fmt(row['bot_gap_p99_ms'], '.2f'):>7}"
        f" {fmt(row['bot_gap_max_ms'], '.2f'):>7} {row['bot_lost']:>5} {row['send_frames']:>5}"
        f" {row['send_skipped_late']:>5} {row['cpu_per_second']:>7.4f}"
        f" {row['frames_received']:>7}/{row['frames_expected']:<7.0f}"
        f" {row['concealed_pct']:>6.2f} {row['dropped_total']:>5}"
        f" {fmt(100 * (row['sim_cpu_share'] or 0), '.0f'):>6}%"
    )


def print_sample(s: dict[str, Any], index: int) -> None:
    if index == 0:
        print(
            f"  {'t min':>6} {'RSS MiB':>8} {'blocks':>9} {'disk MiB':>8} {'CPU s':>7}"
            f" {'sim sent':>9} {'sim CPU':>7}"
        )
    print(
        f"  {s['t_min']:>6.2f} {s['rss_mib']:>8.1f} {s['blocks']:>9} "
        f"{fmt(s.get('disk_mib'), '.1f'):>8} {s['cpu_s']:>7.2f} {s['sim_frames_sent']:>9}"
        f" {100 * s['sim_cpu_share']:>6.0f}%",
        flush=True,
    )


# --- main -----------------------------------------------------------------------------------


def parse_list(text: str, allowed: dict[str, Any]) -> list[Any]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part not in allowed:
            raise SystemExit(f"{part!r} is not one of {', '.join(allowed)}")
        values.append(allowed[part])
    return values


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    daves = parse_list(args.dave, {"off": "off", "required": "required"})
    decodes = parse_list(args.decode, {"off": False, "on": True})
    default_speakers = "10" if (args.send_while_receiving or args.record_minutes) else "1,10,100"
    speakers = [int(part) for part in (args.speakers or default_speakers).split(",") if part]
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="receive-cost-"))
    try:
        plans: list[tuple[str, Config]] = []
        if args.send_while_receiving:
            plans += [("send", Config(d, n)) for d in daves for n in speakers]
        if args.record_minutes:
            plans += [("record", Config(d, n)) for d in daves for n in speakers]
        if not plans:
            plans = [("matrix", Config(d, n)) for d in daves for n in speakers]
        current = ""
        for mode, config in plans:
            if mode != current:
                current = mode
                if mode == "matrix":
                    print(
                        f"\nCPU of the bot process per speaker-second over {args.seconds:g} s"
                        f" windows (after {args.skip:g} s warm-up); idle = receiver open,"
                        f" nobody speaking (CPU/s is per second). Targets at N={TARGET_N}:"
                        f" undecoded ≤ {TARGETS[False]}, decoded ≤ {TARGETS[True]}"
                        f" (Opus decoding alone ≈ {DECODE_FLOOR})."
                        " rcv/exp: frames out of rx.all() / N x 50 x window; drops: receive_stats"
                        " dropped in the window; strm: the stream's own drops; stall: the"
                        " longest wait (ms) between two ticks' frames at the reader (20 when"
                        " nothing stalls); sim sent: frames the simulator sent / its schedule."
                    )
                    print(MATRIX_HEADER, flush=True)
                elif mode == "send":
                    print(
                        f"\nThe bot's own stream (pre-encoded Opus) as the simulator received"
                        f" it, gaps in ms over {args.seconds:g} s, receiver open; late ="
                        " frames the sender skipped late"
                    )
                    print(SW_HEADER, flush=True)
            try:
                if mode == "matrix":
                    got = await run_matrix(config, decodes, args, scratch)
                elif mode == "send":
                    got = await run_send_while_receiving(config, args, scratch)
                    for row in got:
                        print(sw_line(row), flush=True)
                else:
                    print(
                        f"\nrecord({args.record_format}) for {args.record_minutes:g} min,"
                        f" {config.speakers} speakers, DAVE {config.dave}; a sample every"
                        f" {args.sample_every:g} s after gc.collect()",
                        flush=True,
                    )
                    got = await run_record(config, args, scratch)
                    for row in got:
                        per = row["rss_slope_mib_per_min_per_speaker"]
                        print(
                            "  slope over the second half: RSS"
                            f" {fmt(row['rss_slope_mib_per_min'], '+.3f')}"
                            f" MiB/min ({fmt(per, '+.4f')} per speaker), blocks"
                            f" {fmt(row['blocks_slope_per_min'], '+.0f')}/min; growth"
                            f" {row['rss_growth_mib']:+.1f} MiB; {row['files']} files,"
                            f" {row['disk_mib']:.1f} MiB on disk, {row['recorded_frames']}"
                            f" frames, {row['recorded_lost']} lost, receive drops"
                            f" {sum(row['receive_dropped'].values())}; CPU"
                            f" {row['cpu_per_speaker_second']:.5f} per speaker-second",
                            flush=True,
                        )
                rows.extend(got)
            except Exception as exc:  # one failed configuration does not stop the others
                failures.append(
                    {"mode": mode, "dave": config.dave, "n": config.speakers, "error": repr(exc)}
                )
                print(
                    f"{mode} DAVE={config.dave} N={config.speakers} FAILED: {exc!r}"[:600],
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "targets_cpu_per_speaker_second_at_n100": {
            "undecoded": TARGETS[False],
            "decoded": TARGETS[True],
        },
        "settings": {
            "seconds": args.seconds,
            "skip": args.skip,
            "delay": args.delay,
            "buffer": args.buffer,
            "member_opus": "1 s of 440 Hz sine, 64 kbps, looped",
        },
        "rows": rows,
        "failures": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--speakers",
        default="",
        help="speaker counts, comma-separated (matrix: 1,10,100; the other modes: 10)",
    )
    parser.add_argument("--decode", default="off,on", help="off,on (matrix)")
    parser.add_argument("--dave", default="off,required", help="off,required")
    parser.add_argument("--seconds", type=float, default=10.0, help="each measured window")
    parser.add_argument("--skip", type=float, default=1.0, help="warm-up before each window")
    parser.add_argument("--delay", type=float, default=0.1, help="vc.receive(delay=...)")
    parser.add_argument(
        "--buffer",
        type=int,
        default=0,
        help="rx.all(buffer=...); default one second of every speaker's frames (250 to 3000)",
    )
    parser.add_argument(
        "--consumer",
        choices=("iter", "batch"),
        default="iter",
        help="the rx.all() reader: async for per frame, or every waiting frame per wake-up",
    )
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="no idle row (matrix)"
    )
    parser.add_argument(
        "--send-while-receiving",
        action="store_true",
        help="the bot plays while nobody / --speakers speak; the simulator's gaps of its stream",
    )
    parser.add_argument("--sw-decode", choices=("off", "on"), default="on")
    parser.add_argument(
        "--record-minutes", type=float, default=0.0, help="record for M minutes; memory series"
    )
    parser.add_argument("--record-format", choices=("ogg", "wav"), default="ogg")
    parser.add_argument(
        "--record-decode",
        choices=("off", "on"),
        default="off",
        help="decode while recording ogg (wav always decodes)",
    )
    parser.add_argument("--sample-every", type=float, default=30.0, help="record mode (s)")
    parser.add_argument("--json", default="", help="write the rows here")
    args = parser.parse_args()
    output = trio.run(main_async, args)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(output, indent=1))
        print(f"wrote {path}")
    return 1 if output["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
