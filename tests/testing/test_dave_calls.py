"""DAVE calls through the simulator: a raw bot and simulated members in one MLS group.

The bot is a real DAVE client (``dave_client``); each member has its own. What the bot
sends is checked by the members, who decrypt it end to end: the simulator's server side never
holds group secrets, exactly like Discord's.
"""

from __future__ import annotations

from discore_voice._core.voice.opcodes import VoiceOpcode
from discore_voice._core.voice.payloads import DaveExecuteTransition
from discore_voice.testing import SimMember

from .dave_client import (
    dave_bot,
    heard_all,
    in_one_group,
    matches,
    tone_frames,
    wait,
)
from .voice_client import BOT, CHANNEL, GUILD, voice_server

USERS = [444_444_444_444_444_001 + i for i in range(6)]


def add(server: object, index: int) -> SimMember:
    from discore_voice.testing import VoiceServer

    assert isinstance(server, VoiceServer)
    return server.add_member(GUILD, CHANNEL, USERS[index])


async def test_bot_and_one_then_three_members_share_a_group_and_hear_the_tone() -> None:
    pcm, frames = tone_frames()
    async with voice_server(dave_mode="required") as (server, authority):
        members = [add(server, 0)]
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: in_one_group(bot, members))
            assert bot.dave.epoch == 1
            assert bot.hs.description.dave_protocol_version == 1
            await bot.send_opus(frames)
            await wait(server, heard_all(members, len(frames)))
            members += [add(server, 1), add(server, 2)]
            await wait(server, lambda: in_one_group(bot, members))
            await bot.send_opus(frames)
            await wait(server, heard_all(members, len(frames)))
        gateway = server.dave_gateway
        assert gateway.errors == [] and bot.errors == []
        assert members[0].frames_decrypted == 2 * len(frames)
        for member in members:
            assert member.dave_decrypt_failures == 0
            assert member.frames_decrypted >= len(frames)
            assert matches(pcm, member.heard_pcm(BOT)) > 0.9
        assert len({m.voice_privacy_code for m in members}) == 1
        assert all(sent[-2:] == b"\xfa\xfa" for sent in bot.sent_frames)


async def test_the_first_frame_after_the_group_is_ready_decrypts() -> None:
    _, frames = tone_frames(0.1)
    async with voice_server(dave_mode="required") as (server, authority):
        member = add(server, 0)
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: bot.dave.can_encrypt)
            await bot.send_opus(frames[3:4])
            await wait(server, heard_all([member], 1))
            assert member.frames_decrypted == 1 and member.dave_decrypt_failures == 0


async def test_a_transition_waits_for_op_23_and_executes_on_it() -> None:
    async with voice_server(dave_mode="required") as (server, authority):
        member = add(server, 0)
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(
                server,
                lambda: any(isinstance(m, DaveExecuteTransition) for m in member.dave_messages),
            )
            session = server.sessions[0]
            assert VoiceOpcode.DAVE_TRANSITION_READY in session.received_ops
            assert server.dave_gateway.channel(CHANNEL).expired == []
            assert bot.dave.protocol_version == 1


async def test_a_member_joining_mid_stream_starts_a_new_epoch_and_audio_keeps_decrypting() -> None:
    pcm, frames = tone_frames(0.9)
    first, second, third = frames[:15], frames[15:30], frames[30:]
    async with voice_server(dave_mode="required") as (server, authority):
        early = add(server, 0)
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: in_one_group(bot, [early]))
            await bot.send_opus(first)
            late = add(server, 1)  # the early member commits at once; the bot is behind
            assert early.epoch == 2 and bot.dave.epoch == 1
            await bot.send_opus(second)  # still under epoch 1's keys
            await wait(server, lambda: in_one_group(bot, [early, late]))
            await bot.send_opus(third)
            await wait(server, heard_all([early], len(frames)))
            await wait(server, heard_all([late], len(second) + len(third)))
        assert early.dave_decrypt_failures == 0
        assert early.frames_decrypted == len(frames)
        assert matches(pcm, early.heard_pcm(BOT)) > 0.9
        assert late.frames_decrypted >= len(third)


async def test_a_member_who_left_cannot_decrypt_the_next_epoch() -> None:
    _, frames = tone_frames(0.2)
    async with voice_server(dave_mode="required") as (server, authority):
        staying, leaving = add(server, 0), add(server, 1)
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: in_one_group(bot, [staying, leaving]))
            before = bot.dave.encrypt_opus(frames[5])
            assert leaving.dave is not None
            assert leaving.dave.client.decrypt_opus(BOT, before) == frames[5]
            epoch = bot.dave.epoch
            assert epoch is not None
            leaving.leave()
            await wait(server, lambda: in_one_group(bot, [staying]) and bot.dave.epoch != epoch)
            assert bot.dave.group_user_ids == {BOT, USERS[0]}
            after = bot.dave.encrypt_opus(frames[6])
            assert leaving.dave.client.decrypt_opus(BOT, after) is None
            await bot.send_opus(frames)
            await wait(server, heard_all([staying], len(frames)))
        assert staying.dave_decrypt_failures == 0
        assert staying.frames_decrypted == len(frames)


