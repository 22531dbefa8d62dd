"""Gateway-voice bridges: everything a voice connection needs from the main gateway, and no more.

A voice connection needs the bot's user id, the VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE
dispatches, and a way to send op 4. :class:`GatewayVoiceBridge` is exactly that. A
:class:`~discore_voice.Shard` satisfies it; :class:`ForwardedBridge` satisfies it for voice that
runs away from the shard (another process, another machine), fed with the dispatches the main
bot forwards. The bridge going away shows as its subscriptions ending (``async for`` stops), and
as :class:`BridgeClosed` from :meth:`update_voice_state`.

``examples/bridge_worker.py`` is a complete, tested two-process setup: the main process owns the
shard and forwards the two dispatches over a socket, one JSON object per line; the worker feeds
them to ``bridge.dispatch(t, d)`` and sends op 4 requests back through ``send_voice_state``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from .._closing import ClosesOnExit
from .._core.gateway.errors import BridgeClosed
from .._core.gateway.voice import (
    GATEWAY_DISCONNECTED,
    GATEWAY_RESUMED,
    GATEWAY_SESSION_LOST,
    VOICE_SERVER_UPDATE,
    VOICE_STATE_UPDATE,
)
from .._core.snowflake import Snowflake, validate_snowflake
from .._errors import UsageError
from . import dispatches
from .dispatches import Dispatch
from .hub import Hub, Subscription

__all__ = ["BRIDGE_EVENTS", "ForwardedBridge", "GatewayVoiceBridge", "SendVoiceState"]

_logger = logging.getLogger("discore_voice.gateway.bridge")

#: What a main bot forwards to a :class:`ForwardedBridge`: ``shard.subscribe(*BRIDGE_EVENTS)``.
#: The two voice dispatches, and the shard's news about its gateway session (pseudo-dispatches
#: a shard delivers only to subscriptions that name them): without that news, a connection
#: behind a bridge cannot end at once when the session is lost, nor wait out an outage.
BRIDGE_EVENTS = frozenset(
    {
        VOICE_STATE_UPDATE,
        VOICE_SERVER_UPDATE,
        GATEWAY_SESSION_LOST,
        GATEWAY_DISCONNECTED,
        GATEWAY_RESUMED,
    }
)
#: The shard's news about itself, which concerns every guild's connection.
_BROADCAST = frozenset({GATEWAY_SESSION_LOST, GATEWAY_DISCONNECTED, GATEWAY_RESUMED})

SendVoiceState = Callable[[Snowflake, Snowflake | None, bool, bool], Awaitable[None]]
"""``async (guild_id, channel_id | None, self_mute, self_deaf) -> None``: send op 4."""


@runtime_checkable
class GatewayVoiceBridge(Protocol):
    """What a voice connection needs from the main gateway.

    ``subscribe(VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE)`` yields the raw dispatches
    ``(name, d)``; the subscription ends when the bridge goes away. ``update_voice_state`` sends
    op 4, or raises :class:`BridgeClosed` once the bridge is gone.
    """

    @property
    def user_id(self) -> Snowflake:
        """The bot's user id: the VOICE_STATE_UPDATE dispatches to act on are its own."""
        ...

    def subscribe(self, *event_names: str) -> Subscription[Dispatch]:
        """The raw dispatches ``(name, d)`` for these names, until the bridge goes away."""
        ...

    async def update_voice_state(
        self,
        guild_id: int | str,
        channel_id: int | str | None,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
    ) -> None:
        """Send op 4 (join, switch, mute/deaf, or leave with None); BridgeClosed once gone."""
        ...


class ForwardedBridge(ClosesOnExit):
    """A bridge fed by hand with dispatches forwarded from a shard elsewhere.

    ``send_voice_state`` is awaited for each op 4 the voice side wants sent; it should hand the
    request to the main bot, which sends it through its shard.
    """

    def __init__(
        self, user_id: int | str, send_voice_state: SendVoiceState, *, buffer_size: int = 64
    ) -> None:
        if not callable(send_voice_state):
            raise UsageError("send_voice_state must be an async callable")
        self._user_id = validate_snowflake(user_id, name="user_id")
        self._send_voice_state = send_voice_state
        self._hub: Hub[Dispatch] = Hub(_logger, buffer_size, what="a dispatch")

    def __repr__(self) -> str:
        state = "closed" if self._hub.closed else "open"
        return f"<ForwardedBridge user_id={self._user_id} {state} subscriptions={len(self._hub)}>"

    @property
    def user_id(self) -> Snowflake:
        """The bot's user id, as given."""
        return self._user_id

    @property
    def is_closed(self) -> bool:
        """Closed: its subscriptions ended and op 4 raises BridgeClosed."""
        return self._hub.closed

    def subscribe(
        self,
        *event_names: str,
        buffer_size: int | None = None,
        guild_id: int | str | None = None,
    ) -> Subscription[Dispatch]:
        """Receive the forwarded voice events (all if none are named), of one guild if given."""
        unknown = set(event_names) - BRIDGE_EVENTS
        if unknown:
            raise UsageError(
                "a forwarded bridge carries only the voice dispatches and the shard's news: "
                + ", ".join(sorted(BRIDGE_EVENTS))
            )
        return dispatches.subscribe(
            self._hub, event_names or BRIDGE_EVENTS, buffer_size, guild_id=guild_id
        )

    def dispatch(self, event_name: str, data: Any) -> None:
        """Hand over one raw dispatch (``t``, ``d``). Never blocks; other events are ignored."""
        if event_name not in BRIDGE_EVENTS or self._hub.closed:
            return
        if event_name in _BROADCAST:
            self._hub.broadcast((event_name, data), name=event_name)  # it routes by no guild
            return
        dispatches.publish(self._hub, event_name, data)

    async def update_voice_state(
        self,
        guild_id: int | str,
        channel_id: int | str | None,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
    ) -> None:
        """Hand an op 4 request to ``send_voice_state``; raise BridgeClosed once closed."""
        guild = validate_snowflake(guild_id, name="guild_id")
        channel = None if channel_id is None else validate_snowflake(channel_id, name="channel_id")
        if not isinstance(self_mute, bool) or not isinstance(self_deaf, bool):
            raise UsageError("self_mute and self_deaf must be booleans")
        if self._hub.closed:
            raise BridgeClosed("the forwarded bridge is closed")
        await self._send_voice_state(guild, channel, self_mute, self_deaf)

    def close(self) -> None:
        """The other side went away: end every subscription. Idempotent."""
        self._hub.close()
