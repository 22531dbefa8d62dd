"""A raw voice client for the voice simulator's tests, built on the core codecs only.

It opens its TCP stream itself and closes it explicitly (trio-websocket leaves a client socket
open when the peer closes first, which would surface as a ResourceWarning in a later test), and
speaks UDP through a plain trio socket. No test lives here; the other ``test_voice_*``
modules import it.
"""

from __future__ import annotations

import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio
import trio_websocket

from discore_voice._audio import signals
from discore_voice._core.ip_discovery import build_request, parse_response
from discore_voice._core.transport import TransportCipher, create_cipher
from discore_voice._core.voice.frames import (
    SeqTracker,
    decode_server_binary,
    decode_server_text,
    encode_client_text,
)
from discore_voice._core.voice.payloads import (
    ClientMessage,
    Hello,
    Identify,
    Ready,
    SelectProtocol,
    ServerMessage,
    SessionDescription,
)
from discore_voice.testing._voice.gateway import (
    StaticVoiceAuthority,
    VoiceCredentials,
    VoiceServer,
    open_voice_server,
)

WAIT = 5.0
GUILD = 111_111_111_111_111_111
CHANNEL = 222_222_222_222_222_222
OTHER_CHANNEL = 222_222_222_222_222_333
BOT = 333_333_333_333_333_333
USER = 444_444_444_444_444_444

_M = TypeVar("_M", bound=ServerMessage)


class Closed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


class RawVoice:
    """Just enough of a voice client to drive the simulator message by message."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.tracker = SeqTracker()
        self.received: list[tuple[int | None, object]] = []

    async def send(self, message: ClientMessage) -> None:
        await self.ws.send_message(encode_client_text(message))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send_message(data)

    async def recv(self) -> tuple[int | None, object]:
        with trio.fail_after(WAIT):
            try:
                frame = await self.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise Closed(exc.reason.code if exc.reason else None) from None
        item: tuple[int | None, object]
        if isinstance(frame, bytes):
            item = decode_server_binary(frame, self.tracker)
        else:
            item = decode_server_text(frame, self.tracker)
        self.received.append(item)
        return item

    async def expect(self, kind: type[_M]) -> tuple[int | None, _M]:
        """The next message of type ``kind``, skipping any other."""
        while True:
            seq, message = await self.recv()
            if isinstance(message, kind):
                return seq, message

    async def expect_hello(self) -> Hello:
        seq, hello = await self.recv()
        assert isinstance(hello, Hello), hello
        assert seq is None
        return hello

    async def close_code(self) -> int | None:
        try:
            while True:
                await self.recv()
        except Closed as closed:
            return closed.code


@asynccontextmanager
async def connect_voice(url: str) -> AsyncIterator[RawVoice]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WAIT):
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, parts.hostname, f"{parts.path or '/'}?{parts.query}"
                )
            try:
                yield RawVoice(ws)
            finally:
                with trio.move_on_after(1):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


class RawUdp:
    """A trio UDP socket connected to the media server."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    async def send(self, data: bytes) -> None:
        await self.sock.send(data)

    async def recv(self) -> bytes:
        with trio.fail_after(WAIT):
            return await self.sock.recv(4096)

    async def discover(self, ssrc: int) -> tuple[str, int]:
        await self.send(build_request(ssrc))
        found = parse_response(await self.recv())
        assert found.ssrc == ssrc
        return found.address, found.port


@asynccontextmanager
async def open_udp(host: str, port: int) -> AsyncIterator[RawUdp]:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.connect((host, port))
        yield RawUdp(sock)


@asynccontextmanager
async def voice_server(**options: Any) -> AsyncIterator[tuple[VoiceServer, StaticVoiceAuthority]]:
    authority = StaticVoiceAuthority()
    options.setdefault("heartbeat_interval_ms", 1000)
    async with open_voice_server(authority, **options) as server:
        yield server, authority


@dataclass
class Handshake:
    ready: Ready
    description: SessionDescription
    cipher: TransportCipher
    udp: RawUdp


def identify(credentials: VoiceCredentials, *, dave: int = 0) -> Identify:
    return Identify(
        server_id=credentials.guild_id,
        user_id=credentials.user_id,
        session_id=credentials.session_id,
        token=credentials.token,
        max_dave_protocol_version=dave,
    )


@asynccontextmanager
async def joined(
    server: VoiceServer,
    credentials: VoiceCredentials,
    mode: str = "aead_aes256_gcm_rtpsize",
) -> AsyncIterator[tuple[RawVoice, Handshake]]:
    """A client through Hello, Identify, Ready, IP discovery, Select Protocol and Session
    Description, with its UDP socket."""
    async with connect_voice(server.endpoint_url) as client:
        await client.expect_hello()
        await client.send(identify(credentials))
        _, ready = await client.expect(Ready)
        async with open_udp(ready.ip, ready.port) as udp:
            address, port = await udp.discover(ready.ssrc)
            await client.send(SelectProtocol(address=address, port=port, mode=mode))
            _, description = await client.expect(SessionDescription)
            cipher = create_cipher(description.mode, description.secret_key)
            yield client, Handshake(ready, description, cipher, udp)


def sine_pcm(frequency: float, seconds: float, amplitude: float = 0.5) -> bytes:
    """48 kHz stereo s16le, the same sine on both channels."""
    return signals.sine_pcm(seconds, hz=frequency, amplitude=amplitude)


def left_channel(pcm: bytes) -> array.array[int]:
    return signals.channel(pcm, 0)


def best_correlation(reference: array.array[int], decoded: array.array[int]) -> float:
    """Correlation after aligning the codec delay, skipping the encoder's 100 ms ramp-in."""
    ramp = 4800
    assert len(decoded) > 3 * ramp, "too little audio to compare"
    return signals.find_alignment(reference[ramp:], decoded[ramp:]).correlation
