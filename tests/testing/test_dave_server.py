"""The simulator's DAVE server side: the TLS codec, the MLS messages, and the delivery service.

Members are real davey sessions behind our client adapter; the server side is our own code on
``cryptography``. Every parser is fuzzed: malformed input must raise ProtocolError and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice import ProtocolError, UsageError
from discore_voice._core.voice.dave import DaveClient
from discore_voice._core.voice.frames import ClientBinaryMessage, ServerBinaryMessage
from discore_voice._core.voice.opcodes import VoiceOpcode
from discore_voice._core.voice.payloads import (
    DaveExecuteTransition,
    DavePrepareEpoch,
    DavePrepareTransition,
)
from discore_voice.testing._dave.mls_codec import (
    MAX_VARINT,
    TlsReader,
    TlsWriter,
    encode_varint,
    opaque_vector,
)
from discore_voice.testing._dave.mls_messages import (
    build_add_proposal,
    group_id_for_channel,
    parse_commit_welcome,
    parse_key_package,
    parse_welcome,
    public_key_bytes,
)
from discore_voice.testing._dave.server import (
    DaveDelivery,
    DaveServer,
    RejectedCommit,
    proposals_payload,
)

CHANNEL = 987_654_321_987_654_321
A, B, C = 11, 22, 33

# --- TLS codec -----------------------------------------------------------------------------------


@given(st.integers(0, MAX_VARINT))
def test_varint_round_trips_in_its_shortest_form(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) == (1 if value < 64 else 2 if value < 16384 else 4)
    reader = TlsReader(encoded, "varint")
    assert reader.varint() == value
    assert reader.at_end()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x40\x05", "minimally"),
        (b"\x80\x00\x00\x05", "minimally"),
        (b"\xc0\x00\x00\x00\x00\x00\x00\x01", "prefix"),
        (b"\x41", "truncated"),
        (b"", "truncated"),
    ],
)
def test_bad_varints_are_protocol_errors(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        TlsReader(data, "varint").varint()


def test_writer_refuses_what_does_not_fit() -> None:
    with pytest.raises(UsageError):
        encode_varint(MAX_VARINT + 1)
    with pytest.raises(UsageError):
        TlsWriter().u8(256)
    with pytest.raises(UsageError):
        TlsReader("text", "x")  # type: ignore[arg-type]


def test_vectors_and_integers_round_trip() -> None:
    data = bytes(TlsWriter().u8(1).u16(2).u32(3).u64(4).vector(b"abc").raw(b"\x01"))
    reader = TlsReader(data, "struct")
    assert (reader.u8(), reader.u16(), reader.u32(), reader.u64()) == (1, 2, 3, 4)
    assert reader.vector() == b"abc"
    assert reader.optional() is True
    reader.expect_end()
    with pytest.raises(ProtocolError, match="trailing"):
        TlsReader(b"\x00", "x").expect_end()
    with pytest.raises(ProtocolError, match="optional"):
        TlsReader(b"\x02", "x").optional()


@given(
    st.binary(max_size=64),
    st.lists(
        st.sampled_from(["u8", "u16", "u32", "u64", "varint", "vector", "optional"]), max_size=8
    ),
)
def test_reader_raises_only_protocol_errors(data: bytes, reads: list[str]) -> None:
    reader = TlsReader(data, "fuzz")
    try:
        for name in reads:
            getattr(reader, name)()
    except ProtocolError:
        pass


# --- members ------------------------------------------------------------------------------------


def member(user_id: int, server: DaveServer, *, knows: tuple[int, ...] = (A, B, C)) -> DaveClient:
    client = DaveClient(user_id, CHANNEL)
    client.clients_connected(knows)
    client.start(1)
    return client


def key_package_of(client: DaveClient, server: DaveServer) -> bytes:
    out = client.handle(
        ServerBinaryMessage(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, server.external_sender_package)
    )
    [kp] = [o for o in out if isinstance(o, ClientBinaryMessage)]
    assert kp.op is VoiceOpcode.DAVE_MLS_KEY_PACKAGE
    return kp.payload


def deliver(client: DaveClient, delivery: DaveDelivery) -> list[ClientBinaryMessage]:
    assert isinstance(delivery.message, ServerBinaryMessage)
    return [o for o in client.handle(delivery.message) if isinstance(o, ClientBinaryMessage)]


def ops(deliveries: list[DaveDelivery]) -> list[tuple[tuple[int, ...], int]]:
    out = []
    for d in deliveries:
        message = d.message
        op = message.op if isinstance(message, ServerBinaryMessage) else message.OPCODE
        out.append((d.to, int(op)))
    return out


def two_member_group() -> tuple[DaveServer, DaveClient, DaveClient]:
    server = DaveServer(CHANNEL)
    a, b = member(A, server), member(B, server)
    for user_id in (A, B):
        assert ops(server.connect(user_id)) == [((user_id,), 25)]
    assert server.key_package(A, key_package_of(a, server)) == []
    to_b, to_a = server.key_package(B, key_package_of(b, server))
    assert (to_b.to, to_a.to) == ((B,), (A,))
    [commit] = deliver(a, to_a)
    deliver(b, to_b)  # b commits too, and will lose
    out = server.commit_welcome(A, commit.payload)
    assert ops(out) == [((A,), 29), ((B,), 30)]
    assert server.epoch == 1 and server.members == {A: 0, B: 1}
    [tid] = server.pending_transitions
    for client, delivery in zip((a, b), out, strict=True):
        assert isinstance(delivery.message, ServerBinaryMessage)
        assert delivery.message.transition_id == tid
        client.handle(delivery.message)
    assert server.transition_ready(A, tid) == []
    assert ops(server.transition_ready(B, tid)) == [((A, B), 22)]
    assert not server.pending_transitions
    assert a.epoch == b.epoch == 1 and a.voice_privacy_code == b.voice_privacy_code
    return server, a, b


# --- the external sender, proposals and commits ---------------------------------------------------


def test_two_members_form_a_group_with_our_external_sender() -> None:
    _, a, b = two_member_group()
    frame = a.encrypt_opus(b"opus")
    assert b.decrypt_opus(A, frame) == b"opus"


def test_external_sender_package_layout() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    server = DaveServer(CHANNEL, signing_key=key, identity=b"gw")
    reader = TlsReader(server.external_sender_package, "op 25")
    assert reader.vector() == public_key_bytes(key)
    assert reader.u16() == 1
    assert reader.vector() == b"gw"
    reader.expect_end()


def test_our_proposal_refs_are_the_ones_davey_commits_to() -> None:
    server = DaveServer(CHANNEL)
    a, b = member(A, server), member(B, server)
    key = server._key
    kp_b = key_package_of(b, server)
    key_package_of(a, server)
    proposal = build_add_proposal(key, group_id_for_channel(CHANNEL), 0, kp_b)
    [commit] = [
        o
        for o in a.proposals(proposals_payload(0, [proposal.message]))
        if isinstance(o, ClientBinaryMessage)
    ]
    info = parse_commit_welcome(commit.payload)
    assert info.proposal_refs == (proposal.ref,)
    assert info.epoch == 0 and info.sender_leaf == 0
    assert info.group_id == group_id_for_channel(CHANNEL)
    assert info.welcome is not None
    assert [ref for ref, _ in info.welcome.secrets] == [parse_key_package(kp_b).ref]
    # Narrowed to the only member it has, the welcome is byte for byte what the client sent.
    welcome = commit.payload[len(info.commit) :]
    assert info.welcome.for_member(parse_key_package(kp_b).ref) == welcome
    assert info.welcome.for_member(b"nobody") is None


def test_key_packages_are_validated() -> None:
    server = DaveServer(CHANNEL)
    a = member(A, server)
    kp = key_package_of(a, server)
    info = parse_key_package(kp)
    assert info.user_id == A and len(info.signature_key) == 65
    with pytest.raises(ProtocolError, match="not connected"):
        server.key_package(A, kp)
    server.connect(A)
    server.connect(B)
    with pytest.raises(ProtocolError, match="names user"):
        server.key_package(B, kp)
    tampered = kp[:-5] + bytes([kp[-5] ^ 1]) + kp[-4:]
    with pytest.raises(ProtocolError):
        parse_key_package(tampered)
    assert server.key_package(A, kp) == []
    assert server.pending == {A}


def test_a_newer_key_package_revokes_the_old_add() -> None:
    server = DaveServer(CHANNEL)
    a, b = member(A, server), member(B, server)
    server.connect(A)
    server.connect(B)
    server.key_package(A, key_package_of(a, server))
    server.key_package(B, key_package_of(b, server))
    old = server.issued_to(A)
    b.reset()
    b = member(B, server)
    out = server.key_package(B, key_package_of(b, server))
    revoke = out[0]
    assert revoke.to == (A,)
    assert isinstance(revoke.message, ServerBinaryMessage)
    assert revoke.message.payload == proposals_payload(1, [opaque_vector(r) for r in old])
    assert server.issued_to(A) != old and len(server.issued_to(A)) == 1


def test_commits_that_are_not_the_first_valid_one_are_rejected() -> None:
    server = DaveServer(CHANNEL)
    a, b = member(A, server), member(B, server)
    server.connect(A)
    server.connect(B)
    server.key_package(A, key_package_of(a, server))
    to_b, to_a = server.key_package(B, key_package_of(b, server))
    [commit_a] = deliver(a, to_a)
    [commit_b] = deliver(b, to_b)
    with pytest.raises(RejectedCommit, match="issued") as wrong_sender:
        server.commit_welcome(B, commit_a.payload)  # B's leaf 0 commit, citing A's proposals
    assert not wrong_sender.value.stale
    server.commit_welcome(A, commit_a.payload)
    with pytest.raises(RejectedCommit) as late:
        server.commit_welcome(B, commit_b.payload)
    assert late.value.stale


def test_an_established_group_rejects_strangers_and_wrong_leaves() -> None:
    server, a, _ = two_member_group()
    c = member(C, server)
    server.connect(C)
    out = server.key_package(C, key_package_of(c, server))
    assert [d.to for d in out] == [(A, B)]
    [commit] = deliver(a, out[0])
    with pytest.raises(RejectedCommit, match="does not hold"):
        server.commit_welcome(C, commit.payload)
    with pytest.raises(RejectedCommit, match="leaf"):
        server.commit_welcome(B, commit.payload)
    result = server.commit_welcome(A, commit.payload)
    assert ops(result) == [((A, B), 29), ((C,), 30)]
    assert server.members == {A: 0, B: 1, C: 2}


def test_leaving_member_is_removed_by_leaf_and_a_sole_member_is_reset() -> None:
    server, a, b = two_member_group()
    c = member(C, server)
    server.connect(C)
    [proposals] = server.key_package(C, key_package_of(c, server))
    [commit] = deliver(a, proposals)
    deliver(b, proposals)
    for d in server.commit_welcome(A, commit.payload):
        for user_id in d.to:
            {A: a, B: b, C: c}[user_id].handle(d.message)
    [remove] = server.disconnect(B)
    assert remove.to == (A, C)
    assert isinstance(remove.message, ServerBinaryMessage)
    message = TlsReader(TlsReader(remove.message.payload[1:], "op 27").vector(), "proposal")
    assert (message.u16(), message.u16()) == (1, 1)  # MLS 1.0, PublicMessage
    assert message.vector() == group_id_for_channel(CHANNEL)
    assert (message.u64(), message.u8(), message.u32()) == (2, 2, 0)  # epoch 2, external sender 0
    assert message.vector() == b""
    assert (message.u8(), message.u16(), message.u32()) == (2, 3, 1)  # a Remove of leaf 1
    message.vector()  # the signature
    message.expect_end()
    assert len(server.issued_to(A)) == 1 and server.issued_to(A) == server.issued_to(C)
    [commit] = deliver(c, remove)
    out = server.commit_welcome(C, commit.payload)
    assert ops(out) == [((A, C), 29)]
    assert server.members == {A: 0, C: 2} and server.epoch == 3
    reset = server.disconnect(C)
    assert [d.message for d in reset] == [
        DavePrepareEpoch(epoch=1, protocol_version=1),
        DavePrepareTransition(transition_id=0, protocol_version=1),
    ]
    assert server.epoch == 0 and server.members == {}


def test_invalid_commit_welcome_removes_the_member_until_it_rekeys() -> None:
    server, a, b = two_member_group()
    [remove] = server.invalid_commit_welcome(B, 1)
    assert remove.to == (A,)
    assert server.members == {A: 0}
    deliver(a, remove)  # a commits the remove alone, then again with the add below
    b.reset()
    b = member(B, server)
    [add] = server.key_package(B, key_package_of(b, server))
    assert add.to == (A,)
    assert len(server.issued_to(A)) == 2  # remove the stale leaf, add the new key package
    [commit] = deliver(a, add)
    out = server.commit_welcome(A, commit.payload)
    assert ops(out) == [((A,), 29), ((B,), 30)]
    assert server.members == {A: 0, B: 1}


def test_transitions_execute_on_timeout_and_ignore_late_readiness() -> None:
    server, a, _ = two_member_group()
    c = member(C, server)
    server.connect(C)
    [proposals] = server.key_package(C, key_package_of(c, server))
    [commit] = deliver(a, proposals)
    server.commit_welcome(A, commit.payload)
    [(tid, waiting)] = server.pending_transitions.items()
    assert waiting == {A, B, C}
    assert server.transition_ready(A, tid) == []
    [execute] = server.expire_transition(tid)
    assert execute.message == DaveExecuteTransition(transition_id=tid)
    assert execute.to == (A, B, C)
    assert server.transition_ready(B, tid) == []
    assert server.expire_transition(tid) == []


def test_downgrade_and_upgrade_deliveries() -> None:
    server, _, _ = two_member_group()
    [prepare] = server.downgrade()
    assert isinstance(prepare.message, DavePrepareTransition)
    assert prepare.message.protocol_version == 0 and prepare.to == (A, B)
    tid = prepare.message.transition_id
    assert tid != 0
    server.transition_ready(A, tid)
    [execute] = server.transition_ready(B, tid)
    assert execute.message == DaveExecuteTransition(transition_id=tid)
    assert server.protocol_version == 0 and server.epoch == 0
    assert server.downgrade() == []
    sender, epoch = server.upgrade()
    assert ops([sender]) == [((A, B), 25)]
    assert epoch.message == DavePrepareEpoch(epoch=1, protocol_version=1)
    assert server.protocol_version == 1


def test_transition_ids_skip_zero_when_they_wrap() -> None:
    server = DaveServer(CHANNEL)
    server._last_transition_id = 0xFFFF
    server.connect(A)
    [prepare] = server.downgrade()
    assert isinstance(prepare.message, DavePrepareTransition)
    assert prepare.message.transition_id == 1


def test_version_zero_server_sends_no_dave() -> None:
    server = DaveServer(CHANNEL, protocol_version=0)
    assert ops(server.connect(A)) == [((A,), 25)]  # needed before any upgrade
    with pytest.raises(ProtocolError):
        server.key_package(A, b"")
    with pytest.raises(UsageError):
        DaveServer(CHANNEL, protocol_version=2)


# --- fuzzing the parsers ------------------------------------------------------------------------


def _samples() -> dict[str, bytes]:
    server = DaveServer(CHANNEL)
    a, b = member(A, server), member(B, server)
    kp_b = key_package_of(b, server)
    key_package_of(a, server)
    proposal = build_add_proposal(server._key, group_id_for_channel(CHANNEL), 0, kp_b)
    [commit] = [
        o
        for o in a.proposals(proposals_payload(0, [proposal.message]))
        if isinstance(o, ClientBinaryMessage)
    ]
    info = parse_commit_welcome(commit.payload)
    return {
        "key_package": kp_b,
        "commit_welcome": commit.payload,
        "welcome": commit.payload[len(info.commit) :],
    }


SAMPLES = _samples()
PARSERS: dict[str, Callable[[bytes], object]] = {
    "key_package": parse_key_package,
    "commit_welcome": parse_commit_welcome,
    "welcome": parse_welcome,
}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_samples_parse(name: str) -> None:
    PARSERS[name](SAMPLES[name])


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(PARSERS)),
    data=st.data(),
)
def test_mutated_mls_messages_raise_only_protocol_errors(name: str, data: st.DataObject) -> None:
    sample = bytearray(SAMPLES[name])
    mode = data.draw(st.sampled_from(["truncate", "flip", "insert", "random"]))
    if mode == "truncate":
        sample = sample[: data.draw(st.integers(0, len(sample) - 1))]
    elif mode == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(sample) - 1))
            sample[i] ^= data.draw(st.integers(1, 255))
    elif mode == "insert":
        i = data.draw(st.integers(0, len(sample)))
        sample[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        sample = bytearray(data.draw(st.binary(max_size=400)))
    with contextlib.suppress(ProtocolError):
        PARSERS[name](bytes(sample))


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=300), user=st.sampled_from([A, B]))
def test_fuzzed_client_messages_never_crash_the_server(payload: bytes, user: int) -> None:
    server = DaveServer(CHANNEL)
    server.connect(A)
    for call in (server.key_package, server.commit_welcome):
        with contextlib.suppress(ProtocolError):
            call(user, payload)
    assert server.transition_ready(user, 5) == []
    server.invalid_commit_welcome(user, 5)
    server.disconnect(user)
