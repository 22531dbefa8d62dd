"""The DAVE layer of the media paths: every Opus frame sent or received passes through here.

One :class:`MediaCrypto` per voice connection, owned by the voice core, which points it at the
current voice session's :class:`DaveClient` (who sent a frame is the receive pipeline's to know:
``_core/receive/ssrc_map.py``). The send path (the clock's step) and the receive pipeline call
it per frame, and both must keep
working whatever the group is doing, so neither call ever raises: a frame DAVE cannot encrypt
becomes the silence frame (never plaintext: that would break the end-to-end promise; never an
exception: that would stop the sender), and a frame it cannot decrypt is counted and dropped.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from ..._errors import DaveError
from ..snowflake import Snowflake
from ..speaking import OPUS_SILENCE_FRAME
from .dave import DaveClient

__all__ = ["DAVE_COUNTERS", "FAILURE_TOLERANCE", "MediaCrypto"]

#: The counters of :attr:`MediaCrypto.stats`.
DAVE_COUNTERS: Final = (
    "encrypted",
    "encrypt_failed",
    "decrypted",
    "passed_through",
    "decrypt_failed",
    "recoveries",
)
#: Received frames that may fail DAVE in a row, outside a transition, before the group is
#: presumed broken and started over with op 31: @discordjs/voice's 36, about 0.7 s of one
#: member's speech, long enough that a few frames in flight across a key change never count.
FAILURE_TOLERANCE: Final = 36


class MediaCrypto:
    """End-to-end encryption of one connection's frames, both ways."""

    __slots__ = ("_client", "_consecutive_failures", "stats")

    def __init__(self) -> None:
        self._client: DaveClient | None = None
        self._consecutive_failures = 0
        self.stats: Counter[str] = Counter()
        """``encrypted``, ``encrypt_failed``, ``decrypted`` (opened end-to-end),
        ``passed_through`` (accepted plaintext), ``decrypt_failed``, ``recoveries``."""

    @property
    def client(self) -> DaveClient | None:
        return self._client

    def use(self, client: DaveClient | None) -> None:
        """A new voice session: its DAVE client (None without DAVE)."""
        self._client = client
        self._consecutive_failures = 0

    # --- frames -------------------------------------------------------------------------------

    def encrypt(self, frame: bytes) -> bytes:
        """DAVE-encrypt one Opus frame when the group allows it, or pass it through.

        Never raises (see the module docstring): a frame davey refuses goes out as silence,
        and the very :data:`OPUS_SILENCE_FRAME` object is returned, so a caller can tell (by
        identity, per frame, for free) and log it.
        """
        client = self._client
        if client is None or not client.can_encrypt:
            return frame
        try:
            encrypted = client.encrypt_opus(frame)
        except DaveError:
            self.stats["encrypt_failed"] += 1
            return OPUS_SILENCE_FRAME
        if encrypted != frame:
            self.stats["encrypted"] += 1
        return encrypted

    def decrypt_from(
        self, user_id: Snowflake, frame: bytes, *, retry: bool = False
    ) -> bytes | None:
        """The Opus frame ``user_id`` sent, or None for a frame that cannot be trusted.

        A ``retry`` of a frame that failed before is not counted again when it fails: the
        failure tolerance counts frames, not attempts.
        """
        client = self._client
        if client is None:
            self.stats["passed_through"] += 1
            return frame
        opened = client.decrypt_opus(user_id, frame)
        if opened is None:
            if not retry:
                self.stats["decrypt_failed"] += 1
                self._consecutive_failures += 1
            return None
        self._consecutive_failures = 0
        if opened == frame:
            self.stats["passed_through"] += 1
        else:
            self.stats["decrypted"] += 1
        return opened

    @property
    def failing(self) -> bool:
        """Whether our group has stopped matching the call's (see :data:`FAILURE_TOLERANCE`).

        Failures while a transition is pending are expected (members switch keys one by one)
        and a group that is not ready yet cannot open anything, so neither counts.
        """
        client = self._client
        return (
            self._consecutive_failures >= FAILURE_TOLERANCE
            and client is not None
            and client.can_encrypt
            and not client.transition_pending
        )

    def recovering(self) -> None:
        """The core asked for a fresh group: count afresh from here."""
        self._consecutive_failures = 0
        self.stats["recoveries"] += 1
