"""Voice connections against the local Discord and its voice server, over real sockets."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from discore_voice._core.gateway.errors import AuthenticationFailed
from discore_voice._core.gateway.guilds import ChannelVerdict
from discore_voice._core.gateway.intents import Intents
from discore_voice._core.gateway.limits import SendRateLimiter
from discore_voice._core.transport import AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE
from discore_voice._core.voice import dave as core_dave
from discore_voice._core.voice.dave import max_supported_dave_version
from discore_voice._core.voice.events import (
    Connected,
    DaveStateChanged,
    Invalidated,
    InvalidationReason,
    MemberConnected,
    MemberDisconnected,
    MemberSpeaking,
)
from discore_voice._errors import UsageError
from discore_voice._shell.bridge import ForwardedBridge
from discore_voice._shell.shard.connection import Shard, open_shard
from discore_voice._shell.voice.connection import (
    DIRECTORY_GRACE,
    GuildNotOnShard,
    MissingVoiceIntent,
    VoiceConnection,
    VoiceConnectionBusy,
    VoiceConnectionFailed,
    VoiceEvents,
    voice_connection,
)
from discore_voice.testing import open_local_discord
from discore_voice.testing._faults import ABRUPT
from discore_voice.testing._voice.gateway import (
    WorldVoiceAuthority,
    open_voice_server,
)

from .conftest import WAIT, BotInGuild, settled_until

Env = BotInGuild


@asynccontextmanager
async def environment(
    *,
    intents: Intents = Intents.VOICE_DEFAULT,
    order: tuple[str, str] = ("state", "server"),
    modes: tuple[str, ...] = (XCHACHA20_POLY1305_RTPSIZE, AES256_GCM_RTPSIZE),
) -> AsyncIterator[Env]:
    async with open_local_discord(
        voice_events_order=order,  # type: ignore[arg-type]
        voice_modes=modes,
    ) as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        async with open_shard(
            discord.bot.token, intents=intents, gateway_url=discord.gateway_url
        ) as shard:
            yield Env(discord, shard, guild, channel)


def collect(events: VoiceEvents) -> list[Any]:
    got: list[Any] = []
    while True:
        try:
            got.append(events.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return got


async def next_event(events: VoiceEvents, kind: type[Any]) -> Any:
    async for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"the events ended before a {kind.__name__}")


# --- the handshake --------------------------------------------------------------------------


@pytest.mark.parametrize("order", [("state", "server"), ("server", "state")])
@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        ((XCHACHA20_POLY1305_RTPSIZE, AES256_GCM_RTPSIZE), AES256_GCM_RTPSIZE),
        ((XCHACHA20_POLY1305_RTPSIZE,), XCHACHA20_POLY1305_RTPSIZE),
    ],
)
async def test_handshake_in_both_modes_and_orders(
    order: tuple[str, str], modes: tuple[str, ...], expected: str
) -> None:
    with trio.fail_after(WAIT):
        async with environment(order=order, modes=modes) as env:
            async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
                assert vc.is_valid and vc.is_connected and not vc.is_connecting
                assert vc.guild_id == env.guild.id and vc.channel_id == env.channel.id
                assert vc.encryption_mode == expected
                session = env.session()
                assert vc.ssrc == session.ssrc
                assert session.mode == expected
                assert session.identify["max_dave_protocol_version"] == max_supported_dave_version()
                assert session.select_protocol is not None
                assert vc.invalidation is None
                state = env.discord.voice_state(env.guild.id, env.bot_id)
                assert state is not None and state.channel_id == env.channel.id
            assert not vc.is_valid and not vc.is_connected
            assert vc.invalidation == Invalidated(InvalidationReason.NORMAL, vc.invalidation.detail)
            await env.discord.wait_for(
                lambda: env.discord.voice_state(env.guild.id, env.bot_id) is None
            )
            await env.voice.wait_for(lambda: env.voice.session_for(env.bot_id) is None)
            assert env.sessions()[0].close_codes == [1000]


async def test_tls_voice_server_with_a_bare_endpoint() -> None:
    with trio.fail_after(WAIT):
        async with open_local_discord(tls=True) as discord:
            assert ":" in discord.voice_endpoint and "/" not in discord.voice_endpoint  # type: ignore[operator]
            guild = discord.add_guild()
            channel = guild.add_voice_channel()
            async with (
                open_shard(
                    discord.bot.token,
                    intents=Intents.VOICE_DEFAULT,
                    gateway_url=discord.gateway_url,
                    ssl_context=discord.client_ssl_context(),
                ) as shard,
                voice_connection(
                    shard, guild.id, channel.id, ssl_context=discord.client_ssl_context()
                ) as vc,
            ):
                assert vc.is_connected
                assert discord.voice.connections[0].path == "/?v=8"


async def test_untrusted_certificate_fails_at_once_with_the_real_cause() -> None:
    with trio.fail_after(WAIT):
        async with open_local_discord(tls=True) as discord:
            guild = discord.add_guild()
            channel = guild.add_voice_channel()
            async with open_shard(
                discord.bot.token,
                intents=Intents.VOICE_DEFAULT,
                gateway_url=discord.gateway_url,
                ssl_context=discord.client_ssl_context(),
            ) as shard:
                with pytest.raises(VoiceConnectionFailed) as caught:
                    # The system trust store does not know the simulator's CA.
                    async with voice_connection(shard, guild.id, channel.id):
                        raise AssertionError("unreachable")
                assert caught.value.reason is InvalidationReason.ERROR
                assert "does not verify" in caught.value.cause
                assert len(discord.voice.sessions) == 0


async def test_event_order_and_member_events() -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            conn = VoiceConnection(env.shard, env.guild.id)
            events = conn.subscribe()
            async with conn.connect(env.channel.id) as vc:
                human = env.guild.add_member("human")
                member = env.voice.add_member(env.guild.id, env.channel.id, human.user_id)
                assert await next_event(events, MemberConnected) == MemberConnected(human.user_id)
                member.set_speaking(1)
                speaking = await next_event(events, MemberSpeaking)
                assert speaking == MemberSpeaking(human.user_id, member.ssrc, 1)
                for _ in range(3):
                    member.send_opus(b"\xfc\x00\x01\x02")
                await settled_until(lambda: vc.udp_stats.received >= 3)
                member.leave()
                assert await next_event(events, MemberDisconnected) == MemberDisconnected(
                    human.user_id
                )
            rest = [e async for e in events]
            assert isinstance(rest[-1], Invalidated)
            assert rest[-1].reason is InvalidationReason.NORMAL
        # The first event of all was Connected, before anything else.


async def test_connected_is_the_first_event_and_invalidated_the_last() -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            conn = VoiceConnection(env.shard, env.guild.id)
            events = conn.subscribe()
            async with conn.connect(env.channel.id) as vc:
                assert await conn.wait_connected()
                late = vc.subscribe()
            got = [e async for e in events if not isinstance(e, DaveStateChanged)]
            assert [type(e) for e in got] == [Connected, Invalidated]
            assert got[0] == Connected(env.channel.id, vc.ssrc or 0, AES256_GCM_RTPSIZE)
            assert [type(e) for e in [e async for e in late]][-1:] == [Invalidated]
            assert await conn.wait_invalidated() == got[1]
            assert not await conn.wait_connected()


# --- closes, resumes and moves --------------------------------------------------------------

FATAL = {
    4001: InvalidationReason.ERROR,
    4004: InvalidationReason.ERROR,
    4006: InvalidationReason.SESSION_INVALID,
    4009: InvalidationReason.SESSION_INVALID,
    4011: InvalidationReason.ERROR,
    4014: InvalidationReason.KICKED,
    4016: InvalidationReason.ERROR,
    4017: InvalidationReason.DAVE_REQUIRED,
    4020: InvalidationReason.ERROR,
    4021: InvalidationReason.RATE_LIMITED,
    4022: InvalidationReason.CALL_TERMINATED,
}


@pytest.mark.parametrize(("code", "reason"), sorted(FATAL.items()))
async def test_fatal_close_codes_invalidate_without_reconnecting(
    code: int, reason: InvalidationReason, jump_clock: MockClock
) -> None:
    # The mock clock skips the grace 4014 and 4022 get for a move's dispatches to arrive.
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            env.voice.close(env.session(), code)
            invalidation = await vc.wait_invalidated()
            assert invalidation.reason is reason
            assert str(code) in invalidation.detail
            if code == 4017:
                assert "DAVE" in invalidation.detail
            # Invalid: operations are no-ops, and nothing was retried.
            await vc.update_voice_state(env.channel.id, self_mute=True)
            await vc.disconnect()
            assert not vc.self_mute
            assert len(env.sessions()) == 1
            assert len(env.voice.connections) == 1
            await env.discord.wait_for(
                lambda: env.discord.voice_state(env.guild.id, env.bot_id) is None
            )


@pytest.mark.parametrize("code", [4015, ABRUPT, 1001, 1011])
async def test_resume_keeps_the_ssrc_and_does_not_invalidate(code: int) -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            conn = VoiceConnection(env.shard, env.guild.id)
            events = conn.subscribe()
            async with conn.connect(env.channel.id) as vc:
                ssrc = vc.ssrc
                session = env.session()
                selected = session.select_protocol
                env.voice.close(session, code)
                await env.voice.wait_for(lambda: session.resumes == 1)
                await vc.wait_connected()
                # The same SSRC, and the same UDP socket (the voice server sees the same port).
                assert vc.is_connected and vc.ssrc == ssrc and vc.udp_stats.restarts == 0
                assert session.select_protocol is selected
                assert vc.websocket_stats.resumes == 1
                assert session.ssrc == ssrc and session.state == "connected"
                assert len(env.sessions()) == 1
                # v8 buffered re-delivery: messages sent while away still arrive.
                human = env.guild.add_member("human")
                env.voice.add_member(env.guild.id, env.channel.id, human.user_id)
                assert await next_event(events, MemberConnected) == MemberConnected(human.user_id)
                assert vc.invalidation is None
            got = [type(e) for e in [e async for e in events]]
            assert got == [Invalidated]  # one Connected came before the resume, none after


async def test_messages_missed_while_disconnected_are_redelivered() -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            conn = VoiceConnection(env.shard, env.guild.id)
            events = conn.subscribe()
            async with conn.connect(env.channel.id):
                session = env.session()
                env.voice.close(session, ABRUPT)
                # Sent while no connection carries the session: buffered for the resume.
                await env.voice.wait_for(lambda: not session.connected)
                human = env.guild.add_member("human")
                env.voice.add_member(env.guild.id, env.channel.id, human.user_id)
                assert await next_event(events, MemberConnected) == MemberConnected(human.user_id)
                assert session.resumes == 1


async def test_heartbeats_carry_seq_ack_and_a_stalled_ack_resumes(jump_clock: MockClock) -> None:
    with trio.fail_after(WAIT * 10):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            session = env.session()
            await env.voice.wait_for(lambda: len(session.heartbeats) >= 2)
            # The second heartbeat acknowledges at least the first one's numbered ACK.
            first, second = session.heartbeats[:2]
            assert first.nonce != second.nonce
            assert session.last_seq is not None
            assert first.seq_ack < second.seq_ack <= session.last_seq
            env.voice.stall_heartbeat_acks(session)
            await env.voice.wait_for(lambda: session.resumes >= 1)
            env.voice.stall_heartbeat_acks(session, False)
            await vc.wait_connected()
            assert vc.is_connected and vc.ssrc == session.ssrc
            assert 4000 in session.close_codes
            assert vc.invalidation is None


@pytest.mark.parametrize("null_first", [False, True])
async def test_server_move(null_first: bool) -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            open_voice_server(WorldVoiceAuthority(env.discord)) as other,
        ):
            conn = VoiceConnection(env.shard, env.guild.id)
            events = conn.subscribe()
            async with conn.connect(env.channel.id) as vc:
                await next_event(events, Connected)
                first_ssrc = vc.ssrc
                if null_first:
                    env.discord.send_voice_server_update(env.guild.id, None)
                    await vc.wait_for(lambda: not vc.is_connected)
                    assert vc.is_connecting and vc.is_valid
                env.discord.voice_endpoint = other.endpoint_url
                env.discord.send_voice_server_update(env.guild.id, other.endpoint_url)
                connected = await next_event(events, Connected)
                moved = other.session_for(env.bot_id)
                assert moved is not None and connected.ssrc == moved.ssrc == vc.ssrc
                assert vc.is_connected and vc.ssrc != first_ssrc
                assert vc.invalidation is None
                await env.voice.wait_for(lambda: env.voice.session_for(env.bot_id) is None)


async def test_channel_switch_and_mute_deaf_visible_in_the_simulator() -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            second = env.guild.add_voice_channel(name="second")
            conn = VoiceConnection(env.shard, env.guild.id)
            events = conn.subscribe()
            async with conn.connect(env.channel.id) as vc:
                await next_event(events, Connected)
                await vc.update_voice_state(second.id)
                connected = await next_event(events, Connected)
                assert connected.channel_id == second.id == vc.channel_id
                state = env.discord.voice_state(env.guild.id, env.bot_id)
                assert state is not None and state.channel_id == second.id
                assert env.session().channel_id == second.id
                await vc.update_voice_state(second.id, self_mute=True, self_deaf=True)

                def muted() -> bool:
                    state = env.discord.voice_state(env.guild.id, env.bot_id)
                    return state is not None and state.self_mute and state.self_deaf

                await env.discord.wait_for(muted)
                await vc.wait_for(lambda: vc.self_mute and vc.self_deaf)
                assert vc.is_connected and vc.invalidation is None


async def test_moved_by_a_moderator() -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            second = env.guild.add_voice_channel(name="second")
            conn = VoiceConnection(env.shard, env.guild.id)
            events = conn.subscribe()
            async with conn.connect(env.channel.id) as vc:
                await next_event(events, Connected)
                env.discord.move_bot(env.guild.id, env.bot_id, second.id)
                connected = await next_event(events, Connected)
                assert connected.channel_id == second.id == vc.channel_id
                assert vc.is_connected and vc.invalidation is None
                assert env.session().channel_id == second.id


async def test_connect_muted_and_deafened() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(
                env.shard, env.guild.id, env.channel.id, self_mute=True, self_deaf=True
            ) as vc,
        ):
            state = env.discord.voice_state(env.guild.id, env.bot_id)
            assert state is not None and state.self_mute and state.self_deaf
            assert vc.self_mute and vc.self_deaf


@pytest.mark.parametrize("how", ["kick", "delete_channel", "end_session_4014"])
async def test_kick_and_deleted_channel(how: str, jump_clock: MockClock) -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            if how == "kick":
                env.discord.kick(env.guild.id, env.bot_id)
            elif how == "delete_channel":
                env.discord.delete_channel(env.channel.id)
            else:
                env.voice.end_session(env.session())
            invalidation = await vc.wait_invalidated()
            assert invalidation.reason is InvalidationReason.KICKED
            assert not vc.is_connected
            assert len(env.sessions()) == 1


async def test_disconnect_leaves_with_normal_and_the_block_carries_on() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            await vc.disconnect()
            assert (await vc.wait_invalidated()).reason is InvalidationReason.NORMAL
            await env.discord.wait_for(
                lambda: env.discord.voice_state(env.guild.id, env.bot_id) is None
            )
            await vc.update_voice_state(env.channel.id)  # no-op
            ops = env.discord.sessions[-1].ops_received
            assert ops.count(4) == 2  # join, leave; nothing when leaving the block again


async def test_update_with_null_channel_disconnects() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            await vc.update_voice_state(None)
            assert vc.invalidation is not None
            assert vc.invalidation.reason is InvalidationReason.NORMAL


# --- the gateway going away -----------------------------------------------------------------


async def test_shard_failing_invalidates_with_gateway_closed() -> None:
    conn: VoiceConnection | None = None
    with trio.fail_after(WAIT):
        async with open_local_discord() as discord:
            guild = discord.add_guild()
            channel = guild.add_voice_channel()
            with pytest.raises(AuthenticationFailed):
                async with open_shard(
                    discord.bot.token,
                    intents=Intents.VOICE_DEFAULT,
                    gateway_url=discord.gateway_url,
                ) as shard:
                    conn = VoiceConnection(shard, guild.id)
                    async with conn.connect(channel.id):
                        discord.close_gateway(discord.sessions[-1], 4004)
                        await trio.sleep_forever()
    assert conn is not None and conn.invalidation is not None
    assert conn.invalidation.reason is InvalidationReason.GATEWAY_CLOSED


async def test_bridge_closing_invalidates_with_gateway_closed() -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            shard = env.shard
            bridge = ForwardedBridge(shard.user_id, _forward_to(shard))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, shard, bridge)
                async with voice_connection(bridge, env.guild.id, env.channel.id) as vc:
                    assert vc.is_connected
                    bridge.close()
                    invalidation = await vc.wait_invalidated()
                    assert invalidation.reason is InvalidationReason.GATEWAY_CLOSED
                nursery.cancel_scope.cancel()


def _forward_to(shard: Shard) -> Any:
    async def send(guild_id: int, channel_id: int | None, mute: bool, deaf: bool) -> None:
        await shard.update_voice_state(guild_id, channel_id, self_mute=mute, self_deaf=deaf)

    return send


async def _pump(shard: Shard, bridge: ForwardedBridge) -> None:
    with shard.subscribe("VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE") as subscription:
        async for name, data in subscription:
            bridge.dispatch(name, data)


async def test_shard_leaving_before_the_voice_block_ends() -> None:
    """The voice block may outlive the shard's when run in a nursery outside it."""
    with trio.fail_after(WAIT):
        async with environment() as env:
            shard = env.shard
            bridge = ForwardedBridge(shard.user_id, _forward_to(shard))
            with bridge:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pump, shard, bridge)
                    async with voice_connection(bridge, env.guild.id, env.channel.id) as vc:
                        nursery.cancel_scope.cancel()
                        bridge.close()
                        await vc.wait_invalidated()
            assert vc.invalidation is not None
            assert vc.invalidation.reason is InvalidationReason.GATEWAY_CLOSED


