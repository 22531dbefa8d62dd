"""The voice gateway (v8) of the simulator, driven by a raw client built on the core codecs."""

from __future__ import annotations

import json

import pytest
import trio
import trio_websocket

from discore_voice._core.speaking import SpeakingFlags
from discore_voice._core.transport import AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE
from discore_voice._core.voice.frames import ClientBinaryMessage, ServerBinaryMessage
from discore_voice._core.voice.opcodes import VoiceOpcode
from discore_voice._core.voice.payloads import (
    ClientDisconnect,
    ClientMessage,
    ClientsConnect,
    ClientSpeaking,
    DavePrepareEpoch,
    DaveTransitionReady,
    Heartbeat,
    HeartbeatAck,
    Ready,
    Resume,
    Resumed,
    SelectProtocol,
    ServerSpeaking,
    SessionDescription,
)
from discore_voice.testing._media import MediaEndpoint
from discore_voice.testing._voice.gateway import VoiceGatewaySession, VoiceServer

from .voice_client import (
    BOT,
    CHANNEL,
    GUILD,
    OTHER_CHANNEL,
    USER,
    WAIT,
    connect_voice,
    identify,
    joined,
    voice_server,
)


@pytest.mark.parametrize("mode", [AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE])
async def test_handshake_in_both_modes(mode: str) -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with connect_voice(server.endpoint_url) as client:
            hello = await client.expect_hello()
            assert hello.heartbeat_interval_ms == 1000
            await client.send(identify(credentials))
            ready_seq, ready = await client.expect(Ready)
            assert ready_seq == 1
            assert (ready.ip, ready.port) == (server.media.host, server.media.port)
            assert ready.modes == (AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE)
            await client.send(SelectProtocol(address="127.0.0.1", port=5000, mode=mode))
            raw = await client.ws.get_message()
            payload = json.loads(raw)
            # Always present, even at 0: discord.py reads it without a default.
            assert payload["d"]["dave_protocol_version"] == 0
            assert payload["op"] == 4 and payload["seq"] == 2
            assert payload["d"]["mode"] == mode and len(payload["d"]["secret_key"]) == 32
        session = server.sessions[0]
        assert session.mode == mode and session.ssrc == ready.ssrc
        assert session.secret_key == bytes(payload["d"]["secret_key"])
        assert "token" not in session.identify and "session_id" not in session.identify
        assert server.connections[0].path == "/?v=8"


async def test_offered_modes_are_configurable() -> None:
    async with voice_server(modes=[XCHACHA20_POLY1305_RTPSIZE]) as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(identify(credentials))
            _, ready = await client.expect(Ready)
            assert ready.modes == (XCHACHA20_POLY1305_RTPSIZE,)
            await client.send(SelectProtocol("127.0.0.1", 5000, AES256_GCM_RTPSIZE))
            assert await client.close_code() == 4016


@pytest.mark.parametrize(
    ("tamper", "code"),
    [("token", 4004), ("session_id", 4006), ("user", 4006), ("guild", 4006)],
)
async def test_identify_is_checked_against_the_issued_session(tamper: str, code: int) -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        message = identify(credentials)
        if tamper == "token":
            message = identify(credentials).__class__(GUILD, BOT, credentials.session_id, "x", 0)
        elif tamper == "session_id":
            message = message.__class__(GUILD, BOT, "not-the-session", credentials.token, 0)
        elif tamper == "user":
            message = message.__class__(GUILD, USER, credentials.session_id, credentials.token, 0)
        else:
            message = message.__class__(GUILD + 1, BOT, credentials.session_id, "x", 0)
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(message)
            assert await client.close_code() == code
        assert server.sessions == []
        assert server.connections[0].close_code == code


@pytest.mark.parametrize(
    ("select", "code"),
    [
        (SelectProtocol("127.0.0.1", 5000, "xsalsa20_poly1305"), 4016),
        (SelectProtocol("127.0.0.1", 5000, AES256_GCM_RTPSIZE, protocol="webrtc"), 4012),
    ],
)
async def test_select_protocol_rejects_unknown_modes_and_protocols(
    select: SelectProtocol, code: int
) -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(identify(credentials))
            await client.expect(Ready)
            await client.send(select)
            assert await client.close_code() == code
        # A dead session leaves its channel and frees its SSRC.
        assert server.sessions[0].state == "ended"
        assert server.media.endpoint(server.sessions[0].ssrc) is None


