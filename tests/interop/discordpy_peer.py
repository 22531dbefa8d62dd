"""An unmodified discord.py 2.7.1 bot, run against the local Discord simulator in its own process.

It is the independent client of issue 3's acceptance test: if discord.py, which was written
against the real Discord, can join and play through the simulator with nothing but its two URL
overrides and trust in the simulator's CA, the simulator behaves like Discord where it matters.

This file runs with the peer venv's interpreter (``scripts/setup-peer-venv``), never with the
project's: discord.py is not a dependency of discore-voice, and nothing here imports discore_voice.

Usage (every option may also come from ``DISCORE_VOICE_PEER_<OPTION>`` in the environment; the
bot token comes only from ``DISCORE_VOICE_PEER_TOKEN``, so it never shows in a process list)::

    python discordpy_peer.py --gateway-url wss://127.0.0.1:P --api-url https://127.0.0.1:Q/api/v10 \
        --ca ca.pem --guild-id G --channel-id C

It logs in, joins the voice channel, plays ``--seconds`` of a ``--hz`` sine as raw PCM
(``discord.PCMAudio`` over a BytesIO), disconnects and exits 0. Progress goes to stdout as one
JSON object per line, so a test can synchronise on it: ``start``, ``ready``, ``connected``,
``played``, ``disconnected``, ``done``, or ``error`` (then exit 1); with ``--wait-dave`` it plays
only once its DAVE group can encrypt, and says ``dave_ready`` first. With ``--hold``, it waits after
``played`` (and ``holding``) for a line on stdin before it disconnects, so the test can first
check what the server received while the voice session is still live. discord.py's own log goes
to stderr (``--verbose`` makes it DEBUG, which includes voice tokens: keep such logs private).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import io
import json
import logging
import math
import os
import ssl
import sys
import traceback
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

SAMPLE_RATE = 48_000
CHANNELS = 2
#: discord.PCMAudio reads 20 ms of 48 kHz stereo s16le at a time.
FRAME_BYTES = SAMPLE_RATE // 50 * CHANNELS * 2


def emit(event: str, **fields: Any) -> None:
    """One progress line on stdout; flushed at once, because the test waits on it."""
    print(json.dumps({"event": event, **fields}), flush=True)


def sine_pcm(seconds: float, hz: float, amplitude: float = 0.3) -> bytes:
    """The same tone as ``discore_voice._audio.signals.sine_pcm``, which this venv cannot import."""
    peak = amplitude * 32767
    step = 2 * math.pi * hz / SAMPLE_RATE
    count = round(seconds * SAMPLE_RATE)
    samples = array.array("h", bytes(count * CHANNELS * 2))
    for i in range(count):
        value = round(peak * math.sin(step * i))
        samples[2 * i] = value
        samples[2 * i + 1] = value
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


class CountingPCM(discord.PCMAudio):
    """PCMAudio that counts the 20 ms frames the player took, to report what was sent."""

    frames = 0

    def read(self) -> bytes:
        data = super().read()
        if data:
            self.frames += 1
        return data


def parse_args(argv: list[str]) -> argparse.Namespace:
    def env(name: str) -> str | None:
        return os.environ.get(f"DISCORE_VOICE_PEER_{name}")

    def env_float(name: str, default: float) -> float:
        value = env(name)
        return default if value is None else float(value)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway-url", default=env("GATEWAY_URL"))
    parser.add_argument("--api-url", default=env("API_URL"))
    parser.add_argument("--ca", default=env("CA"), help="PEM file of the CA to trust")
    parser.add_argument("--guild-id", type=int, default=env("GUILD_ID"))
    parser.add_argument("--channel-id", type=int, default=env("CHANNEL_ID"))
    parser.add_argument("--seconds", type=float, default=env_float("SECONDS", 3.0))
    parser.add_argument("--hz", type=float, default=env_float("HZ", 440.0))
    parser.add_argument("--timeout", type=float, default=env_float("TIMEOUT", 60.0))
    parser.add_argument(
        "--hold", action="store_true", help="wait for a line on stdin before disconnecting"
    )
    parser.add_argument(
        "--wait-dave", action="store_true", help="play only once DAVE encrypts (then 'dave_ready')"
    )
    parser.add_argument("--verbose", action="store_true", help="discord.py's DEBUG log on stderr")
    args = parser.parse_args(argv)
    missing = [
        name
        for name in ("gateway_url", "api_url", "guild_id", "channel_id")
        if getattr(args, name) is None
    ]
    if missing:
        parser.error("missing: " + ", ".join("--" + name.replace("_", "-") for name in missing))
    args.token = os.environ.get("DISCORE_VOICE_PEER_TOKEN")
    if not args.token:
        parser.error("the bot token must be in DISCORE_VOICE_PEER_TOKEN")
    return args


async def read_stdin_line() -> bytes:
    """One line from stdin, cancellable (a thread blocked in readline would not be)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        return await reader.readline()
    finally:
        transport.close()


