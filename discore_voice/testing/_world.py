"""The simulator's world: accounts, guilds, channels, voice states and gateway sessions.

Everything here is synchronous and free of sockets, so a fault injected from a test (a move, a
kick, a close) changes the world and queues its dispatches atomically, in the order Discord would
send them; the gateway connections only drain what the world queued.
"""

from __future__ import annotations

import base64
import copy
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import trio

from .._core.snowflake import Snowflake, validate_snowflake
from .._errors import UsageError

__all__ = [
    "GUILDS",
    "GUILD_VOICE_STATES",
    "KNOWN_INTENTS",
    "PRIVILEGED_INTENTS",
    "BotAccount",
    "Dispatch",
    "GatewaySession",
    "SimChannel",
    "SimGuild",
    "SimUser",
    "SimVoiceSession",
    "VoiceState",
    "World",
]

logger = logging.getLogger("discore_voice.testing")

GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_VOICE_STATES = 1 << 7
GUILD_PRESENCES = 1 << 8
MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
#: Every documented intent bit; any other bit is closed with 4013.
KNOWN_INTENTS = ((1 << 17) - 1) | (1 << 20) | (1 << 21) | (1 << 24) | (1 << 25)

_DISCORD_EPOCH_MS = 1_420_070_400_000
_VOICE_CHANNEL = 2
#: Close codes after which Discord wants a fresh Identify, so the session cannot be resumed.
NON_RESUMABLE_CLOSE_CODES = frozenset({1000, 1001, 4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014})

VoiceEventsOrder = tuple[Literal["state", "server"], Literal["state", "server"]]


class _Snowflakes:
    """Realistic ids whose timestamp part grows by at least 1 ms per id.

    A strictly growing timestamp is what spreads guilds created in a burst over shards, since
    the shard is ``(id >> 22) % count``.
    """

    def __init__(self) -> None:
        self._last = 0
        self._increment = 0

    def next(self) -> Snowflake:
        now = time.time_ns() // 1_000_000 - _DISCORD_EPOCH_MS
        self._last = max(now, self._last + 1)
        self._increment = (self._increment + 1) & 0xFFF
        return (self._last << 22) | (1 << 17) | (1 << 12) | self._increment


def _key(guild_id: object, user_id: object) -> tuple[Snowflake, Snowflake]:
    return validate_snowflake(guild_id, name="guild_id"), validate_snowflake(
        user_id, name="user_id"
    )


def _iso_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(eq=False)
class SimUser:
    """A member of the simulated world: a bot's user or a simulated human."""

    user_id: Snowflake
    name: str
    bot: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": str(self.user_id),
            "username": self.name,
            "discriminator": "0",
            "global_name": None if self.bot else self.name,
            "avatar": None,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
        }


@dataclass(eq=False)
class BotAccount:
    """A bot application; its token authenticates both the gateway and REST."""

    user_id: Snowflake
    name: str
    token: str = field(repr=False)
    privileged_intents: int = PRIVILEGED_INTENTS

    @property
    def application_id(self) -> Snowflake:
        # Bots created since 2016 share their id with their application.
        return self.user_id

    @property
    def user(self) -> SimUser:
        return SimUser(self.user_id, self.name, bot=True)


@dataclass(eq=False)
class SimChannel:
    """A guild channel; only voice channels (type 2) matter for voice."""

    id: Snowflake
    guild_id: Snowflake
    name: str
    type: int = _VOICE_CHANNEL
    user_limit: int = 0
    bitrate: int = 64000
    position: int = 0

    def to_wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "parent_id": None,
            "nsfw": False,
            "flags": 0,
        }
        if self.type == _VOICE_CHANNEL:
            data.update(
                bitrate=self.bitrate,
                user_limit=self.user_limit,
                rtc_region=None,
                video_quality_mode=1,
                rate_limit_per_user=0,
                last_message_id=None,
            )
        else:
            data.update(topic=None, rate_limit_per_user=0, last_message_id=None)
        return data


