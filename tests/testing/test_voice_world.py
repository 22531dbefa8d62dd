"""The voice gateway wired to the simulated main gateway: tokens issued by op 4 are accepted,
superseded ones are not, and simulated members appear to the bot's voice session."""

from __future__ import annotations

from typing import Any

import trio

from discore_voice._core.voice.payloads import ClientsConnect, Identify, Ready
from discore_voice.testing import open_local_discord
from discore_voice.testing._voice.gateway import VoiceServer, WorldVoiceAuthority

from .conftest import RawGateway, connect_gateway
from .voice_client import WAIT, connect_voice


async def voice_events(gw: RawGateway) -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    while len(events) < 2:
        payload = await gw.recv()
        if payload["op"] == 0 and payload["t"] in ("VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE"):
            events[payload["t"]] = payload["d"]
    return events


async def test_identify_with_what_the_main_gateway_issued() -> None:
    async with open_local_discord() as discord:
        server = VoiceServer(WorldVoiceAuthority(discord), heartbeat_interval_ms=1000)
        await discord.nursery.start(server.serve)
        discord.voice_endpoint = server.endpoint
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        other = guild.add_voice_channel()
        human = guild.add_member("alice")
        discord.set_voice_state(guild.id, human.user_id, channel.id)
        member = server.add_member(guild.id, channel.id, human.user_id)
        async with connect_gateway(discord.gateway_url) as gw:
            await gw.identify(discord.bot.token)
            op4 = {"guild_id": str(guild.id), "self_mute": False, "self_deaf": False}
            await gw.send({"op": 4, "d": {**op4, "channel_id": str(channel.id)}})
            events = await voice_events(gw)
            update = events["VOICE_SERVER_UPDATE"]
            assert update["endpoint"] == server.endpoint
            first = Identify(
                guild.id,
                discord.bot.user_id,
                events["VOICE_STATE_UPDATE"]["session_id"],
                update["token"],
                0,
            )
            async with connect_voice(f"ws://{update['endpoint']}/?v=8") as client:
                await client.expect_hello()
                await client.send(first)
                _, ready = await client.expect(Ready)
                _, connect = await client.expect(ClientsConnect)
                assert connect.user_ids == (human.user_id,)
                assert ClientsConnect((discord.bot.user_id,)) in member.events
                assert server.sessions[0].channel_id == channel.id
                assert ready.ssrc != member.ssrc
            # A move brings a new token; the old one is refused.
            await gw.send({"op": 4, "d": {**op4, "channel_id": str(other.id)}})
            await voice_events(gw)
            async with connect_voice(server.endpoint_url) as client:
                await client.expect_hello()
                await client.send(first)
                with trio.fail_after(WAIT):
                    assert await client.close_code() == 4004


async def test_main_gateway_changes_end_voice_sessions() -> None:
    async with open_local_discord() as discord:
        server = VoiceServer(WorldVoiceAuthority(discord), heartbeat_interval_ms=1000)
        await discord.nursery.start(server.serve)
        discord.nursery.start_soon(server.follow_world, discord)
        discord.voice_endpoint = server.endpoint
        guild = discord.add_guild()
        channels = [guild.add_voice_channel() for _ in range(3)]
        async with connect_gateway(discord.gateway_url) as gw:
            await gw.identify(discord.bot.token)
            op4 = {"guild_id": str(guild.id), "self_mute": False, "self_deaf": False}
            expected = {0: 4014, 1: 4022, 2: 4014}
            for index, channel in enumerate(channels):
                await gw.send({"op": 4, "d": {**op4, "channel_id": str(channel.id)}})
                events = await voice_events(gw)
                identify = Identify(
                    guild.id,
                    discord.bot.user_id,
                    events["VOICE_STATE_UPDATE"]["session_id"],
                    events["VOICE_SERVER_UPDATE"]["token"],
                    0,
                )
                async with connect_voice(server.endpoint_url) as client:
                    await client.expect_hello()
                    await client.send(identify)
                    await client.expect(Ready)
                    if index == 0:
                        discord.kick(guild.id, discord.bot.user_id)
                    elif index == 1:
                        discord.delete_channel(channel.id)
                    else:
                        discord.move_bot(guild.id, discord.bot.user_id, channels[0].id)
                    with trio.fail_after(WAIT):
                        assert await client.close_code() == expected[index]
        assert [s.state for s in server.sessions] == ["ended"] * 3
