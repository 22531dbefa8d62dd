"""Discord's UDP IP discovery: how a client behind NAT learns the address to put in Select Protocol.

The client sends its SSRC; the voice server answers with the source address and port it saw. Both
packets are 74 bytes: ``u16 type, u16 length (70), u32 ssrc, 64-byte address field, u16 port``.
The simulator answers requests, so both directions are here.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .._errors import ProtocolError, UsageError

__all__ = [
    "IP_DISCOVERY_SIZE",
    "DiscoveredAddress",
    "build_request",
    "build_response",
    "parse_request",
    "parse_response",
]

#: Both the request and the response are this long.
IP_DISCOVERY_SIZE = 74
_REQUEST_TYPE = 1
_RESPONSE_TYPE = 2
# The length field counts what follows the type and length fields themselves.
_BODY_LENGTH = IP_DISCOVERY_SIZE - 4
_ADDRESS_FIELD_SIZE = 64
_PACKET = struct.Struct(f">HHI{_ADDRESS_FIELD_SIZE}sH")
_EMPTY_ADDRESS = bytes(_ADDRESS_FIELD_SIZE)
_NAMES = {_REQUEST_TYPE: "request", _RESPONSE_TYPE: "response"}


@dataclass(frozen=True, slots=True)
class DiscoveredAddress:
    """The public address the voice server saw, as text ready for Select Protocol."""

    ssrc: int
    address: str
    port: int


def build_request(ssrc: int) -> bytes:
    """The request a client sends right after Ready, before Select Protocol."""
    _check_ssrc(ssrc)
    return _PACKET.pack(_REQUEST_TYPE, _BODY_LENGTH, ssrc, _EMPTY_ADDRESS, 0)


def parse_request(packet: bytes) -> int:
    """Return the SSRC of a client's request (the simulator's side).

    The address and port must be zero: a client that fills them in has misread the protocol, and
    the simulator exists to catch that.
    """
    ssrc, address, port = _unpack(packet, _REQUEST_TYPE)
    if address != _EMPTY_ADDRESS or port != 0:
        raise ProtocolError("IP discovery request must have a zeroed address field and port 0")
    return ssrc


def build_response(ssrc: int, address: str, port: int) -> bytes:
    """The simulator's answer: the source address and port it saw ``ssrc``'s request come from."""
    _check_ssrc(ssrc)
    if not isinstance(address, str):
        raise UsageError(f"address must be a str, got {type(address).__name__}")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(f"address {address!r} is not an IPv4 or IPv6 literal") from None
    # ip_address accepts almost any text as an IPv6 scope id; the wire wants NUL-ended ASCII.
    if not address.isascii() or "\x00" in address or len(address) >= _ADDRESS_FIELD_SIZE:
        raise UsageError(
            f"address must be ASCII without NUL and at most {_ADDRESS_FIELD_SIZE - 1} "
            f"characters, got {address!r}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 0xFFFF:
        raise UsageError(f"port must be an int in 1..65535, got {port!r}")
    return _PACKET.pack(_RESPONSE_TYPE, _BODY_LENGTH, ssrc, address.encode("ascii"), port)


def parse_response(packet: bytes) -> DiscoveredAddress:
    """Read the server's answer; anything but a usable address and port is a ProtocolError."""
    ssrc, field, port = _unpack(packet, _RESPONSE_TYPE)
    end = field.find(0)
    if end < 0:
        raise ProtocolError("IP discovery response address is not NUL-terminated")
    raw = field[:end]
    if not raw.isascii():
        raise ProtocolError("IP discovery response address is not ASCII")
    address = raw.decode("ascii")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ProtocolError(
            f"IP discovery response address {address!r} is not an IPv4 or IPv6 literal"
        ) from None
    if port == 0:
        raise ProtocolError("IP discovery response port is 0")
    return DiscoveredAddress(ssrc, address, port)


def _unpack(packet: bytes, expected_type: int) -> tuple[int, bytes, int]:
    name = _NAMES[expected_type]
    if len(packet) != IP_DISCOVERY_SIZE:
        raise ProtocolError(
            f"IP discovery {name} must be {IP_DISCOVERY_SIZE} bytes, got {len(packet)}"
        )
    packet_type, length, ssrc, address, port = _PACKET.unpack(packet)
    if packet_type != expected_type:
        raise ProtocolError(
            f"IP discovery {name} must have type {expected_type}, got {packet_type}"
        )
    if length != _BODY_LENGTH:
        raise ProtocolError(f"IP discovery {name} must have length {_BODY_LENGTH}, got {length}")
    return ssrc, address, port


def _check_ssrc(ssrc: int) -> None:
    if isinstance(ssrc, bool) or not isinstance(ssrc, int) or not 0 <= ssrc <= 0xFFFFFFFF:
        raise UsageError(f"ssrc must be an int in 0..{0xFFFFFFFF}, got {ssrc!r}")
