"""voice_events_gap spaces one guild's two voice events; it holds up nothing else."""

from __future__ import annotations

from typing import Any

import trio
from trio.testing import MockClock

from discore_voice.testing import open_local_discord

from .conftest import RawGateway, connect_gateway

# Under the raw client's 5 s receive bound; serialised pairs would need 3 x GAP.
GAP = 3.0


def _op4(guild_id: int, channel_id: int | None) -> dict[str, Any]:
    channel = None if channel_id is None else str(channel_id)
    return {
        "op": 4,
        "d": {
            "guild_id": str(guild_id),
            "channel_id": channel,
            "self_mute": False,
            "self_deaf": False,
        },
    }


async def _voice_events(gw: RawGateway, count: int) -> list[tuple[float, str, int]]:
    """(arrival time, event, guild id) of the next ``count`` voice dispatches."""
    seen: list[tuple[float, str, int]] = []
    while len(seen) < count:
        payload = await gw.recv()
        if payload["op"] == 0 and payload["t"] in ("VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE"):
            seen.append((trio.current_time(), payload["t"], int(payload["d"]["guild_id"])))
    return seen


async def test_two_guilds_join_at_once_and_each_pair_is_one_gap_apart(
    jump_clock: MockClock,
) -> None:
    async with open_local_discord(voice_events_gap=GAP) as discord:
        guilds = [discord.add_guild(), discord.add_guild()]
        channels = [guild.add_voice_channel() for guild in guilds]
        async with connect_gateway(discord.gateway_url) as gw:
            await gw.identify(discord.bot.token)
            start = trio.current_time()
            for guild, channel in zip(guilds, channels, strict=True):
                await gw.send(_op4(guild.id, channel.id))
            events = await _voice_events(gw, 4)
    for guild in guilds:
        (first, first_name), (second, second_name) = [
            (at, name) for at, name, guild_id in events if guild_id == guild.id
        ]
        assert (first_name, second_name) == ("VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE")
        assert first - start < 1.0
        assert GAP <= second - first < GAP + 1.0
    # Both pairs finish after one gap, not one after the other.
    assert max(at for at, _, _ in events) - start < GAP + 1.0


async def test_a_leave_during_the_gap_cancels_the_stale_half(jump_clock: MockClock) -> None:
    async with open_local_discord(voice_events_gap=GAP) as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        async with connect_gateway(discord.gateway_url) as gw:
            await gw.identify(discord.bot.token)
            await gw.send(_op4(guild.id, channel.id))
            ((_, joined, _),) = await _voice_events(gw, 1)
            assert joined == "VOICE_STATE_UPDATE"
            await gw.send(_op4(guild.id, None))
            ((_, left, _),) = await _voice_events(gw, 1)
            assert left == "VOICE_STATE_UPDATE"
            await trio.sleep(GAP * 2)  # mock time: long past when the stale half was due
            bot = discord.bot.user_id
            dispatched = [
                d.type for d in discord.sessions[0].dispatches if d.type.startswith("VOICE")
            ]
            assert dispatched == ["VOICE_STATE_UPDATE", "VOICE_STATE_UPDATE"]
            assert discord.voice_state(guild.id, bot) is None
