from __future__ import annotations

import copy
import pickle
import struct

import nacl.bindings
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice._core.rtp import RtpHeader
from discore_voice._core.transport import (
    AES256_GCM_RTPSIZE,
    MAX_NONCE,
    SUPPORTED_MODES,
    XCHACHA20_POLY1305_RTPSIZE,
    DecryptedPacket,
    NonceLedger,
    TransportCipher,
    choose_mode,
    create_cipher,
    parse_secret_key,
)
from discore_voice._errors import (
    DecryptionFailed,
    NoCompatibleEncryptionMode,
    NonceExhausted,
    ProtocolError,
    UsageError,
)

KEY = bytes(range(1, 33))
OTHER_KEY = bytes(range(101, 133))
OPUS = bytes.fromhex("fc ff fe") + bytes(range(157))  # a 160-byte frame

modes = st.sampled_from(SUPPORTED_MODES)
keys = st.binary(min_size=32, max_size=32)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def hand_seal(mode: str, key: bytes, counter: int, aad: bytes, plaintext: bytes) -> bytes:
    """The documented packet layout, built straight from the crypto libraries."""
    wire_nonce = counter.to_bytes(4, "big")
    if mode == AES256_GCM_RTPSIZE:
        sealed = AESGCM(key).encrypt(wire_nonce + bytes(8), plaintext, aad)
    else:
        sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, aad, wire_nonce + bytes(20), key
        )
    return aad + sealed + wire_nonce


def hand_header(sequence: int, timestamp: int, ssrc: int) -> bytes:
    return bytes([0x80, 0x78]) + sequence.to_bytes(2, "big") + struct.pack(">II", timestamp, ssrc)


@st.composite
def headers(draw: st.DrawFn) -> RtpHeader:
    profile = draw(st.none() | u16)
    return RtpHeader(
        sequence=draw(u16),
        timestamp=draw(u32),
        ssrc=draw(u32),
        marker=draw(st.booleans()),
        csrcs=tuple(draw(st.lists(u32, max_size=15))),
        extension_profile=profile,
        extension_length=0 if profile is None else draw(st.integers(0, 8)),
    )


# -- known vectors: our packets equal the documented layout built by hand -------------------------


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
@pytest.mark.parametrize("counter", [0, 1, 0x01020304, MAX_NONCE])
def test_encrypt_matches_hand_built_packet(mode: str, counter: int) -> None:
    expected = hand_seal(mode, KEY, counter, hand_header(513, 96000, 0xCAFE), OPUS)
    cipher = create_cipher(mode, KEY, first_nonce=counter)
    assert cipher.encrypt_opus(513, 96000, 0xCAFE, OPUS) == expected
    general = create_cipher(mode, KEY, first_nonce=counter)
    assert general.encrypt(RtpHeader(513, 96000, 0xCAFE), OPUS) == expected
    assert expected[-4:] == counter.to_bytes(4, "big")
    assert len(expected) == 12 + len(OPUS) + 16 + 4


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_decrypt_hand_built_packet(mode: str) -> None:
    packet = hand_seal(mode, KEY, 77, hand_header(65535, 0xFFFFFFFF, 42), OPUS)
    result = create_cipher(mode, list(KEY)).decrypt(packet)
    assert result == DecryptedPacket(RtpHeader(65535, 0xFFFFFFFF, 42), OPUS, 77, b"")


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_decrypt_hand_built_packet_with_csrcs_and_extension(mode: str) -> None:
    # V=2, X=1, CC=2; the AAD stops after the extension preamble, the body is encrypted.
    aad = (
        bytes([0x92, 0x78])
        + struct.pack(">HII", 9, 960, 5)
        + struct.pack(">II", 111, 222)
        + struct.pack(">HH", 0xBEDE, 2)
    )
    body = bytes.fromhex("22 aa bb cc 10 7f 00 00")
    packet = hand_seal(mode, KEY, 3, aad, body + OPUS)
    result = create_cipher(mode, KEY).decrypt(packet)
    assert result.payload == OPUS
    assert result.extension_body == body
    assert result.nonce == 3
    assert result.header.csrcs == (111, 222)
    assert (result.header.extension_profile, result.header.extension_length) == (0xBEDE, 2)
    header = RtpHeader(9, 960, 5, csrcs=(111, 222), extension_profile=0xBEDE, extension_length=2)
    ours = create_cipher(mode, KEY, first_nonce=3).encrypt(header, OPUS, extension_body=body)
    assert ours == packet


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_padding_is_stripped(mode: str) -> None:
    aad = bytes([0xA0, 0x78]) + struct.pack(">HII", 1, 2, 3)  # P=1
    packet = hand_seal(mode, KEY, 0, aad, OPUS + b"\x00\x00\x03")
    result = create_cipher(mode, KEY).decrypt(packet)
    assert result.payload == OPUS
    assert result.header.padding


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
@pytest.mark.parametrize("plaintext", [b"", OPUS + b"\x00", b"ab\x04"])
def test_bad_padding_count_is_a_protocol_error(mode: str, plaintext: bytes) -> None:
    aad = bytes([0xA0, 0x78]) + struct.pack(">HII", 1, 2, 3)
    packet = hand_seal(mode, KEY, 0, aad, plaintext)
    with pytest.raises(ProtocolError, match="padding"):
        create_cipher(mode, KEY).decrypt(packet)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_extension_longer_than_plaintext_is_a_protocol_error(mode: str) -> None:
    # The preamble promises 5 words (20 bytes); the authenticated plaintext holds only 4 bytes.
    aad = bytes([0x90, 0x78]) + struct.pack(">HII", 1, 2, 3) + struct.pack(">HH", 0xBEDE, 5)
    packet = hand_seal(mode, KEY, 0, aad, b"abcd")
    with pytest.raises(ProtocolError, match="extension body of 20 bytes"):
        create_cipher(mode, KEY).decrypt(packet)


