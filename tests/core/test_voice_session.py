"""The voice connection state machine: handshake orders, resumes, moves, closes and garbage."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice._core.ip_discovery import DiscoveredAddress
from discore_voice._core.transport import AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE
from discore_voice._core.voice.frames import encode_server_text
from discore_voice._core.voice.payloads import (
    ClientDisconnect,
    ClientsConnect,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    Ready,
    Resume,
    Resumed,
    SelectProtocol,
    ServerMessage,
    ServerSpeaking,
    SessionDescription,
)
from discore_voice._core.voice.session import (
    MAX_ATTEMPTS_WITHOUT_PROGRESS,
    MOVE_GRACE_SECONDS,
    Action,
    CloseWebSocket,
    Connected,
    InstallCipher,
    Invalidated,
    InvalidationReason,
    MemberConnected,
    MemberDisconnected,
    MemberSpeaking,
    OpenWebSocket,
    Phase,
    SendVoiceMessage,
    SendVoiceStateUpdate,
    StartMoveGrace,
    StartUdp,
    VoiceSession,
    endpoint_url,
)
from discore_voice._errors import ProtocolError

GUILD = 111_000_000_000_000_001
USER = 222_000_000_000_000_002
CHANNEL = 333_000_000_000_000_003
OTHER_CHANNEL = 333_000_000_000_000_004
KEY = bytes(range(32))
TOKEN = "secret-token"
SESSION_ID = "secret-session"


def state_d(
    channel: int | None = CHANNEL, *, user: int = USER, guild: int = GUILD, **kw: Any
) -> Any:
    return {
        "guild_id": str(guild),
        "channel_id": None if channel is None else str(channel),
        "user_id": str(user),
        "session_id": kw.get("session_id", SESSION_ID),
        "self_mute": kw.get("self_mute", False),
        "self_deaf": kw.get("self_deaf", False),
    }


def server_d(endpoint: str | None = "voice.example:443", token: str = TOKEN) -> Any:
    return {"guild_id": str(GUILD), "endpoint": endpoint, "token": token}


class Server:
    """Numbers server messages like a v8 voice gateway."""

    def __init__(self) -> None:
        self.seq = 0

    def frame(self, message: ServerMessage, *, numbered: bool = True) -> str:
        if not numbered:
            return encode_server_text(message, seq=None)
        self.seq += 1
        return encode_server_text(message, seq=self.seq)


def of_type(actions: list[Action], kind: type[Any]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def messages(actions: list[Action]) -> list[Any]:
    return [a.message for a in actions if isinstance(a, SendVoiceMessage)]


def joined(order: str = "state-first") -> tuple[VoiceSession, list[Action]]:
    s = VoiceSession(GUILD, USER)
    out = s.connect(CHANNEL)
    assert out == [SendVoiceStateUpdate(CHANNEL, False, False)]
    if order == "state-first":
        assert s.voice_state_update(state_d()) == []
        out = s.voice_server_update(server_d())
    else:
        assert s.voice_server_update(server_d()) == []
        out = s.voice_state_update(state_d())
    return s, out


def handshake(
    s: VoiceSession,
    server: Server,
    *,
    modes: tuple[str, ...] = (XCHACHA20_POLY1305_RTPSIZE, AES256_GCM_RTPSIZE),
    ssrc: int = 42,
) -> list[Action]:
    cid = s.connection_id
    everything: list[Action] = []
    everything += s.websocket_opened(cid)
    everything += s.receive_text(cid, server.frame(Hello(41250), numbered=False))
    everything += s.receive_text(cid, server.frame(Ready(ssrc, "10.0.0.1", 5000, modes)))
    everything += s.ip_discovered(cid, DiscoveredAddress(ssrc, "1.2.3.4", 6000))
    mode = s.encryption_mode
    assert mode is not None
    everything += s.receive_text(cid, server.frame(SessionDescription(mode, KEY)))
    return everything


@pytest.mark.parametrize("order", ["state-first", "server-first"])
def test_handshake_in_either_dispatch_order(order: str) -> None:
    s, out = joined(order)
    assert out == [OpenWebSocket(1, "wss://voice.example:443/?v=8")]
    assert s.is_connecting and not s.is_connected
    server = Server()
    actions = handshake(s, server)
    sent = messages(actions)
    assert isinstance(sent[0], Identify)
    assert sent[0].session_id == SESSION_ID and sent[0].token == TOKEN
    assert sent[0].max_dave_protocol_version == 0
    assert sent[0].server_id == GUILD and sent[0].user_id == USER
    assert of_type(actions, StartUdp) == [StartUdp(1, "10.0.0.1", 5000, 42)]
    assert sent[1] == SelectProtocol(address="1.2.3.4", port=6000, mode=AES256_GCM_RTPSIZE)
    assert of_type(actions, InstallCipher) == [InstallCipher(AES256_GCM_RTPSIZE, KEY)]
    assert of_type(actions, Connected) == [Connected(CHANNEL, 42, AES256_GCM_RTPSIZE)]
    assert s.is_connected and s.ssrc == 42 and s.encryption_mode == AES256_GCM_RTPSIZE


def test_xchacha_when_aes_is_not_offered() -> None:
    s, _ = joined()
    handshake(s, Server(), modes=("xsalsa20_poly1305", XCHACHA20_POLY1305_RTPSIZE))
    assert s.encryption_mode == XCHACHA20_POLY1305_RTPSIZE


def test_no_compatible_mode_invalidates_with_error() -> None:
    s, _ = joined()
    server = Server()
    s.websocket_opened(1)
    s.receive_text(1, server.frame(Ready(1, "10.0.0.1", 5000, ("xsalsa20_poly1305",))))
    out = s.ip_discovered(1, DiscoveredAddress(1, "1.2.3.4", 6000))
    (inv,) = of_type(out, Invalidated)
    assert inv.reason is InvalidationReason.ERROR and "xsalsa20_poly1305" in inv.detail


def test_dispatches_for_other_users_and_guilds_are_ignored() -> None:
    s = VoiceSession(GUILD, USER)
    s.connect(CHANNEL)
    assert s.voice_state_update(state_d(user=USER + 1)) == []
    assert s.voice_state_update(state_d(guild=GUILD + 1)) == []
    assert s.voice_server_update({**server_d(), "guild_id": str(GUILD + 1)}) == []
    assert s.phase is Phase.AWAITING_GATEWAY
    assert s.voice_server_update(server_d()) == []  # still no state of our own
    assert of_type(s.voice_state_update(state_d()), OpenWebSocket)


def test_endpoint_urls() -> None:
    assert endpoint_url("h.example:443") == "wss://h.example:443/?v=8"
    assert endpoint_url("ws://127.0.0.1:9/?v=8") == "ws://127.0.0.1:9/?v=8"
    assert endpoint_url("wss://x:1/p") == "wss://x:1/p"


def test_heartbeat_carries_nonce_and_seq_ack_and_ack_timeout_resumes() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    assert s.next_heartbeat_at == float("-inf")
    (hb,) = messages(s.heartbeat_due(100.0))
    assert isinstance(hb, Heartbeat) and hb.seq_ack == server.seq == 2
    assert s.next_heartbeat_at == pytest.approx(141.25)
    assert s.heartbeat_due(120.0) == []  # not due yet
    s.receive_text(1, server.frame(HeartbeatAck(hb.nonce)))
    (hb2,) = messages(s.heartbeat_due(141.25))
    assert hb2.nonce != hb.nonce and hb2.seq_ack == 3
    # No ACK for hb2: the next deadline resumes on a new websocket, keeping the SSRC.
    out = s.heartbeat_due(182.5)
    assert out[0] == CloseWebSocket(1, 4000)
    assert of_type(out, OpenWebSocket) == [OpenWebSocket(2, "wss://voice.example:443/?v=8")]
    assert s.phase is Phase.RESUMING and s.ssrc == 42
    (resume,) = messages(s.websocket_opened(2))
    assert isinstance(resume, Resume) and resume.seq_ack == 3 and resume.token == TOKEN
    s.receive_text(2, server.frame(Hello(41250), numbered=False))
    assert s.receive_text(2, server.frame(Resumed())) == []
    assert s.is_connected and s.ssrc == 42 and s.invalidation is None


def test_wrong_ack_nonce_does_not_count() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    (hb,) = messages(s.heartbeat_due(0.0))
    s.receive_text(1, server.frame(HeartbeatAck(hb.nonce + 1)))
    assert of_type(s.heartbeat_due(100.0), OpenWebSocket)


@pytest.mark.parametrize("code", [4015, None, 1000, 1001, 1006, 1011])
def test_resume_after_resumable_closes(code: int | None) -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    out = s.websocket_closed(1, code)
    assert out == [OpenWebSocket(2, "wss://voice.example:443/?v=8")]
    assert s.is_connecting and s.is_valid
    (resume,) = messages(s.websocket_opened(2))
    assert isinstance(resume, Resume) and resume.seq_ack == server.seq
    # v8 re-delivers; a fresh key may follow a resume.
    s.receive_text(2, server.frame(Resumed()))
    out = s.receive_text(2, server.frame(SessionDescription(AES256_GCM_RTPSIZE, KEY[::-1])))
    assert out == [InstallCipher(AES256_GCM_RTPSIZE, KEY[::-1])]
    assert not of_type(out, Connected)
    assert s.is_connected and s.ssrc == 42


EXPECTED_FATAL = {
    4001: InvalidationReason.ERROR,
    4002: InvalidationReason.ERROR,
    4003: InvalidationReason.ERROR,
    4004: InvalidationReason.ERROR,
    4005: InvalidationReason.ERROR,
    4006: InvalidationReason.SESSION_INVALID,
    4009: InvalidationReason.SESSION_INVALID,
    4011: InvalidationReason.ERROR,
    4012: InvalidationReason.ERROR,
    4014: InvalidationReason.KICKED,
    4016: InvalidationReason.ERROR,
    4017: InvalidationReason.DAVE_REQUIRED,
    4020: InvalidationReason.ERROR,
    4021: InvalidationReason.RATE_LIMITED,
    4022: InvalidationReason.CALL_TERMINATED,
    4999: InvalidationReason.ERROR,
}


@pytest.mark.parametrize(("code", "reason"), sorted(EXPECTED_FATAL.items()))
@pytest.mark.parametrize("connected", [True, False])
def test_fatal_closes(code: int, reason: InvalidationReason, connected: bool) -> None:
    s, _ = joined()
    if connected:
        handshake(s, Server())
    else:
        s.websocket_opened(1)
    out = s.websocket_closed(1, code)
    if reason in (InvalidationReason.KICKED, InvalidationReason.CALL_TERMINATED):
        # Maybe a move: only when no new voice server follows is it final.
        (grace,) = out
        assert isinstance(grace, StartMoveGrace) and grace.seconds == MOVE_GRACE_SECONDS
        assert s.is_valid and s.is_connecting
        assert s.move_grace_expired(grace.grace_id - 1) == []
        out = s.move_grace_expired(grace.grace_id)
    (inv,) = of_type(out, Invalidated)
    # Leaving the channel on the main gateway is part of it: nothing lingers.
    assert out == [inv, SendVoiceStateUpdate(None, False, False)]
    assert inv.reason is reason
    assert not s.is_valid and s.invalidation == inv
    assert str(code) in inv.detail
    # Invalid: everything is a no-op now.
    assert s.websocket_closed(1, 4015) == []
    assert s.disconnect() == []
    assert s.update_voice_state(CHANNEL, self_mute=True, self_deaf=False) == []
    assert s.voice_server_update(server_d()) == []


def test_dave_required_detail_names_dave_and_the_fix() -> None:
    s, _ = joined()
    s.websocket_opened(1)
    (inv,) = of_type(s.websocket_closed(1, 4017), Invalidated)
    assert "DAVE" in inv.detail and "davey" in inv.detail


def test_server_move_with_null_endpoint_first() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    out = s.voice_server_update(server_d(None))
    assert out == [CloseWebSocket(1, 1000)]
    assert s.is_connecting and not s.is_connected and s.next_heartbeat_at is None
    out = s.voice_server_update(server_d("other.example:443", "token2"))
    assert out == [OpenWebSocket(2, "wss://other.example:443/?v=8")]
    (identify,) = messages(s.websocket_opened(2))
    assert isinstance(identify, Identify) and identify.token == "token2"
    server2 = Server()
    actions = handshake(s, server2, ssrc=77)
    assert of_type(actions, Connected) == [Connected(CHANNEL, 77, AES256_GCM_RTPSIZE)]
    assert s.ssrc == 77


def test_server_move_restarts_seq_tracking() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    s.voice_server_update(server_d("other.example:443", "token2"))
    s.websocket_opened(2)
    s.receive_text(2, Server().frame(Hello(1000), numbered=False))
    (hb,) = messages(s.heartbeat_due(0.0))
    assert hb.seq_ack == -1


def test_channel_switch_is_a_new_session() -> None:
    s, _ = joined()
    handshake(s, Server())
    out = s.update_voice_state(OTHER_CHANNEL, self_mute=False, self_deaf=False)
    assert out == [SendVoiceStateUpdate(OTHER_CHANNEL, False, False)]
    assert s.is_connected  # the call returns before the switch completes
    s.voice_state_update(state_d(OTHER_CHANNEL))
    assert s.channel_id == OTHER_CHANNEL
    out = s.voice_server_update(server_d(token="token3"))
    assert out == [CloseWebSocket(1, 1000), OpenWebSocket(2, "wss://voice.example:443/?v=8")]
    actions = handshake(s, Server(), ssrc=9)
    assert of_type(actions, Connected) == [Connected(OTHER_CHANNEL, 9, AES256_GCM_RTPSIZE)]


def test_mute_and_deaf_follow_our_voice_state() -> None:
    s, _ = joined()
    handshake(s, Server())
    out = s.update_voice_state(CHANNEL, self_mute=True, self_deaf=True)
    assert out == [SendVoiceStateUpdate(CHANNEL, True, True)]
    assert s.voice_state_update(state_d(self_mute=True, self_deaf=True)) == []
    assert s.self_mute and s.self_deaf and s.is_connected


@pytest.mark.parametrize("code", [4014, 4022])
def test_a_close_overtaking_a_moves_dispatches_is_not_an_invalidation(code: int) -> None:
    s, _ = joined()
    handshake(s, Server())
    (grace,) = s.websocket_closed(1, code)
    assert isinstance(grace, StartMoveGrace)
    assert s.voice_state_update(state_d(OTHER_CHANNEL)) == []
    out = s.voice_server_update(server_d(token="moved"))
    assert out == [OpenWebSocket(2, "wss://voice.example:443/?v=8")]
    assert s.move_grace_expired(grace.grace_id) == []
    actions = handshake(s, Server(), ssrc=8)
    assert of_type(actions, Connected) == [Connected(OTHER_CHANNEL, 8, AES256_GCM_RTPSIZE)]


@pytest.mark.parametrize(
    ("code", "reason"),
    [(4014, InvalidationReason.KICKED), (4022, InvalidationReason.CALL_TERMINATED)],
)
def test_a_close_then_a_null_channel_is_final_at_once(
    code: int, reason: InvalidationReason
) -> None:
    s, _ = joined()
    handshake(s, Server())
    s.websocket_closed(1, code)
    (inv,) = of_type(s.voice_state_update(state_d(None)), Invalidated)
    assert inv.reason is reason


def test_null_channel_in_our_state_is_a_kick() -> None:
    s, _ = joined()
    handshake(s, Server())
    out = s.voice_state_update(state_d(None))
    assert out[0] == CloseWebSocket(1, 1000)
    assert isinstance(out[1], Invalidated) and out[1].reason is InvalidationReason.KICKED


def test_stale_null_channel_before_our_join_is_ignored() -> None:
    s = VoiceSession(GUILD, USER)
    s.connect(CHANNEL)
    assert s.voice_state_update(state_d(None)) == []
    assert s.is_connecting


def test_disconnect_leaves_and_invalidates_normal() -> None:
    s, _ = joined()
    handshake(s, Server())
    out = s.disconnect()
    assert out[0] == SendVoiceStateUpdate(None, False, False)
    assert out[1] == CloseWebSocket(1, 1000)
    assert isinstance(out[2], Invalidated) and out[2].reason is InvalidationReason.NORMAL
    assert s.disconnect() == []


def test_update_with_null_channel_is_a_disconnect() -> None:
    s, _ = joined()
    out = s.update_voice_state(None, self_mute=False, self_deaf=False)
    assert out[0] == SendVoiceStateUpdate(None, False, False)
    assert s.invalidation is not None and s.invalidation.reason is InvalidationReason.NORMAL


def test_gateway_closed_and_fail() -> None:
    s, _ = joined()
    out = s.gateway_closed()
    (inv,) = of_type(out, Invalidated)
    assert inv.reason is InvalidationReason.GATEWAY_CLOSED
    assert not of_type(out, SendVoiceStateUpdate)  # there is no gateway to send it on
    assert not of_type(s.gateway_closed(), SendVoiceStateUpdate)
    s2, _ = joined()
    out = s2.fail(InvalidationReason.TIMED_OUT, "too slow")
    assert out == [
        CloseWebSocket(1, 1000),
        Invalidated(InvalidationReason.TIMED_OUT, "too slow"),
        SendVoiceStateUpdate(None, False, False),
    ]


def test_idle_session_ignores_everything() -> None:
    s = VoiceSession(GUILD, USER)
    assert s.voice_state_update(state_d()) == []
    assert s.voice_server_update(server_d()) == []
    assert s.disconnect() == [] and s.gateway_closed() == []
    assert s.websocket_closed(0, 4014) == []
    assert s.is_valid and not s.is_connecting


def test_second_connect_is_a_no_op() -> None:
    s, _ = joined()
    assert s.connect(OTHER_CHANNEL) == []


def test_events_from_a_replaced_websocket_are_ignored() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    s.websocket_closed(1, 4015)
    assert s.websocket_closed(1, 4004) == []
    assert s.receive_text(1, server.frame(Ready(5, "1.1.1.1", 9, ("x",)))) == []
    assert s.ip_discovered(1, DiscoveredAddress(42, "1.1.1.1", 1)) == []
    assert s.is_valid


def test_drop_before_ready_identifies_again_and_gives_up_eventually() -> None:
    s, _ = joined()
    for attempt in range(1, MAX_ATTEMPTS_WITHOUT_PROGRESS + 1):
        s.websocket_opened(attempt)
        out = s.websocket_closed(attempt, None)
        assert out == [OpenWebSocket(attempt + 1, "wss://voice.example:443/?v=8")]
        (identify,) = messages(s.websocket_opened(attempt + 1))
        assert isinstance(identify, Identify)
    (inv,) = of_type(s.websocket_closed(MAX_ATTEMPTS_WITHOUT_PROGRESS + 1, 1006), Invalidated)
    assert inv.reason is InvalidationReason.ERROR and "gave up" in inv.detail


def test_failed_open_retries_then_certificate_is_fatal() -> None:
    s, _ = joined()
    assert of_type(s.websocket_failed(1, "refused", fatal=False), OpenWebSocket)
    (inv,) = of_type(s.websocket_failed(2, "bad cert", fatal=True), Invalidated)
    assert inv.detail == "bad cert"


def test_member_events() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    assert s.receive_text(1, server.frame(ServerSpeaking(7, 99, 1))) == [MemberSpeaking(7, 99, 1)]
    assert s.receive_text(1, server.frame(ClientsConnect((7, 8)))) == [
        MemberConnected(7),
        MemberConnected(8),
    ]
    assert s.receive_text(1, server.frame(ClientDisconnect(7))) == [MemberDisconnected(7)]


def test_malformed_mid_handshake_is_an_error_but_skipped_when_connected() -> None:
    s, _ = joined()
    s.websocket_opened(1)
    with pytest.raises(ProtocolError):
        s.receive_text(1, '{"op": 2, "d": {"ssrc": "x"}}')
    (inv,) = of_type(s.malformed(1, "bad Ready"), Invalidated)
    assert inv.reason is InvalidationReason.ERROR
    s2, _ = joined()
    handshake(s2, Server())
    assert s2.malformed(1, "bad speaking") == []
    assert s2.is_connected


def test_mismatched_session_description_mode_is_an_error() -> None:
    s, _ = joined()
    server = Server()
    s.websocket_opened(1)
    s.receive_text(1, server.frame(Ready(1, "10.0.0.1", 5000, (AES256_GCM_RTPSIZE,))))
    s.ip_discovered(1, DiscoveredAddress(1, "1.2.3.4", 6000))
    out = s.receive_text(1, server.frame(SessionDescription(XCHACHA20_POLY1305_RTPSIZE, KEY)))
    (inv,) = of_type(out, Invalidated)
    assert inv.reason is InvalidationReason.ERROR


def test_secrets_stay_out_of_reprs() -> None:
    s, _ = joined()
    actions = handshake(s, Server())
    for action in [*actions, s]:
        assert TOKEN not in repr(action) and SESSION_ID not in repr(action)
        assert repr(KEY) not in repr(action) and KEY.hex() not in repr(action)


# --- properties -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)

garbage_text = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda op, d, seq: __import__("json").dumps({"op": op, "d": d, "seq": seq}),
        st.integers(-2, 40),
        json_values,
        st.none() | st.integers(-3, 70000),
    ),
)

events = st.one_of(
    st.tuples(st.just("state"), st.sampled_from([CHANNEL, OTHER_CHANNEL, None])),
    st.tuples(st.just("server"), st.sampled_from(["v.example:1", None, "ws://127.0.0.1:5/"])),
    st.tuples(st.just("garbage_state"), json_values),
    st.tuples(st.just("garbage_server"), json_values),
    st.tuples(st.just("opened"), st.integers(0, 4)),
    st.tuples(
        st.just("closed"),
        st.tuples(st.integers(0, 4), st.none() | st.sampled_from([*EXPECTED_FATAL, 4015, 1006])),
    ),
    st.tuples(st.just("hello"), st.integers(0, 4)),
    st.tuples(st.just("ready"), st.integers(0, 4)),
    st.tuples(st.just("discovered"), st.integers(0, 4)),
    st.tuples(st.just("description"), st.integers(0, 4)),
    st.tuples(st.just("resumed"), st.integers(0, 4)),
    st.tuples(st.just("text"), st.tuples(st.integers(0, 4), garbage_text)),
    st.tuples(st.just("binary"), st.tuples(st.integers(0, 4), st.binary(max_size=10))),
    st.tuples(st.just("tick"), st.floats(0, 1000)),
    st.tuples(st.just("update"), st.sampled_from([CHANNEL, OTHER_CHANNEL, None])),
    st.tuples(st.just("disconnect"), st.none()),
    st.tuples(st.just("gateway_closed"), st.none()),
    st.tuples(st.just("failed"), st.tuples(st.integers(0, 4), st.booleans())),
    st.tuples(st.just("grace"), st.integers(-1, 1)),
)


def apply(s: VoiceSession, server: Server, kind: str, arg: Any) -> list[Action]:
    cid = s.connection_id
    if kind == "state":
        return s.voice_state_update(state_d(arg))
    if kind == "server":
        return s.voice_server_update(server_d(arg))
    if kind == "garbage_state":
        return s.voice_state_update(arg)
    if kind == "garbage_server":
        return s.voice_server_update(arg)
    if kind == "opened":
        return s.websocket_opened(cid - arg)
    if kind == "closed":
        return s.websocket_closed(cid - arg[0], arg[1])
    if kind == "hello":
        return s.receive_text(cid - arg, server.frame(Hello(1000), numbered=False))
    if kind == "ready":
        return s.receive_text(
            cid - arg, server.frame(Ready(5, "10.0.0.1", 1, (AES256_GCM_RTPSIZE,)))
        )
    if kind == "discovered":
        return s.ip_discovered(cid - arg, DiscoveredAddress(5, "1.2.3.4", 2))
    if kind == "description":
        return s.receive_text(cid - arg, server.frame(SessionDescription(AES256_GCM_RTPSIZE, KEY)))
    if kind == "resumed":
        return s.receive_text(cid - arg, server.frame(Resumed()))
    if kind == "text":
        return s.receive_text(cid - arg[0], arg[1])
    if kind == "binary":
        return s.receive_binary(cid - arg[0], arg[1])
    if kind == "tick":
        return s.heartbeat_due(arg)
    if kind == "update":
        return s.update_voice_state(arg, self_mute=False, self_deaf=False)
    if kind == "disconnect":
        return s.disconnect()
    if kind == "gateway_closed":
        return s.gateway_closed()
    if kind == "failed":
        return s.websocket_failed(cid - arg[0], "failed", fatal=arg[1])
    if kind == "grace":
        return s.move_grace_expired(s._grace_id + arg)
    raise AssertionError(kind)


@settings(max_examples=400, deadline=None)
@given(st.lists(events, max_size=40), st.booleans())
def test_any_sequence_keeps_the_invariants(
    sequence: list[tuple[str, Any]], connect_first: bool
) -> None:
    s = VoiceSession(GUILD, USER)
    server = Server()
    if connect_first:
        s.connect(CHANNEL)
    invalidations = 0
    last_opened = 0
    for kind, arg in sequence:
        was_valid = s.is_valid
        try:
            out = apply(s, server, kind, arg)
        except ProtocolError:
            continue
        if not was_valid:
            assert out == [], (kind, arg)
        for action in out:
            if isinstance(action, Invalidated):
                invalidations += 1
                assert not s.is_valid and s.invalidation == action
            if isinstance(action, OpenWebSocket):
                assert action.connection_id > last_opened
                last_opened = action.connection_id
            if isinstance(action, Connected):
                assert s.is_connected or not s.is_valid
            if isinstance(action, SendVoiceMessage | CloseWebSocket | StartUdp):
                assert action.connection_id <= s.connection_id
        assert invalidations <= 1
        assert s.is_valid == (s.invalidation is None)
        assert not (s.is_connected and s.is_connecting)
        if s.is_connected:
            assert s.ssrc is not None and s.encryption_mode is not None


@settings(max_examples=300, deadline=None)
@given(garbage_text)
def test_garbage_text_raises_only_protocol_errors(text: str) -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    with contextlib.suppress(ProtocolError):
        s.receive_text(1, text)
    assert s.is_valid or s.invalidation is not None


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_garbage_dispatches_raise_only_protocol_errors(state: Any, server: Any) -> None:
    s = VoiceSession(GUILD, USER)
    s.connect(CHANNEL)
    for call, value in ((s.voice_state_update, state), (s.voice_server_update, server)):
        with contextlib.suppress(ProtocolError):
            call(value)
    assert s.is_connecting
