"""The DAVE client state machine and its davey adapter, against our own external sender.

A small in-process "call" routes every message through the real wire codecs: the simulator's
:class:`DaveServer` (MLS external sender on ``cryptography``) on one side, one
:class:`DaveClient` (davey, through the adapter) per member on the other. No sockets, no trio.
"""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice import ProtocolError
from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice._core.voice import dave as dave_module
from discore_voice._core.voice.dave import (
    DAVE_FRAME_MAGIC,
    DaveChange,
    DaveClient,
    DaveError,
    DaveOutput,
    DaveRecovering,
    DaveStateChanged,
    dave_available,
    max_supported_dave_version,
)
from discore_voice._core.voice.frames import (
    ClientBinaryMessage,
    ServerBinaryMessage,
    decode_client_binary,
    decode_client_text,
    decode_server_binary,
    decode_server_text,
    encode_client_binary,
    encode_client_text,
    encode_server_binary,
    encode_server_text,
)
from discore_voice._core.voice.opcodes import VoiceOpcode
from discore_voice._core.voice.payloads import (
    DaveExecuteTransition,
    DaveMlsInvalidCommitWelcome,
    DavePrepareEpoch,
    DavePrepareTransition,
    DaveTransitionReady,
)
from discore_voice.testing._dave.mls_codec import opaque_vector
from discore_voice.testing._dave.mls_messages import (
    build_add_proposal,
    group_id_for_channel,
)
from discore_voice.testing._dave.server import DaveDelivery, DaveServer, RejectedCommit

CHANNEL = 1_090_123_456_789_012_345
BOT, ALICE, BOB, CAROL = 1001, 2002, 3003, 4004
OPUS = bytes(range(7, 90))


