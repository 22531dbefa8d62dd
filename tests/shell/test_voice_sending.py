"""Sending voice against the local Discord over real sockets: buffer, speaking, pacing, play()."""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import pairwise

import pytest
import trio
from trio.testing import MockClock

from discore_voice import _native
from discore_voice._audio import opus as opus_module
from discore_voice._audio.ogg import AudioSourceError
from discore_voice._audio.opus import EncoderSettings, OpusEncoder
from discore_voice._audio.signals import channel, find_alignment, sine_pcm, zero_crossing_frequency
from discore_voice._audio.sources import OggOpusSource, PcmSource
from discore_voice._core.gateway.intents import Intents
from discore_voice._core.pacing import FRAME_INTERVAL
from discore_voice._core.pcm_buffer import VoiceBufferFull
from discore_voice._core.player.events import TrackOutcome
from discore_voice._core.rtp import SAMPLES_PER_FRAME, sequence_distance, timestamp_distance
from discore_voice._core.speaking import OPUS_SILENCE_FRAME, SpeakingFlags
from discore_voice._core.voice.events import Invalidated, InvalidationReason
from discore_voice._core.voice.media import MediaCrypto
from discore_voice._errors import NativeLibraryMissing, UsageError
from discore_voice._shell.shard.connection import open_shard
from discore_voice._shell.voice.connection import VoiceConnection, voice_connection
from discore_voice.testing import open_local_discord
from discore_voice.testing._dave.gateway import DaveMode
from discore_voice.testing._members import SimMember
from discore_voice.testing._recording import ReceivedPacket, Recording, ogg_opus_bytes
from discore_voice.testing._voice.gateway import (
    WorldVoiceAuthority,
    open_voice_server,
)

from .conftest import WAIT, BotInGuild

BLOCK = VoiceConnection.PCM_BLOCK_SIZE


@dataclass
class Env(BotInGuild):
    listener: SimMember

    def recording(self) -> Recording:
        """What the voice server received from the bot: RTP as sent, before any DAVE layer."""
        return self.voice.media.recording(self.bot_id)

    def sent(self) -> list[ReceivedPacket]:
        return list(self.recording().packets)

    def heard(self) -> list[bytes]:
        """The Opus frames the listening member heard, after transport and DAVE decryption."""
        recording = self.listener.heard.get(self.bot_id)
        return [] if recording is None else recording.opus_packets

    async def wait_packets(self, count: int) -> None:
        await self.voice.wait_for(lambda: len(self.recording().packets) >= count)

    async def wait_silence(self, count: int) -> None:
        await self.voice.wait_for(lambda: silence_count(self.sent()) >= count)


async def invalidation_after_sending(pcm: bytes) -> Invalidated:
    """Connect, queue ``pcm`` and return how the connection ended (for failures while sending)."""
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            vc.send_voice_data_nowait(pcm)
            return await vc.wait_invalidated()


def silence_count(packets: list[ReceivedPacket]) -> int:
    return sum(p.payload == OPUS_SILENCE_FRAME for p in packets)


@asynccontextmanager
async def environment(dave: DaveMode = "off") -> AsyncIterator[Env]:
    """A guild with a voice channel and a listening member. DAVE is off unless a test is about
    it, so what a listener hears depends on the send path alone."""
    async with open_local_discord(dave=dave) as discord:
        guild = discord.add_guild()
        voice_channel = guild.add_voice_channel()
        listener = discord.add_voice_member(guild.id, voice_channel.id, name="listener")
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            yield Env(discord, shard, guild, voice_channel, listener)


def assert_continuous(packets: list[ReceivedPacket]) -> None:
    """One sequence step per packet; timestamps advance by at least a frame, by 960 in a run."""
    for before, after in pairwise(packets):
        assert sequence_distance(before.sequence, after.sequence) == 1, (before, after)
        step = timestamp_distance(before.timestamp, after.timestamp)
        assert step >= SAMPLES_PER_FRAME, (before, after)
        assert step % SAMPLES_PER_FRAME == 0 or before.payload == OPUS_SILENCE_FRAME


# --- PCM in, PCM out --------------------------------------------------------------------------


