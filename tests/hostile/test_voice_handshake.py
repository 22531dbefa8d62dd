"""A voice server that breaks the handshake: every case ends in VoiceConnectionFailed.

Mid-handshake nothing but the next valid message can move a connection on, so a malformed Hello,
Ready, Session Description or IP discovery reply ends it with reason ERROR and says what was wrong.
What the client refuses at the transport level (a 2 MiB frame, a 500 kB close frame) costs a few
retries with backoff, then RECONNECT_FAILED. The server counts connections and identifies: a
failure is final, never a reconnect loop.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from discore_voice import (
    DiscoreVoiceError,
    InvalidationReason,
    VoiceConnectionFailed,
    voice_connection,
)

from ._voice_server import (
    DROP,
    HELLO,
    READY,
    SESSION_DESCRIPTION,
    VoiceConn,
    VoiceScript,
    VoiceServer,
)
from .conftest import CHANNEL_ID, GUILD_ID, WAIT, Hostile, bystander, hostile, long_records

Address = tuple[str, int]

AES = "aead_aes256_gcm_rtpsize"
XCHACHA = "aead_xchacha20_poly1305_rtpsize"


async def failed_connect(script: VoiceScript) -> tuple[VoiceConnectionFailed, Hostile]:
    """Connect through the hostile servers and return how it failed (it must fail)."""
    with trio.fail_after(WAIT * 4):
        async with bystander(), hostile(script) as env:
            with pytest.raises(VoiceConnectionFailed) as caught:
                async with voice_connection(env.shard, GUILD_ID, CHANNEL_ID):
                    raise AssertionError("connected through a hostile voice server")
    return caught.value, env


def assert_failed_once(failure: VoiceConnectionFailed, env: Hostile, *words: str) -> None:
    assert isinstance(failure, DiscoreVoiceError)
    assert failure.reason is InvalidationReason.ERROR, failure
    for word in words:
        assert word in failure.cause, failure.cause
    assert len(failure.cause) < 1000
    # Failed for good: one websocket, one identify, no reconnect loop.
    assert len(env.voice.connections) == 1
    assert len(env.voice.identifies) == 1
    # ... and the bot left the channel on the main gateway.
    leaves = [r for r in env.gateway.ops(4) if r.d["channel_id"] is None]
    assert len(leaves) == 1


# --- wrong types and absurd values ----------------------------------------------------------

BAD_HELLO: dict[str, dict[str, Any]] = {
    "interval as a string": {"heartbeat_interval": "fast"},
    "negative interval": {"heartbeat_interval": -41_250},
    "zero interval": {"heartbeat_interval": 0},
    "infinite interval": {"heartbeat_interval": float("inf")},
    "NaN interval": {"heartbeat_interval": float("nan")},
    "boolean interval": {"heartbeat_interval": True},
    "no interval": {"heartbeat_interval": DROP},
}

BAD_READY: dict[str, dict[str, Any]] = {
    "ssrc as a string": {"ssrc": "4660"},
    "negative ssrc": {"ssrc": -1},
    "ssrc above 32 bits": {"ssrc": 1 << 32},
    "fractional ssrc": {"ssrc": 1.5},
    "no ssrc": {"ssrc": DROP},
    "port 70000": {"port": 70_000},
    "port 0": {"port": 0},
    "port as a string": {"port": "50000"},
    "empty ip": {"ip": ""},
    "ip as a number": {"ip": 2130706433},
    "modes not a list": {"modes": AES},
    "modes of numbers": {"modes": [1, 2]},
    "modes null": {"modes": None},
    "modes an object": {"modes": {AES: True}},
}

BAD_KEYS: dict[str, object] = {
    "31-byte key": [7] * 31,
    "33-byte key": [7] * 33,
    "empty key": [],
    "key of strings": ["7"] * 32,
    "key of floats": [7.5] * 32,
    "key of booleans": [True] * 32,
    "key byte 256": [7] * 31 + [256],
    "key byte -1": [-1] + [7] * 31,
    "key as a string": "k" * 32,
    "key null": None,
}

BAD_DESCRIPTION: dict[str, dict[str, Any]] = {
    **{name: {"secret_key": key} for name, key in BAD_KEYS.items()},
    "mode as a number": {"mode": 4},
    "empty mode": {"mode": ""},
    "negative DAVE version": {"dave_protocol_version": -1},
    "DAVE version as a string": {"dave_protocol_version": "1"},
    "DAVE version above 16 bits": {"dave_protocol_version": 1 << 20},
}


@pytest.mark.parametrize("patch", BAD_HELLO.values(), ids=BAD_HELLO.keys())
async def test_a_malformed_hello_fails_the_connect(patch: dict[str, Any]) -> None:
    failure, env = await failed_connect(VoiceScript(patch={HELLO: patch}))
    assert_failed_once(failure, env, "malformed", "Hello")


@pytest.mark.parametrize("patch", BAD_READY.values(), ids=BAD_READY.keys())
async def test_a_malformed_ready_fails_the_connect(patch: dict[str, Any]) -> None:
    failure, env = await failed_connect(VoiceScript(patch={READY: patch}))
    assert_failed_once(failure, env, "malformed", "Ready")
    assert env.voice.datagrams == []  # it never got as far as UDP


@pytest.mark.parametrize("patch", BAD_DESCRIPTION.values(), ids=BAD_DESCRIPTION.keys())
async def test_a_malformed_session_description_fails_the_connect(patch: dict[str, Any]) -> None:
    failure, env = await failed_connect(VoiceScript(patch={SESSION_DESCRIPTION: patch}))
    assert_failed_once(failure, env, "malformed", "SessionDescription")


async def test_ready_offering_no_supported_mode_fails_the_connect() -> None:
    script = VoiceScript(modes=("xsalsa20_poly1305", "xsalsa20_poly1305_lite"))
    failure, env = await failed_connect(script)
    assert_failed_once(failure, env, "xsalsa20_poly1305_lite", AES)


async def test_a_session_description_with_a_mode_not_selected_fails_the_connect() -> None:
    script = VoiceScript(modes=(AES,), patch={SESSION_DESCRIPTION: {"mode": XCHACHA}})
    failure, env = await failed_connect(script)
    assert_failed_once(failure, env, XCHACHA, AES)


# --- malformed and truncated frames ---------------------------------------------------------

READY_TEXT = json.dumps(
    {"op": 2, "seq": 1, "d": {"ssrc": 1, "ip": "127.0.0.1", "port": 9, "modes": [AES]}}
)
BAD_FRAMES: dict[str, str | bytes] = {
    "not JSON": "this is not JSON",
    "truncated JSON": READY_TEXT[: len(READY_TEXT) // 2],
    "an array": "[2, {}]",
    "a bare number": "2",
    "op as a string": '{"op": "2", "d": {}}',
    "fractional op": '{"op": 2.5, "d": {}}',
    "no op": '{"d": {}}',
    "d as a string": '{"op": 2, "seq": 1, "d": "ready"}',
    "seq as a string": READY_TEXT.replace('"seq": 1', '"seq": "1"'),
    "negative seq": READY_TEXT.replace('"seq": 1', '"seq": -1'),
    "nested a thousand deep": '{"op": 2, "d": ' + "[" * 1000 + "]" * 1000 + "}",
    "empty binary frame": b"",
    "truncated binary frame": b"\x00",
    "binary frame with a client op": b"\x00\x01\x1a" + bytes(16),
}


@pytest.mark.parametrize("frame", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_a_malformed_frame_instead_of_ready_fails_the_connect(
    frame: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="discore_voice")
    failure, env = await failed_connect(VoiceScript(raw={READY: frame}))
    assert_failed_once(failure, env, "malformed")
    assert any("malformed" in r.getMessage() for r in caplog.records)


# --- 2 MiB frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["x" * (2 << 20), b"\x00\x01\x19" + bytes(2 << 20)])
async def test_a_2_mib_frame_instead_of_ready_gives_up_after_a_few_attempts(
    frame: str | bytes, jump_clock: MockClock
) -> None:
    class HugeReady(VoiceScript):
        async def on_identify(self, conn: VoiceConn, d: Any) -> None:
            await conn.send_frame(frame)

    with trio.fail_after(WAIT * 10):
        async with bystander(), hostile(HugeReady()) as env:
            with pytest.raises(VoiceConnectionFailed) as caught:
                async with voice_connection(env.shard, GUILD_ID, CHANNEL_ID):
                    raise AssertionError("connected through a hostile voice server")
    # The client refuses the frame (close 1009) and tries again, a bounded number of times.
    assert caught.value.reason is InvalidationReason.RECONNECT_FAILED
    assert "attempts" in caught.value.cause
    assert 2 <= len(env.voice.identifies) <= 11
    assert all(conn.close_code == 1009 for conn in env.voice.connections)


# --- a Ready ip that is no address -------------------------------------------------------------


async def test_a_ready_ip_that_is_no_address_fails_as_malformed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="discore_voice")
    failure, env = await failed_connect(VoiceScript(patch={READY: {"ip": "\ud800"}}))
    assert_failed_once(failure, env, "malformed", "Ready")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- peer text is capped (defect 6) ---------------------------------------------------------

HUGE = "m" * 500_000


def close_frame(code: int, reason: bytes) -> bytes:
    """A server's close frame carrying ``reason``, however long: no websocket library sends one
    over 125 bytes, so this one is built by hand (unmasked, with a 64-bit length)."""
    payload = struct.pack(">H", code) + reason
    return bytes([0x88, 127]) + struct.pack(">Q", len(payload)) + payload


class CloseInsteadOfReady(VoiceScript):
    def __init__(self, code: int, reason: bytes, *, raw: bool) -> None:
        super().__init__()
        self.code, self.reason, self.raw_frame = code, reason, raw

    async def on_identify(self, conn: VoiceConn, d: Any) -> None:
        if self.raw_frame:
            await conn.send_raw_websocket_frame(close_frame(self.code, self.reason))
        else:
            await conn.close(self.code, self.reason.decode())


PEER_TEXT: dict[str, VoiceScript] = {
    "Ready modes: one 500 kB string": VoiceScript(patch={READY: {"modes": [HUGE]}}),
    "Session Description: a 500 kB mode": VoiceScript(patch={SESSION_DESCRIPTION: {"mode": HUGE}}),
    "a 500 kB close reason": CloseInsteadOfReady(4006, HUGE.encode(), raw=True),
    "a full 123-byte close reason": CloseInsteadOfReady(4006, b"r" * 123, raw=False),
}


@pytest.mark.parametrize("script", PEER_TEXT.values(), ids=PEER_TEXT.keys())
async def test_500_kb_of_peer_text_never_reaches_an_error_or_a_log_line(
    script: VoiceScript, jump_clock: MockClock, voice_log: pytest.LogCaptureFixture
) -> None:
    failure, env = await failed_connect(script)
    assert len(str(failure)) < 1000 and len(failure.cause) < 1000, len(str(failure))
    assert long_records(voice_log) == []
    assert len(env.voice.connections) <= 11  # at most 10 attempts after the first


# --- a malformed IP discovery reply (defect 8) ----------------------------------------------

_DISCOVERY = struct.Struct(">HHI64sH")


def discovery_reply(
    ssrc: int, *, kind: int = 2, length: int = 70, address: bytes = b"127.0.0.1", port: int = 5000
) -> bytes:
    return _DISCOVERY.pack(kind, length, ssrc, address, port)


BAD_REPLIES: dict[str, Callable[[int], bytes]] = {
    "wrong type field": lambda ssrc: discovery_reply(ssrc, kind=1),
    "wrong length field": lambda ssrc: discovery_reply(ssrc, length=64),
    "73 bytes": lambda ssrc: discovery_reply(ssrc)[:73],
    "75 bytes": lambda ssrc: discovery_reply(ssrc) + b"\x00",
    "address without NUL": lambda ssrc: discovery_reply(ssrc, address=b"1" * 64),
    "address not an IP": lambda ssrc: discovery_reply(ssrc, address=b"localhost"),
    "port 0": lambda ssrc: discovery_reply(ssrc, port=0),
    "another SSRC": lambda ssrc: discovery_reply(ssrc + 1),
}


class BadDiscovery(VoiceScript):
    def __init__(self, reply: Callable[[int], bytes]) -> None:
        super().__init__()
        self.reply = reply

    def on_ip_discovery(self, server: VoiceServer, request: bytes, source: Address) -> bytes:
        return self.reply(server.ssrc)


@pytest.mark.parametrize("reply", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
async def test_a_malformed_ip_discovery_reply_is_reported_as_malformed(
    reply: Callable[[int], bytes], jump_clock: MockClock
) -> None:
    failure, env = await failed_connect(BadDiscovery(reply))
    assert_failed_once(failure, env, "malformed")
    assert "no answer" not in failure.cause
    assert 1 <= len(env.voice.discovery_requests) <= 5  # bounded retries, then the verdict


# --- no Hello at all (defect 7) -------------------------------------------------------------


class SilentAfterIdentify(VoiceScript):
    """Accepts the websocket, then never says anything: no Hello, no Ready."""

    async def on_open(self, conn: VoiceConn) -> None:
        pass

    async def on_identify(self, conn: VoiceConn, d: Any) -> None:
        pass


async def test_no_hello_at_all_abandons_the_attempt_well_before_the_connect_timeout(
    jump_clock: MockClock,
) -> None:
    failed: list[tuple[float, VoiceConnectionFailed]] = []
    with trio.fail_after(WAIT * 10):
        async with bystander(), hostile(SilentAfterIdentify()) as env:
            voice = env.voice

            async def connect() -> None:
                try:
                    async with voice_connection(env.shard, GUILD_ID, CHANNEL_ID, timeout=60):
                        raise AssertionError("connected without a Hello")
                except VoiceConnectionFailed as exc:
                    failed.append((trio.current_time(), exc))
                    voice.changed()

            async with trio.open_nursery() as nursery:
                start = trio.current_time()
                nursery.start_soon(connect)
                with trio.move_on_after(60):
                    await voice.wait_for(lambda: failed or len(voice.connections) >= 2)
                decided = trio.current_time() - start
                nursery.cancel_scope.cancel()
    assert voice.identifies, "the client never identified"
    assert decided < 30, f"nothing happened for {decided:g} s: {failed}"
    if failed:
        assert failed[0][1].reason is InvalidationReason.ERROR