# --- failing to connect ---------------------------------------------------------------------


async def test_connect_timeout_leaves_nothing_behind(jump_clock: MockClock) -> None:
    with trio.fail_after(WAIT * 10):
        async with environment() as env:
            full = env.guild.add_voice_channel(name="full", user_limit=1)
            human = env.guild.add_member("human")
            env.discord.set_voice_state(env.guild.id, human.user_id, full.id)
            start = trio.current_time()
            with pytest.raises(VoiceConnectionFailed) as caught:
                async with voice_connection(env.shard, env.guild.id, full.id, timeout=7):
                    raise AssertionError("must not connect")
            assert caught.value.reason is InvalidationReason.TIMED_OUT
            assert "7 s" in caught.value.cause
            assert trio.current_time() - start >= 7
            gateway = env.discord.sessions[-1]
            await env.discord.wait_for(lambda: gateway.ops_received.count(4) == 2)  # join, leave
            # The guild is free again.
            async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
                assert vc.is_connected


@pytest.mark.parametrize(
    "case", ["not_in_guild", "swapped", "text_channel", "no_such_channel", "other_guild", "deleted"]
)
async def test_a_join_that_cannot_work_fails_at_once_and_sends_nothing(
    case: str, jump_clock: MockClock
) -> None:
    """The shard's guild list (READY, GUILD_CREATE, CHANNEL_*) refuses wrong ids before op 4.

    An unknown guild or channel gets DIRECTORY_GRACE for its GUILD_CREATE / CHANNEL_CREATE to
    arrive (it may have been created a moment ago); a text channel is refused at once.
    """
    with trio.fail_after(WAIT):
        async with environment() as env:
            guild_id, channel_id = env.guild.id, env.channel.id
            if case == "not_in_guild":
                guild_id = 123456789012345678
                expected, words = InvalidationReason.NOT_IN_GUILD, "not in guild"
            elif case == "swapped":
                guild_id, channel_id = channel_id, guild_id
                expected, words = InvalidationReason.NOT_IN_GUILD, "swapped"
            elif case == "text_channel":
                channel_id = env.guild.add_text_channel().id
                expected, words = InvalidationReason.NOT_A_VOICE_CHANNEL, "a text channel"
            elif case == "no_such_channel":
                channel_id = 123456789012345678
                expected, words = InvalidationReason.NO_SUCH_CHANNEL, "has no channel"
            elif case == "other_guild":
                channel_id = env.discord.add_guild().add_voice_channel().id
                expected, words = InvalidationReason.NO_SUCH_CHANNEL, "is a channel of guild"
            else:
                env.discord.delete_channel(channel_id)
                expected, words = InvalidationReason.NO_SUCH_CHANNEL, "has no channel"
            await settled_until(  # the shard has seen the CHANNEL_CREATE / CHANNEL_DELETE
                lambda: (
                    env.shard.check_voice_channel(guild_id, channel_id).verdict.value
                    == expected.value
                )
            )
            start = trio.current_time()
            with pytest.raises(VoiceConnectionFailed) as caught:
                async with voice_connection(env.shard, guild_id, channel_id):
                    raise AssertionError("must not connect")
            waited = trio.current_time() - start  # not the minute of a handshake timeout
            if expected is InvalidationReason.NOT_A_VOICE_CHANNEL:
                assert waited < 0.5
            else:
                assert DIRECTORY_GRACE <= waited < DIRECTORY_GRACE + 0.5
            assert caught.value.reason is expected
            named = guild_id if expected is InvalidationReason.NOT_IN_GUILD else channel_id
            assert words in caught.value.cause and str(named) in caught.value.cause
            assert env.discord.sessions[-1].ops_received.count(4) == 0  # Discord was not asked
            if case != "deleted":  # the guild is free, and a right join still works
                async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
                    assert vc.is_connected


