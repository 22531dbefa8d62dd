"""Fixtures for the shell tests: a running simulator (``jump_clock`` is in the root conftest).

With plain ``autojump_clock`` a heartbeat ACK in flight would look late and the shard would
(correctly) call its connection a zombie; ``jump_clock`` avoids that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from discore_voice.testing import LocalDiscord, open_local_discord

WAIT = 30.0
"""Seconds any single test step may take (mock seconds under ``jump_clock``)."""


@pytest.fixture
async def discord() -> AsyncIterator[LocalDiscord]:
    async with open_local_discord() as sim:
        yield sim
