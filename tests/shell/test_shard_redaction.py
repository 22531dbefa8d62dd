"""The bot token never reaches a log line, a repr or an exception message."""

from __future__ import annotations

import logging

import pytest
import trio
from trio.testing import MockClock

from discore_voice._core.gateway.errors import AuthenticationFailed, ShardClosed
from discore_voice._core.gateway.intents import Intents
from discore_voice._shell.shard.connection import open_shard
from discore_voice.testing import LocalDiscord

from .conftest import WAIT


async def test_token_never_leaks(
    discord: LocalDiscord, jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = discord.bot.token
    texts: list[str] = []
    guild = discord.add_guild(name="g")
    channel = guild.add_voice_channel(name="v")
    with trio.fail_after(WAIT * 10):
        async with open_shard(
            token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            session = discord.sessions[0]
            events = shard.subscribe("RESUMED", "READY", "VOICE_SERVER_UPDATE")
            texts += [repr(shard), str(shard), repr(events)]  # the protocol's: tests/core/gateway
            await shard.update_voice_state(guild.id, channel.id)
            assert (await events.receive())[0] == "VOICE_SERVER_UPDATE"
            discord.reconnect(session)
            assert (await events.receive())[0] == "RESUMED"
            discord.stall_heartbeat_acks(session, True)
            assert (await events.receive())[0] == "RESUMED"
            discord.stall_heartbeat_acks(session, False)
            discord.invalid_session(session, False)
            assert (await events.receive())[0] == "READY"
            texts += [repr(shard), repr(events)]
    with pytest.raises(ShardClosed) as closed:
        await shard.update_voice_state(guild.id, None)
    texts += [str(closed.value), repr(closed.value)]
    wrong = token[:-3] + "xyz"
    with pytest.raises(AuthenticationFailed) as failed:
        async with open_shard(
            wrong, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ):
            pass
    texts += [str(failed.value), repr(failed.value)]
    texts.append(caplog.text)
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(record.args) for record in caplog.records]
    assert any("resuming at sequence" in record.getMessage() for record in caplog.records)
    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    for text in texts:
        assert token not in text
        assert wrong not in text
        # Nor its secret part alone (the first part is only the base64 user id).
        assert token.split(".")[-1] not in text
        assert session.session_id not in text
