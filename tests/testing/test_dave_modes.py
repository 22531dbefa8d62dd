"""DAVE modes of the simulator (required, optional, off), through ``open_local_discord``.

The bot joins with op 4 on the main gateway as on Discord, then identifies on the voice gateway
with what VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE carried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from discore_voice import UsageError
from discore_voice._core.voice.payloads import Ready
from discore_voice.testing import (
    LocalDiscord,
    SimChannel,
    SimGuild,
    VoiceServer,
    open_local_discord,
)
from discore_voice.testing._dave.gateway import DaveMode
from discore_voice.testing._voice.gateway import StaticVoiceAuthority, VoiceCredentials

from .conftest import connect_gateway
from .dave_client import dave_bot, heard_all, in_one_group, matches, tone_frames, wait
from .voice_client import (
    BOT,
    CHANNEL,
    GUILD,
    WAIT,
    connect_voice,
    identify,
    joined,
    voice_server,
)


@asynccontextmanager
async def bot_in_voice(
    mode: DaveMode,
) -> AsyncIterator[tuple[LocalDiscord, SimGuild, SimChannel, VoiceCredentials]]:
    """A simulator in ``mode`` and the bot's voice credentials from a real op 4."""
    async with open_local_discord(dave=mode, heartbeat_interval=1000) as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
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
            events: dict[str, dict[str, Any]] = {}
            while len(events) < 2:
                payload = await gw.recv()
                if payload["op"] == 0 and payload["t"] in (
                    "VOICE_STATE_UPDATE",
                    "VOICE_SERVER_UPDATE",
                ):
                    events[payload["t"]] = payload["d"]
            credentials = VoiceCredentials(
                guild_id=guild.id,
                channel_id=channel.id,
                user_id=discord.bot.user_id,
                session_id=events["VOICE_STATE_UPDATE"]["session_id"],
                token=events["VOICE_SERVER_UPDATE"]["token"],
            )
            yield discord, guild, channel, credentials


async def test_required_closes_a_client_without_dave_with_4017_at_once() -> None:
    async with bot_in_voice("required") as (discord, _, _, credentials):
        async with connect_voice(discord.voice.endpoint_url) as client:
            await client.expect_hello()
            await client.send(identify(credentials, dave=0))
            with trio.fail_after(WAIT):
                assert await client.close_code() == 4017
            assert not any(isinstance(m, Ready) for _, m in client.received)
        assert discord.voice.sessions == []


async def test_required_call_through_the_main_gateway() -> None:
    _, frames = tone_frames(0.3)
    async with bot_in_voice("required") as (discord, guild, channel, credentials):
        members = [discord.add_voice_member(guild.id, channel.id, name=f"m{i}") for i in range(3)]
        server = discord.voice
        async with dave_bot(server, credentials) as bot:
            await wait(server, lambda: in_one_group(bot, members))
            assert bot.dave.group_user_ids == {bot.user_id, *(m.user_id for m in members)}
            await bot.send_opus(frames)
            await wait(server, heard_all(members, len(frames)))
        assert all(m.frames_decrypted == len(frames) for m in members)
        assert server.dave_gateway.errors == []


async def test_optional_gives_a_client_without_dave_a_transport_only_call() -> None:
    _, frames = tone_frames(0.2)
    async with bot_in_voice("optional") as (discord, guild, channel, credentials):
        server = discord.voice
        members = [discord.add_voice_member(guild.id, channel.id, name=f"m{i}") for i in range(2)]
        await wait(server, lambda: members[0].voice_privacy_code is not None)
        assert members[0].voice_privacy_code == members[1].voice_privacy_code
        async with joined(server, credentials) as (_, hs):
            assert hs.description.dave_protocol_version == 0
            # The members' call went transport-only for the bot's sake.
            await wait(server, lambda: all(m.dave_protocol_version == 0 for m in members))
            seq = 10
            for frame in frames:
                await hs.udp.send(hs.cipher.encrypt_opus(seq, seq * 960, hs.ready.ssrc, frame))
                seq += 1
            await wait(server, heard_all(members, len(frames)))
            members[0].send_opus(frames[0])
            relayed = hs.cipher.decrypt(await hs.udp.recv())
            assert relayed.payload == frames[0]  # plaintext Opus under transport encryption
        # The bot left: the members upgrade back to DAVE among themselves.
        await wait(
            server,
            lambda: (
                all(m.dave_protocol_version == 1 for m in members)
                and members[0].voice_privacy_code is not None
                and members[0].voice_privacy_code == members[1].voice_privacy_code
            ),
        )
        for member in members:
            assert member.dave_decrypt_failures == 0
            assert member.heard_pcm(discord.bot.user_id)


async def test_optional_runs_dave_for_a_client_that_offers_it() -> None:
    async with bot_in_voice("optional") as (discord, guild, channel, credentials):
        member = discord.add_voice_member(guild.id, channel.id)
        async with dave_bot(discord.voice, credentials) as bot:
            assert bot.hs.description.dave_protocol_version == 1
            await wait(discord.voice, lambda: in_one_group(bot, [member]))


async def test_off_speaks_no_dave() -> None:
    async with bot_in_voice("off") as (discord, guild, channel, credentials):
        member = discord.add_voice_member(guild.id, channel.id)
        async with connect_voice(discord.voice.endpoint_url) as client:
            await client.expect_hello()
            await client.send(identify(credentials, dave=1))
            await client.expect(Ready)
        assert member.dave is None and member.dave_messages == []
        assert discord.voice.dave is None


async def test_optional_mixed_call_downgrades_for_a_legacy_client_and_upgrades_after() -> None:
    pcm, frames = tone_frames(0.9)
    first, second, third = frames[:15], frames[15:30], frames[30:]
    legacy_user = 666_666_666_666_666_666
    async with voice_server(dave_mode="optional") as (server, authority):
        members = [server.add_member(GUILD, CHANNEL, 777_000_000_000_000_001 + i) for i in range(2)]
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: in_one_group(bot, members))
            await bot.send_opus(first)
            async with joined(server, authority.issue(GUILD, CHANNEL, legacy_user)) as (_, hs):
                assert hs.description.dave_protocol_version == 0
                await wait(server, lambda: bot.dave.protocol_version == 0)
                await bot.send_opus(second)
                received = [hs.cipher.decrypt(await hs.udp.recv()).payload for _ in range(3)]
                assert received == second[:3]  # the legacy client hears plain Opus
            await wait(
                server,
                lambda: (
                    in_one_group(bot, members)
                    and bot.dave.protocol_version == 1
                    and all(m.dave_protocol_version == 1 for m in members)
                ),
            )
            await bot.send_opus(third)
            await wait(server, heard_all(members, len(frames)))
        assert server.dave_gateway.channel(CHANNEL).legacy == set()
        for member in members:
            assert member.dave_decrypt_failures == 0
            assert member.frames_decrypted == len(first) + len(third)
            assert matches(pcm, member.heard_pcm(BOT)) > 0.9


def test_an_unknown_mode_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="dave_mode"):
        VoiceServer(StaticVoiceAuthority(), dave_mode="sometimes")  # type: ignore[arg-type]
