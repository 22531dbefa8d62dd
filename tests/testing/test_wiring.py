"""open_local_discord() runs the voice gateway itself: op 4 leads straight to a voice session."""

from __future__ import annotations

from typing import Any

import trio

from discore_voice._core.voice.payloads import ClientsConnect, Identify, Ready
from discore_voice.testing import open_local_discord

from .conftest import RawGateway, connect_gateway
from .voice_client import WAIT, connect_voice


async def _voice_events(gw: RawGateway) -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    while len(events) < 2:
        payload = await gw.recv()
        if payload["op"] == 0 and payload["t"] in ("VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE"):
            events[payload["t"]] = payload["d"]
    return events


async def test_op4_endpoint_leads_to_the_built_in_voice_server() -> None:
    async with open_local_discord(voice_modes=["aead_xchacha20_poly1305_rtpsize"]) as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        member = discord.add_voice_member(guild.id, channel.id, name="alice")
        assert discord.voice_state(guild.id, member.user_id) is not None
        with trio.fail_after(WAIT):
            async with connect_gateway(discord.gateway_url) as gw:
                await gw.identify(discord.bot.token)
                await gw.send(
                    {
                        "op": 4,
                        "d": {
                            "guild_id": str(guild.id),
                            "channel_id": str(channel.id),
                            "self_mute": False,
                            "self_deaf": False,
                        },
                    }
                )
                events = await _voice_events(gw)
                endpoint = events["VOICE_SERVER_UPDATE"]["endpoint"]
                # Plain sockets: a full ws:// URL, which our client uses as given.
                assert endpoint == discord.voice.endpoint_url
                async with connect_voice(endpoint) as client:
                    await client.expect_hello()
                    await client.send(
                        Identify(
                            guild.id,
                            discord.bot.user_id,
                            events["VOICE_STATE_UPDATE"]["session_id"],
                            events["VOICE_SERVER_UPDATE"]["token"],
                            0,
                        )
                    )
                    _, ready = await client.expect(Ready)
                    assert ready.modes == ("aead_xchacha20_poly1305_rtpsize",)
                    _, connect = await client.expect(ClientsConnect)
                    assert connect.user_ids == (member.user_id,)


async def test_tls_simulator_sends_a_bare_host_and_port_like_discord() -> None:
    async with open_local_discord(tls=True) as discord:
        assert discord.voice_endpoint == discord.voice.endpoint
        assert "://" not in discord.voice.endpoint
