"""A shard's queue of voice state updates (op 4): leaves first, and a leave is never dropped.

Discord allows a gateway connection 120 commands a minute. A bot leaving many voice channels at
once (a restart, a shutdown, a burst of kicks handled together) can run out of that budget, and a
leave that is given up leaves the bot shown in the channel, with Discord holding a voice session
for it. So a leave is queued on the shard rather than sent by the voice connection that wants
it: the connection's block ends at once, the shard sends the leave as soon as its budget allows
(also after a reconnect), and ``open_shard``'s exit sends what is still queued before it closes.

Leaves go ahead of joins: a join that waits a little longer costs nothing, a leave that waits
keeps a member in a channel. A leave also makes a join for the same guild that is still queued
pointless, so that join is dropped (its caller returns as if it was sent: the voice connection
that asked for it is leaving anyway). Joins and other updates keep their order, and their callers
wait until theirs went out, as Discore's ``UpdateVoiceStateAsync`` does.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from ..._core.gateway.errors import ShardClosed
from ..._core.snowflake import Snowflake

__all__ = ["VoiceStateQueue", "VoiceStateRequest"]


@dataclass(eq=False, slots=True)
class VoiceStateRequest:
    """One op 4 payload waiting to be sent; ``finished`` is set once it is no longer queued."""

    guild_id: Snowflake
    payload: dict[str, Any]
    leave: bool
    outcome: Literal["queued", "sent", "superseded", "lost"] = "queued"
    finished: trio.Event = field(default_factory=trio.Event)

    def finish(self, outcome: Literal["sent", "superseded", "lost"]) -> None:
        self.outcome = outcome
        self.finished.set()


class VoiceStateQueue:
    """The op 4 requests a shard has not sent yet. The shard's sender task drains it."""

    __slots__ = ("_changed", "_closed_reason", "_leaves", "_log", "_others")

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        self._log = log
        # Insertion-ordered: at most one queued leave per guild, sent in the order asked.
        self._leaves: dict[Snowflake, VoiceStateRequest] = {}
        self._others: deque[VoiceStateRequest] = deque()
        self._changed = trio.Event()
        self._closed_reason: str | None = None

    def __len__(self) -> int:
        return len(self._leaves) + len(self._others)

    @property
    def leaves_queued(self) -> int:
        return len(self._leaves)

    def leave(self, guild_id: Snowflake, payload: dict[str, Any]) -> None:
        """Queue a leave; returns at once. A leave already queued for the guild covers it."""
        self._raise_if_closed()
        stale = [r for r in self._others if r.guild_id == guild_id]
        for request in stale:
            self._others.remove(request)
            request.finish("superseded")
        if guild_id not in self._leaves:
            self._leaves[guild_id] = VoiceStateRequest(guild_id, payload, leave=True)
        self._wake()

    async def update(self, guild_id: Snowflake, payload: dict[str, Any]) -> None:
        """Queue a join (or a mute/deaf change) and wait until it was sent."""
        self._raise_if_closed()
        request = VoiceStateRequest(guild_id, payload, leave=False)
        self._others.append(request)
        self._wake()
        try:
            await request.finished.wait()
        except BaseException:
            # Cancelled while waiting its turn: it must not go out later on its own.
            if request in self._others:
                self._others.remove(request)
            raise
        if request.outcome == "lost":
            self._raise_if_closed()

    def next_request(self) -> VoiceStateRequest | None:
        """The request to send next (leaves first), without removing it."""
        if self._leaves:
            return next(iter(self._leaves.values()))
        return self._others[0] if self._others else None

    def done(self, request: VoiceStateRequest) -> None:
        """``request`` went out: take it off the queue and release its caller."""
        if request.leave:
            if self._leaves.get(request.guild_id) is request:
                del self._leaves[request.guild_id]
        elif self._others and self._others[0] is request:
            self._others.popleft()
        elif request in self._others:
            self._others.remove(request)
        request.finish("sent")
        self._wake()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def close(self, reason: str) -> int:
        """The shard stopped: release every caller (with ShardClosed); return leaves lost."""
        self._closed_reason = reason
        lost = len(self._leaves)
        for request in [*self._leaves.values(), *self._others]:
            request.finish("lost")
        self._leaves.clear()
        self._others.clear()
        self._wake()
        return lost

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _raise_if_closed(self) -> None:
        if self._closed_reason is not None:
            raise ShardClosed(self._closed_reason)