# -- round trips ----------------------------------------------------------------------------------


@given(modes, keys, headers(), st.binary(max_size=300), st.data())
def test_round_trip_any_header(
    mode: str, key: bytes, header: RtpHeader, payload: bytes, data: st.DataObject
) -> None:
    size = header.extension_body_size
    body = data.draw(st.binary(min_size=size, max_size=size))
    counter = data.draw(st.integers(0, MAX_NONCE))
    sender = create_cipher(mode, key, first_nonce=counter)
    packet = sender.encrypt(header, payload, extension_body=body)
    assert sender.next_nonce == counter + 1
    assert len(packet) == header.size + len(body) + len(payload) + 16 + 4
    result = create_cipher(mode, key).decrypt(packet)
    assert result == DecryptedPacket(header, payload, counter, body)


@given(modes, keys, u16, u32, u32, st.binary(max_size=300))
def test_round_trip_fast_path(
    mode: str, key: bytes, sequence: int, timestamp: int, ssrc: int, payload: bytes
) -> None:
    sender = create_cipher(mode, key)
    receiver = create_cipher(mode, key)
    for expected_nonce in range(3):
        packet = sender.encrypt_opus(sequence, timestamp, ssrc, payload)
        result = receiver.decrypt(packet)
        assert result.header == RtpHeader(sequence, timestamp, ssrc)
        assert result.payload == payload
        assert result.nonce == expected_nonce


def test_the_modes_do_not_decrypt_each_other() -> None:
    packet = create_cipher(AES256_GCM_RTPSIZE, KEY).encrypt_opus(1, 2, 3, OPUS)
    with pytest.raises(DecryptionFailed):
        create_cipher(XCHACHA20_POLY1305_RTPSIZE, KEY).decrypt(packet)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_wrong_key_fails(mode: str) -> None:
    packet = create_cipher(mode, KEY).encrypt_opus(1, 2, 3, OPUS)
    with pytest.raises(DecryptionFailed, match="authentication"):
        create_cipher(mode, OTHER_KEY).decrypt(packet)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_extension_body_must_match_header(mode: str) -> None:
    cipher = create_cipher(mode, KEY)
    header = RtpHeader(1, 2, 3, extension_profile=0xBEDE, extension_length=1)
    with pytest.raises(UsageError, match="4-byte extension body"):
        cipher.encrypt(header, OPUS, extension_body=b"abc")
    with pytest.raises(UsageError, match="0-byte extension body"):
        cipher.encrypt(RtpHeader(1, 2, 3), OPUS, extension_body=b"abcd")
    assert cipher.next_nonce == 0


