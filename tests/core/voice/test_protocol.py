"""The voice core: encoding what it sends, the speaking rule, the media state it hands the shell,
DAVE's group id, counted garbage, and never a reused (key, nonce) across resumes and moves."""

from __future__ import annotations

import json
import logging
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from discore_voice._core.gateway.voice import (
    GATEWAY_SESSION_LOST,
    VOICE_SERVER_UPDATE,
    VOICE_STATE_UPDATE,
)
from discore_voice._core.ip_discovery import DiscoveredAddress
from discore_voice._core.transport import AES256_GCM_RTPSIZE, NonceLedger
from discore_voice._core.voice.commands import (
    Log,
    Media,
    MediaChanged,
    SendText,
    SendVoiceStateUpdate,
    TimerKind,
)
from discore_voice._core.voice.events import Connected, Invalidated, InvalidationReason
from discore_voice._core.voice.frames import encode_server_text
from discore_voice._core.voice.payloads import (
    Hello,
    Ready,
    Resumed,
    ServerMessage,
    ServerSpeaking,
    SessionDescription,
)
from discore_voice._core.voice.protocol import Output, VoiceProtocol

GUILD = 111_000_000_000_000_001
USER = 222_000_000_000_000_002
CHANNEL = 333_000_000_000_000_003
OTHER_CHANNEL = 333_000_000_000_000_004
MEMBER = 444_000_000_000_000_005
KEY = bytes(range(32))
OPUS = b"\xfc" + bytes(100)


class Server:
    def __init__(self) -> None:
        self.seq = 0

    def frame(self, message: ServerMessage, *, numbered: bool = True) -> str:
        if not numbered:
            return encode_server_text(message, seq=None)
        self.seq += 1
        return encode_server_text(message, seq=self.seq)


def state_d(channel: int = CHANNEL) -> Any:
    return {
        "guild_id": str(GUILD),
        "channel_id": str(channel),
        "user_id": str(USER),
        "session_id": "s",
        "self_mute": False,
        "self_deaf": False,
    }


def server_d(token: str = "t") -> Any:
    return {"guild_id": str(GUILD), "endpoint": "voice.example:443", "token": token}


def sent_ops(out: list[Output]) -> list[int]:
    return [json.loads(o.text)["op"] for o in out if isinstance(o, SendText)]


def media_of(out: list[Output]) -> list[MediaChanged]:
    return [o for o in out if isinstance(o, MediaChanged)]


def protocol(*, ledger: NonceLedger | None = None) -> VoiceProtocol:
    return VoiceProtocol(
        GUILD,
        USER,
        max_dave_protocol_version=0,
        ledger=NonceLedger() if ledger is None else ledger,
        random=lambda: 0.0,
    )


def connect(p: VoiceProtocol, server: Server, *, key: bytes = KEY, ssrc: int = 42) -> list[Output]:
    """Join and finish a handshake (a new voice session if already joined)."""
    out = p.connect(CHANNEL, self_mute=False, self_deaf=False, now=0.0)
    out += p.gateway_dispatch(VOICE_STATE_UPDATE, state_d(), 0.0)
    out += p.gateway_dispatch(VOICE_SERVER_UPDATE, server_d(), 0.0)
    return out + handshake(p, server, key=key, ssrc=ssrc)


def handshake(p: VoiceProtocol, server: Server, *, key: bytes, ssrc: int) -> list[Output]:
    gen = p.session.generation
    out = p.websocket_opened(gen, 0.0)
    out += p.websocket_frame(gen, server.frame(Hello(41250), numbered=False), 0.0)
    ready = Ready(ssrc, "10.0.0.1", 5000, (AES256_GCM_RTPSIZE,))
    out += p.websocket_frame(gen, server.frame(ready), 0.0)
    address = DiscoveredAddress(ssrc, "1.2.3.4", 6000)
    out += p.udp_discovered(p.session.udp_generation, address, 0.0)
    description = SessionDescription(AES256_GCM_RTPSIZE, key)
    return out + p.websocket_frame(gen, server.frame(description), 0.0)


def resume(p: VoiceProtocol, server: Server, now: float) -> list[Output]:
    out = p.websocket_closed(p.session.generation, 4015, now)
    due = p.session.timer(TimerKind.RECONNECT)
    assert due is not None
    out += p.timer_expired(TimerKind.RECONNECT, due)
    gen = p.session.generation
    out += p.websocket_opened(gen, due)
    out += p.websocket_frame(gen, server.frame(Hello(41250), numbered=False), due)
    return out + p.websocket_frame(gen, server.frame(Resumed()), due)


# --- what it sends, encoded --------------------------------------------------------------------


def test_identify_and_select_protocol_go_out_encoded() -> None:
    p = protocol()
    out = connect(p, Server())
    assert sent_ops(out) == [0, 1]  # Identify, Select Protocol: nothing else before audio
    identify = json.loads(next(o.text for o in out if isinstance(o, SendText)))
    assert identify["d"]["token"] == "t" and identify["d"]["server_id"] == str(GUILD)
    assert any(isinstance(o, Connected) for o in out)
    # Its repr never shows the token.
    assert all('"t"' not in repr(o) for o in out)


