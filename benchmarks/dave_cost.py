"""What DAVE end-to-end encryption adds to each stream: CPU per frame, and bytes per frame.

Since 2026-03-01 every voice connection to Discord pays this on top of the transport cipher, so
it belongs in the per-stream budget next to Opus and AES-GCM. The numbers come from a real call:
the local Discord with DAVE required, a bot joined through open_shard and voice_connection, and
one simulated member in the same MLS group. We time the exact function the sender applies to
each frame, and the member's decryption of those frames.

Run from the repository root:

    .venv/bin/python benchmarks/dave_cost.py [--frames 5000]
"""

from __future__ import annotations

import argparse
import time

import trio

from discore_voice import Intents, VoiceConnection, open_shard
from discore_voice._audio.opus import PCM_BLOCK_SIZE, OpusEncoder
from discore_voice._audio.signals import melody_pcm
from discore_voice._core.voice.dave import DaveStateChanged
from discore_voice.testing import open_local_discord

FRAMES_PER_SECOND = 50


async def measure(frames: int) -> None:
    pcm = melody_pcm(1.0)
    with OpusEncoder(bitrate=128_000) as encoder:
        opus = [
            encoder.encode(pcm[i : i + PCM_BLOCK_SIZE]) for i in range(0, len(pcm), PCM_BLOCK_SIZE)
        ]
    async with open_local_discord(dave="required") as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        member = discord.add_voice_member(guild.id, channel.id, name="listener")
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            connection = VoiceConnection(shard, guild.id)
            events = connection.subscribe()
            async with connection.connect(channel.id) as vc:
                with trio.fail_after(30):
                    async for event in events:
                        if isinstance(event, DaveStateChanged) and event.can_encrypt:
                            break
                assert member.dave is not None
                # The DAVE layer the session task puts in the sender's link, the one its
                # stepper seals every frame with (the link itself exists only while playing).
                media = vc._task._media.media
                assert media is not None
                encrypt = media.crypto.encrypt
                plain = [opus[i % len(opus)] for i in range(frames)]
                start = time.perf_counter()
                sealed = [encrypt(frame) for frame in plain]
                encrypt_us = (time.perf_counter() - start) / frames * 1e6
                receiver = member.dave.client
                start = time.perf_counter()
                opened = [receiver.decrypt_opus(shard.user_id, frame) for frame in sealed]
                decrypt_us = (time.perf_counter() - start) / frames * 1e6
                assert opened == plain, "the member did not get the frames back"
                overhead = sum(map(len, sealed)) / frames - sum(map(len, plain)) / frames

    print(f"DAVE (protocol v1), {frames} frames of 128 kbps Opus, one member in the group")
    print(f"  encrypt (the sender's per-frame call)   {encrypt_us:7.2f} µs/frame")
    print(f"  decrypt (a listener, per sender)        {decrypt_us:7.2f} µs/frame")
    print(f"  bytes added per frame                   {overhead:7.1f}")
    print(
        f"  extra CPU per sending stream            {encrypt_us * FRAMES_PER_SECOND / 1e6:.5f}"
        " CPU-s per stream-second"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    trio.run(measure, parser.parse_args().frames)


if __name__ == "__main__":
    main()
