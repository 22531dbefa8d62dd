"""DAVE through the real voice connection, against the simulator with DAVE required.

Each simulated member is an independent MLS group member with its own davey session, so what the
bot encrypts is checked end to end by someone who is not the bot: the simulator's server side,
like Discord's, never holds group secrets.

Sending goes through the connection's own send path only (``play()`` of raw Opus packets, byte
for byte, or ``send_voice_data()``), paced by its sender; what left the bot is read from the
simulator's recording of it, transport-decrypted but still DAVE-encrypted. Nothing reaches into
the connection: the tests see what a user sees (its properties, counters and events) and what the
simulator saw. Receiving has no public API yet, so what the bot opened is read from its DAVE
counters, not from the frames themselves. Synchronisation is always on events (the bot's, or the
simulator's changes) or on the program being idle, never on a sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from discore_voice import (
    OPUS_SILENCE_FRAME,
    Connected,
    DaveChange,
    DaveError,
    DaveStateChanged,
    Intents,
    InvalidationReason,
    OggOpusSource,
    VoiceConnection,
    VoiceConnectionFailed,
    VoiceEvents,
    open_shard,
    voice_connection,
)
from discore_voice._audio.opus import OpusEncoder
from discore_voice._audio.signals import channel, find_alignment, sine_pcm
from discore_voice._core.speaking import SILENCE_FRAMES_AFTER_AUDIO
from discore_voice._core.voice import dave as core_dave
from discore_voice.testing import ABRUPT, SimMember, open_local_discord
from discore_voice.testing._recording import ogg_opus_bytes

from .conftest import WAIT, BotInGuild, settled_until

PCM_FRAME = 3840  # 20 ms of 48 kHz stereo s16le
DAVE_MAGIC = b"\xfa\xfa"  # every DAVE-encrypted frame ends with it
TAIL = SILENCE_FRAMES_AFTER_AUDIO
#: How long a looped stream could play (seconds of audio); tests cancel it long before.
STREAM_LOOPS = 30


def tone(seconds: float = 0.6, hz: float = 440.0) -> tuple[bytes, list[bytes]]:
    """A tone and its 20 ms Opus frames, the reference members' audio is checked against."""
    pcm = sine_pcm(seconds, hz=hz)
    with OpusEncoder(bitrate=64_000) as encoder:
        frames = [encoder.encode(pcm[i : i + PCM_FRAME]) for i in range(0, len(pcm), PCM_FRAME)]
    return pcm, frames


def matches(reference: bytes, heard: bytes) -> float:
    skip = 960 * 5  # past the encoder's ramp-in
    return find_alignment(
        channel(reference)[skip:], channel(heard)[skip:], max_lag=1000
    ).correlation


@dataclass
class Env(BotInGuild):
    def member(self, channel_id: int | None = None) -> SimMember:
        return self.discord.add_voice_member(self.guild.id, channel_id or self.channel.id)

    def sent(self) -> list[bytes]:
        """Every payload the voice server received from the bot, in order: transport-decrypted,
        still DAVE-encrypted (what Discord relays)."""
        return [p.payload for p in self.voice.media.recording(self.bot_id).packets]

    def sent_audio(self) -> list[bytes]:
        """:meth:`sent` without the silence frames (which DAVE never encrypts)."""
        return [p for p in self.sent() if p != OPUS_SILENCE_FRAME]


@asynccontextmanager
async def dave_environment(**options: Any) -> AsyncIterator[Env]:
    async with open_local_discord(dave="required", **options) as discord:
        guild = discord.add_guild()
        voice_channel = guild.add_voice_channel()
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            yield Env(discord, shard, guild, voice_channel)


# --- waiting -------------------------------------------------------------------------------


async def _next_event(wakeups: VoiceEvents, done: trio.CancelScope) -> None:
    async for _ in wakeups:
        break
    else:
        await trio.sleep_forever()  # the connection is over: only the simulator can wake us
    done.cancel()


