"""A voice connection's DAVE layer: the :class:`DaveClient` of the current voice session, wired up.

The state machine lives in ``_core/dave.py`` and decides everything about the protocol; this
module only carries its words: server messages in (what the session's ``DaveMessage`` actions
hand over), replies out on the websocket they answer, state changes out as events, and Opus
frames through it on both media paths.

Why a layer of its own rather than more of :class:`VoiceConnection`: the send path (another
task) and the receive path (the UDP task) call into it per frame, and both must keep working,
never raising, whatever the group is doing. A frame DAVE cannot encrypt becomes the silence frame
rather than plaintext or an exception in the sender; a frame it cannot decrypt is counted and
dropped. A message davey refuses is logged and the call goes on: the server's op 31 recovery, not
an invalidated connection, is how DAVE heals.

One :class:`DaveClient` per voice session: a resume keeps it (and so the group), a new session
(first join, server move, channel switch) gets a fresh one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from .._core.snowflake import Snowflake, validate_snowflake
from .._core.speaking import OPUS_SILENCE_FRAME
from .._core.transport import DecryptedPacket
from .._core.voice import dave as _dave
from .._core.voice.dave import DaveChange, DaveClient, DaveRecovering, DaveStateChanged
from .._core.voice.frames import ClientBinaryMessage, encode_client_binary, encode_client_text
from .._core.voice.payloads import SessionDescription
from .._core.voice.session import DaveMessage, MemberDisconnected, MemberSpeaking, NewDaveSession
from .._errors import DaveError, ProtocolError

__all__ = ["DecryptedFrame", "VoiceDave", "offered_dave_version", "passthrough"]

#: Sends one frame (JSON text or binary) on websocket ``connection_id``, if it is still current.
SendFrame = Callable[[int, str | bytes], Awaitable[None]]
#: A decrypted frame for whoever consumes received audio: ``(user_id, packet, opus)``.
DecryptedFrame = Callable[[int, DecryptedPacket, bytes], None]

#: Verification codes cached per (group state, user): each one costs davey ~0.25 s of scrypt.
_MAX_CACHED_CODES: Final = 64


def offered_dave_version() -> int:
    """What Identify offers: the highest DAVE version the installed davey supports, or 0.

    Read through the module so that a test (or an embedder) can patch
    ``_core.voice.dave.max_supported_dave_version`` and see a davey-less build.
    """
    return _dave.max_supported_dave_version()


def passthrough(frame: bytes) -> bytes:
    """The media encryptor outside end-to-end encryption: transport encryption only."""
    return frame


class VoiceDave:
    """The DAVE side of one :class:`VoiceConnection`; see the module docstring."""

    def __init__(
        self,
        user_id: Snowflake,
        send: SendFrame,
        publish: Callable[[DaveStateChanged], None],
        set_encryptor: Callable[[Callable[[bytes], bytes]], None],
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._user_id = user_id
        self._send = send
        self._publish = publish
        self._set_encryptor = set_encryptor
        self._log = log
        self._client: DaveClient | None = None
        self._users_by_ssrc: dict[int, Snowflake] = {}
        self._codes: dict[tuple[int, int | None, str | None, int], str] = {}
        #: Where decrypted frames go; the receive path sets it. Unset, frames are only counted.
        self.on_frame: DecryptedFrame | None = None
        self.stats: Counter[str] = Counter()
        """Media counters: ``encrypted``, ``encrypt_failed``, ``decrypted`` (opened end-to-end),
        ``passed_through`` (accepted plaintext), ``decrypt_failed``, ``unknown_ssrc``."""

    # --- what the connection exposes ------------------------------------------------------

    @property
    def client(self) -> DaveClient | None:
        """The current voice session's state machine; None before one starts or without DAVE."""
        return self._client

    @property
    def protocol_version(self) -> int:
        return 0 if self._client is None else self._client.protocol_version

    @property
    def epoch(self) -> int | None:
        return None if self._client is None else self._client.epoch

    @property
    def voice_privacy_code(self) -> str | None:
        return None if self._client is None else self._client.voice_privacy_code

    @property
    def can_encrypt(self) -> bool:
        return self._client is not None and self._client.can_encrypt

    @property
    def media_encryptor(self) -> Callable[[bytes], bytes]:
        """What the sender should apply to each Opus frame now: DAVE, or nothing at all."""
        return self.encrypt if self.can_encrypt else passthrough

    async def verification_code(self, user_id: int | str) -> str:
        """The code to compare with ``user_id`` out of band; see ``VoiceConnection``.

        davey computes it with scrypt (0.2-0.3 s) *while holding the GIL*. It runs in a worker
        thread all the same, so the call is an ordinary await, but that does not spare the trio
        thread: measured, the whole event loop (the sender included) stalls for those 0.25 s,
        about a dozen frames late. Codes are cached until the group changes, so only the first
        request per member and epoch costs it.
        """
        uid = validate_snowflake(user_id, name="user_id")
        client = self._client
        if client is None or client.protocol_version == 0 or client.voice_privacy_code is None:
            raise DaveError("no DAVE group yet: the call is not end-to-end encrypted right now")
        key = (id(client), client.epoch, client.voice_privacy_code, uid)
        code = self._codes.get(key)
        if code is None:
            code = await trio.to_thread.run_sync(client.verification_code, uid)
            if len(self._codes) >= _MAX_CACHED_CODES:
                self._codes.clear()
            self._codes[key] = code
        return code

    # --- the websocket side -----------------------------------------------------------------

    def new_session(self, action: NewDaveSession) -> None:
        """A new voice session: forget the old group, and who owned which SSRC."""
        previous = self._client
        self._client = DaveClient(self._user_id, action.channel_id)
        self._users_by_ssrc.clear()
        self._codes.clear()
        self._set_encryptor(self.media_encryptor)
        if previous is not None and previous.protocol_version > 0:
            self._publish(DaveStateChanged(DaveChange.RESET, 0, None, False, None))

    async def receive(self, action: DaveMessage, channel_id: Snowflake | None) -> None:
        """Feed one server message, send the replies, publish the changes.

        ``channel_id`` is where the connection is now: a switch's dispatches may arrive in
        either order, and the group id must be the channel the session was described for.
        """
        client = self._client
        if client is None:
            return
        message = action.message
        if isinstance(message, SessionDescription) and channel_id is not None:
            # The group is created from this id on start(); DaveClient reads it only then.
            client.channel_id = channel_id
        try:
            outputs = client.handle(message)
        except (ProtocolError, DaveError) as exc:
            # Refused outright (no op 31 applies): the server will resend or re-key; a call
            # must not end over one message.
            self._log.warning("DAVE: ignored a server message: %s", exc)
            return
        # Before any await: a frame sent while the replies go out must already use the new
        # keys, or the first frames after the group is ready would go out in the clear.
        self._set_encryptor(self.media_encryptor)
        for output in outputs:
            if isinstance(output, ClientBinaryMessage):
                await self._send(action.connection_id, encode_client_binary(output))
            elif isinstance(output, DaveStateChanged):
                self._codes.clear()
                self._log.info(
                    "DAVE %s: version %d, epoch %s, %s",
                    output.cause.value,
                    output.protocol_version,
                    output.epoch,
                    "end-to-end encrypted" if output.can_encrypt else "transport-only",
                )
                self._publish(output)
            elif isinstance(output, DaveRecovering):
                self._log.warning(
                    "DAVE: could not process a %s (transition %d), re-joining: %s",
                    output.what,
                    output.transition_id,
                    output.reason,
                )
            else:
                await self._send(action.connection_id, encode_client_text(output))

    def member(self, action: MemberSpeaking | MemberDisconnected) -> None:
        """Speaking (op 5) is the only way to learn whose frames an SSRC carries."""
        if isinstance(action, MemberSpeaking):
            self._users_by_ssrc[action.ssrc] = action.user_id
        else:
            for ssrc in [s for s, u in self._users_by_ssrc.items() if u == action.user_id]:
                del self._users_by_ssrc[ssrc]

    # --- media ------------------------------------------------------------------------------

    def encrypt(self, frame: bytes) -> bytes:
        """DAVE-encrypt one Opus frame; the sender calls it through ``_media_encryptor``.

        Never raises: a frame davey cannot encrypt goes out as silence, because sending it in
        the clear would break the end-to-end promise and raising would stop the sender.
        """
        client = self._client
        if client is None:
            return frame
        try:
            encrypted = client.encrypt_opus(frame)
        except DaveError as exc:
            self.stats["encrypt_failed"] += 1
            if self.stats["encrypt_failed"] & (self.stats["encrypt_failed"] - 1) == 0:
                self._log.warning("DAVE: could not encrypt a frame, sent silence: %s", exc)
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

    def on_packet(self, packet: DecryptedPacket) -> None:
        """The UDP task's hook: decrypt after the transport did, then hand the frame on."""
        opened = self.decrypt(packet.header.ssrc, packet.payload)
        if opened is not None and self.on_frame is not None:
            self.on_frame(opened[0], packet, opened[1])
