"""The UDP media server: IP discovery, decryption, statistics, recording and relaying."""

from __future__ import annotations

import os
import struct
import sys
import time

import pytest
import trio

from discore_voice._audio.opus import OpusDecoder, OpusEncoder
from discore_voice._audio.signals import zero_crossing_frequency
from discore_voice._core.speaking import OPUS_SILENCE_FRAME, SpeakingFlags
from discore_voice._core.transport import (
    AES256_GCM_RTPSIZE,
    XCHACHA20_POLY1305_RTPSIZE,
    create_cipher,
)
from discore_voice._core.voice.payloads import ClientSpeaking, ServerSpeaking
from discore_voice.testing._stats import StreamStats, percentile

from .voice_client import (
    BOT,
    CHANNEL,
    GUILD,
    USER,
    WAIT,
    Handshake,
    best_correlation,
    joined,
    left_channel,
    open_udp,
    sine_pcm,
    voice_server,
)

PCM_FRAME = 3840


def encode(pcm: bytes) -> list[bytes]:
    with OpusEncoder(bitrate=64_000) as encoder:
        return [encoder.encode(pcm[i : i + PCM_FRAME]) for i in range(0, len(pcm), PCM_FRAME)]


def decode(frames: list[bytes]) -> bytes:
    with OpusDecoder() as decoder:
        return b"".join(decoder.decode(frame) for frame in frames)


async def send_frames(hs: Handshake, frames: list[bytes], *, first_seq: int = 65_500) -> None:
    """Send encrypted RTP (starting near the u16 wrap, so extension across it is exercised)."""
    seq, ts = first_seq, 4_294_960_000
    for frame in frames:
        await hs.udp.send(hs.cipher.encrypt_opus(seq, ts, hs.ready.ssrc, frame))
        seq, ts = (seq + 1) & 0xFFFF, (ts + 960) & 0xFFFFFFFF


async def test_ip_discovery_answers_with_the_source_address() -> None:
    async with voice_server() as (server, _):
        async with open_udp(server.media.host, server.media.port) as udp:
            assert await udp.discover(1234) == udp.address
            # A request with its address filled in is malformed: dropped, counted, no answer.
            bad = bytearray(struct.pack(">HHI", 1, 70, 5) + bytes(66))
            bad[10] = 0x31
            await udp.send(bytes(bad))
            assert await udp.discover(99) == udp.address
        stats = server.media.stats
        assert stats.ip_discovery_requests == 2
        assert stats.drops == {"malformed_ip_discovery": 1}


@pytest.mark.parametrize("mode", [AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE])
async def test_a_sine_survives_encryption_recording_and_decoding(mode: str) -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        source = sine_pcm(440, 1.0)
        frames = [*encode(source), *[OPUS_SILENCE_FRAME] * 5]
        async with joined(server, credentials, mode) as (_, hs):
            await send_frames(hs, frames)
            with trio.fail_after(WAIT):
                await server.wait_for(lambda: server.media.stats.rtp_packets == len(frames))
        recording = server.media.recordings[BOT]
        # Byte-identical passthrough: what the bot sent is what was recorded.
        assert recording.opus_packets == frames
        assert recording.ssrc == hs.ready.ssrc
        decoded = left_channel(recording.pcm())
        assert len(decoded) == 48_000 + 5 * 960
        reference = left_channel(source)
        assert zero_crossing_frequency(decoded[4800:48_000]) == pytest.approx(440, abs=5)
        assert best_correlation(reference, decoded) >= 0.95
        stats = server.media.stats.streams[hs.ready.ssrc]
        assert stats.clock == server.media.clock
        if sys.platform.startswith("linux"):
            # Kernel receive timestamps (SO_TIMESTAMPNS) are wall-clock nanoseconds.
            assert server.media.clock == "kernel"
            now = time.time_ns()
            assert all(abs(now - p.arrival_ns) < 60e9 for p in recording.packets)
        assert (stats.packets, stats.silence_frames, stats.lost) == (55, 5, 0)
        assert (stats.duplicates, stats.reordered, stats.timestamp_jumps) == (0, 0, 0)
        assert len(stats.gaps_ns) == 54


