"""Fixtures every test folder shares.

pytest-trio's ``autojump_clock`` jumps as soon as every task is blocked, even while a reply is
still crossing the loopback interface, so a message in flight can look late. A small real-time
threshold lets loopback I/O land before time jumps, and still makes waits of seconds or minutes
cost next to nothing.
"""

from __future__ import annotations

import pytest
from trio.testing import MockClock


@pytest.fixture
def jump_clock() -> MockClock:
    return MockClock(autojump_threshold=0.05)
