"""#12 defects that need a whole, well-behaved call around them: the local Discord simulator.

Nonce reuse needs a real resume with the key sent again; the leave queue needs the simulator's
rate limit (4008 above 120 a minute) and its voice states; an encoder failing on a worker thread
needs two calls and a listener to show that the other one keeps playing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import pytest
import trio
from trio.testing import MockClock

from discore_voice import EncoderSettings, Intents, InvalidationReason, open_shard, voice_connection
from discore_voice._audio.opus import OpusEncoder
from discore_voice._audio.signals import sine_pcm
from discore_voice._core.ip_discovery import IP_DISCOVERY_SIZE
from discore_voice.testing import UdpFaults, open_local_discord

from .conftest import WAIT, bystander

Address = tuple[str, int]


@dataclass(eq=False)
class Recorder(UdpFaults[tuple[bytes, Address]]):
    """A fault that impairs nothing: it keeps a copy of every datagram the bot sends."""

    datagrams: list[bytes] = field(default_factory=list)

    def apply(self, datagram: tuple[bytes, Address]) -> list[tuple[float, tuple[bytes, Address]]]:
        self.datagrams.append(datagram[0])
        return [(0.0, datagram)]


# --- defect 1: a re-sent key never reuses a nonce -------------------------------------------


async def test_a_key_sent_again_after_a_resume_never_reuses_a_nonce() -> None:
    recorder = Recorder()
    with trio.fail_after(WAIT):
        async with (
            bystander(),
            open_local_discord(resend_session_description_on_resume=True, dave="off") as discord,
        ):
            guild = discord.add_guild()
            channel = guild.add_voice_channel()
            discord.add_voice_member(guild.id, channel.id, name="listener")
            discord.voice.media.faults_from_client = recorder
            async with (
                open_shard(
                    discord.bot.token,
                    intents=Intents.VOICE_DEFAULT,
                    gateway_url=discord.gateway_url,
                ) as shard,
                voice_connection(shard, guild.id, channel.id) as vc,
            ):
                session = discord.voice.session_for(discord.bot.user_id)
                assert session is not None
                key = session.secret_key

                def audio() -> list[bytes]:
                    ssrc = session.ssrc.to_bytes(4, "big")
                    return [
                        d
                        for d in recorder.datagrams
                        if len(d) != IP_DISCOVERY_SIZE and d[8:12] == ssrc
                    ]

                vc.send_voice_data_nowait(sine_pcm(1.0))
                await discord.voice.wait_for(lambda: len(audio()) >= 10)
                discord.voice.close(session, 4015)
                await discord.voice.wait_for(lambda: session.resumes == 1)
                await vc.wait_connected()
                before = len(audio())
                await discord.voice.wait_for(lambda: len(audio()) >= before + 10)
                # The same key, in a Session Description sent again after Resumed.
                assert session.secret_key == key
                assert [op for _, op in session.sent].count(4) == 2
    nonces = [int.from_bytes(d[-4:], "big") for d in audio()]
    repeated = sorted({n for n in nonces if nonces.count(n) > 1})
    assert repeated == [], f"nonces used twice under one key: {repeated[:10]}"


# --- defect 3: leaves under the rate limit are queued, never dropped ------------------------


async def fill_the_send_budget(shard: object, guild_id: int, channel_id: int, count: int) -> None:
    """``count`` ordinary op 4s (mute toggles in one channel), each returning once sent."""
    for index in range(count):
        await shard.update_voice_state(  # type: ignore[attr-defined]
            guild_id, channel_id, self_mute=index % 2 == 0
        )


@pytest.mark.parametrize("then", ["stay in the shard block", "leave the shard block at once"])
async def test_a_burst_of_leaves_under_the_rate_limit_all_reach_discord(
    then: str, jump_clock: MockClock
) -> None:
    with trio.fail_after(WAIT * 10):
        async with bystander(), open_local_discord(dave="off") as discord:
            places = []
            for index in range(10):
                guild = discord.add_guild(name=f"guild {index}")
                places.append((guild.id, guild.add_voice_channel().id))
            spare = discord.add_guild(name="spare")
            spare_channel = spare.add_voice_channel()
            bot = discord.bot.user_id

            def anyone_left_behind() -> bool:
                return any(discord.voice_state(g, bot) is not None for g, _ in places)

            async with open_shard(
                discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
            ) as shard:
                async with contextlib.AsyncExitStack() as stack:
                    for guild_id, channel_id in places:
                        await stack.enter_async_context(
                            voice_connection(shard, guild_id, channel_id)
                        )
                    # 10 joins and 90 toggles: 100 of the 105 ordinary slots of the window.
                    await fill_the_send_budget(shard, spare.id, spare_channel.id, 90)
                    assert not any(discord.voice_state(g, bot) is None for g, _ in places)
                    leaving = trio.current_time()
                # Each block ended at once; its leave waits on the shard, not in the block.
                assert trio.current_time() - leaving < 1.0
                assert anyone_left_behind()  # most leaves are still waiting for the budget
                if then == "stay in the shard block":
                    await discord.wait_for(lambda: not anyone_left_behind())
                    assert trio.current_time() - leaving <= 61.0
            # Leaving the shard block sent every queued leave before the shard closed.
            assert not anyone_left_behind()
            assert len(discord.connections) == 1
            assert discord.connections[0].close_code == 1000  # never over the limit (4008)


# --- defect 4: an encoder worker raising a BaseException ------------------------------------


class _NotAnException(BaseException):
    """What a misbehaving native callback might raise: not an ``Exception`` at all."""


class _SlowThenFailing(OpusEncoder):
    """8 ms per frame on the trio thread (0.4 of a core, so the pool starts offloading); on a
    worker thread, a BaseException."""

    def encode(self, pcm: bytes | bytearray | memoryview) -> bytes:
        if threading.current_thread() is not threading.main_thread():
            raise _NotAnException("from an encoder worker")
        time.sleep(0.008)
        return super().encode(pcm)


@dataclass(frozen=True, slots=True)
class _FailingOnWorkers(EncoderSettings):
    def create(self) -> OpusEncoder:
        return _SlowThenFailing(bitrate=self.bitrate)


async def test_an_encoder_worker_raising_a_base_exception_fails_one_connection_only() -> None:
    with trio.fail_after(WAIT):
        async with bystander(), open_local_discord(dave="off") as discord:
            failing_guild, healthy_guild = discord.add_guild(), discord.add_guild()
            failing_channel = failing_guild.add_voice_channel()
            healthy_channel = healthy_guild.add_voice_channel()
            listener = discord.add_voice_member(healthy_guild.id, healthy_channel.id)
            async with (
                open_shard(
                    discord.bot.token,
                    intents=Intents.VOICE_DEFAULT,
                    gateway_url=discord.gateway_url,
                ) as shard,
                voice_connection(shard, healthy_guild.id, healthy_channel.id) as healthy,
                voice_connection(
                    shard, failing_guild.id, failing_channel.id, encoder=_FailingOnWorkers()
                ) as failing,
            ):
                healthy.send_voice_data_nowait(sine_pcm(1.0))
                await discord.voice.wait_for(lambda: listener.frames_heard >= 5)
                failing.send_voice_data_nowait(sine_pcm(1.0))
                invalidation = await failing.wait_invalidated()
                heard = listener.frames_heard
                await discord.voice.wait_for(lambda: listener.frames_heard >= heard + 10)
                assert healthy.is_connected
    assert invalidation.reason is InvalidationReason.ERROR
    assert "EncoderWorkerError" in invalidation.detail  # it failed on a worker thread