@dataclass
class Call:
    """Routes messages between one DaveServer and its clients, in order, through the codecs."""

    server: DaveServer = field(default_factory=lambda: DaveServer(CHANNEL))
    clients: dict[int, DaveClient] = field(default_factory=dict)
    outputs: dict[int, list[DaveOutput]] = field(default_factory=dict)
    rejected: list[RejectedCommit] = field(default_factory=list)
    #: (user id, message) -> replacement message, or None to drop it: fault injection.
    tamper: dict[tuple[int, VoiceOpcode], bytes | None] = field(default_factory=dict)
    _queue: deque[tuple[str, int, object]] = field(default_factory=deque)
    _seq: int = 0

    def join(self, *user_ids: int) -> None:
        for user_id in user_ids:
            client = DaveClient(user_id, CHANNEL)
            others = list(self.clients)
            self.clients[user_id] = client
            self.outputs[user_id] = []
            # The gateway's Clients Connect, both ways, before any DAVE traffic.
            client.clients_connected(others)
            for other in others:
                self.clients[other].clients_connected([user_id])
            self._from_client(user_id, client.start(self.server.protocol_version))
            self._queue.extend(("server", user_id, d) for d in self.server.connect(user_id))
        self.run()

    def leave(self, user_id: int) -> DaveClient:
        client = self.clients.pop(user_id)
        for other in self.clients.values():
            other.client_disconnected(user_id)
        self._deliver(self.server.disconnect(user_id))
        return client

    def _deliver(self, deliveries: list[DaveDelivery]) -> None:
        self._queue.extend(("server", 0, d) for d in deliveries)
        self.run()

    def run(self) -> None:
        while self._queue:
            direction, user_id, item = self._queue.popleft()
            if direction == "server":
                assert isinstance(item, DaveDelivery)
                for target in item.to:
                    if target in self.clients:
                        self._to_client(target, item.message)
            else:
                self._to_server(user_id, item)

    def _to_client(self, user_id: int, message: object) -> None:
        self._seq += 1
        if isinstance(message, ServerBinaryMessage):
            key = (user_id, message.op)
            if key in self.tamper:
                replacement = self.tamper.pop(key)
                if replacement is None:
                    return
                message = ServerBinaryMessage(message.op, replacement, message.transition_id)
            _, binary = decode_server_binary(encode_server_binary(message, seq=self._seq))
            self._from_client(user_id, self.clients[user_id].handle(binary))
        else:
            assert isinstance(
                message, DavePrepareTransition | DaveExecuteTransition | DavePrepareEpoch
            )
            _, decoded = decode_server_text(encode_server_text(message, seq=self._seq))
            self._from_client(user_id, self.clients[user_id].handle(decoded))

    def _from_client(self, user_id: int, outputs: list[DaveOutput]) -> None:
        self.outputs[user_id].extend(outputs)
        self._queue.extend(("client", user_id, out) for out in outputs)

    def _to_server(self, user_id: int, out: object) -> None:
        server = self.server
        if isinstance(out, ClientBinaryMessage):
            message = decode_client_binary(encode_client_binary(out))
            try:
                if message.op is VoiceOpcode.DAVE_MLS_KEY_PACKAGE:
                    deliveries = server.key_package(user_id, message.payload)
                else:
                    deliveries = server.commit_welcome(user_id, message.payload)
            except RejectedCommit as exc:
                self.rejected.append(exc)
                return
        elif isinstance(out, DaveTransitionReady | DaveMlsInvalidCommitWelcome):
            parsed = decode_client_text(encode_client_text(out))
            if isinstance(parsed, DaveTransitionReady):
                deliveries = server.transition_ready(user_id, parsed.transition_id)
            else:
                assert isinstance(parsed, DaveMlsInvalidCommitWelcome)
                deliveries = server.invalid_commit_welcome(user_id, parsed.transition_id)
        else:
            return  # an event for the user, not a message
        self._queue.extend(("server", user_id, d) for d in deliveries)

    # --- checks ---------------------------------------------------------------------------------

    def assert_converged(self) -> None:
        clients = list(self.clients.values())
        epochs = {c.epoch for c in clients}
        codes = {c.voice_privacy_code for c in clients}
        assert len(epochs) == 1 and epochs != {None}, epochs
        assert epochs == {self.server.epoch}
        assert len(codes) == 1 and None not in codes, codes
        assert all(c.can_encrypt for c in clients)
        assert {c.group_user_ids for c in clients} == {frozenset(self.clients)}

    def assert_all_decrypt(self) -> None:
        for sender_id, sender in self.clients.items():
            frame = sender.encrypt_opus(OPUS + sender_id.to_bytes(8, "big"))
            assert frame.endswith(DAVE_FRAME_MAGIC) and OPUS not in frame
            for receiver_id, receiver in self.clients.items():
                if receiver_id != sender_id:
                    assert receiver.decrypt_opus(sender_id, frame) == OPUS + sender_id.to_bytes(
                        8, "big"
                    )


def events(outputs: list[DaveOutput]) -> Iterator[DaveStateChanged]:
    return (o for o in outputs if isinstance(o, DaveStateChanged))


# --- availability -------------------------------------------------------------------------------


def test_davey_version_is_advertised() -> None:
    assert dave_available()
    assert max_supported_dave_version() == 1


@pytest.fixture
def davey_missing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    dave_module._davey_version.cache_clear()
    # A None entry makes ``import davey`` raise ImportError, as if the wheel were absent.
    monkeypatch.setitem(sys.modules, "davey", None)
    yield
    dave_module._davey_version.cache_clear()


@pytest.mark.usefixtures("davey_missing")
def test_missing_davey_means_version_zero_and_passthrough() -> None:
    assert max_supported_dave_version() == 0
    assert not dave_available()
    client = DaveClient(BOT, CHANNEL)
    with pytest.raises(ProtocolError, match="DAVE version 1"):
        client.start(1)
    assert [type(o) for o in client.start(0)] == [DaveStateChanged]
    assert client.encrypt_opus(OPUS) == OPUS
    assert client.decrypt_opus(ALICE, OPUS) == OPUS
    # A server that sends DAVE ops anyway gets them ignored, not a crash.
    server = DaveServer(CHANNEL)
    op25 = ServerBinaryMessage(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, server.external_sender_package)
    assert client.handle(op25) == []
    with pytest.raises(ProtocolError):
        client.prepare_epoch(1, 1)


