"""The few REST routes a bot calls before it opens the gateway, on a minimal HTTP/1.1 server.

Hand-written rather than a dependency because only four GET routes exist; it still honours
Content-Length and keep-alive, which aiohttp (discord.py) relies on, and answers with exactly
``Content-Type: application/json``, since discord.py treats anything else as text.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

import trio

from ._world import BotAccount, World

__all__ = ["RestServer"]

logger = logging.getLogger("discore_voice.testing.rest")

API_PREFIX = "/api/v10"
_MAX_HEAD = 16 * 1024
_MAX_BODY = 1 << 20
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
}


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Reader:
    """Buffers a stream so a pipelined or split request is read exactly."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def head(self) -> bytes | None:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > _MAX_HEAD:
                raise _BadRequest(431)
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                if self._buffer:
                    raise _BadRequest(400)
                return None
            self._buffer += chunk
        end = self._buffer.index(b"\r\n\r\n") + 4
        head = bytes(self._buffer[:end])
        del self._buffer[:end]
        return head

    async def body(self, length: int) -> bytes:
        while len(self._buffer) < length:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise _BadRequest(400)
            self._buffer += chunk
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body


class RestServer:
    """Serves ``/api/v10``; every route but ``/gateway`` wants ``Authorization: Bot <token>``."""

    def __init__(
        self,
        world: World,
        ssl_context: ssl.SSLContext | None,
        gateway_url: Callable[[], str],
    ) -> None:
        self._world = world
        self._ssl_context = ssl_context
        self._gateway_url = gateway_url
        #: (method, path, status) of every request served, for tests.
        self.requests: list[tuple[str, str, int]] = []

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
        bound = 0
        for listener in await trio.open_tcp_listeners(port, host=host):
            bound = listener.socket.getsockname()[1]
            if self._ssl_context is not None:
                listeners.append(
                    trio.SSLListener(listener, self._ssl_context, https_compatible=True)
                )
            else:
                listeners.append(listener)
        task_status.started(bound)
        await trio.serve_listeners(self._handle_stream, listeners)

    async def _handle_stream(self, stream: trio.abc.Stream) -> None:
        try:
            await self._serve_http(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            logger.exception("a REST connection failed; the simulator carries on")
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_http(self, stream: trio.abc.Stream) -> None:
        reader = _Reader(stream)
        while True:
            try:
                head = await reader.head()
                if head is None:
                    return
                method, target, version, headers = _parse_head(head)
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    raise _BadRequest(411)
                try:
                    length = int(headers.get("content-length", "0"))
                except ValueError:
                    raise _BadRequest(400) from None
                if not 0 <= length <= _MAX_BODY:
                    raise _BadRequest(413)
                await reader.body(length)
            except _BadRequest as bad:
                await stream.send_all(_response(bad.status, _error(bad.status), keep_alive=False))
                return
            status, body = self._route(method, target, headers)
            self.requests.append((method, target.split("?", 1)[0], status))
            self._world._changed()
            connection = headers.get("connection", "").lower()
            if version == "HTTP/1.0":
                keep_alive = connection == "keep-alive"
            else:
                keep_alive = connection != "close"
            await stream.send_all(_response(status, body, keep_alive=keep_alive))
            if not keep_alive:
                return

    def _route(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, Any]:
        path = target.split("?", 1)[0]
        if not path.startswith(API_PREFIX + "/"):
            return 404, _error(404)
        route = path[len(API_PREFIX) :].rstrip("/")
        handlers: dict[str, Callable[[BotAccount], Any]] = {
            "/users/@me": self._me,
            "/oauth2/applications/@me": self._application,
            "/gateway/bot": self._gateway_bot,
        }
        if route == "/gateway":
            if method != "GET":
                return 405, _error(405)
            return 200, {"url": self._gateway_url()}
        handler = handlers.get(route)
        if handler is None:
            return 404, _error(404)
        if method != "GET":
            return 405, _error(405)
        bot = self._authenticate(headers.get("authorization"))
        if bot is None:
            return 401, _error(401)
        return 200, handler(bot)

    def _authenticate(self, header: str | None) -> BotAccount | None:
        if header is None or not header.startswith("Bot "):
            return None
        return self._world.bot_for_token(header[4:])

    def _me(self, bot: BotAccount) -> Any:
        user = bot.user.to_wire()
        user.update(verified=True, mfa_enabled=False, email=None, locale="en-US")
        return user

    def _application(self, bot: BotAccount) -> Any:
        owner = self._world.bots[0].user.to_wire()
        return {
            "id": str(bot.application_id),
            "name": bot.name,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": bot.user.to_wire(),
            "terms_of_service_url": None,
            "privacy_policy_url": None,
            "owner": owner,
            "verify_key": "0" * 64,
            "team": None,
            "guild_id": None,
            "primary_sku_id": None,
            "slug": None,
            "cover_image": None,
            "flags": 0,
            "approximate_guild_count": len(self._world.guilds),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "tags": [],
            "install_params": None,
            "integration_types_config": {},
            "custom_install_url": None,
        }

    def _gateway_bot(self, bot: BotAccount) -> Any:
        return {
            "url": self._gateway_url(),
            "shards": self._world.shard_count,
            "session_start_limit": {
                "total": 1000,
                "remaining": 1000,
                "reset_after": 0,
                "max_concurrency": 1,
            },
        }


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _BadRequest(400) from None
    if version not in ("HTTP/1.0", "HTTP/1.1") or not target.startswith("/"):
        raise _BadRequest(400)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400)
        headers[name.lower()] = value.strip()
    return method, target, version, headers


def _error(status: int) -> dict[str, Any]:
    return {"message": f"{status}: {_REASONS[status]}", "code": 0}


def _response(status: int, body: Any, *, keep_alive: bool) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        "\r\n"
    )
    return head.encode() + payload
