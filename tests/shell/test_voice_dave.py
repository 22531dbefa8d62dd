"""DAVE through the real voice connection, against the simulator with DAVE required.

Each simulated member is an independent MLS group member with its own davey session, so what the
bot encrypts is checked end to end by someone who is not the bot: the simulator's server side,
like Discord's, never holds group secrets.

Sending: the connection's send path lands separately. Until it does, these tests send Opus the
way it will: each frame through ``vc._media_encryptor`` (which the DAVE layer sets), then the
connection's own transport cipher and UDP socket (``vc.udp``). Nothing else about the path is
faked. Where a test streams audio across a change, frames are paced on trio's clock as a real
sender would; synchronisation is always on events, never on a sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from discore_voice._shell.shard.connection import open_shard

from discore_voice._audio.opus import OpusEncoder
from discore_voice._audio.signals import channel, find_alignment, sine_pcm
from discore_voice._core.gateway.intents import Intents
from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice._core.transport import DecryptedPacket
from discore_voice._core.voice import dave as core_dave
from discore_voice._core.voice.dave import DaveChange, DaveStateChanged
from discore_voice._core.voice.session import Connected, InvalidationReason
from discore_voice._errors import DaveError
from discore_voice._shell.voice_connection import (
    VoiceConnection,
    VoiceConnectionFailed,
    voice_connection,
)
from discore_voice._shell.voice_events import VoiceEvents
from discore_voice.testing import SimMember, open_local_discord
from discore_voice.testing._faults import ABRUPT

from .conftest import WAIT, BotInGuild

PCM_FRAME = 3840  # 20 ms of 48 kHz stereo s16le
FRAME_SECONDS = 0.02


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


@asynccontextmanager
async def dave_environment(**options: Any) -> AsyncIterator[Env]:
    async with open_local_discord(dave="required", **options) as discord:
        guild = discord.add_guild()
        voice_channel = guild.add_voice_channel()
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            yield Env(discord, shard, guild, voice_channel)


async def until(env: Env, vc: VoiceConnection, predicate: Callable[[], object]) -> None:
    """Wait until ``predicate()`` holds, re-checked on every change of the bot or the simulator."""
    with trio.fail_after(WAIT):
        while not predicate():
            events = (vc._current_event(), env.voice._changed_event)
            async with trio.open_nursery() as nursery:

                async def fire(event: trio.Event, nursery: trio.Nursery = nursery) -> None:
                    await event.wait()
                    nursery.cancel_scope.cancel()

                for event in events:
                    nursery.start_soon(fire, event)


def in_one_group(vc: VoiceConnection, members: list[SimMember]) -> Callable[[], bool]:
    """The bot can encrypt, and every member is at its epoch with its privacy code."""

    def check() -> bool:
        code = vc.voice_privacy_code
        return (
            vc.dave_protocol_version == 1
            and code is not None
            and vc._dave.can_encrypt
            and all(m.epoch == vc.dave_epoch and m.voice_privacy_code == code for m in members)
        )

    return check


def heard(members: list[SimMember], count: int) -> Callable[[], bool]:
    return lambda: all(m.frames_heard >= count for m in members)


@dataclass
class BotAudio:
    """The bot's audio, through ``_media_encryptor`` and the connection's transport and UDP."""

    vc: VoiceConnection
    sequence: int = 0
    timestamp: int = 0
    sent: list[bytes] = field(default_factory=list)

    async def send(self, frames: list[bytes]) -> None:
        for frame in frames:
            await self.send_one(frame)

    async def send_one(self, frame: bytes) -> bytes:
        udp = self.vc.udp
        assert udp is not None and udp.cipher is not None
        payload = self.vc._media_encryptor(frame)
        self.sent.append(payload)
        await udp.send(udp.cipher.encrypt_opus(self.sequence, self.timestamp, udp.ssrc, payload))
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + 960) & 0xFFFFFFFF
        return payload

    async def stream(
        self, frames: list[bytes], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Paced on trio's clock like a real sender, until cancelled."""
        task_status.started()
        index = 0
        while True:
            await self.send_one(frames[index % len(frames)])
            index += 1
            await trio.sleep(FRAME_SECONDS)