async def test_without_the_guilds_intent_nothing_is_refused_in_advance() -> None:
    with trio.fail_after(WAIT):
        async with environment(intents=Intents.GUILD_VOICE_STATES) as env:
            text = env.guild.add_text_channel()
            check = env.shard.check_voice_channel(env.guild.id, text.id)
            assert check.verdict is ChannelVerdict.UNKNOWN  # no GUILD_CREATE: no channel list


async def test_handshake_failure_raises_with_reason_and_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(core_dave, "max_supported_dave_version", lambda: 0)
    with trio.fail_after(WAIT):
        async with environment() as env:
            env.voice.dave_protocol_version = 1
            with pytest.raises(VoiceConnectionFailed) as caught:
                async with voice_connection(env.shard, env.guild.id, env.channel.id):
                    raise AssertionError("must not connect")
            assert caught.value.reason is InvalidationReason.DAVE_REQUIRED
            assert "DAVE" in str(caught.value)
            await env.discord.wait_for(
                lambda: env.discord.voice_state(env.guild.id, env.bot_id) is None
            )


async def test_unreachable_voice_server_gives_up_with_error(jump_clock: MockClock) -> None:
    with trio.fail_after(WAIT * 10):
        async with environment() as env:
            with socket.socket() as unused:
                unused.bind(("127.0.0.1", 0))
                port = unused.getsockname()[1]
            env.discord.voice_endpoint = f"ws://127.0.0.1:{port}/?v=8"
            with pytest.raises(VoiceConnectionFailed) as caught:
                async with voice_connection(env.shard, env.guild.id, env.channel.id):
                    raise AssertionError("unreachable")
            assert caught.value.reason is InvalidationReason.RECONNECT_FAILED
            assert "gave up" in caught.value.cause and str(port) in caught.value.cause
            await env.discord.wait_for(
                lambda: env.discord.voice_state(env.guild.id, env.bot_id) is None
            )


