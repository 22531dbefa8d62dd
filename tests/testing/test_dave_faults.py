"""DAVE faults and edge cases in the simulator: stalled members, lost op 22, resumes, speaking
members, and a member left alone."""

from __future__ import annotations

import random

import trio

from discore_voice._core.voice.dave import DaveClient
from discore_voice._core.voice.frames import ServerBinaryMessage
from discore_voice._core.voice.opcodes import VoiceOpcode
from discore_voice._core.voice.payloads import (
    DaveExecuteTransition,
    DaveMlsInvalidCommitWelcome,
    DavePrepareEpoch,
    DavePrepareTransition,
    DaveTransitionReady,
    Heartbeat,
)
from discore_voice.testing import SimMember, VoiceServer

from .dave_client import (
    dave_bot,
    heard_all,
    in_one_group,
    matches,
    resumed,
    tone_frames,
    wait,
)
from .voice_client import BOT, CHANNEL, GUILD, voice_server

USERS = [555_555_555_555_555_001 + i for i in range(4)]


def add(server: VoiceServer, index: int) -> SimMember:
    return server.add_member(GUILD, CHANNEL, USERS[index])


def executes(member: SimMember) -> list[int]:
    return [m.transition_id for m in member.dave_messages if isinstance(m, DaveExecuteTransition)]


def same_group(members: list[SimMember]) -> bool:
    codes = {m.voice_privacy_code for m in members}
    epochs = {m.epoch for m in members}
    return len(codes) == 1 and None not in codes and len(epochs) == 1


async def test_a_member_that_never_gets_ready_is_executed_without_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with voice_server(dave_mode="required", dave_transition_timeout=5.0) as (server, _):
        first, stalled = add(server, 0), add(server, 1)
        assert same_group([first, stalled])
        assert stalled.dave is not None
        stalled.dave.never_ready = True
        before = executes(first)
        start = trio.current_time()
        late = add(server, 2)
        channel = server.dave_gateway.channel(CHANNEL)
        [tid] = channel.server.pending_transitions
        assert channel.server.pending_transitions[tid] == {stalled.user_id}
        with trio.fail_after(20):  # the clock jumps; this bounds a hang, not the timeout
            await server.wait_for(lambda: tid in channel.expired)
        assert trio.current_time() - start >= 5.0
        for member in (first, stalled, late):
            assert executes(member)[-1] == tid
        assert executes(first) == [*before, tid]
        assert same_group([first, stalled, late])


async def test_a_member_that_never_commits_leaves_it_to_the_others() -> None:
    async with voice_server(dave_mode="required") as (server, _):
        lazy = add(server, 0)
        assert lazy.dave is not None
        lazy.dave.never_commits = True
        other = add(server, 1)
        # The lazy member's commit is dropped; the newcomer's commit creates the group.
        assert same_group([lazy, other])
        channel = server.dave_gateway.channel(CHANNEL)
        assert channel.server.members == {other.user_id: 0, lazy.user_id: 1}


async def test_a_lost_op_22_in_a_downgrade_keeps_plaintext_flowing() -> None:
    _, frames = tone_frames(0.2)
    async with voice_server(dave_mode="required") as (server, authority):
        members = [add(server, 0), add(server, 1)]
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            dave = server.dave_gateway.channel(CHANNEL).server
            await wait(server, lambda: in_one_group(bot, members) and not dave.pending_transitions)
            server.dave_gateway.drop_next_execute(members[1].user_id)
            server.dave_downgrade(CHANNEL)
            await wait(server, lambda: bot.dave.protocol_version == 0)
            assert members[0].dave_protocol_version == 0
            # The member never heard op 22: still at version 1, but op 21 opened passthrough.
            assert members[1].dave_protocol_version == 1
            assert isinstance(members[1].dave_messages[-1], DavePrepareTransition)
            await bot.send_opus(frames)
            await wait(server, heard_all(members, len(frames)))
        for member in members:
            assert member.dave_decrypt_failures == 0
            assert len(member.heard[BOT].packets) == len(frames)


async def test_a_resume_mid_call_redelivers_dave_binary_frames() -> None:
    pcm, frames = tone_frames(0.4)
    async with voice_server(dave_mode="required") as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        first = add(server, 0)
        async with dave_bot(server, credentials) as bot:
            await wait(server, lambda: in_one_group(bot, [first]))
            await bot.send_opus(frames[:10])
            [session] = server.sessions
            server.close(session, 4015)
            await wait(server, lambda: bot.closed and not session.connected)
            assert bot.close_code == 4015
            second = add(server, 1)  # the first member commits; the bot's op 29 waits
            missed = [op for seq, op in session.sent if seq is not None][-1]
            assert missed == VoiceOpcode.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION
            async with resumed(bot, credentials):
                await wait(server, lambda: in_one_group(bot, [first, second]))
                assert session.resumes == 1
                redelivered = [
                    m for _, m in bot.voice.received if isinstance(m, ServerBinaryMessage)
                ]
                assert redelivered[-1].op is VoiceOpcode.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION
                # Binary frames are numbered like JSON ones: the tracker saw them (seq_ack).
                seqs = [q for q, m in bot.voice.received if isinstance(m, ServerBinaryMessage)]
                assert None not in seqs
                await wait(server, lambda: bot.voice.tracker.latest == session.last_seq)
                await bot.send_opus(frames[10:])
                await wait(server, heard_all([first], len(frames)))
                await wait(server, heard_all([second], len(frames) - 10))
        assert first.dave_decrypt_failures == 0 and second.dave_decrypt_failures == 0
        assert first.frames_decrypted == len(frames)
        assert matches(pcm, first.heard_pcm(BOT)) > 0.9


