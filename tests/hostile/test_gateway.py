"""A main gateway that breaks the protocol: the shard reconnects with backoff, or skips, or ends
its voice connections at once; never a bare error, a storm, or a crash in the user's nursery."""

from __future__ import annotations

import json
import logging
import random
import zlib
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from discore_voice import Intents, InvalidationReason, open_shard, voice_connection

from ._gateway import GatewayConn, GatewayScript, GatewayServer, open_gateway
from .conftest import (
    CHANNEL_ID,
    GUILD_ID,
    TOKEN,
    WAIT,
    bystander,
    hostile,
    max_per_window,
)

RESUME, IDENTIFY, HEARTBEAT = 6, 2, 1


def gateway_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The shard's WARNING records."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "discore_voice.gateway" and r.levelno == logging.WARNING
    ]


class HostileOnce(GatewayScript):
    """After the first READY, send one hostile frame; resumes are answered as usual."""

    def __init__(self, frame: str | bytes, *, raw: bool = False) -> None:
        super().__init__()
        self.frame = frame
        self.raw = raw

    async def after_session(self, conn: GatewayConn) -> None:
        if conn.number > 1:
            return
        if self.raw or isinstance(self.frame, bytes):
            await conn.send_frame(self.frame)
        else:
            await conn.send_text(self.frame)


MALFORMED: dict[str, str] = {
    "not JSON": "{not json",
    "an array": "[0, 1]",
    "op as a string": '{"op": "0", "t": "X", "s": 2, "d": {}}',
    "event name as a number": '{"op": 0, "t": 5, "s": 2, "d": null}',
    "sequence as a string": '{"op": 0, "t": "X", "s": "2", "d": {}}',
    "negative sequence": '{"op": 0, "t": "X", "s": -2, "d": {}}',
    "sequence beyond 64 bits": '{"op": 0, "t": "X", "s": 18446744073709551621, "d": {}}',
    "a second HELLO": '{"op": 10, "d": {"heartbeat_interval": 41250}}',
    "INVALID_SESSION with a string": '{"op": 9, "d": "maybe"}',
    "READY without a user": '{"op": 0, "t": "READY", "s": 2, "d": {"session_id": "x"}}',
    "nested ten thousand deep": '{"op": 0, "t": "X", "s": 2, "d": '
    + "[" * 10**4
    + "]" * 10**4
    + "}",
}


