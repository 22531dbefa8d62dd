"""The voice connection's UDP socket: IP discovery, keep-alive and receiving, as one task.

The socket is a plain non-blocking stdlib socket ``connect()``-ed to the voice server. The kernel
then delivers only the voice server's datagrams (anything from another address is discarded
before it reaches us: not counted, and never parsed), and a ``send`` skips the per-call address
handling and route lookup of ``sendto``: measured on the project's 2-core machine, 2.6 µs against
8.9 µs per datagram, which at 1000 streams is a third of a core. The send path writes to it
directly (the session task puts the socket in the sender's link); this task only reads.

Every datagram from the voice server goes to the connection's receive pipeline (in the core:
``_core/receive/pipeline.py``), which decrypts, filters and counts it, and buffers it when
someone receives; none of it can end the connection. Datagrams before the key are counted here.
While a receiver plays members out, its 20 ms tick reads the socket instead and this task parks
(``receive/tap.py``): one wake-up per tick for all of receiving.
The keys come from the session task (:meth:`VoiceUdp.set_media`), never from polling.

Keep-alives (an IP discovery request every 5 s, which every voice server answers) are also how a
dead path is noticed: when none has been answered for :data:`SILENT_AFTER` seconds the task
reports the silence, and the core re-establishes the path with a fresh socket.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections import Counter
from dataclasses import dataclass
from typing import Final

import trio

from ..._core.ip_discovery import (
    IP_DISCOVERY_SIZE,
    DiscoveredAddress,
    build_request,
    parse_response,
)
from ..._core.voice.commands import Media
from ..._errors import ProtocolError
from .messages import (
    DaveFailing,
    MediaFlowing,
    Message,
    UdpDiscovered,
    UdpFailed,
    UdpSilent,
    report,
)
from .receive.tap import ReceiveTap

__all__ = [
    "DISCOVERY_ATTEMPTS",
    "DISCOVERY_TIMEOUT",
    "KEEPALIVE_INTERVAL",
    "SILENT_AFTER",
    "UdpStats",
    "VoiceUdp",
]

#: Seconds to wait for each IP discovery answer, and how many requests to send: UDP may lose a
#: few datagrams, but a voice server that answers none of five is not reachable.
DISCOVERY_TIMEOUT: Final = 1.0
DISCOVERY_ATTEMPTS: Final = 5
#: Seconds between keep-alives. A NAT forgets an idle UDP mapping after ~30 s; Discord's own
#: clients send one every 5 s.
KEEPALIVE_INTERVAL: Final = 5.0
#: Seconds without an answer to any keep-alive (six of them) before the path counts as dead.
SILENT_AFTER: Final = 30.0
#: Above this many datagrams a second (ten members speaking), the task takes them in batches...
BUSY_DATAGRAMS_PER_SECOND: Final = 500
#: ...waking at most every 4 ms: at 100 speakers a batch is ~20 datagrams, well within the
#: socket's buffer, and the wait is a fraction of the playout buffer's depth.
COALESCE_SECONDS: Final = 0.004
_MAX_DATAGRAM: Final = 4096
_KEEPALIVE_ANSWER: Final = b"\x00\x02"


@dataclass(frozen=True, slots=True)
class UdpStats:
    """What a connection's UDP path received; cumulative over the connection's life.

    ``dropped`` counts datagrams from the voice server that were dropped, by reason:
    ``malformed``, ``undecryptable``, ``no_key``, ``rtcp``, ``duplicate`` (a packet received
    already, or a replay) and ``stale`` (too far behind a sender's newest to tell).
    ``restarts`` counts the times a path that stopped answering keep-alives was re-established.
    """

    received: int
    dropped: dict[str, int]
    keepalives_sent: int
    keepalives_answered: int
    restarts: int


class VoiceUdp:
    """One UDP socket towards ``(ip, port)``, number ``generation``; run :meth:`run` as a task.

    Counters live on the object and survive the task; a connection sums its sockets' counters.
    """

    def __init__(
        self,
        generation: int,
        ip: str,
        port: int,
        ssrc: int,
        inbox: trio.MemorySendChannel[Message],
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        tap: ReceiveTap | None = None,
    ) -> None:
        self.generation = generation
        self.ssrc = ssrc
        self._server = (ip, port)
        self._inbox = inbox
        self._log = log
        self._sock: socket.socket | None = None
        self._media: Media | None = None
        self._flowing = False  # new media decrypted with the current keys...
        self._flowing_reported = False  # ...and the session task told so
        self._wake: trio.Event | None = None  # set to unpark the task (see _read_forever)
        self._tap = tap if tap is not None else ReceiveTap()
        self._last_answer = 0.0
        self.dropped: Counter[str] = Counter()
        self.keepalives_sent = 0
        self.keepalives_answered = 0

    def __repr__(self) -> str:
        return (
            f"<VoiceUdp #{self.generation} ssrc={self.ssrc} dropped={sum(self.dropped.values())}>"
        )

    @property
    def sock(self) -> socket.socket | None:
        """The connected socket, once discovery may start; the sender's link sends through it."""
        return self._sock

    def set_media(self, media: Media | None) -> None:
        """The keys to decrypt with from now on (pushed by the session task)."""
        if media is not None and media.udp_generation != self.generation:
            media = None
        if media is not self._media:
            self._media = media
            self._flowing = self._flowing_reported = False

    # --- the task -------------------------------------------------------------------------

    async def run(self) -> None:
        """Discover our address, report it, then keep alive and receive until cancelled."""
        try:
            address = await self._resolve()
        except OSError as exc:
            await report(
                self._inbox,
                UdpFailed(self.generation, f"cannot resolve the voice server address: {exc}"),
            )
            return
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            try:
                sock.connect(address)  # UDP: no packet is sent, the kernel only binds the peer
            except OSError as exc:
                await report(
                    self._inbox, UdpFailed(self.generation, f"cannot reach the voice server: {exc}")
                )
                return
            self._sock = sock
            result = await self._discover(sock)
            if isinstance(result, str):
                await report(self._inbox, UdpFailed(self.generation, result))
                return
            self._log.debug("IP discovery: %s:%d", result.address, result.port)
            self._last_answer = trio.current_time()
            await report(self._inbox, UdpDiscovered(self.generation, result))
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

    def _send(self, datagram: bytes) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.send(datagram)
        except OSError as exc:
            # A full buffer, or an ICMP "port unreachable" from an earlier send: UDP is lossy.
            self._log.debug("UDP send failed: %s", exc.strerror or exc)

    async def _discover(self, sock: socket.socket) -> DiscoveredAddress | str:
        """Our address as the voice server sees it, or why discovery failed, in words.

        Until it answers, everything the voice server sends should be the answer: anything else
        is counted as malformed, and the last such reason is what the failure reports, since
        "no answer" would send a user looking for a firewall when the server is at fault.
        """
        request = build_request(self.ssrc)
        malformed: str | None = None
        for _ in range(DISCOVERY_ATTEMPTS):
            self._send(request)
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
        tap = self._tap
        tap.attach(self)
        try:
            await self._read_forever(sock, tap)
        finally:
            tap.detach(self)

    async def _read_forever(self, sock: socket.socket, tap: ReceiveTap) -> None:
        window_start, window_count, busy = trio.current_time(), 0, False
        while True:
            if tap.paced:
                # A receiver is playing members out and reads the socket at its ticks
                # (``receive/tap.py``): park until it stops, or has something to report.
                wake = self._wake = trio.Event()
                try:
                    await wake.wait()
                finally:
                    self._wake = None
                await self._report()
                window_start, window_count = trio.current_time(), 0
                continue
            if busy:
                # Many members speaking and nobody receiving: let datagrams gather for a few
                # milliseconds and take them in one wake-up, instead of one trio wake-up per
                # datagram (5000 a second with 100 speakers).
                await trio.sleep(COALESCE_SECONDS)
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            window_count += self._read(sock, now)
            if now - window_start >= 1.0:
                busy = window_count >= BUSY_DATAGRAMS_PER_SECOND * (now - window_start)
                window_start, window_count = now, 0
            await self._report()

    def _read(self, sock: socket.socket, now: float) -> int:
        """Every waiting datagram into the pipeline; how many there were."""
        flowing = False
        count = 0
        for data in self._drain(sock):
            count += 1
            flowing = self._receive(data, now) or flowing
        if flowing:
            self._flowing = True
            media = self._media
            if media is not None and media.receive.receiving:
                self._tap.media_arrived()
        return count

    def pump(self, now: float) -> None:
        """The receiver's tick reads the socket (see ``receive/tap.py``); reports wake us."""
        sock = self._sock
        if sock is None:
            return
        self._read(sock, now)
        if self._wake is not None and self._report_due():
            self._wake.set()

    def unpaced(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _report_due(self) -> bool:
        media = self._media
        return (self._flowing and not self._flowing_reported) or (
            media is not None and media.receive.dave_recovery_wanted
        )

    async def _report(self) -> None:
        if self._flowing and not self._flowing_reported:
            self._flowing_reported = True
            await report(self._inbox, MediaFlowing(self.generation))
        media = self._media
        if media is not None and media.receive.dave_recovery_wanted:
            media.receive.dave_recovery_wanted = False
            await report(self._inbox, DaveFailing(self.generation))

    def _receive(self, data: bytes, now: float) -> bool:
        """Count one datagram, and hand media to the receive pipeline; True if it was new media."""
        if len(data) == IP_DISCOVERY_SIZE and data[:2] == _KEEPALIVE_ANSWER:
            self.keepalives_answered += 1
            self._last_answer = now
            return False
        media = self._media
        if media is None:
            self.dropped["no_key"] += 1
            return False
        return media.receive.datagram(media.cipher, data, now)

    async def _keepalive(self) -> None:
        request = build_request(self.ssrc)
        last_report = trio.current_time()
        while True:
            await trio.sleep(KEEPALIVE_INTERVAL)
            self._send(request)
            self.keepalives_sent += 1
            now = trio.current_time()
            if now - self._last_answer >= SILENT_AFTER and now - last_report >= SILENT_AFTER:
                # Reported again every SILENT_AFTER while it lasts: the core may have been busy
                # reconnecting the websocket the first time.
                last_report = now
                self._log.warning(
                    "no UDP keep-alive answered for %.0f s: the path may be dead",
                    now - self._last_answer,
                )
                await report(self._inbox, UdpSilent(self.generation))
