"""Gateway-voice bridges: a shard is one, and a forwarded bridge carries voice to another process.

The forwarding test runs the main bot and a voice worker as two trio tasks joined only by a
loopback socket pair carrying JSON lines, the way two processes would be.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from discore_voice import (
    BRIDGE_EVENTS,
    ForwardedBridge,
    InvalidationReason,
    Shard,
    voice_connection,
)
from discore_voice._core.gateway.errors import BridgeClosed
from discore_voice._core.gateway.intents import Intents
from discore_voice._core.gateway.voice import (
    VOICE_SERVER_UPDATE,
    VOICE_STATE_UPDATE,
    parse_voice_server_update,
    parse_voice_state_update,
)
from discore_voice._core.snowflake import Snowflake
from discore_voice._errors import UsageError
from discore_voice._shell.bridge import GatewayVoiceBridge
from discore_voice._shell.shard.connection import open_shard
from discore_voice.testing import LocalDiscord

from .conftest import WAIT


async def join_through(
    bridge: GatewayVoiceBridge, guild_id: int, channel_id: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a voice connection does with a bridge: subscribe, send op 4, wait for both events."""
    async with bridge.subscribe(VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE) as events:
        await bridge.update_voice_state(guild_id, channel_id, self_mute=True)
        state: dict[str, Any] | None = None
        server: dict[str, Any] | None = None
        async for name, data in events:
            if name == VOICE_STATE_UPDATE and data["user_id"] == str(bridge.user_id):
                state = data
            elif name == VOICE_SERVER_UPDATE and data["guild_id"] == str(guild_id):
                server = data
            if state is not None and server is not None:
                return state, server
    raise AssertionError("the bridge closed before both voice events arrived")


async def test_a_shard_is_a_bridge(discord: LocalDiscord) -> None:
    guild = discord.add_guild(name="g")
    channel = guild.add_voice_channel(name="v")
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            assert isinstance(shard, GatewayVoiceBridge)
            state, server = await join_through(shard, guild.id, channel.id)
    assert parse_voice_state_update(state).self_mute
    assert parse_voice_server_update(server).endpoint


async def main_bot(shard: Shard, stream: trio.SocketStream) -> None:
    """The main bot's side: forward voice dispatches, send the op 4 requests that come back."""

    async def forward() -> None:
        async with shard.subscribe(VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE) as events:
            async for name, data in events:
                line = json.dumps({"t": name, "d": data}).encode() + b"\n"
                await stream.send_all(line)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward)
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                assert request["op"] == 4
                d = request["d"]
                await shard.update_voice_state(
                    d["guild_id"],
                    d["channel_id"],
                    self_mute=d["self_mute"],
                    self_deaf=d["self_deaf"],
                )
        nursery.cancel_scope.cancel()
    # The worker hung up: hang up too, which the worker sees as its bridge going away.
    await stream.send_eof()


async def voice_worker(
    stream: trio.SocketStream,
    user_id: int,
    guild_id: int,
    channel_id: int,
    result: dict[str, Any],
) -> None:
    """The voice process's side, as in the example of ``discore_voice._shell.bridge``."""

    async def send_voice_state(
        guild: Snowflake, channel: Snowflake | None, self_mute: bool, self_deaf: bool
    ) -> None:
        request = {
            "op": 4,
            "d": {
                "guild_id": str(guild),
                "channel_id": None if channel is None else str(channel),
                "self_mute": self_mute,
                "self_deaf": self_deaf,
            },
        }
        await stream.send_all(json.dumps(request).encode() + b"\n")

    async def voice(bridge: ForwardedBridge) -> None:
        result["state"], result["server"] = await join_through(bridge, guild_id, channel_id)
        # Joined: tell the main bot we are done; it hangs up in turn.
        await stream.send_eof()
        # The connection stays up; voice learns the bridge went away when events end.
        async with bridge.subscribe() as events:
            async for _ in events:
                pass
        result["bridge closed"] = bridge.is_closed
        with pytest.raises(BridgeClosed):
            await bridge.update_voice_state(guild_id, None)

    with ForwardedBridge(user_id, send_voice_state) as bridge:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(voice, bridge)
            buffer = b""
            async for chunk in stream:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    bridge.dispatch(event["t"], event["d"])
                    bridge.dispatch("MESSAGE_CREATE", {"ignored": True})
            bridge.close()


