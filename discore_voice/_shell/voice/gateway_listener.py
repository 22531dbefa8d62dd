"""The bridge subscription task: the voice dispatches in, and the bridge going away.

A voice connection hears from the main gateway only through this task, so "the shard or bridge
stopped" has one place to be noticed: the end of the subscription.
"""

from __future__ import annotations

import trio

from ..dispatches import Dispatch as DispatchItem
from ..hub import Subscription
from .messages import Dispatch, GatewayGone, Message

__all__ = ["run_gateway_listener"]


async def run_gateway_listener(
    subscription: Subscription[DispatchItem], inbox: trio.MemorySendChannel[Message]
) -> None:
    """Forward dispatches until the subscription ends, then report the gateway gone."""
    with subscription:
        async for name, data in subscription:
            await inbox.send(Dispatch(name, data))
    await inbox.send(GatewayGone())