async def test_one_connection_per_guild() -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            other_guild = env.discord.add_guild()
            other_channel = other_guild.add_voice_channel()
            async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
                with pytest.raises(VoiceConnectionBusy, match="one per guild"):
                    async with voice_connection(env.shard, env.guild.id, env.channel.id):
                        raise AssertionError("unreachable")
                assert vc.is_connected
                async with voice_connection(env.shard, other_guild.id, other_channel.id) as vc2:
                    assert vc2.is_connected and vc.is_connected
            with pytest.raises(UsageError, match="connects once"):
                async with vc.connect(env.channel.id):
                    raise AssertionError("unreachable")


async def test_intent_check() -> None:
    with trio.fail_after(WAIT):
        async with environment(intents=Intents.GUILDS) as env:
            with pytest.raises(MissingVoiceIntent, match="GUILD_VOICE_STATES"):
                VoiceConnection(env.shard, env.guild.id)
            assert env.discord.sessions[-1].ops_received.count(4) == 0


async def test_guild_on_another_shard() -> None:
    with trio.fail_after(WAIT):
        async with open_local_discord(shard_count=2) as discord:
            guild = discord.add_guild(shard=(1, 2))
            async with open_shard(
                discord.bot.token,
                intents=Intents.VOICE_DEFAULT,
                gateway_url=discord.gateway_url,
                shard_id=0,
                shard_count=2,
            ) as shard:
                with pytest.raises(GuildNotOnShard, match="shard 1 of 2"):
                    VoiceConnection(shard, guild.id)


