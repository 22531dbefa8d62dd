"""Record a voice channel: one file per member, aligned, until Ctrl-C (or for a while).

Run it as it is and it records a local Discord (the simulator), where two simulated members
take turns saying something, so you can watch it work with no token and no network::

    python examples/record_call.py                # writes ./recording/<user id>.ogg
    python examples/record_call.py --out calls/   # or anywhere else

Give it a real bot token and ids and the very same ``record_call`` records Discord::

    export DISCORD_TOKEN=... DISCORD_GUILD_ID=... DISCORD_CHANNEL_ID=...
    python examples/record_call.py --seconds 60

Files are Ogg Opus exactly as each member sent it (no re-encoding), silence filled in where they
were quiet, so they play back in step; ``format="wav"`` in ``record()`` gives decoded PCM.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
from pathlib import Path

import trio

from discore_voice import (
    Intents,
    SpeakingStarted,
    open_shard,
    record,
    voice_connection,
)

DISCORD_GATEWAY = "wss://gateway.discord.gg"


async def record_call(
    token: str,
    guild_id: int,
    channel_id: int,
    out: Path,
    *,
    seconds: float = math.inf,
    gateway_url: str = DISCORD_GATEWAY,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> dict[int | str, Path]:
    """Join, record everyone into ``out`` for ``seconds`` (or until cancelled), leave."""
    async with (
        open_shard(token, intents=Intents.VOICE_DEFAULT, gateway_url=gateway_url) as shard,
        voice_connection(shard, guild_id, channel_id) as vc,
        vc.receive(decode=False) as rx,  # Ogg Opus needs no decoding
        record(rx, out) as recording,
    ):
        print(f"recording channel {vc.channel_id} into {out}/")
        task_status.started()
        with trio.move_on_after(seconds):
            async for event in rx.speaking():
                if isinstance(event, SpeakingStarted):
                    print(f"  {event.user_id} is speaking")
    for who, path in recording.files.items():
        print(f"{who}: {path.name}, {recording.seconds:.1f} s")
    return dict(recording.files)


async def on_the_simulator(out: Path) -> None:
    from discore_voice.testing import open_local_discord

    async with open_local_discord() as discord:
        guild = discord.add_guild(name="example guild")
        channel = guild.add_voice_channel(name="Meeting")
        alice = discord.add_voice_member(guild.id, channel.id, name="alice")
        bob = discord.add_voice_member(guild.id, channel.id, name="bob")
        async with trio.open_nursery() as nursery:
            recorder = functools.partial(record_call, seconds=2.0, gateway_url=discord.gateway_url)
            await nursery.start(recorder, discord.bot.token, guild.id, channel.id, out)
            await discord.voice.wait_for(lambda: alice.voice_privacy_code is not None)
            await alice.speak_tone(0.5, hz=330)
            await bob.speak_tone(0.5, hz=550)


def main() -> None:
    parser = argparse.ArgumentParser(description="Record a voice channel, one file per member.")
    parser.add_argument("--out", type=Path, default=Path("recording"), help="the directory")
    parser.add_argument("--seconds", type=float, default=math.inf, help="default: until Ctrl-C")
    args = parser.parse_args()
    token = os.environ.get("DISCORD_TOKEN")
    if token:
        guild_id = int(os.environ["DISCORD_GUILD_ID"])
        channel_id = int(os.environ["DISCORD_CHANNEL_ID"])
        trio.run(
            functools.partial(record_call, seconds=args.seconds),
            token,
            guild_id,
            channel_id,
            args.out,
        )
    else:
        trio.run(on_the_simulator, args.out)


if __name__ == "__main__":
    main()
