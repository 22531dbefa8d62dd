"""One voice websocket, from opening to closing, as one task.

Each websocket the state machine asks for gets its own task and number. The task reports what
happens (opened, each frame, closed with a code, failed to open) to a handler, tagged with that
number, and the state machine ignores reports about websockets it has already replaced. Closing
is always the task's own job, in a ``finally``: cancelling the task closes the websocket with the
code last asked for (4000 keeps the voice session resumable) and closes the TCP stream under it,
which trio-websocket alone would leak when the peer closes first.
"""

from __future__ import annotations

import logging
import ssl
from typing import Protocol

import trio
import trio_websocket

from .._core.voice.frames import MAX_BINARY_FRAME, MAX_TEXT_FRAME
from .websocket import WebSocketConnectFailed, close_websocket, connect_websocket

__all__ = ["CLOSE_GRACE", "VoiceWebSocket", "WebSocketHandler"]

#: How long closing waits for the server's close frame. Short: the server is often the one
#: that went away, and a resume is waiting behind the close.
CLOSE_GRACE = 1.0

_SEND_ERRORS = (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


class WebSocketHandler(Protocol):
    async def _websocket_opened(self, connection_id: int) -> None: ...

    async def _websocket_message(self, connection_id: int, message: str | bytes) -> None: ...

    async def _websocket_closed(self, connection_id: int, code: int | None) -> None: ...

    async def _websocket_failed(self, connection_id: int, detail: str, *, fatal: bool) -> None: ...


class VoiceWebSocket:
    """The task for websocket number ``connection_id``; start :meth:`run` in a nursery."""

    def __init__(
        self,
        connection_id: int,
        url: str,
        handler: WebSocketHandler,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        *,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
    ) -> None:
        self.connection_id = connection_id
        self._url = url
        self._handler = handler
        self._log = log
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._connection: trio_websocket.WebSocketConnection | None = None
        self._close_code = 1000
        self._scope = trio.CancelScope()
        self.done = trio.Event()
        """Set once the websocket is closed and its task is over."""

    def __repr__(self) -> str:
        return f"<VoiceWebSocket #{self.connection_id}>"

    def close(self, code: int) -> None:
        """Close with ``code`` (whatever stage the task is at); returns at once."""
        self._close_code = code
        self._scope.cancel()

    async def send(self, frame: str | bytes) -> None:
        """Send one frame (JSON text, or a DAVE binary frame); a closed websocket is not an
        error here, its reader reports it."""
        connection = self._connection
        if connection is None:
            return
        try:
            await connection.send_message(frame)
        except (
            trio_websocket.ConnectionClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            self._log.debug("voice websocket #%d: send on a closed websocket", self.connection_id)

    async def run(self) -> None:
        """Open, identify through the handler, read until closed; always close on the way out.

        The whole task is shielded, because an outer cancellation would also kill
        trio-websocket's reader (which lives in this task's nursery) and with it the close
        handshake, so every close would wait out :data:`CLOSE_GRACE` and then look abnormal to
        the server. The owner ends this task through :meth:`close`, always and promptly; the
        connection's own scope covers connecting and reading, never the close.
        """
        failed: WebSocketConnectFailed | None = None
        closed: tuple[int | None] | None = None
        try:
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as nursery:
                    opened = None
                    try:
                        with self._scope:
                            opened = await connect_websocket(
                                nursery,
                                self._url,
                                ssl_context=self._ssl_context,
                                connect_timeout=self._connect_timeout,
                                max_message_size=max(MAX_TEXT_FRAME, MAX_BINARY_FRAME),
                            )
                            closed = await self._read(opened[0])
                    except WebSocketConnectFailed as exc:
                        failed = exc
                    finally:
                        self._connection = None
                        if opened is not None:
                            await close_websocket(
                                opened[0], opened[1], code=self._close_code, grace=CLOSE_GRACE
                            )
                        nursery.cancel_scope.cancel()
        finally:
            self.done.set()
        if failed is not None and not self._scope.cancel_called:
            await self._handler._websocket_failed(
                self.connection_id, str(failed), fatal=failed.certificate
            )
        if closed is not None:
            await self._handler._websocket_closed(self.connection_id, _peer_code(closed[0]))

    async def _read(
        self, connection: trio_websocket.WebSocketConnection
    ) -> tuple[int | None] | None:
        self._connection = connection
        try:
            await self._handler._websocket_opened(self.connection_id)
            while True:
                message = await connection.get_message()
                await self._handler._websocket_message(self.connection_id, message)
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            return (None if reason is None else reason.code,)


def _peer_code(code: int | None) -> int | None:
    # 1005 (no status) and 1006 (abnormal) are what trio-websocket reports when no close frame
    # came: both mean the connection dropped.
    if code in (1005, 1006):
        return None
    return code