async def test_stats_count_gaps_duplicates_reorders_and_timestamp_jumps() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with joined(server, credentials) as (_, hs):
            ssrc = hs.ready.ssrc
            # seq: 10, 11, (12 late), 13, 13 again, 12, 16 (14 and 15 lost), 17 with a bad ts
            plan = [(10, 0), (11, 960), (13, 2880), (13, 2880), (12, 1920), (16, 5760), (17, 9999)]
            for seq, ts in plan:
                payload = OPUS_SILENCE_FRAME if seq == 16 else b"\xfc\x01"
                await hs.udp.send(hs.cipher.encrypt_opus(seq, ts, ssrc, payload))
            with trio.fail_after(WAIT):
                await server.wait_for(lambda: server.media.stats.rtp_packets == len(plan))
        stats = server.media.stats.streams[ssrc]
        assert stats.packets == 7
        assert stats.duplicates == 1
        assert stats.reordered == 1
        assert stats.lost == 2
        assert stats.gap_events == 2  # 11 -> 13 and 13 -> 16
        assert stats.timestamp_jumps == 1
        assert stats.silence_frames == 1
        # The recording keeps arrival order (and the duplicate); in_order() is what plays.
        recording = server.media.recordings[BOT]
        assert [p.sequence for p in recording.packets] == [10, 11, 13, 13, 12, 16, 17]
        assert [p.sequence for p in recording.in_order()] == [10, 11, 12, 13, 16, 17]


def test_interarrival_percentiles() -> None:
    stats = StreamStats(1)
    arrival = 0
    gaps = [20_000_000] * 97 + [40_000_000, 60_000_000, 21_000_000]
    stats.observe(0, 0, b"\xfc", arrival)
    for index, gap in enumerate(gaps, start=1):
        arrival += gap
        stats.observe(index, index * 960, b"\xfc", arrival)
    assert stats.gap_p50_ms == 20.0
    assert stats.gap_p99_ms == 40.0
    assert stats.gap_max_ms == 60.0
    assert percentile([], 0.5) == 0
    assert stats.summary()["gap_max_ms"] == 60.0


async def test_garbage_is_counted_and_never_fatal() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with joined(server, credentials) as (_, hs):
            ssrc = hs.ready.ssrc
            good = hs.cipher.encrypt_opus(1, 960, ssrc, b"\xfc\xff")
            stranger = create_cipher(AES256_GCM_RTPSIZE, bytes(32))
            rtcp = bytes([0x80, 200]) + struct.pack(">H", 6) + os.urandom(24)
            for datagram in [
                b"",
                b"\x00",
                b"\x00" + os.urandom(299),  # RTP version 0: neither RTP nor RTCP
                bytes([0x80, 0x78]) + bytes(6),  # shorter than an RTP header
                hs.cipher.encrypt_opus(2, 1920, ssrc + 1, b"\xfc"),  # unknown SSRC
                stranger.encrypt_opus(3, 2880, ssrc, b"\xfc"),  # wrong key
                good[:-5] + bytes([good[-5] ^ 1]) + good[-4:],  # tampered tag
                rtcp,
                good,
            ]:
                await hs.udp.send(datagram)
            with trio.fail_after(WAIT):
                await server.wait_for(lambda: server.media.stats.rtp_packets == 1)
            # The server still answers.
            assert await hs.udp.discover(ssrc) == hs.udp.address
        stats = server.media.stats
        assert stats.rtcp_packets == 1
        assert stats.drops.get("decrypt_failed") == 2
        assert stats.drops.get("unknown_ssrc", 0) >= 1
        assert stats.dropped + stats.rtcp_packets + stats.rtp_packets + 2 == stats.datagrams
        assert server.media.recordings[BOT].opus_packets == [b"\xfc\xff"]


