"""Receiving through ``vc.receive()``: real sockets, the simulator as the SFU, DAVE on.

Members speak known signals (their exact Opus frames are in ``member.sent``); the bot hears them
through the whole path (transport, replay filter, SSRC map, DAVE, playout buffer, decoder) and
each test checks what came out against what went in, under the fault it is about.
"""

from __future__ import annotations

import array
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from discore_voice import (
    AudioStream,
    Intents,
    ReceivedAudio,
    SpeakingStarted,
    SpeakingStopped,
    UsageError,
    VoiceConnection,
    open_shard,
    voice_connection,
)
from discore_voice._audio.signals import channel, find_alignment, sine_pcm
from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice.testing import SimMember, open_local_discord
from discore_voice.testing._faults import UdpFaults
from discore_voice.testing._members import encode_pcm

from .conftest import WAIT, BotInGuild, settled_until

pytestmark = pytest.mark.filterwarnings("error")


@dataclass
class Env(BotInGuild):
    def member(self, **options: Any) -> SimMember:
        return self.discord.add_voice_member(self.guild.id, self.channel.id, **options)


@asynccontextmanager
async def environment(**options: Any) -> AsyncIterator[Env]:
    options.setdefault("dave", "required")
    async with open_local_discord(**options) as discord:
        guild = discord.add_guild()
        voice_channel = guild.add_voice_channel()
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            yield Env(discord, shard, guild, voice_channel)


async def in_group(vc: VoiceConnection, members: list[SimMember]) -> None:
    """DAVE is ready on both sides (a plaintext frame before that would be a different test)."""

    def ready() -> bool:
        code = vc.voice_privacy_code
        return code is not None and all(m.voice_privacy_code == code for m in members)

    await vc.wait_for(ready)


async def collect(
    stream: AudioStream[ReceivedAudio], frames: int, *, concealed: bool = True
) -> list[ReceivedAudio]:
    """The next ``frames`` frames (or fewer if the stream ends)."""
    got: list[ReceivedAudio] = []
    async for frame in stream:
        if concealed or not frame.concealed:
            got.append(frame)
        if len(got) >= frames:
            break
    return got


def correlation(reference: bytes, heard: bytes) -> float:
    skip = 960 * 5  # past the encoder's ramp-in
    match = find_alignment(channel(reference)[skip:], channel(heard)[skip:], max_lag=2000)
    return match.correlation


def pcm_of(frames: list[ReceivedAudio]) -> bytes:
    """The decoded audio of the frames that carried some (the silence tail left out)."""
    return b"".join(f.pcm or b"" for f in frames if f.opus != OPUS_SILENCE_FRAME)


def audio_of(frames: list[ReceivedAudio]) -> list[bytes]:
    return [f.opus for f in frames if not f.concealed and f.opus != OPUS_SILENCE_FRAME]


# --- hearing ---------------------------------------------------------------------------------


async def test_two_members_heard_apart_through_dave_decode_to_what_they_said() -> None:
    low, high = sine_pcm(0.6, hz=330, amplitude=0.3), sine_pcm(0.6, hz=660, amplitude=0.3)
    async with environment() as env:
        alice, bob = env.member(name="alice"), env.member(name="bob")
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [alice, bob])
            async with vc.receive() as rx:
                speaking = rx.speaking()
                heard_alice, heard_bob = rx.user(alice.user_id), rx.user(bob.user_id)
                with trio.fail_after(WAIT):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(alice.speak_pcm, low)
                        nursery.start_soon(bob.speak_pcm, high)
                        from_alice = await collect(heard_alice, 35)
                        from_bob = await collect(heard_bob, 35)
                    events = [await speaking.receive() for _ in range(4)]
            stats = vc.receive_stats
        # Each stream is one member's, decoded, and sounds like what that member said.
        assert {f.user_id for f in from_alice} == {alice.user_id}
        assert {f.user_id for f in from_bob} == {bob.user_id}
        assert all(f.pcm is not None and len(f.pcm) == 3840 for f in from_alice + from_bob)
        assert audio_of(from_alice) == [s.opus for s in alice.sent][:30]
        assert audio_of(from_bob) == [s.opus for s in bob.sent][:30]
        assert correlation(low, pcm_of(from_alice)) > 0.99
        assert correlation(high, pcm_of(from_bob)) > 0.99
        # Frames of one tick were heard together: the two streams share the receiver's clock.
        assert abs(from_alice[0].tick - from_bob[0].tick) <= 2
        starts = {e.user_id for e in events if isinstance(e, SpeakingStarted)}
        stops = {e.user_id for e in events if isinstance(e, SpeakingStopped)}
        assert starts == stops == {alice.user_id, bob.user_id}
        assert stats.dropped == {}
        assert stats.passed["dave.decrypted"] == 60


