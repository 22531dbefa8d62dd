"""The bridge subscription task: the two voice dispatches in, and the bridge going away.

A voice connection hears from the main gateway only through this task, so "the shard or bridge
stopped" has one place to be noticed: the end of the subscription.
"""

from __future__ import annotations

from typing import Any, Protocol

from .._core.gateway.voice import GATEWAY_SESSION_LOST, VOICE_SERVER_UPDATE, VOICE_STATE_UPDATE
from .shard.events import Subscription

__all__ = ["DispatchHandler", "run_gateway_listener"]


class DispatchHandler(Protocol):
    async def _voice_state_update(self, data: Any) -> None: ...

    async def _voice_server_update(self, data: Any) -> None: ...

    async def _gateway_session_lost(self, data: Any) -> None: ...

    async def _gateway_closed(self) -> None: ...


async def run_gateway_listener(subscription: Subscription, handler: DispatchHandler) -> None:
    """Forward dispatches until the subscription ends, then report the gateway closed."""
    with subscription:
        async for name, data in subscription:
            if name == VOICE_STATE_UPDATE:
                await handler._voice_state_update(data)
            elif name == VOICE_SERVER_UPDATE:
                await handler._voice_server_update(data)
            elif name == GATEWAY_SESSION_LOST:
                await handler._gateway_session_lost(data)
    await handler._gateway_closed()
