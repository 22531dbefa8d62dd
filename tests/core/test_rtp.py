from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice._core.rtp import (
    OPUS_PAYLOAD_TYPE,
    SAMPLES_PER_FRAME,
    RtpHeader,
    is_rtcp,
    next_sequence,
    next_timestamp,
    pack_opus_header,
    sequence_distance,
    timestamp_distance,
)
from discore_voice._errors import ProtocolError, UsageError

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def headers(draw: st.DrawFn) -> RtpHeader:
    profile = draw(st.none() | u16)
    return RtpHeader(
        sequence=draw(u16),
        timestamp=draw(u32),
        ssrc=draw(u32),
        payload_type=draw(st.integers(0, 127)),
        marker=draw(st.booleans()),
        padding=draw(st.booleans()),
        csrcs=tuple(draw(st.lists(u32, max_size=15))),
        extension_profile=profile,
        extension_length=0 if profile is None else draw(st.integers(0, 20)),
    )


def test_opus_header_matches_discord_layout() -> None:
    data = pack_opus_header(0x1234, 0xDEADBEEF, 0x01020304)
    assert data == bytes.fromhex("8078 1234 deadbeef 01020304")


@given(u16, u32, u32)
def test_fast_path_equals_general_build(sequence: int, timestamp: int, ssrc: int) -> None:
    fast = pack_opus_header(sequence, timestamp, ssrc)
    assert fast == RtpHeader(sequence, timestamp, ssrc).build()
    header, size = RtpHeader.parse(fast)
    assert size == 12
    assert header == RtpHeader(sequence, timestamp, ssrc, payload_type=OPUS_PAYLOAD_TYPE)


@given(headers(), st.binary(max_size=40))
def test_build_parse_round_trip(header: RtpHeader, payload: bytes) -> None:
    built = header.build()
    assert len(built) == header.size
    body = bytes(range(header.extension_body_size))
    parsed, size = RtpHeader.parse(built + body + payload)
    assert parsed == header
    assert size == len(built)


def test_parse_reads_every_flag_and_field() -> None:
    data = (
        bytes([0b1011_0010, 0x80 | 0x78])  # V=2, P=1, X=1, CC=2; M=1, PT=0x78
        + struct.pack(">HII", 7, 9, 11)
        + struct.pack(">II", 100, 200)
        + struct.pack(">HH", 0xBEDE, 1)
        + b"\x10\xaa\x00\x00"
        + b"opus"
    )
    header, size = RtpHeader.parse(data)
    assert size == 12 + 8 + 4
    assert header == RtpHeader(
        sequence=7,
        timestamp=9,
        ssrc=11,
        payload_type=0x78,
        marker=True,
        padding=True,
        csrcs=(100, 200),
        extension_profile=0xBEDE,
        extension_length=1,
    )
    assert header.build() == data[:size]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than the 12-byte fixed header"),
        (bytes.fromhex("8078 0001 00000002 000000"), "shorter than the 12-byte fixed header"),
        (bytes.fromhex("4078 0001 00000002 00000003"), "version is 1"),
        (bytes.fromhex("0078 0001 00000002 00000003"), "version is 0"),
        (bytes.fromhex("8378 0001 00000002 00000003 00000004 00000005"), "CSRC count 3"),
        (bytes.fromhex("9078 0001 00000002 00000003 bede"), "before the extension preamble"),
        (bytes.fromhex("9178 0001 00000002 00000003 00000004 bede"), "before the extension"),
        (bytes.fromhex("9078 0001 00000002 00000003 bede0002 00000000"), "extension length 2"),
    ],
)
def test_parse_rejects_malformed_headers(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        RtpHeader.parse(data)


def test_extension_body_exactly_filling_the_packet_is_accepted() -> None:
    data = bytes.fromhex("9078 0001 00000002 00000003 bede0002 00000000 00000000")
    header, size = RtpHeader.parse(data)
    assert (size, header.extension_length) == (16, 2)


@given(st.binary(max_size=120))
def test_parse_fuzz_raises_only_protocol_errors(data: bytes) -> None:
    try:
        header, size = RtpHeader.parse(data)
    except ProtocolError:
        return
    assert 12 <= size <= len(data)
    assert header.build() == data[:size]


@given(headers(), st.data())
def test_truncated_valid_headers_raise_protocol_error(
    header: RtpHeader, data: st.DataObject
) -> None:
    built = header.build() + bytes(header.extension_body_size)
    cut = data.draw(st.integers(0, len(built) - 1))
    with pytest.raises(ProtocolError):
        RtpHeader.parse(built[:cut])


@pytest.mark.parametrize(
    "header",
    [
        RtpHeader(0x10000, 0, 0),
        RtpHeader(-1, 0, 0),
        RtpHeader(0, 1 << 32, 0),
        RtpHeader(0, 0, 1 << 32),
        RtpHeader(0, 0, 0, payload_type=128),
        RtpHeader(0, 0, 0, csrcs=(0,) * 16),
        RtpHeader(0, 0, 0, csrcs=(1 << 32,)),
        RtpHeader(0, 0, 0, extension_length=1),
        RtpHeader(0, 0, 0, extension_profile=0x10000),
        RtpHeader(0, 0, 0, extension_profile=0xBEDE, extension_length=0x10000),
    ],
)
def test_build_rejects_out_of_range_fields(header: RtpHeader) -> None:
    with pytest.raises(UsageError):
        header.build()


@pytest.mark.parametrize("args", [(0x10000, 0, 0), (0, -1, 0), (0, 0, 1 << 32), (0.5, 0, 0)])
def test_fast_path_rejects_out_of_range_fields(args: tuple[int, int, int]) -> None:
    with pytest.raises(UsageError):
        pack_opus_header(*args)


@given(st.binary(min_size=0, max_size=30))
def test_is_rtcp_looks_at_the_packet_type_byte(rest: bytes) -> None:
    rtcp = [second for second in range(256) if is_rtcp(bytes([0x80, second]) + rest)]
    assert rtcp == [200, 201, 202, 203, 204]


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (bytes.fromhex("80c8 0006 00000001"), True),  # sender report
        (bytes.fromhex("81c9 0007 00000001"), True),  # receiver report, one block
        (bytes.fromhex("81cc 0002"), True),  # APP
        (pack_opus_header(1, 2, 3), False),
        (RtpHeader(1, 2, 3, payload_type=72, marker=False).build(), False),
        (RtpHeader(1, 2, 3, payload_type=72, marker=True).build(), True),
        (bytes.fromhex("00c8 0006"), False),  # version 0
        (b"\x80", False),
        (b"", False),
    ],
)
def test_is_rtcp_examples(packet: bytes, expected: bool) -> None:
    assert is_rtcp(packet) is expected