async def test_opus_only_receive_skips_decoding() -> None:
    frames = encode_pcm(sine_pcm(0.3))
    async with environment(dave="off") as env:
        member = env.member()
        async with (
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
            vc.receive(decode=False, delay=0.06) as rx,
        ):
            stream = rx.user(member.user_id)
            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(member.speak_opus, frames)
                    got = await collect(stream, len(frames))
        assert [f.opus for f in got] == frames
        assert all(f.pcm is None for f in got)
        assert "decode.plc" not in vc.receive_stats.passed


# --- who is who ------------------------------------------------------------------------------


async def test_audio_before_its_speaking_is_held_then_heard_whole() -> None:
    frames = encode_pcm(sine_pcm(0.8))
    async with environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [member])
            async with vc.receive(decode=False) as rx:
                stream = rx.user(member.user_id)
                with trio.fail_after(WAIT):
                    async with trio.open_nursery() as nursery:
                        # Op 5 only after 25 frames (half a second) have gone out.
                        nursery.start_soon(lambda: member.speak_opus(frames, announce_after=25))
                        got = await collect(stream, len(frames), concealed=False)
            stats = vc.receive_stats
    assert [f.opus for f in got] == frames
    assert stats.passed["ssrc.held"] >= 24
    assert stats.passed["ssrc.released"] == stats.passed["ssrc.held"]
    assert "ssrc.unnamed_expired" not in stats.dropped


async def test_op_12_names_a_member_who_never_announces_speaking() -> None:
    frames = encode_pcm(sine_pcm(0.3))
    async with environment(voice_op12=True) as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [member])
            async with vc.receive(decode=False) as rx:
                stream = rx.user(member.user_id)
                with trio.fail_after(WAIT):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(lambda: member.speak_opus(frames, announce=False))
                        got = await collect(stream, len(frames), concealed=False)
            assert vc.receive_stats.passed.get("ssrc.held", 0) == 0
    assert [f.opus for f in got] == frames


async def test_audio_from_a_sender_never_named_is_dropped_after_a_second() -> None:
    frames = encode_pcm(sine_pcm(0.3))
    async with environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [member])
            async with vc.receive(decode=False) as rx:
                stream = rx.user(member.user_id, end_after_inactivity=2.0)
                with trio.fail_after(WAIT):
                    await member.speak_opus(frames, announce=False)
                    got = [frame async for frame in stream]  # ends: nothing came
            stats = vc.receive_stats
    assert got == []
    held = len(frames) + 5  # and the silence tail
    assert stats.passed["ssrc.held"] == held
    assert stats.dropped == {"ssrc.unnamed_expired": held}


async def test_a_member_who_reconnects_is_heard_on_its_new_ssrc() -> None:
    first, second = encode_pcm(sine_pcm(0.3, hz=300)), encode_pcm(sine_pcm(0.3, hz=500))
    async with environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [member])
            async with vc.receive(decode=False) as rx:
                stream = rx.user(member.user_id)
                with trio.fail_after(WAIT):
                    await member.speak_opus(first)
                    old_ssrc = member.ssrc
                    before = await collect(stream, len(first) + 5, concealed=False)
                    member.reconnect()
                    await in_group(vc, [member])
                    await member.speak_opus(second)
                    after = await collect(stream, len(second), concealed=False)
    assert member.ssrc != old_ssrc
    assert audio_of(before) == first and {f.ssrc for f in before} == {old_ssrc}
    assert [f.opus for f in after] == second and {f.ssrc for f in after} == {member.ssrc}


