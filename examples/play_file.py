"""Play an audio file in a voice channel.

Run it as it is and it plays on a local Discord (the simulator), where a simulated member
listens, so you can watch it work with no token and no network::

    python examples/play_file.py                 # a generated one-second tone
    python examples/play_file.py song.opus       # Ogg Opus passes through untouched
    python examples/play_file.py song.mp3        # anything else needs the av extra

Give it a real bot token and ids and the very same ``play_file`` runs against Discord::

    export DISCORD_TOKEN=... DISCORD_GUILD_ID=... DISCORD_CHANNEL_ID=...
    python examples/play_file.py song.opus
"""

from __future__ import annotations

import math
import os
import struct
import sys
import tempfile
from pathlib import Path

import trio

from discore_voice import Intents, PcmSource, open_audio_file, open_shard, voice_connection

DISCORD_GATEWAY = "wss://gateway.discord.gg"


async def play_file(
    token: str, guild_id: int, channel_id: int, path: Path, *, gateway_url: str = DISCORD_GATEWAY
) -> int:
    """Join the channel, play the file to its end, leave. Returns the frames sent."""
    # A ``.pcm`` file is raw 48 kHz s16le stereo; anything else is sniffed by open_audio_file.
    source = PcmSource.from_file(path) if path.suffix == ".pcm" else open_audio_file(path)
    async with (
        open_shard(token, intents=Intents.VOICE_DEFAULT, gateway_url=gateway_url) as shard,
        voice_connection(shard, guild_id, channel_id) as vc,
    ):
        print(f"connected to channel {vc.channel_id} ({vc.encryption_mode})")
        end = await vc.play(source)  # returns once the last frame went out
        frames = end.frames
        print(f"played {frames} frames ({frames * 0.02:.2f} s) of {path.name}")
    return frames


def tone_file(directory: Path, seconds: float = 1.0, hertz: float = 440.0) -> Path:
    """A raw PCM file (48 kHz, 16-bit, stereo): a sine tone at a quarter of full scale."""
    samples = int(48_000 * seconds)
    pcm = bytearray()
    for i in range(samples):
        value = int(8192 * math.sin(2 * math.pi * hertz * i / 48_000))
        pcm += struct.pack("<hh", value, value)
    path = directory / "tone.pcm"
    path.write_bytes(bytes(pcm))
    return path


async def on_the_simulator(path: Path) -> None:
    from discore_voice.testing import open_local_discord

    async with open_local_discord() as discord:
        guild = discord.add_guild(name="example guild")
        channel = guild.add_voice_channel(name="Music")
        alice = discord.add_voice_member(guild.id, channel.id, name="alice")
        frames = await play_file(
            discord.bot.token, guild.id, channel.id, path, gateway_url=discord.gateway_url
        )
        with trio.fail_after(5):
            await discord.voice.wait_for(lambda: alice.frames_heard >= frames)
        print(f"alice heard {alice.frames_heard} frames from the bot")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(sys.argv[1]) if len(sys.argv) > 1 else tone_file(Path(scratch))
        token = os.environ.get("DISCORD_TOKEN")
        if token:
            guild_id = int(os.environ["DISCORD_GUILD_ID"])
            channel_id = int(os.environ["DISCORD_CHANNEL_ID"])
            trio.run(play_file, token, guild_id, channel_id, path)
        else:
            trio.run(on_the_simulator, path)


if __name__ == "__main__":
    main()