def dave_events(events: VoiceEvents) -> list[DaveStateChanged]:
    got: list[DaveStateChanged] = []
    while True:
        try:
            event = events._receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return got
        if isinstance(event, DaveStateChanged):
            got.append(event)


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
            audio = BotAudio(vc)
            await audio.send(frames)
            await until(env, vc, heard(members, len(frames)))

            members += [env.member(), env.member()]
            await until(env, vc, in_one_group(vc, members))
            assert vc.dave_epoch is not None and vc.dave_epoch > 1
            await audio.send(frames)
            await until(env, vc, heard(members, len(frames)))

            assert all(p[-2:] == b"\xfa\xfa" for p in audio.sent)
            assert vc.dave_stats["encrypted"] == 2 * len(frames)
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
            payload = await BotAudio(vc).send_one(frames[5])
            assert payload.endswith(b"\xfa\xfa")
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
        assert vc._media_encryptor(frames[2]) == frames[2]
        member = env.member()
        await until(env, vc, in_one_group(vc, [member]))
        assert vc._media_encryptor(OPUS_SILENCE_FRAME) == OPUS_SILENCE_FRAME
        assert vc._media_encryptor(frames[2]) != frames[2]


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
            audio = BotAudio(vc)
            async with trio.open_nursery() as nursery:
                await nursery.start(audio.stream, frames)
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
                assert vc._dave.client is not None
                assert second.user_id not in vc._dave.client.group_user_ids
                before = first.frames_heard
                await until(env, vc, heard([first], before + 10))
                nursery.cancel_scope.cancel()
            payload = await audio.send_one(frames[7])
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
            await BotAudio(vc).send(frames)
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
            audio = BotAudio(vc)
            async with trio.open_nursery() as nursery:
                await nursery.start(audio.stream, frames)
                await until(env, vc, heard([member], 10))

                env.voice.dave_downgrade(env.channel.id)
                await until(
                    env,
                    vc,
                    lambda: vc.dave_protocol_version == 0 and member.dave_protocol_version == 0,
                )
                assert vc._media_encryptor(frames[3]) == frames[3]
                sent = len(audio.sent)
                await until(env, vc, lambda: len(audio.sent) >= sent + 10)
                assert all(not p.endswith(b"\xfa\xfa") for p in audio.sent[sent + 1 :])
                await until(env, vc, heard([member], sent + 5))

                env.voice.dave_upgrade(env.channel.id)
                await until(env, vc, in_one_group(vc, [member]))
                decrypted = member.frames_decrypted
                await until(env, vc, lambda: member.frames_decrypted >= decrypted + 10)
                nursery.cancel_scope.cancel()
            await until(env, vc, heard([member], len(audio.sent)))
            assert member.dave_decrypt_failures == 0
            assert member.frames_heard == len(audio.sent)
            assert matches(pcm, member.heard_pcm(env.bot_id)) > 0.8
        causes = [e.cause for e in dave_events(events)]
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
            await BotAudio(vc).send(frames)
            await until(env, vc, heard([first, second], len(frames)))
            assert first.dave_decrypt_failures == 0 and second.dave_decrypt_failures == 0
            assert vc.is_connected and vc.invalidation is None
        causes = [e.cause for e in dave_events(events)]
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
            await BotAudio(vc).send(frames)
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
            await env.voice.wait_for(lambda: session._connection is None)
            # Joins while the bot is away: its DAVE messages are re-delivered on resume.
            second = env.member()
            await until(env, vc, lambda: session.resumes == 1 and vc.is_connected)
            assert vc.dave_epoch is not None and epoch is not None
            await until(env, vc, in_one_group(vc, [first, second]))
            assert vc.dave_epoch > epoch and vc.voice_privacy_code != code
            assert session.received_ops.count(26) == key_packages  # no re-join: same group
            await BotAudio(vc).send(frames)
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
            await until(env, vc, lambda: session.resumes == 1 and vc.is_connected)
            assert (vc.dave_epoch, vc.voice_privacy_code) == (epoch, code)
            await BotAudio(vc).send(frames)
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
            await BotAudio(vc).send(frames)
            await until(env, vc, heard([other], len(frames)))
            assert other.frames_decrypted == len(frames)
        got = [e async for e in events]
        assert sum(isinstance(e, Connected) for e in got) == 2
        assert DaveChange.RESET in [e.cause for e in got if isinstance(e, DaveStateChanged)]


# --- receiving -----------------------------------------------------------------------------


async def test_a_speaking_members_frames_are_decrypted_after_the_transport() -> None:
    _, frames = tone(0.2)
    async with dave_environment() as env:
        member = env.member()
        async with voice_connection(env.shard, env.guild.id, env.channel.id) as vc:
            got: list[tuple[int, bytes]] = []

            def on_frame(user_id: int, packet: DecryptedPacket, opus: bytes) -> None:
                got.append((user_id, opus))

            vc._dave.on_frame = on_frame
            await until(env, vc, in_one_group(vc, [member]))
            member.set_speaking()
            await until(env, vc, lambda: member.ssrc in vc._dave._users_by_ssrc)
            for frame in frames:
                member.send_opus(frame)
            await until(env, vc, lambda: len(got) == len(frames))
            assert got == [(member.user_id, f) for f in frames]
            assert vc.dave_stats["decrypted"] == len(frames)
            assert vc.dave_stats.get("decrypt_failed", 0) == 0


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
            connection = env.session()._connection
            assert connection is not None
            for junk in (b"\x00", b"\x00\x01\x1d", b"\x00\x02\x1b\x07", b"\x00\x03\x1e\x00"):
                connection.push(0, junk)
            await until(env, vc, lambda: "DAVE" in caplog.text or "malformed" in caplog.text)
            await BotAudio(vc).send(frames)
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
