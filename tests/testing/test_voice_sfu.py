"""The simulator as an SFU: what a receiving bot meets from real users, checked on the wire.

Each knob of a simulated member (RTP padding and extensions, timestamp jumps, a reconnect under a
new SSRC, audio before Speaking, a leave mid-word, bounded histories, a known signal) and each
UDP impairment is observed the way a bot would: datagrams read from a real loopback socket and
opened with the bot's own transport key, and voice gateway messages read off its websocket.
"""

from __future__ import annotations

import json
from typing import Any

import nacl.bindings
import pytest
import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from trio.testing import MockClock

from discore_voice._audio.opus import OpusDecoder
from discore_voice._core.rtp import RtpHeader
from discore_voice._core.speaking import OPUS_SILENCE_FRAME, SpeakingFlags
from discore_voice._core.transport import (
    AES256_GCM_RTPSIZE,
    XCHACHA20_POLY1305_RTPSIZE,
    DecryptedPacket,
)
from discore_voice._core.voice.opcodes import VoiceOpcode
from discore_voice._core.voice.payloads import (
    ClientDisconnect,
    ClientsConnect,
    SelectProtocol,
    ServerSpeaking,
)
from discore_voice._errors import UsageError
from discore_voice.testing import SentFrame, SimMember, UdpFaults, VoiceServer
from discore_voice.testing._media import ONE_BYTE_EXTENSION_PROFILE
from discore_voice.testing._members import DEFAULT_HISTORY, extension_body
from discore_voice.testing._recording import ReceivedPacket
from discore_voice.testing._stats import keep_newest

from .voice_client import (
    BOT,
    CHANNEL,
    GUILD,
    USER,
    WAIT,
    Handshake,
    RawVoice,
    best_correlation,
    connect_voice,
    identify,
    joined,
    left_channel,
    open_udp,
    voice_server,
)

OTHER = USER + 1


def unseal(hs: Handshake, datagram: bytes) -> tuple[int, bytes]:
    """The header size and the whole plaintext (extension body and padding included), opened
    independently of the transport cipher under test."""
    _, size = RtpHeader.parse(datagram)
    key = hs.description.secret_key
    nonce, aad, sealed = datagram[-4:], datagram[:size], datagram[size:-4]
    if hs.description.mode == AES256_GCM_RTPSIZE:
        return size, AESGCM(key).decrypt(nonce + bytes(8), sealed, aad)
    plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        sealed, aad, nonce + bytes(20), key
    )
    return size, bytes(plain)


def one_byte_elements(body: bytes) -> list[tuple[int, bytes]]:
    """Parse an RFC 8285 one-byte-header extension body; raises if it is not well formed."""
    elements: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(body):
        first = body[offset]
        if first == 0:  # padding between elements
            offset += 1
            continue
        ident, length = first >> 4, (first & 0x0F) + 1
        assert 1 <= ident <= 14, f"element id {ident} is reserved"
        assert offset + 1 + length <= len(body), "element runs past the body"
        elements.append((ident, body[offset + 1 : offset + 1 + length]))
        offset += 1 + length
    return elements


async def datagrams(hs: Handshake, count: int) -> list[bytes]:
    return [await hs.udp.recv() for _ in range(count)]


async def wait(server: VoiceServer, predicate: Any) -> None:
    with trio.fail_after(WAIT):
        await server.wait_for(predicate)


def ops_sent(server: VoiceServer) -> list[int]:
    return [op for _, op in server.sessions[0].sent]


# --- 1. RTP padding and header extensions ---------------------------------------------------------


