from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice._core.ip_discovery import (
    IP_DISCOVERY_SIZE,
    DiscoveredAddress,
    build_request,
    build_response,
    parse_request,
    parse_response,
)
from discore_voice._errors import ProtocolError, UsageError

u32 = st.integers(0, 0xFFFFFFFF)
ports = st.integers(1, 0xFFFF)
addresses = st.ip_addresses().map(str)


def hand_response(
    ssrc: int, address: bytes, port: int, *, kind: int = 2, length: int = 70
) -> bytes:
    field = address + bytes(64 - len(address))
    return (
        kind.to_bytes(2, "big")
        + length.to_bytes(2, "big")
        + ssrc.to_bytes(4, "big")
        + field
        + (port.to_bytes(2, "big"))
    )


def test_request_layout() -> None:
    request = build_request(0x01020304)
    assert len(request) == IP_DISCOVERY_SIZE == 74
    assert request == bytes.fromhex("0001 0046 01020304") + bytes(64) + b"\x00\x00"


def test_response_layout() -> None:
    response = build_response(7, "203.0.113.9", 50004)
    assert response == hand_response(7, b"203.0.113.9", 50004)
    assert response[8:20] == b"203.0.113.9\x00"
    assert response[-2:] == struct.pack(">H", 50004)


def test_parse_hand_built_response() -> None:
    packet = hand_response(99, b"2001:db8::1", 443)
    assert parse_response(packet) == DiscoveredAddress(99, "2001:db8::1", 443)


def test_garbage_after_the_nul_is_ignored() -> None:
    field = b"198.51.100.7\x00" + b"\xff" * 51
    packet = hand_response(1, field, 9)
    assert parse_response(packet).address == "198.51.100.7"


@given(u32)
def test_request_round_trip(ssrc: int) -> None:
    assert parse_request(build_request(ssrc)) == ssrc


@given(u32, addresses, ports)
def test_response_round_trip(ssrc: int, address: str, port: int) -> None:
    packet = build_response(ssrc, address, port)
    assert len(packet) == 74
    assert parse_response(packet) == DiscoveredAddress(ssrc, address, port)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"", "must be 74 bytes, got 0"),
        (hand_response(1, b"1.2.3.4", 5)[:73], "must be 74 bytes, got 73"),
        (hand_response(1, b"1.2.3.4", 5) + b"\x00", "must be 74 bytes, got 75"),
        (hand_response(1, b"1.2.3.4", 5, kind=1), "must have type 2, got 1"),
        (hand_response(1, b"1.2.3.4", 5, kind=3), "must have type 2, got 3"),
        (hand_response(1, b"1.2.3.4", 5, length=74), "must have length 70, got 74"),
        (hand_response(1, b"1" * 64, 5), "not NUL-terminated"),
        (hand_response(1, "1.2.3.\u0664".encode(), 5), "not ASCII"),
        (hand_response(1, b"\xff.2.3.4", 5), "not ASCII"),
        (hand_response(1, b"", 5), "'' is not an IPv4 or IPv6 literal"),
        (hand_response(1, b"discord.media", 5), "not an IPv4 or IPv6 literal"),
        (hand_response(1, b"256.1.1.1", 5), "not an IPv4 or IPv6 literal"),
        (hand_response(1, b"1.2.3.4", 0), "port is 0"),
    ],
)
def test_parse_response_rejects(packet: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_response(packet)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (build_request(1)[:-1], "must be 74 bytes"),
        (build_response(1, "1.2.3.4", 5), "must have type 1, got 2"),
        (build_request(1)[:2] + b"\x00\x45" + build_request(1)[4:], "must have length 70, got 69"),
        (build_request(1)[:8] + b"1" + build_request(1)[9:], "zeroed address field and port 0"),
        (build_request(1)[:-1] + b"\x01", "zeroed address field and port 0"),
    ],
)
def test_parse_request_rejects(packet: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_request(packet)


@given(st.binary(max_size=80) | st.binary(min_size=74, max_size=74))
def test_parsers_fuzz_raise_only_protocol_errors(packet: bytes) -> None:
    for parse in (parse_request, parse_response):
        with contextlib.suppress(ProtocolError):
            parse(packet)


@given(u32, addresses, ports, st.data())
def test_mutated_responses_parse_or_raise_protocol_errors(
    ssrc: int, address: str, port: int, data: st.DataObject
) -> None:
    packet = bytearray(build_response(ssrc, address, port))
    for _ in range(data.draw(st.integers(1, 3))):
        packet[data.draw(st.integers(0, 73))] = data.draw(st.integers(0, 255))
    try:
        result = parse_response(bytes(packet))
    except ProtocolError:
        return
    ipaddress.ip_address(result.address)
    assert 1 <= result.port <= 0xFFFF


@pytest.mark.parametrize("ssrc", [-1, 1 << 32, True, "1"])
def test_build_rejects_bad_ssrc(ssrc: int) -> None:
    with pytest.raises(UsageError, match="ssrc"):
        build_request(ssrc)
    with pytest.raises(UsageError, match="ssrc"):
        build_response(ssrc, "1.2.3.4", 5)


@pytest.mark.parametrize(
    ("address", "port", "message"),
    [
        ("example.com", 5, "not an IPv4 or IPv6 literal"),
        ("", 5, "not an IPv4 or IPv6 literal"),
        (b"1.2.3.4", 5, "must be a str"),
        ("fe80::1%" + "x" * 60, 5, "at most 63 characters"),
        ("fe80::1%\u00e9", 5, "ASCII"),
        ("1.2.3.4", 0, "port"),
        ("1.2.3.4", 65536, "port"),
        ("1.2.3.4", True, "port"),
    ],
)
def test_build_response_rejects(address: str, port: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_response(1, address, port)
