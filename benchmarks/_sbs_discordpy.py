"""side_by_side.py's sender for discord.py 2.7.1: N streams from one process (its own venv).

Runs with ``.venv-peer``'s interpreter and imports nothing of discore_voice. Like
``tests/interop/discordpy_peer.py`` it joins the simulator with discord.py's two URL overrides and
trust in the simulator's CA. It connects N voice clients at once (one per guild), then plays the
same PCM (``--pcm``: ``discord.PCMAudio``, which discord.py encodes at its defaults, 128 kbps with
FEC and 15 % expected loss) or pre-encoded Opus packets (``--opus``: an ``AudioSource`` whose
``is_opus()`` is True) on all of them. Prints one JSON line like ``_sbs_ours.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import resource
import ssl
import sys
import time
from pathlib import Path

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from _sbs_process import cpu_seconds, read_packets, rss_bytes, sender_arguments


class OpusPackets(discord.AudioSource):
    """Pre-encoded 20 ms Opus packets; discord.py sends them without its encoder."""

    def __init__(self, packets: list[bytes]) -> None:
        self._iter = iter(packets)

    def read(self) -> bytes:
        return next(self._iter, b"")

    def is_opus(self) -> bool:
        return True


async def run(args: argparse.Namespace) -> dict:
    info = json.loads(Path(args.info).read_text())  # noqa: ASYNC240 (set-up, before timing)
    guilds = info["guilds"][: args.n]
    pcm = Path(args.pcm).read_bytes() if args.pcm else None  # noqa: ASYNC240 (set-up, before timing)
    packets = read_packets(args.opus) if args.opus else None
    discord.http.Route.BASE = info["api_url"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(info["gateway_url"])
    context = ssl.create_default_context(cafile=info["ca_pem_path"])
    client = discord.Client(
        intents=discord.Intents.default(),
        connector=aiohttp.TCPConnector(ssl=context),
        guild_ready_timeout=0.2,
    )
    result: dict = {
        "side": "discord.py",
        "n": args.n,
        "discord_py": discord.__version__,
        "connect_concurrency": min(args.concurrency, args.n),
    }
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(args.timeout), client:
        await client.login(info["bot_token"])
        gateway = asyncio.create_task(client.connect(reconnect=False))
        await client.wait_until_ready()
        channels = [client.get_channel(int(channel_id)) for _, channel_id in guilds]
        rss_before = rss_bytes()
        connected_at: list[float] = []

        # At N=100 a connect or two hits discord.py's lost wake-up (VoiceConnectionState.
        # _wait_for_state; see tests/interop/test_discordpy.py) and times out although the
        # simulator answered: such a connect is retried (counted in connect_retries, and its
        # time is in connect_s). --concurrency bounds the connects in flight.
        gate = asyncio.Semaphore(args.concurrency)
        retries = 0

        async def connect(channel: discord.VoiceChannel) -> discord.VoiceClient:
            nonlocal retries
            async with gate:
                for attempt in range(args.connect_attempts):
                    try:
                        voice = await channel.connect(timeout=args.connect_timeout, reconnect=False)
                        break
                    except TimeoutError:
                        if attempt + 1 == args.connect_attempts:
                            raise
                        retries += 1
                        stale = channel.guild.voice_client
                        if stale is not None:
                            await stale.disconnect(force=True)
            connected_at.append(time.perf_counter())
            return voice

        start = time.perf_counter()
        voices = await asyncio.gather(*(connect(channel) for channel in channels))
        result["connect_s"] = max(connected_at) - start
        result["connect_retries"] = retries
        result["first_connect_s"] = min(connected_at) - start
        result["rss_per_connection"] = (rss_bytes() - rss_before) / len(voices)
        futures = []
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        for voice in voices:
            future = loop.create_future()

            def after(error: BaseException | None, future: asyncio.Future = future) -> None:
                loop.call_soon_threadsafe(lambda: future.done() or future.set_result(error))

            if pcm is not None:
                source: discord.AudioSource = discord.PCMAudio(io.BytesIO(pcm))
            else:
                source = OpusPackets(packets)
            voice.play(source, after=after, bitrate=128, fec=True)
            futures.append(future)
        errors = await asyncio.gather(*futures)
        result["cpu_s"] = cpu_seconds() - cpu0
        result["play_wall_s"] = time.perf_counter() - wall0
        result["rss_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["errors"] = [repr(e) for e in errors if e is not None]
        await asyncio.sleep(0.3)
        await asyncio.gather(*(voice.disconnect() for voice in voices), return_exceptions=True)
        gateway.cancel()
    return result


def main() -> None:
    parser = sender_arguments()
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--connect-timeout", type=float, default=8.0)
    parser.add_argument("--connect-attempts", type=int, default=3)
    logging.basicConfig(level=os.environ.get("SBS_DPY_LOG", "WARNING"), stream=sys.stderr)
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps({"event": "done", **result}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