@pytest.mark.parametrize("mode", [AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE])
async def test_padding_and_extension_ride_inside_the_ciphertext(mode: str) -> None:
    async with voice_server() as (server, authority):
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT), mode) as (_, hs):
            member = server.add_member(GUILD, CHANNEL, USER)
            assert (member.padding, member.extension_words) == (0, 0)
            member.padding, member.extension_words = 7, 3
            sent = [
                member.send_opus(b"\xfc\x01\x02\x03"),
                member.send_opus(b"\xfc\x04"),
                member.send_opus(b"\xfc\x05", padding=255, extension_words=0),
                member.send_opus(b"\xfc\x06", padding=0, extension_words=1),
                member.send_opus(OPUS_SILENCE_FRAME, padding=1),
                member.send_opus(b"\xfc\x07", padding=0, extension_words=0),
            ]
            received = await datagrams(hs, len(sent))
        for record, datagram in zip(sent, received, strict=True):
            header, size = RtpHeader.parse(datagram)
            assert (header.sequence, header.ssrc) == (record.sequence, member.ssrc)
            assert bool(datagram[0] & 0x20) == (record.padding > 0)  # the P bit
            assert bool(datagram[0] & 0x10) == bool(record.extension_body)  # the X bit
            if record.extension_body:
                assert header.extension_profile == ONE_BYTE_EXTENSION_PROFILE == 0xBEDE
                assert header.extension_length == len(record.extension_body) // 4
                # Only the 4-byte preamble is in the clear; the body is encrypted.
                assert size == 16
                assert record.extension_body not in datagram
                assert len(one_byte_elements(record.extension_body)) == header.extension_length
            else:
                assert header.extension_profile is None and size == 12
            # The plaintext is body || frame || padding, the last byte counting the padding.
            _, plaintext = unseal(hs, datagram)
            padding = (
                bytes(record.padding - 1) + bytes((record.padding,)) if record.padding else b""
            )
            assert plaintext == record.extension_body + record.opus + padding
            opened = hs.cipher.decrypt(datagram)
            assert opened.payload == record.opus
            assert opened.extension_body == record.extension_body
        assert [r.padding for r in sent] == [7, 7, 255, 0, 1, 0]
        assert [len(r.extension_body) for r in sent] == [12, 12, 0, 4, 12, 0]


def test_padding_and_extension_knobs_are_checked() -> None:
    member = SimMember(_NoHost(), GUILD, CHANNEL, USER, 1)
    for bad in (-1, 256, True, 1.5):
        with pytest.raises(UsageError):
            member.padding = bad  # type: ignore[assignment]
    for wrong in (-1, 1 << 16, None):
        with pytest.raises(UsageError):
            member.extension_words = wrong  # type: ignore[assignment]
    member.padding, member.extension_words = 255, 0xFFFF
    body = extension_body(20, sequence=0xABCD)
    assert len(body) == 80 and 0 not in body
    assert [ident for ident, _ in one_byte_elements(body)] == [1 + i % 14 for i in range(20)]


class _NoHost:
    """Enough of a voice server for a member that never sends."""

    media: Any = None

    def member_speaking(self, member: SimMember, flags: int) -> None: ...

    def member_left(self, member: SimMember) -> None: ...

    def member_reconnect(self, member: SimMember, *, present: bool) -> None: ...

    def changed(self) -> None: ...


# --- 2. timestamp jumps -----------------------------------------------------------------------


async def test_timestamp_jumps_either_way_and_wrap_while_the_sequence_carries_on() -> None:
    async with voice_server() as (server, authority):
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (_, hs):
            member = server.add_member(GUILD, CHANNEL, USER)
            expected: list[int] = []

            def send() -> None:
                expected.append(member.next_timestamp)
                member.send_opus(b"\xfc\x01")

            send()
            send()
            assert member.jump_timestamp(48_000) == (expected[-1] + 960 + 48_000) % 2**32
            send()
            member.jump_timestamp(-960 * 50)  # backwards
            send()
            # Land just below the 32-bit wrap: the next normal step wraps to 480.
            member.jump_timestamp((2**32 - 480) - member.next_timestamp)
            send()
            send()
            member.jump_timestamp(-(2**32) + 7)  # a jump of (almost) a whole turn
            send()
            first_seq = member.sent[0].sequence
            headers = [RtpHeader.parse(d)[0] for d in await datagrams(hs, len(expected))]
        assert [h.timestamp for h in headers] == expected
        assert expected[4:6] == [2**32 - 480, 480]
        assert expected[6] == (480 + 960 + 7) % 2**32
        assert expected[3] == (expected[2] + 960 - 48_000) % 2**32
        assert [h.sequence for h in headers] == [
            (first_seq + i) % 2**16 for i in range(len(expected))
        ]
        with pytest.raises(UsageError):
            member.jump_timestamp(1.5)  # type: ignore[arg-type]


# --- 3. a new SSRC after a reconnect ----------------------------------------------------------


