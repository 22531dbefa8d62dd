"""The gateway shard against the local Discord: handshake, resume, faults, limits, fan-out."""

from __future__ import annotations

import functools
import logging

import pytest
import trio
from trio.testing import MockClock

from discore_voice._core.gateway.errors import GatewayUnreachable, ShardClosed
from discore_voice._core.gateway.intents import Intents
from discore_voice._core.gateway.voice import (
    VOICE_SERVER_UPDATE,
    VOICE_STATE_UPDATE,
    parse_voice_server_update,
    parse_voice_state_update,
)
from discore_voice._errors import UsageError
from discore_voice._shell.shard.connection import Shard, open_shard, shard_for_guild
from discore_voice.testing import GatewaySession, LocalDiscord

from .conftest import WAIT


def session_of(discord: LocalDiscord) -> GatewaySession:
    assert discord.sessions, "no session identified"
    return discord.sessions[-1]


async def test_identify_with_intents_and_clean_close(discord: LocalDiscord) -> None:
    intents = Intents.GUILDS | Intents.GUILD_VOICE_STATES | Intents.GUILD_MESSAGES
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=intents, gateway_url=discord.gateway_url
        ) as shard:
            assert isinstance(shard, Shard)
            assert shard.is_ready
            assert shard.user_id == discord.bot.user_id
            assert shard.intents == intents
            assert (shard.shard_id, shard.shard_count) == (0, 1)
            session = session_of(discord)
            assert session.intents == int(intents)
            assert session.shard == (0, 1)
            assert session.identify["compress"] is False
            assert set(session.identify["properties"]) == {"os", "browser", "device"}
            connection = discord.connections[0]
            assert connection.compress
            assert "v=10" in connection.path and "encoding=json" in connection.path
    assert shard.is_closed and not shard.is_ready
    assert discord.connections[0].close_code == 1000
    assert discord.connections[0].closed_by == "client"
    assert session.state == "invalidated"
    with pytest.raises(ShardClosed):
        await shard.update_voice_state(1, None)
    late = shard.subscribe()
    assert late.closed
    async for _ in late:
        raise AssertionError("a subscription of a closed shard must be empty")


async def test_tls_verified_with_the_simulator_ca() -> None:
    from discore_voice._core.gateway.errors import GatewayError
    from discore_voice.testing import open_local_discord

    async with open_local_discord(tls=True) as sim:
        assert sim.gateway_url.startswith("wss://")
        with trio.fail_after(WAIT):
            async with open_shard(
                sim.bot.token,
                intents=Intents.VOICE_DEFAULT,
                gateway_url=sim.gateway_url,
                ssl_context=sim.client_ssl_context(),
            ) as shard:
                assert shard.user_id == sim.bot.user_id
        # The default context does not trust the simulator's CA: a clear, immediate error.
        with trio.fail_after(WAIT), pytest.raises(GatewayError, match="certificate"):
            async with open_shard(
                sim.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=sim.gateway_url
            ):
                raise AssertionError("must not connect")
        assert len(sim.sessions) == 1


async def test_heartbeats_and_a_zombie_connection_resumes_without_loss(
    discord: LocalDiscord, jump_clock: MockClock
) -> None:
    with trio.fail_after(WAIT * 10):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            session = session_of(discord)
            events = shard.subscribe()
            seen_before = len(session.dispatches)
            # Heartbeats go out (time jumps to them) and are acknowledged.
            await discord.wait_for(lambda: session.ops_received.count(1) >= 2)
            assert shard.latency is not None
            assert shard.is_ready
            # Stop acknowledging: the next beat finds the previous one un-ACKed.
            discord.stall_heartbeat_acks(session, True)
            discord.add_guild(name="during the stall")
            await discord.wait_for(lambda: len(discord.connections) == 2)
            discord.stall_heartbeat_acks(session, False)
            discord.add_guild(name="while reconnecting")
            await discord.wait_for(
                lambda: session.resume_count == 1 and session.state == "connected"
            )
            last = discord.add_guild(name="after the resume")
            received: list[str] = []
            async for name, data in events:
                received.append(name)
                if name == "GUILD_CREATE" and data["id"] == str(last.id):
                    break
            # Every dispatch of the session, in sequence order, exactly once.
            expected = [d.type for d in session.dispatches[seen_before:]]
            assert received == expected, [(d.seq, d.type) for d in session.dispatches]
            assert received.count("GUILD_CREATE") == 3
            assert "RESUMED" in received
            assert discord.connections[0].close_code == 4000
            assert discord.connections[0].closed_by == "client"
            resume = [p for p in session.received if p["op"] == 6]
            assert len(resume) == 1
            assert resume[0]["d"]["token"] == "<redacted>"
            assert shard.is_ready
    assert len(discord.sessions) == 1


