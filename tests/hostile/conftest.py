"""Fixtures and helpers of the hostile-server suite (issue #12).

Every test here puts the client in front of a server that breaks the protocol in one place, and
checks that the client answers with one of three things: an exception of the library's own
hierarchy, an invalidation with a reason, or a logged and counted drop. Never a bare Python
error, a hang (every test runs under ``trio.fail_after``), a busy loop (servers count what they
receive, on trio's clock), or a crash that reaches the user's own tasks (a :class:`Bystander`
task shares the test's nursery and must survive).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import pairwise

import pytest
import trio
import trio.testing

from discore_voice import Intents, Shard, VoiceConnection, open_shard

from ._gateway import BOT_ID, GatewayScript, GatewayServer, open_gateway
from ._voice_server import VoiceScript, VoiceServer, open_voice_server

__all__ = [
    "BOT_ID",
    "CHANNEL_ID",
    "GUILD_ID",
    "TOKEN",
    "WAIT",
    "Bystander",
    "Hostile",
    "bystander",
    "frames_dropped",
    "gaps",
    "hostile",
    "invalid_or",
    "long_records",
    "max_per_window",
    "settled_until",
    "udp_drops",
    "udp_received",
    "udp_restarts",
]

WAIT = 30.0
"""Seconds any single test step may take (mock seconds under ``jump_clock``)."""
TOKEN = "hostile.bot.token"
GUILD_ID = 81_000_000_000_000_001
CHANNEL_ID = 81_000_000_000_000_002


# --- the one place that knows where the client keeps its counters ------------------------------
# ``vc.udp_stats`` and ``vc.websocket_stats`` (public since 0630365; before, ``vc.udp``). Tests go
# through these helpers only, so a change of that API changes this place alone.


def udp_drops(vc: VoiceConnection) -> Mapping[str, int]:
    """Datagrams from the voice server the client dropped, by reason (cumulative)."""
    return dict(vc.udp_stats.dropped)


def udp_received(vc: VoiceConnection) -> int:
    """Datagrams from the voice server that decrypted (cumulative)."""
    return vc.udp_stats.received


def udp_restarts(vc: VoiceConnection) -> int:
    """How often the client re-established a UDP path that stopped answering."""
    return vc.udp_stats.restarts


def frames_dropped(vc: VoiceConnection) -> Mapping[str, int]:
    """Websocket frames the client dropped: ``malformed`` and ``unknown_opcodes``."""
    stats = vc.websocket_stats
    return {"malformed": stats.malformed, "unknown_opcodes": stats.unknown_opcodes}


async def settled_until(predicate: Callable[[], object]) -> None:
    """Wait until ``predicate()`` holds, re-checked each time the whole program is idle.

    For counters no event announces (what a UDP task counted): a datagram sent over loopback is
    in the receiver's queue when ``sendto`` returns, so once every task is blocked it has been
    read. The same technique as ``tests/shell``; bound it with ``trio.fail_after``.
    """
    while not predicate():
        await trio.testing.wait_all_tasks_blocked(cushion=0.001)


async def invalid_or(
    vc: VoiceConnection, server: VoiceServer, predicate: Callable[[], object]
) -> None:
    """Until the connection is invalid, or ``predicate()`` holds on the server (whichever first):
    each side announces its own changes only."""
    async with trio.open_nursery() as nursery:

        async def wait_server() -> None:
            await server.wait_for(predicate)
            nursery.cancel_scope.cancel()

        async def wait_client() -> None:
            await vc.wait_invalidated()
            nursery.cancel_scope.cancel()

        nursery.start_soon(wait_server)
        nursery.start_soon(wait_client)


# --- timing ---------------------------------------------------------------------------------


def max_per_window(times: list[float], window: float = 1.0) -> int:
    """The most events within any ``window`` seconds: a burst that an average would hide."""
    ordered = sorted(times)
    best = start = 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in pairwise(times)]


def long_records(caplog: pytest.LogCaptureFixture, limit: int = 1100) -> list[tuple[str, int, str]]:
    """The library's log records longer than ``limit`` characters (name, length, start)."""
    return [
        (r.name, len(r.getMessage()), r.getMessage()[:80])
        for r in caplog.records
        if r.name.startswith("discore_voice") and len(r.getMessage()) > limit
    ]


# --- the user's own task --------------------------------------------------------------------


class Bystander:
    """A task of the user's, in the same nursery as the code under test.

    It answers pings; if anything the library does cancels the user's nursery, it cannot.
    """

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.Event](8)
        self.cancelled = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            async for pong in self._receive:
                pong.set()
        except trio.Cancelled:
            self.cancelled = True
            raise

    async def check_alive(self) -> None:
        pong = trio.Event()
        self._send.send_nowait(pong)
        with trio.fail_after(5):
            await pong.wait()
        assert not self.cancelled


@asynccontextmanager
async def bystander() -> AsyncIterator[Bystander]:
    """The test's own nursery with a :class:`Bystander` in it, checked alive at the end."""
    async with trio.open_nursery() as nursery:
        task = Bystander()
        await nursery.start(task.run)
        yield task
        await task.check_alive()
        nursery.cancel_scope.cancel()


# --- a bot in front of hostile servers ------------------------------------------------------


@dataclass
class Hostile:
    """The hostile gateway and voice server, and a shard connected to the gateway."""

    gateway: GatewayServer
    voice: VoiceServer
    shard: Shard


@asynccontextmanager
async def hostile(
    voice_script: VoiceScript | None = None, gateway_script: GatewayScript | None = None
) -> AsyncIterator[Hostile]:
    """Both hostile servers, and a shard that reached READY on the gateway."""
    async with (
        open_voice_server(voice_script) as voice,
        open_gateway(gateway_script, voice_endpoint=voice.url, guilds=[GUILD_ID]) as gateway,
        open_shard(TOKEN, intents=Intents.VOICE_DEFAULT, gateway_url=gateway.url) as shard,
    ):
        yield Hostile(gateway, voice, shard)
        # The client must never have sent the server something our own parser rejects.
        assert voice.client_errors == []


@pytest.fixture
def voice_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything the library logs, DEBUG included."""
    caplog.set_level(logging.DEBUG, logger="discore_voice")
    return caplog