async def test_a_reconnect_is_op_13_then_op_11_and_a_new_ssrc() -> None:
    async with voice_server() as (server, authority):
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (client, hs):
            member = server.add_member(GUILD, CHANNEL, USER)
            await client.expect(ClientsConnect)
            old = member.ssrc
            # Speaking when it reconnects: op 5 names the new SSRC at once.
            member.set_speaking(SpeakingFlags.MICROPHONE)
            member.send_opus(b"\xfc\x01")
            assert (await client.expect(ServerSpeaking))[1].ssrc == old
            new = member.reconnect()
            assert new == member.ssrc != old
            assert (await client.recv())[1] == ClientDisconnect(USER)
            assert (await client.recv())[1] == ClientsConnect((USER,))
            assert (await client.recv())[1] == ServerSpeaking(USER, new, 1)
            member.send_opus(b"\xfc\x02")
            first = [hs.cipher.decrypt(d).header.ssrc for d in await datagrams(hs, 2)]
            assert first == [old, new]
            assert server.media.endpoint(old) is None
            endpoint = server.media.endpoint(new)
            assert endpoint is not None and endpoint.owner is member
            # Not speaking: the new SSRC is announced when it next speaks.
            member.set_speaking(0)
            await client.expect(ServerSpeaking)
            newer = member.reconnect()
            assert (await client.recv())[1] == ClientDisconnect(USER)
            assert (await client.recv())[1] == ClientsConnect((USER,))
            with trio.fail_after(WAIT):
                await member.speak_opus([b"\xfc\x03"], silence_tail=False)
            assert (await client.recv())[1] == ServerSpeaking(USER, newer, 1)
            assert (await client.recv())[1] == ServerSpeaking(USER, newer, 0)
            assert hs.cipher.decrypt(await hs.udp.recv()).header.ssrc == newer
            # announce=False: its audio under the new SSRC comes before any op 5.
            member.set_speaking(1)
            assert (await client.recv())[1] == ServerSpeaking(USER, newer, 1)
            before = len(server.sessions[0].sent)
            newest = member.reconnect(announce=False)
            member.send_opus(b"\xfc\x04")
            assert hs.cipher.decrypt(await hs.udp.recv()).header.ssrc == newest
            assert (await client.recv())[1] == ClientDisconnect(USER)
            assert (await client.recv())[1] == ClientsConnect((USER,))
            assert ops_sent(server)[before:] == [13, 11]
            # A member that had left just rejoins, without another op 13.
            member.leave()
            assert (await client.recv())[1] == ClientDisconnect(USER)
            rejoined = member.reconnect()
            assert (await client.recv())[1] == ClientsConnect((USER,))
            assert not member.left and rejoined not in (old, new, newer, newest)
        assert [f.ssrc for f in member.sent] == [old, new, newer, newest]


async def test_a_reconnect_mid_word_carries_on_under_the_new_ssrc() -> None:
    async with (
        voice_server() as (server, authority),
        joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (client, hs),
    ):
        member = server.add_member(GUILD, CHANNEL, USER)
        old = member.ssrc
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(member.speak_tone, 0.3)
                await server.wait_for(lambda: member.frames_sent >= 5)
                new = member.reconnect()
        ssrcs = [f.ssrc for f in member.sent]
        assert ssrcs[0] == old and ssrcs[-1] == new
        assert ssrcs == sorted(ssrcs, key=lambda s: s == new)  # old ones, then new ones
        assert member.frames_sent == 15 + 5
        got = [hs.cipher.decrypt(d).header.ssrc for d in await datagrams(hs, 20)]
        assert got == ssrcs
        speaking: list[ServerSpeaking] = []
        while len(speaking) < 3:
            _, message = await client.recv()
            if isinstance(message, ServerSpeaking):
                speaking.append(message)
        assert speaking == [
            ServerSpeaking(USER, old, 1),
            ServerSpeaking(USER, new, 1),
            ServerSpeaking(USER, new, 0),
        ]


# --- 4. op 12 -----------------------------------------------------------------------------------


class JsonVoice:
    """Reads the voice websocket as raw JSON, so op 12 needs no payload class in the core."""

    def __init__(self, voice: RawVoice) -> None:
        self.voice = voice
        self.received: list[dict[str, Any]] = []

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            while True:
                frame = await self.voice.ws.get_message()
                if isinstance(frame, str):
                    message: dict[str, Any] = json.loads(frame)
                    self.received.append(message)
                    return message

    async def until(self, op: int) -> dict[str, Any]:
        while True:
            message = await self.recv()
            if message["op"] == op:
                return message