async def _simulator_holds(
    env: Env, predicate: Callable[[], object], done: trio.CancelScope
) -> None:
    await env.voice.wait_for(predicate)
    done.cancel()


async def until(env: Env, vc: VoiceConnection, predicate: Callable[[], object]) -> None:
    """Wait until ``predicate()`` holds, re-checked on each of the bot's events and on every
    change of the simulator.

    The bot is watched through a subscription of its own, used only to wake up. A connection
    publishes its state when it has carried out the whole step that emitted an event, so after
    an event the predicate is re-checked once every task is blocked.
    """
    with trio.fail_after(WAIT), vc.subscribe() as wakeups:
        while not predicate():
            async with trio.open_nursery() as race:
                race.start_soon(_next_event, wakeups, race.cancel_scope)
                race.start_soon(_simulator_holds, env, predicate, race.cancel_scope)
            await trio.testing.wait_all_tasks_blocked()


def in_one_group(vc: VoiceConnection, members: list[SimMember]) -> Callable[[], bool]:
    """The bot can encrypt, and every member is at its epoch with its privacy code.

    ``voice_privacy_code`` is None unless the bot's group is ready; with version 1 that is what
    "the bot encrypts" means. The version is needed too: a ready group keeps its code in a
    transport-only call (after a downgrade, or an upgrade's commit before op 22 executes).
    """

    def check() -> bool:
        code = vc.voice_privacy_code
        return (
            vc.dave_protocol_version == 1
            and code is not None
            and all(m.epoch == vc.dave_epoch and m.voice_privacy_code == code for m in members)
        )

    return check


def heard(members: list[SimMember], count: int) -> Callable[[], bool]:
    return lambda: all(m.frames_heard >= count for m in members)


def all_arrived(env: Env, vc: VoiceConnection, *, silence_at_least: int = 0) -> Callable[[], bool]:
    """Every frame the bot sent reached the voice server, and at least so many silence frames
    went out (so a run's tail is over)."""

    def check() -> bool:
        stats = vc.send_stats
        return (
            stats.silence_frames >= silence_at_least
            and len(env.sent()) == stats.frames_sent + stats.silence_frames
        )

    return check


# --- sending through the connection's own path ---------------------------------------------


def opus_source(frames: list[bytes]) -> OggOpusSource:
    return OggOpusSource.from_bytes(ogg_opus_bytes(frames), name="frames.opus")


async def play(env: Env, vc: VoiceConnection, frames: list[bytes]) -> list[bytes]:
    """Play ``frames`` byte for byte; return what the voice server received of them, in order.

    Waits for the run's silence tail: everything sent before a later run is then on record.
    """
    before = len(env.sent())
    silence = vc.send_stats.silence_frames
    with trio.fail_after(WAIT):
        assert (await vc.play(opus_source(frames))).frames == len(frames)
    await until(env, vc, all_arrived(env, vc, silence_at_least=silence + TAIL))
    run = env.sent()[before:]
    assert run[len(frames) :] == [OPUS_SILENCE_FRAME] * TAIL
    return run[: len(frames)]