async def test_server_heartbeat_request(discord: LocalDiscord) -> None:
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ):
            session = session_of(discord)
            before = session.ops_received.count(1)
            discord.request_heartbeat(session)
            await discord.wait_for(lambda: session.ops_received.count(1) == before + 1)


async def test_op7_reconnect_resumes(discord: LocalDiscord) -> None:
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            session = session_of(discord)
            events = shard.subscribe("GUILD_CREATE", "RESUMED")
            discord.reconnect(session)
            discord.add_guild(name="replayed or live")
            names = {(await events.receive())[0], (await events.receive())[0]}
            assert names == {"GUILD_CREATE", "RESUMED"}
            assert shard.is_ready
            assert session.resume_count == 1
            assert discord.connections[0].close_code == 4000
            assert len(discord.sessions) == 1


async def test_op9_resumable_resumes(discord: LocalDiscord) -> None:
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            session = session_of(discord)
            with shard.subscribe("RESUMED") as resumed:
                discord.invalid_session(session, True)
                await resumed.receive()
            assert shard.is_ready
            assert session.resume_count == 1
            assert len(discord.sessions) == 1


async def test_op9_not_resumable_waits_then_identifies(
    discord: LocalDiscord, jump_clock: MockClock
) -> None:
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            first = session_of(discord)
            ready = shard.subscribe("READY")
            invalidated_at = trio.current_time()
            discord.invalid_session(first, False)
            await ready.receive()
            waited = trio.current_time() - invalidated_at
            assert 1.0 <= waited <= 5.5
            second = session_of(discord)
            assert second.session_id != first.session_id
            assert second.resume_count == 0
            assert [p["op"] for p in second.received][:1] == [2]
            assert shard.is_ready
            assert shard.user_id == discord.bot.user_id


async def test_resume_refused_falls_back_to_identify(
    discord: LocalDiscord, jump_clock: MockClock
) -> None:
    """A resume of a session Discord already forgot gets op 9 false: identify afresh."""
    with trio.fail_after(WAIT * 10):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            first = session_of(discord)
            ready = shard.subscribe("READY", "RESUMED")
            discord.invalidate(first)
            discord.close_gateway(first, 4000)
            assert (await ready.receive())[0] == "READY"
            assert shard.is_ready
            assert len(discord.sessions) == 2
            assert [p["op"] for p in discord.sessions[1].received][:1] == [2]


@pytest.mark.parametrize("code", [4007, 4009])
async def test_close_codes_that_forbid_resume(
    discord: LocalDiscord, jump_clock: MockClock, code: int
) -> None:
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            ready = shard.subscribe("READY", "RESUMED")
            discord.close_gateway(session_of(discord), code)
            assert (await ready.receive())[0] == "READY"
            assert shard.is_ready
            assert len(discord.sessions) == 2
            assert session_of(discord).resume_count == 0


async def test_rate_limiter_holds_a_burst_under_the_limit(
    discord: LocalDiscord, jump_clock: MockClock
) -> None:
    guild = discord.add_guild(name="g")
    channel = guild.add_voice_channel(name="v")
    burst = 150
    with trio.fail_after(WAIT * 10):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            session = session_of(discord)
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for index in range(burst):
                    # Joins (mute toggles) wait until sent, so the burst takes two windows.
                    nursery.start_soon(
                        functools.partial(
                            shard.update_voice_state, guild.id, channel.id, self_mute=index % 2 == 0
                        )
                    )
            elapsed = trio.current_time() - start
            await discord.wait_for(lambda: session.ops_received.count(4) == burst)
            assert elapsed >= 60.0
            # Heartbeats use reserved slots: the burst never starved them (one is due within 41 s).
            assert session.ops_received.count(1) >= 1
            assert len(discord.connections) == 1
            assert discord.connections[0].close_code is None
            assert shard.is_ready