def op12(member: SimMember) -> dict[str, Any]:
    return {
        "user_id": str(member.user_id),
        "audio_ssrc": member.ssrc,
        "video_ssrc": 0,
        "rtx_ssrc": 0,
        "streams": [],
    }


async def test_op_12_announces_every_ssrc_before_anyone_speaks() -> None:
    async with voice_server(send_op12=True) as (server, authority):
        early = server.add_member(GUILD, CHANNEL, USER)
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with connect_voice(server.endpoint_url) as raw:
            voice = JsonVoice(raw)
            await voice.until(VoiceOpcode.HELLO)
            await raw.send(identify(credentials))
            ready = (await voice.until(VoiceOpcode.READY))["d"]
            # Joining a channel: op 11 for who is there, then op 12 for each of them.
            connect = await voice.recv()
            assert (connect["op"], connect["d"]) == (11, {"user_ids": [str(USER)]})
            announce = await voice.recv()
            assert (announce["op"], announce["d"]) == (12, op12(early))
            assert announce["seq"] == connect["seq"] + 1
            async with open_udp(ready["ip"], ready["port"]) as udp:
                address, port = await udp.discover(ready["ssrc"])
                await raw.send(SelectProtocol(address=address, port=port, mode=AES256_GCM_RTPSIZE))
                await voice.until(VoiceOpcode.SESSION_DESCRIPTION)
                # Someone joining later: op 11, then op 12, then (when it speaks) op 5.
                late = server.add_member(GUILD, CHANNEL, OTHER)
                assert await voice.recv() == {
                    "op": 11,
                    "d": {"user_ids": [str(OTHER)]},
                    "seq": announce["seq"] + 2,
                }
                assert (await voice.recv())["d"] == op12(late)
                late.set_speaking(1)
                assert (await voice.recv())["d"] == {
                    "user_id": str(OTHER),
                    "ssrc": late.ssrc,
                    "speaking": 1,
                }
                # A reconnect brings the new SSRC in op 12 too.
                early.reconnect()
                assert [(await voice.recv())["op"] for _ in range(2)] == [13, 11]
                assert (await voice.recv())["d"] == op12(early)
        # Members live in process: only bots get op 12.
        assert all(int(event.OPCODE) != 12 for event in early.events + late.events)


async def test_op_12_is_off_by_default() -> None:
    async with voice_server() as (server, authority):
        assert server.send_op12 is False
        server.add_member(GUILD, CHANNEL, USER)
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)):
            member = server.add_member(GUILD, CHANNEL, OTHER)
            member.set_speaking(1)
            await wait(server, lambda: VoiceOpcode.SPEAKING in ops_sent(server))
        assert 12 not in ops_sent(server)


# --- 5. audio before op 5 ---------------------------------------------------------------------


def order_log(listener: SimMember, speaker: SimMember) -> list[tuple[int, bool]]:
    """For each frame ``listener`` hears: its sequence, and whether op 5 had named it yet."""
    log: list[tuple[int, bool]] = []

    def sink(source: object, packet: ReceivedPacket) -> None:
        named = any(
            isinstance(e, ServerSpeaking) and e.ssrc == speaker.ssrc and e.speaking
            for e in listener.events
        )
        log.append((packet.sequence, named))

    assert listener.endpoint is not None
    listener.endpoint.sink = sink
    return log


