"""Fixtures for the shell tests: a running simulator (``jump_clock`` is in the root conftest).

With plain ``autojump_clock`` a heartbeat ACK in flight would look late and the shard would
(correctly) call its connection a zombie; ``jump_clock`` avoids that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from discore_voice._shell.shard.connection import Shard
from discore_voice.testing import LocalDiscord, SimChannel, SimGuild, open_local_discord
from discore_voice.testing._voice.gateway import VoiceGatewaySession, VoiceServer

WAIT = 30.0
"""Seconds any single test step may take (mock seconds under ``jump_clock``)."""


@pytest.fixture
async def discord() -> AsyncIterator[LocalDiscord]:
    async with open_local_discord() as sim:
        yield sim


@dataclass
class BotInGuild:
    """What most voice tests stand on: a running simulator, the bot's shard, and a guild with a
    voice channel. Test modules extend it with what they look at (listeners, DAVE members)."""

    discord: LocalDiscord
    shard: Shard
    guild: SimGuild
    channel: SimChannel

    @property
    def voice(self) -> VoiceServer:
        return self.discord.voice

    @property
    def bot_id(self) -> int:
        return self.discord.bot.user_id

    def session(self) -> VoiceGatewaySession:
        session = self.voice.session_for(self.bot_id, self.guild.id)
        assert session is not None, "the bot has no live voice session"
        return session

    def sessions(self) -> list[VoiceGatewaySession]:
        return [s for s in self.voice.sessions if s.user_id == self.bot_id]


async def settled_until(predicate: Callable[[], object]) -> None:
    """Wait until ``predicate()`` holds, re-checked each time the whole program is idle.

    For counters that no event announces (what a connection's UDP task counted): a datagram
    sent over loopback is in the receiver's queue when ``send`` returns, so once every task is
    blocked it has been read. Bound it with ``trio.fail_after``.
    """
    while not predicate():
        await trio.testing.wait_all_tasks_blocked(cushion=0.001)
