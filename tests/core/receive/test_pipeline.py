"""The receive pipeline, stage by stage, with a real transport cipher and no I/O."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice._core.receive.events import SpeakingStarted, SpeakingStopped
from discore_voice._core.receive.pipeline import DEFAULT_DEPTH, ReceivePipeline
from discore_voice._core.receive.playout import SlotKind
from discore_voice._core.receive.ssrc_map import HOLD_SECONDS, PRUNE_AFTER_LEAVE
from discore_voice._core.rtp import RtpHeader
from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice._core.transport import (
    AES256_GCM_RTPSIZE,
    XCHACHA20_POLY1305_RTPSIZE,
    NonceLedger,
    create_cipher,
)
from discore_voice._core.voice.media import MediaCrypto

KEY = bytes(range(32))
ALICE = 1001
SSRC = 77


def sealed(
    sequence: int,
    payload: bytes,
    *,
    ssrc: int = SSRC,
    padding: int = 0,
    extension_words: int = 0,
    mode: str = AES256_GCM_RTPSIZE,
) -> bytes:
    """A packet as a voice server forwards it (a sender's cipher, its own nonce ledger)."""
    cipher = create_cipher(mode, KEY, ledger=NonceLedger(), first_nonce=sequence)
    header = RtpHeader(
        sequence=sequence & 0xFFFF,
        timestamp=(sequence * 960) & 0xFFFFFFFF,
        ssrc=ssrc,
        padding=padding > 0,
        extension_profile=0xBEDE if extension_words else None,
        extension_length=extension_words,
    )
    body = bytes(range(1, 1 + 4 * extension_words))
    tail = bytes(padding - 1) + bytes([padding]) if padding else b""
    return cipher.encrypt(header, payload + tail, extension_body=body)


def pipeline(
    *, receiving: bool = True, mode: str = AES256_GCM_RTPSIZE
) -> tuple[ReceivePipeline, object]:
    p = ReceivePipeline(MediaCrypto())
    if receiving:
        p.start()
    return p, create_cipher(mode, KEY, ledger=NonceLedger())


def frame(n: int) -> bytes:
    return b"\xfc" + n.to_bytes(2, "big")


def drain(
    p: ReceivePipeline, ticks: int, now: float = 0.0, *, concealed: bool = False
) -> list[tuple[int, bytes, SlotKind]]:
    """The slots of ``ticks`` ticks; the loss concealment after a stream's end left out."""
    out = []
    for i in range(ticks):
        for user_id, ssrc, slot in p.tick(now + i * 0.02).slots:
            assert ssrc == SSRC
            out.append((user_id, slot.opus, slot.kind))
    if not concealed:
        while out and out[-1][2] is SlotKind.PLC:
            out.pop()
    return out


def test_without_a_receiver_only_the_transport_runs() -> None:
    p, cipher = pipeline(receiving=False)
    p.name(SSRC, ALICE)
    assert p.datagram(cipher, sealed(1, frame(1)), 0.0)  # type: ignore[arg-type]
    assert p.received == 1
    assert p.tick(0.02).slots == []
    assert p.snapshot().passed == {}  # no DAVE, no buffer: nothing spent on it


def test_frames_come_out_in_order_after_the_playout_delay() -> None:
    p, cipher = pipeline()
    p.name(SSRC, ALICE)
    for n in (1, 3, 2, 4, 6, 5):  # reordered within the delay
        assert p.datagram(cipher, sealed(n, frame(n)), 0.0)  # type: ignore[arg-type]
    out = drain(p, 12)
    assert [opus for _, opus, _ in out] == [frame(n) for n in range(1, 7)]
    assert {user for user, _, _ in out} == {ALICE}
    assert {kind for _, _, kind in out} == {SlotKind.PACKET}


@settings(max_examples=60, deadline=None)
@given(
    padding=st.integers(0, 255),
    extension_words=st.integers(0, 8),
    mode=st.sampled_from([AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE]),
)
def test_padding_and_extensions_never_reach_the_frame(
    padding: int, extension_words: int, mode: str
) -> None:
    """The bug every other library hit: the frame DAVE sees must end where the sender's ended."""
    p, cipher = pipeline(mode=mode)
    p.name(SSRC, ALICE)
    payload = frame(1) + b"\xfa\xfa"  # DAVE's trailing marker must stay the last bytes
    packet = sealed(1, payload, padding=padding, extension_words=extension_words, mode=mode)
    assert p.datagram(cipher, packet, 0.0)  # type: ignore[arg-type]
    assert [opus for _, opus, _ in drain(p, DEFAULT_DEPTH + 1)] == [payload]


def test_each_stage_counts_its_drops() -> None:
    p, cipher = pipeline()
    p.name(SSRC, ALICE)
    good = sealed(1, frame(1))
    assert p.datagram(cipher, good, 0.0)  # type: ignore[arg-type]
    assert not p.datagram(cipher, good, 0.0)  # type: ignore[arg-type]  # a replay
    assert not p.datagram(cipher, b"\x81\xc9" + bytes(30), 0.0)  # type: ignore[arg-type]
    assert not p.datagram(cipher, b"\x80\x78" + bytes(40), 0.0)  # type: ignore[arg-type]
    assert not p.datagram(cipher, b"\x90\x78" + bytes(10), 0.0)  # type: ignore[arg-type]
    # All padding: authentic, but nothing to play (dysnomia #230).
    assert p.datagram(cipher, sealed(2, b"", padding=4), 0.0)  # type: ignore[arg-type]
    assert p.datagram(cipher, sealed(1, frame(1), ssrc=99), 0.0)  # type: ignore[arg-type]
    p.tick(HOLD_SECONDS + 1.0)  # SSRC 99 was never named
    stats = p.snapshot()
    assert stats.received == 3
    assert stats.dropped == {
        "replay.duplicate": 1,
        "transport.rtcp": 1,
        "transport.undecryptable": 1,
        "transport.malformed": 1,
        "transport.empty": 1,
        "ssrc.unnamed_expired": 1,
    }
    assert stats.passed["ssrc.held"] == 1


def test_audio_before_its_speaking_is_held_then_played_without_added_delay() -> None:
    p, cipher = pipeline()
    for n in range(1, 41):  # 0.8 s before op 5
        assert p.datagram(cipher, sealed(n, frame(n)), n * 0.02)  # type: ignore[arg-type]
    assert p.tick(0.8).slots == []
    p.name(SSRC, ALICE)
    released = p.tick(0.82).slots
    # The backlog plays out at once instead of adding 0.8 s of latency to what follows; the
    # newest five fill the playout buffer, which plays the first of them at once.
    assert [slot.opus for _, _, slot in released] == [frame(n) for n in range(1, 37)]
    assert p.snapshot().passed["ssrc.released"] == 40
    rest = [opus for _, opus, _ in drain(p, 5, 0.84)]
    assert rest == [frame(n) for n in range(37, 41)]


def test_speaking_events_follow_the_playout_and_a_leaver_is_pruned() -> None:
    p, cipher = pipeline()
    p.name(SSRC, ALICE)
    for n in range(1, 11):
        p.datagram(cipher, sealed(n, frame(n)), 0.0)  # type: ignore[arg-type]
    for n in range(11, 16):
        p.datagram(cipher, sealed(n, OPUS_SILENCE_FRAME), 0.0)  # type: ignore[arg-type]
    events = []
    for i in range(30):
        events += p.tick(i * 0.02).events
    assert [type(e) for e in events] == [SpeakingStarted, SpeakingStopped]
    assert all(e.user_id == ALICE and e.ssrc == SSRC for e in events)
    p.user_left(ALICE, 1.0)
    assert p.tick(1.0).pruned == []
    assert p.user_for_ssrc(SSRC) == ALICE
    assert p.tick(1.0 + PRUNE_AFTER_LEAVE).pruned == [SSRC]
    assert p.user_for_ssrc(SSRC) is None


def test_a_lost_packet_is_concealed_from_the_next_ones_fec() -> None:
    p, cipher = pipeline()
    p.name(SSRC, ALICE)
    for n in (1, 2, 4, 5, 6, 7, 8):
        p.datagram(cipher, sealed(n, frame(n)), 0.0)  # type: ignore[arg-type]
    out = drain(p, 12)
    assert out[2] == (ALICE, frame(4), SlotKind.FEC)
    assert [kind for _, _, kind in out[:4]] == [
        SlotKind.PACKET,
        SlotKind.PACKET,
        SlotKind.FEC,
        SlotKind.PACKET,
    ]
