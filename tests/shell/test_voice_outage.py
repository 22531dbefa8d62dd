"""Voice connections across an outage of the main gateway (found by the chaos soak).

While a shard is away, Discord keeps what it would have dispatched and replays it after the
resume. A voice connection must neither give up on a move whose dispatches wait in that replay,
nor take the replay of an earlier connection's dispatches for its own.
"""

from __future__ import annotations

import trio
from trio.testing import MockClock

from discore_voice._core.gateway.intents import Intents
from discore_voice._core.voice.events import Connected
from discore_voice._shell.shard.connection import Shard, open_shard
from discore_voice._shell.voice.connection import VoiceConnection, VoiceEvents, voice_connection
from discore_voice.testing import GatewaySession, LocalDiscord, open_local_discord

from .conftest import WAIT


async def next_connected(events: VoiceEvents) -> Connected:
    async for event in events:
        if isinstance(event, Connected):
            return event
    raise AssertionError("the connection ended")


def live_session(discord: LocalDiscord) -> GatewaySession:
    return next(s for s in discord.sessions if s.alive)


async def shard_away_for_long(discord: LocalDiscord, shard: Shard) -> None:
    """Discord asks for reconnects (op 7) in a row: each resumes, none lasts, so the shard's
    backoff grows; after the last one it stays away for well over the 5 s move grace."""
    session = live_session(discord)
    for _ in range(5):
        resumes = session.resume_count
        discord.reconnect(session)
        await discord.wait_for(lambda r=resumes: session.resume_count > r)  # type: ignore[misc]
    discord.reconnect(session)
    await discord.wait_for(lambda: not shard.is_ready)


async def test_a_move_during_a_gateway_outage_is_followed_not_taken_for_a_kick(
    jump_clock: MockClock,
) -> None:
    """The defect: the old voice server closed with 4022, the move's VOICE_SERVER_UPDATE waited
    in the gateway's replay, and after 5 s the connection ended as CALL_TERMINATED."""
    with trio.fail_after(WAIT * 10):
        async with open_local_discord(dave="off", heartbeat_interval=10_000) as discord:
            guild = discord.add_guild()
            channel = guild.add_voice_channel()
            bot = discord.bot.user_id
            async with open_shard(
                discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
            ) as shard:
                conn = VoiceConnection(shard, guild.id)
                events = conn.subscribe()
                async with conn.connect(channel.id) as vc:
                    first = await next_connected(events)
                    await shard_away_for_long(discord, shard)
                    away_at = trio.current_time()
                    discord.send_voice_server_update(guild.id, None, user_id=bot)
                    discord.send_voice_server_update(guild.id, discord.voice_endpoint, user_id=bot)
                    moved = await next_connected(events)
                    assert moved.ssrc != first.ssrc  # a new voice session on the new server
                    assert trio.current_time() - away_at > 5.0  # longer than the old grace
                    assert vc.is_connected and vc.invalidation is None


async def test_a_rejoin_during_an_outage_ignores_the_earlier_connections_replay(
    jump_clock: MockClock,
) -> None:
    """The defect: the new connection took the replayed VOICE_STATE_UPDATE of the old one's move
    for its own, then the echo of the old one's leave invalidated it (KICKED) before it ever
    connected."""
    with trio.fail_after(WAIT * 10):
        async with open_local_discord(dave="off", heartbeat_interval=10_000) as discord:
            guild = discord.add_guild()
            home, away = guild.add_voice_channel(name="home"), guild.add_voice_channel(name="away")
            bot = discord.bot.user_id
            async with open_shard(
                discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
            ) as shard:
                async with voice_connection(shard, guild.id, home.id):
                    await shard_away_for_long(discord, shard)
                    # A moderator moves the bot; its dispatches wait in the replay.
                    discord.move_bot(guild.id, bot, away.id)
                # The first connection left (its leave queued); the bot joins again at once.
                async with voice_connection(shard, guild.id, home.id, timeout=90) as again:
                    assert again.is_connected and again.channel_id == home.id
                    state = discord.voice_state(guild.id, bot)
                    assert state is not None and state.channel_id == home.id


async def test_a_join_answered_during_a_gateway_outage_completes_after_it(
    jump_clock: MockClock,
) -> None:
    """Found by the soak: a join sent just before the shard went away timed out, though its
    answer only waited in the replay; the handshake's timeout does not count the outage."""
    with trio.fail_after(WAIT * 10):
        async with open_local_discord(
            dave="off", heartbeat_interval=10_000, voice_events_gap=2.0
        ) as discord:
            guild = discord.add_guild()
            channel = guild.add_voice_channel()
            async with open_shard(
                discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
            ) as shard:
                session = live_session(discord)
                for _ in range(5):  # the shard's backoff grows, as in shard_away_for_long
                    resumes = session.resume_count
                    discord.reconnect(session)
                    await discord.wait_for(lambda r=resumes: session.resume_count > r)  # type: ignore[misc]
                connected: list[float] = []

                async def join() -> None:
                    async with voice_connection(shard, guild.id, channel.id, timeout=5) as vc:
                        connected.append(trio.current_time())
                        assert vc.is_connected

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(join)
                    # The op 4 arrives; its VOICE_STATE_UPDATE goes at once, the server update
                    # two seconds later, by then into the replay of a shard that is away.
                    await discord.wait_for(lambda: session.ops_received.count(4) == 1)
                    sent_at = trio.current_time()
                    discord.reconnect(session)
                assert connected and connected[0] - sent_at > 5.0  # past the 5 s timeout
