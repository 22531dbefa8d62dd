"""``discore-voice demo``: the main job, end to end, with no token and no network.

It runs the local Discord in-process with DAVE required and two listening members, connects a bot
through the real ``open_shard`` → ``voice_connection`` path, plays a generated clip, and checks
what each member decrypted and decoded against the source. Then the members speak, each a tone
of its own, and the bot listens (``vc.receive()``): what it decrypted and decoded of each member
is checked against what that member said. A newcomer sees the whole library work in one command;
CI runs it as a smoke test, so it exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .._audio.signals import channel, find_alignment, melody_pcm, sine_pcm
from .._audio.sources import PcmSource
from .._core.gateway.intents import Intents
from .._core.receive.events import ReceivedAudio
from .._core.speaking import OPUS_SILENCE_FRAME
from .._core.voice.dave import DaveStateChanged
from .._shell.shard.connection import open_shard
from .._shell.voice.connection import VoiceConnection
from ..testing import SimMember, open_local_discord

__all__ = ["add_parser"]

#: Below this, the decoded audio is not the clip (a codec round trip of the clip scores > 0.95).
MATCH_THRESHOLD = 0.9
MEMBERS = ("alice", "bob")
#: What each member says to the bot, and for how long.
SPEECH_TONES = (330.0, 550.0)
SPEECH_SECONDS = 1.0
FRAME_SECONDS = 0.02


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="play a clip on a local Discord with DAVE and check what two members heard",
        description="Start the local Discord (DAVE required, two listening members), join its "
        "voice channel through open_shard and voice_connection, play a generated clip, and "
        "report what the members decrypted. Needs no token and no network.",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the clip (default 3)")
    parser.add_argument(
        "--wav",
        type=Path,
        default=Path("discore-voice-demo.wav"),
        help="where to save what the first member heard (default ./discore-voice-demo.wav)",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if not 0.5 <= args.seconds <= 60:
        print("discore-voice demo: error: --seconds must be between 0.5 and 60", file=sys.stderr)
        return 2
    report = trio.run(_demo, args.seconds, args.wav.resolve())
    print(report.render())
    return 0 if report.ok else 1


@dataclass
class _MemberReport:
    name: str
    frames_heard: int
    frames_decrypted: int
    decrypt_failures: int
    gap_p50_ms: float
    gap_p99_ms: float
    correlation: float
    epoch: int | None
    privacy_code: str | None


@dataclass
class _HeardReport:
    """What the bot heard of one member."""

    name: str
    frames: int
    concealed: int
    correlation: float


@dataclass
class _Report:
    handshake_ms: float
    mode: str | None
    dave_version: int
    epoch: int | None
    privacy_code: str | None
    frames_sent: int
    members: list[_MemberReport]
    heard: list[_HeardReport]
    wav: Path

    @property
    def ok(self) -> bool:
        return (
            self.dave_version >= 1
            and self.privacy_code is not None
            and all(
                member.correlation >= MATCH_THRESHOLD
                and member.frames_decrypted >= self.frames_sent * 0.95
                and member.privacy_code == self.privacy_code
                and member.epoch == self.epoch
                for member in self.members
            )
            and all(h.correlation >= MATCH_THRESHOLD for h in self.heard)
        )

    def render(self) -> str:
        lines = [
            "",
            "discore-voice demo: a bot on the local Discord, DAVE required",
            f"  handshake        {self.handshake_ms:.1f} ms",
            f"  transport        {self.mode}",
            f"  DAVE             protocol v{self.dave_version}, epoch {self.epoch}",
            f"  privacy code     {_group(self.privacy_code)}",
            f"  frames sent      {self.frames_sent}",
        ]
        for m in self.members:
            verdict = "matches the source" if m.correlation >= MATCH_THRESHOLD else "DOES NOT MATCH"
            lines.append(
                f"  {m.name:<6} heard {m.frames_heard}, decrypted {m.frames_decrypted} "
                f"({m.decrypt_failures} failed), gap p50 {m.gap_p50_ms:.1f} ms "
                f"p99 {m.gap_p99_ms:.1f} ms, correlation {m.correlation:.3f}: {verdict}"
            )
        for h in self.heard:
            verdict = "matches" if h.correlation >= MATCH_THRESHOLD else "DOES NOT MATCH"
            lines.append(
                f"  bot heard {h.name:<6} {h.frames} frames through DAVE ({h.concealed} "
                f"concealed), correlation {h.correlation:.3f}: {verdict} what {h.name} said"
            )
        lines.append(f"  saved what {self.members[0].name} heard to {self.wav}")
        lines.append("  result           " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def _group(code: str | None) -> str:
    if not code:
        return "(none)"
    return " ".join(code[i : i + 5] for i in range(0, len(code), 5))


async def _demo(seconds: float, wav: Path) -> _Report:
    clip = melody_pcm(seconds)
    async with open_local_discord(dave="required") as discord:
        guild = discord.add_guild(name="discore-voice demo")
        stage = guild.add_voice_channel(name="Stage")
        members = [discord.add_voice_member(guild.id, stage.id, name=name) for name in MEMBERS]
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            connection = VoiceConnection(shard, guild.id)
            events = connection.subscribe()
            started = trio.current_time()
            async with connection.connect(stage.id, timeout=30) as vc:
                handshake_ms = (trio.current_time() - started) * 1000
                with trio.fail_after(30):
                    await _wait_until_end_to_end_encrypted(events, vc)
                _progress(0, seconds)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_show_progress, vc, seconds)
                    end = await vc.play(PcmSource.from_bytes(clip, name="demo clip"))
                    frames_sent = end.frames
                    nursery.cancel_scope.cancel()
                _progress(seconds, seconds, done=True)
                with trio.fail_after(10):
                    await discord.voice.wait_for(
                        lambda: all(m.frames_heard >= frames_sent for m in members)
                    )
                report = _Report(
                    handshake_ms=handshake_ms,
                    mode=vc.encryption_mode,
                    dave_version=vc.dave_protocol_version,
                    epoch=vc.dave_epoch,
                    privacy_code=vc.voice_privacy_code,
                    frames_sent=frames_sent,
                    members=[
                        _member_report(m, name, clip)
                        for m, name in zip(members, MEMBERS, strict=True)
                    ],
                    heard=[],
                    wav=wav,
                )
                members[0].heard[discord.bot.user_id].write_wav(wav)
                with trio.fail_after(30):
                    report.heard = await _listen(vc, members)
    return report


async def _listen(vc: VoiceConnection, members: list[SimMember]) -> list[_HeardReport]:
    """Each member says a tone of its own; the bot hears them apart, through DAVE."""
    said = {
        member.user_id: sine_pcm(SPEECH_SECONDS, hz=hz)
        for member, hz in zip(members, SPEECH_TONES, strict=True)
    }
    frames = round(SPEECH_SECONDS / FRAME_SECONDS)
    heard: dict[int, list[ReceivedAudio]] = {}
    _say(f"listening: {', '.join(MEMBERS)} speak for {SPEECH_SECONDS:.1f} s")
    async with vc.receive() as rx:
        streams = {member.user_id: rx.user(member.user_id) for member in members}
        async with trio.open_nursery() as nursery:
            for member in members:
                nursery.start_soon(member.speak_pcm, said[member.user_id])
        for user_id, stream in streams.items():
            got = heard[user_id] = []
            async for frame in stream:
                if frame.opus != OPUS_SILENCE_FRAME:
                    got.append(frame)
                if len(got) >= frames:
                    break
    reports = []
    for member, name in zip(members, MEMBERS, strict=True):
        got = heard[member.user_id]
        pcm = b"".join(frame.pcm or b"" for frame in got)
        match = find_alignment(channel(said[member.user_id]), channel(pcm), max_lag=4_000)
        concealed = sum(frame.concealed for frame in got)
        reports.append(_HeardReport(name, len(got), concealed, match.correlation))
    return reports


async def _wait_until_end_to_end_encrypted(events: Any, vc: VoiceConnection) -> None:
    if vc.voice_privacy_code is not None:
        return
    async for event in events:
        if isinstance(event, DaveStateChanged) and event.can_encrypt:
            return


def _member_report(member: SimMember, name: str, clip: bytes) -> _MemberReport:
    (recording,) = member.heard.values()
    (stats,) = member.heard_stats.values()
    match = find_alignment(channel(clip), channel(recording.pcm()), max_lag=4_000)
    return _MemberReport(
        name=name,
        frames_heard=member.frames_heard,
        frames_decrypted=member.frames_decrypted,
        decrypt_failures=member.dave_decrypt_failures,
        gap_p50_ms=stats.gap_p50_ms,
        gap_p99_ms=stats.gap_p99_ms,
        correlation=match.correlation,
        epoch=member.epoch,
        privacy_code=member.voice_privacy_code,
    )


async def _show_progress(vc: VoiceConnection, seconds: float) -> None:
    while True:
        await trio.sleep(0.1)
        _progress(vc.send_stats.frames_sent * FRAME_SECONDS, seconds, live=True)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _progress(played: float, total: float, *, done: bool = False, live: bool = False) -> None:
    width = 30
    filled = min(width, round(width * played / total))
    bar = "#" * filled + "-" * (width - filled)
    line = f"playing [{bar}] {min(played, total):4.1f}/{total:.1f} s"
    if sys.stderr.isatty():
        print("\r" + line, end="\n" if done else "", file=sys.stderr, flush=True)
    elif not live:
        # Not a terminal (CI, a pipe): the start and the end, not a line every 100 ms.
        print(line, file=sys.stderr, flush=True)
