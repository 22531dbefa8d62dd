"""Testing your own bot with the simulator: a pytest test with pytest-trio, no Discord needed.

The bot under test is ``greet``: it joins a channel, plays a short chime and leaves. The test
runs it against a local Discord through real sockets, then asks a simulated member what it
heard: the bot's audio, decrypted and decoded, so it can be checked against what was played.

Run it with ``pytest examples/test_my_bot.py`` (pytest-trio is in the ``test`` extra).
"""

from __future__ import annotations

import math
import struct

import pytest
import trio

from discore_voice import Intents, PcmSource, Shard, open_shard, voice_connection
from discore_voice.testing import open_local_discord

# --- the bot -------------------------------------------------------------------------------


def chime(seconds: float = 0.5, hertz: float = 880.0) -> bytes:
    out = bytearray()
    for i in range(int(48_000 * seconds)):
        value = int(8192 * math.sin(2 * math.pi * hertz * i / 48_000))
        out += struct.pack("<hh", value, value)
    return bytes(out)


async def greet(shard: Shard, guild_id: int, channel_id: int) -> int:
    """The bot's feature: join, play the chime, leave. Returns the frames it sent."""
    async with voice_connection(shard, guild_id, channel_id) as vc:
        end = await vc.play(PcmSource.from_bytes(chime(), name="chime"))
        return end.frames


# --- its test ------------------------------------------------------------------------------


def loudness(pcm: bytes) -> float:
    """Root mean square of 16-bit samples, as a fraction of full scale."""
    samples = memoryview(pcm).cast("h")
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples))) / 32768


@pytest.mark.trio
async def test_members_hear_the_greeting() -> None:
    async with open_local_discord() as discord:
        guild = discord.add_guild(name="test guild")
        channel = guild.add_voice_channel(name="General")
        alice = discord.add_voice_member(guild.id, channel.id, name="alice")
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            frames = await greet(shard, guild.id, channel.id)

        assert frames == 25  # 0.5 s of 20 ms frames
        bot = discord.bot.user_id
        with trio.fail_after(5):
            await discord.voice.wait_for(lambda: alice.frames_heard >= frames)
        heard = alice.heard[bot].pcm()  # what alice decoded from the bot
        # The chime's RMS is 8192 / sqrt(2) / 32768 = 0.18; Opus keeps it within a few percent.
        assert loudness(heard) > 0.1
        # And the bot left the channel when it was done.
        assert discord.voice_state(guild.id, bot) is None