async def test_bad_arguments() -> None:
    async with environment() as env:
        with pytest.raises(UsageError):
            VoiceConnection(env.shard, "not an id")
        with pytest.raises(UsageError):
            VoiceConnection(object(), env.guild.id)  # type: ignore[arg-type]
        conn = VoiceConnection(env.shard, env.guild.id)
        with pytest.raises(UsageError):
            async with conn.connect(env.channel.id, timeout=0):
                pass
        with pytest.raises(UsageError):
            async with conn.connect(env.channel.id, self_mute=1):  # type: ignore[arg-type]
                pass


# --- UDP ------------------------------------------------------------------------------------


async def test_foreign_datagrams_never_arrive_and_garbage_is_counted() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            select = env.session().select_protocol
            assert select is not None
            target = (select.address, select.port)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoofer:
                # Looks like RTP and would count as undecryptable, were it let in.
                spoofer.sendto(b"\x80\x78" + bytes(40), target)
                spoofer.sendto(b"\x01", target)
            # Sent after the spoofer's datagrams on loopback, so counted after them if they
            # had been let in: the connected socket's kernel filter dropped them.
            env.voice.media.send_raw(b"\x80\x78" + bytes(41), target)
            await settled_until(lambda: vc.udp_stats.dropped.get("undecryptable"))
            assert vc.udp_stats.dropped == {"undecryptable": 1}
            env.voice.media.send_raw(b"\x01", target)
            await settled_until(lambda: vc.udp_stats.dropped.get("malformed"))
            assert vc.udp_stats.received == 0 and vc.is_connected


