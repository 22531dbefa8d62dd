"""Where the UDP task and the receiver meet: who reads the socket, and what wakes the receiver.

Waking the process costs far more than the receive work of a tick: ~0.4 ms of CPU per wake on
the project's 2-core machine (``BENCHMARKS.md``), against ~10 µs a packet. A receiver that woke
every 20 ms while nobody spoke paid 0.020 CPU-s per second for nothing, and one that let the
UDP task wake for each batch of datagrams as well paid five wakes per tick at 100 speakers. So:

- **while someone is played out**, the receiver's tick reads the socket itself
  (:meth:`ReceiveTap.pump`) just before it ticks, and the UDP task stays parked: one wake per
  20 ms for all of receiving, whatever the number of speakers. The datagrams wait in the
  kernel's buffer for at most a tick, which the playout buffer's depth hides;
- **while nobody is**, the receiver does not tick: it sleeps until the UDP task, reading on
  readiness again, sees new media reach the pipeline (:meth:`ReceiveTap.media_arrived`), or
  until the connection changes (it may have ended).

One tap per connection, made by the session task; UDP sockets come and go (a new one per
voice server, or when a path dies) and attach to it once their IP discovery is done.
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["ReceiveTap", "TapReader"]


class TapReader(Protocol):
    """The UDP side of the tap (``VoiceUdp``)."""

    def pump(self, now: float) -> None:
        """Read every waiting datagram into the receive pipeline, now, without blocking."""

    def unpaced(self) -> None:
        """The receiver stopped reading for it: wait on the socket again."""


class ReceiveTap:
    """See the module docstring."""

    __slots__ = ("_paced", "_reader", "_wake")

    def __init__(self) -> None:
        self._reader: TapReader | None = None
        self._paced = False
        self._wake: trio.Event | None = None

    def __repr__(self) -> str:
        mode = "paced" if self._paced else "on readiness"
        return f"<ReceiveTap {mode} reader={'yes' if self._reader is not None else 'none'}>"

    # --- the UDP task's side ------------------------------------------------------------------

    @property
    def paced(self) -> bool:
        """Whether the receiver reads the socket at its ticks (the UDP task parks meanwhile)."""
        return self._paced

    def attach(self, reader: TapReader) -> None:
        self._reader = reader

    def detach(self, reader: TapReader) -> None:
        if self._reader is reader:
            self._reader = None

    def media_arrived(self) -> None:
        """New media reached a receiving pipeline: a sleeping receiver starts ticking."""
        if self._wake is not None:
            self._wake.set()

    # --- the receiver's side ------------------------------------------------------------------

    def wake(self) -> None:
        """The connection changed (the session task): a sleeping receiver looks again."""
        if self._wake is not None:
            self._wake.set()

    async def wait_for_media(self) -> None:
        """Sleep until media arrives or the connection changes; the socket is read on readiness."""
        self.pace(False)
        wake = self._wake = trio.Event()
        try:
            await wake.wait()
        finally:
            self._wake = None

    def pace(self, paced: bool) -> None:
        """Whether the receiver reads the socket at its ticks from now on."""
        if paced == self._paced:
            return
        self._paced = paced
        if not paced and self._reader is not None:
            self._reader.unpaced()

    def pump(self, now: float) -> None:
        """Read what the socket holds into the pipeline, before a tick (while paced)."""
        if self._reader is not None:
            self._reader.pump(now)