async def test_packets_from_another_address_are_dropped() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with (
            joined(server, credentials) as (_, hs),
            open_udp(server.media.host, server.media.port) as other,
        ):
            await other.send(hs.cipher.encrypt_opus(1, 960, hs.ready.ssrc, b"\xfc"))
            await other.discover(1)
        assert server.media.stats.drops == {"unknown_address": 1}


async def test_a_member_speaking_reaches_the_bot_decryptable() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with joined(server, credentials, XCHACHA20_POLY1305_RTPSIZE) as (client, hs):
            member = server.add_member(GUILD, CHANNEL, USER)
            source = sine_pcm(440, 0.6)
            received: list[bytes] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(member.speak_pcm, source)
                _, speaking = await client.expect(ServerSpeaking)
                assert speaking == ServerSpeaking(USER, member.ssrc, SpeakingFlags.MICROPHONE)
                while len(received) < 35:
                    packet = hs.cipher.decrypt(await hs.udp.recv())
                    assert packet.header.ssrc == member.ssrc
                    received.append(packet.payload)
            _, stopped = await client.expect(ServerSpeaking)
            assert stopped.speaking == 0
        assert received == [p.payload for p in member.sent]
        assert received[-5:] == [OPUS_SILENCE_FRAME] * 5
        decoded = left_channel(decode(received))
        assert zero_crossing_frequency(decoded[4800:28_800]) == pytest.approx(440, abs=5)
        assert best_correlation(left_channel(source), decoded) >= 0.95


async def test_the_bot_reaches_a_listening_member_and_another_bot() -> None:
    async with voice_server() as (server, authority):
        member = server.add_member(GUILD, CHANNEL, USER)
        deaf = server.add_member(GUILD, CHANNEL, USER + 1, listen=False)
        first = authority.issue(GUILD, CHANNEL, BOT)
        second = authority.issue(GUILD, CHANNEL, BOT + 1)
        source = sine_pcm(440, 0.6)
        frames = encode(source)
        async with joined(server, first) as (a, a_hs), joined(server, second) as (_, b_hs):
            await a.send(ClientSpeaking(speaking=1, ssrc=a_hs.ready.ssrc))
            await send_frames(a_hs, frames, first_seq=7)
            relayed = [b_hs.cipher.decrypt(await b_hs.udp.recv()) for _ in frames]
        assert {p.header.ssrc for p in relayed} == {a_hs.ready.ssrc}
        assert [p.payload for p in relayed] == frames
        assert [p.header.sequence for p in relayed] == list(range(7, 7 + len(frames)))
        assert member.heard[BOT].opus_packets == frames
        assert member.heard_stats[a_hs.ready.ssrc].packets == len(frames)
        assert ServerSpeaking(BOT, a_hs.ready.ssrc, 1) in member.events
        assert best_correlation(left_channel(source), left_channel(member.heard_pcm(BOT))) >= 0.95
        assert deaf.heard == {}


async def test_member_dave_hooks_wrap_frames_but_not_silence() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        member = server.add_member(GUILD, CHANNEL, USER)
        member.frame_encryptor = lambda user_id, frame: b"E" + frame
        member.frame_decryptor = lambda user_id, frame: frame[1:]
        async with joined(server, credentials) as (_, hs):
            member.send_opus(b"\xfc\x01")
            member.send_opus(OPUS_SILENCE_FRAME)
            got = [hs.cipher.decrypt(await hs.udp.recv()).payload for _ in range(2)]
            assert got == [b"E\xfc\x01", OPUS_SILENCE_FRAME]
            await send_frames(hs, [b"D\xfc\x02", OPUS_SILENCE_FRAME])
            with trio.fail_after(WAIT):
                await server.wait_for(
                    lambda: BOT in member.heard and len(member.heard[BOT].packets) == 2
                )
        assert member.heard[BOT].opus_packets == [b"\xfc\x02", OPUS_SILENCE_FRAME]
