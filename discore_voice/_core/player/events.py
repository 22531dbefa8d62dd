"""What a track reports: how it ended, and the events a connection's subscribers see.

Every way a track can end has its own outcome, so that a bot never has to guess from a frame
count whether its queue is still playing: a kicked bot's tracks end ``INVALIDATED`` with the
connection's reason, a broken file ends ``FAILED`` with its error (after the audio before the
damage was heard), a skip ends ``STOPPED``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..voice.events import Invalidated

__all__ = ["TrackEnd", "TrackEnded", "TrackOutcome", "TrackStarted"]


class TrackOutcome(enum.Enum):
    """Why a track ended."""

    #: Its source ran out and its last frame was sent.
    FINISHED = "finished"
    #: ``stop()``, a skip, a removal from the queue, or a cancelled ``play()``.
    STOPPED = "stopped"
    #: Its source raised; what it delivered before the error was played.
    FAILED = "failed"
    #: The connection became invalid while it played (or before it could start).
    INVALIDATED = "invalidated"


@dataclass(frozen=True, slots=True)
class TrackEnd:
    """A track's outcome: what ``await handle`` returns.

    ``error`` is set when the outcome is ``FAILED``, ``invalidation`` when it is
    ``INVALIDATED``. ``frames`` counts the 20 ms frames of this track that were mixed into what
    the connection sent.
    """

    track_id: int
    name: str
    outcome: TrackOutcome
    frames: int
    error: BaseException | None = field(default=None, repr=False)
    invalidation: Invalidated | None = None

    @property
    def finished(self) -> bool:
        """True when the track played to its end."""
        return self.outcome is TrackOutcome.FINISHED


@dataclass(frozen=True, slots=True)
class TrackStarted:
    """A track's first frame was mixed: it is being heard from now on."""

    track_id: int
    name: str


@dataclass(frozen=True, slots=True)
class TrackEnded:
    """A track ended; ``end`` says how."""

    end: TrackEnd
