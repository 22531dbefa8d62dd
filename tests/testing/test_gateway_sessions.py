"""Session lifetime: resume with replay, op 7, op 9, scripted closes and stalled ACKs."""

from __future__ import annotations

import pytest
import trio

from discore_voice import UsageError
from discore_voice.testing import LocalDiscord

from .conftest import ConnectGateway
from .test_gateway_voice import op4


async def test_resume_replays_missed_dispatches_then_resumed(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    guild = discord.add_guild()
    channel = guild.add_voice_channel()
    async with connect(discord.gateway_url) as gw:
        ready = await gw.identify(discord.bot.token)
        created = await gw.dispatch("GUILD_CREATE")
        session = discord.sessions[0]
        discord.close_gateway(session, 4000)
        assert await gw.close_code() == 4000
    session_id = ready["d"]["session_id"]
    with trio.fail_after(5):
        await discord.wait_for(lambda: session.state == "disconnected")
    # While it is away, the world moves on: these must be replayed.
    other = guild.add_voice_channel(name="later")
    human = guild.add_member("bob")
    discord.set_voice_state(guild.id, human.user_id, channel.id)
    assert session.seq == created["s"] + 2
    async with connect(ready["d"]["resume_gateway_url"]) as gw:
        await gw.hello()
        resume = {"token": discord.bot.token, "session_id": session_id, "seq": created["s"]}
        await gw.send({"op": 6, "d": resume})
        replayed = [await gw.recv() for _ in range(3)]
        assert [(p["s"], p["t"]) for p in replayed] == [
            (created["s"] + 1, "CHANNEL_CREATE"),
            (created["s"] + 2, "VOICE_STATE_UPDATE"),
            (created["s"] + 3, "RESUMED"),
        ]
        assert replayed[0]["d"]["id"] == str(other.id)
        # The resumed session carries on: op 4 works, with the next sequence numbers.
        await gw.send(op4(guild, channel))
        events = [await gw.recv() for _ in range(2)]
        assert [e["s"] for e in events] == [created["s"] + 4, created["s"] + 5]
    assert session.resume_count == 1 and session.connection_count == 2
    assert session.close_codes[0] == 4000
    assert [p["op"] for p in session.received][-2:] == [6, 4]
    assert all(p["d"].get("token") != discord.bot.token for p in session.received)


async def test_resume_of_a_dead_session_gets_invalid_session(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    async with connect(discord.gateway_url) as gw:
        ready = await gw.identify(discord.bot.token)
        discord.invalid_session(discord.sessions[0], resumable=False)
        assert (await gw.recv_op(9))["d"] is False
    assert discord.sessions[0].state == "invalidated"
    async with connect(discord.gateway_url) as gw:
        await gw.hello()
        resume = {"token": discord.bot.token, "session_id": ready["d"]["session_id"], "seq": 1}
        await gw.send({"op": 6, "d": resume})
        assert (await gw.recv())["op"] == 9
        # The connection stays usable for a fresh identify.
        await gw.identify(discord.bot.token, hello=False)


async def test_resumable_invalid_session_keeps_the_session(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    async with connect(discord.gateway_url) as gw:
        ready = await gw.identify(discord.bot.token)
        discord.invalid_session(discord.sessions[0], resumable=True)
        assert (await gw.recv_op(9))["d"] is True
        await gw.ws.aclose(4000)
    assert discord.sessions[0].state != "invalidated"
    async with connect(discord.gateway_url) as gw:
        await gw.hello()
        resume = {"token": discord.bot.token, "session_id": ready["d"]["session_id"], "seq": 1}
        await gw.send({"op": 6, "d": resume})
        await gw.dispatch("RESUMED")


async def test_resume_with_a_future_seq_closes_4007(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    async with connect(discord.gateway_url) as gw:
        ready = await gw.identify(discord.bot.token)
        discord.close_gateway(discord.sessions[0], 4000)
        await gw.close_code()
    async with connect(discord.gateway_url) as gw:
        await gw.hello()
        resume = {"token": discord.bot.token, "session_id": ready["d"]["session_id"], "seq": 99}
        await gw.send({"op": 6, "d": resume})
        assert await gw.close_code() == 4007


async def test_resume_with_another_bots_token_fails(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    other = discord.add_bot("other")
    async with connect(discord.gateway_url) as gw:
        ready = await gw.identify(discord.bot.token)
        resume = {"token": other.token, "session_id": ready["d"]["session_id"], "seq": 1}
        async with connect(discord.gateway_url) as intruder:
            await intruder.hello()
            await intruder.send({"op": 6, "d": resume})
            assert (await intruder.recv())["op"] == 9
            resume["token"] = "garbage"
            await intruder.send({"op": 6, "d": resume})
            assert await intruder.close_code() == 4004


async def test_resume_takes_over_a_zombie_connection(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    async with connect(discord.gateway_url) as zombie:
        ready = await zombie.identify(discord.bot.token)
        async with connect(discord.gateway_url) as gw:
            await gw.hello()
            resume = {"token": discord.bot.token, "session_id": ready["d"]["session_id"], "seq": 1}
            await gw.send({"op": 6, "d": resume})
            assert (await gw.dispatch("RESUMED"))["s"] == 2
            assert await zombie.close_code() == 4000
    assert discord.sessions[0].close_codes[0] == 4000


async def test_reconnect_sends_op_7(discord: LocalDiscord, connect: ConnectGateway) -> None:
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token)
        discord.reconnect(discord.sessions[0])
        assert (await gw.recv())["op"] == 7
        discord.request_heartbeat(discord.sessions[0])
        assert (await gw.recv())["op"] == 1
    with pytest.raises(UsageError):
        discord.reconnect(discord.sessions[0])


@pytest.mark.parametrize(("code", "state"), [(4000, "disconnected"), (4014, "invalidated")])
async def test_close_gateway_with_a_code(
    discord: LocalDiscord, connect: ConnectGateway, code: int, state: str
) -> None:
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token)
        discord.close_gateway(discord.sessions[0], code)
        assert await gw.close_code() == code
        with trio.fail_after(5):
            await discord.wait_for(lambda: discord.sessions[0].state == state)
    with pytest.raises(UsageError):
        discord.close_gateway(discord.sessions[0], 1006)


async def test_stalled_heartbeat_acks(discord: LocalDiscord, connect: ConnectGateway) -> None:
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token)
        session = discord.sessions[0]
        discord.stall_heartbeat_acks(session, True)
        await gw.send({"op": 1, "d": 1})
        with trio.fail_after(5):
            await discord.wait_for(lambda: session.ops_received.count(1) == 1)
        # Turn ACKs back on: the next heartbeat's ACK is the first message after READY.
        discord.stall_heartbeat_acks(session, False)
        await gw.send({"op": 1, "d": 1})
        assert (await gw.recv())["op"] == 11
    assert [p["op"] for p in session.sent].count(11) == 1


async def test_wait_for_wakes_on_identify(discord: LocalDiscord, connect: ConnectGateway) -> None:
    async with trio.open_nursery() as nursery:

        async def client() -> None:
            async with connect(discord.gateway_url) as gw:
                await gw.identify(discord.bot.token)
                await gw.send({"op": 1, "d": None})
                await gw.recv_op(11)

        nursery.start_soon(client)
        with trio.fail_after(5):
            await discord.wait_for(lambda: discord.sessions)
    assert len(discord.sessions) == 1
    assert repr(discord.sessions[0]).count(discord.sessions[0].session_id) == 0


@pytest.mark.parametrize("then", ["op4", "identify"])
async def test_after_op_9_the_connection_is_unauthenticated(
    discord: LocalDiscord, connect: ConnectGateway, then: str
) -> None:
    guild = discord.add_guild()
    channel = guild.add_voice_channel()
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token)
        discord.invalid_session(discord.sessions[0], resumable=False)
        await gw.recv_op(9)
        if then == "op4":
            await gw.send(op4(guild, channel))
            assert await gw.close_code() == 4003
            assert discord.voice_sessions == []
        else:
            await gw.identify(discord.bot.token, hello=False)
            assert [s.state for s in discord.sessions] == ["invalidated", "connected"]


async def test_logs_name_no_secrets(
    discord: LocalDiscord, connect: ConnectGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="discore_voice.testing")
    guild = discord.add_guild()
    channel = guild.add_voice_channel()
    async with connect(discord.gateway_url) as gw:
        ready = await gw.identify(discord.bot.token)
        await gw.send(op4(guild, channel))
        server = await gw.dispatch("VOICE_SERVER_UPDATE")
        await gw.send({"op": 6, "d": {"token": discord.bot.token, "session_id": "x", "seq": 0}})
        assert await gw.close_code() == 4005
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("discore_voice"))
    assert "session identified" in text and "4005" in text
    for secret in (discord.bot.token, ready["d"]["session_id"], server["d"]["token"]):
        assert secret not in text
