"""The DAVE layer of the media paths: every Opus frame sent or received passes through here.

One :class:`MediaCrypto` per voice connection, owned by the voice core, which points it at the
current voice session's :class:`DaveClient` and keeps its map of SSRCs to users. The send path
(the clock's step) and the receive path (the UDP task) call it per frame, and both must keep
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

__all__ = ["DAVE_COUNTERS", "MediaCrypto"]

#: The counters of :attr:`MediaCrypto.stats`.
DAVE_COUNTERS: Final = (
    "encrypted",
    "encrypt_failed",
    "decrypted",
    "passed_through",
    "decrypt_failed",
    "unknown_ssrc",
)


class MediaCrypto:
    """End-to-end encryption of one connection's frames, and who each received SSRC is."""

    __slots__ = ("_client", "_users_by_ssrc", "stats")

    def __init__(self) -> None:
        self._client: DaveClient | None = None
        self._users_by_ssrc: dict[int, Snowflake] = {}
        self.stats: Counter[str] = Counter()
        """``encrypted``, ``encrypt_failed``, ``decrypted`` (opened end-to-end),
        ``passed_through`` (accepted plaintext), ``decrypt_failed``, ``unknown_ssrc``."""

    @property
    def client(self) -> DaveClient | None:
        return self._client

    def use(self, client: DaveClient | None) -> None:
        """A new voice session: its DAVE client (None without DAVE), and nobody's SSRC yet."""
        self._client = client
        self._users_by_ssrc.clear()

    # --- who is who ---------------------------------------------------------------------------

    def user_for_ssrc(self, ssrc: int) -> Snowflake | None:
        return self._users_by_ssrc.get(ssrc)

    def map_ssrc(self, ssrc: int, user_id: Snowflake) -> None:
        """Speaking (op 5) is the only way to learn whose frames an SSRC carries."""
        self._users_by_ssrc[ssrc] = user_id

    def forget_user(self, user_id: Snowflake) -> None:
        for ssrc in [s for s, u in self._users_by_ssrc.items() if u == user_id]:
            del self._users_by_ssrc[ssrc]

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

    def decrypt(self, ssrc: int, frame: bytes) -> tuple[Snowflake, bytes] | None:
        """The sender and the Opus frame inside, or None for a frame that cannot be trusted."""
        user_id = self._users_by_ssrc.get(ssrc)
        if user_id is None:
            self.stats["unknown_ssrc"] += 1
            return None
        client = self._client
        if client is None:
            self.stats["passed_through"] += 1
            return user_id, frame
        opened = client.decrypt_opus(user_id, frame)
        if opened is None:
            self.stats["decrypt_failed"] += 1
            return None
        if opened == frame:
            self.stats["passed_through"] += 1
        else:
            self.stats["decrypted"] += 1
        return user_id, opened
