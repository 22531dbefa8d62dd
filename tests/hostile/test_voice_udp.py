"""A voice server that sends UDP garbage, replays and floods, or goes silent on UDP.

The client's socket is connected to the voice server, so everything here comes from the server's
own address: the kernel lets it through, and the client must count it as a drop by reason,
keep the connection, and keep sending its own audio. Each batch is waited for until the client
has counted all of it, so the counts are exact, not "at least something".
"""

from __future__ import annotations

import logging
import struct

import pytest
import trio
from trio.testing import MockClock

from discore_voice import VoiceConnection, voice_connection
from discore_voice._audio.signals import sine_pcm

from ._voice_server import SELECT_PROTOCOL, VoiceServer
from .conftest import (
    CHANNEL_ID,
    GUILD_ID,
    WAIT,
    bystander,
    hostile,
    settled_until,
    udp_drops,
    udp_received,
    udp_restarts,
)

OTHER_SSRC = 0x0BAD


def dropped(vc: VoiceConnection) -> int:
    return sum(udp_drops(vc).values())


def rtp_header(*, ssrc: int = OTHER_SSRC, first: int = 0x80, payload_type: int = 0x78) -> bytes:
    return struct.pack(">BBHII", first, payload_type, 7, 960, ssrc)


GARBAGE: dict[str, bytes] = {
    "empty": b"",
    "one byte": b"\x80",
    "eleven bytes": bytes(11),
    "an RTP header alone": rtp_header(),
    "an RTP header and noise": rtp_header() + bytes(range(100)),
    "RTP version 0": rtp_header(first=0x00) + bytes(40),
    "RTP version 3": rtp_header(first=0xC0) + bytes(40),
    "fifteen CSRCs, cut short": rtp_header(first=0x8F) + bytes(8),
    "an extension longer than the packet": rtp_header(first=0x90) + b"\xbe\xde\xff\xff" + bytes(30),
    "RTCP sender report": rtp_header(payload_type=200) + bytes(20),
    "an IP discovery request": struct.pack(">HHI", 1, 70, OTHER_SSRC) + bytes(66),
    "9000 bytes": rtp_header() + bytes(9000),
}


async def send_and_count(voice: VoiceServer, vc: VoiceConnection, datagrams: list[bytes]) -> None:
    """Send ``datagrams`` in batches the kernel buffers whole, each counted before the next."""
    for start in range(0, len(datagrams), 50):
        batch = datagrams[start : start + 50]
        expected = dropped(vc) + len(batch)
        for datagram in batch:
            await voice.send_udp(datagram)
        await settled_until(lambda expected=expected: dropped(vc) >= expected)  # type: ignore[misc]


async def play_and_wait_heard(voice: VoiceServer, vc: VoiceConnection, frames: int = 10) -> None:
    """The client's own audio still reaches the server: ``frames`` more Opus frames arrive."""
    heard = len(voice.audio) + frames
    vc.send_voice_data_nowait(sine_pcm(0.02 * (frames + 2)))
    await voice.wait_for(lambda: len(voice.audio) >= heard)


async def test_udp_garbage_is_counted_by_reason_and_audio_still_flows() -> None:
    with trio.fail_after(WAIT):
        async with (
            bystander(),
            hostile() as env,
            voice_connection(env.shard, GUILD_ID, CHANNEL_ID) as vc,
        ):
            await send_and_count(env.voice, vc, list(GARBAGE.values()) * 4)
            assert dropped(vc) == 4 * len(GARBAGE)
            assert set(udp_drops(vc)) <= {"malformed", "undecryptable", "rtcp", "no_key"}
            assert udp_received(vc) == 0
            await play_and_wait_heard(env.voice, vc)
            assert vc.is_connected
            assert len(env.voice.connections) == 1


async def test_a_flood_of_garbage_is_counted_and_never_answered() -> None:
    flood = [rtp_header() + index.to_bytes(4, "big") * 10 for index in range(3000)]
    with trio.fail_after(WAIT):
        async with (
            bystander(),
            hostile() as env,
            voice_connection(env.shard, GUILD_ID, CHANNEL_ID) as vc,
        ):
            voice = env.voice
            from_client_before = len(voice.datagrams)
            await send_and_count(voice, vc, flood)
            assert dropped(vc) == len(flood)
            # The client answered none of it: all it sent meanwhile were keep-alives, if any.
            assert all(d in voice.discovery_requests for d in voice.datagrams[from_client_before:])
            await play_and_wait_heard(voice, vc)
            assert vc.is_connected


def valid_packet(voice: VoiceServer) -> bytes:
    """One packet the client can decrypt: another member's Opus frame, under the current key."""
    return voice.cipher_to_client().encrypt_opus(7, 960, OTHER_SSRC, b"\xfc\x01\x02\x03")


async def test_replays_of_a_valid_packet_keep_the_connection_and_are_all_counted() -> None:
    with trio.fail_after(WAIT):
        async with (
            bystander(),
            hostile() as env,
            voice_connection(env.shard, GUILD_ID, CHANNEL_ID) as vc,
        ):
            packet = valid_packet(env.voice)
            for _ in range(200):
                await env.voice.send_udp(packet)
            await settled_until(lambda: udp_received(vc) + dropped(vc) >= 200)
            assert udp_received(vc) + dropped(vc) == 200
            await play_and_wait_heard(env.voice, vc)
            assert vc.is_connected


async def test_replays_of_a_valid_packet_are_dropped() -> None:
    with trio.fail_after(WAIT):
        async with (
            bystander(),
            hostile() as env,
            voice_connection(env.shard, GUILD_ID, CHANNEL_ID) as vc,
        ):
            packet = valid_packet(env.voice)
            for _ in range(200):
                await env.voice.send_udp(packet)
            await settled_until(lambda: udp_received(vc) + dropped(vc) >= 200)
            received, drops = udp_received(vc), dropped(vc)
    assert (received, drops) == (1, 199)


# --- a UDP blackhole (defect 10) ------------------------------------------------------------


async def test_a_udp_blackhole_is_noticed_and_udp_is_re_established(
    jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="discore_voice.voice")
    with trio.fail_after(WAIT * 10):
        async with bystander(), hostile() as env:
            voice = env.voice
            async with voice_connection(env.shard, GUILD_ID, CHANNEL_ID) as vc:
                await play_and_wait_heard(voice, vc)
                first_source = voice.client_source()
                voice.blackhole = True
                await trio.sleep(40)  # the subject: 40 s in which nothing UDP gets through
                voice.blackhole = False
                with trio.move_on_after(60):
                    await voice.wait_for(lambda: len(voice.ops(SELECT_PROTOCOL)) >= 2)
                selects = voice.ops(SELECT_PROTOCOL)
                assert len(selects) == 2, "UDP was never re-established"
                # On the same websocket, after a discovery from a fresh socket, with a new key.
                assert len(voice.connections) == 1 and selects[1].connection == 1
                sources = {d.source for d in voice.discovery_requests}
                assert len(sources) >= 2 and first_source in sources
                assert len(voice.keys) == 2
                assert udp_restarts(vc) >= 1
                assert await vc.wait_connected()
                await play_and_wait_heard(voice, vc)
                assert voice.audio[-1][1] != first_source
    assert any("UDP" in r.getMessage() for r in caplog.records), caplog.records
