"""receive_cost.py's simulator process: the local Discord and N members who speak to the bot.

It creates one guild with one voice channel and ``--members`` simulated members in it (not
listening, no per-packet history, so a long run stays bounded), prints one JSON line with what
the bot needs, then obeys commands on stdin, one per line, answering each with one JSON line:

``codes``
    the members' DAVE voice privacy codes (distinct values; ``null`` for a member without one).
``speak K``
    the first K members announce Speaking (op 5) and then send pre-encoded Opus (one second of
    a tone, encoded once here, looped) on one absolute 20 ms schedule. ONE task sends every
    speaking member's frame each tick: a task per member would cost this process more than the
    bot at N=100. If the process falls more than five ticks behind, the missed ticks are skipped
    (counted) instead of being sent in a burst.
``silence``
    the speakers send five silence frames each and announce Speaking 0, as a client does.
``mark``
    counters since the start: this process's CPU seconds, frames sent, ticks, late and skipped
    ticks and the worst lateness since the previous mark; the benchmark takes differences.
``stream_mark SSRC`` / ``stream_report SSRC``
    the inter-arrival gaps of the bot's own stream (SSRC) as this media server stamped them
    (kernel receive timestamps), from the mark to the report: count, p50, p99, max in ms,
    packets lost, silence frames.
``quit`` (or EOF)
    stop. SIGINT is ignored: a Ctrl-C reaches the bot too, which leaves the call and then ends
    this process (EOF, or a kill after five seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
from typing import Any

import trio

from discore_voice import OPUS_SILENCE_FRAME, SpeakingFlags
from discore_voice._audio.signals import sine_pcm
from discore_voice.testing import Recording, SimMember, open_local_discord
from discore_voice.testing._members import encode_pcm

FRAME_S = 0.02
#: Behind by more than this many ticks, the sender skips ahead instead of bursting.
MAX_BEHIND_TICKS = 5
#: A tick that starts later than this counts as late.
LATE_TICK_S = 0.005
SILENCE_TAIL = 5


def _no_recording(self: Recording, packet: object) -> None:
    """Recording.add, switched off: nothing here reads the bot's packets back."""


Recording.add = _no_recording  # type: ignore[method-assign,assignment]


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile_ms(ordered: list[int], fraction: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index] / 1e6


class Speakers:
    """The one task that sends every speaking member's frame on each 20 ms tick."""

    def __init__(self, members: list[SimMember], frames: list[bytes]) -> None:
        self.members = members
        self.frames = frames
        self.speaking: list[SimMember] = []
        self.silence_left = 0
        self.quiet = trio.Event()
        self.frames_sent = 0
        self.ticks = 0
        self.ticks_late = 0
        self.ticks_skipped = 0
        self.max_late_s = 0.0
        self._wake = trio.Event()

    def speak(self, count: int) -> None:
        self.speaking = self.members[:count]
        self.silence_left = 0
        for member in self.speaking:
            member.set_speaking(SpeakingFlags.MICROPHONE)
        self._wake.set()

    def silence(self) -> trio.Event:
        self.quiet = trio.Event()
        if not self.speaking:
            self.quiet.set()
        else:
            self.silence_left = SILENCE_TAIL
        return self.quiet

    async def run(self) -> None:
        frames = self.frames
        count = len(frames)
        while True:
            if not self.speaking:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            start = trio.current_time()
            tick = 0
            while self.speaking:
                tick += 1
                target = start + tick * FRAME_S
                now = trio.current_time()
                if now < target:
                    await trio.sleep_until(target)
                    now = trio.current_time()
                else:
                    await trio.lowlevel.checkpoint()
                late = now - target
                if late > MAX_BEHIND_TICKS * FRAME_S:
                    skip = int(late / FRAME_S)
                    self.ticks_skipped += skip
                    tick += skip
                    late -= skip * FRAME_S
                self.max_late_s = max(self.max_late_s, late)
                self.ticks_late += late > LATE_TICK_S
                self.ticks += 1
                if self.silence_left:
                    for member in self.speaking:
                        member.send_opus(OPUS_SILENCE_FRAME)
                    self.silence_left -= 1
                    if not self.silence_left:
                        for member in self.speaking:
                            member.set_speaking(0)
                        self.speaking = []
                        self.quiet.set()
                    continue
                for index, member in enumerate(self.speaking):
                    member.send_opus(frames[(tick + index) % count])
                self.frames_sent += len(self.speaking)