@dataclass(eq=False)
class SimGuild:
    """A guild of the world; create it with :meth:`World.add_guild`."""

    id: Snowflake
    name: str
    _world: World = field(repr=False)
    channels: dict[Snowflake, SimChannel] = field(default_factory=dict, repr=False)
    humans: dict[Snowflake, SimUser] = field(default_factory=dict, repr=False)
    joined_at: str = field(default_factory=_iso_now, repr=False)

    def add_voice_channel(self, *, name: str = "voice", user_limit: int = 0) -> SimChannel:
        if not 0 <= user_limit <= 99:
            raise UsageError("user_limit must be between 0 (no limit) and 99")
        return self._world._add_channel(self, name, _VOICE_CHANNEL, user_limit)

    def add_text_channel(self, *, name: str = "general") -> SimChannel:
        return self._world._add_channel(self, name, 0, 0)

    def add_member(self, name: str) -> SimUser:
        """A simulated human, who can be placed in voice with :meth:`World.set_voice_state`."""
        user = SimUser(self._world._ids.next(), name)
        self.humans[user.user_id] = user
        self._world._changed()
        return user

    def shard_id(self, shard_count: int) -> int:
        return (self.id >> 22) % shard_count


@dataclass(frozen=True)
class VoiceState:
    """A snapshot of one user's voice state, as the simulator sees it."""

    guild_id: Snowflake
    user_id: Snowflake
    channel_id: Snowflake
    session_id: str = field(repr=False)
    self_mute: bool = False
    self_deaf: bool = False


@dataclass(frozen=True)
class SimVoiceSession:
    """What a voice gateway needs to accept a bot's Identify: the pair VOICE_*_UPDATE carried."""

    guild_id: Snowflake
    user_id: Snowflake
    channel_id: Snowflake
    session_id: str = field(repr=False)
    token: str = field(repr=False)
    endpoint: str | None


@dataclass(frozen=True)
class Dispatch:
    """One dispatch (op 0) as a session's sequence recorded it."""

    seq: int
    type: str
    data: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"op": 0, "s": self.seq, "t": self.type, "d": self.data}


class _Outbox(Protocol):
    """The live connection a session's messages go to (see ``_gateway``)."""

    def send(self, payload: dict[str, Any]) -> None: ...

    def close(self, code: int, reason: str = "") -> object: ...


@dataclass(eq=False)
class _VoiceRecord:
    guild_id: Snowflake
    user_id: Snowflake
    channel_id: Snowflake
    session_id: str
    self_mute: bool
    self_deaf: bool
    token: str | None = None
    endpoint: str | None = None
    owner: GatewaySession | None = None


class GatewaySession:
    """One identified gateway session: what it was sent and what it sent, as plain data.

    It outlives its connections, because a resumed connection continues the same sequence; the
    ``dispatches`` list is also the replay buffer for Resume.
    """

    def __init__(
        self,
        bot: BotAccount,
        session_id: str,
        identify: dict[str, Any],
        intents: int,
        shard: tuple[int, int] | None,
    ) -> None:
        self.bot = bot
        self._session_id = session_id
        #: The Identify ``d`` with the token removed.
        self.identify = identify
        self.intents = intents
        self.shard = shard
        #: Every payload received on this session's connections (tokens redacted).
        self.received: list[dict[str, Any]] = []
        #: Every dispatch queued for the session, in sequence order.
        self.dispatches: list[Dispatch] = []
        #: Every payload handed to a live connection (dispatches, hello, acks, op 7/9...).
        self.sent: list[dict[str, Any]] = []
        #: Close codes of this session's connections, whichever side closed.
        self.close_codes: list[int] = []
        self.state: Literal["connected", "disconnected", "invalidated"] = "connected"
        self.connection_count = 1
        self.resume_count = 0
        self.heartbeat_acks_stalled = False
        self._outbox: _Outbox | None = None
        self._voice_session_ids: dict[Snowflake, str] = {}

    def __repr__(self) -> str:
        return (
            f"<GatewaySession bot={self.bot.name!r} shard={self.shard} intents={self.intents} "
            f"state={self.state} seq={self.seq}>"
        )

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def seq(self) -> int:
        return self.dispatches[-1].seq if self.dispatches else 0

    @property
    def ops_received(self) -> list[int]:
        return [p["op"] for p in self.received if isinstance(p.get("op"), int)]

    @property
    def dispatch_types(self) -> list[str]:
        return [d.type for d in self.dispatches]

    def covers(self, guild_id: Snowflake) -> bool:
        """Whether Discord would route this guild's events to this session."""
        if self.shard is None:
            return True
        shard_id, count = self.shard
        return (guild_id >> 22) % count == shard_id

    @property
    def alive(self) -> bool:
        return self.state != "invalidated"