def test_import_of_the_package_does_not_need_davey() -> None:
    # A fresh interpreter: reloading the module here would split its classes in two.
    code = (
        "import sys; sys.modules['davey'] = None; import discore_voice; "
        "from discore_voice._core.voice.dave import max_supported_dave_version as v; print(v())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "0"


# --- groups ---------------------------------------------------------------------------------------


def test_two_members_form_a_group_and_decrypt_each_other() -> None:
    call = Call()
    call.join(BOT)
    bot = call.clients[BOT]
    assert bot.protocol_version == 1 and not bot.can_encrypt and bot.epoch == 0
    # Alone: frames go out transport-only, as a member alone in a call never becomes ready.
    assert bot.encrypt_opus(OPUS) == OPUS
    call.join(ALICE)
    call.assert_converged()
    assert call.server.epoch == 1
    call.assert_all_decrypt()
    assert bot.verification_code(ALICE) == call.clients[ALICE].verification_code(BOT)
    assert len(bot.pairwise_fingerprint(ALICE)) == 64
    assert bot.epoch_authenticator()
    joined = list(events(call.outputs[ALICE]))[-1]
    assert joined.cause is DaveChange.TRANSITION_EXECUTED and joined.can_encrypt


def test_three_members_at_once_compete_and_converge() -> None:
    call = Call()
    call.join(BOT, ALICE, BOB)
    call.assert_converged()
    call.assert_all_decrypt()
    assert call.server.members.keys() == {BOT, ALICE, BOB}
    assert not call.server.pending_transitions


def test_a_member_joins_later_and_decrypts() -> None:
    call = Call()
    call.join(BOT, ALICE)
    before = call.clients[BOT].voice_privacy_code
    call.join(BOB)
    call.assert_converged()
    assert call.server.epoch == 2
    assert call.clients[BOT].voice_privacy_code != before
    # Both old members committed; the server broadcast one, and the other lost the race.
    assert call.rejected and all(r.stale for r in call.rejected)
    call.assert_all_decrypt()
    call.join(CAROL)
    call.assert_converged()
    call.assert_all_decrypt()


def test_two_members_join_an_established_group_at_once() -> None:
    call = Call()
    call.join(BOT, ALICE)
    call.join(BOB, CAROL)
    call.assert_converged()
    call.assert_all_decrypt()
    assert call.server.members.keys() == {BOT, ALICE, BOB, CAROL}
    # Commits made before the second Add arrived cite too little and are refused outright.
    assert any(not r.stale for r in call.rejected)


def test_a_pending_member_that_rekeys_still_gets_the_group_made() -> None:
    call = Call()
    call.join(BOT)
    # Alice's first key package is lost, so her first Add is never committed; she re-keys.
    call.tamper[(BOT, VoiceOpcode.DAVE_MLS_PROPOSALS)] = None
    call.tamper[(ALICE, VoiceOpcode.DAVE_MLS_PROPOSALS)] = None
    call.join(ALICE)
    assert not call.tamper and call.server.epoch == 0
    alice = call.clients[ALICE]
    call._from_client(ALICE, alice.prepare_epoch(1, 1))
    call.run()
    call.assert_converged()
    call.assert_all_decrypt()


def test_a_removed_member_cannot_decrypt_new_frames() -> None:
    call = Call()
    call.join(BOT, ALICE, BOB)
    gone = call.leave(BOB)
    call.assert_converged()
    assert call.server.epoch == 2
    frame = call.clients[BOT].encrypt_opus(OPUS)
    assert call.clients[ALICE].decrypt_opus(BOT, frame) == OPUS
    assert gone.decrypt_opus(BOT, frame) is None
    assert gone.decrypt_failures == 1


def test_sole_member_resets_and_regroups() -> None:
    call = Call()
    call.join(BOT, ALICE)
    call.leave(ALICE)
    bot = call.clients[BOT]
    assert not bot.can_encrypt and bot.epoch == 0
    causes = [e.cause for e in events(call.outputs[BOT])]
    assert causes[-2:] == [DaveChange.REINITIALISED, DaveChange.TRANSITION_EXECUTED]
    assert bot.encrypt_opus(OPUS) == OPUS
    call.join(BOB)
    call.assert_converged()
    call.assert_all_decrypt()


def test_silence_passes_through_encrypted_or_not() -> None:
    call = Call()
    call.join(BOT, ALICE)
    bot = call.clients[BOT]
    assert bot.can_encrypt
    assert bot.encrypt_opus(OPUS_SILENCE_FRAME) == OPUS_SILENCE_FRAME
    assert call.clients[ALICE].decrypt_opus(BOT, OPUS_SILENCE_FRAME) == OPUS_SILENCE_FRAME


def test_plaintext_is_refused_once_the_group_is_ready() -> None:
    call = Call()
    call.join(BOT, ALICE)
    assert call.clients[ALICE].decrypt_opus(BOT, OPUS) is None
    assert call.clients[ALICE].decrypt_opus(BOT, OPUS + DAVE_FRAME_MAGIC) is None


def test_ciphertext_is_never_handed_on_as_plaintext() -> None:
    call = Call()
    call.join(BOT, ALICE)
    frame = call.clients[BOT].encrypt_opus(OPUS)
    # A member still waiting for its welcome cannot decrypt, but must not pass it through.
    late = DaveClient(BOB, CHANNEL)
    late.start(1)
    late.handle(
        ServerBinaryMessage(
            VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, call.server.external_sender_package
        )
    )
    assert not late.can_encrypt
    assert late.decrypt_opus(ALICE, OPUS) == OPUS  # plaintext from a member not ready either
    assert late.decrypt_opus(BOT, frame) is None
    assert late.decrypt_failures == 1
    # A tampered frame fails authentication.
    tampered = bytes([frame[0] ^ 1]) + frame[1:]
    assert call.clients[ALICE].decrypt_opus(BOT, tampered) is None


# --- transitions ---------------------------------------------------------------------------------


def test_downgrade_to_zero_and_back_up() -> None:
    call = Call()
    call.join(BOT, ALICE)
    bot, alice = call.clients[BOT], call.clients[ALICE]
    in_flight = bot.encrypt_opus(OPUS)
    call._deliver(call.server.downgrade())
    assert bot.protocol_version == 0 and alice.protocol_version == 0
    assert DaveChange.DOWNGRADED in [e.cause for e in events(call.outputs[BOT])]
    assert not bot.can_encrypt
    assert bot.encrypt_opus(OPUS) == OPUS
    assert alice.decrypt_opus(BOT, OPUS) == OPUS
    # A DAVE frame still in flight from before the downgrade still decrypts.
    assert alice.decrypt_opus(BOT, in_flight) == OPUS
    call._deliver(call.server.upgrade())
    assert bot.protocol_version == 1 and alice.protocol_version == 1
    assert DaveChange.UPGRADED in [e.cause for e in events(call.outputs[BOT])]
    call.assert_converged()
    call.assert_all_decrypt()
    # Plaintext from a member that switched a little later is still accepted for a while.
    assert alice.decrypt_opus(BOT, OPUS) == OPUS


def test_a_call_that_starts_transport_only_upgrades() -> None:
    call = Call(server=DaveServer(CHANNEL, protocol_version=0))
    call.join(BOT, ALICE)
    bot = call.clients[BOT]
    assert bot.protocol_version == 0 and bot.epoch is None
    assert bot.encrypt_opus(OPUS) == OPUS
    assert call.clients[ALICE].decrypt_opus(BOT, OPUS) == OPUS
    call._deliver(call.server.upgrade())
    call.assert_converged()
    call.assert_all_decrypt()
    assert bot.protocol_version == 1


def test_unsupported_versions_are_protocol_errors() -> None:
    client = DaveClient(BOT, CHANNEL)
    with pytest.raises(ProtocolError):
        client.start(2)
    client.start(1)
    with pytest.raises(ProtocolError):
        client.handle(DavePrepareTransition(transition_id=3, protocol_version=2))
    with pytest.raises(ProtocolError):
        client.handle(DavePrepareEpoch(epoch=1, protocol_version=2))


def test_prepare_transition_zero_executes_at_once() -> None:
    client = DaveClient(BOT, CHANNEL)
    client.start(1)
    out = client.handle(DavePrepareTransition(transition_id=0, protocol_version=1))
    assert not any(isinstance(o, DaveTransitionReady) for o in out)
    assert [e.cause for e in events(out)] == [DaveChange.TRANSITION_EXECUTED]


def test_execute_of_an_unknown_transition_is_ignored() -> None:
    client = DaveClient(BOT, CHANNEL)
    client.start(1)
    assert client.handle(DaveExecuteTransition(transition_id=77)) == []


def test_reset_starts_a_new_session_afresh() -> None:
    call = Call()
    call.join(BOT, ALICE)
    bot = call.clients[BOT]
    [event] = bot.reset()
    assert isinstance(event, DaveStateChanged) and event.cause is DaveChange.RESET
    assert bot.protocol_version == 0 and bot.epoch is None and not bot.can_encrypt
    with pytest.raises(DaveError):
        bot.verification_code(ALICE)


def test_resume_keeps_state_and_ignores_a_redelivered_external_sender() -> None:
    call = Call()
    call.join(BOT, ALICE)
    bot = call.clients[BOT]
    epoch = bot.epoch
    op25 = ServerBinaryMessage(
        VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, call.server.external_sender_package
    )
    assert bot.handle(op25) == []
    assert bot.epoch == epoch and bot.can_encrypt


# --- recovery ------------------------------------------------------------------------------------


def _recovery(out: list[DaveOutput]) -> list[type]:
    return [type(o) for o in out if not isinstance(o, DaveStateChanged)]


def _proposals_for(client: DaveClient, *, key: ec.EllipticCurvePrivateKey, epoch: int) -> bytes:
    other = DaveClient(CAROL, CHANNEL)
    other.start(1)
    server = DaveServer(CHANNEL)
    [kp] = other.handle(
        ServerBinaryMessage(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, server.external_sender_package)
    )
    assert isinstance(kp, ClientBinaryMessage)
    proposal = build_add_proposal(key, group_id_for_channel(CHANNEL), epoch, kp.payload)
    return b"\x00" + opaque_vector(proposal.message)


def _pending_client(server: DaveServer) -> DaveClient:
    client = DaveClient(BOT, CHANNEL)
    client.start(1)
    client.clients_connected([CAROL])
    client.handle(
        ServerBinaryMessage(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, server.external_sender_package)
    )
    return client


@pytest.mark.parametrize("case", ["wrong key", "wrong epoch", "unexpected user"])
def test_refused_proposals_lead_to_op31_reinit_and_a_new_key_package(case: str) -> None:
    server = DaveServer(CHANNEL)
    client = _pending_client(server)
    key = server._key
    epoch = 0
    if case == "wrong key":
        key = ec.generate_private_key(ec.SECP256R1())
    elif case == "wrong epoch":
        epoch = 5
    else:
        client.client_disconnected(CAROL)
    out = client.handle(
        ServerBinaryMessage(
            VoiceOpcode.DAVE_MLS_PROPOSALS, _proposals_for(client, key=key, epoch=epoch)
        )
    )
    assert _recovery(out) == [DaveRecovering, DaveMlsInvalidCommitWelcome, ClientBinaryMessage]
    recovering = out[0]
    assert isinstance(recovering, DaveRecovering) and "davey failed" in recovering.reason
    assert isinstance(out[2], ClientBinaryMessage)
    assert out[2].op is VoiceOpcode.DAVE_MLS_KEY_PACKAGE
    # The right proposals still work after the recovery.
    client.clients_connected([CAROL])
    good = _proposals_for(client, key=server._key, epoch=0)
    [commit] = client.handle(ServerBinaryMessage(VoiceOpcode.DAVE_MLS_PROPOSALS, good))
    assert isinstance(commit, ClientBinaryMessage)
    assert commit.op is VoiceOpcode.DAVE_MLS_COMMIT_WELCOME


def test_corrupted_commit_leads_to_op31_and_a_successful_rejoin() -> None:
    call = Call()
    call.join(BOT, ALICE)
    call.tamper[(ALICE, VoiceOpcode.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION)] = b"\x00\x01garbage"
    call.join(BOB)
    alice_out = call.outputs[ALICE]
    assert any(isinstance(o, DaveMlsInvalidCommitWelcome) for o in alice_out)
    call.assert_converged()
    call.assert_all_decrypt()


def test_corrupted_welcome_leads_to_op31_and_a_successful_rejoin() -> None:
    call = Call()
    call.join(BOT)
    # The newcomer's commit arrives first, so the member already there is the one welcomed.
    call.tamper[(BOT, VoiceOpcode.DAVE_MLS_WELCOME)] = b"\x00\x02\x00\x00"
    call.join(ALICE)
    assert not call.tamper
    assert any(isinstance(o, DaveRecovering) for o in call.outputs[BOT])
    call.assert_converged()
    call.assert_all_decrypt()


def test_davey_errors_become_dave_errors_with_davey_message() -> None:
    call = Call()
    call.join(BOT, ALICE)
    with pytest.raises(DaveError, match="UserNotInGroup") as caught:
        call.clients[BOT].verification_code(CAROL)
    assert isinstance(caught.value.__cause__, ValueError)
    assert str(caught.value.__cause__) in str(caught.value)


def test_a_davey_panic_becomes_a_dave_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class PanicException(BaseException):  # what pyo3 raises for a Rust panic
        pass

    call = Call()
    call.join(BOT, ALICE)
    session = call.clients[BOT]._session
    assert session is not None

    class Panicking:
        ready = True

        def encrypt_opus(self, frame: bytes) -> bytes:
            raise PanicException("index out of bounds")

    monkeypatch.setattr(session, "_session", Panicking())
    with pytest.raises(DaveError, match="panicked"):
        call.clients[BOT].encrypt_opus(OPUS)


# --- robustness ---------------------------------------------------------------------------------

_BINARY_OPS = [
    VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER,
    VoiceOpcode.DAVE_MLS_PROPOSALS,
    VoiceOpcode.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION,
    VoiceOpcode.DAVE_MLS_WELCOME,
]


@pytest.fixture(scope="module")
def grouped_call() -> Call:
    call = Call()
    call.join(BOT, ALICE)
    return call


_server_messages = st.one_of(
    st.builds(
        lambda op, payload, tid: ServerBinaryMessage(
            op, payload, tid if op in _BINARY_OPS[2:] else None
        ),
        st.sampled_from(_BINARY_OPS),
        st.binary(max_size=300),
        st.integers(0, 0xFFFF),
    ),
    st.builds(
        DavePrepareTransition,
        transition_id=st.integers(0, 0xFFFF),
        protocol_version=st.integers(0, 3),
    ),
    st.builds(DaveExecuteTransition, transition_id=st.integers(0, 0xFFFF)),
    st.builds(
        DavePrepareEpoch,
        epoch=st.integers(0, 5),
        protocol_version=st.integers(0, 3),
        transition_id=st.none() | st.integers(0, 0xFFFF),
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(_server_messages, max_size=6),
    state=st.sampled_from(["version 0", "fresh", "pending", "grouped"]),
)
def test_fuzzed_dave_messages_never_crash_the_client(
    messages: list[ServerBinaryMessage], state: str
) -> None:
    if state == "grouped":
        call = Call()
        call.join(BOT, ALICE)
        client = call.clients[BOT]
    else:
        client = DaveClient(BOT, CHANNEL)
        client.clients_connected([ALICE])
        client.start(0 if state == "version 0" else 1)
    if state == "pending":
        client.handle(
            ServerBinaryMessage(
                VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, DaveServer(CHANNEL).external_sender_package
            )
        )
    for message in messages:
        try:
            out = client.handle(message)
        except (ProtocolError, DaveError):
            continue
        assert all(isinstance(o, DaveOutput) for o in out)
    client.encrypt_opus(OPUS)
    client.decrypt_opus(ALICE, OPUS + DAVE_FRAME_MAGIC)


@settings(max_examples=100, deadline=None)
@given(frame=st.binary(max_size=200), user_id=st.integers(1, (1 << 64) - 1))
def test_fuzzed_frames_never_crash_decrypt(grouped_call: Call, frame: bytes, user_id: int) -> None:
    result = grouped_call.clients[ALICE].decrypt_opus(user_id, frame + DAVE_FRAME_MAGIC)
    assert result is None or isinstance(result, bytes)