# -- nonce discipline -----------------------------------------------------------------------------


@settings(max_examples=25)
@given(modes, st.integers(0, MAX_NONCE - 600), st.integers(1, 600))
def test_no_two_packets_share_a_nonce(mode: str, first: int, count: int) -> None:
    cipher = create_cipher(mode, KEY, first_nonce=first)
    nonces = [cipher.encrypt_opus(i & 0xFFFF, 0, 1, b"x")[-4:] for i in range(count)]
    assert len(set(nonces)) == count
    assert [int.from_bytes(n, "big") for n in nonces] == list(range(first, first + count))
    assert cipher.nonces_remaining == MAX_NONCE + 1 - first - count


@given(modes, st.integers(1, 50), st.booleans())
def test_counter_wrap_raises_and_emits_nothing(mode: str, left: int, fast: bool) -> None:
    cipher = create_cipher(mode, KEY, first_nonce=MAX_NONCE + 1 - left)
    assert cipher.nonces_remaining == left
    last = b""
    for _ in range(left):
        last = cipher.encrypt_opus(1, 2, 3, OPUS)
    assert last[-4:] == b"\xff\xff\xff\xff"
    assert cipher.nonces_remaining == 0
    for _ in range(2):  # stays exhausted: never wraps back to nonce 0
        with pytest.raises(NonceExhausted, match="new key"):
            if fast:
                cipher.encrypt_opus(1, 2, 3, OPUS)
            else:
                cipher.encrypt(RtpHeader(1, 2, 3), OPUS)
    assert cipher.nonces_remaining == 0


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_usage_error_does_not_spend_a_nonce(mode: str) -> None:
    cipher = create_cipher(mode, KEY, first_nonce=10)
    with pytest.raises(UsageError):
        cipher.encrypt_opus(70000, 0, 0, OPUS)
    assert cipher.next_nonce == 10


@pytest.mark.parametrize("first_nonce", [-1, MAX_NONCE + 1, True, 1.0])
def test_first_nonce_is_validated(first_nonce: int) -> None:
    with pytest.raises(UsageError, match="first_nonce"):
        create_cipher(AES256_GCM_RTPSIZE, KEY, first_nonce=first_nonce)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_cipher_cannot_be_copied_or_pickled(mode: str) -> None:
    cipher = create_cipher(mode, KEY)
    with pytest.raises(UsageError, match="reuse nonces"):
        copy.copy(cipher)
    with pytest.raises(UsageError, match="reuse nonces"):
        copy.deepcopy(cipher)
    with pytest.raises(UsageError, match="reuse nonces"):
        pickle.dumps(cipher)


# -- tampering and fuzzing ------------------------------------------------------------------------


@given(modes, headers(), st.binary(min_size=1, max_size=200), st.data())
def test_tampered_ciphertext_fails(
    mode: str, header: RtpHeader, payload: bytes, data: st.DataObject
) -> None:
    body = bytes(header.extension_body_size)
    packet = create_cipher(mode, KEY).encrypt(header, payload, extension_body=body)
    position = data.draw(st.integers(header.size, len(packet) - 5))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(packet)
    tampered[position] ^= flip
    with pytest.raises(DecryptionFailed):
        create_cipher(mode, KEY).decrypt(bytes(tampered))


@given(modes, headers(), st.binary(max_size=200), st.data())
def test_tampered_nonce_fails(
    mode: str, header: RtpHeader, payload: bytes, data: st.DataObject
) -> None:
    body = bytes(header.extension_body_size)
    packet = create_cipher(mode, KEY).encrypt(header, payload, extension_body=body)
    position = data.draw(st.integers(len(packet) - 4, len(packet) - 1))
    tampered = bytearray(packet)
    tampered[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptionFailed):
        create_cipher(mode, KEY).decrypt(bytes(tampered))


