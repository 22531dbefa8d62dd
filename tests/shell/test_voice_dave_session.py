"""What the sans-IO voice session hands the DAVE layer, and when it starts DAVE afresh.

No sockets: these pin the contract the shell's DAVE layer relies on (every DAVE message, in
order and acknowledged; a new voice session but not a resume resets it; a client that offered no
DAVE gets none of it) and the 4017 advice, in every case the connection tests cannot reach.
"""

from __future__ import annotations

from typing import Any

import pytest

from discore_voice._core.ip_discovery import DiscoveredAddress
from discore_voice._core.transport import AES256_GCM_RTPSIZE
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
    Action,
    Connected,
    DaveMessage,
    InstallCipher,
    Invalidated,
    InvalidationReason,
    MemberConnected,
    MemberDisconnected,
    NewDaveSession,
    OpenWebSocket,
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


def connected(dave: int, server: Server, version: int = 1) -> tuple[VoiceSession, list[Action]]:
    s = VoiceSession(GUILD, USER, max_dave_protocol_version=dave)
    s.connect(CHANNEL)
    s.voice_state_update(state())
    out = s.voice_server_update(server_update())
    cid = s.connection_id
    out += s.websocket_opened(cid)
    out += s.receive_text(cid, encode_server_text(Hello(41250), seq=None))
    out += s.receive_text(cid, server.text(Ready(7, "10.0.0.1", 5000, (AES256_GCM_RTPSIZE,))))
    out += s.ip_discovered(cid, DiscoveredAddress(7, "1.2.3.4", 6000))
    out += s.receive_text(cid, server.text(SessionDescription(AES256_GCM_RTPSIZE, KEY, version)))
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
    assert description.connection_id == s.connection_id


def test_every_dave_message_is_handed_over_and_binary_frames_are_acknowledged() -> None:
    server = Server()
    s, _ = connected(1, server)
    cid = s.connection_id
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
        assert s.receive_text(cid, server.text(message)) == [DaveMessage(cid, message)]
    joined = ClientsConnect((MEMBER,))
    assert s.receive_text(cid, server.text(joined)) == [
        DaveMessage(cid, joined),
        MemberConnected(MEMBER),
    ]
    left = ClientDisconnect(MEMBER)
    assert s.receive_text(cid, server.text(left)) == [
        DaveMessage(cid, left),
        MemberDisconnected(MEMBER),
    ]


def test_a_resume_keeps_dave_and_a_move_or_switch_resets_it() -> None:
    server = Server()
    s, _ = connected(1, server)
    out = s.websocket_closed(s.connection_id, 4015)
    assert not any(isinstance(a, NewDaveSession) for a in out)
    assert s.websocket_opened(s.connection_id)  # Resume goes out
    s.voice_state_update(state(OTHER_CHANNEL))
    out = s.voice_server_update(server_update("other.example:443"))
    assert NewDaveSession(OTHER_CHANNEL) in out


def test_a_client_that_offered_no_dave_gets_no_dave_actions() -> None:
    server = Server()
    s, out = connected(0, server, version=0)
    assert not any(isinstance(a, DaveMessage | NewDaveSession) for a in out)
    cid = s.connection_id
    external = ServerBinaryMessage(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, b"sender")
    assert s.receive_binary(cid, server.binary(external)) == []
    assert s.seq_ack == server.seq  # still acknowledged
    assert s.receive_text(cid, server.text(ClientsConnect((MEMBER,)))) == [MemberConnected(MEMBER)]


@pytest.mark.parametrize(
    ("offered", "advice"),
    [(0, "pip install 'davey>=0.1.7,<0.2'"), (1, "offered DAVE up to version 1")],
)
def test_4017_says_what_to_do(offered: int, advice: str) -> None:
    s = VoiceSession(GUILD, USER, max_dave_protocol_version=offered)
    s.connect(CHANNEL)
    s.voice_state_update(state())
    s.voice_server_update(server_update())
    s.websocket_opened(s.connection_id)
    out = s.websocket_closed(s.connection_id, 4017)
    invalidated = [a for a in out if isinstance(a, Invalidated)]
    assert len(invalidated) == 1
    assert invalidated[0].reason is InvalidationReason.DAVE_REQUIRED
    assert advice in invalidated[0].detail
    assert not any(isinstance(a, OpenWebSocket) for a in out)  # never loops