async def play(client: discord.Client, args: argparse.Namespace) -> None:
    channel = client.get_channel(args.channel_id)
    if not isinstance(channel, discord.VoiceChannel):
        raise RuntimeError(f"channel {args.channel_id} is not a voice channel discord.py knows")
    voice: discord.VoiceClient = await channel.connect(timeout=20.0, reconnect=True)
    emit("connected", mode=voice.mode, ssrc=voice.ssrc, endpoint=voice.endpoint)

    loop = asyncio.get_running_loop()
    finished: asyncio.Future[BaseException | None] = loop.create_future()

    def after(error: BaseException | None) -> None:
        # Called on the player's thread, after the 5 trailing silence frames went out.
        def settle() -> None:
            if not finished.done():
                finished.set_result(error)

        loop.call_soon_threadsafe(settle)

    if args.wait_dave:
        # Play only once discord.py end-to-end encrypts (its own test of that): until then it
        # sends plaintext, which is not what a DAVE receive test is about.
        state = voice._connection
        while not state.can_encrypt:  # noqa: ASYNC110 (discord.py has no event for it)
            await asyncio.sleep(0.02)
        emit("dave_ready", protocol_version=state.dave_protocol_version)
    source = CountingPCM(io.BytesIO(sine_pcm(args.seconds, args.hz)))
    voice.play(source, after=after)
    error = await finished
    emit("played", frames=source.frames, error=None if error is None else repr(error))
    if error is not None:
        raise RuntimeError(f"the audio player failed: {error!r}")
    if args.hold:
        emit("holding")
        await read_stdin_line()
    await voice.disconnect()
    emit("disconnected")


async def main(args: argparse.Namespace) -> None:
    discord.http.Route.BASE = args.api_url
    # A yarl.URL, not a str: discord.py calls .with_query() on it.
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(args.gateway_url)
    # Trust the simulator's CA for REST, the main gateway and voice alike: discord.py uses one
    # aiohttp session for all three. The connector must be made inside the running loop.
    context = ssl.create_default_context(cafile=args.ca) if args.ca else None
    connector = aiohttp.TCPConnector(ssl=context) if context is not None else None
    client = discord.Client(
        intents=discord.Intents.default(), connector=connector, guild_ready_timeout=0.2
    )
    async with asyncio.timeout(args.timeout), client:
        await client.login(args.token)
        gateway = asyncio.create_task(client.connect(reconnect=False), name="peer gateway")
        ready = asyncio.create_task(client.wait_until_ready(), name="peer ready")
        await asyncio.wait({gateway, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            gateway.result()  # the gateway's error, if it has one
            raise RuntimeError("the main gateway closed before READY")
        user = client.user
        assert user is not None
        emit("ready", user_id=str(user.id), guilds=[str(guild.id) for guild in client.guilds])
        scenario = asyncio.create_task(play(client, args), name="peer scenario")
        await asyncio.wait({gateway, scenario}, return_when=asyncio.FIRST_COMPLETED)
        if not scenario.done():
            scenario.cancel()
            gateway.result()
            raise RuntimeError("the main gateway closed during the scenario")
        scenario.result()
        gateway.cancel()
    emit("done")


def run() -> int:
    args = parse_args(sys.argv[1:])
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    emit("start", discord_py=discord.__version__, python=sys.version.split()[0])
    try:
        asyncio.run(main(args))
    except BaseException as exc:
        emit("error", type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