async def test_dave_required_closes_4017_for_a_client_without_dave() -> None:
    async with voice_server(dave_protocol_version=1) as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(identify(credentials, dave=0))
            assert await client.close_code() == 4017


async def test_heartbeat_ack_and_seq_ack() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with joined(server, credentials) as (client, _):
            await client.send(Heartbeat(nonce=1234, seq_ack=client.tracker.seq_ack))
            seq, ack = await client.expect(HeartbeatAck)
            assert ack.nonce == 1234
            assert seq == 3  # Ready 1, Session Description 2
            session = server.sessions[0]
            assert [(h.nonce, h.seq_ack) for h in session.heartbeats] == [(1234, 2)]
            # Acknowledging a message that was never sent is a client bug.
            await client.send(Heartbeat(nonce=1, seq_ack=10))
            assert await client.close_code() == 4020


async def test_heartbeat_before_identify_is_answered() -> None:
    async with voice_server() as (server, _), connect_voice(server.endpoint_url) as client:
        await client.expect_hello()
        await client.send(Heartbeat(nonce=7))
        seq, ack = await client.expect(HeartbeatAck)
        assert ack.nonce == 7 and seq is None


async def test_resume_redelivers_what_was_missed_and_keeps_the_udp_session() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with joined(server, credentials) as (client, handshake):
            seq_ack = client.tracker.seq_ack
            assert seq_ack == 2
            await client.ws.aclose(4000)
            session = server.sessions[0]
            with trio.fail_after(WAIT):
                await server.wait_for(lambda: not session.connected)
            assert session.state == "disconnected"
            # Missed while disconnected: numbered and buffered for the resume.
            member = server.add_member(GUILD, CHANNEL, USER)
            member.set_speaking(SpeakingFlags.MICROPHONE)
            async with connect_voice(server.endpoint_url) as second:
                await second.expect_hello()
                await second.send(Resume(GUILD, credentials.session_id, credentials.token, 2))
                missed = [await second.recv() for _ in range(3)]
                assert [type(m) for _, m in missed] == [ClientsConnect, ServerSpeaking, Resumed]
                assert [seq for seq, _ in missed] == [3, 4, 5]
                assert missed[0][1] == ClientsConnect((USER,))
                assert session.resumes == 1 and session.ssrc == handshake.ready.ssrc
                assert server.sessions == [session]
                assert session.connected
                # The UDP session survived: the old key still decrypts on the server.
                packet = handshake.cipher.encrypt_opus(1, 960, session.ssrc, b"\xfc")
                await handshake.udp.send(packet)
                with trio.fail_after(WAIT):
                    await server.wait_for(lambda: server.media.stats.rtp_packets == 1)
                assert server.media.recordings[BOT].opus_packets == [b"\xfc"]
            # A normal close (1000) ends the session for good.
            with trio.fail_after(WAIT):
                await server.wait_for(lambda: session.state == "ended")


@pytest.mark.parametrize(
    ("tamper", "code"), [("token", 4004), ("session", 4006), ("seq_ack", 4020)]
)
async def test_resume_is_checked(tamper: str, code: int) -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with joined(server, credentials) as (client, _):
            await client.ws.aclose(4000)
        resume = Resume(GUILD, credentials.session_id, credentials.token, 2)
        if tamper == "token":
            resume = Resume(GUILD, credentials.session_id, "wrong", 2)
        elif tamper == "session":
            resume = Resume(GUILD, "unknown", credentials.token, 2)
        else:
            resume = Resume(GUILD, credentials.session_id, credentials.token, 99)
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(resume)
            assert await client.close_code() == code


