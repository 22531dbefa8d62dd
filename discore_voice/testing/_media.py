"""The simulator's UDP media server: IP discovery, transport decryption, statistics and relaying.

One socket serves every voice session, as on Discord, so packets are routed by SSRC and checked
against the address the session selected. Anything that cannot be attributed or authenticated is
a counted drop with a reason, never an exception: a bot under test that sends garbage must see
its audio missing from the recording and a drop counter move, while the simulator keeps serving
everyone else.

Sends are synchronous non-blocking ``sendto`` calls on the same socket (trio only waits for
receives): a relay then needs no task per packet, and a full send buffer is a counted drop, as
it would be on a real network. Only delayed datagrams (a fault) get a task, which sleeps on
trio's clock so a ``MockClock`` controls them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import trio

from .._core.ip_discovery import IP_DISCOVERY_SIZE, build_response, parse_request
from .._core.rtp import RtpHeader, is_rtcp
from .._core.transport import TransportCipher
from .._core.voice.frames import ServerBinaryMessage
from .._core.voice.payloads import ServerMessage
from .._errors import DecryptionFailed, ProtocolError, UsageError
from ._faults import UdpFaults
from ._recording import ReceivedPacket, Recording
from ._stats import ClockSource, MediaStats

__all__ = ["ONE_BYTE_EXTENSION_PROFILE", "AudioSink", "MediaEndpoint", "MediaServer", "Participant"]

logger = logging.getLogger("discore_voice.testing.media")

_MAX_DATAGRAM = 2048
#: RFC 8285's profile for one-byte-header extension elements, the kind Discord's clients send.
ONE_BYTE_EXTENSION_PROFILE = 0xBEDE
_MAX_PADDING = 255
# The preamble's length field is 16 bits.
_MAX_EXTENSION_WORDS = 0xFFFF
# Linux's SO_TIMESTAMPNS; the socket module does not export it. Its control message type has the
# same number, and carries a struct timespec of two native longs.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")
_SEND_ERRORS = (BlockingIOError, InterruptedError, ConnectionRefusedError, OSError)

Address = tuple[str, int]
#: A datagram and its peer (the source on receive, the destination on send).
_Datagram = tuple[bytes, Address]


class Participant(Protocol):
    """Someone in a voice channel: a bot's websocket session or a simulated member."""

    @property
    def user_id(self) -> int: ...

    def notify(self, message: ServerMessage) -> None:
        """Deliver a voice gateway message (Speaking, Clients Connect...) to this participant."""

    def notify_binary(self, message: ServerBinaryMessage) -> None:
        """Deliver a DAVE binary message (ops 25, 27, 29, 30) to this participant."""


class AudioSink(Protocol):
    """Where a listening simulated member receives what others send."""

    def __call__(self, source: MediaEndpoint, packet: ReceivedPacket) -> None: ...


@dataclass(eq=False)
class MediaEndpoint:
    """The media side of one participant: its SSRC, channel, keys and peer address.

    ``kind="remote"`` is a client on the network (a bot): the server decrypts what it sends with
    ``cipher_in`` and encrypts what it receives with ``cipher_out``. ``kind="member"`` is a
    simulated member living in this process: it hands Opus frames over directly and gets others'
    frames through ``sink``.
    """

    owner: Participant
    guild_id: int
    channel_id: int
    ssrc: int
    kind: Literal["remote", "member"] = "remote"
    cipher_in: TransportCipher | None = field(default=None, repr=False)
    cipher_out: TransportCipher | None = field(default=None, repr=False)
    address: Address | None = None
    sink: AudioSink | None = field(default=None, repr=False)
    speaking: int = 0

    @property
    def user_id(self) -> int:
        return self.owner.user_id

    @property
    def room(self) -> tuple[int, int]:
        return (self.guild_id, self.channel_id)