@asynccontextmanager
async def streaming(env: Env, vc: VoiceConnection, frames: list[bytes]) -> AsyncIterator[None]:
    """``frames`` on a loop through ``play()`` for the block, paced by the connection's sender;
    leaving cancels it, and waits until its silence tail reached the voice server."""
    source = opus_source(frames * STREAM_LOOPS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(vc.play, source)
        yield
        silence = vc.send_stats.silence_frames
        nursery.cancel_scope.cancel()
    await until(env, vc, all_arrived(env, vc, silence_at_least=silence + TAIL))


# --- joining -------------------------------------------------------------------------------


async def test_the_bot_joins_with_one_then_three_members_who_all_decrypt_it() -> None:
    pcm, frames = tone()
    async with dave_environment() as env:
        first = env.member()
        conn = VoiceConnection(env.shard, env.guild.id)
        events = conn.subscribe()
        async with conn.connect(env.channel.id) as vc:
            assert env.session().identify["max_dave_protocol_version"] == 1
            members = [first]
            await until(env, vc, in_one_group(vc, members))
            assert vc.dave_epoch == 1 and first.dave_protocol_version == 1
            await play(env, vc, frames)
            await until(env, vc, heard(members, len(frames)))

            members += [env.member(), env.member()]
            await until(env, vc, in_one_group(vc, members))
            assert vc.dave_epoch is not None and vc.dave_epoch > 1
            await play(env, vc, frames)
            await until(env, vc, heard(members, len(frames)))

            sent = env.sent_audio()
            assert len(sent) == 2 * len(frames)
            assert all(p.endswith(DAVE_MAGIC) for p in sent)
            assert vc.dave_stats["encrypted"] == 2 * len(frames)
            assert vc.dave_stats.get("encrypt_failed", 0) == 0
            assert len({m.voice_privacy_code for m in members} | {vc.voice_privacy_code}) == 1
            for member in members:
                assert member.dave_decrypt_failures == 0
                assert member.frames_decrypted >= len(frames)
                assert matches(pcm, member.heard_pcm(env.bot_id)) > 0.9
            assert first.frames_decrypted == 2 * len(frames)
            assert env.voice.dave_gateway.errors == []
        changes = [e for e in [e async for e in events] if isinstance(e, DaveStateChanged)]
        assert changes[0].cause is DaveChange.STARTED and changes[0].protocol_version == 1
        assert any(c.can_encrypt and c.voice_privacy_code for c in changes)


async def test_the_first_frame_after_the_group_is_ready_decrypts() -> None:
    _, frames = tone(0.2)
    async with dave_environment() as env:
        member = env.member()
        conn = VoiceConnection(env.shard, env.guild.id)
        events = conn.subscribe()
        async with conn.connect(env.channel.id) as vc:
            with trio.fail_after(WAIT):
                async for event in events:
                    if isinstance(event, DaveStateChanged) and event.can_encrypt:
                        break
            # At once, with no other wait: the member must already hold the keys.
            (payload,) = await play(env, vc, [frames[5]])
            assert payload.endswith(DAVE_MAGIC)
            await until(env, vc, heard([member], 1))
            assert member.frames_decrypted == 1 and member.dave_decrypt_failures == 0


async def test_before_the_group_is_ready_frames_go_transport_only_and_silence_always() -> None:
    _, frames = tone(0.1)
    async with (
        dave_environment() as env,
        voice_connection(env.shard, env.guild.id, env.channel.id) as vc,
    ):
        # Alone in the call: a lone member's group is never ready (whitepaper).
        await until(env, vc, lambda: vc.dave_protocol_version == 1)
        assert vc.voice_privacy_code is None
        assert await play(env, vc, [frames[2]]) == [frames[2]]
        assert vc.dave_stats.get("encrypted", 0) == 0
        member = env.member()
        await until(env, vc, in_one_group(vc, [member]))
        before, silence, after = await play(env, vc, [frames[2], OPUS_SILENCE_FRAME, frames[2]])
        assert silence == OPUS_SILENCE_FRAME
        for payload in (before, after):
            assert payload != frames[2] and payload.endswith(DAVE_MAGIC)


async def test_verification_codes_match_the_members_and_are_cached() -> None:
    async with dave_environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [member]))
            code = await vc.verification_code(member.user_id)
            assert member.dave is not None
            assert code == member.dave.client.verification_code(env.bot_id)
            started = trio.current_time()
            assert await vc.verification_code(str(member.user_id)) == code
            assert trio.current_time() - started < 0.1  # cached, no second scrypt
            with pytest.raises(DaveError):
                await vc.verification_code(123_456_789_012_345_678)  # not in the group


# --- churn ---------------------------------------------------------------------------------


