"""Which guilds a shard's bot is in, and each guild's channels: enough to refuse a bad join at once.

A voice join with a wrong id (a guild the bot is not in, a text channel, a channel that does not
exist, or the two ids swapped) gets no answer from Discord: the connection would wait out its
whole handshake timeout, a minute, and then blame the network. The main gateway already says
everything needed to know better: READY lists every guild of the shard, each GUILD_CREATE lists
a guild's channels with their types, and CHANNEL_* and GUILD_DELETE keep that current. So the
shard feeds its dispatches here (:meth:`GuildDirectory.dispatch`) and a join asks
:meth:`GuildDirectory.check` first.

Only what the answer needs is kept, compactly: per guild, its channel ids in a sorted array and
their types in a parallel byte string, about 9 bytes a channel. A bot in 10 000 guilds of 50
channels holds ~4.5 MB here instead of the ~50 MB a dict per guild would take.

Sans-IO, like the rest of the core: dispatch data in, verdicts out. Malformed entries are
skipped (the directory then knows less, and a join it cannot judge is simply not checked).
"""

from __future__ import annotations

import enum
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["VOICE_CHANNEL_TYPES", "ChannelCheck", "ChannelVerdict", "GuildDirectory"]

#: GUILD_VOICE and GUILD_STAGE_VOICE: the channel types a bot can join.
VOICE_CHANNEL_TYPES: Final = frozenset({2, 13})

_TYPE_NAMES: Final = {
    0: "a text channel",
    2: "a voice channel",
    4: "a category",
    5: "an announcement channel",
    13: "a stage channel",
    14: "a directory channel",
    15: "a forum channel",
    16: "a media channel",
}
_SNOWFLAKE_MAX: Final = (1 << 64) - 1
_FOLLOWED: Final = frozenset(
    {"READY", "GUILD_CREATE", "GUILD_DELETE", "CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE"}
)


class ChannelVerdict(enum.Enum):
    """What the directory can say of a (guild, channel) pair before a join."""

    UNKNOWN = "unknown"  # it cannot tell: no READY yet, or the guild's channels not yet listed
    VOICE = "voice"  # a voice or stage channel of that guild: go ahead
    NOT_IN_GUILD = "not_in_guild"
    NO_SUCH_CHANNEL = "no_such_channel"
    NOT_A_VOICE_CHANNEL = "not_a_voice_channel"


@dataclass(frozen=True, slots=True)
class ChannelCheck:
    """A verdict and, for a refusal, what to tell the user (ids only: nothing secret)."""

    verdict: ChannelVerdict
    detail: str = ""


class _Channels:
    """One guild's channels: sorted ids and their types, side by side."""

    __slots__ = ("ids", "types")

    def __init__(self, channels: Iterable[tuple[int, int]]) -> None:
        ordered = sorted(dict(channels).items())
        self.ids = array("Q", (channel_id for channel_id, _ in ordered))
        self.types = bytes(min(kind, 255) for _, kind in ordered)

    def type_of(self, channel_id: int) -> int | None:
        index = bisect_left(self.ids, channel_id)
        if index < len(self.ids) and self.ids[index] == channel_id:
            return self.types[index]
        return None

    def with_channel(self, channel_id: int, kind: int | None) -> _Channels:
        """A copy with ``channel_id`` set to ``kind`` (or removed, for None)."""
        channels = dict(zip(self.ids, self.types, strict=True))
        if kind is None:
            channels.pop(channel_id, None)
        else:
            channels[channel_id] = kind
        return _Channels(channels.items())