@given(modes, headers(), st.binary(max_size=200), st.data())
def test_tampered_aad_fails(
    mode: str, header: RtpHeader, payload: bytes, data: st.DataObject
) -> None:
    body = bytes(header.extension_body_size)
    packet = create_cipher(mode, KEY).encrypt(header, payload, extension_body=body)
    # Any header byte but the first (version/X/CC) and the extension length, which change how
    # the header parses: those are covered by the fuzz test below.
    positions = [
        p for p in range(1, header.size) if header.extension_profile is None or p < header.size - 2
    ]
    position = data.draw(st.sampled_from(positions))
    tampered = bytearray(packet)
    tampered[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptionFailed):
        create_cipher(mode, KEY).decrypt(bytes(tampered))


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
@pytest.mark.parametrize(
    ("flip", "error"),
    [
        (0x20, DecryptionFailed),  # P: parses the same, fails authentication
        (0x01, DecryptionFailed),  # CC=1: reads a CSRC out of the ciphertext, fails authentication
        (0x10, ProtocolError),  # X: reads ciphertext as a preamble, whose length may not fit
        (0x40, ProtocolError),  # version 3
    ],
)
def test_tampered_first_byte_is_rejected(mode: str, flip: int, error: type[Exception]) -> None:
    packet = bytearray(create_cipher(mode, KEY).encrypt_opus(1, 2, 3, OPUS))
    packet[0] ^= flip
    with pytest.raises(error):
        create_cipher(mode, KEY).decrypt(bytes(packet))


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
@pytest.mark.parametrize("size", [0, 11, 12, 12 + 19, 16 + 19])
def test_short_packets_are_rejected(mode: str, size: int) -> None:
    packet = (bytes([0x80, 0x78]) + bytes(40))[:size]
    with pytest.raises(ProtocolError):
        create_cipher(mode, KEY).decrypt(packet)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_header_only_plus_tag_and_nonce_is_too_short_by_one(mode: str) -> None:
    with pytest.raises(DecryptionFailed, match="too short"):
        create_cipher(mode, KEY).decrypt(hand_header(1, 2, 3) + bytes(19))
    # 20 bytes after the header is the minimum: an empty payload, which fails only authentication.
    with pytest.raises(DecryptionFailed, match="authentication"):
        create_cipher(mode, KEY).decrypt(hand_header(1, 2, 3) + bytes(20))


def _assert_only_protocol_errors(cipher: TransportCipher, packet: bytes) -> None:
    try:
        result = cipher.decrypt(packet)
    except ProtocolError:
        return
    assert isinstance(result, DecryptedPacket)


@given(modes, st.binary(max_size=200))
def test_decrypt_fuzz_random_bytes(mode: str, packet: bytes) -> None:
    _assert_only_protocol_errors(create_cipher(mode, KEY), packet)


@given(modes, headers(), st.binary(max_size=100), st.data())
def test_decrypt_fuzz_mutated_packets(
    mode: str, header: RtpHeader, payload: bytes, data: st.DataObject
) -> None:
    body = bytes(header.extension_body_size)
    packet = bytearray(create_cipher(mode, KEY).encrypt(header, payload, extension_body=body))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(packet) - 1))
        packet[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packet)))
    _assert_only_protocol_errors(create_cipher(mode, KEY), bytes(packet[:cut]))


@given(modes, st.binary(min_size=12, max_size=80), st.binary(max_size=100), u32)
def test_decrypt_fuzz_authentic_but_arbitrary_content(
    mode: str, aad_source: bytes, plaintext: bytes, counter: int
) -> None:
    # A peer holding the key can authenticate any header and plaintext: decrypt must still only
    # raise ProtocolError (bad extension length, bad padding, ...) or return.
    aad = bytes([0x80 | (aad_source[0] & 0x3F)]) + aad_source[1:]
    try:
        _, header_size = RtpHeader.parse(aad + bytes(len(plaintext) + 20))
    except ProtocolError:
        return
    packet = hand_seal(mode, KEY, counter, aad[:header_size], plaintext)
    _assert_only_protocol_errors(create_cipher(mode, KEY), packet)


# -- keys, factory, repr --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_keys_as_list_bytes_and_bytearray_are_equivalent(mode: str) -> None:
    packets = {
        create_cipher(mode, key).encrypt_opus(1, 2, 3, OPUS)
        for key in (KEY, list(KEY), tuple(KEY), bytearray(KEY), memoryview(KEY))
    }
    assert len(packets) == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (KEY[:31], "32 bytes long, got 31"),
        ([*KEY, 0], "32 bytes long, got 33"),
        ([*KEY[:31], 256], "ints in 0..255"),
        ([*KEY[:31], -1], "ints in 0..255"),
        ([*KEY[:31], True], "ints in 0..255"),
        ([*KEY[:31], "1"], "ints in 0..255"),
        ("k" * 32, "got str"),
        (None, "got NoneType"),
    ],
)
def test_bad_keys(key: object, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caller_error:
        create_cipher(AES256_GCM_RTPSIZE, key)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=message) as server_error:
        parse_secret_key(key)
    for error in (caller_error.value, server_error.value):
        assert "1, 2, 3" not in str(error)
        assert KEY.hex()[:8] not in str(error)