async def test_a_member_joins_mid_stream_and_another_leaves() -> None:
    pcm, frames = tone(1.0)
    async with dave_environment() as env:
        first = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [first]))
            async with streaming(env, vc, frames):
                await until(env, vc, heard([first], 10))
                epoch = vc.dave_epoch
                second = env.member()
                await until(env, vc, in_one_group(vc, [first, second]))
                assert vc.dave_epoch is not None and epoch is not None and vc.dave_epoch > epoch
                # Frames relayed before its welcome are ciphertext it cannot have keys for;
                # from the moment it is in the group, nothing may be lost.
                lost_before_welcome = second.dave_decrypt_failures
                decrypted = second.frames_decrypted
                await until(env, vc, lambda: second.frames_decrypted >= decrypted + 10)
                assert second.dave_decrypt_failures == lost_before_welcome

                # The second member leaves: a new epoch without it, and it cannot follow.
                epoch = vc.dave_epoch
                second.leave()
                await until(
                    env,
                    vc,
                    lambda: vc.dave_epoch != epoch and in_one_group(vc, [first])(),
                )
                # Not in the bot's group any more: there is no code to compare with it.
                with pytest.raises(DaveError):
                    await vc.verification_code(second.user_id)
                before = first.frames_heard
                await until(env, vc, heard([first], before + 10))
            (payload,) = await play(env, vc, [frames[7]])
            assert payload.endswith(DAVE_MAGIC)
            assert second.dave is not None
            assert second.dave.client.decrypt_opus(env.bot_id, payload) is None
            assert first.dave_decrypt_failures == 0
            assert matches(pcm, first.heard_pcm(env.bot_id)) > 0.8


async def test_two_members_joining_at_once_end_in_one_group() -> None:
    _, frames = tone(0.2)
    async with dave_environment() as env:
        first = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [first]))
            members = [first, env.member(), env.member()]
            await until(env, vc, in_one_group(vc, members))
            await play(env, vc, frames)
            await until(env, vc, heard(members, len(frames)))
            assert all(m.dave_decrypt_failures == 0 for m in members)
            assert env.voice.dave_gateway.errors == []


# --- transitions and faults ----------------------------------------------------------------


async def test_downgrade_to_zero_and_back_up_with_audio_continuous() -> None:
    pcm, frames = tone(1.0)
    async with dave_environment() as env:
        member = env.member()
        conn = VoiceConnection(env.shard, env.guild.id)
        events = conn.subscribe()
        async with conn.connect(env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [member]))
            async with streaming(env, vc, frames):
                await until(env, vc, heard([member], 10))

                env.voice.dave_downgrade(env.channel.id)
                await until(
                    env,
                    vc,
                    lambda: vc.dave_protocol_version == 0 and member.dave_protocol_version == 0,
                )
                # Once the program is idle, whatever the bot sent before it switched is on
                # record (a datagram over loopback is queued when ``send`` returns): every
                # frame from here on must be the source's, byte for byte.
                await trio.testing.wait_all_tasks_blocked()
                sent = len(env.sent())
                audio_sent = len(env.sent_audio())
                await until(env, vc, lambda: len(env.sent()) >= sent + 10)
                assert all(p in frames for p in env.sent()[sent:])
                await until(env, vc, heard([member], audio_sent + 5))

                env.voice.dave_upgrade(env.channel.id)
                await until(env, vc, in_one_group(vc, [member]))
                decrypted = member.frames_decrypted
                await until(env, vc, lambda: member.frames_decrypted >= decrypted + 10)
            total = len(env.sent_audio())
            assert total == vc.send_stats.frames_sent
            await until(env, vc, heard([member], total))
            assert member.dave_decrypt_failures == 0
            assert member.frames_heard == total
            assert matches(pcm, member.heard_pcm(env.bot_id)) > 0.8
        causes = [e.cause for e in [e async for e in events] if isinstance(e, DaveStateChanged)]
        assert DaveChange.DOWNGRADED in causes and DaveChange.UPGRADED in causes


