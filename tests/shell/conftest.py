"""Fixtures for the shell tests: a simulator, and a mock clock that is safe with real sockets.

pytest-trio's ``autojump_clock`` jumps as soon as every task is blocked, even while a reply is
still crossing the loopback interface; a heartbeat ACK in flight would then look late and the
shard would (correctly) call its connection a zombie. A small real-time threshold lets loopback
I/O land before time jumps, and still makes waits of seconds or minutes cost next to nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from trio.testing import MockClock

from discore_voice.testing import LocalDiscord, open_local_discord

WAIT = 30.0
"""Seconds any single test step may take (mock seconds under ``jump_clock``)."""


@pytest.fixture
def jump_clock() -> MockClock:
    return MockClock(autojump_threshold=0.05)


@pytest.fixture
async def discord() -> AsyncIterator[LocalDiscord]:
    async with open_local_discord() as sim:
        yield sim
