"""What receiving hands the user: frames of audio, and when members start and stop speaking.

Plain data, like the connection's other events (``_core/voice/events.py``): the core's pipeline
decides what each 20 ms slot holds, and the shell only decodes it and fills in ``pcm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from ..snowflake import Snowflake

__all__ = [
    "ReceiveEvent",
    "ReceivedAudio",
    "SpeakingStarted",
    "SpeakingStopped",
]


@dataclass(frozen=True, slots=True)
class ReceivedAudio:
    """20 ms of one member's audio, as the playout buffer released it.

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
    opus: bytes = field(repr=False)
    pcm: bytes | None = field(default=None, repr=False)


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