async def test_pcm_reaches_a_listener_and_matches_the_source() -> None:
    tone = sine_pcm(1.0, hz=440.0)
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            assert not vc.is_speaking
            await vc.send_voice_data(tone)
            await env.wait_silence(5)
            # Speaking went on by itself, before the first frame.
            assert env.session().speaking_states == [int(SpeakingFlags.MICROPHONE)]
            assert vc.is_speaking and vc.bytes_to_send == 0
            heard = env.listener.heard_pcm(env.bot_id)
            stats = vc.send_stats
    assert stats.frames_sent == 50 and stats.silence_frames == 5
    assert stats.frames_encoded == 50 and stats.encode_mean_us > 0
    assert stats.skipped_late == 0 and stats.packets_dropped == 0
    reference, received = channel(tone), channel(heard)
    assert abs(zero_crossing_frequency(received[4800:43200]) - 440.0) < 5.0
    match = find_alignment(reference[:36000], received, max_lag=2000)
    assert match.correlation >= 0.95, match
    assert_continuous(env.sent())


async def test_partial_blocks_wait_for_more_and_the_end_is_padded() -> None:
    tone = sine_pcm(0.1)  # five frames, written in awkward pieces
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            vc.paused = True
            vc.send_voice_data_nowait(tone[:1000])
            assert vc.bytes_to_send == 1000
            await vc.send_voice_data(tone[1000:])
            vc.send_voice_data_nowait(bytes(400))  # the stray end of the audio
            vc.paused = False
            await env.wait_silence(5)
    audio = [p for p in env.sent() if p.payload != OPUS_SILENCE_FRAME]
    assert len(audio) == 6  # five whole frames and the padded remainder


# --- Ogg Opus passthrough ---------------------------------------------------------------------