async def test_a_member_leaving_mid_word_ends_its_audio_cleanly() -> None:
    frames = encode_pcm(sine_pcm(1.0))
    async with environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [member])
            async with vc.receive(decode=True) as rx:
                speaking = rx.speaking()
                stream = rx.user(member.user_id, end_after_inactivity=0.5)
                with trio.fail_after(WAIT):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(member.speak_opus, frames)
                        got = await collect(stream, 10, concealed=False)
                        member.leave()
                    got += [frame async for frame in stream]  # ends after 0.5 s of nothing
                    events = [await speaking.receive(), await speaking.receive()]
                await settled_until(lambda: vc.receive_stats.passed.get("playout.played", 0))
        heard = audio_of(got)
        assert 10 <= len(heard) < len(frames)
        assert heard == frames[: len(heard)]
        assert [type(e) for e in events] == [SpeakingStarted, SpeakingStopped]


# --- the network's faults --------------------------------------------------------------------


async def test_padding_extensions_and_a_timestamp_jump_change_nothing_heard() -> None:
    first, second = encode_pcm(sine_pcm(0.4, hz=300)), encode_pcm(sine_pcm(0.4, hz=500))
    async with environment() as env:
        member = env.member()
        member.padding = 13
        member.extension_words = 3
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [member])
            async with vc.receive(decode=False) as rx:
                stream = rx.user(member.user_id)
                with trio.fail_after(WAIT):
                    async with trio.open_nursery() as nursery:

                        async def speak() -> None:
                            await member.speak_opus(first, silence_tail=False)
                            member.jump_timestamp(-8 * 48_000)  # Songbird #261: 8 s back
                            await member.speak_opus(second)

                        nursery.start_soon(speak)
                        got = await collect(stream, len(first) + len(second), concealed=False)
            stats = vc.receive_stats
    assert [f.opus for f in got] == first + second
    assert stats.passed["playout.resync"] == 1
    assert stats.total_dropped("dave") == 0


async def test_loss_reordering_duplication_and_jitter_are_concealed_in_order() -> None:
    frames = encode_pcm(sine_pcm(2.0))
    faults: UdpFaults[Any] = UdpFaults(seed=7, drop=0.05, duplicate=0.05, jitter=0.03)
    async with environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [member])
            async with vc.receive(delay=0.1) as rx:
                stream = rx.user(member.user_id)
                with env.voice.media.impair(to_client=faults), trio.fail_after(WAIT):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(member.speak_opus, frames)
                        got = await collect(stream, len(frames))
            stats = vc.receive_stats
    assert faults.dropped > 0 and faults.duplicated > 0 and faults.jittered > 0
    # Every slot of the member's timeline came out once, in order, lost ones concealed.
    timestamps = [f.timestamp for f in got]
    assert all((b - a) % (1 << 32) == 960 for a, b in itertools.pairwise(timestamps))
    # What was heard is what was sent, packet by packet, in the sender's order (a steady tone
    # repeats its frames, so packets are told apart by sequence number).
    sent = {s.sequence: s.opus for s in member.sent}
    heard = [f for f in got if not f.concealed]
    assert all(f.opus == sent[f.sequence] for f in heard if f.sequence is not None)
    sequences = [f.sequence for f in heard]
    assert sequences == sorted(sequences, key=lambda n: (n - sequences[0]) % (1 << 16))
    assert len(set(sequences)) == len(sequences)
    concealed = [f for f in got if f.concealed]
    assert concealed and all(f.pcm is not None for f in concealed)
    assert stats.dropped.get("replay.duplicate", 0) > 0
    assert stats.passed.get("playout.fec", 0) + stats.passed.get("playout.plc", 0) == len(concealed)


# --- consumers -------------------------------------------------------------------------------


