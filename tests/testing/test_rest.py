"""The REST routes, over raw HTTP/1.1 so every header byte is checked."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from discore_voice.testing import LocalDiscord, open_local_discord


class Http:
    """A keep-alive HTTP/1.1 client reading exactly Content-Length bytes per response."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], Any]:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        await self.stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        with trio.fail_after(5):
            while b"\r\n\r\n" not in self.buffer:
                await self._fill()
            end = self.buffer.index(b"\r\n\r\n")
            head = self.buffer[:end].decode().split("\r\n")
            del self.buffer[: end + 4]
            status = int(head[0].split(" ")[1])
            fields = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                fields[name.lower()] = value.strip()
            length = int(fields["content-length"])
            while len(self.buffer) < length:
                await self._fill()
            payload = bytes(self.buffer[:length])
            del self.buffer[:length]
        return status, fields, json.loads(payload)


async def open_http(discord: LocalDiscord) -> Http:
    parts = urlsplit(discord.api_url)
    assert parts.hostname is not None and parts.port is not None
    return Http(await trio.open_tcp_stream(parts.hostname, parts.port))


async def test_routes_on_one_keep_alive_connection(discord: LocalDiscord) -> None:
    http = await open_http(discord)
    auth = {"Authorization": f"Bot {discord.bot.token}"}
    async with http.stream:
        status, headers, me = await http.request("GET", "/api/v10/users/@me", auth)
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert me["id"] == str(discord.bot.user_id) and me["bot"] is True

        status, headers, app = await http.request("GET", "/api/v10/oauth2/applications/@me", auth)
        assert status == 200 and headers["content-type"] == "application/json"
        assert app["id"] == str(discord.bot.application_id)
        assert app["owner"]["id"] and app["bot_public"] is True

        status, _, gateway = await http.request("GET", "/api/v10/gateway/bot?x=1", auth)
        assert status == 200
        assert gateway["url"] == discord.gateway_url
        assert gateway["shards"] == 1
        assert gateway["session_start_limit"]["max_concurrency"] == 1

        status, _, plain = await http.request("GET", "/api/v10/gateway")
        assert status == 200 and plain == {"url": discord.gateway_url}

        # A body is read and skipped, and the connection stays usable.
        status, _, _ = await http.request("POST", "/api/v10/users/@me", auth, body=b"{}")
        assert status == 405
        status, headers, _ = await http.request("GET", "/api/v10/users/@me", auth)
        assert status == 200 and headers["connection"] == "keep-alive"
    assert [r[2] for r in discord.rest_requests] == [200, 200, 200, 200, 405, 200]


@pytest.mark.parametrize(
    "authorization", [None, "Bot wrong", "Bearer {token}", "{token}", "bot {token}"]
)
async def test_bad_authorization_is_401(discord: LocalDiscord, authorization: str | None) -> None:
    http = await open_http(discord)
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(token=discord.bot.token)
    async with http.stream:
        status, fields, body = await http.request("GET", "/api/v10/users/@me", headers)
    assert status == 401
    assert fields["content-type"] == "application/json"
    assert body == {"message": "401: Unauthorized", "code": 0}


@pytest.mark.parametrize("path", ["/api/v10/nope", "/api/v9/users/@me", "/", "/api/v10"])
async def test_unknown_routes_are_404_json(discord: LocalDiscord, path: str) -> None:
    http = await open_http(discord)
    async with http.stream:
        status, fields, body = await http.request(
            "GET", path, {"Authorization": f"Bot {discord.bot.token}"}
        )
    assert status == 404
    assert fields["content-type"] == "application/json"
    assert body == {"message": "404: Not Found", "code": 0}


async def test_connection_close_is_honoured(discord: LocalDiscord) -> None:
    http = await open_http(discord)
    async with http.stream:
        status, fields, _ = await http.request("GET", "/api/v10/gateway", {"Connection": "close"})
        assert status == 200 and fields["connection"] == "close"
        with trio.fail_after(5):
            assert await http.stream.receive_some(1) == b""


async def test_malformed_request_gets_400_and_server_survives(discord: LocalDiscord) -> None:
    http = await open_http(discord)
    async with http.stream:
        await http.stream.send_all(b"NONSENSE\r\n\r\n")
        with trio.fail_after(5):
            data = b""
            while chunk := await http.stream.receive_some(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 400 ")
    http = await open_http(discord)
    async with http.stream:
        status, _, _ = await http.request("GET", "/api/v10/gateway")
        assert status == 200


async def test_gateway_bot_recommends_the_configured_shard_count() -> None:
    async with open_local_discord(shard_count=4) as discord:
        http = await open_http(discord)
        async with http.stream:
            _, _, gateway = await http.request(
                "GET", "/api/v10/gateway/bot", {"Authorization": f"Bot {discord.bot.token}"}
            )
        assert gateway["shards"] == 4
