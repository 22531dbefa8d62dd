"""Gateway dispatches on a :class:`~discore_voice._shell.hub.Hub`: what a shard and a bridge share.

A dispatch is published as ``(name, d)`` with its name (for subscriptions to some names only) and
its guild (for subscriptions to one guild only), read from ``d.guild_id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

from .._core.snowflake import validate_snowflake
from .._errors import UsageError
from .hub import Hub, Subscription

__all__ = ["DEFAULT_BUFFER_SIZE", "Dispatch", "publish", "subscribe"]

#: Dispatches a subscriber may fall behind by before it loses some.
DEFAULT_BUFFER_SIZE = 256

Dispatch: TypeAlias = tuple[str, Any]


def subscribe(
    hub: Hub[Dispatch],
    event_names: Iterable[str],
    buffer_size: int | None = None,
    *,
    guild_id: int | str | None = None,
) -> Subscription[Dispatch]:
    """Subscribe to ``event_names`` (all when empty), of one guild if ``guild_id`` is given."""
    names = tuple(event_names)
    for name in names:
        if not isinstance(name, str) or not name:
            raise UsageError("event names must be non-empty strings, such as 'GUILD_CREATE'")
    guild = None if guild_id is None else validate_snowflake(guild_id, name="guild_id")
    return hub.subscribe(
        buffer_size, event_names=frozenset(names) if names else None, guild_id=guild
    )


def publish(hub: Hub[Dispatch], name: str, data: Any, *, explicit: bool = False) -> None:
    """Offer one dispatch to every interested subscriber; never blocks. ``explicit``: only to
    those that name it (for pseudo-dispatches, which are not Discord's)."""
    guild = _guild_of(data) if hub.routes_by_guild else None
    hub.publish((name, data), name=name, guild=guild, explicit=explicit)


def _guild_of(data: Any) -> int | None:
    """The dispatch's ``guild_id`` as a number, or None if it has none (or a malformed one)."""
    if not isinstance(data, dict):
        return None
    value = data.get("guild_id")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None