# --- speaking -------------------------------------------------------------------------------------


def test_audio_turns_speaking_on_and_only_then_may_it_be_sent() -> None:
    p = protocol()
    out = connect(p, Server())
    (changed,) = media_of(out)
    assert changed.media is not None and not changed.sending  # a key, but speaking is off
    out = p.audio_ready(1.0)
    assert sent_ops(out) == [5]
    speaking = json.loads(next(o.text for o in out if isinstance(o, SendText)))["d"]
    assert speaking == {"speaking": 1, "delay": 0, "ssrc": 42}
    assert media_of(out) == [MediaChanged(changed.media, True)]
    assert p.audio_ready(2.0) == []  # already speaking: nothing more


def test_speaking_asked_before_connecting_is_announced_once_connected() -> None:
    p = protocol()
    p.connect(CHANNEL, self_mute=False, self_deaf=False, now=0.0)
    assert p.audio_ready(0.0) == []  # nothing to send it on yet, but remembered
    out = p.gateway_dispatch(VOICE_STATE_UPDATE, state_d(), 0.0)
    out += p.gateway_dispatch(VOICE_SERVER_UPDATE, server_d(), 0.0)
    out += handshake(p, Server(), key=KEY, ssrc=42)
    assert sent_ops(out) == [0, 1, 5]
    assert media_of(out)[-1].sending


def test_a_resume_re_announces_speaking_before_audio_flows_again() -> None:
    p = protocol()
    server = Server()
    connect(p, server)
    p.audio_ready(1.0)
    out = p.websocket_closed(1, 4015, 2.0)
    assert media_of(out) == [MediaChanged(media_of(out)[0].media, False)]
    out = resume(p, server, 2.0)
    assert sent_ops(out) == [7, 5]  # Resume, then Speaking on the new websocket
    assert media_of(out)[-1].sending


def test_switching_speaking_off_is_announced_and_stops_sending() -> None:
    p = protocol()
    connect(p, Server())
    p.audio_ready(1.0)
    out = p.set_speaking(0, 2.0)
    assert sent_ops(out) == [5]
    assert media_of(out)[-1].sending is False


# --- SSRCs, DAVE's group, garbage --------------------------------------------------------------


def test_speaking_maps_an_ssrc_to_its_user_until_they_leave() -> None:
    p = protocol()
    server = Server()
    connect(p, server)
    p.websocket_frame(1, server.frame(ServerSpeaking(MEMBER, 77, 1)), 1.0)
    assert p.user_for_ssrc(77) == MEMBER
    p.websocket_frame(1, '{"op": 13, "d": {"user_id": "' + str(MEMBER) + '"}, "seq": 9}', 1.0)
    # Packets still in flight (and in the playout buffer) belong to them for a second more.
    assert p.user_for_ssrc(77) == MEMBER
    p.receive.tick(1.5)
    assert p.user_for_ssrc(77) == MEMBER
    p.receive.tick(2.0)
    assert p.user_for_ssrc(77) is None


def test_op_12_maps_an_ssrc_before_its_member_speaks() -> None:
    p = protocol()
    server = Server()
    connect(p, server)
    op_12 = {"user_id": str(MEMBER), "audio_ssrc": 78, "video_ssrc": 0, "streams": []}
    assert p.websocket_frame(1, json.dumps({"op": 12, "d": op_12, "seq": 9}), 1.0) == []
    assert p.user_for_ssrc(78) == MEMBER
    # A reconnecting member gets a new SSRC: the old one is forgotten at once.
    p.websocket_frame(1, server.frame(ServerSpeaking(MEMBER, 79, 1)), 1.0)
    assert p.user_for_ssrc(79) == MEMBER and p.user_for_ssrc(78) is None


def test_the_dave_group_is_the_channel_the_description_was_for(monkeypatch: Any) -> None:
    """A switch's dispatches arrive in either order: server first, then the new channel."""
    p = VoiceProtocol(
        GUILD, USER, max_dave_protocol_version=1, ledger=NonceLedger(), random=lambda: 0.0
    )
    server = Server()
    connect(p, server)
    p.update_voice_state(OTHER_CHANNEL, self_mute=False, self_deaf=False, now=1.0)
    p.gateway_dispatch(VOICE_SERVER_UPDATE, server_d("t2"), 1.0)  # the server update first
    client = p.dave
    assert client is not None and client.channel_id == CHANNEL  # the state has not come yet
    p.gateway_dispatch(VOICE_STATE_UPDATE, state_d(OTHER_CHANNEL), 1.0)
    handshake(p, Server(), key=KEY, ssrc=9)
    assert p.dave is client and client.channel_id == OTHER_CHANNEL