def _dressed(
    packet: ReceivedPacket, ssrc: int, padding: int, extension_body: bytes
) -> tuple[RtpHeader, bytes]:
    """The header and plaintext payload of a packet with RTP padding and/or an extension."""
    if not 0 <= padding <= _MAX_PADDING:
        raise UsageError(f"RTP padding is 0-{_MAX_PADDING} bytes, got {padding}")
    words, odd = divmod(len(extension_body), 4)
    if odd or words > _MAX_EXTENSION_WORDS:
        raise UsageError(
            f"an RTP extension body is a whole number of 32-bit words (at most "
            f"{_MAX_EXTENSION_WORDS}), got {len(extension_body)} bytes"
        )
    header = RtpHeader(
        packet.sequence,
        packet.timestamp,
        ssrc,
        padding=padding > 0,
        extension_profile=ONE_BYTE_EXTENSION_PROFILE if extension_body else None,
        extension_length=words,
    )
    payload = packet.payload
    if padding:
        # RFC 3550 5.1: the last padding octet counts the padding, itself included.
        payload += bytes(padding - 1) + bytes((padding,))
    return header, payload


def _kernel_arrival(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return None


class MediaServer:
    """One UDP socket on 127.0.0.1 for every session; start it with ``nursery.start(serve)``."""

    def __init__(self, *, on_change: Callable[[], None] | None = None) -> None:
        self.host = ""
        self.port = 0
        self.stats = MediaStats()
        #: What each user sent, decrypted, by user id (bots only: members' audio is scripted).
        self.recordings: dict[int, Recording] = {}
        #: Impairs datagrams the server sends (what bots receive).
        self.faults_to_client: UdpFaults[_Datagram] | None = None
        #: Impairs datagrams bots send, before the server looks at them.
        self.faults_from_client: UdpFaults[_Datagram] | None = None
        self._on_change = on_change
        self._by_ssrc: dict[int, MediaEndpoint] = {}
        self._rooms: dict[tuple[int, int], list[MediaEndpoint]] = {}
        self._raw: socket.socket | None = None
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<MediaServer {self.host}:{self.port} endpoints={len(self._by_ssrc)}>"

    def now_ns(self) -> int:
        """Now, on the clock arrivals are stamped with, so every gap is measured on one clock."""
        return time.time_ns() if self.stats.clock == "kernel" else time.monotonic_ns()

    @property
    def clock(self) -> ClockSource:
        """Which clock stamps arrivals: the kernel's receive timestamps, or ``monotonic_ns``."""
        return self.stats.clock

    # -- lifetime ------------------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        raw = socket.socket(family, socket.SOCK_DGRAM)
        try:
            raw.setblocking(False)
            raw.bind((host, port))
            clock: ClockSource = "monotonic"
            if sys.platform.startswith("linux"):
                try:
                    raw.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                    clock = "kernel"
                except OSError:
                    logger.info("SO_TIMESTAMPNS unavailable; arrival times use monotonic_ns")
            self.stats.clock = clock
            for stream in self.stats.streams.values():
                stream.clock = clock
            sock = trio.socket.from_stdlib_socket(raw)
        except BaseException:
            raw.close()
            raise
        with sock:
            self.host, self.port = raw.getsockname()[:2]
            self._raw = raw
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started(self.port)
                    await self._receive_loop(sock)
            finally:
                self._raw = None
                self._nursery = None

    async def _receive_loop(self, sock: trio.socket.SocketType) -> None:
        ancbufsize = socket.CMSG_SPACE(_TIMESPEC.size)
        kernel = self.stats.clock == "kernel"
        while True:
            try:
                data, ancdata, _flags, address = await sock.recvmsg(_MAX_DATAGRAM, ancbufsize)
            except OSError as exc:
                # ICMP port unreachable from an earlier send surfaces here on Linux; it says a
                # bot went away, which is no reason to stop serving the others.
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                raise
            arrival = _kernel_arrival(ancdata) if kernel else None
            if arrival is None:
                arrival = time.time_ns() if kernel else time.monotonic_ns()
            peer = cast("tuple[Any, ...]", address)
            source: Address = (str(peer[0]), int(peer[1]))
            self.stats.received += 1
            faults = self.faults_from_client
            if faults is None:
                self.handle_datagram(data, source, arrival)
                continue
            for delay, (datagram, origin) in faults.apply((data, source)):
                if delay <= 0:
                    self.handle_datagram(datagram, origin, arrival)
                else:
                    self._spawn(self._handle_later, delay, datagram, origin)
            # A dropped or held datagram changed the counters too; waiters must hear of it.
            self._changed()

    async def _handle_later(self, delay: float, datagram: bytes, source: Address) -> None:
        await trio.sleep(delay)
        self.handle_datagram(datagram, source, self.now_ns())

    def _spawn(self, fn: Callable[..., object], *args: object) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # -- registry ------------------------------------------------------------------------------

    def add_endpoint(self, endpoint: MediaEndpoint) -> None:
        if endpoint.ssrc in self._by_ssrc:
            raise UsageError(f"SSRC {endpoint.ssrc} is already in use")
        self._by_ssrc[endpoint.ssrc] = endpoint
        self._rooms.setdefault(endpoint.room, []).append(endpoint)
        self.stats.stream(endpoint.ssrc)
        self._changed()

    def remove_endpoint(self, endpoint: MediaEndpoint) -> None:
        if self._by_ssrc.get(endpoint.ssrc) is endpoint:
            del self._by_ssrc[endpoint.ssrc]
        room = self._rooms.get(endpoint.room)
        if room is not None and endpoint in room:
            room.remove(endpoint)
            if not room:
                del self._rooms[endpoint.room]
        self._changed()

    def endpoint(self, ssrc: int) -> MediaEndpoint | None:
        return self._by_ssrc.get(ssrc)

    def ssrc_in_use(self, ssrc: int) -> bool:
        return ssrc in self._by_ssrc

    def peers(self, endpoint: MediaEndpoint) -> Iterator[MediaEndpoint]:
        """Everyone else in the endpoint's channel, in joining order."""
        for other in list(self._rooms.get(endpoint.room, ())):
            if other is not endpoint:
                yield other

    def recording(self, user_id: int) -> Recording:
        recording = self.recordings.get(user_id)
        if recording is None:
            recording = self.recordings[user_id] = Recording(user_id)
        return recording

    # -- receiving -----------------------------------------------------------------------------

    def handle_datagram(self, data: bytes, source: Address, arrival_ns: int) -> None:
        """Route one datagram; public so a test can feed the pipeline without a socket."""
        stats = self.stats
        stats.datagrams += 1
        try:
            if len(data) == IP_DISCOVERY_SIZE and data[:2] == b"\x00\x01":
                self._ip_discovery(data, source)
            elif is_rtcp(data):
                stats.rtcp_packets += 1
            else:
                self._rtp(data, source, arrival_ns)
        except Exception:
            # The parsers raise only ProtocolError; anything else is a simulator bug, which must
            # not end the receive loop for every other session.
            logger.exception("internal error on a media datagram; dropped")
            stats.drop("internal_error")
        self._changed()

    def _ip_discovery(self, data: bytes, source: Address) -> None:
        try:
            ssrc = parse_request(data)
        except ProtocolError:
            self.stats.drop("malformed_ip_discovery")
            return
        self.stats.ip_discovery_requests += 1
        self._send(build_response(ssrc, source[0], source[1]), source, faults=False)

    def _rtp(self, data: bytes, source: Address, arrival_ns: int) -> None:
        stats = self.stats
        try:
            header, _ = RtpHeader.parse(data)
        except ProtocolError:
            stats.drop("malformed")
            return
        endpoint = self._by_ssrc.get(header.ssrc)
        if endpoint is None or endpoint.kind != "remote":
            stats.drop("unknown_ssrc")
            return
        if endpoint.cipher_in is None:
            stats.drop("no_session_key")
            return
        if endpoint.address is not None and endpoint.address != source:
            stats.drop("unknown_address")
            return
        try:
            decrypted = endpoint.cipher_in.decrypt(data)
        except DecryptionFailed:
            stats.drop("decrypt_failed")
            return
        except ProtocolError:
            stats.drop("malformed")
            return
        stats.rtp_packets += 1
        packet = ReceivedPacket(
            decrypted.header.sequence, decrypted.header.timestamp, decrypted.payload, arrival_ns
        )
        stats.stream(header.ssrc).observe(
            packet.sequence, packet.timestamp, packet.payload, arrival_ns
        )
        recording = self.recording(endpoint.user_id)
        recording.ssrc = header.ssrc
        recording.add(packet)
        self.relay(endpoint, packet)

    # -- sending -------------------------------------------------------------------------------

    def relay(
        self,
        source: MediaEndpoint,
        packet: ReceivedPacket,
        *,
        padding: int = 0,
        extension_body: bytes = b"",
    ) -> None:
        """Pass one Opus frame from ``source`` to everyone else in its channel.

        Remote peers get it re-encrypted with their own key and counter, under the sender's
        SSRC, exactly as Discord forwards a member's audio; listening members get it directly.
        ``padding`` (1-255 bytes, the P bit) and ``extension_body`` (a one-byte-header RTP
        extension, profile 0xBEDE, a whole number of 32-bit words) dress the forwarded packets
        the way Discord's own clients do: both sit inside the ciphertext in the rtpsize modes,
        so only a receiver that strips them after decrypting gets the frame back.
        """
        header: RtpHeader | None = None
        payload = packet.payload
        if padding or extension_body:
            header, payload = _dressed(packet, source.ssrc, padding, extension_body)
        for peer in self.peers(source):
            if peer.kind == "member":
                if peer.sink is not None:
                    peer.sink(source, packet)
                continue
            if peer.cipher_out is None or peer.address is None:
                continue
            if header is None:
                datagram = peer.cipher_out.encrypt_opus(
                    packet.sequence, packet.timestamp, source.ssrc, payload
                )
            else:
                datagram = peer.cipher_out.encrypt(header, payload, extension_body=extension_body)
            self.stats.relayed += 1
            self._send(datagram, peer.address)

    def send_raw(self, datagram: bytes, address: Address) -> None:
        """Send any datagram to a client (subject to the outbound faults): for scripted tests."""
        self._send(datagram, address)

    def _send(self, datagram: bytes, address: Address, *, faults: bool = True) -> None:
        injector = self.faults_to_client if faults else None
        if injector is None:
            self._send_now(datagram, address)
            return
        for delay, (data, peer) in injector.apply((datagram, address)):
            if delay <= 0:
                self._send_now(data, peer)
            else:
                self._spawn(self._send_later, delay, data, peer)

    async def _send_later(self, delay: float, datagram: bytes, address: Address) -> None:
        await trio.sleep(delay)
        self._send_now(datagram, address)

    def flush_faults(self) -> None:
        """Release datagrams the reorder fault is holding back, in both directions.

        At the end of a stream nothing overtakes a held datagram, so a test flushes it instead
        of waiting forever.
        """
        if self.faults_to_client is not None:
            for _, (data, peer) in self.faults_to_client.flush():
                self._send_now(data, peer)
        if self.faults_from_client is not None:
            for _, (data, peer) in self.faults_from_client.flush():
                self.handle_datagram(data, peer, self.now_ns())

    def _send_now(self, datagram: bytes, address: Address) -> None:
        raw = self._raw
        if raw is None:
            self.stats.drop("send_after_close")
            return
        try:
            raw.sendto(datagram, address)
        except _SEND_ERRORS:
            # A full buffer or a vanished peer: the network lost it, as UDP may.
            self.stats.drop("send_failed")
            return
        self.stats.sent += 1

    @contextlib.contextmanager
    def impair(
        self,
        *,
        to_client: UdpFaults[_Datagram] | None = None,
        from_client: UdpFaults[_Datagram] | None = None,
    ) -> Iterator[None]:
        """Apply faults for the duration of a ``with`` block."""
        self.faults_to_client, self.faults_from_client = to_client, from_client
        try:
            yield
        finally:
            self.faults_to_client = self.faults_from_client = None
