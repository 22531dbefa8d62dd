"""Scripted faults: websocket closes on cue, abrupt drops, stalled ACKs and UDP impairment."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing

from discore_voice._core.voice.opcodes import VoiceOpcode
from discore_voice._core.voice.payloads import (
    ClientDisconnect,
    Heartbeat,
    HeartbeatAck,
    Ready,
    Resume,
    Resumed,
    SelectProtocol,
)
from discore_voice.testing._faults import ABRUPT, UdpFaults, WebSocketFault
from discore_voice.testing._voice.gateway import VoiceServer

from .voice_client import (
    BOT,
    CHANNEL,
    GUILD,
    USER,
    WAIT,
    connect_voice,
    identify,
    joined,
    voice_server,
)


@pytest.mark.parametrize("code", [4006, 4014, 4015, 4017, 4021, 4022])
async def test_close_with_any_code(code: int) -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        member = server.add_member(GUILD, CHANNEL, USER)
        async with joined(server, credentials) as (client, _):
            session = server.sessions[0]
            server.close(session, code)
            assert await client.close_code() == code
        with trio.fail_after(WAIT):
            await server.wait_for(lambda: session.close_codes == [code])
        if code == 4015:
            # Discord asks for a resume: the session waits for it.
            assert session.state == "disconnected"
            assert ClientDisconnect(BOT) not in member.events
            async with connect_voice(server.endpoint_url) as client:
                await client.expect_hello()
                await client.send(Resume(GUILD, credentials.session_id, credentials.token, 2))
                await client.expect(Resumed)
        else:
            assert session.state == "ended"
            assert ClientDisconnect(BOT) in member.events


async def test_abrupt_drop_then_resume() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with joined(server, credentials) as (client, _):
            session = server.sessions[0]
            server.close(session, ABRUPT)
            # No close frame: trio-websocket reports 1006 for a connection that just ended.
            assert await client.close_code() == 1006
        with trio.fail_after(WAIT):
            await server.wait_for(lambda: session.close_codes == [ABRUPT])
        assert session.state == "disconnected"
        assert server.connections[0].closed_by == "server"
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(Resume(GUILD, credentials.session_id, credentials.token, 2))
            await client.expect(Resumed)
            assert session.resumes == 1


async def test_close_on_a_chosen_op() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        server.faults.append(WebSocketFault(on_op=VoiceOpcode.SELECT_PROTOCOL, code=4015))
        server.faults.append(WebSocketFault(on_op=VoiceOpcode.HEARTBEAT, code=ABRUPT, after=2))
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(identify(credentials))
            await client.expect(Ready)
            await client.send(SelectProtocol("127.0.0.1", 5000, "aead_aes256_gcm_rtpsize"))
            # Closed before any Session Description was sent.
            assert await client.close_code() == 4015
        session = server.sessions[0]
        assert session.mode is None and [op for _, op in session.sent] == [2]
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(Resume(GUILD, credentials.session_id, credentials.token, 1))
            await client.expect(Resumed)
            await client.send(Heartbeat(1, 2))
            await client.expect(HeartbeatAck)
            await client.send(Heartbeat(2, 2))
            assert await client.close_code() == 1006
        assert server.faults == []


async def test_a_fault_can_target_one_user() -> None:
    async with voice_server() as (server, authority):
        server.faults.append(WebSocketFault(on_op=VoiceOpcode.HEARTBEAT, code=4014, user_id=USER))
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (client, _):
            await client.send(Heartbeat(1, 2))
            await client.expect(HeartbeatAck)
        async with joined(server, authority.issue(GUILD, CHANNEL, USER)) as (client, _):
            await client.send(Heartbeat(1, 2))
            assert await client.close_code() == 4014


async def test_stalled_heartbeat_acks() -> None:
    async with voice_server() as (server, authority):
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (client, _):
            session = server.sessions[0]
            server.stall_heartbeat_acks(session)
            await client.send(Heartbeat(1, 2))
            with trio.fail_after(WAIT):
                await server.wait_for(lambda: len(session.heartbeats) == 1)
            server.stall_heartbeat_acks(session, False)
            await client.send(Heartbeat(2, 2))
            # The first message after the stall is the ACK of the second heartbeat.
            _, message = await client.recv()
            assert message == HeartbeatAck(2)
        assert [(h.nonce, h.seq_ack) for h in session.heartbeats] == [(1, 2), (2, 2)]


async def test_missing_heartbeats_time_out_with_4009(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with voice_server(heartbeat_timeout=3.0) as (server, authority):
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (client, _):
            start = trio.current_time()
            assert await client.close_code() == 4009
            assert trio.current_time() - start == pytest.approx(3.0, abs=0.1)
        assert server.sessions[0].state == "ended"


def test_udp_faults_are_deterministic_and_rate_bound() -> None:
    def run(seed: int) -> list[list[tuple[float, int]]]:
        faults = UdpFaults[int](seed=seed, drop=0.1, duplicate=0.1, reorder=0.1, delay=0.1)
        return [faults.apply(index) for index in range(2000)]

    assert run(7) == run(7)
    assert run(7) != run(8)
    faults = UdpFaults[int](seed=3, drop=0.25)
    delivered = [item for index in range(4000) for _, item in faults.apply(index)]
    assert faults.dropped == 4000 - len(delivered)
    assert 800 < faults.dropped < 1200


def test_udp_reorder_lets_the_next_datagram_overtake() -> None:
    faults = UdpFaults[str](reorder=1.0)
    assert faults.apply("a") == []
    assert faults.apply("b") == [(0.0, "b"), (0.0, "a")]
    assert faults.apply("c") == []
    assert faults.flush() == [(0.0, "c")]
    assert faults.flush() == []


def test_udp_fault_rates_are_checked() -> None:
    from discore_voice import UsageError

    with pytest.raises(UsageError):
        UdpFaults[bytes](drop=1.5)


def received(server: VoiceServer, count: int) -> bool:
    return server.media.stats.received == count


@pytest.mark.parametrize("kind", ["drop", "duplicate", "reorder"])
async def test_inbound_udp_faults_show_in_the_stats(kind: str) -> None:
    async with voice_server() as (server, authority):
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (_, hs):
            rates = {"drop": 0.0, "duplicate": 0.0, "reorder": 0.0, kind: 0.2}
            faults = UdpFaults[tuple[bytes, tuple[str, int]]](
                seed=11, drop=rates["drop"], duplicate=rates["duplicate"], reorder=rates["reorder"]
            )
            server.media.faults_from_client = faults
            for seq in range(200):
                await hs.udp.send(hs.cipher.encrypt_opus(seq, seq * 960, hs.ready.ssrc, b"\xfc"))
                if seq % 10 == 9:
                    # In batches, so the kernel's receive buffer never overflows.
                    with trio.fail_after(WAIT):
                        await server.wait_for(partial(received, server, seq + 2))
            # Only the very last datagram can still be held (any later one releases it), and
            # released at the end it is not out of order.
            held_at_end = len(faults.flush())
        stats = server.media.stats.streams[hs.ready.ssrc]
        if kind == "drop":
            assert faults.dropped > 0
            # A drop at the very end cannot be seen as a gap; everything before it can.
            assert stats.packets == 200 - faults.dropped
            assert stats.lost <= faults.dropped
        elif kind == "duplicate":
            assert faults.duplicated > 0 and stats.duplicates == faults.duplicated
        else:
            assert faults.reordered > 0
            assert stats.reordered == faults.reordered - held_at_end
            assert stats.lost == 0


async def test_outbound_udp_faults_reach_the_bot() -> None:
    async with voice_server() as (server, authority):
        member = server.add_member(GUILD, CHANNEL, USER)
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (_, hs):
            server.media.faults_to_client = UdpFaults(duplicate=1.0)
            member.send_opus(b"\xfc\x01")
            first = hs.cipher.decrypt(await hs.udp.recv())
            second = hs.cipher.decrypt(await hs.udp.recv())
            assert first.payload == second.payload == b"\xfc\x01"
            assert first.header.sequence == second.header.sequence
            # A duplicate is the same datagram again, not a re-encryption.
            assert first.nonce == second.nonce
            server.media.faults_to_client = UdpFaults(reorder=1.0)
            member.send_opus(b"\xfc\x02")
            member.send_opus(b"\xfc\x03")
            got = [hs.cipher.decrypt(await hs.udp.recv()).payload for _ in range(2)]
            assert got == [b"\xfc\x03", b"\xfc\x02"]
            member.send_opus(b"\xfc\x06")  # held back, with nothing to overtake it...
            server.media.flush_faults()  # ...until the test releases it
            assert hs.cipher.decrypt(await hs.udp.recv()).payload == b"\xfc\x06"
            server.media.faults_to_client = UdpFaults(drop=1.0)
            member.send_opus(b"\xfc\x04")
            server.media.faults_to_client = None
            member.send_opus(b"\xfc\x05")
            assert hs.cipher.decrypt(await hs.udp.recv()).payload == b"\xfc\x05"


async def test_delayed_datagrams_arrive_after_the_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with voice_server() as (server, authority):
        member = server.add_member(GUILD, CHANNEL, USER)
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)) as (_, hs):
            server.media.faults_to_client = UdpFaults(delay=1.0, delay_seconds=2.0)
            start = trio.current_time()
            member.send_opus(b"\xfc\x01")
            assert hs.cipher.decrypt(await hs.udp.recv()).payload == b"\xfc\x01"
            assert trio.current_time() - start == pytest.approx(2.0, abs=0.01)