async def test_a_corrupted_commit_leads_to_op_31_and_a_rejoin() -> None:
    _, frames = tone(0.2)
    async with dave_environment() as env:
        first = env.member()
        conn = VoiceConnection(env.shard, env.guild.id)
        events = conn.subscribe()
        async with conn.connect(env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [first]))
            gateway = env.voice.dave_gateway
            gateway.corrupt_next("commit", env.bot_id)
            second = env.member()
            state = gateway.channel(env.channel.id)
            await until(env, vc, lambda: any(u == env.bot_id for u, _ in state.invalid_reports))
            await until(env, vc, in_one_group(vc, [first, second]))
            await play(env, vc, frames)
            await until(env, vc, heard([first, second], len(frames)))
            assert first.dave_decrypt_failures == 0 and second.dave_decrypt_failures == 0
            assert vc.is_connected and vc.invalidation is None
        causes = [e.cause for e in [e async for e in events] if isinstance(e, DaveStateChanged)]
        assert DaveChange.REINITIALISED in causes


async def test_a_lost_execute_does_not_lose_audio() -> None:
    _, frames = tone(0.2)
    async with dave_environment() as env:
        first = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [first]))
            env.voice.dave_gateway.drop_next_execute(env.bot_id)
            second = env.member()
            await until(env, vc, in_one_group(vc, [first, second]))
            await play(env, vc, frames)
            await until(env, vc, heard([first, second], len(frames)))
            assert first.dave_decrypt_failures == 0
            assert second.frames_decrypted == len(frames)
            assert vc.is_connected


async def test_a_resume_mid_call_keeps_the_group_and_catches_up() -> None:
    _, frames = tone(0.2)
    async with dave_environment() as env:
        first = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [first]))
            epoch, code = vc.dave_epoch, vc.voice_privacy_code
            session = env.session()
            key_packages = session.received_ops.count(26)
            env.voice.close(session, ABRUPT)
            with trio.fail_after(WAIT):
                await env.voice.wait_for(lambda: not session.connected)
            # Joins while the bot is away: its DAVE messages are re-delivered on resume.
            second = env.member()
            await until(env, vc, lambda: session.resumes == 1)
            # Resuming, the bot is not connected (a resume announces no event): wait for it.
            with trio.fail_after(WAIT):
                assert await vc.wait_connected()
            assert vc.dave_epoch is not None and epoch is not None
            await until(env, vc, in_one_group(vc, [first, second]))
            assert vc.dave_epoch > epoch and vc.voice_privacy_code != code
            assert session.received_ops.count(26) == key_packages  # no re-join: same group
            await play(env, vc, frames)
            await until(env, vc, heard([first, second], len(frames)))
            assert first.dave_decrypt_failures == 0 and second.dave_decrypt_failures == 0


async def test_a_resume_without_changes_keeps_decrypting() -> None:
    _, frames = tone(0.2)
    async with dave_environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [member]))
            epoch, code = vc.dave_epoch, vc.voice_privacy_code
            session = env.session()
            env.voice.close(session, 4015)
            await until(env, vc, lambda: session.resumes == 1)
            # Resuming, the bot is not connected (a resume announces no event): wait for it.
            with trio.fail_after(WAIT):
                assert await vc.wait_connected()
            assert (vc.dave_epoch, vc.voice_privacy_code) == (epoch, code)
            await play(env, vc, frames)
            await until(env, vc, heard([member], len(frames)))
            assert member.frames_decrypted == len(frames)


async def test_a_channel_switch_starts_dave_afresh() -> None:
    _, frames = tone(0.2)
    async with dave_environment() as env:
        first = env.member()
        second_channel = env.guild.add_voice_channel(name="second")
        other = env.member(second_channel.id)
        conn = VoiceConnection(env.shard, env.guild.id)
        events = conn.subscribe()
        async with conn.connect(env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [first]))
            old_code = vc.voice_privacy_code
            await vc.update_voice_state(second_channel.id)
            await until(env, vc, lambda: vc.channel_id == second_channel.id)
            await until(env, vc, in_one_group(vc, [other]))
            assert vc.voice_privacy_code != old_code
            await play(env, vc, frames)
            await until(env, vc, heard([other], len(frames)))
            assert other.frames_decrypted == len(frames)
        got = [e async for e in events]
        assert sum(isinstance(e, Connected) for e in got) == 2
        assert DaveChange.RESET in [e.cause for e in got if isinstance(e, DaveStateChanged)]


