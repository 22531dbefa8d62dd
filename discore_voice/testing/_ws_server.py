"""What the simulator's main gateway and voice gateway share: serving websockets, and running one.

:func:`serve_websockets` listens (with TLS when given a context), bounds each opening handshake,
and hands every accepted websocket to a handler; a handler's failure is logged and closes that
connection only. :class:`ServedConnection` is the skeleton of one connection: a writer task
drains what the server queued (frames, then at most one close), and a reader loop hands each
frame to :meth:`ServedConnection.handle`, closes with a :class:`Violation`'s code, enforces an
optional heartbeat deadline, and turns an unexpected error into the server's "crashed" close
code instead of letting it reach the simulator's nursery. The two gateways differ only in what
they do with a frame, what they greet a client with, and which codes they use.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Final, Literal

import trio
import trio_websocket

from ._faults import ABRUPT

__all__ = ["ServedConnection", "Violation", "port_of", "serve_websockets"]

#: Seconds a client may take to finish the opening handshake.
HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds a close handshake may take before the TCP connection is dropped.
CLOSE_TIMEOUT: Final = 2.0

Handler = Callable[[trio_websocket.WebSocketRequest, trio.abc.Stream], Awaitable[None]]


class Violation(Exception):
    """The client broke the protocol; its connection closes with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


async def serve_websockets(
    handler: Handler,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    max_message_size: int,
    log: logging.Logger,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the bound port once listening."""
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
    for listener in await trio.open_tcp_listeners(port, host=host):
        if ssl_context is not None:
            listeners.append(trio.SSLListener(listener, ssl_context, https_compatible=True))
        else:
            listeners.append(listener)
    task_status.started(port_of(listeners[0]))

    async def accept(stream: trio.abc.Stream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                request = None
                with trio.move_on_after(HANDSHAKE_TIMEOUT):
                    request = await trio_websocket.wrap_server_stream(
                        nursery, stream, max_message_size=max_message_size
                    )
                if request is not None:
                    await handler(request, stream)
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("a websocket connection failed; the simulator carries on")
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(accept, listeners)


def port_of(listener: trio.abc.Listener[trio.abc.Stream]) -> int:
    if isinstance(listener, trio.SSLListener):
        listener = listener.transport_listener
    assert isinstance(listener, trio.SocketListener)
    port: int = listener.socket.getsockname()[1]
    return port


class ServedConnection:
    """One accepted websocket; subclasses say what a frame means (see the module docstring).

    ``heartbeat_deadline`` (trio time) closes the connection with :meth:`heartbeat_timed_out`
    when no frame extends it in time; ``crash`` is the close for the server's own bugs.
    """

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        stream: trio.abc.Stream,
        *,
        crash: tuple[int, str],
        log: logging.Logger,
    ) -> None:
        self.ws = ws
        self._stream = stream
        self._crash = crash
        self._log = log
        self._send_in, self._send_out = trio.open_memory_channel[str | bytes | _Close](math.inf)
        self.closing = False
        self.server_close: tuple[int, str] | None = None
        self.heartbeat_deadline = math.inf

    # -- what subclasses provide ---------------------------------------------------------------

    def greet(self) -> None:
        """Queue the first message (Hello); called once the writer runs."""

    def handle(self, message: str | bytes) -> None:
        """One frame from the client; raise :class:`Violation` to close the connection."""
        raise NotImplementedError

    def heartbeat_timed_out(self) -> tuple[int, str]:
        """The close for a client whose heartbeats stopped."""
        raise NotImplementedError

    def handled(self) -> None:
        """After each frame was handled: a place to announce the change."""

    def finished(self, code: int, by: Literal["server", "client"]) -> None:
        """The connection is over; ``code`` is the close code (1006 when it just dropped)."""

    # -- what the server uses --------------------------------------------------------------------

    def queue(self, frame: str | bytes) -> None:
        """Send ``frame`` after what is already queued; nothing once closing."""
        if self.closing:
            return
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send_in.send_nowait(frame)

    def close(self, code: int, reason: str = "") -> bool:
        """Close with ``code`` after what is queued (:data:`ABRUPT` drops the TCP connection);
        False if it was closing already."""
        if self.closing:
            return False
        self.closing = True
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send_in.send_nowait(_Close(code, reason))
        return True

    async def run(self) -> None:
        try:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, nursery.cancel_scope)
                    self.greet()
                    await self._reader(nursery.cancel_scope)
            except Exception:
                # A simulator bug must look like the server's own hiccup, and stay here.
                code, reason = self._crash
                self._log.exception("internal error on a connection; closing it with %d", code)
                self.closing = True
                self.server_close = (code, reason)
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self.ws.aclose(code, reason)
        finally:
            self._send_in.close()
            if self.server_close is not None:
                self.finished(self.server_close[0], "server")
            else:
                closed = self.ws.closed
                self.finished(closed.code if closed is not None else ABRUPT, "client")

    async def _writer(self, cancel_scope: trio.CancelScope) -> None:
        try:
            async for item in self._send_out:
                if isinstance(item, _Close):
                    self.server_close = (item.code, item.reason)
                    if item.code == ABRUPT:
                        self._log.info("dropping a connection without a close frame")
                        await trio.aclose_forcefully(self._stream)
                    else:
                        self._log.info("closing a connection with %d", item.code)
                        with trio.move_on_after(CLOSE_TIMEOUT):
                            await self.ws.aclose(item.code, item.reason)
                    break
                await self.ws.send_message(item)
        except (
            trio_websocket.ConnectionClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            pass
        cancel_scope.cancel()

    async def _reader(self, cancel_scope: trio.CancelScope) -> None:
        while not self.closing:
            try:
                with trio.move_on_at(self.heartbeat_deadline) as timeout:
                    message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                cancel_scope.cancel()
                return
            if timeout.cancelled_caught:
                self.close(*self.heartbeat_timed_out())
                return
            try:
                self.handle(message)
            except Violation as violation:
                self._log.info("client violation, closing with %d", violation.code)
                self.close(violation.code, violation.reason)
                return
            self.handled()