async def test_a_speaking_member_sends_dave_encrypted_audio_to_the_bot() -> None:
    _, frames = tone_frames(0.1)
    async with voice_server(dave_mode="required") as (server, authority):
        member = add(server, 0)
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: in_one_group(bot, [member]))
            member.send_opus(frames[2])
            packet = bot.hs.cipher.decrypt(await bot.hs.udp.recv())
            assert packet.payload.endswith(b"\xfa\xfa")
            assert packet.payload != frames[2]
            assert bot.dave.decrypt_opus(member.user_id, packet.payload) == frames[2]


async def test_a_member_left_alone_is_reset_and_waits_for_company() -> None:
    async with voice_server(dave_mode="required") as (server, _):
        staying, leaving = add(server, 0), add(server, 1)
        assert same_group([staying, leaving])
        leaving.leave()
        assert DavePrepareEpoch(epoch=1, protocol_version=1) in staying.dave_messages
        assert staying.voice_privacy_code is None  # alone: pending, never ready
        newcomer = add(server, 2)
        assert same_group([staying, newcomer])
        assert server.dave_gateway.channel(CHANNEL).epoch == 1


async def test_garbage_dave_messages_from_a_bot_are_refused_without_a_crash() -> None:
    async with voice_server(dave_mode="required") as (server, authority):
        member = add(server, 0)
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: in_one_group(bot, [member]))
            for frame in (b"\x1a", b"\x1agarbage", b"\x1c\x00\x01\x00", b"\x1c" + bytes(300)):
                await bot.voice.send_raw(frame)
            rng = random.Random(7)
            for _ in range(40):
                op = rng.choice([b"\x1a", b"\x1c"])
                await bot.voice.send_raw(op + rng.randbytes(rng.randrange(0, 200)))
            await bot.voice.send(DaveTransitionReady(transition_id=4242))
            await bot.voice.send(DaveMlsInvalidCommitWelcome(transition_id=4242))
            await bot.voice.send(Heartbeat(7, bot.voice.tracker.seq_ack))
            state = server.dave_gateway.channel(CHANNEL)
            await wait(server, lambda: 4242 in {t for _, t in state.invalid_reports})
            # The op 31 took the bot out of the group; after it, a client re-keys (as on op 24
            # epoch 1), and its new key package brings it back.
            await bot.handle(DavePrepareEpoch(epoch=1, protocol_version=1))
            await wait(server, lambda: in_one_group(bot, [member]) and bot.dave.epoch == 3)
            [session] = server.sessions
            assert session.connected and not bot.closed
        assert server.dave_gateway.errors == []


def test_members_use_the_library_dave_client() -> None:
    # Every davey call stays behind the core adapter: members are DaveClients too.
    from discore_voice.testing._dave.members import SimDaveMember

    assert isinstance(SimDaveMember(1, 2).client, DaveClient)


async def test_an_upgrade_executes_without_a_member_that_never_rekeys_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with voice_server(dave_mode="required", dave_transition_timeout=3.0) as (server, _):
        members = [add(server, i) for i in range(3)]
        assert same_group(members)
        dead = members[2]
        dead.dave_handler = lambda message: None  # hears nothing from now on
        start = trio.current_time()
        server.dave_downgrade(CHANNEL)
        channel = server.dave_gateway.channel(CHANNEL)
        with trio.fail_after(20):
            await server.wait_for(lambda: channel.protocol_version == 0)
        assert trio.current_time() - start >= 3.0  # the downgrade waited for the dead one
        assert [m.dave_protocol_version for m in members[:2]] == [0, 0]
        server.dave_upgrade(CHANNEL)
        # The two live members re-key at once, but their op 22 is held for the dead one...
        assert channel.upgrading and channel.held
        assert [m.dave_protocol_version for m in members[:2]] == [0, 0]
        upgrade_start = trio.current_time()
        with trio.fail_after(20):
            await server.wait_for(lambda: not channel.upgrading)
        # ...until the timeout gives up on it.
        assert trio.current_time() - upgrade_start >= 3.0
        assert [m.dave_protocol_version for m in members[:2]] == [1, 1]
        assert same_group(members[:2])
