"""Fixtures every test folder shares.

pytest-trio's ``autojump_clock`` jumps as soon as every task is blocked, even while a reply is
still crossing the loopback interface, so a message in flight can look late. A small real-time
threshold lets loopback I/O land before time jumps, and still makes waits of seconds or minutes
cost next to nothing.
"""

from __future__ import annotations

import contextlib

import pytest
from trio.testing import MockClock

from discore_voice._errors import NativeLibraryMissing
from discore_voice._native import load_opus

# Loaded once for the whole run, before any test: a connection otherwise loads it in a worker
# thread, and ``jump_clock`` would move mock time on while that thread works (seconds of
# heartbeats in one go). The test of that warm-up forgets the load and checks the thread.
with contextlib.suppress(NativeLibraryMissing):
    load_opus()


@pytest.fixture
def jump_clock() -> MockClock:
    return MockClock(autojump_threshold=0.05)
