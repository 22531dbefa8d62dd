"""What the voice core asks the shell to do: typed commands, kept apart from the public events.

The shell carries each command out as it comes, in order, and decides nothing: which websocket
to open and when, what to send (already encoded), which UDP socket to start, which timer to
arm, and what the media path may use now. Websockets and UDP sockets are numbered by the core
(``generation``); every report the shell sends back carries the number, so a late report about a
socket the core has already replaced is recognised and ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from ..snowflake import Snowflake

if TYPE_CHECKING:
    from ..receive.pipeline import ReceivePipeline
    from ..transport import TransportCipher
    from .media import MediaCrypto

__all__ = [
    "CloseWebSocket",
    "Command",
    "Log",
    "Media",
    "MediaChanged",
    "OpenWebSocket",
    "SendBinary",
    "SendText",
    "SendVoiceStateUpdate",
    "SetTimer",
    "StartUdp",
    "TimerKind",
]


class TimerKind(enum.Enum):
    """The core's deadlines; at most one of each is armed at a time."""

    HEARTBEAT = "heartbeat"  # the next voice heartbeat is due
    ATTEMPT = "attempt"  # a websocket attempt must have reached Hello and Ready/Resumed
    RECONNECT = "reconnect"  # the backoff before the next attempt is over
    MOVE_GRACE = "move_grace"  # a 4014/4022 was not followed by a new voice server
    UDP_RESTART = "udp_restart"  # the backoff before re-establishing the UDP path is over


@dataclass(frozen=True, slots=True)
class SendVoiceStateUpdate:
    """Send main-gateway op 4 through the bridge (``channel_id`` None leaves)."""

    channel_id: Snowflake | None
    self_mute: bool
    self_deaf: bool


@dataclass(frozen=True, slots=True)
class OpenWebSocket:
    """Open voice websocket ``generation`` at ``url``, closing any earlier one still open."""

    generation: int
    url: str


@dataclass(frozen=True, slots=True)
class CloseWebSocket:
    """Close one websocket; ``code`` 4000 keeps the voice session resumable, 1000 ends it."""

    generation: int
    code: int


@dataclass(frozen=True, slots=True)
class SendText:
    """Send a JSON frame on websocket ``generation`` if it is still the current one.

    It may carry secrets (Identify, Resume): its repr shows only its size.
    """

    generation: int
    text: str = field(repr=False)

    def __repr__(self) -> str:
        return f"SendText(generation={self.generation}, text=<{len(self.text)} characters>)"


@dataclass(frozen=True, slots=True)
class SendBinary:
    """Send a DAVE binary frame on websocket ``generation`` if it is still the current one."""

    generation: int
    data: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"SendBinary(generation={self.generation}, data=<{len(self.data)} bytes>)"


@dataclass(frozen=True, slots=True)
class StartUdp:
    """(Re)start UDP socket ``generation`` towards the voice server and discover our address.

    The earlier socket, if any, is closed. The result comes back as a discovery or a failure
    tagged with ``generation``.
    """

    generation: int
    ip: str
    port: int
    ssrc: int


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Arm timer ``kind`` for ``at`` (seconds on the shell's clock), or disarm it with None."""

    kind: TimerKind
    at: float | None


@dataclass(frozen=True, slots=True)
class Media:
    """What the media paths use now: UDP socket ``udp_generation``, its key and DAVE layer.

    ``receive`` is the connection's receive pipeline, the same object for its whole life: the
    UDP task feeds it every datagram with this key.
    """

    udp_generation: int
    ssrc: int
    cipher: TransportCipher = field(repr=False)
    crypto: MediaCrypto = field(repr=False)
    receive: ReceivePipeline = field(repr=False)


@dataclass(frozen=True, slots=True)
class MediaChanged:
    """The media state changed: ``media`` None means no key yet (or any more).

    ``sending`` says whether audio may go out now: connected, and speaking announced on the
    current websocket (Discord drops audio from an SSRC that has not announced it). Received
    audio keeps flowing whenever ``media`` is set.
    """

    media: Media | None
    sending: bool


@dataclass(frozen=True, slots=True)
class Log:
    """A line for the connection's log: the core has no logger of its own."""

    level: int
    message: str


Command: TypeAlias = (
    SendVoiceStateUpdate
    | OpenWebSocket
    | CloseWebSocket
    | SendText
    | SendBinary
    | StartUdp
    | SetTimer
    | MediaChanged
    | Log
)