async def test_slow_subscriber_does_not_hold_up_the_shard(
    discord: LocalDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="discore_voice.gateway")
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            session = session_of(discord)
            slow = shard.subscribe("GUILD_CREATE", buffer_size=2)
            fast = shard.subscribe("GUILD_CREATE")
            gone = shard.subscribe("GUILD_CREATE", buffer_size=1)
            gone.close()
            assert shard.subscriber_count == 2  # unsubscribing removed it
            guilds = [discord.add_guild(name=f"g{i}") for i in range(10)]
            received = [await fast.receive() for _ in guilds]
            assert [data["id"] for _, data in received] == [str(g.id) for g in guilds]
            assert slow.dropped == 8
            assert fast.dropped == 0
            assert gone.dropped == 0 and gone.closed
            assert shard.is_ready
            before = session.ops_received.count(1)
            discord.request_heartbeat(session)
            await discord.wait_for(lambda: session.ops_received.count(1) == before + 1)
            assert [(await slow.receive())[1]["id"] for _ in range(2)] == [
                str(g.id) for g in guilds[:2]
            ]
            with pytest.raises(trio.WouldBlock):
                slow.receive_nowait()
            fast.close()
            assert fast.closed
            assert shard.subscriber_count == 1
            discord.add_guild(name="after unsubscribing")
            assert (await slow.receive())[0] == "GUILD_CREATE"
    assert "not keeping up" in caplog.text


async def test_update_voice_state_brings_both_voice_events(discord: LocalDiscord) -> None:
    guild = discord.add_guild(name="g")
    channel = guild.add_voice_channel(name="v")
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            assert shard.serves_guild(guild.id)
            with shard.subscribe(VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE) as events:
                await shard.update_voice_state(str(guild.id), channel.id, self_deaf=True)
                got = dict([await events.receive(), await events.receive()])
            state = parse_voice_state_update(got[VOICE_STATE_UPDATE])
            server = parse_voice_server_update(got[VOICE_SERVER_UPDATE])
            assert state.user_id == shard.user_id
            assert (state.guild_id, state.channel_id) == (guild.id, channel.id)
            assert state.self_deaf and not state.self_mute
            assert server.guild_id == guild.id and server.endpoint
            voice = discord.voice_session(guild.id, shard.user_id)
            assert voice is not None
            assert (voice.session_id, voice.token) == (state.session_id, server.token)


async def test_argument_validation(discord: LocalDiscord) -> None:
    token = discord.bot.token
    url = discord.gateway_url
    bad: list[dict[str, object]] = [
        {"shard_id": 1, "shard_count": 1},
        {"shard_id": -1, "shard_count": 2},
        {"shard_count": 0},
        {"shard_id": True},
        {"gateway_url": "https://gateway.discord.gg"},
        {"intents": -1},
        {"connect_timeout": 0},
    ]
    for kwargs in bad:
        options: dict[str, object] = {"intents": Intents.VOICE_DEFAULT, "gateway_url": url}
        options.update(kwargs)
        with pytest.raises(UsageError):
            async with open_shard(token, **options):  # type: ignore[arg-type]
                raise AssertionError(kwargs)
    with pytest.raises(UsageError) as info:
        async with open_shard("", intents=Intents.VOICE_DEFAULT, gateway_url=url):
            raise AssertionError
    assert "token" in str(info.value)
    assert discord.connections == []
    with trio.fail_after(WAIT):
        async with open_shard(token, intents=Intents.VOICE_DEFAULT, gateway_url=url) as shard:
            for guild_id in (0, -5, "abc", 1 << 64, None, 1.5):
                with pytest.raises(UsageError):
                    await shard.update_voice_state(guild_id, None)  # type: ignore[arg-type]
                with pytest.raises(UsageError):
                    shard.serves_guild(guild_id)  # type: ignore[arg-type]
            with pytest.raises(UsageError):
                await shard.update_voice_state(1, "x")
            with pytest.raises(UsageError):
                await shard.update_voice_state(1, None, self_mute=1)  # type: ignore[arg-type]
            with pytest.raises(UsageError):
                shard.subscribe("")