def test_counters_wrap() -> None:
    assert next_sequence(0) == 1
    assert next_sequence(0xFFFF) == 0
    assert next_timestamp(0) == SAMPLES_PER_FRAME == 960
    assert next_timestamp(0xFFFFFFFF - 959) == 0
    assert next_timestamp(0xFFFFFFFF - 900) == 59
    assert next_timestamp(5, 480) == 485


@given(u16)
def test_sequence_distance_to_next_is_one(sequence: int) -> None:
    following = next_sequence(sequence)
    assert 0 <= following <= 0xFFFF
    assert sequence_distance(sequence, following) == 1
    assert sequence_distance(following, sequence) == -1


@given(u16, st.integers(-(1 << 15), (1 << 15) - 1))
def test_sequence_distance_recovers_offsets_across_the_wrap(start: int, offset: int) -> None:
    assert sequence_distance(start, (start + offset) % (1 << 16)) == offset


@given(u16, u16)
def test_sequence_distance_is_antisymmetric_except_at_half(a: int, b: int) -> None:
    forward = sequence_distance(a, b)
    assert -(1 << 15) <= forward < (1 << 15)
    if forward == -(1 << 15):
        assert sequence_distance(b, a) == forward
    else:
        assert sequence_distance(b, a) == -forward


@given(u32, st.integers(-(1 << 31), (1 << 31) - 1))
def test_timestamp_distance_recovers_offsets_across_the_wrap(start: int, offset: int) -> None:
    assert timestamp_distance(start, (start + offset) % (1 << 32)) == offset


@given(u32, st.integers(1, 1000))
def test_timestamp_frames_accumulate_across_the_wrap(start: int, frames: int) -> None:
    timestamp = start
    for _ in range(frames):
        timestamp = next_timestamp(timestamp)
    assert 0 <= timestamp < (1 << 32)
    assert timestamp_distance(start, timestamp) == frames * SAMPLES_PER_FRAME


def test_distances_at_the_edges() -> None:
    assert sequence_distance(0xFFFF, 0) == 1
    assert sequence_distance(0, 0xFFFF) == -1
    assert sequence_distance(0, 0x8000) == -0x8000
    assert sequence_distance(0, 0x7FFF) == 0x7FFF
    assert timestamp_distance(0xFFFFFFFF - 959, 0) == 960
    assert timestamp_distance(0, 0xFFFFFFFF) == -1
    assert timestamp_distance(0, 1 << 31) == -(1 << 31)