@pytest.mark.parametrize("dave", ["off", "optional"])
async def test_ogg_opus_passthrough_is_byte_identical(dave: DaveMode) -> None:
    with OpusEncoder() as encoder:
        tone = sine_pcm(0.8, hz=660.0)
        packets = [encoder.encode(tone[i : i + BLOCK]) for i in range(0, len(tone), BLOCK)]
    source = OggOpusSource.from_bytes(ogg_opus_bytes(packets), name="tone.opus")
    with trio.fail_after(WAIT):
        async with (
            environment(dave) as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            if dave != "off":
                # Frames sent before the group exists go out unencrypted (DAVE passthrough),
                # which a member of a DAVE call cannot accept: start once it is ready.
                await vc.wait_for(lambda: vc.voice_privacy_code is not None)
            assert (await vc.play(source)).frames == len(packets)
            await env.wait_silence(5)
            assert vc.send_stats.frames_encoded == 0  # the encoder never ran
            await env.voice.wait_for(lambda: len(env.heard()) >= len(packets) + 5)
    heard = [p for p in env.heard() if p != OPUS_SILENCE_FRAME]
    assert heard == packets


# --- continuity -------------------------------------------------------------------------------


async def test_continuity_across_pause_resume_and_a_resume_after_4015() -> None:
    tone = sine_pcm(3.0)
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(vc.send_voice_data, tone)
                await env.wait_packets(10)
                vc.paused = True
                await env.wait_silence(5)
                assert vc.bytes_to_send > 0  # paused, not dropped
                paused_at = len(env.sent())
                vc.paused = False
                await env.wait_packets(paused_at + 10)
                session = env.session()
                env.voice.close(session, 4015)
                await env.voice.wait_for(lambda: session.resumes == 1)
                await vc.wait_connected()
                # Still speaking on the new websocket: op 5 went out again.
                await env.voice.wait_for(lambda: len(session.speaking_states) == 2)
            await env.wait_silence(10)
            assert vc.ssrc == session.ssrc
    sent = env.sent()
    assert_continuous(sent)
    assert silence_count(sent) == 10
    assert sum(p.payload != OPUS_SILENCE_FRAME for p in sent) == 150  # nothing lost


async def test_continuity_and_speaking_across_a_server_move() -> None:
    tone = sine_pcm(2.0)
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            open_voice_server(WorldVoiceAuthority(env.discord)) as other,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(vc.send_voice_data, tone)
                await env.wait_packets(10)
                first_ssrc = vc.ssrc
                env.discord.voice_endpoint = other.endpoint_url
                env.discord.send_voice_server_update(env.guild.id, other.endpoint_url)
                await other.wait_for(lambda: other.session_for(env.bot_id) is not None)
                moved = other.session_for(env.bot_id)
                assert moved is not None
                await other.wait_for(lambda: moved.speaking_states == [1])
            await other.wait_for(
                lambda: silence_count(other.media.recording(env.bot_id).packets) >= 5
            )
            assert vc.ssrc != first_ssrc
    before, after = env.sent(), list(other.media.recording(env.bot_id).packets)
    # One sequence across both servers: the pacer lives as long as the connection.
    assert_continuous(before + after)


# --- pacing, under the mock clock -------------------------------------------------------------


async def test_exactly_five_paced_silence_frames(jump_clock: MockClock) -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            await vc.send_voice_data(sine_pcm(0.2))
            await env.wait_silence(5)
            # Nothing more follows the tail.
            await trio.sleep(1.0)
            sent = env.sent()
            stats = vc.send_stats
    assert len(sent) == 15 and silence_count(sent) == 5
    assert all(p.payload == OPUS_SILENCE_FRAME for p in sent[-5:])
    # All 14 gaps of the run are one frame (on trio's clock): the shortest and the longest.
    interval_ms = FRAME_INTERVAL * 1000
    assert stats.gap_min_ms == pytest.approx(interval_ms, abs=1e-3)
    assert stats.gap_max_ms == pytest.approx(interval_ms, abs=1e-3)
    assert_continuous(sent)


async def test_no_burst_after_a_200_ms_stall(jump_clock: MockClock) -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            vc.paused = True
            await vc.send_voice_data(sine_pcm(0.6))
            vc.paused = False
            await env.wait_packets(5)
            # The trio thread blocks for 200 ms (as a GC pause or a slow callback would): the
            # sender sees the clock leap past ten slots at once.
            jump_clock.jump(0.2)
            await env.wait_silence(5)
            stats = vc.send_stats
    sent = env.sent()
    assert stats.stalls == 1 and 9 <= stats.skipped_late <= 10
    # Never two frames closer than 20 ms minus the pacer's 2 ms allowance: no catching up.
    assert stats.gap_min_ms >= (FRAME_INTERVAL - 0.002) * 1000
    # Audio is kept (it starts late), the timestamp jumps with real time, the sequence does not.
    assert stats.frames_sent == 30
    assert_continuous(sent)
    steps = [timestamp_distance(a.timestamp, b.timestamp) for a, b in pairwise(sent)]
    assert max(steps) >= 10 * SAMPLES_PER_FRAME


# --- the buffer API ---------------------------------------------------------------------------


async def test_buffer_semantics() -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            conn = VoiceConnection(env.shard, env.guild.id, buffer_size=4 * BLOCK)
            async with conn.connect(env.channel.id) as vc:
                vc.paused = True
                assert vc.paused and vc.can_send_voice_data(4 * BLOCK)
                assert not vc.can_send_voice_data(4 * BLOCK + 4)
                vc.send_voice_data_nowait(bytes(4 * BLOCK))
                assert vc.bytes_to_send == 4 * BLOCK and not vc.can_send_voice_data(4)
                with pytest.raises(VoiceBufferFull):
                    vc.send_voice_data_nowait(bytes(BLOCK))
                assert vc.bytes_to_send == 4 * BLOCK  # all or nothing
                with pytest.raises(UsageError):
                    vc.send_voice_data_nowait(bytes(3))  # not a whole sample

                # An awaiting writer is released by the sender draining the buffer.
                done = trio.Event()

                async def writer() -> None:
                    await vc.send_voice_data(sine_pcm(0.2))
                    done.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(writer)
                    await trio.testing.wait_all_tasks_blocked()
                    assert not done.is_set()
                    vc.paused = False
                    await done.wait()

                vc.paused = True
                await env.wait_silence(5)
                assert vc.clear_voice_buffer() > 0
                assert vc.bytes_to_send == 0 and vc.can_send_voice_data(4 * BLOCK)

                # Invalidation releases a writer waiting for room.
                vc.send_voice_data_nowait(bytes(4 * BLOCK))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(vc.send_voice_data, bytes(BLOCK))
                    await trio.testing.wait_all_tasks_blocked()
                    await vc.disconnect()

                # Invalid: every call is a no-op.
                assert not vc.is_valid
                assert not vc.can_send_voice_data(4)
                vc.send_voice_data_nowait(bytes(100 * BLOCK))
                await vc.send_voice_data(bytes(100 * BLOCK))
                assert vc.bytes_to_send == 0
                vc.paused = False
                await vc.set_speaking(True)
                end = await vc.play(PcmSource.from_bytes(sine_pcm(0.1)))
                assert end.outcome is TrackOutcome.INVALIDATED
                assert end.invalidation == vc.invalidation
                assert end.frames == 0


async def test_bad_arguments() -> None:
    for bad in ({"bitrate": 1}, {"fec": 1}, {"complexity": 11}, {"application": 7}):
        with pytest.raises(UsageError):
            EncoderSettings(**bad)  # type: ignore[arg-type]
    async with environment() as env:
        with pytest.raises(UsageError):
            VoiceConnection(env.shard, env.guild.id, buffer_size=100)
        conn = VoiceConnection(env.shard, env.guild.id)
        with pytest.raises(UsageError):
            await conn.set_speaking(8)
        with pytest.raises(UsageError):
            conn.paused = 1  # type: ignore[assignment]
        with pytest.raises(UsageError):
            await conn.play(b"pcm")  # type: ignore[arg-type]
        for send in (conn.send_voice_data, conn.send_voice_data_nowait):
            with pytest.raises(UsageError, match="bytes-like, got str"):
                await send("text")  # type: ignore[arg-type,func-returns-value]


# --- speaking and play() ----------------------------------------------------------------------


async def test_explicit_speaking_flags_are_kept_and_sent_once() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            flags = SpeakingFlags.SOUNDSHARE | SpeakingFlags.PRIORITY
            await vc.set_speaking(flags)
            assert vc.speaking_flags == flags
            await vc.send_voice_data(sine_pcm(0.1))
            await env.wait_silence(5)
            assert env.session().speaking_states == [int(flags)]
            await vc.set_speaking(False)
            assert not vc.is_speaking
            await env.voice.wait_for(lambda: env.session().speaking_states == [int(flags), 0])


async def test_play_volume_and_a_failing_source_keeps_what_was_queued() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            played = await vc.play(PcmSource.from_bytes(sine_pcm(0.2, amplitude=0.8), volume=0.25))
            assert played.frames == 10
            await env.wait_silence(5)
            loud = max(abs(s) for s in channel(env.listener.heard_pcm(env.bot_id)))
            assert 0.15 * 32767 < loud < 0.25 * 32767

            vc.paused = True
            vc.send_voice_data_nowait(sine_pcm(0.1))
            with pytest.raises(AudioSourceError, match=r"no-such-file\.pcm"):
                await vc.play(PcmSource.from_file("no-such-file.pcm"))
            vc.paused = False
            await env.wait_silence(10)  # the queued audio played, and its tail
    audio = [p for p in env.sent() if p.payload != OPUS_SILENCE_FRAME]
    assert len(audio) == 15


async def test_a_volume_change_is_heard_within_40_ms() -> None:
    """The gain is applied as the frame is mixed, one frame ahead of its slot, not as the source
    is read (a fifth of a second ahead): a change is in the frame after the next one sent, ramped
    across it, and quiet from the end of that frame."""
    tone = sine_pcm(2.0, amplitude=0.8)
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            track = vc.start_track(PcmSource.from_bytes(tone))
            await env.wait_packets(25)  # half a second at full level
            changed_at = vc.send_stats.frames_sent  # frames out when the volume changes
            track.volume = 0.25
            await track
            await env.wait_silence(5)
    heard = channel(env.listener.heard_pcm(env.bot_id))
    # Levels of 5 ms windows (240 samples a channel); decoding delays the audio by Opus's
    # 6.5 ms look-ahead (312 samples), so the sent stream's sample n is heard at n + 312.
    window, delay = 240, 312
    levels = [
        math.sqrt(sum(x * x for x in heard[i * window : (i + 1) * window]) / window)
        for i in range(len(heard) // window)
    ]
    change = changed_at * 960 + delay  # where the frame sent next is heard
    full = statistics.median(levels[20 : change // window])
    assert all(level > 0.8 * full for level in levels[20 : change // window])  # nothing early
    first_quiet = next(i for i in range(change // window, len(levels)) if levels[i] < 0.3 * full)
    latency_ms = (first_quiet * window - change) / 48
    assert latency_ms <= 40  # the frame encoded ahead and the ramped one (38.5 ms measured)
    assert all(0.2 * full < level < 0.3 * full for level in levels[first_quiet + 2 : 340])


async def test_a_failing_source_plays_what_it_delivered_at_its_volume() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield sine_pcm(0.4, amplitude=0.8)
        raise OSError("the stream broke")

    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            track = vc.start_track(PcmSource.from_iterable(failing(), volume=0.25))
            end = await track
            assert end.outcome is TrackOutcome.FAILED
            assert isinstance(end.error, OSError)
            assert end.frames == 20
            with pytest.raises(OSError, match="broke"):
                await vc.play(PcmSource.from_iterable(failing(), volume=0.25))
            await env.wait_silence(5)
    heard = channel(env.listener.heard_pcm(env.bot_id))
    assert len(heard) >= 40 * 960  # both tracks' audio played before their errors...
    assert max(abs(x) for x in heard) < 0.3 * 32767  # ...at their volume (0.25 of 0.8)


async def test_cancelling_play_ends_with_silence() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            source = PcmSource.from_bytes(sine_pcm(5.0))  # made first: it takes ~0.1 s
            with trio.move_on_after(0.3) as scope:
                await vc.play(source)
            assert scope.cancelled_caught
            assert vc.tracks == ()
            assert vc.bytes_to_send <= BLOCK  # at most the one frame encoded ahead
            await env.wait_silence(5)
            sent = env.sent()
    assert all(p.payload == OPUS_SILENCE_FRAME for p in sent[-5:])
    assert 5 <= len(sent) - 5 < 30
    assert_continuous(sent)


async def test_a_failing_send_ends_that_connection_only(monkeypatch: pytest.MonkeyPatch) -> None:
    failing: list[MediaCrypto] = []
    encrypt = MediaCrypto.encrypt

    def broken(crypto: MediaCrypto, frame: bytes) -> bytes:
        # The first connection to send is the one whose end-to-end layer fails.
        if not failing:
            failing.append(crypto)
        if crypto is failing[0]:
            raise RuntimeError("the E2EE layer failed")
        return encrypt(crypto, frame)

    monkeypatch.setattr(MediaCrypto, "encrypt", broken)

    with trio.fail_after(WAIT):
        async with environment() as env:
            second = env.discord.add_guild()
            second_channel = second.add_voice_channel()
            async with (
                voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
                voice_connection(env.shard, second.id, second_channel.id) as other,
            ):
                vc.send_voice_data_nowait(sine_pcm(0.1))
                invalidation = await vc.wait_invalidated()
                assert invalidation.reason is InvalidationReason.ERROR
                assert "RuntimeError" in invalidation.detail
                # The shared clock carries on for everyone else.
                await other.send_voice_data(sine_pcm(0.1))
                await env.voice.wait_for(
                    lambda: silence_count(env.voice.media.recording(env.bot_id).packets) >= 5
                )
                assert other.send_stats.frames_sent == 5


async def test_libopus_is_loaded_in_a_worker_thread_before_the_first_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded_on: list[int] = []
    real_load = _native._load

    def recording_load() -> object:
        loaded_on.append(threading.get_ident())
        return real_load()

    monkeypatch.setattr(_native, "_load", recording_load)
    monkeypatch.setattr(_native, "_result", None)  # as in a fresh process
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            await vc.send_voice_data(sine_pcm(0.1))
            await env.wait_silence(5)
    assert vc.send_stats.frames_encoded == 5
    # Loaded once, and not on the trio thread, where it would have delayed the first frame.
    assert len(loaded_on) == 1 and loaded_on[0] != threading.get_ident()


async def test_missing_libopus_invalidates_with_native_library_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing() -> None:
        raise NativeLibraryMissing("libopus", "sudo apt-get install -y libopus0")

    monkeypatch.setattr(opus_module, "load_opus", missing)
    invalidation = await invalidation_after_sending(sine_pcm(0.1))
    assert invalidation.reason is InvalidationReason.NATIVE_LIBRARY_MISSING
    assert "libopus" in invalidation.detail and "apt-get install" in invalidation.detail
