"""The shard under failure: its backoff, voice leaves it never drops, and a lost gateway session."""

from __future__ import annotations

import contextlib
import functools
import logging

import pytest
import trio
from trio.testing import MockClock

from discore_voice._core.gateway.intents import Intents
from discore_voice._core.voice.events import InvalidationReason
from discore_voice._shell.shard.connection import Shard, open_shard
from discore_voice._shell.voice.connection import voice_connection
from discore_voice.testing import GatewaySession, LocalDiscord, SimChannel, SimGuild

from .conftest import WAIT


def session_of(discord: LocalDiscord) -> GatewaySession:
    assert discord.sessions, "no session identified"
    return discord.sessions[-1]


def voice_channels(discord: LocalDiscord, count: int) -> list[tuple[SimGuild, SimChannel]]:
    places = []
    for index in range(count):
        guild = discord.add_guild(name=f"g{index}")
        places.append((guild, guild.add_voice_channel(name="v")))
    return places


def op4_channels(session: GatewaySession) -> list[tuple[int, int | None]]:
    """(guild, channel or None) of every op 4 the simulator received, in order."""
    return [
        (
            int(p["d"]["guild_id"]),
            None if p["d"]["channel_id"] is None else int(p["d"]["channel_id"]),
        )
        for p in session.received
        if p.get("op") == 4
    ]


async def use_up_the_budget(
    discord: LocalDiscord, shard: Shard, guild: SimGuild, channel: SimChannel, *, sent: int
) -> None:
    """Send ordinary op 4s (mute toggles in one channel) until the window has no slot left, and
    until the simulator has received them and the ``sent`` op 4s the test sent before."""
    session = session_of(discord)
    while shard.send_budget:
        await shard.update_voice_state(guild.id, channel.id, self_mute=sent % 2 == 0)
        sent += 1
    await discord.wait_for(lambda: len(op4_channels(session)) >= sent)


# --- leaves are queued on the shard, sent first, and never dropped -----------------------------


async def test_a_burst_of_leaves_over_the_budget_all_reach_discord(
    discord: LocalDiscord, jump_clock: MockClock
) -> None:
    """The defect: each leave waited 5 s for the budget and was then given up silently; leaving
    10 guilds in a burst left the bot shown in 9 voice channels."""
    places = voice_channels(discord, 10)
    spare_guild, spare_channel = voice_channels(discord, 1)[0]
    bot = discord.bot.user_id
    with trio.fail_after(WAIT * 10):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            async with contextlib.AsyncExitStack() as stack:
                for guild, channel in places:
                    await stack.enter_async_context(voice_connection(shard, guild.id, channel.id))
                assert all(discord.voice_state(g.id, bot) for g, _ in places)
                await use_up_the_budget(discord, shard, spare_guild, spare_channel, sent=10)
                leaving = trio.current_time()
            # Every block ended at once; the leaves wait on the shard, not in the blocks.
            assert trio.current_time() - leaving < 1.0
            assert shard.voice_leaves_queued == 10
            await discord.wait_for(
                lambda: not any(discord.voice_state(g.id, bot) for g, _ in places)
            )
            assert shard.voice_leaves_queued == 0
            assert trio.current_time() - leaving <= 61.0
            assert discord.connections[-1].close_code is None  # no 4008: the budget held


async def test_leaves_go_ahead_of_joins_and_a_leave_drops_the_joins_it_makes_moot(
    discord: LocalDiscord, jump_clock: MockClock
) -> None:
    (first, first_channel), (second, second_channel) = voice_channels(discord, 2)
    with trio.fail_after(WAIT * 10):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            session = session_of(discord)
            await shard.update_voice_state(first.id, first_channel.id)
            await use_up_the_budget(discord, shard, first, first_channel, sent=1)
            sent_before = len(op4_channels(session))
            async with trio.open_nursery() as nursery:
                # Queued in this order: a join of the second guild, a join of the first guild
                # that its leave makes moot, then that leave.
                nursery.start_soon(shard.update_voice_state, second.id, second_channel.id)
                nursery.start_soon(
                    functools.partial(shard.update_voice_state, first.id, first_channel.id)
                )
                await trio.testing.wait_all_tasks_blocked(0.01)
                await shard.update_voice_state(first.id, None)
            later = op4_channels(session)[sent_before:]
    assert later == [(first.id, None), (second.id, second_channel.id)]


