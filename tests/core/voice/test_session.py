"""The voice handshake state machine: dispatch orders, resumes, moves, closes, timers, garbage,
and the reconnect policy (backoff, progress, bounded attempts, UDP restarts)."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice._core.ip_discovery import DiscoveredAddress
from discore_voice._core.transport import AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE
from discore_voice._core.voice.commands import (
    CloseWebSocket,
    Log,
    OpenWebSocket,
    SendVoiceStateUpdate,
    SetTimer,
    StartUdp,
    TimerKind,
)
from discore_voice._core.voice.events import (
    Connected,
    Invalidated,
    InvalidationReason,
    MemberConnected,
    MemberDisconnected,
    MemberSpeaking,
)
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
    ATTEMPT_TIMEOUT,
    MAX_ATTEMPTS_PER_MINUTE,
    MAX_ATTEMPTS_WITHOUT_PROGRESS,
    MAX_HEARTBEAT_INTERVAL,
    MIN_HEARTBEAT_INTERVAL,
    MOVE_GRACE_SECONDS,
    InstallCipher,
    Phase,
    SendVoiceMessage,
    SessionOutput,
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
URL = "wss://voice.example:443/?v=8"


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


def of_type(actions: list[SessionOutput], kind: type[Any]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def messages(actions: list[SessionOutput]) -> list[Any]:
    return [a.message for a in actions if isinstance(a, SendVoiceMessage)]


def session(**options: Any) -> VoiceSession:
    # No jitter: each backoff is the low end of its range, so tests know it exactly.
    options.setdefault("random", lambda: 0.0)
    return VoiceSession(GUILD, USER, **options)


def joined(
    order: str = "state-first", s: VoiceSession | None = None
) -> tuple[VoiceSession, list[SessionOutput]]:
    s = s or session()
    out = s.connect(CHANNEL)
    assert out == [SendVoiceStateUpdate(CHANNEL, False, False)]
    if order == "state-first":
        assert s.voice_state_update(state_d(), 0.0) == []
        out = s.voice_server_update(server_d(), 0.0)
    else:
        assert s.voice_server_update(server_d(), 0.0) == []
        out = s.voice_state_update(state_d(), 0.0)
    return s, out


def handshake(
    s: VoiceSession,
    server: Server,
    *,
    modes: tuple[str, ...] = (XCHACHA20_POLY1305_RTPSIZE, AES256_GCM_RTPSIZE),
    ssrc: int = 42,
    now: float = 0.0,
) -> list[SessionOutput]:
    gen = s.generation
    everything: list[SessionOutput] = []
    everything += s.websocket_opened(gen, now)
    everything += s.receive_text(gen, server.frame(Hello(41250), numbered=False), now)
    everything += s.receive_text(gen, server.frame(Ready(ssrc, "10.0.0.1", 5000, modes)), now)
    everything += s.ip_discovered(s.udp_generation, DiscoveredAddress(ssrc, "1.2.3.4", 6000), now)
    mode = s.encryption_mode
    assert mode is not None
    everything += s.receive_text(gen, server.frame(SessionDescription(mode, KEY)), now)
    return everything


def fire(s: VoiceSession, kind: TimerKind) -> list[SessionOutput]:
    """Timer ``kind`` fires exactly when the session asked for it."""
    due = s.timer(kind)
    assert due is not None, f"{kind} is not armed"
    return s.timer_expired(kind, due)


def resume(s: VoiceSession, server: Server, now: float) -> list[SessionOutput]:
    """Open the resuming websocket and finish the resume (Hello, Resumed)."""
    gen = s.generation
    out = s.websocket_opened(gen, now)
    out += s.receive_text(gen, server.frame(Hello(41250), numbered=False), now)
    out += s.receive_text(gen, server.frame(Resumed()), now)
    return out


# --- the handshake ----------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["state-first", "server-first"])
def test_handshake_in_either_dispatch_order(order: str) -> None:
    s, out = joined(order)
    assert out == [OpenWebSocket(1, URL), SetTimer(TimerKind.ATTEMPT, ATTEMPT_TIMEOUT)]
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
    # The attempt is over (heartbeating and connected): its deadline is disarmed.
    assert SetTimer(TimerKind.ATTEMPT, None) in actions and s.timer(TimerKind.ATTEMPT) is None
    assert s.stats.identifies == 1 and s.stats.websockets_opened == 1


def test_xchacha_when_aes_is_not_offered() -> None:
    s, _ = joined()
    handshake(s, Server(), modes=("xsalsa20_poly1305", XCHACHA20_POLY1305_RTPSIZE))
    assert s.encryption_mode == XCHACHA20_POLY1305_RTPSIZE


def test_no_compatible_mode_invalidates_with_error() -> None:
    s, _ = joined()
    server = Server()
    s.websocket_opened(1, 0.0)
    s.receive_text(1, server.frame(Ready(1, "10.0.0.1", 5000, ("xsalsa20_poly1305",))), 0.0)
    out = s.ip_discovered(1, DiscoveredAddress(1, "1.2.3.4", 6000), 0.0)
    (inv,) = of_type(out, Invalidated)
    assert inv.reason is InvalidationReason.ERROR and "xsalsa20_poly1305" in inv.detail


def test_a_500_kb_mode_name_is_capped_in_the_detail() -> None:
    s, _ = joined()
    server = Server()
    s.websocket_opened(1, 0.0)
    huge = "m" * 500_000
    s.receive_text(1, server.frame(Ready(1, "10.0.0.1", 5000, (huge,))), 0.0)
    (inv,) = of_type(s.ip_discovered(1, DiscoveredAddress(1, "1.2.3.4", 6000), 0.0), Invalidated)
    assert len(inv.detail) < 1000


def test_dispatches_for_other_users_and_guilds_are_ignored() -> None:
    s = session()
    s.connect(CHANNEL)
    assert s.voice_state_update(state_d(user=USER + 1), 0.0) == []
    assert s.voice_state_update(state_d(guild=GUILD + 1), 0.0) == []
    assert s.voice_server_update({**server_d(), "guild_id": str(GUILD + 1)}, 0.0) == []
    assert s.phase is Phase.AWAITING_GATEWAY
    assert s.voice_server_update(server_d(), 0.0) == []  # still no state of our own
    assert of_type(s.voice_state_update(state_d(), 0.0), OpenWebSocket)


def test_endpoint_urls() -> None:
    assert endpoint_url("h.example:443") == URL.replace("voice", "h")
    assert endpoint_url("ws://127.0.0.1:9/?v=8") == "ws://127.0.0.1:9/?v=8"
    assert endpoint_url("wss://x:1/p") == "wss://x:1/p"


# --- heartbeats ----------------------------------------------------------------------------------


def test_heartbeat_carries_nonce_and_seq_ack_and_ack_timeout_resumes() -> None:
    s, _ = joined()
    server = Server()
    out = handshake(s, server, now=100.0)
    assert SetTimer(TimerKind.HEARTBEAT, 100.0) in out  # the first one at once
    (hb,) = messages(fire(s, TimerKind.HEARTBEAT))
    assert isinstance(hb, Heartbeat) and hb.seq_ack == server.seq == 2
    assert s.timer(TimerKind.HEARTBEAT) == pytest.approx(141.25)
    assert s.timer_expired(TimerKind.HEARTBEAT, 120.0) == []  # not due yet
    s.receive_text(1, server.frame(HeartbeatAck(hb.nonce)), 120.0)
    assert s.stats.heartbeat_rtt_ms == pytest.approx(20_000.0)
    (hb2,) = messages(fire(s, TimerKind.HEARTBEAT))
    assert hb2.nonce != hb.nonce and hb2.seq_ack == 3
    # No ACK for hb2: the next deadline resumes on a new websocket, keeping the SSRC.
    out = fire(s, TimerKind.HEARTBEAT)
    assert out[0] == CloseWebSocket(1, 4000) and s.timer(TimerKind.HEARTBEAT) is None
    assert of_type(out, Log)[0].level == logging.WARNING
    (reconnect,) = of_type(out, SetTimer)
    assert reconnect.kind is TimerKind.RECONNECT
    assert s.phase is Phase.RESUMING and s.ssrc == 42
    assert of_type(fire(s, TimerKind.RECONNECT), OpenWebSocket) == [OpenWebSocket(2, URL)]
    (resume_message,) = messages(s.websocket_opened(2, 183.0))
    assert isinstance(resume_message, Resume)
    assert resume_message.seq_ack == 3 and resume_message.token == TOKEN
    s.receive_text(2, server.frame(Hello(41250), numbered=False), 183.0)
    assert of_type(s.receive_text(2, server.frame(Resumed()), 183.0), SetTimer) == [
        SetTimer(TimerKind.ATTEMPT, None)
    ]
    assert s.is_connected and s.ssrc == 42 and s.invalidation is None


def test_wrong_ack_nonce_does_not_count() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    (hb,) = messages(fire(s, TimerKind.HEARTBEAT))
    s.receive_text(1, server.frame(HeartbeatAck(hb.nonce + 1)), 1.0)
    assert CloseWebSocket(1, 4000) in fire(s, TimerKind.HEARTBEAT)


@pytest.mark.parametrize(
    ("asked_ms", "used"),
    [
        (1.0, MIN_HEARTBEAT_INTERVAL),
        (0.001, MIN_HEARTBEAT_INTERVAL),
        (1e308, MAX_HEARTBEAT_INTERVAL),
        (13_750.0, 13.75),
    ],
)
def test_the_heartbeat_interval_is_kept_within_sane_bounds(asked_ms: float, used: float) -> None:
    """The defect: 1e308 ms meant no heartbeat ever; 1 ms meant a thousand a second."""
    s, _ = joined()
    s.websocket_opened(1, 0.0)
    out = s.receive_text(1, Server().frame(Hello(asked_ms), numbered=False), 0.0)
    assert s.heartbeat_interval == used
    logged = of_type(out, Log)
    assert bool(logged) == (used != asked_ms / 1000)
    if logged:
        assert logged[0].level == logging.WARNING and "heartbeat" in logged[0].message
    fire(s, TimerKind.HEARTBEAT)
    assert s.timer(TimerKind.HEARTBEAT) == used


def test_a_second_hello_re_times_the_heartbeat_and_never_adds_beats() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    fire(s, TimerKind.HEARTBEAT)  # beat 1, at 0
    out = s.receive_text(1, server.frame(Hello(1), numbered=False), 0.5)
    assert SetTimer(TimerKind.HEARTBEAT, 0.5) in out
    # An ACK is still owed for beat 1: a timer that fires now resumes, it does not beat again.
    beats = 0
    now = 0.5
    for _ in range(20):
        due = s.timer(TimerKind.HEARTBEAT)
        if due is None:
            break
        now = due
        out = s.timer_expired(TimerKind.HEARTBEAT, now)
        beats += len(of_type(messages(out), Heartbeat))
        for beat in of_type(messages(out), Heartbeat):
            s.receive_text(1, server.frame(HeartbeatAck(beat.nonce)), now)
        if now > 10.5:
            break
    # Over ten seconds at the 1 s floor: about ten beats, never hundreds.
    assert beats <= 12


def test_no_hello_at_all_abandons_the_attempt() -> None:
    """The defect: without a Hello the connection never heartbeated, and waited forever."""
    s, _ = joined()
    server = Server()
    s.websocket_opened(1, 0.0)
    s.receive_text(1, server.frame(Ready(42, "10.0.0.1", 5000, (AES256_GCM_RTPSIZE,))), 0.0)
    s.ip_discovered(1, DiscoveredAddress(42, "1.2.3.4", 6000), 0.0)
    s.receive_text(1, server.frame(SessionDescription(AES256_GCM_RTPSIZE, KEY)), 0.0)
    assert s.timer(TimerKind.ATTEMPT) == ATTEMPT_TIMEOUT  # connected, but not heartbeating
    out = fire(s, TimerKind.ATTEMPT)
    assert CloseWebSocket(1, 4000) in out
    (log,) = of_type(out, Log)
    assert "no Hello" in log.message
    assert s.phase is Phase.RESUMING


def test_a_resume_that_never_finishes_is_abandoned() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    s.websocket_closed(1, 4015, 10.0)
    fire(s, TimerKind.RECONNECT)
    s.websocket_opened(2, 11.0)
    s.receive_text(2, server.frame(Hello(41250), numbered=False), 11.0)
    out = fire(s, TimerKind.ATTEMPT)  # Hello, but never Resumed
    assert CloseWebSocket(2, 4000) in out
    assert "did not finish the handshake" in of_type(out, Log)[0].message


# --- closes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [4015, None, 1000, 1001, 1006, 1011])
def test_resume_after_resumable_closes(code: int | None) -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    out = s.websocket_closed(1, code, 5.0)
    reconnect = of_type(out, SetTimer)[-1]
    assert reconnect.kind is TimerKind.RECONNECT and reconnect.at is not None
    # Even the first reconnect waits a little: [0.25, 0.5) s.
    assert 5.25 <= reconnect.at < 5.5
    assert s.is_connecting and s.is_valid
    assert of_type(fire(s, TimerKind.RECONNECT), OpenWebSocket) == [OpenWebSocket(2, URL)]
    (resume_message,) = messages(s.websocket_opened(2, 6.0))
    assert isinstance(resume_message, Resume) and resume_message.seq_ack == server.seq
    # v8 re-delivers; a fresh key may follow a resume.
    s.receive_text(2, server.frame(Resumed()), 6.0)
    out = s.receive_text(2, server.frame(SessionDescription(AES256_GCM_RTPSIZE, KEY[::-1])), 6.0)
    assert out == [InstallCipher(AES256_GCM_RTPSIZE, KEY[::-1])]
    assert s.ssrc == 42 and s.stats.resumes == 1
    assert s.stats.closes == {code: 1}


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
        s.websocket_opened(1, 0.0)
    out = s.websocket_closed(1, code, 1.0)
    if reason in (InvalidationReason.KICKED, InvalidationReason.CALL_TERMINATED):
        # Maybe a move: only when no new voice server follows is it final.
        grace = out[-1]
        assert grace == SetTimer(TimerKind.MOVE_GRACE, 1.0 + MOVE_GRACE_SECONDS)
        assert s.is_valid and s.is_connecting
        assert s.timer_expired(TimerKind.MOVE_GRACE, 2.0) == []  # too early
        out = fire(s, TimerKind.MOVE_GRACE)
    (inv,) = of_type(out, Invalidated)
    # Leaving the channel on the main gateway is part of it: nothing lingers.
    assert out[-2:] == [inv, SendVoiceStateUpdate(None, False, False)]
    assert inv.reason is reason
    assert not s.is_valid and s.invalidation == inv
    assert str(code) in inv.detail
    # No timer is left armed.
    assert all(s.timer(kind) is None for kind in TimerKind)
    # Invalid: everything is a no-op now.
    assert s.websocket_closed(1, 4015, 2.0) == []
    assert s.disconnect() == []
    assert s.update_voice_state(CHANNEL, self_mute=True, self_deaf=False) == []
    assert s.voice_server_update(server_d(), 2.0) == []


def test_dave_required_detail_names_dave_and_the_fix() -> None:
    s, _ = joined()
    s.websocket_opened(1, 0.0)
    (inv,) = of_type(s.websocket_closed(1, 4017, 0.0), Invalidated)
    assert "DAVE" in inv.detail and "davey" in inv.detail


# --- moves and switches --------------------------------------------------------------------------


def test_server_move_with_null_endpoint_first() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    out = s.voice_server_update(server_d(None), 1.0)
    assert out == [CloseWebSocket(1, 1000)]
    assert s.is_connecting and not s.is_connected
    out = s.voice_server_update(server_d("other.example:443", "token2"), 1.0)
    assert of_type(out, OpenWebSocket) == [OpenWebSocket(2, "wss://other.example:443/?v=8")]
    (identify,) = messages(s.websocket_opened(2, 1.0))
    assert isinstance(identify, Identify) and identify.token == "token2"
    server2 = Server()
    actions = handshake(s, server2, ssrc=77, now=1.0)
    assert of_type(actions, Connected) == [Connected(CHANNEL, 77, AES256_GCM_RTPSIZE)]
    assert s.ssrc == 77


def test_server_move_restarts_seq_tracking() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    s.voice_server_update(server_d("other.example:443", "token2"), 0.0)
    s.websocket_opened(2, 0.0)
    s.receive_text(2, Server().frame(Hello(1000), numbered=False), 0.0)
    (hb,) = messages(fire(s, TimerKind.HEARTBEAT))
    assert hb.seq_ack == -1


def test_channel_switch_is_a_new_session() -> None:
    s, _ = joined()
    handshake(s, Server())
    out = s.update_voice_state(OTHER_CHANNEL, self_mute=False, self_deaf=False)
    assert out == [SendVoiceStateUpdate(OTHER_CHANNEL, False, False)]
    assert s.is_connected  # the call returns before the switch completes
    s.voice_state_update(state_d(OTHER_CHANNEL), 0.0)
    assert s.channel_id == OTHER_CHANNEL
    out = s.voice_server_update(server_d(token="token3"), 0.0)
    assert CloseWebSocket(1, 1000) in out and OpenWebSocket(2, URL) in out
    actions = handshake(s, Server(), ssrc=9)
    assert of_type(actions, Connected) == [Connected(OTHER_CHANNEL, 9, AES256_GCM_RTPSIZE)]


def test_mute_and_deaf_follow_our_voice_state() -> None:
    s, _ = joined()
    handshake(s, Server())
    out = s.update_voice_state(CHANNEL, self_mute=True, self_deaf=True)
    assert out == [SendVoiceStateUpdate(CHANNEL, True, True)]
    assert s.voice_state_update(state_d(self_mute=True, self_deaf=True), 0.0) == []
    assert s.self_mute and s.self_deaf and s.is_connected


@pytest.mark.parametrize("code", [4014, 4022])
def test_a_close_overtaking_a_moves_dispatches_is_not_an_invalidation(code: int) -> None:
    s, _ = joined()
    handshake(s, Server())
    assert s.websocket_closed(1, code, 0.0)[-1].kind is TimerKind.MOVE_GRACE  # type: ignore[union-attr]
    assert s.voice_state_update(state_d(OTHER_CHANNEL), 0.0) == []
    out = s.voice_server_update(server_d(token="moved"), 0.0)
    assert SetTimer(TimerKind.MOVE_GRACE, None) in out and OpenWebSocket(2, URL) in out
    assert s.timer_expired(TimerKind.MOVE_GRACE, 100.0) == []  # disarmed by the move
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
    s.websocket_closed(1, code, 0.0)
    (inv,) = of_type(s.voice_state_update(state_d(None), 0.0), Invalidated)
    assert inv.reason is reason


def test_null_channel_in_our_state_is_a_kick() -> None:
    s, _ = joined()
    handshake(s, Server())
    out = s.voice_state_update(state_d(None), 0.0)
    assert out[0] == CloseWebSocket(1, 1000)
    (inv,) = of_type(out, Invalidated)
    assert inv.reason is InvalidationReason.KICKED


def test_stale_null_channel_before_our_join_is_ignored() -> None:
    s = session()
    s.connect(CHANNEL)
    assert s.voice_state_update(state_d(None), 0.0) == []
    assert s.is_connecting


# --- the caller's requests -----------------------------------------------------------------------


def test_disconnect_leaves_and_invalidates_normal() -> None:
    s, _ = joined()
    handshake(s, Server())
    out = s.disconnect()
    assert out[0] == SendVoiceStateUpdate(None, False, False)
    assert out[1] == CloseWebSocket(1, 1000)
    (inv,) = of_type(out, Invalidated)
    assert inv.reason is InvalidationReason.NORMAL
    assert s.disconnect() == []


def test_update_with_null_channel_is_a_disconnect() -> None:
    s, _ = joined()
    out = s.update_voice_state(None, self_mute=False, self_deaf=False)
    assert out[0] == SendVoiceStateUpdate(None, False, False)
    assert s.invalidation is not None and s.invalidation.reason is InvalidationReason.NORMAL


def test_gateway_closed_lost_and_fail() -> None:
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
        SetTimer(TimerKind.ATTEMPT, None),
        Invalidated(InvalidationReason.TIMED_OUT, "too slow"),
        SendVoiceStateUpdate(None, False, False),
    ]
    s3, _ = joined()
    handshake(s3, Server())
    (inv,) = of_type(s3.gateway_session_lost("op 9"), Invalidated)
    assert inv.reason is InvalidationReason.GATEWAY_CLOSED and inv.detail.startswith("op 9")


def test_idle_session_ignores_everything() -> None:
    s = session()
    assert s.voice_state_update(state_d(), 0.0) == []
    assert s.voice_server_update(server_d(), 0.0) == []
    assert s.disconnect() == [] and s.gateway_closed() == []
    assert s.websocket_closed(0, 4014, 0.0) == []
    assert all(s.timer_expired(kind, 1e9) == [] for kind in TimerKind)
    assert s.is_valid and not s.is_connecting


def test_second_connect_is_a_no_op() -> None:
    s, _ = joined()
    assert s.connect(OTHER_CHANNEL) == []


def test_events_from_a_replaced_websocket_are_ignored() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    s.websocket_closed(1, 4015, 0.0)
    assert s.websocket_closed(1, 4004, 0.0) == []
    assert s.receive_text(1, server.frame(Ready(5, "1.1.1.1", 9, ("x",))), 0.0) == []
    assert s.ip_discovered(0, DiscoveredAddress(42, "1.1.1.1", 1), 0.0) == []
    assert s.is_valid


def test_member_events() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    assert s.receive_text(1, server.frame(ServerSpeaking(7, 99, 1)), 0.0) == [
        MemberSpeaking(7, 99, 1)
    ]
    assert s.receive_text(1, server.frame(ClientsConnect((7, 8))), 0.0) == [
        MemberConnected(7),
        MemberConnected(8),
    ]
    assert s.receive_text(1, server.frame(ClientDisconnect(7)), 0.0) == [MemberDisconnected(7)]


def test_malformed_mid_handshake_is_an_error_but_skipped_when_connected() -> None:
    s, _ = joined()
    s.websocket_opened(1, 0.0)
    with pytest.raises(ProtocolError):
        s.receive_text(1, '{"op": 2, "d": {"ssrc": "x"}}', 0.0)
    (inv,) = of_type(s.malformed(1, "bad Ready"), Invalidated)
    assert inv.reason is InvalidationReason.ERROR
    s2, _ = joined()
    handshake(s2, Server())
    assert s2.malformed(1, "bad speaking") == []
    assert s2.is_connected


def test_an_absurd_seq_is_malformed_and_never_acknowledged() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    with pytest.raises(ProtocolError):
        s.receive_text(1, '{"op": 6, "d": {"t": 1}, "seq": ' + str(2**64 + 5) + "}", 0.0)
    (hb,) = messages(fire(s, TimerKind.HEARTBEAT))
    assert hb.seq_ack == server.seq


def test_mismatched_session_description_mode_is_an_error() -> None:
    s, _ = joined()
    server = Server()
    s.websocket_opened(1, 0.0)
    s.receive_text(1, server.frame(Ready(1, "10.0.0.1", 5000, (AES256_GCM_RTPSIZE,))), 0.0)
    s.ip_discovered(1, DiscoveredAddress(1, "1.2.3.4", 6000), 0.0)
    out = s.receive_text(1, server.frame(SessionDescription(XCHACHA20_POLY1305_RTPSIZE, KEY)), 0.0)
    (inv,) = of_type(out, Invalidated)
    assert inv.reason is InvalidationReason.ERROR


def test_secrets_stay_out_of_reprs() -> None:
    s, _ = joined()
    actions = handshake(s, Server())
    for action in [*actions, s]:
        assert TOKEN not in repr(action) and SESSION_ID not in repr(action)
        assert repr(KEY) not in repr(action) and KEY.hex() not in repr(action)


# --- the reconnect policy: backoff, progress, bounded attempts --------------------------------


def storm(s: VoiceSession, server: Server, now: float, *, code: int = 4015) -> float:
    """One reconnect of a server that fails right after each Resumed: close, wait, resume."""
    s.websocket_closed(s.generation, code, now)
    due = s.timer(TimerKind.RECONNECT)
    if due is None:
        return now
    fire(s, TimerKind.RECONNECT)
    resume(s, server, due)
    return due


def test_a_server_failing_after_every_resume_backs_off_and_is_given_up() -> None:
    """The defect: attempts reset on every Resumed, and 4015 after each resume got 1204
    resumes in 30 s. Now the waits double and the connection ends with RECONNECT_FAILED."""
    s, _ = joined()
    server = Server()
    handshake(s, server)
    now, waits = 0.0, []
    while s.is_valid:
        before = now
        now = storm(s, server, now)
        if s.is_valid:
            waits.append(now - before)
    assert len(waits) == MAX_ATTEMPTS_WITHOUT_PROGRESS
    assert waits == sorted(waits) and waits[-1] > 4 * waits[0]
    assert now < 60.0
    invalidation = s.invalidation
    assert invalidation is not None
    assert invalidation.reason is InvalidationReason.RECONNECT_FAILED
    assert "in a row without progress" in invalidation.detail
    assert s.stats.reconnects == MAX_ATTEMPTS_WITHOUT_PROGRESS + 1


def test_the_backoff_is_jittered() -> None:
    """Half to all of each step, drawn per attempt: connections failing together spread out."""
    low, high = session(random=lambda: 0.0), session(random=lambda: 0.999)
    delays = []
    for s in (low, high):
        joined(s=s)
        handshake(s, Server())
        s.websocket_closed(1, 4015, 0.0)
        delays.append(s.timer(TimerKind.RECONNECT))
    assert delays[0] == pytest.approx(0.25) and delays[1] == pytest.approx(0.5, abs=0.001)


def test_a_websocket_that_stays_up_two_intervals_is_progress() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    now = 0.0
    for _ in range(3):
        now = storm(s, server, now)
    assert s.timer(TimerKind.RECONNECT) is None and s.is_connected
    # Heartbeats ACKed for two intervals on the resumed websocket: the count starts over.
    for _ in range(3):
        due = s.timer(TimerKind.HEARTBEAT)
        assert due is not None
        (beat,) = messages(s.timer_expired(TimerKind.HEARTBEAT, due))
        s.receive_text(s.generation, server.frame(HeartbeatAck(beat.nonce)), due)
    s.websocket_closed(s.generation, 4015, due + 1)
    assert s.timer(TimerKind.RECONNECT) == pytest.approx(due + 1 + 0.25)  # the first step again


def test_media_flowing_is_progress() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    now = 0.0
    for _ in range(3):
        now = storm(s, server, now)
    s.media_received(s.udp_generation, now + 0.1)
    s.websocket_closed(s.generation, 4015, now + 1)
    assert s.timer(TimerKind.RECONNECT) == pytest.approx(now + 1 + 0.25)


def test_never_more_than_ten_attempts_within_a_minute_even_with_progress() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    now = 0.0
    attempts = 0
    while s.is_valid and attempts < 50:
        now = storm(s, server, now)
        s.media_received(s.udp_generation, now)  # each time media flows a moment
        attempts += 1
    invalidation = s.invalidation
    assert invalidation is not None
    assert invalidation.reason is InvalidationReason.RECONNECT_FAILED
    assert "within a minute" in invalidation.detail
    assert attempts == MAX_ATTEMPTS_PER_MINUTE + 1


def test_drops_before_ready_identify_again_and_give_up_eventually() -> None:
    s, _ = joined()
    now = 0.0
    for attempt in range(1, MAX_ATTEMPTS_WITHOUT_PROGRESS + 1):
        s.websocket_opened(attempt, now)
        s.websocket_closed(attempt, None, now)
        assert s.phase is Phase.IDENTIFYING
        out = fire(s, TimerKind.RECONNECT)
        assert of_type(out, OpenWebSocket) == [OpenWebSocket(attempt + 1, URL)]
        now = s.timer(TimerKind.ATTEMPT) or now
        (identify,) = messages(s.websocket_opened(attempt + 1, now))
        assert isinstance(identify, Identify)
    out = s.websocket_closed(MAX_ATTEMPTS_WITHOUT_PROGRESS + 1, 1006, now)
    (inv,) = of_type(out, Invalidated)
    assert inv.reason is InvalidationReason.RECONNECT_FAILED and "gave up" in inv.detail


def test_failed_open_retries_then_certificate_is_fatal() -> None:
    s, _ = joined()
    assert of_type(s.websocket_failed(1, "refused", fatal=False, now=0.0), SetTimer)
    fire(s, TimerKind.RECONNECT)
    (inv,) = of_type(s.websocket_failed(2, "bad cert", fatal=True, now=1.0), Invalidated)
    assert inv.detail == "bad cert"


# --- a dead UDP path ----------------------------------------------------------------------------


def test_a_silent_udp_path_is_re_established_on_the_live_websocket() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    out = s.udp_silent(s.udp_generation, 30.0)
    assert of_type(out, Log)[0].level == logging.WARNING
    assert not s.is_connected and s.is_connecting  # audio waits meanwhile
    (start,) = of_type(fire(s, TimerKind.UDP_RESTART), StartUdp)
    assert start == StartUdp(2, "10.0.0.1", 5000, 42)
    assert s.udp_silent(1, 31.0) == []  # the old socket's news is stale
    (select,) = messages(s.ip_discovered(2, DiscoveredAddress(42, "1.2.3.4", 7000), 31.0))
    assert select == SelectProtocol("1.2.3.4", 7000, AES256_GCM_RTPSIZE)
    out = s.receive_text(1, server.frame(SessionDescription(AES256_GCM_RTPSIZE, KEY)), 31.0)
    assert of_type(out, InstallCipher) == [InstallCipher(AES256_GCM_RTPSIZE, KEY)]
    assert not of_type(out, Connected)  # not a new voice session: no Connected event
    assert s.is_connected and s.stats.udp_restarts == 1


def test_a_udp_restart_that_keeps_failing_is_given_up() -> None:
    s, _ = joined()
    handshake(s, Server())
    s.udp_silent(1, 30.0)
    for _ in range(MAX_ATTEMPTS_WITHOUT_PROGRESS):
        (start,) = of_type(fire(s, TimerKind.UDP_RESTART), StartUdp)
        s.udp_failed(start.generation, "no answer", 40.0)
    (inv,) = of_type((s.invalidation and [s.invalidation]) or [], Invalidated)
    assert inv.reason is InvalidationReason.RECONNECT_FAILED
    assert "re-establishing UDP failed" in inv.detail


def test_an_unanswered_select_protocol_on_a_new_udp_path_is_a_failed_attempt() -> None:
    """Unanswered, the second Select Protocol left the connection valid and mute for good."""
    s, _ = joined()
    handshake(s, Server())
    s.udp_silent(1, 30.0)
    (start,) = of_type(fire(s, TimerKind.UDP_RESTART), StartUdp)
    out = s.ip_discovered(start.generation, DiscoveredAddress(42, "1.2.3.4", 7000), 31.0)
    assert messages(out) == [SelectProtocol("1.2.3.4", 7000, AES256_GCM_RTPSIZE)]
    assert s.timer(TimerKind.UDP_RESTART) == 31.0 + ATTEMPT_TIMEOUT
    out = fire(s, TimerKind.UDP_RESTART)  # no Session Description came
    assert "did not answer Select Protocol" in of_type(out, Log)[0].message
    assert s.stats.udp_restarts == 2 and s.is_connecting
    (start,) = of_type(fire(s, TimerKind.UDP_RESTART), StartUdp)  # a fresh socket, after backoff
    assert start.generation == 3
    # Each unanswered attempt counts: the connection ends instead of staying mute.
    for _ in range(MAX_ATTEMPTS_WITHOUT_PROGRESS):
        if s.invalidation is not None:
            break
        s.ip_discovered(s.udp_generation, DiscoveredAddress(42, "1.2.3.4", 7000), 60.0)
        fire(s, TimerKind.UDP_RESTART)
        if s.invalidation is None:
            fire(s, TimerKind.UDP_RESTART)
    assert s.invalidation is not None
    assert s.invalidation.reason is InvalidationReason.RECONNECT_FAILED
    assert "did not answer Select Protocol" in s.invalidation.detail


def test_an_answered_select_protocol_disarms_its_deadline() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    s.udp_silent(1, 30.0)
    fire(s, TimerKind.UDP_RESTART)
    s.ip_discovered(2, DiscoveredAddress(42, "1.2.3.4", 7000), 31.0)
    out = s.receive_text(1, server.frame(SessionDescription(AES256_GCM_RTPSIZE, KEY)), 31.5)
    assert SetTimer(TimerKind.UDP_RESTART, None) in out
    assert s.timer(TimerKind.UDP_RESTART) is None and s.is_connected


def test_a_udp_restart_during_a_resume_selects_once_the_websocket_is_back() -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    s.udp_silent(1, 30.0)
    fire(s, TimerKind.UDP_RESTART)
    s.websocket_closed(1, 4015, 30.5)
    assert messages(s.ip_discovered(2, DiscoveredAddress(42, "1.2.3.4", 7000), 30.6)) == []
    fire(s, TimerKind.RECONNECT)
    out = resume(s, server, 31.0)
    assert SelectProtocol("1.2.3.4", 7000, AES256_GCM_RTPSIZE) in messages(out)


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
        lambda op, d, seq: json.dumps({"op": op, "d": d, "seq": seq}),
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
    st.tuples(st.just("hello"), st.tuples(st.integers(0, 4), st.floats(1e-3, 1e308))),
    st.tuples(st.just("ready"), st.integers(0, 4)),
    st.tuples(st.just("discovered"), st.integers(0, 4)),
    st.tuples(st.just("description"), st.integers(0, 4)),
    st.tuples(st.just("resumed"), st.integers(0, 4)),
    st.tuples(st.just("text"), st.tuples(st.integers(0, 4), garbage_text)),
    st.tuples(st.just("binary"), st.tuples(st.integers(0, 4), st.binary(max_size=10))),
    st.tuples(st.just("timer"), st.sampled_from(list(TimerKind))),
    st.tuples(st.just("wait"), st.floats(0, 100)),
    st.tuples(st.just("update"), st.sampled_from([CHANNEL, OTHER_CHANNEL, None])),
    st.tuples(st.just("disconnect"), st.none()),
    st.tuples(st.just("gateway_closed"), st.none()),
    st.tuples(st.just("failed"), st.tuples(st.integers(0, 4), st.booleans())),
    st.tuples(st.just("udp"), st.sampled_from(["silent", "failed", "media"])),
)


class Driver:
    """Feeds a session arbitrary events on a clock that only moves forward."""

    def __init__(self, s: VoiceSession) -> None:
        self.s = s
        self.server = Server()
        self.now = 0.0

    def apply(self, kind: str, arg: Any) -> list[SessionOutput]:
        s, now, server = self.s, self.now, self.server
        gen = s.generation
        if kind == "state":
            return s.voice_state_update(state_d(arg), now)
        if kind == "server":
            return s.voice_server_update(server_d(arg), now)
        if kind == "garbage_state":
            return s.voice_state_update(arg, now)
        if kind == "garbage_server":
            return s.voice_server_update(arg, now)
        if kind == "opened":
            return s.websocket_opened(gen - arg, now)
        if kind == "closed":
            return s.websocket_closed(gen - arg[0], arg[1], now)
        if kind == "hello":
            return s.receive_text(gen - arg[0], server.frame(Hello(arg[1]), numbered=False), now)
        if kind == "ready":
            ready = Ready(5, "10.0.0.1", 1, (AES256_GCM_RTPSIZE,))
            return s.receive_text(gen - arg, server.frame(ready), now)
        if kind == "discovered":
            address = DiscoveredAddress(5, "1.2.3.4", 2)
            return s.ip_discovered(s.udp_generation - arg, address, now)
        if kind == "description":
            description = SessionDescription(AES256_GCM_RTPSIZE, KEY)
            return s.receive_text(gen - arg, server.frame(description), now)
        if kind == "resumed":
            return s.receive_text(gen - arg, server.frame(Resumed()), now)
        if kind == "text":
            return s.receive_text(gen - arg[0], arg[1], now)
        if kind == "binary":
            return s.receive_binary(gen - arg[0], arg[1])
        if kind == "timer":
            due = s.timer(arg)
            if due is not None:
                self.now = max(now, due)
            return s.timer_expired(arg, self.now)
        if kind == "wait":
            self.now += arg
            return []
        if kind == "update":
            return s.update_voice_state(arg, self_mute=False, self_deaf=False)
        if kind == "disconnect":
            return s.disconnect()
        if kind == "gateway_closed":
            return s.gateway_closed()
        if kind == "failed":
            return s.websocket_failed(gen - arg[0], "failed", fatal=arg[1], now=now)
        if kind == "udp":
            if arg == "silent":
                return s.udp_silent(s.udp_generation, now)
            if arg == "failed":
                return s.udp_failed(s.udp_generation, "failed", now)
            return s.media_received(s.udp_generation, now)
        raise AssertionError(kind)


@settings(max_examples=400, deadline=None)
@given(st.lists(events, max_size=40), st.booleans())
def test_any_sequence_keeps_the_invariants(
    sequence: list[tuple[str, Any]], connect_first: bool
) -> None:
    s = session()
    driver = Driver(s)
    if connect_first:
        s.connect(CHANNEL)
    invalidations = 0
    last_opened = 0
    attempts: list[float] = []
    for kind, arg in sequence:
        was_valid = s.is_valid
        try:
            out = driver.apply(kind, arg)
        except ProtocolError:
            continue
        if not was_valid:
            assert out == [], (kind, arg)
        for action in out:
            if isinstance(action, Invalidated):
                invalidations += 1
                assert not s.is_valid and s.invalidation == action
            if isinstance(action, OpenWebSocket):
                assert action.generation > last_opened
                last_opened = action.generation
                attempts.append(driver.now)
            if isinstance(action, Connected):
                assert s.is_connected or not s.is_valid
            if isinstance(action, SendVoiceMessage | CloseWebSocket):
                assert action.generation <= s.generation
            if isinstance(action, SetTimer) and action.at is not None:
                assert action.at >= driver.now  # never a deadline in the past
        assert invalidations <= 1
        assert s.is_valid == (s.invalidation is None)
        assert not (s.is_connected and s.is_connecting)
        if s.is_connected:
            assert s.ssrc is not None and s.encryption_mode is not None
        if not s.is_valid:
            assert all(s.timer(kind) is None for kind in TimerKind)
        if s.heartbeat_interval is not None:
            assert MIN_HEARTBEAT_INTERVAL <= s.heartbeat_interval <= MAX_HEARTBEAT_INTERVAL
    # Nothing loops: never more websockets within a minute than the policy allows (+ the
    # first, and the new sessions that server updates start).
    for start in attempts:
        within = [t for t in attempts if start <= t < start + 60.0]
        assert len(within) <= MAX_ATTEMPTS_PER_MINUTE + 1 + sum(
            1 for kind, _ in sequence if kind in ("server", "state")
        )


@settings(max_examples=300, deadline=None)
@given(garbage_text)
def test_garbage_text_raises_only_protocol_errors(text: str) -> None:
    s, _ = joined()
    server = Server()
    handshake(s, server)
    with contextlib.suppress(ProtocolError):
        s.receive_text(1, text, 0.0)
    assert s.is_valid or s.invalidation is not None


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_garbage_dispatches_raise_only_protocol_errors(state: Any, server: Any) -> None:
    s = session()
    s.connect(CHANNEL)
    for call, value in ((s.voice_state_update, state), (s.voice_server_update, server)):
        with contextlib.suppress(ProtocolError):
            call(value, 0.0)
    assert s.is_connecting


# --- the main gateway away ----------------------------------------------------------------------


def test_dispatches_before_our_joins_marker_are_someone_elses() -> None:
    s = session()
    s.connect(CHANNEL, sent_marker=True)
    # The replay of an earlier connection's dispatches, before our op 4 went out: ignored.
    assert s.voice_state_update(state_d(OTHER_CHANNEL), 0.0) == []
    assert s.voice_server_update(server_d(), 0.0) == []
    s.voice_state_sent({"guild_id": str(GUILD), "channel_id": None})  # a leave's: not ours
    assert s.voice_state_update(state_d(), 0.0) == []
    s.voice_state_sent({"guild_id": str(GUILD), "channel_id": str(CHANNEL)})
    assert s.voice_state_update(state_d(), 0.0) == []
    assert of_type(s.voice_server_update(server_d(), 0.0), OpenWebSocket)


def test_a_join_unanswered_when_the_gateway_resumes_is_sent_again() -> None:
    s = session()
    s.connect(CHANNEL, sent_marker=True)
    s.voice_state_sent({"guild_id": str(GUILD), "channel_id": str(CHANNEL)})
    s.gateway_disconnected()
    assert s.gateway_resumed(10.0) == [SendVoiceStateUpdate(CHANNEL, False, False)]
    # Its own marker again before answers count (the first answers may still be replayed).
    assert s.voice_state_update(state_d(), 10.0) == []
    s.voice_state_sent({"guild_id": str(GUILD), "channel_id": str(CHANNEL)})
    s.voice_state_update(state_d(), 10.0)
    assert of_type(s.voice_server_update(server_d(), 10.0), OpenWebSocket)


def test_a_move_grace_that_runs_out_while_the_gateway_is_away_waits_for_it() -> None:
    s, _ = joined()
    handshake(s, Server())
    s.gateway_disconnected()
    s.websocket_closed(1, 4022, 1.0)
    assert fire(s, TimerKind.MOVE_GRACE) == []  # the move's dispatches cannot have come yet
    assert s.is_valid
    assert s.gateway_resumed(30.0) == [SetTimer(TimerKind.MOVE_GRACE, 30.0 + MOVE_GRACE_SECONDS)]
    (inv,) = of_type(fire(s, TimerKind.MOVE_GRACE), Invalidated)
    assert inv.reason is InvalidationReason.CALL_TERMINATED
