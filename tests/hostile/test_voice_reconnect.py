"""A voice server that makes the client reconnect, again and again (#12 defect 2).

A server that fails right after every resume, or never acknowledges a heartbeat, or asks for a
heartbeat every millisecond, must not get a reconnect storm or a heartbeat flood: the client backs
off, gives up after a bounded number of attempts, and says so. Each script stops misbehaving
after ``CAP`` attempts, so a client without those bounds ends the test by count (and fails it)
instead of spinning until the deadline.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from discore_voice import InvalidationReason, voice_connection

from ._voice_server import VoiceConn, VoiceScript
from .conftest import (
    CHANNEL_ID,
    GUILD_ID,
    bystander,
    gaps,
    hostile,
    invalid_or,
    max_per_window,
)

CAP = 15
"""Attempts after which a hostile script behaves again: above the 10 the client may take."""


class ClosesAfterEveryResume(VoiceScript):
    """4015 (voice server crashed: resume) once connected, and again after every Resumed."""

    async def after_session_description(self, conn: VoiceConn) -> None:
        await conn.close(4015)

    async def after_resumed(self, conn: VoiceConn) -> None:
        if len(conn.server.resumes) < CAP:
            await conn.close(4015)


class NeverAcks(VoiceScript):
    """Hello every 500 ms, and no heartbeat ever acknowledged (until ``CAP`` connections)."""

    def __init__(self) -> None:
        super().__init__(heartbeat_interval_ms=500)

    async def on_heartbeat(self, conn: VoiceConn, d: Any) -> None:
        if len(conn.server.connections) > CAP:
            await super().on_heartbeat(conn, d)


async def test_a_server_failing_after_every_resume_gets_backoff_then_an_end(
    jump_clock: MockClock,
) -> None:
    random.seed(2)  # the client's jitter, if it draws from the random module
    with trio.fail_after(6 * 3600):
        async with bystander(), hostile(ClosesAfterEveryResume()) as env:
            voice = env.voice
            async with voice_connection(env.shard, GUILD_ID, CHANNEL_ID) as vc:
                await invalid_or(vc, voice, lambda: len(voice.resumes) >= CAP)
                resumes = [r.at for r in voice.resumes]
                assert len(resumes) <= 10, f"{len(resumes)} resumes, at {resumes}"
                invalidation = await vc.wait_invalidated()
    assert invalidation.reason is InvalidationReason.RECONNECT_FAILED
    first_close = voice.connections[0].closed_at
    assert first_close is not None
    waits = gaps([first_close, *resumes])
    half = len(waits) // 2
    assert sum(waits[half:]) >= 4 * sum(waits[:half]), waits  # the waits grow, exponentially
    assert waits[-1] > waits[0], waits


async def test_a_server_that_never_acks_heartbeats_gets_a_bounded_number_of_attempts(
    jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="discore_voice.voice")
    random.seed(2)
    with trio.fail_after(6 * 3600):
        async with bystander(), hostile(NeverAcks()) as env:
            voice = env.voice
            async with voice_connection(env.shard, GUILD_ID, CHANNEL_ID) as vc:
                await invalid_or(vc, voice, lambda: len(voice.connections) > CAP)
                attempts = len(voice.connections) - 1
                assert attempts <= 10, f"{attempts} reconnects"
                invalidation = await vc.wait_invalidated()
    assert invalidation.reason is InvalidationReason.RECONNECT_FAILED
    warnings = [
        r
        for r in caplog.records
        if r.name == "discore_voice.voice"
        and r.levelno == logging.WARNING
        and "reconnect" in r.getMessage()
    ]
    assert warnings, [r.getMessage() for r in caplog.records]


class MillisecondHello(VoiceScript):
    """Hello asks for a heartbeat every millisecond, from connection ``first`` on (the second
    connection comes from a 4015 once connected)."""

    def __init__(self, first: int) -> None:
        super().__init__()
        self.first = first

    async def on_open(self, conn: VoiceConn) -> None:
        interval = 1 if conn.number >= self.first else self.heartbeat_interval_ms
        await conn.send_op(8, {"heartbeat_interval": interval}, numbered=False)

    async def after_session_description(self, conn: VoiceConn) -> None:
        if self.first == 2:
            await conn.close(4015)


@pytest.mark.parametrize("first", [1, 2], ids=["first Hello", "second Hello"])
async def test_a_one_millisecond_hello_gets_at_most_a_few_heartbeats_a_second(
    first: int, jump_clock: MockClock
) -> None:
    with trio.fail_after(3600):
        async with bystander(), hostile(MillisecondHello(first)) as env:
            voice = env.voice
            async with voice_connection(env.shard, GUILD_ID, CHANNEL_ID):
                await voice.wait_for(lambda: len(voice.connections) >= first)
                start = voice.connections[first - 1].opened_at

                def beats() -> list[float]:
                    return [r.at for r in voice.heartbeats if r.at >= start]

                # 20 s of mock time, or until a second holds too many (a flood ends it early).
                with trio.move_on_at(start + 20):
                    await voice.wait_for(lambda: max_per_window(beats()) > 3)
    assert max_per_window(beats()) <= 3, f"{len(beats())} heartbeats: {beats()[:10]}..."