async def test_a_slow_reader_loses_its_oldest_frames_and_stalls_nothing() -> None:
    frames = encode_pcm(sine_pcm(0.6))
    async with environment(dave="off") as env:
        member = env.member()
        async with (
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
            vc.receive(decode=False) as rx,
        ):
            never_read = rx.user(member.user_id, buffer=5)
            reader = rx.user(member.user_id)
            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(member.speak_opus, frames)
                    got = await collect(reader, len(frames), concealed=False)
                # The reader that kept up got everything; the one that never read holds the
                # newest five frames and counted the rest as dropped.
                await settled_until(lambda: never_read.dropped >= len(frames) - 5)
                kept = [never_read.receive_nowait() for _ in range(5)]
            assert rx.counts["stream.dropped"] >= len(frames) - 5
        assert [f.opus for f in got] == frames
        assert [f.sequence for f in kept] == sorted(f.sequence for f in kept)
        assert kept[-1].sequence is not None


async def test_a_user_who_never_speaks_gives_an_empty_stream_and_no_error() -> None:
    async with (
        environment(dave="off") as env,
        voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
    ):
        async with vc.receive() as rx:
            with trio.fail_after(WAIT):
                quiet = rx.user(123456789012345678, end_after_inactivity=0.2)
                assert [frame async for frame in quiet] == []
                manual = rx.user(123456789012345678)
                with pytest.raises(trio.WouldBlock):
                    manual.receive_nowait()
        # Leaving the block ended every stream it opened.
        assert manual.ended and [frame async for frame in manual] == []


async def test_the_mixed_stream_sums_everyone_and_is_silence_between() -> None:
    low, high = sine_pcm(0.4, hz=330, amplitude=0.2), sine_pcm(0.4, hz=660, amplitude=0.2)
    async with environment(dave="off") as env:
        alice, bob = env.member(), env.member()
        async with (
            voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
            vc.receive() as rx,
        ):
            mixed = rx.mixed()
            with trio.fail_after(WAIT):
                quiet = await mixed.receive()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(alice.speak_pcm, low)
                    nursery.start_soon(bob.speak_pcm, high)
                ticks = []
                while len(ticks) < 60:
                    ticks.append(await mixed.receive())
    assert quiet.user_ids == () and quiet.pcm == bytes(3840)
    both = [t for t in ticks if set(t.user_ids) == {alice.user_id, bob.user_id}]
    assert len(both) >= 15
    loudest = max(max(array.array("h", t.pcm)) for t in both)
    assert loudest > 0.3 * 32767  # two tones of 0.2 add up


async def test_receive_arguments_and_one_receiver_at_a_time() -> None:
    async with environment(dave="off") as env:
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            for bad in ({"delay": 0}, {"delay": 5}, {"delay": "1"}, {"decode": 1}):
                with pytest.raises(UsageError):
                    async with vc.receive(**bad):
                        pass
            async with vc.receive(decode=False) as rx:
                with pytest.raises(UsageError, match="already receiving"):
                    async with vc.receive():
                        pass
                with pytest.raises(UsageError, match="decoded"):
                    rx.mixed()
                with pytest.raises(UsageError):
                    rx.user("not an id")
                with pytest.raises(UsageError):
                    rx.user(1, end_after_silence=-1)
                with pytest.raises(UsageError):
                    rx.user(1, buffer=0)
        # The connection is over: a receiver still opens, and its streams end at once.
        async with vc.receive() as rx:
            assert [frame async for frame in rx.all()] == []


# --- DAVE churn --------------------------------------------------------------------------------


async def test_a_downgrade_and_an_upgrade_mid_speech_lose_nothing() -> None:
    frames = encode_pcm(sine_pcm(3.0))
    async with environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [member])
            async with vc.receive(decode=False) as rx:
                stream = rx.user(member.user_id)
                got: list[ReceivedAudio] = []
                with trio.fail_after(WAIT):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(member.speak_opus, frames)
                        got += await collect(stream, 20, concealed=False)
                        env.voice.dave_downgrade(env.channel.id)
                        await vc.wait_for(lambda: vc.dave_protocol_version == 0)
                        got += await collect(stream, 30, concealed=False)
                        env.voice.dave_upgrade(env.channel.id)
                        await in_group(vc, [member])
                        got += await collect(stream, len(frames) - 50, concealed=False)
            stats = vc.receive_stats
    # Plaintext during the transport-only stretch, end-to-end encrypted on either side of it:
    # every frame heard, in order, none failing DAVE.
    assert [f.opus for f in got] == frames
    assert stats.total_dropped("dave") == 0, stats
    assert stats.passed["dave.decrypted"] > 0 and stats.passed["dave.passed_through"] > 0