async def test_a_normal_close_ends_the_session() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with joined(server, credentials) as (client, _):
            await client.ws.aclose(1000)
        session = server.sessions[0]
        with trio.fail_after(WAIT):
            await server.wait_for(lambda: session.state == "ended")
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(Resume(GUILD, credentials.session_id, credentials.token, 2))
            assert await client.close_code() == 4006


async def test_speaking_relay_and_clients_connect_and_disconnect() -> None:
    async with voice_server() as (server, authority):
        first = authority.issue(GUILD, CHANNEL, BOT)
        second = authority.issue(GUILD, CHANNEL, USER)
        elsewhere = authority.issue(GUILD, OTHER_CHANNEL, USER + 1)
        async with joined(server, first) as (a, a_hs):
            async with joined(server, elsewhere):
                async with joined(server, second) as (b, b_hs):
                    _, connect = await a.expect(ClientsConnect)
                    assert connect.user_ids == (USER,)
                    # B learns who was already there when it joined.
                    assert ClientsConnect((BOT,)) in [m for _, m in b.received]
                    await a.send(ClientSpeaking(speaking=1, ssrc=a_hs.ready.ssrc))
                    _, speaking = await b.expect(ServerSpeaking)
                    assert speaking == ServerSpeaking(BOT, a_hs.ready.ssrc, 1)
                    await b.ws.aclose(1000)
                _, gone = await a.expect(ClientDisconnect)
                assert gone.user_id == USER
            assert USER + 1 not in [
                uid for _, m in a.received if isinstance(m, ClientsConnect) for uid in m.user_ids
            ]
            assert server.sessions[0].speaking_states == [1]
            assert b_hs.ready.ssrc != a_hs.ready.ssrc


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        (["not json"], 4002),
        (["[1, 2]"], 4002),
        (['{"d": null}'], 4002),
        (['{"op": "0"}'], 4002),
        (['{"op": 99, "d": null}'], 4001),
        (['{"op": 2, "d": {}}'], 4001),  # a server op
        ([b"\x63payload"], 4001),
        ([b"\x00"], 4001),  # a JSON op sent as binary
        ([b""], 4002),
        ([b"\x1a key package"], 4003),
        (['{"op": 1, "d": {"protocol": "udp", "data": {}}}'], 4002),
        (['{"op": 5, "d": {"speaking": 1, "delay": 0, "ssrc": 1}}'], 4003),
        (['{"op": 0, "d": {"server_id": "1"}}'], 4002),
        (["IDENTIFY", "IDENTIFY"], 4005),
        (["IDENTIFY", '{"op": 5, "d": {"speaking": 1, "delay": 0, "ssrc": 1}}'], 4020),
    ],
)
async def test_malformed_input_gets_the_documented_close_code(
    messages: list[str | bytes], code: int
) -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            for message in messages:
                if message == "IDENTIFY":
                    await client.send(identify(credentials))
                else:
                    await client.send_raw(message)
            assert await client.close_code() == code
        # The server survives and serves the next client.
        async with joined(server, authority.issue(GUILD, CHANNEL, BOT)):
            pass


async def test_a_crashing_handler_closes_4015_and_the_server_carries_on() -> None:
    class Exploding:
        def authorize(self, *args: object) -> int:
            raise RuntimeError("a simulator bug")

    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        server.authority = Exploding()
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(identify(credentials))
            assert await client.close_code() == 4015
        server.authority = authority
        async with joined(server, credentials):
            pass


async def test_wss_endpoint_with_the_simulators_tls() -> None:
    from discore_voice.testing._tls import TlsMaterial

    material = TlsMaterial()
    try:
        async with voice_server(ssl_context=material.server_context()) as (server, authority):
            assert server.endpoint_url.startswith("wss://127.0.0.1:")
            credentials = authority.issue(GUILD, CHANNEL, BOT)
            tcp = await trio.open_tcp_stream(server.host, server.port)
            stream = trio.SSLStream(tcp, material.client_context(), server_hostname="127.0.0.1")
            try:
                async with trio.open_nursery() as nursery:
                    ws = await trio_websocket.wrap_client_stream(
                        nursery, stream, "127.0.0.1", "/?v=8"
                    )
                    assert json.loads(await ws.get_message())["op"] == 8
                    from discore_voice._core.voice.frames import encode_client_text

                    await ws.send_message(encode_client_text(identify(credentials)))
                    assert json.loads(await ws.get_message())["op"] == 2
                    await ws.aclose()
                    nursery.cancel_scope.cancel()
            finally:
                await trio.aclose_forcefully(stream)
    finally:
        material.cleanup()


