"""What the voice session hands the DAVE layer, and when it starts DAVE afresh.

These pin the contract the voice core's DAVE handling relies on (every DAVE message, in order
and acknowledged; a new voice session but not a resume resets it; a client that offered no DAVE
gets none of it) and the 4017 advice, in every case the connection tests cannot reach.
"""

from __future__ import annotations

from typing import Any

import pytest

from discore_voice._core.ip_discovery import DiscoveredAddress
from discore_voice._core.transport import AES256_GCM_RTPSIZE
from discore_voice._core.voice.commands import OpenWebSocket, TimerKind
from discore_voice._core.voice.events import (
    Connected,
    Invalidated,
    InvalidationReason,
    MemberConnected,
    MemberDisconnected,
)
from discore_voice._core.voice.frames import (
    ServerBinaryMessage,
    encode_server_binary,
    encode_server_text,
)
from discore_voice._core.voice.opcodes import VoiceOpcode
from discore_voice._core.voice.payloads import (
    ClientDisconnect,
    ClientsConnect,
    DaveExecuteTransition,
    DavePrepareEpoch,
    DavePrepareTransition,
    Hello,
    Ready,
    ServerMessage,
    SessionDescription,
)
from discore_voice._core.voice.session import (
    DaveMessage,
    InstallCipher,
    NewDaveSession,
    SessionOutput,
    VoiceSession,
)

GUILD = 111_000_000_000_000_001
USER = 222_000_000_000_000_002
CHANNEL = 333_000_000_000_000_003
OTHER_CHANNEL = 333_000_000_000_000_004
MEMBER = 444_000_000_000_000_005
KEY = bytes(range(32))


class Server:
    def __init__(self) -> None:
        self.seq = 0

    def text(self, message: ServerMessage) -> str:
        self.seq += 1
        return encode_server_text(message, seq=self.seq)

    def binary(self, message: ServerBinaryMessage) -> bytes:
        self.seq += 1
        return encode_server_binary(message, seq=self.seq)


def state(channel: int = CHANNEL) -> Any:
    return {
        "guild_id": str(GUILD),
        "channel_id": str(channel),
        "user_id": str(USER),
        "session_id": "secret-session",
        "self_mute": False,
        "self_deaf": False,
    }


def server_update(endpoint: str = "voice.example:443") -> Any:
    return {"guild_id": str(GUILD), "endpoint": endpoint, "token": "secret-token"}


def connected(
    dave: int, server: Server, version: int = 1
) -> tuple[VoiceSession, list[SessionOutput]]:
    s = VoiceSession(GUILD, USER, max_dave_protocol_version=dave)
    s.connect(CHANNEL)
    s.voice_state_update(state(), 0.0)
    out = s.voice_server_update(server_update(), 0.0)
    gen = s.generation
    out += s.websocket_opened(gen, 0.0)
    out += s.receive_text(gen, encode_server_text(Hello(41250), seq=None), 0.0)
    ready = Ready(7, "10.0.0.1", 5000, (AES256_GCM_RTPSIZE,))
    out += s.receive_text(gen, server.text(ready), 0.0)
    out += s.ip_discovered(s.udp_generation, DiscoveredAddress(7, "1.2.3.4", 6000), 0.0)
    description = SessionDescription(AES256_GCM_RTPSIZE, KEY, version)
    out += s.receive_text(gen, server.text(description), 0.0)
    assert s.is_connected
    return s, out


def test_a_new_session_starts_dave_and_description_follows_connected() -> None:
    server = Server()
    s, out = connected(1, server)
    assert out[0] == NewDaveSession(CHANNEL)
    assert isinstance(out[1], OpenWebSocket)
    kinds = [type(a) for a in out if isinstance(a, InstallCipher | Connected | DaveMessage)]
    assert kinds == [InstallCipher, Connected, DaveMessage]
    description = out[-1]
    assert isinstance(description, DaveMessage)
    assert description.message == SessionDescription(AES256_GCM_RTPSIZE, KEY, 1)
    assert description.generation == s.generation


def test_every_dave_message_is_handed_over_and_binary_frames_are_acknowledged() -> None:
    server = Server()
    s, _ = connected(1, server)
    cid = s.generation
    external = ServerBinaryMessage(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, b"sender")
    commit = ServerBinaryMessage(VoiceOpcode.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION, b"commit", 3)
    assert s.receive_binary(cid, server.binary(external)) == [DaveMessage(cid, external)]
    assert s.seq_ack == server.seq
    assert s.receive_binary(cid, server.binary(commit)) == [DaveMessage(cid, commit)]
    assert s.seq_ack == server.seq
    for message in (
        DavePrepareTransition(transition_id=4, protocol_version=0),
        DaveExecuteTransition(transition_id=4),
        DavePrepareEpoch(transition_id=5, epoch=1, protocol_version=1),
    ):
        assert s.receive_text(cid, server.text(message), 0.0) == [DaveMessage(cid, message)]
    joined = ClientsConnect((MEMBER,))
    assert s.receive_text(cid, server.text(joined), 0.0) == [
        DaveMessage(cid, joined),
        MemberConnected(MEMBER),
    ]
    left = ClientDisconnect(MEMBER)
    assert s.receive_text(cid, server.text(left), 0.0) == [
        DaveMessage(cid, left),
        MemberDisconnected(MEMBER),
    ]


def test_a_resume_keeps_dave_and_a_move_or_switch_resets_it() -> None:
    server = Server()
    s, _ = connected(1, server)
    out = s.websocket_closed(s.generation, 4015, 0.0)
    assert not any(isinstance(a, NewDaveSession) for a in out)
    out = s.timer_expired(TimerKind.RECONNECT, 1.0)
    assert not any(isinstance(a, NewDaveSession) for a in out)
    assert s.websocket_opened(s.generation, 1.0)  # Resume goes out
    s.voice_state_update(state(OTHER_CHANNEL), 1.0)
    out = s.voice_server_update(server_update("other.example:443"), 1.0)
    assert NewDaveSession(OTHER_CHANNEL) in out


def test_a_client_that_offered_no_dave_gets_no_dave_actions() -> None:
    server = Server()
    s, out = connected(0, server, version=0)
    assert not any(isinstance(a, DaveMessage | NewDaveSession) for a in out)
    cid = s.generation
    external = ServerBinaryMessage(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, b"sender")
    assert s.receive_binary(cid, server.binary(external)) == []
    assert s.seq_ack == server.seq  # still acknowledged
    members = ClientsConnect((MEMBER,))
    assert s.receive_text(cid, server.text(members), 0.0) == [MemberConnected(MEMBER)]


@pytest.mark.parametrize(
    ("offered", "advice"),
    [(0, "pip install 'davey>=0.1.7,<0.2'"), (1, "offered DAVE up to version 1")],
)
def test_4017_says_what_to_do(offered: int, advice: str) -> None:
    s = VoiceSession(GUILD, USER, max_dave_protocol_version=offered)
    s.connect(CHANNEL)
    s.voice_state_update(state(), 0.0)
    s.voice_server_update(server_update(), 0.0)
    s.websocket_opened(s.generation, 0.0)
    out = s.websocket_closed(s.generation, 4017, 0.0)
    invalidated = [a for a in out if isinstance(a, Invalidated)]
    assert len(invalidated) == 1
    assert invalidated[0].reason is InvalidationReason.DAVE_REQUIRED
    assert advice in invalidated[0].detail
    assert not any(isinstance(a, OpenWebSocket) for a in out)  # never loops
