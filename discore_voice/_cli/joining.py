"""What ``play`` and ``record`` share: the token, the ids, the gateway, and joining.

The token comes from ``DISCORD_TOKEN`` only, never a flag, so it stays out of shell history and
process listings. Everything a bot author can get wrong (the token, the intents, the ids, davey)
ends in one sentence that says what to do.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from .._core.gateway.errors import AuthenticationFailed, DisallowedIntents, GatewayUnreachable
from .._core.gateway.intents import Intents
from .._core.snowflake import Snowflake, validate_snowflake
from .._core.voice.events import InvalidationReason
from .._errors import UsageError
from .._shell.shard.connection import DEFAULT_GATEWAY_URL, open_shard
from .._shell.voice.connection import VoiceConnection, VoiceConnectionFailed, voice_connection

__all__ = ["TOKEN_VARIABLE", "Target", "add_channel_arguments", "joined", "say", "target_of"]

TOKEN_VARIABLE = "DISCORD_TOKEN"
GATEWAY_VARIABLE = "DISCORE_VOICE_GATEWAY_URL"


@dataclass(frozen=True)
class Target:
    """Where to join, and how to reach the gateway; the token is kept out of reprs."""

    token: str
    guild_id: Snowflake
    channel_id: Snowflake
    gateway_url: str
    ssl_context: ssl.SSLContext | None
    timeout: float

    def __repr__(self) -> str:
        return f"Target(guild_id={self.guild_id}, channel_id={self.channel_id})"


def add_channel_arguments(parser: argparse.ArgumentParser) -> None:
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
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the gateway, and then for the join (default 30)",
    )


def target_of(args: argparse.Namespace) -> Target:
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise UsageError(f"set {TOKEN_VARIABLE} to the bot's token (it is never read from a flag)")
    ssl_context = None
    if args.ca_file is not None:
        ssl_context = ssl.create_default_context(cafile=str(args.ca_file))
    return Target(
        token=token,
        guild_id=validate_snowflake(args.guild, name="--guild"),
        channel_id=validate_snowflake(args.channel, name="--channel"),
        gateway_url=args.gateway_url,
        ssl_context=ssl_context,
        timeout=args.timeout,
    )


@asynccontextmanager
async def joined(target: Target) -> AsyncIterator[VoiceConnection]:
    """Log in, join the channel, and turn every expected failure into a sentence."""
    try:
        async with open_shard(
            target.token,
            intents=Intents.VOICE_DEFAULT,
            gateway_url=target.gateway_url,
            ssl_context=target.ssl_context,
            connect_timeout=target.timeout,
        ) as shard:
            say(f"logged in as {shard.user_id}; joining channel {target.channel_id}")
            async with voice_connection(
                shard,
                target.guild_id,
                target.channel_id,
                timeout=target.timeout,
                ssl_context=target.ssl_context,
            ) as vc:
                say(f"connected ({vc.encryption_mode}, DAVE v{vc.dave_protocol_version})")
                yield vc
    except AuthenticationFailed as exc:
        raise UsageError(f"Discord rejected the token in {TOKEN_VARIABLE}") from exc
    except DisallowedIntents as exc:
        raise UsageError(
            "the bot may not use the intents it asked for; enable them for the application in "
            "the Discord developer portal"
        ) from exc
    except GatewayUnreachable as exc:
        raise UsageError(f"cannot reach the gateway at {target.gateway_url}: {exc}") from exc
    except VoiceConnectionFailed as exc:
        raise UsageError(_explain_failure(exc, target)) from exc


def _explain_failure(exc: VoiceConnectionFailed, target: Target) -> str:
    if exc.reason is InvalidationReason.TIMED_OUT:
        return (
            f"no answer to joining channel {target.channel_id} in guild {target.guild_id}: check "
            "that both ids exist, that the bot is in the guild and can see and join the channel, "
            "and that the channel is not full"
        )
    return str(exc)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