async def test_leaving_the_shard_block_flushes_the_queued_leaves(
    discord: LocalDiscord, jump_clock: MockClock
) -> None:
    places = voice_channels(discord, 5)
    with trio.fail_after(WAIT * 10):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            session = session_of(discord)
            for guild, channel in places:
                await shard.update_voice_state(guild.id, channel.id)
            await use_up_the_budget(discord, shard, *places[0], sent=len(places))
            for guild, _ in places:
                await shard.update_voice_state(guild.id, None)
            assert shard.voice_leaves_queued == 5
        # The shard waited for the budget, sent every leave, and only then closed.
        assert [c for g, c in op4_channels(session)[-5:]] == [None] * 5
        assert shard.voice_leaves_queued == 0
        assert discord.connections[-1].close_code == 1000


async def test_a_voice_connection_block_ends_at_once_and_its_leave_follows(
    discord: LocalDiscord, jump_clock: MockClock
) -> None:
    (guild, channel), (other, other_channel) = voice_channels(discord, 2)
    with trio.fail_after(WAIT * 10):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            async with voice_connection(shard, guild.id, channel.id) as vc:
                assert vc.is_connected
                await use_up_the_budget(discord, shard, other, other_channel, sent=1)
                leaving = trio.current_time()
            assert trio.current_time() - leaving < 5.0  # the old bounded wait, now never needed
            assert discord.voice_state(guild.id, discord.bot.user_id) is not None
            await discord.wait_for(
                lambda: discord.voice_state(guild.id, discord.bot.user_id) is None
            )


async def test_a_leave_queued_while_the_shard_reconnects_is_sent_after(
    discord: LocalDiscord, jump_clock: MockClock
) -> None:
    ((guild, channel),) = voice_channels(discord, 1)
    with trio.fail_after(WAIT * 10):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            await shard.update_voice_state(guild.id, channel.id)
            await discord.wait_for(lambda: discord.voice_state(guild.id, discord.bot.user_id))
            discord.close_gateway(session_of(discord), 4000)  # resumable
            await discord.wait_for(lambda: discord.connections[0].closed)
            await shard.update_voice_state(guild.id, None)
            await discord.wait_for(
                lambda: discord.voice_state(guild.id, discord.bot.user_id) is None
            )
            assert len(discord.connections) == 2


# --- a gateway session lost for good ends its voice connections at once ------------------------


@pytest.mark.parametrize("how", ["op 9", "close 4009"])
async def test_a_lost_gateway_session_ends_voice_at_once(
    discord: LocalDiscord, jump_clock: MockClock, how: str
) -> None:
    """The defect: voice stayed "valid" with no audio for ~5 s, then ended as KICKED."""
    ((guild, channel),) = voice_channels(discord, 1)
    with trio.fail_after(WAIT):
        async with (
            open_shard(
                discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
            ) as shard,
            voice_connection(shard, guild.id, channel.id) as vc,
        ):
            session = session_of(discord)
            lost_at = trio.current_time()
            if how == "op 9":
                discord.invalid_session(session, False)
            else:
                discord.close_gateway(session, 4009)
            invalidation = await vc.wait_invalidated()
            assert trio.current_time() - lost_at < 1.0
    assert invalidation.reason is InvalidationReason.GATEWAY_CLOSED
    assert "gateway session" in invalidation.detail


# --- backoff: only a connection that stayed up resets it ----------------------------------------


async def test_a_gateway_failing_after_every_resume_is_not_hammered(
    discord: LocalDiscord, jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The defect: the backoff reset on every RESUMED, and a gateway sending a malformed
    payload right after each resume got 1629 reconnects in 10 s."""
    caplog.set_level(logging.INFO, logger="discore_voice.gateway")
    with trio.fail_after(15 * 60):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            session = session_of(discord)
            start = trio.current_time()
            resumed_at: list[float] = []
            # Bounded in count too: a shard that reconnects at once never lets mock time move.
            while trio.current_time() - start < 10 * 60 and len(resumed_at) < 100:
                count = session.resume_count
                discord.send_op(session, {"op": 0, "t": 5, "s": "x", "d": None})
                await discord.wait_for(lambda c=count: session.resume_count > c)  # type: ignore[misc]
                resumed_at.append(trio.current_time() - start)
            assert not shard.is_closed
    first_minute = [t for t in resumed_at if t < 60]
    steady = [t for t in resumed_at if 5 * 60 <= t < 10 * 60]
    assert len(first_minute) <= 6, resumed_at
    assert len(steady) <= 3 * 5, resumed_at
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "resuming in" in r.getMessage()
    ]
    assert len(warnings) >= len(resumed_at) - 1