async def test_op_5_can_come_after_the_first_frames_or_never() -> None:
    async with (
        voice_server() as (server, authority),
        joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (client, hs),
    ):
        speaker = server.add_member(GUILD, CHANNEL, USER)
        listener = server.add_member(GUILD, CHANNEL, OTHER)
        log = order_log(listener, speaker)
        frames = [bytes((0xFC, i)) for i in range(6)]
        with trio.fail_after(WAIT):
            await speaker.speak_opus(frames, announce_after=3)
        assert [named for _, named in log] == [False] * 3 + [True] * 8
        assert [seq for seq, _ in log] == [f.sequence for f in speaker.sent]
        # The bot gets all of it: the first three frames from an SSRC nobody named yet.
        got = [hs.cipher.decrypt(d) for d in await datagrams(hs, 11)]
        assert [p.payload for p in got] == [*frames, *[OPUS_SILENCE_FRAME] * 5]
        assert (await client.expect(ServerSpeaking))[1] == ServerSpeaking(USER, speaker.ssrc, 1)
        assert (await client.expect(ServerSpeaking))[1].speaking == 0
        # announce=False: audio, and no op 5 at all (not even a closing 0).
        before = len(server.sessions[0].sent)
        log.clear()
        with trio.fail_after(WAIT):
            await speaker.speak_opus(frames, announce=False)
        assert len(log) == 11
        assert [op for op in ops_sent(server)[before:] if op == 5] == []
        assert len(await datagrams(hs, 11)) == 11
        # announce_after beyond the end is the same as never.
        with trio.fail_after(WAIT):
            await speaker.speak_opus(frames[:1], silence_tail=False, announce_after=5)
        assert [op for op in ops_sent(server)[before:] if op == 5] == []
        # A sink installed by a test survives the speaker's and its own reconnects.
        speaker.reconnect()
        listener.reconnect()
        log.clear()
        speaker.send_opus(b"\xfc")
        assert log == [(speaker.sent[-1].sequence, False)]
        with pytest.raises(UsageError):
            await speaker.speak_opus(frames, announce_after=-1)


# --- 6. leaving mid-word ----------------------------------------------------------------------


async def test_leaving_mid_word_ends_the_speaking_task_quietly() -> None:
    async with (
        voice_server() as (server, authority),
        joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (client, hs),
    ):
        member = server.add_member(GUILD, CHANNEL, USER)
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(member.speak_tone, 2.0)
                await server.wait_for(lambda: member.frames_sent >= 5)
                member.leave()
                at_leave = member.frames_sent
        # The task ended (the nursery closed) without an exception, at once.
        assert member.frames_sent == at_leave < 100
        assert (await client.expect(ServerSpeaking))[1].speaking == 1
        assert (await client.expect(ClientDisconnect))[1] == ClientDisconnect(USER)
        assert len(await datagrams(hs, at_leave)) == at_leave
        # Nothing after op 13: no closing op 5 for a member that is gone.
        ops = ops_sent(server)
        assert ops[ops.index(VoiceOpcode.CLIENT_DISCONNECT) :].count(5) == 0
        # Speaking after leaving says nothing; a direct send is still a caller's error.
        with trio.fail_after(WAIT):
            await member.speak_pcm(bytes(3840))
        assert member.frames_sent == at_leave
        with pytest.raises(UsageError):
            member.send_opus(b"\xfc")


async def test_a_leave_right_after_starting_to_speak_raises_nothing() -> None:
    async with voice_server() as (server, _):
        member = server.add_member(GUILD, CHANNEL, USER)
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(member.speak_opus, [b"\xfc"] * 10)
                member.leave()  # before the task has run at all
        assert member.frames_sent == 0


# --- 7. loss, duplication, reordering and jitter towards the bot ----------------------------------


def test_jitter_is_bounded_seeded_and_moves_no_other_decision() -> None:
    def run(jitter: float) -> tuple[UdpFaults[int], list[list[tuple[float, int]]]]:
        faults = UdpFaults[int](
            seed=5,
            drop=0.1,
            duplicate=0.1,
            reorder=0.1,
            delay=0.1,
            delay_seconds=0.5,
            jitter=jitter,
        )
        return faults, [faults.apply(index) for index in range(3000)]

    _, plain = run(0.0)
    faults, jittered = run(0.04)
    assert run(0.04)[1] == jittered
    assert [[item for _, item in out] for out in plain] == [
        [item for _, item in out] for out in jittered
    ]
    extra = [
        j - p
        for p_out, j_out in zip(plain, jittered, strict=True)
        for (p, _), (j, _) in zip(p_out, j_out, strict=True)
    ]
    assert all(0.0 <= e <= 0.04 for e in extra)
    assert min(extra) < 0.002 and max(extra) > 0.038
    assert faults.jittered == len(extra)
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(UsageError):
            UdpFaults[int](jitter=bad)