def test_garbage_is_counted_and_logged_sparingly() -> None:
    p = protocol()
    connect(p, Server())
    logged = []
    for _ in range(8):
        out = p.websocket_frame(1, '{"op": 2, "d": {"ssrc": "x"}, "seq": 1}', 1.0)
        logged += [o for o in out if isinstance(o, Log) and o.level == logging.WARNING]
    for _ in range(3):
        out = p.websocket_frame(1, '{"op": 99, "d": {}, "seq": 2}', 1.0)
        assert [o.level for o in out if isinstance(o, Log)] == [logging.DEBUG]
    stats = p.websocket_stats
    assert stats.malformed == 8 and stats.unknown_opcodes == 3
    assert len(logged) == 4  # the 1st, 2nd, 4th and 8th
    assert p.session.is_connected  # once connected, garbage is not worth the call


def test_a_malformed_dispatch_is_logged_and_a_lost_session_ends_the_call() -> None:
    p = protocol()
    connect(p, Server())
    out = p.gateway_dispatch(VOICE_STATE_UPDATE, {"guild_id": "x"}, 1.0)
    assert [o.level for o in out if isinstance(o, Log)] == [logging.WARNING]
    out = p.gateway_dispatch(GATEWAY_SESSION_LOST, {"reason": "op 9"}, 1.0)
    (inv,) = [o for o in out if isinstance(o, Invalidated)]
    assert inv.reason is InvalidationReason.GATEWAY_CLOSED
    assert not any(isinstance(o, SendVoiceStateUpdate) for o in out)
    assert media_of(out) == [MediaChanged(None, False)]


# --- nonces: a key's counter outlives resumes, re-sent descriptions and moves -----------------


def current_media(out: list[Output], media: Media | None) -> Media | None:
    for changed in media_of(out):
        media = changed.media
    return media


def test_a_description_re_sent_after_a_resume_continues_the_nonces() -> None:
    """The defect: a Session Description re-sent after a resume, with the same key, installed a
    fresh cipher counting from 0, and the first packets after the resume reused nonces."""
    p = protocol()
    server = Server()
    media = current_media(connect(p, server), None)
    assert media is not None
    for index in range(30):
        media.cipher.encrypt_opus(index, index, 42, OPUS)
    out = resume(p, server, 5.0)
    out += p.websocket_frame(2, server.frame(SessionDescription(AES256_GCM_RTPSIZE, KEY)), 5.0)
    again = current_media(out, media)
    assert again is not None and again.cipher is not media.cipher  # a new cipher object...
    assert again.cipher.next_nonce == 30  # ...counting on from the key's last nonce


_session_events = st.lists(
    st.tuples(
        st.sampled_from(["packets", "resume", "resend", "resend_new_key", "move", "old_key"]),
        st.integers(0, 30),
    ),
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(events=_session_events)
@example(events=[("resume", 0)] * 20)
def test_no_key_nonce_pair_repeats_across_resumes_resends_and_moves(
    events: list[tuple[str, int]],
) -> None:
    ledger = NonceLedger()
    p = protocol(ledger=ledger)
    server = Server()
    keys = [KEY]
    media = current_media(connect(p, server), None)
    assert media is not None
    key_of = {id(media.cipher): KEY}  # which key each cipher was built for
    used: set[tuple[bytes, int]] = set()
    now = 0.0
    for kind, count in events:
        now += 1.0
        out: list[Output] = []
        sent_key: bytes | None = None
        if kind == "packets" and media is not None:
            key = key_of[id(media.cipher)]
            for index in range(count):
                packet = media.cipher.encrypt_opus(index, index, 42, OPUS)
                pair = (key, int.from_bytes(packet[-4:], "big"))
                assert pair not in used
                used.add(pair)
        elif kind == "resume":
            # Media flowed since the last resume: progress, so a run of resumes never exhausts
            # the reconnect budget (which a session without progress rightly does after six;
            # that is test_session's subject, not this one's), and spaced so that no minute
            # holds more than ten attempts.
            p.media_received(p.session.udp_generation, now)
            now += 6.0
            out = resume(p, server, now)
        elif kind in ("resend", "resend_new_key", "old_key"):
            if kind == "resend_new_key":
                keys.append(bytes([len(keys)]) * 32)
            sent_key = keys[-1] if kind != "old_key" else keys[count % len(keys)]
            description = SessionDescription(AES256_GCM_RTPSIZE, sent_key)
            out = p.websocket_frame(p.session.generation, server.frame(description), now)
        elif kind == "move":
            keys.append(bytes([len(keys), 7]) * 16)
            sent_key = keys[-1]
            out = p.gateway_dispatch(VOICE_SERVER_UPDATE, server_d(f"t{len(keys)}"), now)
            server = Server()
            out += handshake(p, server, key=sent_key, ssrc=42)
        previous = media
        media = current_media(out, media)
        if media is not None and (previous is None or media.cipher is not previous.cipher):
            assert sent_key is not None
            key_of[id(media.cipher)] = sent_key