async def serve(args: argparse.Namespace) -> None:
    frames = encode_pcm(sine_pcm(1.0, hz=args.hz), bitrate=args.bitrate)
    async with open_local_discord(dave=args.dave) as discord:
        guild = discord.add_guild(name="receive-cost")
        channel = guild.add_voice_channel(name="voice")
        members = [
            discord.add_voice_member(
                guild.id, channel.id, name=f"m{index}", listen=False, history=0
            )
            for index in range(args.members)
        ]
        speakers = Speakers(members, frames)
        stream_marks: dict[int, int] = {}
        emit(
            "ready",
            gateway_url=discord.gateway_url,
            bot_token=discord.bot.token,
            guild_id=str(guild.id),
            channel_id=str(channel.id),
            members=[str(member.user_id) for member in members],
            frame_bytes_mean=sum(map(len, frames)) / len(frames),
            clock=discord.voice.media.clock,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(speakers.run)
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            pending = b""
            while True:
                chunk = await stdin.receive_some(4096)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                stop = False
                for line in lines:
                    command, *rest = line.decode().split() or [""]
                    if command == "quit":
                        stop = True
                        break
                    if command == "codes":
                        emit("codes", codes=sorted({str(m.voice_privacy_code) for m in members}))
                    elif command == "speak":
                        speakers.speak(int(rest[0]))
                        emit("speaking", speakers=len(speakers.speaking))
                    elif command == "silence":
                        quiet = speakers.silence()
                        with trio.move_on_after(5.0):
                            await quiet.wait()
                        emit("silent", ok=quiet.is_set())
                    elif command == "mark":
                        stats = discord.voice.media.stats
                        emit(
                            "mark",
                            cpu_s=cpu_seconds(),
                            wall_s=time.monotonic(),
                            frames_sent=speakers.frames_sent,
                            ticks=speakers.ticks,
                            ticks_late=speakers.ticks_late,
                            ticks_skipped=speakers.ticks_skipped,
                            max_late_ms=speakers.max_late_s * 1000,
                            relayed=stats.relayed,
                            send_failed=stats.drops.get("send_failed", 0),
                        )
                        speakers.max_late_s = 0.0
                    elif command == "stream_mark":
                        ssrc = int(rest[0])
                        stream = discord.voice.media.stats.stream(ssrc)
                        stream_marks[ssrc] = len(stream.gaps_ns)
                        emit(
                            "stream_marked",
                            packets=stream.packets,
                            lost=stream.lost,
                            silence_frames=stream.silence_frames,
                        )
                    elif command == "stream_report":
                        ssrc = int(rest[0])
                        stream = discord.voice.media.stats.stream(ssrc)
                        gaps = sorted(stream.gaps_ns[stream_marks.get(ssrc, 0) :])
                        emit(
                            "stream_report",
                            gaps=len(gaps),
                            p50_ms=percentile_ms(gaps, 0.50),
                            p99_ms=percentile_ms(gaps, 0.99),
                            max_ms=gaps[-1] / 1e6 if gaps else None,
                            packets=stream.packets,
                            lost=stream.lost,
                            silence_frames=stream.silence_frames,
                            clock=stream.clock,
                        )
                    else:
                        emit("error", message=f"unknown command {command!r}")
                if stop:
                    break
            nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--dave", choices=("off", "required"), default="off")
    parser.add_argument("--hz", type=float, default=440.0)
    parser.add_argument("--bitrate", type=int, default=64_000)
    # Ctrl-C reaches the whole process group: the bot must still be able to leave the call
    # cleanly, so this process ends when the bot says so, closes its stdin, or kills it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    trio.run(serve, parser.parse_args())


if __name__ == "__main__":
    main()
