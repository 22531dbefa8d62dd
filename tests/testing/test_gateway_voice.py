"""op 4 and the two voice dispatches, the world's voice states and the scripted voice faults."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from discore_voice import UsageError
from discore_voice.testing import GUILDS, LocalDiscord, SimChannel, SimGuild, open_local_discord

from .conftest import ConnectGateway, RawGateway


def op4(
    guild: SimGuild, channel: SimChannel | None, *, mute: bool = False, deaf: bool = False
) -> dict[str, Any]:
    return {
        "op": 4,
        "d": {
            "guild_id": str(guild.id),
            "channel_id": None if channel is None else str(channel.id),
            "self_mute": mute,
            "self_deaf": deaf,
        },
    }


async def voice_events(gw: RawGateway, count: int = 2) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        payload = await gw.recv()
        if payload["op"] == 0 and payload["t"].startswith("VOICE_"):
            events.append(payload)
    return events


async def no_more_dispatches(gw: RawGateway) -> None:
    """A heartbeat round trip: anything queued before the ACK would show up here.

    GUILD_CREATEs still arriving after READY are the only messages allowed through.
    """
    await gw.send({"op": 1, "d": None})
    while True:
        payload = await gw.recv()
        if payload["op"] == 0 and payload["t"] == "GUILD_CREATE":
            continue
        assert payload["op"] == 11, payload
        return


@pytest.mark.parametrize("order", [("state", "server"), ("server", "state")])
async def test_join_sends_both_events_in_the_configured_order(
    connect: ConnectGateway, order: tuple[str, str]
) -> None:
    async with open_local_discord(voice_events_order=order) as discord:  # type: ignore[arg-type]
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        discord.voice_endpoint = "127.0.0.1:5555"
        async with connect(discord.gateway_url) as gw:
            await gw.identify(discord.bot.token)
            await gw.send(op4(guild, channel, mute=True))
            events = await voice_events(gw)
            kinds = {"VOICE_STATE_UPDATE": "state", "VOICE_SERVER_UPDATE": "server"}
            assert tuple(kinds[e["t"]] for e in events) == order
            state = next(e["d"] for e in events if e["t"] == "VOICE_STATE_UPDATE")
            server = next(e["d"] for e in events if e["t"] == "VOICE_SERVER_UPDATE")
            assert state["guild_id"] == str(guild.id)
            assert state["channel_id"] == str(channel.id)
            assert state["user_id"] == str(discord.bot.user_id)
            assert state["self_mute"] is True and state["self_deaf"] is False
            assert state["member"]["user"]["id"] == str(discord.bot.user_id)
            assert server == {
                "token": server["token"],
                "guild_id": str(guild.id),
                "endpoint": "127.0.0.1:5555",
            }
            recorded = discord.voice_session(guild.id, discord.bot.user_id)
            assert recorded is not None
            assert recorded.session_id == state["session_id"]
            assert recorded.token == server["token"]
            assert discord.validate_voice_identify(
                str(guild.id), str(discord.bot.user_id), state["session_id"], server["token"]
            )
            assert not discord.validate_voice_identify(
                guild.id, discord.bot.user_id, state["session_id"], "wrong"
            )
            assert not discord.validate_voice_identify("x", 1, state["session_id"], "t")
            assert state["session_id"] not in repr(recorded)
            assert server["token"] not in repr(recorded)


async def test_leave_mute_change_and_rejoin(discord: LocalDiscord, connect: ConnectGateway) -> None:
    guild = discord.add_guild()
    first, second = guild.add_voice_channel(name="a"), guild.add_voice_channel(name="b")
    bot = discord.bot.user_id
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token)
        await gw.send(op4(guild, first))
        joined = {e["t"]: e["d"] for e in await voice_events(gw)}
        token = joined["VOICE_SERVER_UPDATE"]["token"]

        # Same channel, mute/deaf changed: a state update alone, the token stays.
        await gw.send(op4(guild, first, mute=True, deaf=True))
        (event,) = await voice_events(gw, 1)
        assert event["t"] == "VOICE_STATE_UPDATE"
        assert event["d"]["self_mute"] is True and event["d"]["self_deaf"] is True
        await no_more_dispatches(gw)
        state = discord.voice_state(guild.id, bot)
        assert state is not None and state.self_mute and state.self_deaf
        assert discord.validate_voice_identify(
            guild.id, bot, joined["VOICE_STATE_UPDATE"]["session_id"], token
        )

        # Another channel: both events, a new token, the same voice session id.
        await gw.send(op4(guild, second))
        moved = {e["t"]: e["d"] for e in await voice_events(gw)}
        assert moved["VOICE_STATE_UPDATE"]["channel_id"] == str(second.id)
        assert moved["VOICE_SERVER_UPDATE"]["token"] != token
        assert (
            moved["VOICE_STATE_UPDATE"]["session_id"] == joined["VOICE_STATE_UPDATE"]["session_id"]
        )
        assert not discord.validate_voice_identify(
            guild.id, bot, moved["VOICE_STATE_UPDATE"]["session_id"], token
        )

        # Leave: a state update with a null channel, and the voice session is gone.
        await gw.send(op4(guild, None))
        (left,) = await voice_events(gw, 1)
        assert left["t"] == "VOICE_STATE_UPDATE" and left["d"]["channel_id"] is None
        await no_more_dispatches(gw)
        assert discord.voice_state(guild.id, bot) is None
        assert discord.voice_sessions == []

        # Leaving again sends nothing.
        await gw.send(op4(guild, None))
        await no_more_dispatches(gw)


async def test_full_channel_sends_neither_event(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    guild = discord.add_guild()
    channel = guild.add_voice_channel(user_limit=1)
    human = guild.add_member("alice")
    discord.set_voice_state(guild.id, human.user_id, channel.id)
    async with connect(discord.gateway_url) as gw:
        ready = await gw.identify(discord.bot.token)
        assert ready["d"]["guilds"][0]["id"] == str(guild.id)
        created = await gw.dispatch("GUILD_CREATE")
        assert [v["user_id"] for v in created["d"]["voice_states"]] == [str(human.user_id)]
        await gw.send(op4(guild, channel))
        await no_more_dispatches(gw)
        assert discord.voice_state(guild.id, discord.bot.user_id) is None
        # The human leaves, and the bot fits.
        discord.set_voice_state(guild.id, human.user_id, None)
        (left,) = await voice_events(gw, 1)
        assert left["d"]["user_id"] == str(human.user_id) and left["d"]["channel_id"] is None
        await gw.send(op4(guild, channel))
        assert len(await voice_events(gw)) == 2


async def test_unknown_or_text_channel_is_ignored(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    guild = discord.add_guild()
    text = guild.add_text_channel()
    other = discord.add_guild().add_voice_channel()
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token)
        await gw.send(op4(guild, text))
        await gw.send(op4(guild, other))
        await no_more_dispatches(gw)
    assert discord.voice_sessions == []


async def test_without_voice_states_intent_only_the_server_update_comes(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    guild = discord.add_guild()
    channel = guild.add_voice_channel()
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token, intents=GUILDS)
        await gw.send(op4(guild, channel))
        (event,) = await voice_events(gw, 1)
        assert event["t"] == "VOICE_SERVER_UPDATE"
        await no_more_dispatches(gw)
        assert discord.voice_state(guild.id, discord.bot.user_id) is not None
    assert "VOICE_STATE_UPDATE" not in discord.sessions[0].dispatch_types


async def test_other_bots_see_the_voice_state_but_not_the_server(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    guild = discord.add_guild()
    channel = guild.add_voice_channel()
    other = discord.add_bot("other")
    async with connect(discord.gateway_url) as gw, connect(discord.gateway_url) as watcher:
        await gw.identify(discord.bot.token)
        await watcher.identify(other.token)
        await gw.send(op4(guild, channel))
        await voice_events(gw)
        (seen,) = await voice_events(watcher, 1)
        assert seen["t"] == "VOICE_STATE_UPDATE"
        assert seen["d"]["user_id"] == str(discord.bot.user_id)
        await no_more_dispatches(watcher)


async def test_scripted_move_kick_and_server_updates(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    guild = discord.add_guild()
    first, second = guild.add_voice_channel(), guild.add_voice_channel()
    bot = discord.bot.user_id
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token)
        await gw.send(op4(guild, first))
        joined = {e["t"]: e["d"] for e in await voice_events(gw)}

        discord.move_bot(guild.id, bot, second.id)
        moved = {e["t"]: e["d"] for e in await voice_events(gw)}
        assert moved["VOICE_STATE_UPDATE"]["channel_id"] == str(second.id)
        assert moved["VOICE_SERVER_UPDATE"]["token"] != joined["VOICE_SERVER_UPDATE"]["token"]

        discord.send_voice_server_update(guild.id, None)
        (gone,) = await voice_events(gw, 1)
        assert gone["d"]["endpoint"] is None
        discord.send_voice_server_update(guild.id, "127.0.0.1:6000")
        (back,) = await voice_events(gw, 1)
        assert back["d"]["endpoint"] == "127.0.0.1:6000"
        assert back["d"]["token"] != moved["VOICE_SERVER_UPDATE"]["token"]
        session = discord.voice_session(guild.id, bot)
        assert session is not None and session.endpoint == "127.0.0.1:6000"

        discord.kick(guild.id, bot)
        (kicked,) = await voice_events(gw, 1)
        assert kicked["t"] == "VOICE_STATE_UPDATE" and kicked["d"]["channel_id"] is None
        assert discord.voice_state(guild.id, bot) is None
        with pytest.raises(UsageError):
            discord.kick(guild.id, bot)


async def test_deleting_a_channel_disconnects_its_occupants(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    guild = discord.add_guild()
    channel = guild.add_voice_channel()
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token)
        await gw.send(op4(guild, channel))
        await voice_events(gw)
        discord.delete_channel(channel.id)
        (left,) = await voice_events(gw, 1)
        assert left["d"]["channel_id"] is None
        deleted = await gw.dispatch("CHANNEL_DELETE")
        assert deleted["d"]["id"] == str(channel.id)
    assert discord.voice_sessions == []


async def test_invalidated_session_drops_its_voice_state(
    discord: LocalDiscord, connect: ConnectGateway
) -> None:
    guild = discord.add_guild()
    channel = guild.add_voice_channel()
    async with connect(discord.gateway_url) as gw:
        await gw.identify(discord.bot.token)
        await gw.send(op4(guild, channel))
        await voice_events(gw)
        await gw.ws.aclose(1000)
    with trio.fail_after(5):
        await discord.wait_for(lambda: discord.sessions[0].state == "invalidated")
    assert discord.voice_state(guild.id, discord.bot.user_id) is None


async def test_voice_events_order_is_checked(discord: LocalDiscord) -> None:
    with pytest.raises(UsageError):
        discord.voice_events_order = ("state", "state")
    assert discord.voice_events_order == ("state", "server")