async def test_two_members_joining_at_once_are_committed_together() -> None:
    _, frames = tone_frames(0.2)
    async with voice_server(dave_mode="required") as (server, authority):
        quiet = add(server, 0)
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: in_one_group(bot, [quiet]))
            assert quiet.dave is not None
            quiet.dave.never_commits = True  # the bot has to commit both Adds
            newcomers = [add(server, 1), add(server, 2)]
            everyone = [quiet, *newcomers]
            await wait(server, lambda: in_one_group(bot, everyone))
            channel = server.dave_gateway.channel(CHANNEL)
            assert channel.server.members.keys() == {BOT, *USERS[:3]}
            # One commit added both: the bot's first, citing only the first Add, lost.
            assert bot.dave.epoch == 2
            assert any(user == BOT and not stale for user, _, stale in channel.rejected)
            await bot.send_opus(frames)
            await wait(server, heard_all(everyone, len(frames)))
        for member in everyone:
            assert member.dave_decrypt_failures == 0
            assert member.frames_decrypted == len(frames)


async def test_downgrade_to_zero_and_back_keeps_audio_continuous() -> None:
    pcm, frames = tone_frames(0.9)
    first, second, third = frames[:15], frames[15:30], frames[30:]
    async with voice_server(dave_mode="required") as (server, authority):
        members = [add(server, 0), add(server, 1)]
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: in_one_group(bot, members))
            await bot.send_opus(first)
            server.dave_downgrade(CHANNEL)
            await wait(server, lambda: bot.dave.protocol_version == 0)
            assert all(m.dave_protocol_version == 0 for m in members)
            await bot.send_opus(second)  # transport-only now
            assert not any(sent.endswith(b"\xfa\xfa") for sent in bot.sent_frames[15:30])
            server.dave_upgrade(CHANNEL)
            await wait(
                server,
                lambda: (
                    in_one_group(bot, members)
                    and bot.dave.protocol_version == 1
                    and all(m.dave_protocol_version == 1 for m in members)
                ),
            )
            await bot.send_opus(third)
            await wait(server, heard_all(members, len(frames)))
        assert all(sent.endswith(b"\xfa\xfa") for sent in bot.sent_frames[30:])
        for member in members:
            assert member.dave_decrypt_failures == 0
            assert len(member.heard[BOT].packets) == len(frames)
            assert member.frames_decrypted == len(first) + len(third)
            assert matches(pcm, member.heard_pcm(BOT)) > 0.9
        assert [
            c.cause.value for c in bot.changes if c.cause.value in ("downgraded", "upgraded")
        ] == [
            "downgraded",
            "upgraded",
        ]


async def test_a_corrupted_commit_leads_to_op_31_and_a_rejoin() -> None:
    _, frames = tone_frames(0.2)
    async with voice_server(dave_mode="required") as (server, authority):
        first = add(server, 0)
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: in_one_group(bot, [first]))
            server.dave_gateway.corrupt_next("commit", BOT)
            second = add(server, 1)
            await wait(server, lambda: bot.recoveries != [])
            await wait(server, lambda: in_one_group(bot, [first, second]))
            channel = server.dave_gateway.channel(CHANNEL)
            [(user, tid)] = channel.invalid_reports
            assert user == BOT and tid == bot.recoveries[0].transition_id
            assert VoiceOpcode.DAVE_MLS_INVALID_COMMIT_WELCOME in server.sessions[0].received_ops
            assert server.dave_gateway.faults == []
            await bot.send_opus(frames)
            await wait(server, heard_all([first, second], len(frames)))
        for member in (first, second):
            assert member.dave_decrypt_failures == 0
            assert member.frames_decrypted == len(frames)


async def test_a_corrupted_welcome_leads_to_op_31_and_a_rejoin() -> None:
    async with voice_server(dave_mode="required") as (server, authority):
        first = add(server, 0)
        server.dave_gateway.corrupt_next("welcome")
        async with dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot:
            await wait(server, lambda: in_one_group(bot, [first]))
            assert [r.what for r in bot.recoveries] == ["welcome"]
            assert server.dave_gateway.channel(CHANNEL).invalid_reports[0][0] == BOT