def test_parse_secret_key_accepts_the_session_description_list() -> None:
    assert parse_secret_key(list(KEY)) == KEY


@pytest.mark.parametrize("mode", [None, "", "xsalsa20_poly1305", "AEAD_AES256_GCM_RTPSIZE"])
def test_unknown_mode_is_a_usage_error(mode: str) -> None:
    with pytest.raises(UsageError, match="unknown transport encryption mode") as info:
        create_cipher(mode, KEY)
    assert not isinstance(info.value, ProtocolError)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_repr_shows_the_mode_and_never_the_key(mode: str) -> None:
    key = bytes([0xAB]) * 32
    cipher = create_cipher(mode, key)
    assert repr(cipher) == str(cipher) == f"<{type(cipher).__name__} mode={mode!r}>"
    assert cipher.mode == mode
    assert not hasattr(cipher, "__dict__")  # no attribute dump can reach the key either


# -- mode negotiation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (
            ["aead_xchacha20_poly1305_rtpsize", "aead_aes256_gcm_rtpsize", "xsalsa20_poly1305"],
            AES256_GCM_RTPSIZE,
        ),
        (["xsalsa20_poly1305_lite", "aead_xchacha20_poly1305_rtpsize"], XCHACHA20_POLY1305_RTPSIZE),
        (["aead_aes256_gcm_rtpsize"], AES256_GCM_RTPSIZE),
    ],
)
def test_choose_mode_prefers_aes_gcm(offered: list[str], chosen: str) -> None:
    assert choose_mode(offered) == chosen


def test_choose_mode_can_be_restricted() -> None:
    offered = [AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE]
    assert choose_mode(offered, supported=[XCHACHA20_POLY1305_RTPSIZE]) == (
        XCHACHA20_POLY1305_RTPSIZE
    )
    with pytest.raises(UsageError, match="xsalsa20_poly1305"):
        choose_mode(offered, supported=["xsalsa20_poly1305"])


@pytest.mark.parametrize(
    "offered",
    [
        [],
        ["xsalsa20_poly1305", "xsalsa20_poly1305_suffix", "xsalsa20_poly1305_lite"],
        ["aead_aes256_gcm"],
    ],
)
def test_choose_mode_refuses_xsalsa_and_unknown_modes(offered: list[str]) -> None:
    with pytest.raises(NoCompatibleEncryptionMode) as info:
        choose_mode(offered)
    message = str(info.value)
    for mode in offered:
        assert repr(mode) in message
    for mode in SUPPORTED_MODES:
        assert mode in message


# --- the nonce ledger: a key's counter outlives the cipher objects built for it ------------------


def sent_nonce(packet: bytes) -> int:
    return int.from_bytes(packet[-4:], "big")


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_a_key_sent_again_continues_its_counter(mode: str) -> None:
    """The defect: a Session Description re-sent after a resume installed a fresh cipher at 0."""
    ledger = NonceLedger()
    first = create_cipher(mode, KEY, ledger=ledger)
    used = {sent_nonce(first.encrypt_opus(i, i * 960, 7, OPUS)) for i in range(30)}
    again = create_cipher(mode, list(KEY), ledger=ledger)  # the same key, as the server sends it
    assert again.next_nonce == 30
    assert sent_nonce(again.encrypt_opus(30, 0, 7, OPUS)) not in used
    # Without a ledger the counter belongs to the object: the old, unsafe behaviour.
    assert create_cipher(mode, KEY).next_nonce == 0


