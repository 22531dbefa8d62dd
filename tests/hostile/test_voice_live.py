"""A voice server that turns hostile once the connection is up.

Once connected, one bad message is not worth a live call: malformed frames are logged and
skipped, unknown ops are skipped at DEBUG, oversized frames cost a resume. To know that the client
processed everything a test sent, the server then sends a *marker* (Speaking for another user)
and the test waits for its event: the websocket delivers in order, so nothing is left in flight.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
from trio.testing import MockClock

from discore_voice import (
    MemberSpeaking,
    VoiceConnection,
    VoiceEvents,
    max_supported_dave_version,
)

from ._voice_server import SELECT_PROTOCOL, VoiceConn, VoiceScript
from .conftest import (
    CHANNEL_ID,
    GUILD_ID,
    WAIT,
    Hostile,
    bystander,
    frames_dropped,
    gaps,
    hostile,
)

MARKER_USER = 71_000_000_000_000_001


@dataclass
class Live:
    """A connection that finished its handshake with the hostile voice server."""

    env: Hostile
    vc: VoiceConnection
    events: VoiceEvents
    markers: int = 0

    @property
    def conn(self) -> VoiceConn:
        return self.env.voice.latest

    async def marker(self) -> None:
        """Send Speaking for another user and wait until the client has handled it."""
        self.markers += 1
        ssrc = 1000 + self.markers
        await self.conn.send_op(5, {"user_id": str(MARKER_USER), "ssrc": ssrc, "speaking": 1})
        async for event in self.events:
            if isinstance(event, MemberSpeaking) and event.ssrc == ssrc:
                return
        raise AssertionError("the connection's events ended before the marker")


@asynccontextmanager
async def live(script: VoiceScript | None = None) -> AsyncIterator[Live]:
    """A connected voice connection through hostile servers, inside the user's nursery."""
    async with bystander(), hostile(script) as env:
        connection = VoiceConnection(env.shard, GUILD_ID)
        events = connection.subscribe(buffer_size=10_000)
        async with connection.connect(CHANNEL_ID) as vc:
            yield Live(env, vc, events)


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    """The library's WARNING records that contain ``text``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("discore_voice")
        and r.levelno == logging.WARNING
        and text in r.getMessage()
    ]


# --- malformed frames are skipped -----------------------------------------------------------

MALFORMED_LIVE: dict[str, str | bytes] = {
    "not JSON": "{{{",
    "an array": "[]",
    "op as a string": '{"op": "5", "d": {}}',
    "Speaking with a string ssrc": '{"op": 5, "d": {"user_id": "1", "ssrc": "2", "speaking": 1}}',
    "Hello with a negative interval": '{"op": 8, "d": {"heartbeat_interval": -1}}',
    "Ready with port 70000": '{"op": 2, "d": {"ssrc": 1, "ip": "127.0.0.1", '
    '"port": 70000, "modes": []}}',
    "Session Description with a 31-byte key": json.dumps(
        {"op": 4, "d": {"mode": "m", "secret_key": [1] * 31}}
    ),
    "Clients Connect with a bad id": '{"op": 11, "d": {"user_ids": ["x"]}}',
    "Resumed with a list": '{"op": 9, "d": [1]}',
    "empty binary frame": b"",
    "truncated binary frame": b"\x01",
    "binary frame with a client op": b"\x03\x85\x1c" + bytes(8),
}


async def test_malformed_frames_on_a_live_connection_are_logged_and_skipped(
    voice_log: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(WAIT):
        async with live() as session:
            for frame in MALFORMED_LIVE.values():
                await session.conn.send_frame(frame)
            await session.marker()
            assert session.vc.is_connected
            assert len(session.env.voice.connections) == 1
            assert frames_dropped(session.vc)["malformed"] == len(MALFORMED_LIVE)
    # Logged as well; the library may log only some of a run (it counts them all).
    skipped = warnings_about(voice_log, "malformed voice gateway message")
    assert 1 <= len(skipped) <= len(MALFORMED_LIVE), skipped


@pytest.mark.parametrize("frame", ["x" * (2 << 20), b"\x00\x01\x19" + bytes(2 << 20)])
async def test_a_2_mib_frame_on_a_live_connection_costs_one_resume(
    frame: str | bytes, jump_clock: MockClock
) -> None:
    with trio.fail_after(WAIT):
        async with live() as session:
            voice = session.env.voice
            await session.conn.send_frame(frame)
            await voice.wait_for(lambda: len(voice.resumes) == 1)
            assert await session.vc.wait_connected()
            await session.marker()
            # Refused with 1009, resumed once; a resume keeps the UDP socket and its key.
            assert [conn.close_code for conn in voice.connections] == [1009, None]
            assert len(voice.identifies) == 1 and len(voice.ops(SELECT_PROTOCOL)) == 1
            assert len({d.source for d in voice.datagrams}) == 1


async def test_a_thousand_unknown_ops_are_skipped_at_debug_and_acknowledged(
    jump_clock: MockClock, voice_log: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(WAIT * 4):
        async with live(VoiceScript(heartbeat_interval_ms=5_000)) as session:
            voice = session.env.voice
            received_before = len(voice.received)
            for index in range(1000):
                await session.conn.send_op(100 + index % 50, {"index": index})
                seq = voice.next_seq() & 0xFFFF
                await session.conn.send_frame(bytes([seq >> 8, seq & 0xFF, 200]) + b"junk")
            await session.marker()
            flood_answers = [r.op for r in voice.received[received_before:] if r.op != 3]
            assert flood_answers == []  # nothing to answer, and nothing answered
            # What could not be used was still received: the next heartbeat acknowledges it.
            last = voice.last_seq
            heartbeats = len(voice.heartbeats)
            await voice.wait_for(lambda: len(voice.heartbeats) > heartbeats)
            assert voice.heartbeats[-1].d["seq_ack"] == last
            assert session.vc.is_connected and len(voice.connections) == 1
            assert frames_dropped(session.vc) == {"malformed": 0, "unknown_opcodes": 2000}
    skipped = [r for r in voice_log.records if "unknown" in r.getMessage()]
    assert len(skipped) == 2000
    assert {r.levelno for r in skipped} == {logging.DEBUG}
    assert warnings_about(voice_log, "") == []


@pytest.mark.skipif(max_supported_dave_version() < 1, reason="davey is not installed")
@pytest.mark.parametrize("announced", [0, 1], ids=["transport-only call", "DAVE call"])
async def test_garbage_dave_ops_never_end_the_connection(
    announced: int, voice_log: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(12)
    with trio.fail_after(WAIT):
        async with live(VoiceScript(dave_protocol_version=announced)) as session:
            voice = session.env.voice
            assert voice.identifies[0].d["max_dave_protocol_version"] >= 1  # it offered DAVE
            json_before, binary_before = len(voice.received), len(voice.binary_received)
            for _ in range(20):
                for op in range(25, 31):
                    size = rng.choice([0, 1, 2, 3, 17, 300, 5000])
                    await session.conn.send_dave(op, rng.randbytes(size))
            await session.marker()
            assert session.vc.is_valid, session.vc.invalidation
            assert session.vc.is_connected
            replies = [r for r in voice.received[json_before:] if r.op != 3]
            replies_binary = voice.binary_received[binary_before:]
            assert len(replies) + len(replies_binary) <= 120  # never more than one per frame
    assert [r for r in voice_log.records if r.levelno >= logging.ERROR] == []


# --- absurd seq numbers (defect 5) ----------------------------------------------------------


@pytest.mark.parametrize("seq", [2**63, 2**64 + 5, 10**30])
async def test_a_seq_beyond_64_bits_is_malformed_and_never_acknowledged(
    seq: int, jump_clock: MockClock, voice_log: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(WAIT * 4):
        async with live(VoiceScript(heartbeat_interval_ms=5_000)) as session:
            voice = session.env.voice
            speaking = {"user_id": str(MARKER_USER), "ssrc": 999, "speaking": 1}
            await session.conn.send_frame(json.dumps({"op": 5, "seq": seq, "d": speaking}))
            await session.marker()
            count = len(voice.heartbeats)
            await voice.wait_for(lambda: len(voice.heartbeats) >= count + 2)
            assert session.vc.is_connected
            assert frames_dropped(session.vc)["malformed"] == 1
    assert all(0 <= r.d["seq_ack"] <= r.server_seq for r in voice.heartbeats[count:])
    assert len(warnings_about(voice_log, "malformed voice gateway message")) == 1


# --- heartbeat interval sanity (defect 7) ---------------------------------------------------


async def test_a_hello_of_1e308_ms_still_heartbeats_every_minute(jump_clock: MockClock) -> None:
    with trio.fail_after(WAIT * 10):
        async with live(VoiceScript(heartbeat_interval_ms=1e308)) as session:
            voice = session.env.voice
            start = voice.connections[0].opened_at
            with trio.move_on_after(150):
                await voice.wait_for(lambda: len(voice.heartbeats) >= 4)
            assert session.vc.is_connected
            beats = [start] + [r.at for r in voice.heartbeats]
    assert len(beats) >= 4, beats
    assert max(gaps(beats)) <= 60.0, gaps(beats)
