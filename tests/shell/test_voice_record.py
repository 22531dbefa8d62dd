"""Recording: one file per member, streamed, aligned on the receiver's clock, playable."""

from __future__ import annotations

import array
import wave
from pathlib import Path

import pytest
import trio

from discore_voice import UsageError, record, voice_connection
from discore_voice._audio.ogg import OggOpusReader
from discore_voice._audio.signals import channel, find_alignment, sine_pcm
from discore_voice.testing._members import encode_pcm

from .conftest import WAIT
from .test_voice_receive import environment, in_group


def ogg_packets(path: Path) -> list[bytes]:
    reader = OggOpusReader(str(path))
    packets = reader.feed(path.read_bytes())
    reader.close()
    return packets


def wav_pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 48_000, 2)
        return wav.readframes(wav.getnframes())


def loud_frames(pcm: bytes) -> list[int]:
    """Indexes of the 20 ms frames that carry sound."""
    samples = array.array("h", pcm)
    return [
        i
        for i in range(len(samples) // 1920)
        if max(abs(v) for v in samples[i * 1920 : (i + 1) * 1920]) > 1000
    ]


async def test_an_ogg_recording_holds_each_members_packets_where_they_were_said(
    tmp_path: Path,
) -> None:
    first, second = encode_pcm(sine_pcm(0.4, hz=300)), encode_pcm(sine_pcm(0.4, hz=500))
    async with environment() as env:
        alice, bob = env.member(), env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [alice, bob])
            async with vc.receive(decode=False) as rx:
                with trio.fail_after(WAIT):
                    async with record(rx, tmp_path / "call") as recording:
                        await alice.speak_opus(first)
                        await trio.sleep(0.3)
                        await bob.speak_opus(second)
                        await trio.sleep(0.3)
                        stats = recording.stats
    files = recording.files
    assert set(files) == {alice.user_id, bob.user_id}
    from_alice, from_bob = ogg_packets(files[alice.user_id]), ogg_packets(files[bob.user_id])
    # Both files run the whole recording: aligned, whatever each member did.
    assert len(from_alice) == len(from_bob) == round(recording.seconds / 0.02)
    # Alice's words, exactly as sent, then silence; Bob's silence, then his words.
    a_start = from_alice.index(first[0])
    b_start = from_bob.index(second[0])
    assert from_alice[a_start : a_start + len(first)] == first
    assert from_bob[b_start : b_start + len(second)] == second
    # Bob began after Alice's 0.4 s, her silence tail and the 0.3 s pause: ~0.8 s later.
    assert 35 <= b_start - a_start <= 45
    assert stats.frames[str(alice.user_id)] >= len(first)
    assert stats.silence[str(bob.user_id)] >= b_start - 1


async def test_a_wav_recording_with_a_mixed_track(tmp_path: Path) -> None:
    low, high = sine_pcm(0.4, hz=330, amplitude=0.2), sine_pcm(0.4, hz=660, amplitude=0.2)
    async with environment(dave="off") as env:
        alice, bob = env.member(), env.member()
        async with (
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
            vc.receive() as rx,
        ):
            with trio.fail_after(WAIT):
                async with record(rx, tmp_path, format="wav", mixed=True) as recording:
                    await alice.speak_pcm(low)
                    await bob.speak_pcm(high)
                    await trio.sleep(0.2)
    files = recording.files
    assert set(files) == {alice.user_id, bob.user_id, "mixed"}
    pcm = {key: wav_pcm(path) for key, path in files.items()}
    assert len({len(p) for p in pcm.values()}) == 1  # every file as long as the recording
    alice_loud, bob_loud = loud_frames(pcm[alice.user_id]), loud_frames(pcm[bob.user_id])
    assert alice_loud and bob_loud and max(alice_loud) < min(bob_loud)
    # The mixed track is loud exactly where either member was.
    assert set(loud_frames(pcm["mixed"])) == set(alice_loud) | set(bob_loud)
    # And it sounds like them: Alice's tone where she spoke.
    start, end = alice_loud[0] * 3840, (alice_loud[-1] + 1) * 3840
    match = find_alignment(channel(low), channel(pcm["mixed"][start:end]), max_lag=2000)
    assert match.correlation > 0.95


async def test_record_arguments(tmp_path: Path) -> None:
    async with (
        environment(dave="off") as env,
        voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
    ):
        async with vc.receive(decode=False) as rx:
            for bad in ({"format": "mp3"}, {"format": "wav"}, {"mixed": True}, {"mixed": 1}):
                with pytest.raises(UsageError):
                    async with record(rx, tmp_path, **bad):  # type: ignore[arg-type]
                        pass
            async with record(rx, tmp_path / "nobody") as recording:
                pass
        assert recording.files == {}
