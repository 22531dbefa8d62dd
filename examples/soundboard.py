"""A soundboard: one voice connection that hops between channels, mutes and deafens itself.

Discore's rules, as this library keeps them:

* There is one voice connection per guild. To go elsewhere in the same guild you *switch* it
  with ``update_voice_state(new_channel)``; you do not open a second one.
* ``update_voice_state`` returns once the request is sent, **before** the switch completes. A
  ``Connected`` event fires again when it has, so wait for that before you play.
* Self mute and self deaf go through the same ``update_voice_state`` (or ``voice_connection``'s
  ``self_mute``/``self_deaf`` when joining); omitted ones keep their value.

It runs on the local Discord (no token, no network), with one listening member per channel::

    python examples/soundboard.py
"""

from __future__ import annotations

import math
import struct

import trio

from discore_voice import Connected, Intents, PcmSource, VoiceConnection, VoiceEvents, open_shard
from discore_voice.testing import open_local_discord


def beep(hertz: float, seconds: float = 0.4) -> bytes:
    """48 kHz s16le stereo PCM, the format the connection encodes."""
    out = bytearray()
    for i in range(int(48_000 * seconds)):
        value = int(8192 * math.sin(2 * math.pi * hertz * i / 48_000))
        out += struct.pack("<hh", value, value)
    return bytes(out)


async def switch(vc: VoiceConnection, events: VoiceEvents, channel_id: int) -> None:
    """Move the connection to another channel of its guild and wait until it is there."""
    await vc.update_voice_state(channel_id)  # returns before the switch completes...
    with trio.fail_after(10):
        async for event in events:  # ...Connected fires again once it has
            if isinstance(event, Connected) and event.channel_id == channel_id:
                return
    raise RuntimeError(f"the connection ended during the switch: {vc.invalidation}")


async def main() -> None:
    async with open_local_discord() as discord:
        guild = discord.add_guild(name="soundboard guild")
        lobby = guild.add_voice_channel(name="Lobby")
        games = guild.add_voice_channel(name="Games")
        alice = discord.add_voice_member(guild.id, lobby.id, name="alice")
        bob = discord.add_voice_member(guild.id, games.id, name="bob")
        bot = discord.bot.user_id

        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            connection = VoiceConnection(shard, guild.id)
            events = connection.subscribe()  # before connecting: see every Connected
            async with connection.connect(lobby.id) as vc:
                print("joined Lobby")
                await vc.play(PcmSource.from_bytes(beep(440), name="beep"))

                await switch(vc, events, games.id)
                print("switched to Games")
                await vc.play(PcmSource.from_bytes(beep(660), name="boop"))

                def flags() -> tuple[bool, bool] | None:  # what Discord (here, the simulator) sees
                    state = discord.voice_state(guild.id, bot)
                    return None if state is None else (state.self_mute, state.self_deaf)

                await vc.update_voice_state(games.id, self_mute=True)
                await discord.wait_for(lambda: flags() == (True, False))
                print("muted: (self_mute, self_deaf) =", flags())
                await vc.update_voice_state(games.id, self_mute=False, self_deaf=True)
                await discord.wait_for(lambda: flags() == (False, True))
                print("deafened: (self_mute, self_deaf) =", flags())

            with trio.fail_after(5):
                await discord.voice.wait_for(lambda: bot in alice.heard and bot in bob.heard)
            print(f"alice (Lobby) heard {alice.frames_heard} frames from the bot")
            print(f"bob (Games) heard {bob.frames_heard} frames from the bot")


if __name__ == "__main__":
    trio.run(main)
