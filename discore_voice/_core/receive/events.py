"""What receiving hands the user: frames of audio, and when members start and stop speaking.

Plain data, like the connection's other events (``_core/voice/events.py``): the core's pipeline
decides what each 20 ms slot holds, and the shell only decodes it and fills in ``pcm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

from ..snowflake import Snowflake

__all__ = [
    "ReceiveEvent",
    "ReceivedAudio",
    "SpeakingStarted",
    "SpeakingStopped",
]


class ReceivedAudio(NamedTuple):
    """20 ms of one member's audio, as the playout buffer released it.

    A named tuple, not a frozen dataclass: one is made per member per 20 ms (5000 a second
    with 100 speakers), and a tuple is built four times faster.

    ``tick`` counts 20 ms since receiving started, the same clock for every member, so frames
    of different members with the same tick were heard together. ``opus`` is the packet as the
    member sent it (end-to-end decrypted); for a concealed frame it is the packet whose forward
    error correction recovered this one, or empty when there was none. ``pcm`` is 3840 bytes of
    48 kHz stereo s16le when decoding is on, else None. ``concealed`` says the member's packet
    was lost and this is the decoder's best guess (forward error correction, or loss
    concealment).
    """

    user_id: Snowflake
    ssrc: int
    tick: int
    timestamp: int
    sequence: int | None
    concealed: bool
    opus: bytes
    pcm: bytes | None = None

    def __repr__(self) -> str:
        return (
            f"ReceivedAudio(user_id={self.user_id}, ssrc={self.ssrc}, tick={self.tick}, "
            f"timestamp={self.timestamp}, sequence={self.sequence}, "
            f"concealed={self.concealed}, opus={len(self.opus)} bytes, "
            f"pcm={'None' if self.pcm is None else f'{len(self.pcm)} bytes'})"
        )


@dataclass(frozen=True, slots=True)
class SpeakingStarted:
    """A member's audio started playing out (after the playout buffer's delay)."""

    user_id: Snowflake
    ssrc: int
    tick: int


@dataclass(frozen=True, slots=True)
class SpeakingStopped:
    """A member's audio ended: its silence frames played, or its packets stopped coming."""

    user_id: Snowflake
    ssrc: int
    tick: int


ReceiveEvent: TypeAlias = SpeakingStarted | SpeakingStopped