async def test_loss_duplication_reordering_and_jitter_reach_the_bot(jump_clock: MockClock) -> None:
    async with voice_server() as (server, authority):
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (_, hs):
            member = server.add_member(GUILD, CHANNEL, USER)
            faults = UdpFaults[tuple[bytes, tuple[str, int]]](
                seed=3, drop=0.1, duplicate=0.1, reorder=0.1, jitter=0.1
            )
            with server.media.impair(to_client=faults):
                start = trio.current_time()
                sent = [member.send_opus(bytes((0xFC, i))) for i in range(80)]
                server.media.flush_faults()
                count = len(sent) - faults.dropped + faults.duplicated
                got: list[DecryptedPacket] = []
                with trio.fail_after(WAIT):
                    for _ in range(count):
                        got.append(hs.cipher.decrypt(await hs.udp.recv()))
                        # No datagram later than the jitter bound (held ones leave with the
                        # datagram that overtakes them, or at the flush).
                        assert trio.current_time() - start <= 0.1 + 1e-6
        assert faults.dropped and faults.duplicated and faults.reordered and faults.jittered
        sequences = [p.header.sequence for p in got]
        assert len(sequences) - len(set(sequences)) == faults.duplicated
        assert len(set(sequences)) == len(sent) - faults.dropped
        assert set(sequences) <= {f.sequence for f in sent}
        assert sequences != sorted(sequences, key=lambda s: (s - sent[0].sequence) % 2**16)


# --- 8. bounded histories ---------------------------------------------------------------------


def test_keep_newest_trims_in_batches() -> None:
    items = list(range(21))
    keep_newest(items, 10)
    assert items == list(range(11, 21))
    items = list(range(20))
    keep_newest(items, 10)
    assert len(items) == 20  # not yet twice the cap
    keep_newest(items, None)
    assert len(items) == 20
    keep_newest(items, 0)
    assert items == []


async def test_per_packet_histories_are_bounded() -> None:
    async with (
        voice_server() as (server, authority),
        joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (_, hs),
    ):
        default = server.add_member(GUILD, CHANNEL, USER + 5)
        assert default.history == DEFAULT_HISTORY == default.sent.maxlen
        speaker = server.add_member(GUILD, CHANNEL, USER, history=10)
        listener = server.add_member(GUILD, CHANNEL, OTHER, history=10)
        for index in range(50):
            speaker.send_opus(bytes((0xFC, index)))
        assert speaker.frames_sent == 50
        assert [f.opus[1] for f in speaker.sent] == list(range(40, 50))
        heard = listener.heard[USER].packets
        assert 10 <= len(heard) <= 20
        assert [p.payload[1] for p in heard][-10:] == list(range(40, 50))
        stats = listener.heard_stats[speaker.ssrc]
        assert stats.packets == 50 and 10 <= len(stats.gaps_ns) <= 20
        # The bot is not bounded by a member's history: it got everything.
        assert len(await datagrams(hs, 50)) == 50
        speaker.history = 3
        assert len(speaker.sent) == 3 and speaker.sent.maxlen == 3
        listener.history = None
        for index in range(50):
            speaker.send_opus(bytes((0xFD, index)))
        assert len(listener.heard[USER].packets) >= 50
        speaker.history = 0
        speaker.send_opus(b"\xfc")
        assert len(speaker.sent) == 0 and speaker.frames_sent == 101
        with pytest.raises(UsageError):
            speaker.history = -1
        with pytest.raises(UsageError):
            server.add_member(GUILD, CHANNEL, USER + 9, history=-5)


# --- 9. a known signal, bit for bit -----------------------------------------------------------


async def test_a_known_tone_arrives_bit_exact_and_decodes_to_itself() -> None:
    async with voice_server() as (server, authority):
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (_, hs):
            member = server.add_member(GUILD, CHANNEL, USER)
            member.padding, member.extension_words = 3, 2
            with trio.fail_after(WAIT):
                pcm = await member.speak_tone(0.6, hz=440.0)
            sent: list[SentFrame] = list(member.sent)
            assert len(sent) == 30 + 5
            got = [hs.cipher.decrypt(d).payload for d in await datagrams(hs, len(sent))]
        assert got == [f.opus for f in sent]
        assert all(f.payload == f.opus for f in sent)  # no DAVE here: nothing wraps the frame
        with OpusDecoder() as decoder:
            decoded = b"".join(decoder.decode(frame) for frame in got)
        assert best_correlation(left_channel(pcm), left_channel(decoded)) >= 0.99