def test_the_ledger_keeps_keys_apart_and_never_holds_them() -> None:
    ledger = NonceLedger()
    create_cipher(AES256_GCM_RTPSIZE, KEY, ledger=ledger).encrypt_opus(1, 1, 1, OPUS)
    assert create_cipher(AES256_GCM_RTPSIZE, OTHER_KEY, ledger=ledger).next_nonce == 0
    assert len(ledger) == 2
    assert KEY.hex() not in repr(ledger)
    with pytest.raises(UsageError):
        copy.copy(ledger.counter(KEY))
    with pytest.raises(UsageError):
        NonceLedger(capacity=0)


def test_the_ledger_forgets_only_the_least_recently_used_key() -> None:
    ledger = NonceLedger(capacity=2)
    keys = [bytes([n]) * 32 for n in range(3)]
    for key in keys[:2]:
        ledger.counter(key).next = 5
    ledger.counter(keys[0])  # used again: keys[1] is now the oldest
    ledger.counter(keys[2])
    assert len(ledger) == 2
    assert ledger.counter(keys[0]).next == 5
    assert ledger.counter(keys[1]).next == 0  # forgotten, as the capacity allows


# What a voice connection lives through, as the transport keys it is handed: a new voice session
# brings a fresh key; a resume may re-send the current key; a misbehaving server may re-send an
# older one. Between events the connection sends some packets.
_key_events = st.lists(
    st.tuples(
        st.sampled_from(["new_key", "resend_current", "resend_older", "move"]),
        st.integers(0, 40),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(mode=modes, events=_key_events)
def test_no_key_nonce_pair_ever_repeats(mode: str, events: list[tuple[str, int, int]]) -> None:
    ledger = NonceLedger()
    keys: list[bytes] = [KEY]
    cipher = create_cipher(mode, KEY, ledger=ledger)
    seen: set[tuple[bytes, int]] = set()
    for event, packets, pick in events:
        if event in ("new_key", "move"):
            keys.append(pick.to_bytes(2, "big") * 16)
            key = keys[-1]
        elif event == "resend_current":
            key = keys[-1]
        else:
            key = keys[pick % len(keys)]
        cipher = create_cipher(mode, key, ledger=ledger)
        for index in range(packets):
            pair = (key, sent_nonce(cipher.encrypt_opus(index, index, 9, OPUS)))
            assert pair not in seen
            seen.add(pair)


def test_huge_mode_names_are_capped_in_the_error() -> None:
    with pytest.raises(NoCompatibleEncryptionMode) as excinfo:
        choose_mode(["m" * 500_000, *("n" * 1000 for _ in range(50))])
    assert len(str(excinfo.value)) < 1100


# --- the receive path's fast open ---------------------------------------------------------------


def _outcome(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except ProtocolError as exc:
        return type(exc)


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(list(SUPPORTED_MODES)),
    csrcs=st.lists(st.integers(0, 2**32 - 1), max_size=3),
    extension_words=st.integers(0, 4) | st.none(),
    padding=st.integers(0, 20),
    payload=st.binary(max_size=64),
    cut=st.integers(0, 40) | st.none(),
    flip=st.integers(0, 200) | st.none(),
)
def test_open_media_is_decrypt_without_the_objects(
    mode: str,
    csrcs: list[int],
    extension_words: int | None,
    padding: int,
    payload: bytes,
    cut: int | None,
    flip: int | None,
) -> None:
    """Same answer, same error class, for well-formed, truncated and tampered packets alike."""
    sender = create_cipher(mode, KEY, ledger=NonceLedger())
    header = RtpHeader(
        sequence=7,
        timestamp=960,
        ssrc=42,
        csrcs=tuple(csrcs),
        padding=padding > 0,
        extension_profile=None if extension_words is None else 0xBEDE,
        extension_length=extension_words or 0,
    )
    tail = bytes(padding - 1) + bytes([padding]) if padding else b""
    body = bytes(4 * (extension_words or 0))
    packet = bytearray(sender.encrypt(header, payload + tail, extension_body=body))
    if flip is not None and flip < len(packet):
        packet[flip] ^= 0x01
    if cut is not None:
        del packet[len(packet) - cut :]
    data = bytes(packet)
    receiver = create_cipher(mode, KEY, ledger=NonceLedger())

    def slow() -> tuple[int, int, int, bytes]:
        opened = receiver.decrypt(data)
        return (opened.header.sequence, opened.header.timestamp, opened.header.ssrc, opened.payload)

    assert _outcome(lambda: receiver.open_media(data)) == _outcome(slow)
