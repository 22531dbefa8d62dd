"""The SFU knobs in a DAVE call: padded, extended frames and a reconnecting member, end to end.

The bot is the raw DAVE client of ``dave_client``; it reads the member's datagrams itself and
opens them in the order a receiver must: transport decryption, extension body and padding
stripped, then DAVE with the sender's user id.
"""

from __future__ import annotations

from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice.testing import SentFrame, SimMember

from .dave_client import DaveBot, dave_bot, in_one_group, tone_frames, wait
from .voice_client import BOT, CHANNEL, GUILD, USER, voice_server

LISTENER = USER + 1


async def opened(bot: DaveBot, sent: list[SentFrame]) -> list[bytes | None]:
    """What the bot gets from the datagrams of ``sent``, DAVE-decrypted."""
    frames: list[bytes | None] = []
    for record in sent:
        packet = bot.hs.cipher.decrypt(await bot.hs.udp.recv())
        assert (packet.header.sequence, packet.header.ssrc) == (record.sequence, record.ssrc)
        frames.append(bot.dave.decrypt_opus(USER, packet.payload))
    return frames


def speak(member: SimMember, frames: list[bytes]) -> list[SentFrame]:
    return [member.send_opus(frame) for frame in frames]


async def test_padded_extended_frames_decrypt_once_stripped_and_fail_if_not() -> None:
    _, frames = tone_frames(0.2)
    async with (
        voice_server(dave_mode="required") as (server, authority),
        dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot,
    ):
        member = server.add_member(GUILD, CHANNEL, USER)
        member.padding, member.extension_words = 9, 2
        await wait(server, lambda: in_one_group(bot, [member]))
        sent = speak(member, [*frames, OPUS_SILENCE_FRAME])
        first = sent[0]
        datagram = await bot.hs.udp.recv()
        # 16 bytes of clear header (with the extension preamble); body, frame and padding sealed.
        sealed = len(first.extension_body) + len(first.payload) + first.padding
        assert len(datagram) == 16 + sealed + 16 + 4
        plain = bot.hs.cipher.decrypt(datagram)
        assert plain.payload == first.payload and first.payload.endswith(b"\xfa\xfa")
        # Padding sits after DAVE's trailing FA FA marker: left on, the frame is lost.
        unstripped = first.payload + bytes(8) + b"\x09"
        assert bot.dave.decrypt_opus(USER, unstripped) != first.opus
        assert bot.dave.decrypt_opus(USER, first.extension_body + first.payload) != first.opus
        assert bot.dave.decrypt_opus(USER, plain.payload) == first.opus
        rest = await opened(bot, sent[1:])
        assert rest == [f.opus for f in sent[1:]]
        assert rest[-1] == OPUS_SILENCE_FRAME
        assert all(f.payload != f.opus for f in sent[:-1])  # DAVE-encrypted on the wire


async def test_a_reconnecting_member_gets_a_new_ssrc_and_the_call_stays_encrypted() -> None:
    _, frames = tone_frames(0.2)
    async with (
        voice_server(dave_mode="required") as (server, authority),
        dave_bot(server, authority.issue(GUILD, CHANNEL, BOT)) as bot,
    ):
        member = server.add_member(GUILD, CHANNEL, USER)
        listener = server.add_member(GUILD, CHANNEL, LISTENER)
        member.padding = 4
        await wait(server, lambda: in_one_group(bot, [member, listener]))
        old_ssrc, old_epoch, old_dave = member.ssrc, bot.dave.epoch, member.dave
        assert old_epoch is not None
        before = speak(member, frames)
        assert await opened(bot, before) == frames
        new_ssrc = member.reconnect()
        assert new_ssrc != old_ssrc and member.dave is not old_dave
        # Its old leaf is removed and the new one added: a new epoch for everyone.
        await wait(
            server,
            lambda: (
                in_one_group(bot, [member, listener])
                and bot.dave.epoch is not None
                and bot.dave.epoch > old_epoch
            ),
        )
        assert bot.dave.group_user_ids == {BOT, USER, LISTENER}
        heard_before = listener.frames_decrypted
        after = speak(member, frames)
        assert {f.ssrc for f in after} == {new_ssrc}
        assert await opened(bot, after) == frames
        assert listener.frames_decrypted == heard_before + len(frames)
        assert listener.dave_decrypt_failures == 0
        assert server.dave_gateway.errors == [] and bot.errors == []
