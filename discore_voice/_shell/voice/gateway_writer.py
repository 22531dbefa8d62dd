"""The op 4 sender of a voice connection: joins, switches and leaves, through the bridge.

A join may wait a long time for the shard's send budget (up to a rate-limit window), so it is
sent from a task of its own: the session task must keep reading the voice websocket and
heartbeating meanwhile. Requests go out in order; a leave cancels the join it overtakes (there
is no point joining what we leave) and is sent once. Through a shard a leave is queued on the
shard and never waits here; through another bridge it waits at most :data:`LEAVE_TIMEOUT`.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Final

import trio

from ..._core.gateway.errors import BridgeClosed
from ..._core.snowflake import Snowflake
from ..bridge import GatewayVoiceBridge
from .messages import GatewayGone, Message

__all__ = ["LEAVE_TIMEOUT", "GatewayWriter"]

#: Seconds a leave may wait on a bridge other than a shard (a shard queues it and returns).
LEAVE_TIMEOUT: Final = 5.0


@dataclass(eq=False, slots=True)
class _Request:
    channel_id: Snowflake | None
    self_mute: bool
    self_deaf: bool
    done: trio.Event | None


class GatewayWriter:
    """Queue op 4s with :meth:`request`; :meth:`run` sends them. Owned by the session task."""

    def __init__(
        self,
        bridge: GatewayVoiceBridge,
        guild_id: Snowflake,
        inbox: trio.MemorySendChannel[Message],
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._bridge = bridge
        self._guild_id = guild_id
        self._inbox = inbox
        self._log = log
        self._queue: deque[_Request] = deque()
        self._wake = trio.Event()
        self._sending: trio.CancelScope | None = None
        self._idle = trio.Event()
        self._idle.set()
        self.joined = False
        """Whether a join was ever handed to the bridge (so a leave may be due)."""
        self.left = False

    def request(
        self,
        channel_id: Snowflake | None,
        *,
        self_mute: bool,
        self_deaf: bool,
        done: trio.Event | None = None,
    ) -> None:
        """Queue an op 4; ``done`` is set once it was sent (or dropped)."""
        if channel_id is None:
            if self.left:
                if done is not None:
                    done.set()
                return
            self.left = True
            # Nothing queued before a leave matters any more, least of all a join in progress.
            for stale in self._queue:
                if stale.done is not None:
                    stale.done.set()
            self._queue.clear()
            if self._sending is not None:
                self._sending.cancel()
        elif self.left:
            if done is not None:
                done.set()
            return
        self._queue.append(_Request(channel_id, self_mute, self_deaf, done))
        self._idle = trio.Event()
        self._wake.set()

    async def wait_idle(self) -> None:
        """Until every queued op 4 was sent (leaving waits for its leave this way)."""
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            request = self._queue.popleft()
            try:
                await self._send(request)
            finally:
                if request.done is not None:
                    request.done.set()

    async def _send(self, request: _Request) -> None:
        leave = request.channel_id is None
        try:
            with trio.CancelScope() as self._sending:
                if leave:
                    with trio.move_on_after(LEAVE_TIMEOUT) as waited:
                        await self._bridge.update_voice_state(
                            self._guild_id,
                            None,
                            self_mute=request.self_mute,
                            self_deaf=request.self_deaf,
                        )
                    if waited.cancelled_caught:
                        self._log.warning(
                            "the bridge did not take the leave within %g s; it may be lost",
                            LEAVE_TIMEOUT,
                        )
                else:
                    self.joined = True
                    await self._bridge.update_voice_state(
                        self._guild_id,
                        request.channel_id,
                        self_mute=request.self_mute,
                        self_deaf=request.self_deaf,
                    )
        except BridgeClosed:
            if leave:
                self._log.debug("the gateway is gone; cannot send the leave request")
            else:
                await self._inbox.send(GatewayGone())
        finally:
            self._sending = None