def _broken_zlib() -> dict[str, bytes]:
    compressor = zlib.compressobj()
    whole = compressor.compress(b'{"op": 11, "d": null}') + compressor.flush(zlib.Z_SYNC_FLUSH)
    finished = zlib.compress(b'{"op": 11, "d": null}')
    return {
        "half a message, then the suffix": whole[: len(whole) // 2] + b"\x00\x00\xff\xff",
        "noise ending in the suffix": bytes(range(7, 70)) + b"\x00\x00\xff\xff",
        "a stream that ends (Z_FINISH) and then a sync flush": finished + b"\x00\x00\xff\xff",
        "the suffix alone": b"\x00\x00\xff\xff",
    }


BROKEN_ZLIB = _broken_zlib()


async def reconnected_after(
    frame: str | bytes,
    caplog: pytest.LogCaptureFixture,
    *,
    raw: bool = False,
    close_code: int = 4000,
) -> GatewayServer:
    """Open a shard, let the gateway send ``frame`` once, and wait until it resumed."""
    caplog.set_level(logging.INFO, logger="discore_voice")
    with trio.fail_after(WAIT * 4):
        async with (
            bystander(),
            open_gateway(HostileOnce(frame, raw=raw)) as gateway,
            open_shard(TOKEN, intents=Intents.VOICE_DEFAULT, gateway_url=gateway.url) as shard,
        ):
            await gateway.wait_for(lambda: gateway.ops(RESUME))
            await gateway.wait_for(lambda: shard.is_ready)
            assert not shard.is_closed
    assert len(gateway.connections) == 2
    assert len(gateway.ops(IDENTIFY)) == 1 and len(gateway.ops(RESUME)) == 1
    assert gateway.connections[0].close_code == close_code  # resumable, never 1000
    return gateway


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_payload_costs_one_resume(
    text: str, jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    await reconnected_after(text, caplog)
    assert any("malformed payload" in w for w in gateway_warnings(caplog))


@pytest.mark.parametrize("frame", BROKEN_ZLIB.values(), ids=BROKEN_ZLIB.keys())
async def test_a_broken_zlib_stream_costs_one_resume(
    frame: bytes, jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    await reconnected_after(frame, caplog)
    assert any("malformed payload" in w for w in gateway_warnings(caplog))


async def test_a_2_mib_dispatch_is_delivered() -> None:
    """Big guilds make big dispatches: 2 MiB is within what the shard accepts (16 MiB)."""
    with trio.fail_after(WAIT):
        async with (
            bystander(),
            open_gateway() as gateway,
            open_shard(TOKEN, intents=Intents.VOICE_DEFAULT, gateway_url=gateway.url) as shard,
        ):
            big = shard.subscribe("BIG")
            await gateway.latest.dispatch("BIG", {"x": "x" * (2 << 20)})
            async for _, data in big:
                assert len(data["x"]) == 2 << 20
                break
            assert len(gateway.connections) == 1


async def test_a_17_mib_frame_costs_one_resume(
    jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Beyond the shard's 16 MiB, trio-websocket refuses the frame (1009); the shard resumes."""
    await reconnected_after("x" * (17 << 20), caplog, raw=True, close_code=1009)
    assert gateway_warnings(caplog)


async def test_a_zlib_bomb_costs_one_resume(
    jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """65 MiB of JSON in 65 kB of zlib: the shard stops inflating at its 64 MiB bound."""
    bomb = '{"op": 0, "t": "BOMB", "s": 2, "d": "' + " " * (65 << 20) + '"}'
    await reconnected_after(bomb, caplog)  # through the connection's own zlib stream
    assert any("size limit" in w for w in gateway_warnings(caplog))


async def test_a_thousand_unknown_ops_are_skipped_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="discore_voice")
    with trio.fail_after(WAIT):
        async with (
            bystander(),
            open_gateway() as gateway,
            open_shard(TOKEN, intents=Intents.VOICE_DEFAULT, gateway_url=gateway.url) as shard,
        ):
            marker = shard.subscribe("HOSTILE_MARKER")
            conn = gateway.latest
            received_before = len(gateway.received)
            for index in range(1000):
                await conn.send({"op": 50 + index % 30, "d": {"index": index}})
            await conn.dispatch("HOSTILE_MARKER", {})
            async for _ in marker:
                break
            assert shard.is_ready and len(gateway.connections) == 1
            # Nothing was answered (a heartbeat may fall due meanwhile: its first is jittered).
            assert [r.op for r in gateway.received[received_before:] if r.op != HEARTBEAT] == []
    skipped = [r for r in caplog.records if "unknown gateway opcode" in r.getMessage()]
    assert len(skipped) == 1000 and {r.levelno for r in skipped} == {logging.DEBUG}
    assert gateway_warnings(caplog) == []


class AbsurdHelloFirst(GatewayScript):
    """The first connection's HELLO carries an absurd interval; the next one is sane."""

    def __init__(self, interval: Any) -> None:
        super().__init__()
        self.interval = interval

    async def on_open(self, conn: GatewayConn) -> None:
        if conn.number == 1:
            await conn.send_text(
                json.dumps({"op": 10, "d": {"heartbeat_interval": self.interval}, "s": None})
            )
        else:
            await super().on_open(conn)


ABSURD_INTERVALS: dict[str, Any] = {
    "zero": 0,
    "negative": -41_250,
    "1e308": 1e308,
    "infinite": float("inf"),
    "NaN": float("nan"),
    "over an hour": 3_600_001,
    "a string": "41250",
    "a boolean": True,
    "null": None,
}


@pytest.mark.parametrize("interval", ABSURD_INTERVALS.values(), ids=ABSURD_INTERVALS.keys())
async def test_an_absurd_hello_interval_is_refused_and_the_next_connection_works(
    interval: Any, jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="discore_voice")
    with trio.fail_after(WAIT * 4):
        async with (
            bystander(),
            open_gateway(AbsurdHelloFirst(interval)) as gateway,
            open_shard(TOKEN, intents=Intents.VOICE_DEFAULT, gateway_url=gateway.url) as shard,
        ):
            assert shard.is_ready
    assert len(gateway.connections) == 2
    # The first connection never got as far as identifying, or heartbeating.
    assert [r.op for r in gateway.received if r.connection == 1] == []
    assert [r.connection for r in gateway.ops(IDENTIFY)] == [2]
    assert any("heartbeat_interval" in w for w in gateway_warnings(caplog))


async def test_a_one_millisecond_hello_gets_at_most_a_few_heartbeats_a_second(
    jump_clock: MockClock,
) -> None:
    with trio.fail_after(3600):
        async with (
            bystander(),
            open_gateway(GatewayScript(heartbeat_interval_ms=1)) as gateway,
            open_shard(TOKEN, intents=Intents.VOICE_DEFAULT, gateway_url=gateway.url),
        ):
            start = gateway.connections[0].opened_at

            def beats() -> list[float]:
                return [r.at for r in gateway.ops(HEARTBEAT)]

            with trio.move_on_at(start + 20):
                await gateway.wait_for(lambda: max_per_window(beats()) > 3)
    assert max_per_window(beats()) <= 3, f"{len(beats())} heartbeats: {beats()[:10]}..."


# --- a gateway that fails after every READY/RESUMED (defect 2d) ------------------------------


class MalformedAfterEverySession(GatewayScript):
    """A dispatch whose event name is a number, right after every READY and RESUMED."""

    async def after_session(self, conn: GatewayConn) -> None:
        await conn.send_text('{"op": 0, "t": 5, "s": "x", "d": null}')


async def test_a_gateway_failing_after_every_session_is_not_hammered(
    jump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="discore_voice.gateway")
    random.seed(3)
    with trio.fail_after(15 * 60):
        async with (
            bystander(),
            open_gateway(MalformedAfterEverySession()) as gateway,
            open_shard(TOKEN, intents=Intents.VOICE_DEFAULT, gateway_url=gateway.url) as shard,
        ):
            start = gateway.connections[0].opened_at
            # Ten minutes of mock time, or a storm's worth of connections, whichever first.
            with trio.move_on_at(start + 10 * 60):
                await gateway.wait_for(lambda: len(gateway.connections) > 100)
            assert not shard.is_closed
    reconnects = [conn.opened_at - start for conn in gateway.connections[1:]]
    assert len([t for t in reconnects if t < 60]) <= 6, reconnects
    steady = [t for t in reconnects if 5 * 60 <= t < 10 * 60]
    assert max_per_window(steady, 60.0) <= 3, steady
    warned = [w for w in gateway_warnings(caplog) if "malformed" in w or "disconnected" in w]
    assert len(warned) >= len(reconnects), len(warned)


# --- a lost gateway session ends voice at once (defect 9) ------------------------------------


@pytest.mark.parametrize("how", ["op 9 false", "close 4009"])
async def test_a_lost_gateway_session_ends_voice_within_a_second(
    how: str, jump_clock: MockClock
) -> None:
    with trio.fail_after(WAIT * 4):
        async with (
            bystander(),
            hostile() as env,
            voice_connection(env.shard, GUILD_ID, CHANNEL_ID) as vc,
        ):
            conn = env.gateway.latest
            lost_at = trio.current_time()
            if how == "op 9 false":
                await conn.send({"op": 9, "d": False})
            else:
                await conn.close(4009)
            invalidation = await vc.wait_invalidated()
            assert trio.current_time() - lost_at < 1.0
    assert invalidation.reason is InvalidationReason.GATEWAY_CLOSED
    assert "gateway session" in invalidation.detail
