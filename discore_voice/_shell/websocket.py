"""Opening and closing a client websocket, around trio-websocket's two known problems.

trio-websocket reports a TLS failure as a ``ConnectionTimeout`` after its connect timeout, and
never closes its TCP socket when the peer closes first (a ``ResourceWarning`` surfaces later,
against unrelated code). So the TCP and TLS streams are opened here, with trio, where a TLS failure
is an ``ssl.SSLError`` we can name; trio-websocket only runs the websocket handshake over them
(``wrap_client_stream``); and the stream is closed here, explicitly, whatever happened.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio
import trio_websocket

from .._errors import shorten

__all__ = [
    "WebSocketConnectFailed",
    "WebSocketTarget",
    "close_websocket",
    "connect_websocket",
    "parse_websocket_url",
    "shielded_nursery",
]


class WebSocketConnectFailed(Exception):
    """The websocket could not be opened; ``certificate`` says whether TLS verification failed.

    Internal: the shard turns it into a retry, or a :class:`GatewayError` for a certificate that
    does not verify, which no retry can fix.
    """

    def __init__(self, message: str, *, certificate: bool = False) -> None:
        super().__init__(message)
        self.certificate = certificate


_CONNECT_ERRORS = (
    ssl.SSLError,
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
)

_CLOSE_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass(frozen=True, slots=True)
class WebSocketTarget:
    secure: bool
    host: str
    port: int
    resource: str

    @property
    def host_header(self) -> str:
        default = 443 if self.secure else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_websocket_url(url: str) -> WebSocketTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("not a ws:// or wss:// URL")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebSocketTarget(secure, parts.hostname, port, resource)


async def shielded_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    """Host a nursery that outside cancellation does not reach, until its scope is cancelled.

    The websocket's reader task runs here, so a connection whose user is being cancelled can
    still complete its close handshake (the peer's close frame must be read). Whoever starts it
    must cancel ``nursery.cancel_scope`` in a ``finally``.
    """
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()


async def connect_websocket(
    nursery: trio.Nursery,
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float,
    max_message_size: int,
) -> tuple[trio_websocket.WebSocketConnection, trio.abc.Stream]:
    """Open ``url``; the websocket's reader task runs in ``nursery``.

    Returns the connection and the stream under it: the caller must pass both to
    :func:`close_websocket` in a ``finally``.
    """
    target = parse_websocket_url(url)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    try:
        with trio.fail_after(connect_timeout):
            tcp = await trio.open_tcp_stream(target.host, target.port)
    except (OSError, trio.TooSlowError) as exc:
        raise WebSocketConnectFailed(
            f"cannot reach {target.host}:{target.port}: {_describe(exc)}"
        ) from exc
    stream = tcp
    try:
        if target.secure:
            context = ssl_context if ssl_context is not None else ssl.create_default_context()
            stream = trio.SSLStream(tcp, context, server_hostname=target.host)
            with trio.fail_after(connect_timeout):
                await stream.do_handshake()
        with trio.fail_after(connect_timeout):
            connection = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                target.host_header,
                target.resource,
                max_message_size=max_message_size,
            )
    except BaseException as exc:
        await trio.aclose_forcefully(stream)
        # trio reports a failed TLS handshake as BrokenResourceError caused by the SSLError.
        cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise WebSocketConnectFailed(
                f"the TLS certificate of {target.host} does not verify: "
                f"{cause.verify_message or cause.reason}",
                certificate=True,
            ) from exc
        if isinstance(cause, ssl.SSLError):
            raise WebSocketConnectFailed(
                f"the TLS handshake with {target.host}:{target.port} failed: {cause.reason}"
            ) from exc
        if isinstance(exc, _CONNECT_ERRORS):
            raise WebSocketConnectFailed(
                f"cannot open a websocket to {target.host}:{target.port}: {_describe(exc)}"
            ) from exc
        raise
    return connection, stream


async def close_websocket(
    connection: trio_websocket.WebSocketConnection,
    stream: trio.abc.Stream,
    *,
    code: int,
    grace: float = 2.0,
) -> None:
    """Send a close frame (waiting at most ``grace`` s for the peer's), then close the stream.

    Shielded, so it also runs when the caller is being cancelled.
    """
    with trio.CancelScope(shield=True):
        with trio.move_on_after(grace), contextlib.suppress(*_CLOSE_ERRORS):
            await connection.aclose(code)
        await trio.aclose_forcefully(stream)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return f"the server answered HTTP {exc.status_code}"
    return shorten(str(exc) or type(exc).__name__)
