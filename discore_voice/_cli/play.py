"""``discore-voice play``: play a file into a real voice channel through the real gateway."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import trio

from .._audio.sources import AudioSource, open_audio_file
from .._shell.voice.connection import VoiceConnection
from .joining import TOKEN_VARIABLE, Target, add_channel_arguments, joined, say, target_of

__all__ = ["add_parser"]

FRAME_SECONDS = 0.02


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "play",
        help="play an audio file into a voice channel (token from DISCORD_TOKEN)",
        description="Join a voice channel and play FILE: Ogg Opus passes through untouched, "
        "other formats are decoded with the 'av' extra. The bot token is read from the "
        f"{TOKEN_VARIABLE} environment variable. Ctrl-C leaves the channel cleanly.",
    )
    parser.add_argument("file", type=Path, help="the audio file to play")
    add_channel_arguments(parser)
    parser.add_argument(
        "--volume",
        type=float,
        default=1.0,
        help="gain (default 1.0); an Ogg Opus file is then decoded, scaled and re-encoded",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    target = target_of(args)
    source = open_audio_file(args.file, volume=args.volume)
    trio.run(_play, target, source)
    return 0


async def _play(target: Target, source: AudioSource) -> None:
    async with joined(target) as vc:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_show_progress, vc, source.name)
            frames = (await vc.play(source)).frames
            nursery.cancel_scope.cancel()
        say(f"\nplayed {frames * FRAME_SECONDS:.1f} s of {source.name}; leaving")


async def _show_progress(vc: VoiceConnection, name: str) -> None:
    while True:
        await trio.sleep(0.5)
        if sys.stderr.isatty():
            played = vc.send_stats.frames_sent * FRAME_SECONDS
            print(f"\rplaying {name}: {played:6.1f} s", end="", file=sys.stderr, flush=True)
