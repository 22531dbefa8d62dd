"""One voice websocket, from opening to closing, as one task.

Each websocket the core asks for gets its own task and generation number. The task reports what
happens (opened, each frame, closed with a code, failed to open) to the session task, tagged with
that number, and the core ignores reports about websockets it has already replaced. Closing is
always the task's own job, in a ``finally``: cancelling the task closes the websocket with the
code last asked for (4000 keeps the voice session resumable) and closes the TCP stream under it,
which trio-websocket alone would leak when the peer closes first.

Frames are read one at a time and handed over through the session task's bounded channel, so a
server flooding us is slowed down by TCP back-pressure instead of filling memory.
"""

from __future__ import annotations

import logging
import ssl
from typing import Final

import trio
import trio_websocket

from ..._core.voice.frames import MAX_BINARY_FRAME, MAX_TEXT_FRAME
from ..websocket import WebSocketConnectFailed, close_websocket, connect_websocket
from .messages import (
    Message,
    WebSocketClosed,
    WebSocketFailed,
    WebSocketFrame,
    WebSocketOpened,
    report,
)

__all__ = ["CLOSE_GRACE", "SEND_TIMEOUT", "VoiceWebSocket"]

#: How long closing waits for the server's close frame. Short: the server is often the one
#: that went away, and a resume is waiting behind the close.
CLOSE_GRACE: Final = 1.0
#: Seconds one frame may take to send. A server that stops reading would otherwise hold the
#: session task (and every heartbeat behind it) for as long as TCP keeps trying.
SEND_TIMEOUT: Final = 10.0


class VoiceWebSocket:
    """The task for websocket number ``generation``; start :meth:`run` in a nursery."""

    def __init__(
        self,
        generation: int,
        url: str,
        inbox: trio.MemorySendChannel[Message],
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        *,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
    ) -> None:
        self.generation = generation
        self._url = url
        self._inbox = inbox
        self._log = log
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._connection: trio_websocket.WebSocketConnection | None = None
        self._close_code = 1000
        self._scope = trio.CancelScope()
        self._stalled = False
        self.done = trio.Event()
        """Set once the websocket is closed and its task is over."""

    def __repr__(self) -> str:
        return f"<VoiceWebSocket #{self.generation}>"

    def close(self, code: int) -> None:
        """Close with ``code`` (whatever stage the task is at); returns at once."""
        self._close_code = code
        self._scope.cancel()

    async def send(self, frame: str | bytes) -> bool:
        """Send one frame (JSON text, or a DAVE binary frame); False if it could not be sent.

        A closed websocket is not an error here (its reader reports it); one that takes longer
        than :data:`SEND_TIMEOUT` is closed for resuming, and its reader reports that.
        """
        connection = self._connection
        if connection is None:
            return False
        try:
            with trio.fail_after(SEND_TIMEOUT):
                await connection.send_message(frame)
        except (
            trio_websocket.ConnectionClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            self._log.debug("voice websocket #%d: send on a closed websocket", self.generation)
            return False
        except trio.TooSlowError:
            self._log.warning(
                "voice websocket #%d: a send took over %g s; closing it",
                self.generation,
                SEND_TIMEOUT,
            )
            self._stalled = True
            self.close(4000)
            return False
        return True

    async def run(self) -> None:
        """Open, report each frame to the session task until closed; always close on the way out.

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
            await report(
                self._inbox, WebSocketFailed(self.generation, str(failed), failed.certificate)
            )
        elif closed is not None:
            await report(self._inbox, WebSocketClosed(self.generation, _peer_code(closed[0])))
        elif self._stalled:
            await report(self._inbox, WebSocketClosed(self.generation, None))

    async def _read(
        self, connection: trio_websocket.WebSocketConnection
    ) -> tuple[int | None] | None:
        self._connection = connection
        try:
            await self._inbox.send(WebSocketOpened(self.generation))
            while True:
                message = await connection.get_message()
                await self._inbox.send(WebSocketFrame(self.generation, message))
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            return (None if reason is None else reason.code,)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None  # the session task is gone: the connection is over


def _peer_code(code: int | None) -> int | None:
    # 1005 (no status) and 1006 (abnormal) are what trio-websocket reports when no close frame
    # came: both mean the connection dropped.
    if code in (1005, 1006):
        return None
    return code