class World:
    """The shared state behind every server of one simulator."""

    def __init__(
        self,
        *,
        voice_events_order: VoiceEventsOrder = ("state", "server"),
        heartbeat_interval: int = 41250,
        heartbeat_timeout: float | None = None,
        rate_limit: tuple[int, float] = (120, 60.0),
        max_guilds_per_shard: int = 2500,
        shard_count: int = 1,
        voice_events_gap: float = 0.0,
    ) -> None:
        self.voice_events_order = voice_events_order
        #: Seconds between the two voice dispatches on the wire. Discord's arrive apart; some
        #: clients (discord.py 2.7.1) lose a wake-up when both land in one event-loop pass.
        self.voice_events_gap = voice_events_gap
        #: How the world schedules a delayed event: set by the running simulator (its nursery).
        self._call_later: Callable[[float, Callable[[], None]], None] | None = None
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.rate_limit = rate_limit
        self.max_guilds_per_shard = max_guilds_per_shard
        #: What GET /gateway/bot recommends.
        self.shard_count = shard_count
        #: ``"host:port"`` sent in VOICE_SERVER_UPDATE; the voice gateway sets the real one.
        self.voice_endpoint: str | None = "127.0.0.1:0"
        self.gateway_url = ""
        self._ids = _Snowflakes()
        self._bots: list[BotAccount] = []
        self._guilds: dict[Snowflake, SimGuild] = {}
        self._voice: dict[tuple[Snowflake, Snowflake], _VoiceRecord] = {}
        self.sessions: list[GatewaySession] = []
        self._changed_event = trio.Event()
        self.bot = self.add_bot("discore-sim-bot")

    # -- change notification -------------------------------------------------------------------

    def _changed(self) -> None:
        self._changed_event.set()
        self._changed_event = trio.Event()

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        """Wait until ``predicate()`` is true; it is re-checked after every change of the world.

        Tests synchronise on this instead of sleeping; wrap it in ``trio.fail_after``.
        """
        while not predicate():
            await self._changed_event.wait()

    # -- accounts and world --------------------------------------------------------------------

    @property
    def voice_events_order(self) -> VoiceEventsOrder:
        return self._voice_events_order

    @voice_events_order.setter
    def voice_events_order(self, order: VoiceEventsOrder) -> None:
        if tuple(order) not in {("state", "server"), ("server", "state")}:
            raise UsageError(
                'voice_events_order must be ("state", "server") or ("server", "state")'
            )
        self._voice_events_order = order

    @property
    def bots(self) -> list[BotAccount]:
        return list(self._bots)

    def add_bot(self, name: str, *, privileged_intents: int = PRIVILEGED_INTENTS) -> BotAccount:
        """A new bot application; ``privileged_intents`` are the ones its portal page enables."""
        user_id = self._ids.next()
        head = base64.urlsafe_b64encode(str(user_id).encode()).decode().rstrip("=")
        token = f"{head}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(20)}"
        bot = BotAccount(user_id, name, token, privileged_intents)
        self._bots.append(bot)
        self._changed()
        return bot

    def bot_for_token(self, token: object) -> BotAccount | None:
        if not isinstance(token, str):
            return None
        for bot in self._bots:
            if hmac.compare_digest(bot.token.encode(), token.encode()):
                return bot
        return None

    @property
    def guilds(self) -> list[SimGuild]:
        return list(self._guilds.values())

    def guild(self, guild_id: Snowflake) -> SimGuild:
        try:
            return self._guilds[validate_snowflake(guild_id, name="guild_id")]
        except KeyError:
            raise UsageError("no such guild in the simulator") from None

    def add_guild(self, *, name: str = "guild", shard: tuple[int, int] | None = None) -> SimGuild:
        """A new guild; ``shard=(id, count)`` draws ids until the guild lands on that shard."""
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise UsageError("shard must be (shard_id, shard_count) with 0 <= shard_id < count")
        guild_id = self._ids.next()
        while shard is not None and (guild_id >> 22) % shard[1] != shard[0]:
            guild_id = self._ids.next()
        guild = SimGuild(guild_id, name, self)
        self._guilds[guild_id] = guild
        for session in self._routed(guild_id, GUILDS):
            self._dispatch(session, "GUILD_CREATE", self._guild_create(guild, session))
        self._changed()
        return guild

    def _add_channel(self, guild: SimGuild, name: str, kind: int, user_limit: int) -> SimChannel:
        channel = SimChannel(
            self._ids.next(), guild.id, name, kind, user_limit, position=len(guild.channels)
        )
        guild.channels[channel.id] = channel
        for session in self._routed(guild.id, GUILDS):
            self._dispatch(session, "CHANNEL_CREATE", channel.to_wire())
        self._changed()
        return channel

    def _channel(self, channel_id: Snowflake) -> tuple[SimGuild, SimChannel]:
        for guild in self._guilds.values():
            channel = guild.channels.get(channel_id)
            if channel is not None:
                return guild, channel
        raise UsageError("no such channel in the simulator")

    def _user(self, guild: SimGuild, user_id: Snowflake) -> SimUser | None:
        for bot in self._bots:
            if bot.user_id == user_id:
                return bot.user
        return guild.humans.get(user_id)

    def _members(self, guild: SimGuild) -> Iterator[SimUser]:
        for bot in self._bots:
            yield bot.user
        yield from guild.humans.values()

    # -- wire shapes ---------------------------------------------------------------------------

    def _member(self, guild: SimGuild, user: SimUser) -> dict[str, Any]:
        return {
            "user": user.to_wire(),
            "nick": None,
            "avatar": None,
            "roles": [],
            "joined_at": guild.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }

    def _voice_wire(self, record: _VoiceRecord, channel_id: Snowflake | None) -> dict[str, Any]:
        guild = self._guilds[record.guild_id]
        user = self._user(guild, record.user_id)
        data: dict[str, Any] = {
            "guild_id": str(record.guild_id),
            "channel_id": None if channel_id is None else str(channel_id),
            "user_id": str(record.user_id),
            "session_id": record.session_id,
            "deaf": False,
            "mute": False,
            "self_deaf": record.self_deaf,
            "self_mute": record.self_mute,
            "self_video": False,
            "suppress": False,
            "request_to_speak_timestamp": None,
        }
        if user is not None:
            data["member"] = self._member(guild, user)
        return data

    def _guild_create(self, guild: SimGuild, session: GatewaySession) -> dict[str, Any]:
        everyone = {
            "id": str(guild.id),
            "name": "@everyone",
            "permissions": str((1 << 20) | (1 << 21) | (1 << 10)),  # CONNECT, SPEAK, VIEW_CHANNEL
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        voice_states = []
        if session.intents & GUILD_VOICE_STATES:
            for record in self._voice.values():
                if record.guild_id == guild.id:
                    state = self._voice_wire(record, record.channel_id)
                    del state["guild_id"]
                    voice_states.append(state)
        members = [self._member(guild, user) for user in self._members(guild)]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self._bots[0].user_id),
            "region": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [everyone],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": guild.joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(members),
            "members": members,
            "voice_states": voice_states,
            "channels": [c.to_wire() for c in guild.channels.values()],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
        }

    def guilds_for(self, session: GatewaySession) -> list[SimGuild]:
        return [g for g in self._guilds.values() if session.covers(g.id)]

    def ready_payload(self, session: GatewaySession) -> dict[str, Any]:
        user = session.bot.user.to_wire()
        user.update(verified=True, mfa_enabled=False, email=None)
        data: dict[str, Any] = {
            "v": 10,
            "user": user,
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds_for(session)],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(session.bot.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["local"],
            "user_settings": {},
        }
        if session.shard is not None:
            data["shard"] = list(session.shard)
        return data

    # -- sessions ------------------------------------------------------------------------------

    def _routed(self, guild_id: Snowflake, intent: int) -> Iterator[GatewaySession]:
        for session in self.sessions:
            if session.alive and session.covers(guild_id) and session.intents & intent:
                yield session

    def _dispatch(self, session: GatewaySession, kind: str, data: dict[str, Any]) -> Dispatch:
        dispatch = Dispatch(session.seq + 1, kind, data)
        session.dispatches.append(dispatch)
        self._send(session, dispatch.to_wire())
        return dispatch

    def _send(self, session: GatewaySession, payload: dict[str, Any]) -> None:
        if session._outbox is not None:
            session.sent.append(payload)
            session._outbox.send(payload)
        self._changed()

    def start_session(
        self,
        bot: BotAccount,
        identify: dict[str, Any],
        intents: int,
        shard: tuple[int, int] | None,
        outbox: _Outbox,
    ) -> GatewaySession:
        """Create an identified session and queue READY and its GUILD_CREATEs."""
        session = GatewaySession(bot, secrets.token_hex(16), identify, intents, shard)
        session._outbox = outbox
        self.sessions.append(session)
        logger.info("session identified: bot %s, shard %s, intents %d", bot.name, shard, intents)
        self._dispatch(session, "READY", self.ready_payload(session))
        if intents & GUILDS:
            for guild in self.guilds_for(session):
                self._dispatch(session, "GUILD_CREATE", self._guild_create(guild, session))
        return session

    def find_session(self, session_id: object) -> GatewaySession | None:
        if not isinstance(session_id, str):
            return None
        for session in self.sessions:
            if hmac.compare_digest(session.session_id.encode(), session_id.encode()):
                return session
        return None

    def resume_session(self, session: GatewaySession, seq: int, outbox: _Outbox) -> None:
        """Attach a new connection, replay what it missed, then RESUMED."""
        previous = session._outbox
        session._outbox = outbox
        if previous is not None and previous is not outbox:
            previous.close(4000, "session resumed on another connection")
        session.state = "connected"
        session.connection_count += 1
        session.resume_count += 1
        for dispatch in session.dispatches:
            if dispatch.seq > seq:
                self._send(session, dispatch.to_wire())
        self._dispatch(session, "RESUMED", {})

    def detach(self, session: GatewaySession, outbox: _Outbox, close_code: int | None) -> None:
        """A connection of ``session`` ended; decide whether the session survives it."""
        if close_code is not None:
            session.close_codes.append(close_code)
        if session._outbox is not outbox:
            self._changed()
            return
        session._outbox = None
        if session.alive:
            if close_code in NON_RESUMABLE_CLOSE_CODES:
                self.invalidate(session)
            else:
                session.state = "disconnected"
        self._changed()

    def invalidate(self, session: GatewaySession) -> None:
        """End a session for good; the voice states it carried go with it."""
        if not session.alive:
            return
        session.state = "invalidated"
        for record in list(self._voice.values()):
            if record.owner is session:
                self._leave(record)
        self._changed()

    def send_op(self, session: GatewaySession, payload: dict[str, Any]) -> None:
        self._send(session, payload)

    # -- voice ---------------------------------------------------------------------------------

    def voice_state(self, guild_id: Snowflake, user_id: Snowflake) -> VoiceState | None:
        record = self._voice.get(_key(guild_id, user_id))
        if record is None:
            return None
        return VoiceState(
            record.guild_id,
            record.user_id,
            record.channel_id,
            record.session_id,
            record.self_mute,
            record.self_deaf,
        )

    def voice_session(self, guild_id: Snowflake, user_id: Snowflake) -> SimVoiceSession | None:
        record = self._voice.get(_key(guild_id, user_id))
        if record is None or record.token is None:
            return None
        return SimVoiceSession(
            record.guild_id,
            record.user_id,
            record.channel_id,
            record.session_id,
            record.token,
            record.endpoint,
        )

    @property
    def voice_sessions(self) -> list[SimVoiceSession]:
        """The voice sessions a voice gateway would accept right now."""
        sessions = (self.voice_session(g, u) for g, u in self._voice)
        return [s for s in sessions if s is not None]

    def validate_voice_identify(
        self, server_id: object, user_id: object, session_id: object, token: object
    ) -> bool:
        """Whether a voice Identify carries the current session id and token of a voice state.

        Ids may be ints or the strings the wire carries; anything malformed is simply invalid.
        """
        try:
            key = (
                validate_snowflake(server_id, name="server_id"),
                validate_snowflake(user_id, name="user_id"),
            )
        except UsageError:
            return False
        record = self._voice.get(key)
        if record is None or record.token is None:
            return False
        if not isinstance(session_id, str) or not isinstance(token, str):
            return False
        return hmac.compare_digest(record.session_id.encode(), session_id.encode()) and (
            hmac.compare_digest(record.token.encode(), token.encode())
        )

    def _occupants(self, channel_id: Snowflake) -> int:
        return sum(1 for r in self._voice.values() if r.channel_id == channel_id)

    def _broadcast_voice_state(self, record: _VoiceRecord, channel_id: Snowflake | None) -> None:
        data = self._voice_wire(record, channel_id)
        for session in self._routed(record.guild_id, GUILD_VOICE_STATES):
            self._dispatch(session, "VOICE_STATE_UPDATE", copy.deepcopy(data))

    def _send_server_update(self, record: _VoiceRecord) -> None:
        owner = record.owner
        if owner is None or not owner.alive or record.token is None:
            return
        self._dispatch(
            owner,
            "VOICE_SERVER_UPDATE",
            {"token": record.token, "guild_id": str(record.guild_id), "endpoint": record.endpoint},
        )

    def _announce_join(self, record: _VoiceRecord, *, new_token: bool = True) -> None:
        """A join or move: a fresh token, then both events in the configured order.

        A repeated op 4 for the channel the bot is already in (what discord.py sends to resume
        after 4015) keeps the token and endpoint, so the voice session it resumes stays valid;
        only a move or a new voice server brings a new token.
        """
        if record.owner is not None and (new_token or record.token is None):
            record.token = secrets.token_hex(8)
            record.endpoint = self.voice_endpoint
        first, second = self.voice_events_order
        self._announce(record, first)
        if self.voice_events_gap > 0 and self._call_later is not None:
            # Only this guild's second event waits: other messages, and other guilds' voice
            # events, keep flowing, as they do on Discord.
            token = record.token
            self._call_later(
                self.voice_events_gap, lambda: self._announce_if_current(record, second, token)
            )
        else:
            self._announce(record, second)
        self._changed()

    def _announce(self, record: _VoiceRecord, which: str) -> None:
        if which == "state":
            self._broadcast_voice_state(record, record.channel_id)
        else:
            self._send_server_update(record)

    def _announce_if_current(self, record: _VoiceRecord, which: str, token: str | None) -> None:
        """The delayed half of a join, unless a leave or a move superseded the join meanwhile."""
        if self._voice.get((record.guild_id, record.user_id)) is record and record.token == token:
            self._announce(record, which)
            self._changed()

    def _leave(self, record: _VoiceRecord) -> None:
        self._voice.pop((record.guild_id, record.user_id), None)
        record.token = None
        self._broadcast_voice_state(record, None)
        self._changed()

    def handle_voice_state_update(
        self,
        session: GatewaySession,
        guild_id: Snowflake,
        channel_id: Snowflake | None,
        self_mute: bool,
        self_deaf: bool,
    ) -> None:
        """op 4 from a session: join, move, re-join, change mute/deaf or leave."""
        guild = self._guilds.get(guild_id)
        if guild is None or not session.covers(guild_id):
            logger.info("op 4 for a guild this session cannot see: ignored")
            return
        key = (guild_id, session.bot.user_id)
        record = self._voice.get(key)
        if channel_id is None:
            if record is not None:
                self._leave(record)
            return
        channel = guild.channels.get(channel_id)
        if channel is None or channel.type != _VOICE_CHANNEL:
            logger.info("op 4 for an unknown or non-voice channel: ignored")
            return
        if record is not None and record.channel_id == channel_id:
            record.owner = session
            if (record.self_mute, record.self_deaf) != (self_mute, self_deaf):
                record.self_mute, record.self_deaf = self_mute, self_deaf
                self._broadcast_voice_state(record, channel_id)
                self._changed()
            else:
                self._announce_join(record, new_token=False)
            return
        if channel.user_limit and self._occupants(channel_id) >= channel.user_limit:
            logger.info("op 4 for a full channel: ignored, as Discord sends nothing")
            return
        session_id = session._voice_session_ids.setdefault(guild_id, secrets.token_hex(16))
        if record is None:
            record = _VoiceRecord(
                guild_id, session.bot.user_id, channel_id, session_id, False, False
            )
            self._voice[key] = record
        record.channel_id = channel_id
        record.session_id = session_id
        record.self_mute, record.self_deaf = self_mute, self_deaf
        record.owner = session
        self._announce_join(record)

    # -- scripted faults and world changes -----------------------------------------------------

    def _record(self, guild_id: Snowflake, user_id: Snowflake) -> _VoiceRecord:
        record = self._voice.get(_key(guild_id, user_id))
        if record is None:
            raise UsageError("that user is not in a voice channel of that guild")
        return record

    def set_voice_state(
        self,
        guild_id: Snowflake,
        user_id: Snowflake,
        channel_id: Snowflake | None,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
    ) -> None:
        """Place (or remove, with None) a simulated human in voice; ignores the user limit."""
        guild = self.guild(guild_id)
        user_id = validate_snowflake(user_id, name="user_id")
        if user_id not in guild.humans:
            raise UsageError("set_voice_state places simulated humans; bots join with op 4")
        record = self._voice.get((guild.id, user_id))
        if channel_id is None:
            if record is not None:
                self._leave(record)
            return
        _, channel = self._channel(validate_snowflake(channel_id, name="channel_id"))
        if record is None:
            record = _VoiceRecord(
                guild.id, user_id, channel.id, secrets.token_hex(16), False, False
            )
            self._voice[(guild.id, user_id)] = record
        record.channel_id = channel.id
        record.self_mute, record.self_deaf = self_mute, self_deaf
        self._broadcast_voice_state(record, channel.id)
        self._changed()

    def move_bot(self, guild_id: Snowflake, user_id: Snowflake, channel_id: Snowflake) -> None:
        """A server-side move (a moderator dragged the bot): both events and a new token."""
        record = self._record(guild_id, user_id)
        guild, channel = self._channel(validate_snowflake(channel_id, name="channel_id"))
        if guild.id != record.guild_id or channel.type != _VOICE_CHANNEL:
            raise UsageError("the target must be a voice channel of the same guild")
        record.channel_id = channel.id
        self._announce_join(record)

    def kick(self, guild_id: Snowflake, user_id: Snowflake) -> None:
        """A moderator disconnected the user: VOICE_STATE_UPDATE with a null channel."""
        self._leave(self._record(guild_id, user_id))

    def delete_channel(self, channel_id: Snowflake) -> None:
        """Delete a channel; everyone in it is disconnected first, then CHANNEL_DELETE."""
        guild, channel = self._channel(validate_snowflake(channel_id, name="channel_id"))
        for record in [r for r in self._voice.values() if r.channel_id == channel.id]:
            self._leave(record)
        del guild.channels[channel.id]
        for session in self._routed(guild.id, GUILDS):
            self._dispatch(session, "CHANNEL_DELETE", channel.to_wire())
        self._changed()

    def send_voice_server_update(
        self, guild_id: Snowflake, endpoint: str | None, *, user_id: Snowflake | None = None
    ) -> None:
        """A voice server change for the bots in voice in a guild (or one of them).

        ``endpoint=None`` says the server went away: the token is kept, since a client must
        wait for the next update anyway; a new endpoint brings a new token.
        """
        guild = self.guild(guild_id)
        records: Iterable[_VoiceRecord]
        if user_id is not None:
            records = [self._record(guild.id, user_id)]
        else:
            records = [r for r in self._voice.values() if r.guild_id == guild.id and r.owner]
        for record in records:
            if record.owner is None:
                raise UsageError("only a bot's voice state has a voice server")
            if endpoint is not None:
                record.token = secrets.token_hex(8)
            record.endpoint = endpoint
            self._send_server_update(record)
        self._changed()

    def _live(self, session: GatewaySession) -> _Outbox:
        if session._outbox is None:
            raise UsageError("that gateway session has no live connection")
        return session._outbox

    def reconnect(self, session: GatewaySession) -> None:
        """op 7: the client should reconnect and resume."""
        self._live(session)
        self._send(session, {"op": 7, "d": None, "s": None, "t": None})

    def invalid_session(self, session: GatewaySession, resumable: bool) -> None:
        """op 9; with ``resumable=False`` the session is gone and must be re-identified."""
        self._live(session)
        self._send(session, {"op": 9, "d": resumable, "s": None, "t": None})
        if not resumable:
            self.invalidate(session)

    def close_gateway(self, session: GatewaySession, code: int, reason: str = "") -> None:
        """Close the session's connection; non-resumable codes end the session too."""
        if not (code == 1000 or 4000 <= code <= 4999):
            raise UsageError("close code must be 1000 or in 4000-4999")
        self._live(session).close(code, reason)

    def stall_heartbeat_acks(self, session: GatewaySession, stalled: bool) -> None:
        """Stop (or resume) acknowledging heartbeats, so the client sees a zombie connection."""
        session.heartbeat_acks_stalled = stalled
        self._changed()

    def request_heartbeat(self, session: GatewaySession) -> None:
        """op 1 from the server: the client must heartbeat at once."""
        self._live(session)
        self._send(session, {"op": 1, "d": None, "s": None, "t": None})