class GuildDirectory:
    """The guilds of one shard, and their channels once each guild's GUILD_CREATE arrived."""

    __slots__ = ("_channels", "_guilds", "_ready")

    def __init__(self) -> None:
        self._ready = False
        self._guilds: set[int] = set()
        self._channels: dict[int, _Channels] = {}

    def __repr__(self) -> str:
        return f"<GuildDirectory guilds={len(self._guilds)} listed={len(self._channels)}>"

    @property
    def guild_count(self) -> int:
        return len(self._guilds)

    # --- the shard's dispatches -----------------------------------------------------------

    def dispatch(self, name: str, data: Any) -> bool:
        """Learn from one dispatch; True if it was one the directory follows.

        Anything else, or anything malformed, is ignored.
        """
        if name not in _FOLLOWED or not isinstance(data, Mapping):
            return False
        if name == "READY":
            self._on_ready(data)
        elif name == "GUILD_CREATE":
            self._on_guild_create(data)
        elif name == "GUILD_DELETE":
            self._on_guild_delete(data)
        else:
            self._on_channel(data, deleted=name == "CHANNEL_DELETE")
        return True

    def _on_ready(self, data: Mapping[str, Any]) -> None:
        guilds = data.get("guilds")
        if not isinstance(guilds, list):
            return
        # A new session: its READY lists every guild of the shard; what it omits, the bot left.
        self._guilds = {g for g in (_id_of(entry) for entry in guilds) if g is not None}
        self._channels = {g: c for g, c in self._channels.items() if g in self._guilds}
        self._ready = True

    def _on_guild_create(self, data: Mapping[str, Any]) -> None:
        guild_id = _id_of(data)
        if guild_id is None:
            return
        self._guilds.add(guild_id)
        channels = data.get("channels")
        if data.get("unavailable") is True or not isinstance(channels, list):
            return
        self._channels[guild_id] = _Channels(
            pair for pair in (_channel_of(entry) for entry in channels) if pair is not None
        )

    def _on_guild_delete(self, data: Mapping[str, Any]) -> None:
        guild_id = _id_of(data)
        if guild_id is None:
            return
        self._channels.pop(guild_id, None)
        if data.get("unavailable") is not True:
            self._guilds.discard(guild_id)  # removed from the guild (an outage keeps it)

    def _on_channel(self, data: Mapping[str, Any], *, deleted: bool) -> None:
        guild_id = _snowflake(data.get("guild_id"))
        pair = _channel_of(data)
        if guild_id is None or pair is None:
            return
        channels = self._channels.get(guild_id)
        if channels is not None:
            channel_id, kind = pair
            self._channels[guild_id] = channels.with_channel(channel_id, None if deleted else kind)

    # --- the question -----------------------------------------------------------------------

    def check(self, guild_id: int, channel_id: int) -> ChannelCheck:
        """Whether the bot can join ``channel_id`` of ``guild_id``, as far as is known."""
        if not self._ready:
            return ChannelCheck(ChannelVerdict.UNKNOWN)
        if guild_id not in self._guilds:
            detail = f"the bot is not in guild {guild_id}"
            owner = self._guild_with_channel(guild_id)
            if owner is not None:
                detail += (
                    f": {guild_id} is a channel of guild {owner}; are guild_id and channel_id "
                    "swapped?"
                )
            elif channel_id in self._guilds:
                detail += f" ({channel_id} is a guild: are guild_id and channel_id swapped?)"
            return ChannelCheck(ChannelVerdict.NOT_IN_GUILD, detail)
        channels = self._channels.get(guild_id)
        if channels is None:
            return ChannelCheck(ChannelVerdict.UNKNOWN)  # its GUILD_CREATE has not come yet
        kind = channels.type_of(channel_id)
        if kind is None:
            detail = f"guild {guild_id} has no channel {channel_id}"
            owner = self._guild_with_channel(channel_id)
            if owner is not None:
                detail += f" (it is a channel of guild {owner})"
            return ChannelCheck(ChannelVerdict.NO_SUCH_CHANNEL, detail)
        if kind not in VOICE_CHANNEL_TYPES:
            what = _TYPE_NAMES.get(kind, f"a channel of type {kind}")
            return ChannelCheck(
                ChannelVerdict.NOT_A_VOICE_CHANNEL,
                f"channel {channel_id} of guild {guild_id} is {what}, not a voice channel",
            )
        return ChannelCheck(ChannelVerdict.VOICE)

    def _guild_with_channel(self, channel_id: int) -> int | None:
        for guild_id, channels in self._channels.items():
            if channels.type_of(channel_id) is not None:
                return guild_id
        return None


def _snowflake(value: object) -> int | None:
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        number = int(value)
        return number if 0 < number <= _SNOWFLAKE_MAX else None
    return None


def _id_of(entry: object) -> int | None:
    return _snowflake(entry.get("id")) if isinstance(entry, Mapping) else None


def _channel_of(entry: object) -> tuple[int, int] | None:
    if not isinstance(entry, Mapping):
        return None
    channel_id = _snowflake(entry.get("id"))
    kind = entry.get("type")
    if channel_id is None or isinstance(kind, bool) or not isinstance(kind, int) or kind < 0:
        return None
    return channel_id, kind
