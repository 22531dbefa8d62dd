"""The main gateway (v10, JSON, zlib-stream) as a sans-IO state machine.

The shell feeds in what the websocket received and the current time; the protocol answers with
events: payloads to send (each tagged with its kind, so the shell can rate-limit identifies and
let heartbeats jump the queue), dispatches, and requests to reconnect. It remembers what a resume
needs (session id, last sequence, resume URL) across connections, and forgets it when Discord
says the session is gone.

Heartbeats follow ``developers/events/gateway.mdx``: the first one ``interval * jitter`` after
Hello, then one every interval. A heartbeat still un-ACKed when the next one falls due means the
connection is a zombie: the shell closes it with a non-1000 code and resumes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from ..._errors import ProtocolError, UnknownOpcode, UsageError
from ..fields import Fields, decode_json_object
from ..snowflake import Snowflake
from .errors import CloseAction, CloseVerdict, classify_close
from .inflate import ZlibStreamInflater

__all__ = [
    "GATEWAY_VERSION",
    "Dispatched",
    "GatewayEvent",
    "GatewayOpcode",
    "GatewayProtocol",
    "HeartbeatAcked",
    "HeartbeatIntervalClamped",
    "ReconnectRequested",
    "SendKind",
    "SendPayload",
    "SessionInvalidated",
    "SessionReady",
    "SessionResumed",
    "ZombieConnection",
    "build_gateway_url",
]

GATEWAY_VERSION = 10
#: The largest dispatch sequence number accepted (a signed 64-bit integer); beyond it a payload
#: is malformed, because the number would be echoed back to Discord.
MAX_SEQUENCE = (1 << 63) - 1
#: The shortest heartbeat interval followed, in seconds, whatever Hello asks for.
MIN_HEARTBEAT_INTERVAL = 1.0


class GatewayOpcode(enum.IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11
    REQUEST_SOUNDBOARD_SOUNDS = 31


class SendKind(enum.Enum):
    HEARTBEAT = "heartbeat"
    IDENTIFY = "identify"
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class SendPayload:
    """Send ``payload`` now. Identify and resume payloads carry the token: never log them."""

    kind: SendKind
    payload: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Dispatched:
    """An op 0 event, ``(t, d)``; READY and RESUMED come through here too."""

    name: str
    data: Any = field(repr=False)
    sequence: int | None


@dataclass(frozen=True, slots=True)
class SessionReady:
    """READY arrived: a new session. Emitted before the READY :class:`Dispatched`."""

    user_id: Snowflake


@dataclass(frozen=True, slots=True)
class SessionResumed:
    """RESUMED arrived: the missed events have been replayed."""


@dataclass(frozen=True, slots=True)
class HeartbeatAcked:
    latency: float | None


@dataclass(frozen=True, slots=True)
class ReconnectRequested:
    """Op 7: close this connection (not with 1000/1001) and resume."""


@dataclass(frozen=True, slots=True)
class SessionInvalidated:
    """Op 9. ``resumable``: close and resume; otherwise the session was forgotten already, so wait
    a random 1-5 seconds, reconnect to the base URL and identify."""

    resumable: bool


@dataclass(frozen=True, slots=True)
class ZombieConnection:
    """The last heartbeat was never ACKed: close (not with 1000/1001) and resume."""


@dataclass(frozen=True, slots=True)
class HeartbeatIntervalClamped:
    """Hello asked for a heartbeat interval outside the sane range; ``used`` is what we use."""

    asked: float
    used: float


GatewayEvent = (
    SendPayload
    | Dispatched
    | SessionReady
    | SessionResumed
    | HeartbeatAcked
    | ReconnectRequested
    | SessionInvalidated
    | ZombieConnection
    | HeartbeatIntervalClamped
)


def build_gateway_url(base_url: str, *, compress: bool = True) -> str:
    """``base_url`` with the query this library needs (``v=10&encoding=json[&compress=…]``)."""
    try:
        parts = urlsplit(base_url)
    except ValueError as exc:
        raise UsageError("gateway URL is not a valid URL") from exc
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError("gateway URL must be a ws:// or wss:// URL with a host")
    query: dict[str, str | int] = {"v": GATEWAY_VERSION, "encoding": "json"}
    if compress:
        query["compress"] = "zlib-stream"
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query), ""))


class GatewayProtocol:
    """One shard's gateway session, across the connections that carry it."""

    def __init__(
        self,
        token: str,
        *,
        intents: int,
        shard_id: int = 0,
        shard_count: int = 1,
        properties: Mapping[str, str] | None = None,
        compress: bool = True,
    ) -> None:
        self.__token = token
        self.intents = int(intents)
        self.shard_id = shard_id
        self.shard_count = shard_count
        self.properties = dict(
            properties
            if properties is not None
            else {"os": "linux", "browser": "discore_voice", "device": "discore_voice"}
        )
        self.compress = compress
        # Session state: survives reconnects, cleared when Discord forgets the session.
        self.__session_id: str | None = None
        self.sequence: int | None = None
        self.resume_gateway_url: str | None = None
        self.user_id: Snowflake | None = None
        # Connection state: reset by begin_connection().
        self._inflater = ZlibStreamInflater()
        self._connected = False
        self._jitter = 1.0
        self._hello_received = False
        self._ready = False
        self._interval: float | None = None
        self._next_beat: float | None = None
        self._awaiting_ack = False
        self._last_beat_sent: float | None = None
        self.latency: float | None = None

    def __repr__(self) -> str:
        state = "ready" if self._ready else "connected" if self._connected else "idle"
        return (
            f"<GatewayProtocol shard {self.shard_id}/{self.shard_count} {state} "
            f"seq={self.sequence} resumable={self.can_resume}>"
        )

    # --- session --------------------------------------------------------------------------

    @property
    def can_resume(self) -> bool:
        return self.__session_id is not None and self.sequence is not None

    @property
    def has_session(self) -> bool:
        return self.__session_id is not None

    @property
    def is_ready(self) -> bool:
        """READY or RESUMED arrived on the current connection."""
        return self._ready

    @property
    def heartbeat_interval(self) -> float | None:
        """Seconds, from the current connection's Hello."""
        return self._interval

    def invalidate_session(self) -> None:
        """Forget the session: the next Hello is answered with an identify."""
        self.__session_id = None
        self.sequence = None
        self.resume_gateway_url = None

    def connect_url(self, base_url: str) -> str:
        """Where the next connection goes: the resume URL if we can resume, else ``base_url``."""
        if self.can_resume and self.resume_gateway_url is not None:
            try:
                return build_gateway_url(self.resume_gateway_url, compress=self.compress)
            except UsageError:
                # Discord sent something unusable; the base URL still accepts resumes.
                self.resume_gateway_url = None
        return build_gateway_url(base_url, compress=self.compress)

    # --- payload builders -----------------------------------------------------------------

    def build_identify(self) -> dict[str, Any]:
        return {
            "op": GatewayOpcode.IDENTIFY.value,
            "d": {
                "token": self.__token,
                "intents": self.intents,
                "properties": dict(self.properties),
                "shard": [self.shard_id, self.shard_count],
                "compress": False,
            },
        }

    def build_resume(self) -> dict[str, Any]:
        if self.__session_id is None or self.sequence is None:
            raise UsageError("there is no session to resume")
        return {
            "op": GatewayOpcode.RESUME.value,
            "d": {"token": self.__token, "session_id": self.__session_id, "seq": self.sequence},
        }

    def build_heartbeat(self) -> dict[str, Any]:
        return {"op": GatewayOpcode.HEARTBEAT.value, "d": self.sequence}

    # --- connection lifecycle -------------------------------------------------------------

    def begin_connection(self, *, jitter: float) -> None:
        """A new websocket is open. ``jitter`` in [0, 1] places the first heartbeat."""
        if not 0.0 <= jitter <= 1.0:
            raise UsageError("jitter must be between 0 and 1")
        self._inflater = ZlibStreamInflater()
        self._connected = True
        self._jitter = jitter
        self._hello_received = False
        self._ready = False
        self._interval = None
        self._next_beat = None
        self._awaiting_ack = False
        self._last_beat_sent = None

    def connection_lost(self, code: int | None) -> CloseVerdict:
        """The websocket closed with ``code`` (None if it dropped without a close frame)."""
        self._connected = False
        self._ready = False
        self._next_beat = None
        verdict = classify_close(code)
        if verdict.action is CloseAction.IDENTIFY:
            self.invalidate_session()
        elif verdict.action is CloseAction.RESUME and not self.can_resume:
            verdict = CloseVerdict(CloseAction.IDENTIFY, verdict.description)
        return verdict

    def next_wakeup(self) -> float | None:
        """When :meth:`poll` has something to do (the next heartbeat), or None."""
        return self._next_beat

    def poll(self, now: float) -> list[GatewayEvent]:
        """Run the heartbeat timer: a heartbeat to send, or a zombie to report."""
        if self._next_beat is None or now < self._next_beat or self._interval is None:
            return []
        if self._awaiting_ack:
            self._next_beat = None
            return [ZombieConnection()]
        self._next_beat = now + self._interval
        return [self._beat(now)]

    def _beat(self, now: float) -> SendPayload:
        self._awaiting_ack = True
        self._last_beat_sent = now
        return SendPayload(SendKind.HEARTBEAT, self.build_heartbeat())

    # --- receiving ------------------------------------------------------------------------

    def receive_bytes(self, data: bytes, now: float) -> list[GatewayEvent]:
        """One binary websocket message (zlib-stream); it may complete a gateway message."""
        message = self._inflater.feed(data)
        if message is None:
            return []
        return self.receive_text(message, now)

    def receive_text(self, text: str | bytes, now: float) -> list[GatewayEvent]:
        """One whole JSON gateway message."""
        return self.receive_payload(decode_json_object(text, what="gateway payload"), now)

    def receive_payload(self, payload: Mapping[str, Any], now: float) -> list[GatewayEvent]:
        fields = Fields(payload, "gateway payload")
        op = fields.integer("op")
        if op == GatewayOpcode.DISPATCH:
            return self._on_dispatch(fields, payload.get("d"))
        if op == GatewayOpcode.HELLO:
            return self._on_hello(fields, now)
        if op == GatewayOpcode.HEARTBEAT_ACK:
            self._awaiting_ack = False
            if self._last_beat_sent is not None:
                self.latency = max(0.0, now - self._last_beat_sent)
            return [HeartbeatAcked(self.latency)]
        if op == GatewayOpcode.HEARTBEAT:
            return [self._beat(now)]
        if op == GatewayOpcode.RECONNECT:
            return [ReconnectRequested()]
        if op == GatewayOpcode.INVALID_SESSION:
            resumable = fields.boolean("d", default=False)
            if not resumable or not self.can_resume:
                self.invalidate_session()
            return [SessionInvalidated(resumable and self.can_resume)]
        raise UnknownOpcode(op, channel="gateway")

    def _on_hello(self, fields: Fields, now: float) -> list[GatewayEvent]:
        if self._hello_received:
            raise ProtocolError("the gateway sent a second Hello on one connection")
        interval_ms = fields.mapping("d").number("heartbeat_interval")
        if not math.isfinite(interval_ms) or not 0 < interval_ms <= 3_600_000:
            raise ProtocolError("Hello: heartbeat_interval is out of range")
        self._hello_received = True
        asked = interval_ms / 1000
        # Discord's is 41.25 s. A hostile 1 ms would be a thousand heartbeats a second.
        self._interval = max(MIN_HEARTBEAT_INTERVAL, asked)
        self._next_beat = now + self._interval * self._jitter
        events: list[GatewayEvent] = []
        if self._interval != asked:
            events.append(HeartbeatIntervalClamped(asked, self._interval))
        if self.can_resume:
            return [*events, SendPayload(SendKind.RESUME, self.build_resume())]
        return [*events, SendPayload(SendKind.IDENTIFY, self.build_identify())]

    def _on_dispatch(self, fields: Fields, data: Any) -> list[GatewayEvent]:
        name = fields.string("t")
        sequence = fields.optional_int("s")
        if sequence is not None and not 0 <= sequence <= MAX_SEQUENCE:
            # It would go back to Discord in every heartbeat and in the resume.
            raise ProtocolError(f"dispatch sequence number out of range [0, {MAX_SEQUENCE}]")
        events: list[GatewayEvent] = []
        if name == "READY":
            ready = fields.mapping("d")
            session_id = ready.string("session_id")
            if not session_id:
                raise ProtocolError("READY: field 'session_id' is empty")
            user_id = ready.mapping("user").snowflake("id")
            self.__session_id = session_id
            self.resume_gateway_url = ready.optional_str("resume_gateway_url") or None
            self.user_id = user_id
            self._ready = True
            events.append(SessionReady(user_id))
        elif name == "RESUMED":
            self._ready = True
            events.append(SessionResumed())
        if sequence is not None:
            self.sequence = sequence
        events.append(Dispatched(name, data, sequence))
        return events
