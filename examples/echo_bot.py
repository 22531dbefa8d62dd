"""An echo bot: whatever a member says, the bot says back once they stop.

It listens with ``vc.receive()``, gathers one member's decoded audio while they speak, and when
their speaking stops (the playout buffer ran dry after their last words), plays it back with
``vc.send_voice_data()``. The shape an AI voice agent has: hear a turn, answer it.

Run it as it is and it echoes a simulated member on a local Discord, with no token::

    python examples/echo_bot.py

With ``DISCORD_TOKEN``, ``DISCORD_GUILD_ID`` and ``DISCORD_CHANNEL_ID`` set it echoes on Discord.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import trio

from discore_voice import (
    Intents,
    ReceivedAudio,
    SpeakingStopped,
    VoiceConnection,
    open_shard,
    voice_connection,
)

DISCORD_GATEWAY = "wss://gateway.discord.gg"
#: Longest turn echoed, in 20 ms frames (ten seconds): memory stays bounded.
MAX_TURN_FRAMES = 500


async def echo(vc: VoiceConnection, *, turns: int | None = None) -> int:
    """Echo every member's turns (or the first ``turns``); returns the frames echoed."""
    echoed = 0
    spoken: dict[int, list[bytes]] = {}
    async with vc.receive() as rx, trio.open_nursery() as nursery:
        speaking = rx.speaking()

        async def gather(frames: AsyncIterator[ReceivedAudio]) -> None:
            async for frame in frames:
                turn = spoken.setdefault(frame.user_id, [])
                if frame.pcm is not None and len(turn) < MAX_TURN_FRAMES:
                    turn.append(frame.pcm)

        nursery.start_soon(gather, rx.all())
        done = 0
        async for event in speaking:
            if not isinstance(event, SpeakingStopped):
                continue
            turn = spoken.pop(event.user_id, [])
            if not turn:
                continue
            print(f"echoing {len(turn)} frames of {event.user_id}")
            for pcm in turn:
                await vc.send_voice_data(pcm)
            echoed += len(turn)
            done += 1
            if turns is not None and done >= turns:
                break
        nursery.cancel_scope.cancel()
    return echoed


async def on_discord(token: str, guild_id: int, channel_id: int) -> None:
    async with (
        open_shard(token, intents=Intents.VOICE_DEFAULT, gateway_url=DISCORD_GATEWAY) as shard,
        voice_connection(shard, guild_id, channel_id) as vc,
    ):
        await echo(vc)


async def on_the_simulator() -> None:
    from discore_voice.testing import open_local_discord

    async with open_local_discord() as discord:
        guild = discord.add_guild(name="example guild")
        channel = guild.add_voice_channel(name="Echo")
        alice = discord.add_voice_member(guild.id, channel.id, name="alice")
        async with (
            open_shard(
                discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
            ) as shard,
            voice_connection(shard, guild.id, channel.id) as vc,
            trio.open_nursery() as nursery,
        ):
            await vc.wait_for(lambda: vc.voice_privacy_code is not None)
            nursery.start_soon(alice.speak_tone, 0.6)
            echoed = await echo(vc, turns=1)
            with trio.fail_after(5):
                await discord.voice.wait_for(lambda: alice.frames_heard >= echoed)
        print(f"echoed {echoed} frames; alice heard {alice.frames_heard} frames from the bot")


def main() -> None:
    token = os.environ.get("DISCORD_TOKEN")
    if token:
        guild_id = int(os.environ["DISCORD_GUILD_ID"])
        channel_id = int(os.environ["DISCORD_CHANNEL_ID"])
        trio.run(on_discord, token, guild_id, channel_id)
    else:
        trio.run(on_the_simulator)


if __name__ == "__main__":
    main()
