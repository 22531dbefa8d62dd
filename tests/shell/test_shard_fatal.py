"""Close codes Discord says never to retry: each ends the shard with its own clear error."""

from __future__ import annotations

import pytest
import trio

from discore_voice._core.gateway.errors import (
    AuthenticationFailed,
    DisallowedIntents,
    GatewayError,
    InvalidApiVersion,
    InvalidIntents,
    InvalidShard,
    ShardClosed,
    ShardingError,
    ShardingRequired,
)
from discore_voice._core.gateway.intents import Intents
from discore_voice._errors import DiscoreVoiceError
from discore_voice._shell.shard.connection import Shard, open_shard
from discore_voice.testing import LocalDiscord, open_local_discord

from .conftest import WAIT


async def test_wrong_token_raises_authentication_failed_once(discord: LocalDiscord) -> None:
    token = discord.bot.token[:-4] + "nope"
    with trio.fail_after(WAIT), pytest.raises(AuthenticationFailed) as info:
        async with open_shard(
            token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ):
            raise AssertionError("must not become ready")
    assert info.value.code == 4004
    assert "4004" in str(info.value) and "token" in str(info.value)
    assert token not in str(info.value) and token not in repr(info.value)
    assert len(discord.connections) == 1, "an authentication failure must never be retried"
    assert discord.connections[0].close_code == 4004


async def test_disallowed_intents(discord: LocalDiscord) -> None:
    bot = discord.add_bot("unprivileged", privileged_intents=0)
    with trio.fail_after(WAIT), pytest.raises(DisallowedIntents) as info:
        async with open_shard(
            bot.token,
            intents=Intents.VOICE_DEFAULT | Intents.GUILD_MEMBERS,
            gateway_url=discord.gateway_url,
        ):
            raise AssertionError("must not become ready")
    assert info.value.code == 4014
    assert "privileged intent" in str(info.value)
    assert len(discord.connections) == 1


async def test_invalid_intents(discord: LocalDiscord) -> None:
    with trio.fail_after(WAIT), pytest.raises(InvalidIntents):
        async with open_shard(discord.bot.token, intents=1 << 40, gateway_url=discord.gateway_url):
            raise AssertionError("must not become ready")
    assert len(discord.connections) == 1


async def test_sharding_required_before_ready() -> None:
    async with open_local_discord(max_guilds_per_shard=1) as sim:
        sim.add_guild(name="a")
        sim.add_guild(name="b")
        with trio.fail_after(WAIT), pytest.raises(ShardingRequired) as info:
            async with open_shard(
                sim.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=sim.gateway_url
            ):
                raise AssertionError("must not become ready")
        assert isinstance(info.value, ShardingError)
        assert info.value.code == 4011
        assert len(sim.connections) == 1


@pytest.mark.parametrize(("code", "kind"), [(4010, InvalidShard), (4012, InvalidApiVersion)])
async def test_fatal_close_after_ready_ends_the_block(
    discord: LocalDiscord, code: int, kind: type[GatewayError]
) -> None:
    """After READY a fatal close ends every subscription and leaves the block with the error."""
    reached_the_end = False
    shard: Shard | None = None
    with trio.fail_after(WAIT), pytest.raises(kind) as info:
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            events = shard.subscribe()
            discord.close_gateway(discord.sessions[0], code)
            async for _ in events:
                pass  # ends when the shard stops
            assert shard.is_closed
            assert shard.failure is not None and shard.failure.code == code
            with pytest.raises(ShardClosed, match=str(code)):
                await shard.update_voice_state(1, None)
            await trio.sleep_forever()  # cancelled: the error leaves the block
            reached_the_end = True
    assert not reached_the_end
    assert isinstance(info.value, DiscoreVoiceError)
    assert not isinstance(info.value, BaseExceptionGroup)
    assert shard is not None and shard.failure is info.value
    assert len(discord.connections) == 1


async def test_exceptions_from_the_block_pass_through_unwrapped(discord: LocalDiscord) -> None:
    class Boom(Exception):
        pass

    with trio.fail_after(WAIT), pytest.raises(Boom):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ):
            raise Boom
    assert discord.connections[0].close_code == 1000


async def test_cancelling_the_block_closes_everything(discord: LocalDiscord) -> None:
    with trio.move_on_after(WAIT) as scope:
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert shard.is_closed
    assert discord.connections[0].closed