async def test_udp_keepalive(jump_clock: MockClock) -> None:
    with trio.fail_after(WAIT * 10):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            stats = env.voice.media.stats
            before = stats.ip_discovery_requests
            await env.voice.wait_for(lambda: stats.ip_discovery_requests >= before + 3)
            assert vc.is_connected
            # The keep-alive is an IP discovery request: no voice server counts it as garbage.
            assert stats.dropped == 0


# --- cancellation and leaks -----------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def count_tasks() -> int:
    """Every task in the run, the simulator's included: what a leak would add to."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    pending, count = [root], 0
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


STEPS = ["op4", "identify", "ip_discovery", "select_protocol", "connected"]


@pytest.mark.parametrize("step", STEPS)
async def test_cancelling_at_each_step_leaves_nothing_behind(step: str) -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            fds = open_fds()
            gateway = env.discord.sessions[-1]

            def reached() -> bool:
                if step == "op4":
                    return 4 in gateway.ops_received
                ops = [op for c in env.voice.connections for op in c.received_ops]
                if step == "identify":
                    return 0 in ops
                if step == "ip_discovery":
                    return env.voice.media.stats.ip_discovery_requests > 0
                if step == "select_protocol":
                    return 1 in ops
                return bool(env.voice.sessions) and env.voice.sessions[-1].mode is not None

            conn = VoiceConnection(env.shard, env.guild.id)
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def cancel_when_reached() -> None:
                        await env.discord.wait_for(reached) if step == "op4" else (
                            await env.voice.wait_for(reached)
                        )
                        scope.cancel()

                    nursery.start_soon(cancel_when_reached)
                    async with conn.connect(env.channel.id):
                        await trio.sleep_forever()
            assert scope.cancelled_caught
            assert conn.invalidation is not None
            assert conn.invalidation.reason is InvalidationReason.NORMAL
            await env.discord.wait_for(
                lambda: env.discord.voice_state(env.guild.id, env.bot_id) is None
            )
            await env.voice.wait_for(lambda: env.voice.session_for(env.bot_id) is None)
            await env.voice.wait_for(lambda: all(c.close_code for c in env.voice.connections))
            assert open_fds() == fds
            # The guild is free for the next connection.
            async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
                assert vc.is_connected


async def test_no_leaks_after_100_connect_leave_cycles(jump_clock: MockClock) -> None:
    # The mock clock only skips the gateway's send rate limit (120 per minute, two op 4 a cycle).
    with trio.fail_after(WAIT * 40):
        async with environment() as env:
            async with voice_connection(env.shard, env.guild.id, env.channel.id):
                pass
            await env.voice.wait_for(lambda: all(c.close_code for c in env.voice.connections))
            fds = open_fds()
            tasks = count_tasks()
            for _ in range(100):
                # The timeout covers the op 4 too, which waits for the gateway's rate limit.
                async with voice_connection(
                    env.shard, env.guild.id, env.channel.id, timeout=300
                ) as vc:
                    assert vc.is_connected
                assert not vc.is_valid
            await env.voice.wait_for(lambda: all(c.close_code for c in env.voice.connections))
            assert open_fds() == fds
            assert count_tasks() == tasks
            assert len(env.sessions()) == 101


async def test_secrets_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(WAIT):
        async with environment() as env:
            async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
                voice = env.discord.voice_session(env.guild.id, env.bot_id)
                assert voice is not None
                token, session_id = voice.token, voice.session_id
                key = env.session().secret_key
                assert key is not None
                env.voice.close(env.session(), 4015)  # a resume sends them again
                await env.voice.wait_for(lambda: env.session().resumes == 1)
                await vc.wait_connected()
                text = caplog.text + repr(vc) + repr(vc.invalidation)
            assert caplog.records, "nothing was logged at all"
            for secret in (token, session_id, key.hex(), str(list(key))):
                assert secret not in text
                assert secret not in caplog.text


async def test_the_timeout_starts_when_a_rate_limited_op4_goes_out(jump_clock: MockClock) -> None:
    with trio.fail_after(WAIT * 10):
        async with environment() as env:
            # Two ordinary commands per 20 s: the third join waits at least a window for its op 4
            # (longer if a heartbeat took a slot), far longer than its 5 s handshake timeout.
            # The shard's limiter, made small (a test seam: Discord's limit is not configurable).
            env.shard._limiter = SendRateLimiter(limit=3, window=20.0, reserved=1)
            channels = []
            for index in range(3):
                guild = env.discord.add_guild(name=f"g{index}")
                channels.append((guild.id, guild.add_voice_channel().id))
            connected_at: list[float] = []
            start = trio.current_time()

            async def join(guild_id: int, channel_id: int) -> None:
                async with voice_connection(env.shard, guild_id, channel_id, timeout=5) as vc:
                    connected_at.append(trio.current_time() - start)
                    assert vc.is_connected

            async with trio.open_nursery() as nursery:
                for guild_id, channel_id in channels:
                    nursery.start_soon(join, guild_id, channel_id)
    connected_at.sort()
    assert len(connected_at) == 3 and connected_at[2] >= 19  # queued, then connected


async def test_an_op4_that_cannot_be_sent_times_out(jump_clock: MockClock) -> None:
    with trio.fail_after(WAIT * 10):
        async with environment() as env:
            # A test seam, as above: one ordinary send per ten minutes.
            env.shard._limiter = SendRateLimiter(limit=2, window=600.0, reserved=1)
            other = env.discord.add_guild(name="other")
            async with voice_connection(env.shard, other.id, other.add_voice_channel().id):
                start = trio.current_time()
                with pytest.raises(VoiceConnectionFailed) as caught:
                    async with voice_connection(env.shard, env.guild.id, env.channel.id, timeout=5):
                        raise AssertionError("must not connect")
    assert caught.value.reason is InvalidationReason.TIMED_OUT
    assert "op 4 could not be sent within 65 s" in caught.value.cause
    assert trio.current_time() - start >= 65
