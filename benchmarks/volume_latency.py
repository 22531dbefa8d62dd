"""How long a live volume change takes to be heard: from ``source.volume = x`` to the listener.

The bot plays a steady tone through ``open_shard`` and ``voice_connection`` to the local Discord
(DAVE off, so what the member hears depends on the send path alone), and toggles the playing
``PcmSource``'s volume between 1.0 and 0.25 every ``--every`` seconds, at a random moment within
the frame. The listener's decoded audio is cut into 2.5 ms windows. "Stream" latency is the
time, in the stream, from the frame the bot was about to send when the volume changed (plus
Opus's 6.5 ms decoder look-ahead) to the first window at the new level; "wall" latency adds the
wait for that frame to go out, i.e. from the assignment to the new level leaving the bot.
Target (issue #15): ≤ 40 ms.

    .venv/bin/python benchmarks/volume_latency.py [--changes 40] [--every 0.3]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from discore_voice import Intents, PcmSource, open_shard, voice_connection
from discore_voice._audio.signals import channel, sine_pcm
from discore_voice.testing import open_local_discord

WINDOW = 120  # samples a channel: 2.5 ms
CODEC_DELAY = 312  # Opus's decoder look-ahead, in samples
LOUD, QUIET = 1.0, 0.25


async def measure(changes: int, every: float, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    seconds = changes * every + 2.0
    async with open_local_discord(dave="off") as discord:
        guild = discord.add_guild()
        voice = guild.add_voice_channel()
        listener = discord.add_voice_member(guild.id, voice.id, name="listener", history=None)
        async with (
            open_shard(
                discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
            ) as shard,
            voice_connection(shard, guild.id, voice.id) as vc,
        ):
            source = PcmSource.from_bytes(sine_pcm(seconds, amplitude=0.8))
            # (frames sent at the change, new volume, seconds until the next frame went out)
            marks: list[tuple[int, float, float]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(vc.play, source)
                await trio.sleep(1.0)
                for index in range(changes):
                    await trio.sleep(every + rng.uniform(0, 0.02))
                    volume = QUIET if index % 2 == 0 else LOUD
                    next_send = vc._sender.next_send_at()
                    wait = 0.0 if next_send is None else max(0.0, next_send - trio.current_time())
                    marks.append((vc.send_stats.frames_sent, volume, wait))
                    source.volume = volume
            await discord.voice.wait_for(
                lambda: listener.frames_heard >= vc.send_stats.frames_sent - 10
            )
    heard = channel(listener.heard_pcm(discord.bot.user_id))
    levels = [
        math.sqrt(sum(x * x for x in heard[i * WINDOW : (i + 1) * WINDOW]) / WINDOW)
        for i in range(len(heard) // WINDOW)
    ]
    full = statistics.median(levels[40 : int(0.9 * 48000 / WINDOW)])
    latencies: list[float] = []
    walls: list[float] = []
    for frames_sent, volume, wait in marks:
        start = frames_sent * 960 + CODEC_DELAY
        first = start // WINDOW
        if volume == QUIET:
            hit = next(i for i in range(first, len(levels)) if levels[i] < 0.35 * full)
        else:
            hit = next(i for i in range(first, len(levels)) if levels[i] > 0.8 * full)
        stream_ms = max(0.0, (hit * WINDOW - start) / 48)
        latencies.append(stream_ms)
        walls.append(stream_ms + wait * 1000)
    latencies.sort()
    walls.sort()
    return {
        "changes": len(latencies),
        "stream_ms_p50": round(statistics.median(latencies), 1),
        "stream_ms_max": round(latencies[-1], 1),
        "wall_ms_p50": round(statistics.median(walls), 1),
        "wall_ms_p95": round(walls[int(0.95 * (len(walls) - 1))], 1),
        "wall_ms_max": round(walls[-1], 1),
        "target_ms": 40,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--every", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    row = trio.run(measure, args.changes, args.every, args.seed)
    print(
        f"{row['changes']} volume changes: heard {row['stream_ms_p50']} ms (max "
        f"{row['stream_ms_max']}) into the stream after the next frame sent; from the change "
        f"itself p50 {row['wall_ms_p50']} ms, p95 {row['wall_ms_p95']}, max {row['wall_ms_max']}"
        " (target ≤ 40 ms)"
    )
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
