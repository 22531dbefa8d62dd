"""``python -m discore_voice.testing``: a local Discord for bots in other processes or languages.

It prints one JSON line with everything a client needs (addresses, the bot token, a guild and
its voice channel), so a script can read it from the pipe, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from ._sim import open_local_discord

__all__ = ["main"]


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
        help="DAVE end-to-end encryption, as Discord requires it since 2026-03-01 (default)",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    return parser


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
        info: dict[str, object] = {
            "gateway_url": discord.gateway_url,
            "api_url": discord.api_url,
            "bot_token": discord.bot.token,
            "bot_user_id": str(discord.bot.user_id),
            "application_id": str(discord.bot.application_id),
            "guild_id": str(guild.id),
            "voice_channel_id": str(channel.id),
            "ca_pem_path": str(discord.ca_pem_path) if discord.tls else None,
        }
        print(json.dumps(info), flush=True)
        # Ctrl-C and SIGTERM end the block like any other exit, so every socket is closed and
        # no KeyboardInterrupt traceback reaches the user.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logging.getLogger("discore_voice.testing").info("signal %d: stopping", signum)
                return


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
