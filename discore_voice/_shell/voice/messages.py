"""What the tasks of a voice connection tell its session task: typed messages, in one channel.

The websocket reader, the UDP task, the timers, the gateway listener, the send task and the
user's calls each send these into the session task's memory channel; the session task handles
them one at a time, in order, and is the only caller of the voice core. Reports about a socket
carry the socket's generation, so the core can ignore news about one it already replaced.

Requests from the user's calls carry a ``done`` event: set once the request was carried out (for
an op 4, once it was sent), so the call returns after it, not before.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import trio

from ..._core.ip_discovery import DiscoveredAddress
from ..._core.snowflake import Snowflake
from ..._core.voice.commands import TimerKind
from ..._core.voice.events import InvalidationReason

__all__ = [
    "AudioReady",
    "Connect",
    "DaveFailing",
    "Disconnect",
    "Dispatch",
    "GatewayGone",
    "Leave",
    "MediaFlowing",
    "Message",
    "SetSpeaking",
    "TaskFailed",
    "TimerFired",
    "UdpDiscovered",
    "UdpFailed",
    "UdpSilent",
    "UpdateVoiceState",
    "WebSocketClosed",
    "WebSocketFailed",
    "WebSocketFrame",
    "WebSocketOpened",
    "report",
]


# --- the main gateway -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A dispatch this connection subscribes to (VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE, ...)."""

    name: str
    data: Any = field(repr=False)


@dataclass(frozen=True, slots=True)
class GatewayGone:
    """The shard or bridge's subscription ended: no op 4 can be sent, no dispatch will come."""


# --- the voice websocket --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebSocketOpened:
    generation: int


@dataclass(frozen=True, slots=True)
class WebSocketFrame:
    generation: int
    frame: str | bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class WebSocketClosed:
    """Closed with ``code``, or dropped without a close frame (None)."""

    generation: int
    code: int | None


@dataclass(frozen=True, slots=True)
class WebSocketFailed:
    """It could not be opened; ``fatal`` when no retry can help (a certificate that fails)."""

    generation: int
    detail: str
    fatal: bool


# --- UDP ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UdpDiscovered:
    generation: int
    address: DiscoveredAddress


@dataclass(frozen=True, slots=True)
class UdpFailed:
    generation: int
    detail: str


@dataclass(frozen=True, slots=True)
class UdpSilent:
    """No keep-alive has been answered for a while: the path may be dead."""

    generation: int


@dataclass(frozen=True, slots=True)
class MediaFlowing:
    """The first media datagram decrypted since the media state last changed: progress."""

    generation: int


@dataclass(frozen=True, slots=True)
class DaveFailing:
    """Received frames keep failing DAVE outside any transition: the group needs starting over."""

    generation: int


# --- timers and the send side ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerFired:
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class AudioReady:
    """The send task has audio but no link to send it through (speaking may be off)."""


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """A task of the connection failed: the connection ends with ``reason``."""

    reason: InvalidationReason
    detail: str


# --- the user's calls -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    channel_id: Snowflake
    self_mute: bool
    self_deaf: bool
    sent_marker: bool = False
    done: trio.Event = field(default_factory=trio.Event, compare=False)


@dataclass(frozen=True, slots=True)
class UpdateVoiceState:
    channel_id: Snowflake | None
    self_mute: bool
    self_deaf: bool
    done: trio.Event = field(default_factory=trio.Event, compare=False)


@dataclass(frozen=True, slots=True)
class Disconnect:
    done: trio.Event = field(default_factory=trio.Event, compare=False)


@dataclass(frozen=True, slots=True)
class SetSpeaking:
    flags: int
    done: trio.Event = field(default_factory=trio.Event, compare=False)


@dataclass(frozen=True, slots=True)
class Leave:
    """The user's block is ending: leave, close the websocket, invalidate (if still valid).

    ``gateway_closed``: the bridge says it is closed, though its subscription's end may not have
    reached the session task yet.
    """

    gateway_closed: bool = False
    done: trio.Event = field(default_factory=trio.Event, compare=False)


Message: TypeAlias = (
    Dispatch
    | GatewayGone
    | WebSocketOpened
    | WebSocketFrame
    | WebSocketClosed
    | WebSocketFailed
    | UdpDiscovered
    | UdpFailed
    | UdpSilent
    | MediaFlowing
    | DaveFailing
    | TimerFired
    | AudioReady
    | TaskFailed
    | Connect
    | UpdateVoiceState
    | Disconnect
    | SetSpeaking
    | Leave
)


async def report(inbox: trio.MemorySendChannel[Message], message: Message) -> None:
    """Send ``message`` to the session task; a task outliving it has no one left to tell."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await inbox.send(message)