def test_shard_for_guild() -> None:
    guild_id = 41771983423143937
    assert shard_for_guild(guild_id, 1) == 0
    assert shard_for_guild(guild_id, 10) == (guild_id >> 22) % 10
    assert shard_for_guild(str(guild_id), 7) == (guild_id >> 22) % 7
    with pytest.raises(UsageError):
        shard_for_guild(guild_id, 0)
    with pytest.raises(UsageError):
        shard_for_guild(-1, 2)


async def test_shards_split_guilds(discord: LocalDiscord) -> None:
    guilds = [discord.add_guild(name=f"g{i}", shard=(i % 2, 2)) for i in range(4)]
    with trio.fail_after(WAIT):
        async with (
            open_shard(
                discord.bot.token,
                intents=Intents.VOICE_DEFAULT,
                gateway_url=discord.gateway_url,
                shard_id=0,
                shard_count=2,
            ) as zero,
            open_shard(
                discord.bot.token,
                intents=Intents.VOICE_DEFAULT,
                gateway_url=discord.gateway_url,
                shard_id=1,
                shard_count=2,
            ) as one,
        ):
            for i, guild in enumerate(guilds):
                owner, other = (zero, one) if i % 2 == 0 else (one, zero)
                assert owner.serves_guild(guild.id) and not other.serves_guild(guild.id)
            assert sorted(s.shard for s in discord.sessions if s.shard) == [(0, 2), (1, 2)]


async def test_unreachable_gateway_is_retried_with_backoff_until_connect_timeout(
    jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="discore_voice.gateway")
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    start = trio.current_time()
    with trio.fail_after(200), pytest.raises(GatewayUnreachable) as caught:
        async with open_shard(
            "a.b.c",
            intents=Intents.VOICE_DEFAULT,
            gateway_url=f"ws://127.0.0.1:{port}",
            connect_timeout=100,
        ):
            raise AssertionError("must not connect")
    # It gave up instead of making a retry that would end past the deadline.
    assert trio.current_time() - start <= 100
    assert "connect_timeout=100 s" in str(caught.value) and "attempts" in str(caught.value)
    delays = [
        float(record.args[-1])  # type: ignore[index, arg-type]
        for record in caplog.records
        if "retrying in" in record.msg
    ]
    assert len(delays) >= 5
    # Exponential with jitter in [d/2, d): each wait is below the cap of its attempt.
    for attempt, delay in enumerate(delays):
        assert min(60.0, 2.0**attempt) / 2 <= delay <= min(60.0, 2.0**attempt)


async def test_update_voice_state_between_connections_waits_for_the_next(
    discord: LocalDiscord, jump_clock: MockClock
) -> None:
    guild = discord.add_guild(name="g")
    channel = guild.add_voice_channel(name="v")
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            first = session_of(discord)
            # op 9 (not resumable): the shard closes, then waits 1-5 s before identifying.
            discord.invalid_session(first, False)
            await discord.wait_for(lambda: discord.connections[0].closed)
            assert not shard.is_ready
            await shard.update_voice_state(guild.id, channel.id)
            second = session_of(discord)
            assert second is not first
            await discord.wait_for(
                lambda: discord.voice_state(guild.id, discord.bot.user_id) is not None
            )
            assert second.ops_received.count(4) == 1
            assert first.ops_received.count(4) == 0


async def test_unknown_opcodes_are_skipped_and_malformed_payloads_resume(
    discord: LocalDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="discore_voice.gateway")
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            session = session_of(discord)
            with shard.subscribe("GUILD_CREATE", "RESUMED") as events:
                discord.send_op(session, {"op": 42, "d": None})
                discord.add_guild(name="after an unknown op")
                assert (await events.receive())[0] == "GUILD_CREATE"
                assert len(discord.connections) == 1
                discord.send_op(session, {"op": 0, "t": 5, "s": "x", "d": None})
                assert (await events.receive())[0] == "RESUMED"
            assert shard.is_ready
            assert session.resume_count == 1
            assert discord.connections[0].close_code == 4000
    assert "unknown gateway opcode 42" in caplog.text
    assert "malformed payload" in caplog.text