class RecordingDaveHook:
    """Stands in for the DAVE layer: records every call, answers like an external sender."""

    def __init__(self, server: VoiceServer) -> None:
        self.server = server
        self.calls: list[tuple[object, ...]] = []

    def participant_joined(self, endpoint: MediaEndpoint) -> None:
        self.calls.append(("joined", endpoint.user_id))

    def session_started(self, session: VoiceGatewaySession) -> None:
        self.calls.append(("started", session.user_id))
        session.send_binary(ServerBinaryMessage(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, b"sender"))
        for peer in self.server.media.peers(session.endpoint):
            peer.owner.notify_binary(
                ServerBinaryMessage(VoiceOpcode.DAVE_MLS_PROPOSALS, b"\x00add")
            )
            peer.owner.notify(DavePrepareEpoch(epoch=1, protocol_version=1))

    def client_binary(self, session: VoiceGatewaySession, message: ClientBinaryMessage) -> None:
        self.calls.append(("binary", int(message.op), message.payload))

    def client_message(self, session: VoiceGatewaySession, message: ClientMessage) -> None:
        self.calls.append(("json", message))

    def participant_left(self, endpoint: MediaEndpoint) -> None:
        self.calls.append(("left", endpoint.user_id))


async def test_the_dave_hook_sees_every_dave_event() -> None:
    async with voice_server(dave_protocol_version=1) as (server, authority):
        hook = RecordingDaveHook(server)
        server.dave = hook
        member = server.add_member(GUILD, CHANNEL, USER)
        handled: list[object] = []
        member.dave_handler = handled.append
        async with connect_voice(server.endpoint_url) as client:
            await client.expect_hello()
            await client.send(identify(authority.issue(GUILD, CHANNEL, BOT), dave=1))
            await client.expect(Ready)
            await client.send(SelectProtocol("127.0.0.1", 5000, AES256_GCM_RTPSIZE))
            _, description = await client.expect(SessionDescription)
            assert description.dave_protocol_version == 1
            seq, binary = await client.recv()
            assert binary == ServerBinaryMessage(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, b"sender")
            assert seq == 4  # Ready, Clients Connect, Session Description, then this
            await client.send_raw(b"\x1akey package")
            await client.send(DaveTransitionReady(transition_id=5))
            await client.send(Heartbeat(1, 4))
            await client.expect(HeartbeatAck)
            member.leave()
            await client.expect(ClientDisconnect)
        with trio.fail_after(WAIT):
            await server.wait_for(lambda: ("left", BOT) in hook.calls)
        assert hook.calls == [
            ("joined", USER),
            ("joined", BOT),
            ("started", BOT),
            ("binary", 26, b"key package"),
            ("json", DaveTransitionReady(5)),
            ("left", USER),
            ("left", BOT),
        ]
        assert handled == member.dave_messages
        assert [type(m) for m in handled] == [ServerBinaryMessage, DavePrepareEpoch]


async def test_a_second_identify_replaces_the_first_session() -> None:
    async with voice_server() as (server, authority):
        credentials = authority.issue(GUILD, CHANNEL, BOT)
        member = server.add_member(GUILD, CHANNEL, USER)
        async with (
            joined(server, credentials) as (first, first_hs),
            joined(server, credentials) as (_, second_hs),
        ):
            assert await first.close_code() == 4006
            assert second_hs.ready.ssrc != first_hs.ready.ssrc
            old, new = server.sessions
            assert (old.state, new.state) == ("ended", "connected")
            assert server.media.endpoint(first_hs.ready.ssrc) is None
            assert member.events[-2:] == [ClientDisconnect(BOT), ClientsConnect((BOT,))]
