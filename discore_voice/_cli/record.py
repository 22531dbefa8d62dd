"""``discore-voice record``: join a voice channel and write one file per member until stopped.

A live line says who is speaking; Ctrl-C (or ``--seconds``) ends the recording, closes every
file so it plays, and leaves the channel.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import trio

from .._core.receive.events import SpeakingStarted, SpeakingStopped
from .._errors import UsageError
from .._shell.voice.receive.receiver import VoiceReceiver
from .._shell.voice.receive.recorder import Recording, record
from .joining import TOKEN_VARIABLE, Target, add_channel_arguments, joined, say, target_of

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "record",
        help="record a voice channel, one file per member (token from DISCORD_TOKEN)",
        description="Join a voice channel and record everyone heard into DIR: <user id>.ogg "
        "(Opus as sent, no re-encoding) or .wav, all aligned, silence filled in. The bot "
        f"token is read from the {TOKEN_VARIABLE} environment variable. Ctrl-C ends the "
        "recording cleanly.",
    )
    add_channel_arguments(parser)
    parser.add_argument(
        "--out", type=Path, default=Path("recording"), help="directory (default ./recording)"
    )
    parser.add_argument("--format", choices=("ogg", "wav"), default="ogg")
    parser.add_argument("--mixed", action="store_true", help="also write mixed.wav")
    parser.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    target = target_of(args)
    seconds = args.seconds
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise UsageError("--seconds must be a positive number")
    recording = trio.run(_record, target, args.out, args.format, args.mixed, seconds)
    for user_id, path in sorted(recording.files.items(), key=lambda item: str(item[0])):
        print(f"{user_id}\t{path}")
    say(f"recorded {recording.seconds:.1f} s into {args.out}")
    return 0


async def _record(
    target: Target, out: Path, audio_format: str, mixed: bool, seconds: float | None
) -> Recording:
    wav = audio_format == "wav"
    async with (
        joined(target) as vc,
        vc.receive(decode=wav or mixed) as rx,
        record(rx, out, format="wav" if wav else "ogg", mixed=mixed) as recording,
    ):
        say(f"recording into {out} (Ctrl-C to stop)")
        with trio.move_on_after(math.inf if seconds is None else seconds):
            await _show_speakers(rx)
    return recording


async def _show_speakers(rx: VoiceReceiver) -> None:
    """Until cancelled: a live line of who is speaking, on a terminal."""
    speaking: set[int] = set()
    async for event in rx.speaking():
        if isinstance(event, SpeakingStarted):
            speaking.add(event.user_id)
        elif isinstance(event, SpeakingStopped):
            speaking.discard(event.user_id)
        if sys.stderr.isatty():
            who = ", ".join(str(u) for u in sorted(speaking)) or "nobody"
            print(f"\r\033[Kspeaking: {who}", end="", file=sys.stderr, flush=True)
    await trio.sleep_forever()  # the connection ended: wait for Ctrl-C or --seconds
