"""The player, as a listening member hears it: tracks, their controls, mixing and the queue."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import numpy as np
import pytest
import trio

from discore_voice._audio.ogg import OggFormatError
from discore_voice._audio.opus import OpusEncoder
from discore_voice._audio.signals import channel, sine_pcm
from discore_voice._audio.sources import OggOpusSource, PcmSource
from discore_voice._core.player.events import TrackEnded, TrackOutcome, TrackStarted
from discore_voice._core.player.mixing import Ducking
from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice._core.voice.events import InvalidationReason
from discore_voice._errors import UsageError
from discore_voice._shell.voice.connection import voice_connection
from discore_voice._shell.voice.player.queue import QueueLoop
from discore_voice._shell.voice.player.track import TRACK_AHEAD, TrackState
from discore_voice.testing._recording import ogg_opus_bytes

from .conftest import WAIT
from .test_voice_sending import Env, assert_continuous, environment

RATE = 48_000
WINDOW = 1920  # 40 ms: FFT bins 25 Hz apart, so the tones below fall on bins


def tone(seconds: float, hz: float, amplitude: float = 0.3) -> bytes:
    return sine_pcm(seconds, hz=hz, amplitude=amplitude)


def spectrum(samples: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) / len(samples)


def level_at(samples: np.ndarray, hz: float) -> float:
    """The amplitude of the ``hz`` component of a window (bins are 25 Hz apart)."""
    return float(spectrum(samples)[round(hz * len(samples) / RATE)])


def windows(pcm: bytes) -> list[np.ndarray]:
    left = np.asarray(channel(pcm), dtype=np.float64) / 32768
    return [left[i : i + WINDOW] for i in range(0, len(left) - WINDOW + 1, WINDOW)]


def dominant(pcm: bytes, tones: tuple[float, ...]) -> list[float | None]:
    """Per 40 ms window: which of ``tones`` it holds (None for silence)."""
    out: list[float | None] = []
    for window in windows(pcm):
        levels = {hz: level_at(window, hz) for hz in tones}
        best = max(levels, key=lambda hz: levels[hz])
        out.append(best if levels[best] > 0.02 else None)
    return out


def runs(labels: list[float | None]) -> list[float | None]:
    """The labels with repeats collapsed: the order the tones were heard in."""
    collapsed: list[float | None] = []
    for label in labels:
        if not collapsed or collapsed[-1] != label:
            collapsed.append(label)
    return collapsed


def heard(env: Env) -> bytes:
    return env.listener.heard_pcm(env.bot_id)


def audio_packets(env: Env) -> int:
    return sum(p.payload != OPUS_SILENCE_FRAME for p in env.sent())


async def test_a_track_handle_reports_its_life_and_its_events() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            with vc.subscribe() as events:
                track = vc.start_track(PcmSource.from_bytes(tone(0.4, 400), name="beep"))
                assert track.state is TrackState.QUEUED and track.outcome is None
                assert vc.tracks == (track,)
                started = await events.receive()
                while not isinstance(started, TrackStarted):
                    started = await events.receive()
                assert started == TrackStarted(track.id, "beep")
                assert vc.is_playing and track.state is TrackState.PLAYING
                end = await track
                assert end.outcome is TrackOutcome.FINISHED and end.finished
                assert end.frames == 20 and end.name == "beep"
                ended = await events.receive()
                while not isinstance(ended, TrackEnded):
                    ended = await events.receive()
                assert ended.end == end
            assert track.state is TrackState.ENDED and vc.tracks == ()
            assert not vc.is_playing
            # Once it ended, the track's audio was sent: all 20 frames are on record.
            assert audio_packets(env) == 20
            assert track.duration == pytest.approx(0.4)


async def test_stop_pause_resume_and_position() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            track = vc.start_track(PcmSource.from_bytes(tone(10.0, 400)))
            await env.wait_packets(10)
            track.pause()
            assert track.state is TrackState.PAUSED and not vc.is_playing
            held = track.position
            await env.wait_packets(audio_packets(env) + 5)  # the silence tail
            sent_while_paused = audio_packets(env)
            assert track.position == held
            track.resume()
            await env.voice.wait_for(lambda: audio_packets(env) >= sent_while_paused + 10)
            assert track.position > held
            track.stop()
            end = await track
            assert end.outcome is TrackOutcome.STOPPED
            assert end.frames < 100
            track.resume()  # no-ops once ended
            track.volume = 0.5
    # The pause kept the place: the audio heard is one continuous tone, cut where it stopped.
    assert runs(dominant(heard(env), (400.0,)))[:1] == [400.0]


async def test_live_volume_and_loops_are_heard() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            end = await vc.play(PcmSource.from_bytes(tone(0.2, 400)), loops=2, volume=0.5)
            assert end.frames == 30  # three times through
    levels = [level_at(w, 400) for w in windows(heard(env))]
    playing = [x for x in levels if x > 0.01]
    assert len(playing) >= 13  # 0.6 s of 40 ms windows, less the edges
    # A tone of amplitude A measures A / 4 here (the FFT's half, the Hann window's half):
    # 0.3 at half volume is 0.0375.
    assert all(0.033 < x < 0.042 for x in playing[1:-1])


async def test_seek_moves_a_pcm_an_ogg_and_a_pyav_track(tmp_path: pytest.TempPathFactory) -> None:
    # Two seconds: a second of 400 Hz, then a second of 800 Hz. Seeking to 1.5 s must land in
    # the second part at once, for every kind of source.
    pcm = tone(1.0, 400) + tone(1.0, 800)
    with OpusEncoder() as encoder:
        packets = [encoder.encode(pcm[i : i + 3840]) for i in range(0, len(pcm), 3840)]
    ogg = ogg_opus_bytes(packets)
    import wave

    wav = tmp_path / "two.wav"  # type: ignore[operator]
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm)
    from discore_voice._audio.sources import AvSource

    sources = [
        PcmSource.from_bytes(pcm),
        OggOpusSource.from_bytes(ogg),
        AvSource.from_file(wav),
    ]
    for source in sources:
        with trio.fail_after(WAIT):
            async with (
                environment() as env,
                voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
            ):
                track = vc.start_track(source)
                await env.wait_packets(10)
                track.seek(1.5)
                assert track.position == 1.5
                end = await track
                assert end.outcome is TrackOutcome.FINISHED
                assert track.position == pytest.approx(2.0, abs=0.03)
                assert track.duration == pytest.approx(2.0, abs=0.03)
        order = runs(dominant(heard(env), (400.0, 800.0)))
        assert [x for x in order if x is not None] == [400.0, 800.0], source
        # Not 1.5 s of audio: about 0.2 s before the seek and the last half second.
        assert 0.55 < audio_packets(env) * 0.02 < 1.1, source


async def test_two_tracks_mix_and_a_late_effect_is_heard_at_once() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            music = vc.start_track(PcmSource.from_bytes(tone(3.0, 400)))
            await env.wait_packets(50)  # a second of music alone
            at = audio_packets(env)
            effect = vc.start_track(PcmSource.from_bytes(tone(0.5, 1000)), volume=1.0)
            await effect
            assert music.state is TrackState.PLAYING
            music.stop()
    windows_heard = windows(heard(env))
    first_effect = next(i for i, w in enumerate(windows_heard) if level_at(w, 1000) > 0.05)
    # Started after ``at`` frames were out: heard within the frames encoded ahead (two).
    assert first_effect * 2 <= at + 3
    both = [w for w in windows_heard if level_at(w, 1000) > 0.05]
    assert len(both) >= 10 and all(level_at(w, 400) > 0.05 for w in both)


async def test_one_ogg_track_passes_through_and_is_mixed_only_while_an_effect_plays() -> None:
    pcm = tone(2.0, 400)
    with OpusEncoder() as encoder:
        packets = [encoder.encode(pcm[i : i + 3840]) for i in range(0, len(pcm), 3840)]
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            music = vc.start_track(OggOpusSource.from_bytes(ogg_opus_bytes(packets)))
            await env.wait_packets(20)
            await vc.play(PcmSource.from_bytes(tone(0.2, 1000)))
            end = await music
            mixer = vc._sender.player.mixer
            encoded = vc.send_stats.frames_encoded
    assert end.frames == 100
    # Only the ten frames with the effect were decoded, mixed and encoded (a frame or two of
    # gain ramp aside); the other ninety went out as the file's own packets.
    assert 10 <= mixer.frames_mixed <= 12 and encoded == mixer.frames_mixed
    assert mixer.frames_passed_through == 100 - mixer.frames_mixed
    sent = [p.payload for p in env.sent() if p.payload != OPUS_SILENCE_FRAME]
    assert sent[:20] == packets[:20]  # byte for byte before the effect...
    assert sent[-20:] == packets[-20:]  # ...and after it


async def test_an_ogg_track_at_another_volume_is_decoded_never_ignored() -> None:
    pcm = tone(0.6, 400, amplitude=0.6)
    with OpusEncoder() as encoder:
        packets = [encoder.encode(pcm[i : i + 3840]) for i in range(0, len(pcm), 3840)]
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            await vc.play(OggOpusSource.from_bytes(ogg_opus_bytes(packets)), volume=0.25)
    levels = [level_at(w, 400) for w in windows(heard(env))]
    assert 0.033 < max(levels) < 0.042  # 0.6 at a quarter is 0.15, measured as 0.0375


async def test_ducking_lowers_the_music_while_speech_plays() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            vc.ducking = Ducking(level=0.2, attack=0.02, release=0.1)
            music = vc.start_track(PcmSource.from_bytes(tone(3.0, 400)))
            await env.wait_packets(25)
            await vc.play(PcmSource.from_bytes(tone(1.0, 1000)), ducks_others=True)
            await env.wait_packets(audio_packets(env) + 25)
            music.stop()
    ws = windows(heard(env))
    music_alone = [level_at(w, 400) for w in ws if level_at(w, 1000) < 0.01]
    under_speech = [level_at(w, 400) for w in ws if level_at(w, 1000) > 0.05]
    full = float(np.median(music_alone))
    assert len(under_speech) >= 20
    assert float(np.median(under_speech)) < 0.3 * full  # ducked to 0.2


async def test_the_queue_plays_in_order_without_a_gap() -> None:
    tones = (400.0, 800.0, 1200.0)
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            handles = [vc.queue.enqueue(PcmSource.from_bytes(tone(0.5, hz))) for hz in tones]
            assert vc.queue.current is None or vc.queue.current is handles[0]
            assert len(vc.queue) == 3
            assert await vc.queue.wait_idle() is None
            assert [h.outcome.outcome for h in handles if h.outcome] == [TrackOutcome.FINISHED] * 3
            await env.wait_packets(80)
    audio = [p for p in env.sent() if p.payload != OPUS_SILENCE_FRAME]
    assert len(audio) == 75
    # On the 20 ms grid: consecutive sequence numbers and timestamps 960 apart, no silence
    # between the tracks, so the receiver hears them back to back.
    assert_continuous(audio)
    first = env.sent().index(audio[0])
    assert env.sent()[first : first + 75] == audio
    order = [x for x in runs(dominant(heard(env), tones)) if x is not None]
    assert order == list(tones)


async def test_queue_skip_remove_clear_shuffle_and_loops() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            queue = vc.queue
            first = queue.enqueue(PcmSource.from_bytes(tone(10.0, 400)))
            second = queue.enqueue(PcmSource.from_bytes(tone(0.2, 800)))
            gone = queue.enqueue(PcmSource.from_bytes(tone(0.2, 1200)))
            await env.wait_packets(5)
            assert queue.current is first and queue.upcoming == (second, gone)
            assert queue.remove(gone) and not queue.remove(gone)
            assert (await gone).outcome is TrackOutcome.STOPPED
            assert queue.skip() is first
            assert (await first).outcome is TrackOutcome.STOPPED
            assert (await second).outcome is TrackOutcome.FINISHED
            assert await queue.wait_idle() is None

            queue.loop = QueueLoop.ONE
            looping = queue.enqueue(PcmSource.from_bytes(tone(0.1, 400)))
            waiting = [queue.enqueue(PcmSource.from_bytes(tone(0.1, 800))) for _ in range(5)]
            await env.voice.wait_for(lambda: looping.frames_played >= 20)  # four times round
            queue.shuffle()
            assert sorted(h.id for h in queue.upcoming) == sorted(h.id for h in waiting)
            assert queue.clear() == 5
            queue.loop = QueueLoop.OFF
            assert (await looping).outcome is TrackOutcome.FINISHED
            assert all(h.outcome and h.outcome.outcome is TrackOutcome.STOPPED for h in waiting)
            assert await queue.wait_idle() is None

            queue.loop = QueueLoop.ALL
            a = queue.enqueue(PcmSource.from_bytes(tone(0.1, 400)))
            await a
            await env.voice.wait_for(lambda: queue.current is not None and queue.current is not a)
            again = queue.current
            assert again is not None and again.source is a.source  # rewound, back round
            queue.loop = QueueLoop.OFF
            assert (await again).outcome is TrackOutcome.FINISHED
            assert await queue.wait_idle() is None


async def test_a_kick_ends_the_queue_and_every_track_with_the_reason() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            playing = vc.queue.enqueue(PcmSource.from_bytes(tone(10.0, 400)))
            waiting = vc.queue.enqueue(PcmSource.from_bytes(tone(1.0, 800)))
            effect = vc.start_track(PcmSource.from_bytes(tone(10.0, 1000)))
            await env.wait_packets(10)
            env.discord.kick(env.guild.id, env.bot_id)
            invalidation = await vc.queue.wait_idle()
            assert invalidation is not None and invalidation.reason is InvalidationReason.KICKED
            for track in (playing, waiting, effect):
                end = await track
                assert end.outcome is TrackOutcome.INVALIDATED
                assert end.invalidation == invalidation
            # Later calls say so too, at once: nothing drains silently.
            late = vc.queue.enqueue(PcmSource.from_bytes(tone(1.0, 400)))
            assert late.outcome is not None
            assert late.outcome.outcome is TrackOutcome.INVALIDATED
            end = await vc.play(PcmSource.from_bytes(tone(1.0, 400)))
            assert end.outcome is TrackOutcome.INVALIDATED
            assert end.invalidation == invalidation


async def test_a_source_plays_on_one_track_at_a_time() -> None:
    async def stream() -> AsyncIterator[bytes]:
        yield tone(0.1, 400)

    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            source = PcmSource.from_bytes(tone(0.2, 400))
            track = vc.start_track(source)
            with pytest.raises(UsageError, match="already playing"):
                vc.start_track(source)
            assert (await track).frames == 10
            assert (await vc.play(source)).frames == 10  # a file or bytes plays again
            once = PcmSource.from_iterable(stream())
            assert (await vc.play(once)).frames == 5
            with pytest.raises(UsageError, match="stream"):
                vc.start_track(once)
            with pytest.raises(UsageError, match="stream"):
                vc.start_track(PcmSource.from_iterable(stream()), loops=1)
            with pytest.raises(UsageError):
                vc.start_track(b"pcm")  # type: ignore[arg-type]
            with pytest.raises(UsageError):
                vc.start_track(PcmSource.from_bytes(b""), volume=-1)
            streaming = vc.start_track(PcmSource.from_iterable(stream()))
            with pytest.raises(UsageError, match="cannot seek"):
                streaming.seek(1)
            await streaming
    assert audio_packets(env) == 30


async def test_a_channel_source_holds_its_producer_to_real_time() -> None:
    sent_ahead: list[int] = []
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            send, receive = trio.open_memory_channel[bytes](0)
            track = vc.start_track(PcmSource.from_channel(receive, name="tts"))

            async def speak() -> None:
                async with send:
                    for index in range(100):  # two seconds, a frame per chunk
                        await send.send(tone(0.02, 400))
                        sent_ahead.append(index + 1 - track.frames_played)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(speak)
            end = await track
    assert end.outcome is TrackOutcome.FINISHED and end.frames == 100
    # The producer never got further ahead than what the track reads ahead, plus the frames
    # the source and the channel hold: a fraction of a second, not the whole utterance.
    assert max(sent_ahead) <= TRACK_AHEAD + 4
    assert audio_packets(env) == 100


async def test_a_damaged_ogg_plays_up_to_the_damage_then_fails() -> None:
    pcm = tone(1.0, 400)
    with OpusEncoder() as encoder:
        packets = [encoder.encode(pcm[i : i + 3840]) for i in range(0, len(pcm), 3840)]
    data = bytearray(ogg_opus_bytes(packets))
    data[len(data) * 3 // 4] ^= 0xFF  # a CRC failure three quarters in
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            track = vc.start_track(OggOpusSource.from_bytes(bytes(data), name="damaged.opus"))
            end = await track
            with pytest.raises(OggFormatError, match=r"damaged\.opus"):
                await vc.play(OggOpusSource.from_bytes(bytes(data), name="damaged.opus"))
    assert end.outcome is TrackOutcome.FAILED
    assert isinstance(end.error, OggFormatError)
    assert 10 <= end.frames < 50
    assert audio_packets(env) == 2 * end.frames


def test_positions_are_checked() -> None:
    source = PcmSource.from_bytes(tone(0.1, 400))
    for bad in (-1, math.nan, "1", True):
        with pytest.raises(UsageError):
            trio.run(source.seek, bad)


async def test_the_next_track_is_preloaded_two_seconds_before_the_end() -> None:
    with trio.fail_after(WAIT):
        async with (
            environment() as env,
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
        ):
            first = vc.queue.enqueue(PcmSource.from_bytes(tone(2.6, 400)))
            second = vc.queue.enqueue(PcmSource.from_bytes(tone(0.2, 800)))
            await env.voice.wait_for(lambda: len(vc.tracks) == 2)
            left = 2.6 - first.position
            assert vc.tracks == (first, second)
            assert second.state is TrackState.QUEUED  # loaded, waiting for its turn
            assert 1.5 < left <= 2.05  # two seconds ahead, not the last fifth of a second
            assert await vc.queue.wait_idle() is None
