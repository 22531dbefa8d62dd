"""Encoding on worker threads: when it is used, and that what it sends is what was queued.

These run on trio's real clock: the workers are real threads, and a mock clock would jump while
they encode.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trio

from discore_voice._audio.opus import EncoderSettings, OpusEncoder
from discore_voice._audio.signals import channel, find_alignment, sine_pcm, zero_crossing_frequency
from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice._core.voice.events import InvalidationReason
from discore_voice._shell.voice.connection import voice_connection
from discore_voice._shell.voice.sending import encoder_pool as voice_encoder_pool
from discore_voice._shell.voice.sending.encoder_pool import EncoderPool

from .conftest import WAIT
from .test_voice_sending import assert_continuous, environment, invalidation_after_sending


@pytest.fixture
def always_offload(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every encode after a run's first frame goes to the workers; yields their thread names."""
    names: list[str] = []
    real_encode = voice_encoder_pool._encode

    def recording_encode(job: voice_encoder_pool.EncodeJob) -> None:
        names.append(threading.current_thread().name)
        real_encode(job)

    monkeypatch.setattr(voice_encoder_pool, "_encode", recording_encode)
    monkeypatch.setattr(voice_encoder_pool, "OFFLOAD_ABOVE", -1.0)
    monkeypatch.setattr(voice_encoder_pool, "INLINE_BELOW", -1.0)
    monkeypatch.setattr(voice_encoder_pool, "_SHORT_WINDOW", 0.0)
    yield names


async def test_the_pool_offloads_above_a_third_of_a_core_and_comes_back_below() -> None:
    pool = EncoderPool(workers=1)
    pool.note_encoded(0, 0.0)  # opens the first window
    pool.note_encoded(5_000_000, 0.02)  # 5 ms of encoding in 20 ms: a quarter of a core
    assert not pool.offloading
    pool.note_encoded(8_000_000, 0.04)  # 8 ms in 20 ms: 0.4 of a core
    assert pool.offloading
    pool.note_encoded(100_000_000, 0.5)  # judged over a second now: not yet
    assert pool.offloading
    pool.note_encoded(20_000_000, 1.04)  # 0.12 s in 1 s
    assert not pool.offloading
    assert "offloading=False" in repr(pool)


async def test_offloaded_pcm_matches_the_source(always_offload: list[str]) -> None:
    tone = sine_pcm(1.0, hz=440.0)
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            await vc.send_voice_data(tone)
            await env.wait_silence(5)
            heard = env.listener.heard_pcm(env.bot_id)
            stats = vc.send_stats
    assert stats.frames_sent == 50 and stats.frames_encoded == 50
    assert stats.silence_frames == 5 and stats.packets_dropped == 0
    # All but the run's first frame were encoded off the trio thread, by the pool's workers.
    assert always_offload and all(
        name.startswith("discore_voice encoder") for name in always_offload
    )
    assert threading.current_thread().name not in always_offload
    reference, received = channel(tone), channel(heard)
    assert abs(zero_crossing_frequency(received[4800:43200]) - 440.0) < 5.0
    match = find_alignment(reference[:36000], received, max_lag=2000)
    assert match.correlation >= 0.95, match
    assert_continuous(env.sent())


async def test_clearing_drops_what_a_worker_is_encoding(always_offload: list[str]) -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            await vc.send_voice_data(sine_pcm(0.5, hz=440.0))
            await env.wait_packets(3)
            assert vc.clear_voice_buffer() > 0
            assert vc.bytes_to_send == 0
            await env.wait_silence(5)
            audio_before_silence = len(env.sent()) - 5
            # A new tune plays cleanly after the clear, and nothing of the old one follows it.
            await vc.send_voice_data(sine_pcm(0.2, hz=880.0))
            await env.wait_silence(10)
    sent = env.sent()
    assert audio_before_silence < 25  # the rest of the half second was dropped
    tail = [p for p in sent[audio_before_silence + 5 :] if p.payload != OPUS_SILENCE_FRAME]
    assert len(tail) == 10


async def test_leaving_while_a_worker_encodes_closes_cleanly(always_offload: list[str]) -> None:
    with trio.fail_after(WAIT):
        async with environment() as env:
            for _ in range(3):
                async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
                    before = len(env.sent())
                    vc.send_voice_data_nowait(sine_pcm(0.5))
                    await env.wait_packets(before + 2)
                assert not vc.is_valid and vc.bytes_to_send == 0


async def test_a_failing_worker_encode_invalidates_instead_of_hanging(
    always_offload: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_encode = voice_encoder_pool._encode

    def corrupting_encode(job: voice_encoder_pool.EncodeJob) -> None:
        job.frames = [b"not a frame"]  # the encoder raises on it, in the worker
        real_encode(job)

    monkeypatch.setattr(voice_encoder_pool, "_encode", corrupting_encode)
    invalidation = await invalidation_after_sending(sine_pcm(0.5))
    assert invalidation.reason is InvalidationReason.ERROR
    assert "UsageError" in invalidation.detail


class _NotAnException(BaseException):
    """What a misbehaving native callback might raise: not an ``Exception`` at all."""


class _FailsOnWorkers(OpusEncoder):
    def encode(self, pcm: bytes | bytearray | memoryview) -> bytes:
        if threading.current_thread() is not threading.main_thread():
            raise _NotAnException("from a worker")
        return super().encode(pcm)


@dataclass(frozen=True, slots=True)
class _FailingSettings(EncoderSettings):
    def create(self) -> OpusEncoder:
        return _FailsOnWorkers(bitrate=self.bitrate)


async def test_a_worker_raising_a_base_exception_fails_one_connection_only(
    always_offload: list[str],
) -> None:
    """The defect: the error reached the send clock's system task, a TrioInternalError that
    ended every connection of the run. Now the failing one is invalidated and the other plays."""
    with trio.fail_after(WAIT):
        async with environment() as env:
            other_guild = env.discord.add_guild(name="other guild")
            other_channel = other_guild.add_voice_channel()
            other_listener = env.discord.add_voice_member(
                other_guild.id, other_channel.id, name="other listener"
            )
            async with (
                voice_connection(
                    env.shard, env.guild.id, env.channel.id, encoder=_FailingSettings()
                ) as failing,
                voice_connection(env.shard, other_guild.id, other_channel.id) as healthy,
            ):
                healthy.send_voice_data_nowait(sine_pcm(1.0))
                await env.voice.wait_for(lambda: other_listener.frames_heard >= 5)
                failing.send_voice_data_nowait(sine_pcm(1.0))
                invalidation = await failing.wait_invalidated()
                heard_then = other_listener.frames_heard
                await env.voice.wait_for(lambda: other_listener.frames_heard >= heard_then + 10)
                assert healthy.is_connected
    assert invalidation.reason is InvalidationReason.ERROR
    assert "EncoderWorkerError" in invalidation.detail
