"""The main gateway's handshake, heartbeats, compression, sharding and close codes."""

from __future__ import annotations

import json
import zlib

import pytest
import trio

from discore_voice.testing import GUILD_VOICE_STATES, GUILDS, LocalDiscord, open_local_discord

from .conftest import ConnectGateway


async def test_hello_identify_ready_and_guild_create(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    guild = discord.add_guild(name="g")
    channel = guild.add_voice_channel(name="v", user_limit=3)
    async with connect(discord.gateway_url) as gw:
        hello = await gw.hello()
        assert hello["d"] == {"heartbeat_interval": 1000}
        ready = await gw.identify(discord.bot.token, hello=False)
        data = ready["d"]
        assert ready["s"] == 1
        assert data["v"] == 10
        assert data["user"]["id"] == str(discord.bot.user_id)
        assert data["user"]["bot"] is True and data["user"]["discriminator"] == "0"
        assert data["guilds"] == [{"id": str(guild.id), "unavailable": True}]
        assert data["resume_gateway_url"] == discord.gateway_url
        assert data["application"]["id"] == str(discord.bot.application_id)
        assert "shard" not in data
        created = await gw.dispatch("GUILD_CREATE")
        assert created["s"] == 2
        g = created["d"]
        assert g["id"] == str(guild.id) and g["unavailable"] is False
        assert [c["id"] for c in g["channels"]] == [str(channel.id)]
        assert g["channels"][0]["type"] == 2 and g["channels"][0]["user_limit"] == 3
        assert str(discord.bot.user_id) in [m["user"]["id"] for m in g["members"]]
        assert g["voice_states"] == []
        assert g["roles"][0]["id"] == str(guild.id)
    session = discord.sessions[0]
    assert session.intents == GUILDS | GUILD_VOICE_STATES
    assert "token" not in session.identify
    assert session.identify["properties"]["browser"] == "tests"
    assert session.dispatch_types == ["READY", "GUILD_CREATE"]
    assert session.ops_received == [2]


async def test_heartbeat_is_acknowledged_before_and_after_identify(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    async with connect(discord.gateway_url) as gw:
        await gw.hello()
        await gw.send({"op": 1, "d": None})
        assert (await gw.recv())["op"] == 11
        await gw.identify(discord.bot.token, hello=False)
        await gw.send({"op": 1, "d": 1})
        assert (await gw.recv_op(11))["d"] is None
    assert discord.sessions[0].ops_received == [2, 1]


async def test_zlib_stream_compresses_with_one_context_and_sync_flushes(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    discord.add_guild(name="g").add_voice_channel()
    async with connect(discord.gateway_url, "?v=10&encoding=json&compress=zlib-stream") as gw:
        await gw.identify(discord.bot.token)
        await gw.dispatch("GUILD_CREATE")
        frames = [f for f in gw.raw_frames if isinstance(f, bytes)]
        assert len(frames) == len(gw.raw_frames)
    assert len(frames) == 3
    assert all(isinstance(f, bytes) and f.endswith(b"\x00\x00\xff\xff") for f in frames)
    # One shared context: the later frames cannot be inflated on their own.
    with pytest.raises(zlib.error):
        zlib.decompressobj().decompress(frames[2])
    inflator = zlib.decompressobj()
    texts = [json.loads(inflator.decompress(f)) for f in frames]
    assert [t["op"] for t in texts] == [10, 0, 0]
    assert discord.connections[0].compress


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?v=9&encoding=json", 4012),
        ("?v=11&encoding=json", 4012),
        ("?v=10&encoding=etf", 4002),
        ("?v=10&encoding=json&compress=zstd-stream", 4002),
    ],
)
async def test_bad_query_parameters_close(
    discord: LocalDiscord, connect: ConnectGateway, query: str, code: int
) -> None:
    async with connect(discord.gateway_url, query) as gw:
        assert await gw.close_code() == code
    assert discord.connections[0].received_ops == []


async def test_bad_token_closes_4004(discord: LocalDiscord, connect: ConnectGateway) -> None:
    async with connect(discord.gateway_url) as gw:
        await gw.hello()
        await gw.send({"op": 2, "d": {"token": "nope", "intents": 1, "properties": {}}})
        assert await gw.close_code() == 4004
    assert discord.sessions == []


@pytest.mark.parametrize(
    ("payloads", "code"),
    [
        ([{"op": 4, "d": {}}], 4003),
        ([{"op": 3, "d": {}}], 4003),
        (["IDENTIFY", "IDENTIFY"], 4005),
        (["not json"], 4002),
        (["[1, 2]"], 4002),
        ([{"d": None}], 4001),
        ([{"op": 99, "d": None}], 4001),
        ([{"op": 10, "d": None}], 4001),
        ([{"op": 1, "d": "x"}], 4001),
        ([{"op": 2, "d": [1]}], 4001),
        ([{"op": 2, "d": {"token": 5, "intents": 1, "properties": {}}}], 4001),
        (["IDENTIFY", {"op": 4, "d": {"guild_id": "x"}}], 4001),
        (["x" * 5000], 4002),
    ],
)
async def test_protocol_violations_close_with_the_documented_code(
    discord: LocalDiscord, connect: ConnectGateway, payloads: list[object], code: int
) -> None:
    async with connect(discord.gateway_url) as gw:
        await gw.hello()
        for payload in payloads:
            if payload == "IDENTIFY":
                payload = {
                    "op": 2,
                    "d": {"token": discord.bot.token, "intents": 1, "properties": {}},
                }
            await gw.send(payload)
        assert await gw.close_code() == code
    assert discord.connections[0].close_code == code
    assert discord.connections[0].closed_by == "server"


@pytest.mark.parametrize(
    ("intents", "shard", "code"),
    [
        (1 << 17, None, 4013),
        (-1, None, 4013),
        (1 << 1, None, 4014),
        (1, [2, 2], 4010),
        (1, [0, 0], 4010),
        (1, [0], 4010),
        (1, ["0", 1], 4010),
    ],
)
async def test_identify_checks_intents_and_shard(
    discord: LocalDiscord,
    connect: ConnectGateway,
    intents: int,
    shard: list[object] | None,
    code: int,
) -> None:
    discord.bot.privileged_intents = 0
    async with connect(discord.gateway_url) as gw:
        await gw.hello()
        data: dict[str, object] = {"token": discord.bot.token, "intents": intents}
        data["properties"] = {}
        if shard is not None:
            data["shard"] = shard
        await gw.send({"op": 2, "d": data})
        assert await gw.close_code() == code


async def test_granted_privileged_intent_is_accepted(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token, intents=(1 << 1) | (1 << 15))
    assert discord.sessions[0].intents == (1 << 1) | (1 << 15)


async def test_sharding_required_above_the_guild_threshold(connect: ConnectGateway) -> None:
    async with open_local_discord(max_guilds_per_shard=1) as discord:
        discord.add_guild(shard=(0, 2))
        discord.add_guild(shard=(1, 2))
        async with connect(discord.gateway_url) as gw:
            await gw.hello()
            await gw.send(
                {"op": 2, "d": {"token": discord.bot.token, "intents": 1, "properties": {}}}
            )
            assert await gw.close_code() == 4011
        async with connect(discord.gateway_url) as gw:
            ready = await gw.identify(discord.bot.token, shard=[1, 2])
            assert ready["d"]["shard"] == [1, 2]


async def test_each_shard_sees_only_its_guilds(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    guilds = [discord.add_guild(name=f"g{i}") for i in range(6)]
    # Consecutive guilds spread over shards without being asked to.
    assert {g.shard_id(3) for g in guilds} == {0, 1, 2}
    for shard_id in range(3):
        async with connect(discord.gateway_url) as gw:
            ready = await gw.identify(discord.bot.token, shard=[shard_id, 3])
            expected = {str(g.id) for g in guilds if (g.id >> 22) % 3 == shard_id}
            assert {g["id"] for g in ready["d"]["guilds"]} == expected
            seen = set()
            for _ in expected:
                seen.add((await gw.dispatch("GUILD_CREATE"))["d"]["id"])
            assert seen == expected


async def test_without_guilds_intent_there_is_no_guild_create(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    discord.add_guild()
    async with connect(discord.gateway_url) as gw:
        ready = await gw.identify(discord.bot.token, intents=GUILD_VOICE_STATES)
        assert len(ready["d"]["guilds"]) == 1
        await gw.send({"op": 1, "d": 1})
        assert (await gw.recv())["op"] == 11  # nothing came between READY and the ACK
    assert discord.sessions[0].dispatch_types == ["READY"]


async def test_more_than_120_payloads_a_minute_close_4008(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    async with connect(discord.gateway_url) as gw:
        await gw.hello()
        for _ in range(120):
            await gw.send({"op": 1, "d": None})
        for _ in range(120):
            assert (await gw.recv())["op"] == 11
        await gw.send({"op": 1, "d": None})
        assert await gw.close_code() == 4008


async def test_rate_limit_window_slides(connect: ConnectGateway, autojump_clock: object) -> None:
    async with (
        open_local_discord(rate_limit=(3, 60.0)) as discord,
        connect(discord.gateway_url) as gw,
    ):
        await gw.hello()
        for _ in range(3):
            await gw.send({"op": 1, "d": None})
            await gw.recv_op(11)
        await trio.sleep(61)
        for _ in range(3):
            await gw.send({"op": 1, "d": None})
            await gw.recv_op(11)
        await gw.send({"op": 1, "d": None})
        assert await gw.close_code() == 4008


async def test_missing_heartbeats_time_out_with_4009(
    connect: ConnectGateway, autojump_clock: object
) -> None:
    async with open_local_discord(heartbeat_timeout=4.0) as discord:
        async with connect(discord.gateway_url) as gw:
            await gw.identify(discord.bot.token)
            await trio.sleep(3.5)
            await gw.send({"op": 1, "d": 1})
            await gw.recv_op(11)
            await trio.sleep(3.5)
            await gw.send({"op": 1, "d": 1})
            await gw.recv_op(11)
            started = trio.current_time()
            assert await gw.close_code() == 4009
            assert 3.9 < trio.current_time() - started < 4.5
        assert discord.sessions[0].state == "invalidated"


async def test_a_second_client_is_served_after_a_bad_one(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    async with connect(discord.gateway_url) as gw:
        await gw.hello()
        await gw.send(b"\xff\xfe garbage")
        assert await gw.close_code() == 4002
    stream = await trio.open_tcp_stream("127.0.0.1", int(discord.gateway_url.rsplit(":", 1)[1]))
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\n\r\n\x00\x01garbage")
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token)


async def test_an_internal_error_closes_one_connection_with_4000(
    discord: LocalDiscord, connect: ConnectGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    guild = discord.add_guild()
    channel = guild.add_voice_channel()

    def broken(*args: object) -> None:
        raise RuntimeError("simulated bug")

    async with connect(discord.gateway_url) as bystander:
        await bystander.identify(discord.bot.token)
        await bystander.dispatch("GUILD_CREATE")
        with monkeypatch.context() as patch:
            patch.setattr(discord, "handle_voice_state_update", broken)
            async with connect(discord.gateway_url) as gw:
                await gw.identify(discord.bot.token)
                op4 = {"guild_id": str(guild.id), "channel_id": str(channel.id)}
                await gw.send({"op": 4, "d": {**op4, "self_mute": False, "self_deaf": False}})
                assert await gw.close_code() == 4000
        with trio.fail_after(5):
            await discord.wait_for(lambda: discord.sessions[1].state == "disconnected")
        # The other session is untouched and the server accepts new clients.
        await bystander.send({"op": 1, "d": None})
        assert (await bystander.recv())["op"] == 11
        async with connect(discord.gateway_url) as gw:
            await gw.identify(discord.bot.token)


async def test_world_changes_reach_live_sessions(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    async with connect(discord.gateway_url) as gw:
        ready = await gw.identify(discord.bot.token)
        assert ready["d"]["guilds"] == []
        guild = discord.add_guild(name="late")
        created = await gw.dispatch("GUILD_CREATE")
        assert created["d"]["id"] == str(guild.id) and created["d"]["channels"] == []
        channel = guild.add_voice_channel(name="v")
        added = await gw.dispatch("CHANNEL_CREATE")
        assert added["d"]["id"] == str(channel.id) and added["d"]["guild_id"] == str(guild.id)
        assert [created["s"], added["s"]] == [2, 3]


async def test_started_servers_share_the_simulators_lifetime() -> None:
    async with open_local_discord() as discord:
        started = trio.Event()
        cancelled = trio.Event()

        async def server() -> None:
            try:
                started.set()
                await trio.sleep_forever()
            finally:
                cancelled.set()

        discord.nursery.start_soon(server)
        await started.wait()
    assert cancelled.is_set()