async def test_members_joining_and_leaving_mid_speech_do_not_interrupt_another() -> None:
    frames = encode_pcm(sine_pcm(2.0))
    async with environment() as env:
        speaker = env.member(name="speaker")
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [speaker])
            async with vc.receive(decode=False) as rx:
                stream = rx.user(speaker.user_id)
                with trio.fail_after(WAIT):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(speaker.speak_opus, frames)
                        got = await collect(stream, 15, concealed=False)
                        newcomer = env.member(name="newcomer")  # the group re-keys
                        await in_group(vc, [speaker, newcomer])
                        got += await collect(stream, 15, concealed=False)
                        newcomer.leave()  # and again
                        got += await collect(stream, len(frames) - 30, concealed=False)
            stats = vc.receive_stats
    assert [f.opus for f in got] == frames
    assert stats.total_dropped("dave") == 0, stats


async def test_frames_that_keep_failing_dave_start_the_group_over() -> None:
    """36 undecryptable frames in a row outside a transition: op 31 and a fresh key package."""
    frames = encode_pcm(sine_pcm(0.4))
    forged = [bytes(20) + bytes([12]) + b"\xfa\xfa" for _ in range(40)]  # DAVE-shaped garbage
    async with environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await in_group(vc, [member])
            async with vc.receive(decode=False) as rx:
                stream = rx.user(member.user_id)
                with trio.fail_after(WAIT):
                    encryptor, member.frame_encryptor = member.frame_encryptor, None
                    await member.speak_opus(forged)  # reaches the bot as is: it cannot open it
                    await vc.wait_for(lambda: vc.dave_stats.get("recoveries", 0) == 1)
                    member.frame_encryptor = encryptor
                    await in_group(vc, [member])  # the group formed again, with the bot in it
                    await member.speak_opus(frames)
                    # The forged run's silence tail (which DAVE passes) comes first.
                    got = await collect(stream, len(frames) + 5, concealed=False)
            stats = vc.receive_stats
            assert 31 in env.session().received_ops  # DAVE_MLS_INVALID_COMMIT_WELCOME
    assert vc.dave_stats["recoveries"] == 1
    assert audio_of(got) == frames  # nothing forged came out; everything after, as sent
    assert stats.dropped["dave.decrypt_failed"] >= 36


async def test_the_receiver_sleeps_while_nobody_speaks_and_its_ticks_stay_a_clock(
    jump_clock: trio.testing.MockClock,
) -> None:
    """No tick runs in a silence (a wake-up costs more than a tick's work), yet tick numbers
    count it: the next talkspurt's frames are placed that much later."""
    frames = encode_pcm(sine_pcm(0.2))
    async with (
        environment(dave="off") as env,
        voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
    ):
        member = env.member()
        pipeline = vc._task.protocol.receive
        tap = vc._task.receive_tap
        async with vc.receive(decode=False) as rx:
            stream, events = rx.user(member.user_id), rx.speaking()
            with trio.fail_after(WAIT):
                await member.speak_opus(frames)
                first = await collect(stream, len(frames) + 5, concealed=False)
                async for event in events:
                    if isinstance(event, SpeakingStopped):
                        break
                await settled_until(lambda: not tap.paced)  # asleep, the socket read on readiness
            ticks_run, clock = pipeline.tick_count, rx.tick
            await trio.sleep(30)
            assert pipeline.tick_count == ticks_run  # no tick in thirty seconds of silence
            assert 1499 <= rx.tick - clock <= 1501  # but the clock went on
            with trio.fail_after(WAIT):
                await member.speak_opus(frames)
                second = await collect(stream, len(frames), concealed=False)
    assert [f.opus for f in first[: len(frames)]] == [f.opus for f in second] == frames
    # Thirty seconds (1500 ticks) plus the talkspurt's own length apart, give or take a tick.
    assert 1500 + len(frames) - 5 <= second[0].tick - first[0].tick <= 1500 + len(frames) + 15
