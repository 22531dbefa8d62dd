"""side_by_side.py's sender for discore_voice: N streams from one process.

Reads the receiver's JSON line from ``--info``, connects N voice connections at once (one per
guild, through ``--shards`` shards: a gateway connection may send 120 commands a minute, so a bot
with 1000 voice connections needs at least ten shards, as on Discord), then plays the same PCM
(``--pcm``, encoded by each connection at 128 kbps with FEC) or the same pre-encoded Opus packets
(``--opus``, length-prefixed) on all of them together. Prints one JSON line: connect time,
CPU-seconds over the playing window, RSS per connection, and the connections' own send stats.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import resource
import ssl
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

import trio
from _sbs_process import cpu_seconds, read_packets, rss_bytes, sender_arguments

from discore_voice import (
    AudioSource,
    EncoderSettings,
    IdentifyLimiter,
    Intents,
    PcmSource,
    Shard,
    open_shard,
    shard_for_guild,
    voice_connection,
)
from discore_voice._audio.sources import SourceKind


class OpusPackets(AudioSource):
    """Pre-encoded 20 ms Opus packets, passed through untouched."""

    kind: ClassVar[SourceKind] = SourceKind.OPUS

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__("<pre-encoded opus>")
        self._iter = iter(packets)

    async def __anext__(self) -> bytes:
        try:
            return next(self._iter)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._iter = iter(())


def shards_needed(guild_ids: list[int], per_shard: int = 100) -> int:
    """The fewest shards that put at most ``per_shard`` of these guilds on any one shard.

    A shard may send 120 commands a minute, so more voice joins than that on one shard wait for
    the next window. Guild ids made within the same millisecond land on the same shard
    (``(id >> 22) % count``), so an even split is not a given.
    """
    count = max(1, -(-len(guild_ids) // per_shard))
    while True:
        load = Counter(shard_for_guild(guild_id, count) for guild_id in guild_ids)
        if max(load.values(), default=0) <= per_shard:
            return count
        count += 1


class GcPauses:
    """The garbage collector's pauses, by generation: a long one stalls every stream at once."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        gc.callbacks.append(self.observe)

    def observe(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self.started)

    def reset(self) -> None:
        for pauses in self.pauses.values():
            pauses.clear()

    def summary(self) -> dict:
        return {
            f"gen{generation}": {
                "count": len(pauses),
                "max_ms": max(pauses, default=0.0) * 1000,
                "total_ms": sum(pauses) * 1000,
            }
            for generation, pauses in self.pauses.items()
        }


async def run(args: argparse.Namespace) -> dict:
    info = json.loads(Path(args.info).read_text())  # noqa: ASYNC240 (set-up, before timing)
    guilds = info["guilds"][: args.n]
    context = ssl.create_default_context(cafile=info["ca_pem_path"])
    pcm = Path(args.pcm).read_bytes() if args.pcm else None  # noqa: ASYNC240 (set-up, before timing)
    packets = read_packets(args.opus) if args.opus else None
    # discord.py's encoder: 128 kbps, FEC with 15 % expected loss, and libopus's default
    # complexity (9), which it does not change.
    encoder = EncoderSettings(bitrate=128_000, fec=True, packet_loss_percent=15, complexity=9)
    connected_at: list[float] = []
    all_connected = trio.Event()
    go = trio.Event()
    played = []
    finished = trio.Event()
    stats = []
    result: dict = {"side": "discore_voice", "n": args.n}
    gc_pauses = GcPauses()
    shard_count = args.shards or shards_needed([int(guild_id) for guild_id, _ in guilds])
    # Large bots get max_concurrency 16 (``GET /gateway/bot``): sixteen identifies at once.
    identify_limiter = IdentifyLimiter(max_concurrency=16)
    shards: dict[int, Shard] = {}
    shards_ready = trio.Event()

    async def keep_shard(shard_id: int) -> None:
        async with open_shard(
            info["bot_token"],
            intents=Intents.VOICE_DEFAULT,
            shard_id=shard_id,
            shard_count=shard_count,
            gateway_url=info["gateway_url"],
            ssl_context=context,
            identify_limiter=identify_limiter,
        ) as shard:
            shards[shard_id] = shard
            if len(shards) == shard_count:
                shards_ready.set()
            await trio.sleep_forever()

    async def stream(guild_id: str, channel_id: str) -> None:
        shard = shards[shard_for_guild(guild_id, shard_count)]
        async with voice_connection(
            shard, guild_id, channel_id, ssl_context=context, encoder=encoder
        ) as vc:
            connected_at.append(time.perf_counter())
            if len(connected_at) == len(guilds):
                all_connected.set()
            await go.wait()
            if pcm is not None:
                source: AudioSource = PcmSource.from_bytes(pcm)
            else:
                assert packets is not None
                source = OpusPackets(packets)
            frames = (await vc.play(source)).frames
            played.append(frames)
            if len(played) == len(guilds):
                finished.set()
            await finished.wait()
            await trio.sleep(0.3)  # the trailing silence frames
            stats.append(dataclasses.asdict(vc.send_stats))

    with trio.fail_after(args.timeout):
        async with trio.open_nursery() as shard_nursery:
            for shard_id in range(shard_count):
                shard_nursery.start_soon(keep_shard, shard_id)
            await shards_ready.wait()
            result["shards"] = shard_count
            rss_before = rss_bytes()
            async with trio.open_nursery() as nursery:
                start = time.perf_counter()
                for guild_id, channel_id in guilds:
                    nursery.start_soon(stream, guild_id, channel_id)
                await all_connected.wait()
                result["connect_s"] = max(connected_at) - start
                result["first_connect_s"] = min(connected_at) - start
                rss_connected = rss_bytes()
                result["rss_per_connection"] = (rss_connected - rss_before) / len(guilds)
                if args.gc_freeze:
                    # What README advises for bots with hundreds of connections: the objects
                    # of start-up are never garbage, so keep the collector off them.
                    gc.collect()
                    gc.freeze()
                cpu0, wall0 = cpu_seconds(), time.perf_counter()
                gc_pauses.reset()
                go.set()
                await finished.wait()
                result["gc_pauses"] = gc_pauses.summary()
                result["cpu_s"] = cpu_seconds() - cpu0
                result["play_wall_s"] = time.perf_counter() - wall0
                result["rss_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                result["frames"] = played
            shard_nursery.cancel_scope.cancel()
    totals = {
        key: sum(entry[key] for entry in stats)
        for key in ("frames_sent", "silence_frames", "skipped_late", "stalls", "packets_dropped")
    }
    totals["gap_max_ms"] = max(entry["gap_max_ms"] for entry in stats)
    totals["encode_mean_us"] = sum(entry["encode_time_us"] for entry in stats) / max(
        1, sum(entry["frames_encoded"] for entry in stats)
    )
    result["send_stats"] = totals
    return result


def main() -> None:
    parser = sender_arguments()
    parser.add_argument("--shards", type=int, default=0, help="default: one per 100 guilds")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once connected")
    result = trio.run(run, parser.parse_args())
    print(json.dumps({"event": "done", **result}), flush=True)


if __name__ == "__main__":
    main()
