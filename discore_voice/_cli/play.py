"""``discore-voice play``: play a file into a real voice channel through the real gateway.

The token comes from ``DISCORD_TOKEN`` only, never a flag, so it stays out of shell history and
process listings. Everything a bot author can get wrong (the token, the intents, the ids, the
file, davey) ends in one sentence that says what to do.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import trio

from .._audio.sources import open_audio_file
from .._core.gateway.errors import AuthenticationFailed, DisallowedIntents
from .._core.gateway.intents import Intents
from .._core.snowflake import validate_snowflake
from .._core.voice.events import InvalidationReason
from .._errors import UsageError
from .._shell.shard.connection import DEFAULT_GATEWAY_URL, open_shard
from .._shell.voice.connection import VoiceConnectionFailed, voice_connection

__all__ = ["add_parser"]

TOKEN_VARIABLE = "DISCORD_TOKEN"
GATEWAY_VARIABLE = "DISCORE_VOICE_GATEWAY_URL"
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
    parser.add_argument("--guild", required=True, help="the guild (server) id")
    parser.add_argument("--channel", required=True, help="the voice channel id")
    parser.add_argument(
        "--gateway-url",
        default=os.environ.get(GATEWAY_VARIABLE, DEFAULT_GATEWAY_URL),
        help=f"the main gateway (default: Discord's, or ${GATEWAY_VARIABLE})",
    )
    parser.add_argument(
        "--ca-file", type=Path, help="trust this CA too (for a local Discord served with TLS)"
    )
    parser.add_argument(
        "--volume", type=float, default=1.0, help="gain for decoded audio (default 1.0)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the join (default 30)"
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise UsageError(f"set {TOKEN_VARIABLE} to the bot's token (it is never read from a flag)")
    guild_id = validate_snowflake(args.guild, name="--guild")
    channel_id = validate_snowflake(args.channel, name="--channel")
    source = open_audio_file(args.file, volume=args.volume)
    ssl_context = None
    if args.ca_file is not None:
        ssl_context = ssl.create_default_context(cafile=str(args.ca_file))
    trio.run(_play, token, guild_id, channel_id, source, args, ssl_context)
    return 0


async def _play(
    token: str,
    guild_id: int,
    channel_id: int,
    source: Any,
    args: argparse.Namespace,
    ssl_context: ssl.SSLContext | None,
) -> None:
    try:
        async with open_shard(
            token,
            intents=Intents.VOICE_DEFAULT,
            gateway_url=args.gateway_url,
            ssl_context=ssl_context,
        ) as shard:
            _say(f"logged in as {shard.user_id}; joining channel {channel_id}")
            async with voice_connection(
                shard, guild_id, channel_id, timeout=args.timeout, ssl_context=ssl_context
            ) as vc:
                _say(f"connected ({vc.encryption_mode}, DAVE v{vc.dave_protocol_version})")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_show_progress, vc, source.name)
                    frames = await vc.play(source)
                    nursery.cancel_scope.cancel()
                _say(f"\nplayed {frames * FRAME_SECONDS:.1f} s of {source.name}; leaving")
    except AuthenticationFailed as exc:
        raise UsageError(f"Discord rejected the token in {TOKEN_VARIABLE}") from exc
    except DisallowedIntents as exc:
        raise UsageError(
            "the bot may not use the intents it asked for; enable them for the application in "
            "the Discord developer portal"
        ) from exc
    except VoiceConnectionFailed as exc:
        raise UsageError(_explain_failure(exc, guild_id, channel_id)) from exc


def _explain_failure(exc: VoiceConnectionFailed, guild_id: int, channel_id: int) -> str:
    if exc.reason is InvalidationReason.TIMED_OUT:
        return (
            f"no answer to joining channel {channel_id} in guild {guild_id}: check that both ids "
            "exist, that the bot is in the guild and can see and join the channel, and that the "
            "channel is not full"
        )
    return str(exc)


async def _show_progress(vc: Any, name: str) -> None:
    while True:
        await trio.sleep(0.5)
        if sys.stderr.isatty():
            played = vc.send_stats.frames_sent * FRAME_SECONDS
            print(f"\rplaying {name}: {played:6.1f} s", end="", file=sys.stderr, flush=True)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