async def test_forwarded_bridge_over_a_socket(discord: LocalDiscord) -> None:
    guild = discord.add_guild(name="g")
    channel = guild.add_voice_channel(name="v")
    result: dict[str, Any] = {}
    bot_end, worker_end = trio.socket.socketpair()
    with trio.fail_after(WAIT):
        async with (
            trio.SocketStream(bot_end) as bot_stream,
            trio.SocketStream(worker_end) as worker_stream,
            open_shard(
                discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
            ) as shard,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(main_bot, shard, bot_stream)
            await voice_worker(worker_stream, shard.user_id, guild.id, channel.id, result)
            nursery.cancel_scope.cancel()
            voice = discord.voice_session(guild.id, discord.bot.user_id)
    state = parse_voice_state_update(result["state"])
    server = parse_voice_server_update(result["server"])
    assert (state.guild_id, state.channel_id, state.user_id) == (
        guild.id,
        channel.id,
        discord.bot.user_id,
    )
    assert state.self_mute
    assert voice is not None and voice.token == server.token
    assert result["bridge closed"]


async def test_forwarded_bridge_never_blocks_and_filters() -> None:
    sent: list[tuple[Snowflake, Snowflake | None, bool, bool]] = []

    async def send_voice_state(
        guild: Snowflake, channel: Snowflake | None, self_mute: bool, self_deaf: bool
    ) -> None:
        sent.append((guild, channel, self_mute, self_deaf))

    bridge = ForwardedBridge("123", send_voice_state, buffer_size=2)
    assert bridge.user_id == 123
    assert isinstance(bridge, GatewayVoiceBridge)
    events = bridge.subscribe(VOICE_SERVER_UPDATE)
    everything = bridge.subscribe()
    for i in range(5):
        bridge.dispatch(VOICE_SERVER_UPDATE, {"i": i})
        bridge.dispatch("GUILD_CREATE", {"i": i})
    bridge.dispatch(VOICE_STATE_UPDATE, {"x": 1})
    assert events.dropped == 3
    assert everything.dropped == 4
    assert [events.receive_nowait()[1]["i"] for _ in range(2)] == [0, 1]
    with pytest.raises(trio.WouldBlock):
        events.receive_nowait()
    await bridge.update_voice_state(1, "2", self_deaf=True)
    await bridge.update_voice_state(1, None)
    assert sent == [(1, 2, False, True), (1, None, False, False)]
    with pytest.raises(UsageError):
        bridge.subscribe("GUILD_CREATE")
    with pytest.raises(UsageError):
        await bridge.update_voice_state("guild", None)
    with pytest.raises(UsageError):
        ForwardedBridge(0, send_voice_state)
    assert "123" in repr(bridge)
    bridge.close()
    bridge.close()
    bridge.dispatch(VOICE_SERVER_UPDATE, {"after": "close"})
    assert [name for name, _ in [everything.receive_nowait(), everything.receive_nowait()]] == [
        VOICE_SERVER_UPDATE,
        VOICE_SERVER_UPDATE,
    ]
    async for _ in everything:
        raise AssertionError("nothing was buffered beyond the two events")
    assert bridge.subscribe().closed
    with pytest.raises(BridgeClosed):
        await bridge.update_voice_state(1, None)


async def forward_to(shard: Shard, bridge: ForwardedBridge) -> None:
    """What a main bot forwards to a worker's bridge, here without the socket in between."""
    async with shard.subscribe(*BRIDGE_EVENTS) as events:
        async for name, data in events:
            bridge.dispatch(name, json.loads(json.dumps(data)))  # as it would cross a wire


@pytest.mark.parametrize("how", ["op 9", "close 4009"])
async def test_a_lost_gateway_session_reaches_a_connection_behind_a_bridge(
    discord: LocalDiscord, jump_clock: MockClock, how: str
) -> None:
    """Without the shard's news forwarded, the worker's connection would stay "valid" and
    silent until Discord dropped its voice state: the bridge must carry the session's loss."""
    guild = discord.add_guild(name="g")
    channel = guild.add_voice_channel(name="v")

    async def send_voice_state(
        guild_id: Snowflake, channel_id: Snowflake | None, self_mute: bool, self_deaf: bool
    ) -> None:
        await shard.update_voice_state(
            guild_id, channel_id, self_mute=self_mute, self_deaf=self_deaf
        )

    with trio.fail_after(WAIT):
        async with (
            open_shard(
                discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
            ) as shard,
            trio.open_nursery() as nursery,
        ):
            with ForwardedBridge(shard.user_id, send_voice_state) as bridge:
                nursery.start_soon(forward_to, shard, bridge)
                async with voice_connection(bridge, guild.id, channel.id) as vc:
                    session = discord.sessions[-1]
                    lost_at = trio.current_time()
                    if how == "op 9":
                        discord.invalid_session(session, False)
                    else:
                        discord.close_gateway(session, 4009)
                    invalidation = await vc.wait_invalidated()
                    assert trio.current_time() - lost_at < 1.0
            nursery.cancel_scope.cancel()
    assert invalidation.reason is InvalidationReason.GATEWAY_CLOSED
    assert "gateway session" in invalidation.detail


def test_bridge_events_name_the_voice_dispatches_and_the_shards_news() -> None:
    assert {VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE} < BRIDGE_EVENTS
    with ForwardedBridge(1, _never_sends) as bridge, bridge.subscribe(*BRIDGE_EVENTS):
        pass  # every name in it is one a forwarded bridge accepts


async def _never_sends(
    guild_id: Snowflake, channel_id: Snowflake | None, self_mute: bool, self_deaf: bool
) -> None:
    raise AssertionError("nothing is sent")
