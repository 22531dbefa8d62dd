"""The voice connection's UDP socket: IP discovery, keep-alive and receiving, as one task.

The socket is a plain non-blocking stdlib socket: a send is one system call, and trio is only
asked to wait (``wait_writable``) when the kernel says EAGAIN; that is the cheapest send path
trio offers, and the send issue's 50 packets a second per connection run through it.

It is ``connect()``-ed to the voice server. The kernel then delivers only the voice server's
datagrams (anything from another address is discarded before it reaches us: not counted, and
never parsed), and a ``send`` skips the per-call address handling and route lookup of
``sendto``: measured on the project's 2-core machine, 2.6 µs against 8.9 µs per datagram,
which at 1000 streams is a third of a core. Every datagram from the voice server that is
dropped (malformed, failing authentication, arriving before the key) is counted by reason;
none of them can end the connection.

A resume keeps this socket (and so the SSRC's address as the voice server saw it); only a new
voice session (a new Ready) replaces it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable

import trio

from .._core.ip_discovery import (
    IP_DISCOVERY_SIZE,
    DiscoveredAddress,
    build_request,
    parse_response,
)
from .._core.rtp import is_rtcp
from .._core.transport import DecryptedPacket, TransportCipher
from .._errors import DecryptionFailed, ProtocolError

__all__ = [
    "DISCOVERY_ATTEMPTS",
    "DISCOVERY_TIMEOUT",
    "KEEPALIVE_INTERVAL",
    "VoiceUdp",
]

#: Seconds to wait for each IP discovery answer, and how many requests to send: UDP may lose a
#: few datagrams, but a voice server that answers none of five is not reachable.
DISCOVERY_TIMEOUT = 1.0
DISCOVERY_ATTEMPTS = 5
#: Seconds between keep-alives. A NAT forgets an idle UDP mapping after ~30 s; Discord's own
#: clients send one every 5 s. The keep-alive is an IP discovery request: every voice server
#: understands it, so it never shows up as garbage on the other side.
KEEPALIVE_INTERVAL = 5.0
_MAX_DATAGRAM = 4096

Discovered = Callable[[int, DiscoveredAddress], Awaitable[None]]
DiscoveryFailed = Callable[[int, str], Awaitable[None]]


class VoiceUdp:
    """One voice session's UDP socket towards ``(ip, port)``; run :meth:`run` as a task."""

    def __init__(
        self,
        connection_id: int,
        ip: str,
        port: int,
        ssrc: int,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.connection_id = connection_id
        self._on_change = on_change
        self.ssrc = ssrc
        self._server = (ip, port)
        self._log = log
        self._sock: socket.socket | None = None
        self.cipher: TransportCipher | None = None
        self.received = 0
        """Datagrams that decrypted."""
        self.dropped: Counter[str] = Counter()
        """Dropped datagrams by reason: malformed, undecryptable, no_key, rtcp."""
        self.on_packet: Callable[[DecryptedPacket], None] | None = None
        """Called with each decrypted packet (the receive path hooks in here)."""

    def __repr__(self) -> str:
        return (
            f"<VoiceUdp #{self.connection_id} ssrc={self.ssrc} received={self.received} "
            f"dropped={sum(self.dropped.values())}>"
        )

    def install(self, cipher: TransportCipher) -> None:
        self.cipher = cipher

    async def send(self, datagram: bytes) -> None:
        """Send one datagram to the voice server; waits only if the kernel's buffer is full."""
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                sock.send(datagram)
                return
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
            except OSError as exc:
                # ICMP "port unreachable" from an earlier send and the like: UDP is lossy.
                self._log.debug("UDP send failed: %s", exc.strerror or exc)
                return

    def send_nowait(self, datagram: bytes) -> bool:
        """Send one datagram without ever waiting; False if it was not sent.

        The voice sender's path: a frame the kernel has no room for now would be late by the
        time there is, and waiting would delay the frames after it, so it is dropped instead.
        """
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.send(datagram)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._log.debug("UDP send failed: %s", exc.strerror or exc)
            return False
        return True

    async def run(self, discovered: Discovered, failed: DiscoveryFailed) -> None:
        """Discover our address, report it, then keep alive and receive until cancelled."""
        try:
            address = await self._resolve()
        except OSError as exc:
            await failed(self.connection_id, f"cannot resolve the voice server address: {exc}")
            return
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            try:
                sock.connect(address)  # UDP: no packet is sent, the kernel only binds the peer
            except OSError as exc:
                await failed(self.connection_id, f"cannot reach the voice server: {exc}")
                return
            self._sock = sock
            result = await self._discover(sock)
            if isinstance(result, str):
                await failed(self.connection_id, result)
                return
            self._log.debug("IP discovery: %s:%d", result.address, result.port)
            await discovered(self.connection_id, result)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keepalive)
                await self._receive_forever(sock)
        finally:
            self._sock = None
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _resolve(self) -> tuple[str, int]:
        host, port = self._server
        try:
            ipaddress.ip_address(host)
            return host, port
        except ValueError:
            pass
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(errno.EHOSTUNREACH, "no address")
        sockaddr = infos[0][4]
        return str(sockaddr[0]), int(sockaddr[1])

    async def _discover(self, sock: socket.socket) -> DiscoveredAddress | str:
        """Our address as the voice server sees it, or why discovery failed, in words.

        Until it answers, everything the voice server sends should be the answer: anything else
        is counted as malformed, and the last such reason is what the failure reports, since
        "no answer" would send a user looking for a firewall when the server is at fault.
        """
        request = build_request(self.ssrc)
        malformed: str | None = None
        for _ in range(DISCOVERY_ATTEMPTS):
            await self.send(request)
            with trio.move_on_after(DISCOVERY_TIMEOUT):
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    for data in self._drain(sock):
                        try:
                            result = parse_response(data)
                        except ProtocolError as exc:
                            self.dropped["malformed"] += 1
                            malformed = str(exc)
                            continue
                        if result.ssrc == self.ssrc:
                            return result
                        self.dropped["malformed"] += 1
                        malformed = f"the reply was for SSRC {result.ssrc}, not ours ({self.ssrc})"
        if malformed is not None:
            return (
                f"UDP IP discovery failed: the voice server's replies were malformed "
                f"({self.dropped['malformed']} of them; the last: {malformed})"
            )
        return (
            f"UDP IP discovery got no answer from the voice server after "
            f"{DISCOVERY_ATTEMPTS} attempts"
        )

    def _drain(self, sock: socket.socket) -> list[bytes]:
        """Every datagram waiting (the connected socket gets the voice server's only)."""
        datagrams: list[bytes] = []
        while True:
            try:
                data = sock.recv(_MAX_DATAGRAM)
            except BlockingIOError:
                return datagrams
            except OSError as exc:
                # An ICMP error queued by an earlier send; the next read may still succeed.
                self._log.debug("UDP receive error: %s", exc.strerror or exc)
                return datagrams
            datagrams.append(data)

    async def _receive_forever(self, sock: socket.socket) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            for data in self._drain(sock):
                self._receive(data)
            if self._on_change is not None:
                # Once per batch, not per datagram: counters are for statistics and tests.
                self._on_change()

    def _receive(self, data: bytes) -> None:
        if len(data) == IP_DISCOVERY_SIZE and data[:2] == b"\x00\x02":
            return  # the answer to a keep-alive
        if is_rtcp(data):
            self.dropped["rtcp"] += 1
            return
        cipher = self.cipher
        if cipher is None:
            self.dropped["no_key"] += 1
            return
        try:
            packet = cipher.decrypt(data)
        except DecryptionFailed:
            self.dropped["undecryptable"] += 1
            return
        except ProtocolError:
            self.dropped["malformed"] += 1
            return
        self.received += 1
        if self.on_packet is not None:
            self.on_packet(packet)

    async def _keepalive(self) -> None:
        request = build_request(self.ssrc)
        while True:
            await trio.sleep(KEEPALIVE_INTERVAL)
            await self.send(request)
