"""``python -m discore_voice.testing``: a local Discord for bots in other processes or languages.

It prints one JSON line with everything a client needs (addresses, the bot token, a guild, its
voice channel and the simulated members in it), so a script can read it from the pipe, then
serves until interrupted. Members listen (``--listeners``) or speak a tone (``--speakers``);
on exit it prints, as one more JSON line, what each member heard from the bot (and writes it to
WAV files with ``--save``). While it runs, lines on stdin inject the faults the Python API can
(``help`` lists them); each is answered with a JSON line on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import trio

from .._audio.signals import sine_pcm
from ._control import serve_control
from ._members import DEFAULT_HISTORY, SimMember, encode_pcm
from ._sim import LocalDiscord, open_local_discord

__all__ = ["MAX_MEMBERS", "main"]

#: Members the command line may add: a channel's worth, as Discord's limit for one is 99.
MAX_MEMBERS: Final = 99


def _parser(prog: str = "python -m discore_voice.testing") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run a local Discord simulator (main gateway v10, REST, voice gateway v8 and UDP "
            "media) and print its addresses and the default bot's credentials as one JSON line. "
            "Stop it with Ctrl-C."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="gateway port (default: any free one)")
    parser.add_argument("--api-port", type=int, default=0, help="REST port (default: any free one)")
    parser.add_argument(
        "--tls", action="store_true", help="serve wss:// and https:// with a new CA"
    )
    parser.add_argument(
        "--heartbeat-interval", type=int, default=41250, help="Hello's interval in ms"
    )
    parser.add_argument(
        "--server-update-first",
        action="store_true",
        help="send VOICE_SERVER_UPDATE before VOICE_STATE_UPDATE",
    )
    parser.add_argument(
        "--dave",
        choices=("off", "optional", "required"),
        default="required",
        help="DAVE end-to-end encryption (default: required, as Discord since 2026-03-01)",
    )
    parser.add_argument(
        "--listeners",
        type=_count,
        default=1,
        help="simulated members listening in the voice channel (default 1)",
    )
    parser.add_argument(
        "--speakers",
        type=_count,
        default=0,
        help="simulated members speaking a tone without pause (default 0)",
    )
    parser.add_argument(
        "--save",
        type=Path,
        help="on exit, write what each member heard from the bot to DIR/<name>.wav "
        "(members then keep every packet they hear)",
        metavar="DIR",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    return parser


def _count(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_MEMBERS:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_MEMBERS}")
    return value


async def _serve(args: argparse.Namespace) -> None:
    async with open_local_discord(
        tls=args.tls,
        host=args.host,
        gateway_port=args.port,
        api_port=args.api_port,
        heartbeat_interval=args.heartbeat_interval,
        voice_events_order=("server", "state") if args.server_update_first else ("state", "server"),
        dave=args.dave,
    ) as discord:
        guild = discord.add_guild(name="discore-sim")
        channel = guild.add_voice_channel(name="voice")
        history = None if args.save is not None else DEFAULT_HISTORY
        members = {
            f"listener-{i + 1}": discord.add_voice_member(
                guild.id, channel.id, name=f"listener-{i + 1}", history=history
            )
            for i in range(args.listeners)
        }
        speakers = {
            f"speaker-{i + 1}": discord.add_voice_member(
                guild.id, channel.id, name=f"speaker-{i + 1}", history=0
            )
            for i in range(args.speakers)
        }
        info: dict[str, object] = {
            "gateway_url": discord.gateway_url,
            "api_url": discord.api_url,
            "bot_token": discord.bot.token,
            "bot_user_id": str(discord.bot.user_id),
            "application_id": str(discord.bot.application_id),
            "guild_id": str(guild.id),
            "voice_channel_id": str(channel.id),
            "ca_pem_path": str(discord.ca_pem_path) if discord.tls else None,
            "members": {name: str(m.user_id) for name, m in {**members, **speakers}.items()},
        }
        print(json.dumps(info), flush=True)
        try:
            async with trio.open_nursery() as nursery:
                for index, speaker in enumerate(speakers.values()):
                    nursery.start_soon(_speak_forever, speaker, 330.0 + 110.0 * index)
                nursery.start_soon(serve_control, discord, guild.id, channel.id)
                await _until_signal()
                nursery.cancel_scope.cancel()
        finally:
            print(json.dumps({"heard": _heard(discord, members, args.save)}), flush=True)


async def _until_signal() -> None:
    # Ctrl-C and SIGTERM end the block like any other exit, so every socket is closed and no
    # KeyboardInterrupt traceback reaches the user.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logging.getLogger("discore_voice.testing").info("signal %d: stopping", signum)
            return


async def _speak_forever(member: SimMember, hz: float) -> None:
    frames = encode_pcm(sine_pcm(1.0, hz=hz), bitrate=64_000)
    await member.speak_opus(itertools.cycle(frames))


def _heard(discord: LocalDiscord, members: dict[str, SimMember], save: Path | None) -> list[object]:
    """What each listener heard from the bot: frames, seconds, and the WAV written."""
    report: list[object] = []
    bot = discord.bot.user_id
    for name, member in members.items():
        entry: dict[str, object] = {
            "member": name,
            "frames": member.frames_heard,
            "seconds": round(member.frames_heard * 0.02, 2),
        }
        recording = member.heard.get(bot)
        if save is not None and recording is not None:
            save.mkdir(parents=True, exist_ok=True)
            path = save / f"{name}.wav"
            recording.write_wav(path)
            entry["wav"] = str(path)
        report.append(entry)
    return report


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    args = (_parser(prog) if prog else _parser()).parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        trio.run(_serve, args)
    except* KeyboardInterrupt:
        pass  # Ctrl-C during start-up, before the signal receiver is installed.
    return 0


if __name__ == "__main__":
    sys.exit(main())