# --- receiving -----------------------------------------------------------------------------


async def test_a_speaking_members_frames_are_decrypted_after_the_transport() -> None:
    _, frames = tone(0.4)
    async with dave_environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [member]))
            async with vc.receive(decode=False) as rx:
                with rx.user(member.user_id) as stream, trio.fail_after(WAIT):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(member.speak_opus, frames)
                        got = []
                        async for frame in stream:
                            assert frame.user_id == member.user_id and frame.ssrc == member.ssrc
                            got.append(frame)
                            if len(got) == len(frames) + SILENCE_FRAMES_AFTER_AUDIO:
                                break
            # What the member sent was end-to-end encrypted (and only that reached the bot)...
            spoken = list(member.sent)
            audio = [p.payload for p in spoken[: len(frames)]]
            assert all(
                p != f and p.endswith(DAVE_MAGIC) for p, f in zip(audio, frames, strict=True)
            )
            # ...and the bot opened each one after the transport: exactly the frames spoken, in
            # order, none concealed, then the silence frames, which DAVE passes in the clear.
            assert [f.opus for f in got[: len(frames)]] == frames
            assert not any(f.concealed for f in got)
            assert [f.sequence for f in got] == [p.sequence for p in spoken[: len(got)]]
            assert all(f.pcm is None for f in got)  # decode=False
            stats = vc.dave_stats
            assert stats["decrypted"] == len(frames)
            assert stats.get("decrypt_failed", 0) == 0
            received = vc.receive_stats
            assert received.dropped == {}
            assert received.passed["dave.decrypted"] == len(frames)


# --- without davey -------------------------------------------------------------------------


async def test_without_davey_dave_required_invalidates_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(core_dave, "max_supported_dave_version", lambda: 0)
    async with dave_environment() as env:
        started = trio.current_time()
        with pytest.raises(VoiceConnectionFailed) as caught:
            async with voice_connection(env.shard, env.guild.id, env.channel.id):
                raise AssertionError("must not connect")
        assert caught.value.reason is InvalidationReason.DAVE_REQUIRED
        assert "pip install 'davey" in caught.value.cause
        assert trio.current_time() - started < 5.0
        # One Identify, closed with 4017, and no second attempt.
        assert [c.close_code for c in env.voice.connections] == [4017]


async def test_garbage_dave_frames_are_logged_and_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, frames = tone(0.2)
    async with dave_environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, [member]))
            # Raw frames, unnumbered, straight onto the websocket (what no encoder builds).
            session = env.session()
            caplog.clear()
            for junk in (b"\x00", b"\x00\x01\x1d", b"\x00\x02\x1b\x07", b"\x00\x03\x1e\x00"):
                session.send_raw(junk)
            with trio.fail_after(WAIT):
                # A log line is announced by no event: wait for the program to be idle.
                await settled_until(lambda: "DAVE" in caplog.text or "malformed" in caplog.text)
            await play(env, vc, frames)
            await until(env, vc, heard([member], len(frames)))
            assert vc.is_connected and member.dave_decrypt_failures == 0


# --- the connection's own send path --------------------------------------------------------


async def test_pcm_through_the_connections_sender_is_end_to_end_encrypted() -> None:
    pcm = sine_pcm(0.6, hz=440.0)
    async with dave_environment() as env:
        members = [env.member(), env.member()]
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            await until(env, vc, in_one_group(vc, members))
            await vc.send_voice_data(pcm)
            frames = len(pcm) // PCM_FRAME
            await until(env, vc, lambda: all(m.frames_decrypted >= frames for m in members))
            for member in members:
                assert member.dave_decrypt_failures == 0
                assert matches(pcm, member.heard_pcm(env.bot_id)) > 0.9
            assert vc.dave_stats["encrypted"] >= frames
