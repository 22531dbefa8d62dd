"""DAVE end-to-end encryption, client side: the one adapter around davey, and its state machine.

Every davey call in the library goes through this module. davey 0.2 changes the API (explicit
prepare/execute transitions, ``process_commit`` returning a bool, ints from ``get_user_ids``); when
it comes in, only :class:`_DaveySession` should need to change.

The rest is sans-IO like the rest of the core: :class:`DaveClient` takes decoded voice gateway
messages (the DAVE ops 21-30, plus Session Description and Clients Connect/Disconnect, which
decide the version and the members we expect) and returns what to send back and what changed.
No sockets, no clocks, no trio. The shell writes each :data:`DaveOutput` to the websocket (binary
or JSON) or hands it to the user as an event.

davey is imported lazily and may be missing (it is a native wheel): importing discore_voice never
fails for it, :func:`max_supported_dave_version` then says 0, and the connection identifies
without DAVE.

What davey 0.1.7 does, checked against it, and what the state machine relies on:

- it raises ``ValueError("Failed to ...: <MLS error>")`` for every refusal (``OverflowError`` for
  ids above 64 bits); the adapter turns them into :class:`DaveError`, message kept;
- keys switch as soon as a commit or welcome is processed (``ready`` turns true then): op 22 only
  changes the protocol version here, and we encrypt as soon as the group is ready;
- ``reinit`` keeps the external sender, while a *failed* ``set_external_sender`` drops the group;
- passthrough mode applies to the decryptors that exist when it is set, and turning it off keeps
  a window (10 s by default) for plaintext still in flight;
- a member alone in its local group is never ready; key packages and welcomes are raw MLS structs
  (no MLSMessage framing), commits are MLSMessages.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from ..._errors import DaveError, ProtocolError
from ..snowflake import validate_snowflake
from ..speaking import OPUS_SILENCE_FRAME
from .events import DaveChange, DaveStateChanged
from .frames import ClientBinaryMessage, ServerBinaryMessage
from .opcodes import VoiceOpcode
from .payloads import (
    ClientDisconnect,
    ClientsConnect,
    DaveExecuteTransition,
    DaveMlsInvalidCommitWelcome,
    DavePrepareEpoch,
    DavePrepareTransition,
    DaveTransitionReady,
    ServerMessage,
    SessionDescription,
)

__all__ = [
    "DAVE_FRAME_MAGIC",
    "IMPLEMENTED_DAVE_VERSION",
    "DaveChange",
    "DaveClient",
    "DaveError",
    "DaveOutput",
    "DaveRecovering",
    "DaveStateChanged",
    "dave_available",
    "max_supported_dave_version",
]

#: The highest DAVE version this state machine implements, whatever davey could do.
IMPLEMENTED_DAVE_VERSION: Final = 1
#: Every DAVE-encrypted frame ends with this marker; a frame without it cannot be one.
DAVE_FRAME_MAGIC: Final = b"\xfa\xfa"
#: How long (seconds) receivers still accept plaintext after an upgrade executes, so frames in
#: flight from members that switched a little later are not dropped. The whitepaper's figure.
_PASSTHROUGH_EXPIRY: Final = 10
_MIN_DAVE_FOOTER: Final = 12
#: Op 27's first byte.
_PROPOSALS_APPEND: Final = 0
_PROPOSALS_REVOKE: Final = 1


# --- availability -------------------------------------------------------------------------------


@functools.cache
def _davey_version() -> int:
    """Import davey once; a missing or broken native wheel means version 0, never an error."""
    try:
        import davey
    except (ImportError, OSError):
        return 0
    version = getattr(davey, "DAVE_PROTOCOL_VERSION", 0)
    return version if isinstance(version, int) and version > 0 else 0


def max_supported_dave_version() -> int:
    """What Identify advertises as ``max_dave_protocol_version``: 0 when davey is unusable."""
    return min(_davey_version(), IMPLEMENTED_DAVE_VERSION)


def dave_available() -> bool:
    """Whether DAVE can be spoken at all (davey imports and knows a version we implement)."""
    return max_supported_dave_version() > 0


def _looks_like_dave(frame: bytes) -> bool:
    # The footer ends with its own size (tag 8 + nonce >= 1 + size 1 + magic 2 = at least 12)
    # and the magic marker.
    return (
        len(frame) >= _MIN_DAVE_FOOTER
        and frame.endswith(DAVE_FRAME_MAGIC)
        and _MIN_DAVE_FOOTER <= frame[-3] <= len(frame)
    )


# --- the adapter: every davey call lives below ----------------------------------------------------


def _davey_failure(exc: BaseException, action: str) -> DaveError | None:
    """The :class:`DaveError` that stands for ``exc``, or None when ``exc`` is not davey's.

    davey reports MLS failures as ValueError (and overflows, panics); pyo3 turns a Rust panic
    into PanicException, a BaseException. Cancellations and our own DaveErrors pass as they are.
    """
    if isinstance(exc, DaveError):
        return None
    if isinstance(exc, Exception):
        return DaveError(f"davey failed to {action}: {exc}")
    if type(exc).__name__ == "PanicException":
        return DaveError(f"davey panicked trying to {action}: {exc}")
    return None


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Every davey failure inside becomes a :class:`DaveError` (see :func:`_davey_failure`)."""
    try:
        yield
    except BaseException as exc:
        error = _davey_failure(exc, action)
        if error is None:
            raise
        raise error from exc


@functools.cache
def _audio_media_type() -> Any:
    import davey

    return davey.MediaType.audio


class _DaveySession:
    """The thin, typed wrapper over ``davey.DaveSession`` (davey 0.1.x)."""

    __slots__ = ("_session", "channel_id", "user_id")

    def __init__(self, protocol_version: int, user_id: int, channel_id: int) -> None:
        import davey

        self.user_id = user_id
        self.channel_id = channel_id
        with _translated("create a session"):
            self._session = davey.DaveSession(protocol_version, user_id, channel_id)

    def reinit(self, protocol_version: int) -> None:
        """Drop the group and pending state; davey keeps the external sender across this."""
        with _translated("reinitialise the session"):
            self._session.reinit(protocol_version, self.user_id, self.channel_id)

    @property
    def has_external_sender(self) -> bool:
        import davey

        return self._session.status is not davey.SessionStatus.inactive

    @property
    def has_group(self) -> bool:
        """A local group exists (pending or established): proposals and commits make sense."""
        return self._session.epoch is not None

    @property
    def ready(self) -> bool:
        return bool(self._session.ready)

    @property
    def epoch(self) -> int | None:
        return self._session.epoch

    @property
    def protocol_version(self) -> int:
        return self._session.protocol_version

    @property
    def voice_privacy_code(self) -> str | None:
        code = self._session.voice_privacy_code
        return code or None

    def set_external_sender(self, data: bytes) -> None:
        with _translated("set the external sender"):
            self._session.set_external_sender(data)

    def key_package(self) -> bytes:
        with _translated("create a key package"):
            return self._session.get_serialized_key_package()

    def process_proposals(
        self, revoke: bool, data: bytes, expected_user_ids: list[int]
    ) -> tuple[bytes, bytes | None] | None:
        import davey

        kind = (
            davey.ProposalsOperationType.revoke if revoke else davey.ProposalsOperationType.append
        )
        with _translated("process proposals"):
            result = self._session.process_proposals(kind, data, expected_user_ids)
        return None if result is None else (result.commit, result.welcome)

    def process_commit(self, data: bytes) -> None:
        with _translated("process a commit"):
            self._session.process_commit(data)

    def process_welcome(self, data: bytes) -> None:
        with _translated("process a welcome"):
            self._session.process_welcome(data)

    def set_passthrough(self, enabled: bool, expiry: int | None = None) -> None:
        with _translated("set passthrough mode"):
            self._session.set_passthrough_mode(enabled, expiry)

    def can_passthrough(self, user_id: int) -> bool:
        try:
            with _translated("check passthrough"):
                return bool(self._session.can_passthrough(user_id))
        except DaveError:
            return False

    # The two per-frame calls (50 a second per sender, 5000 at 100 speakers) catch inline what
    # _translated would: a generator-based context manager costs more than the AEAD itself.

    def encrypt_opus(self, frame: bytes) -> bytes:
        try:
            return self._session.encrypt_opus(frame)
        except BaseException as exc:
            error = _davey_failure(exc, "encrypt an Opus frame")
            if error is None:
                raise
            raise error from exc

    def decrypt_audio(self, user_id: int, frame: bytes) -> bytes:
        try:
            return self._session.decrypt(user_id, _audio_media_type(), frame)
        except BaseException as exc:
            error = _davey_failure(exc, "decrypt a frame")
            if error is None:
                raise
            raise error from exc

    def verification_code(self, user_id: int) -> str:
        with _translated("compute a verification code"):
            return self._session.get_verification_code(user_id)

    def pairwise_fingerprint(self, version: int, user_id: int) -> bytes:
        with _translated("compute a pairwise fingerprint"):
            return self._session.get_pairwise_fingerprint(version, user_id)

    def epoch_authenticator(self) -> bytes | None:
        with _translated("get the epoch authenticator"):
            return self._session.get_epoch_authenticator()

    def user_ids(self) -> frozenset[int]:
        # davey 0.1 returns decimal strings, 0.2 ints: int() accepts both.
        with _translated("list the group's users"):
            return frozenset(int(user_id) for user_id in self._session.get_user_ids())


# --- outputs of the state machine ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaveRecovering:
    """davey refused what the server sent; op 31 and a new key package are on their way.

    ``reason`` is davey's message, for the log: it never contains key material.
    """

    what: str
    transition_id: int
    reason: str


#: What the state machine asks for: send a binary frame (op 26/28), send JSON (op 23/31), or
#: report a change to the user.
DaveOutput: TypeAlias = (
    ClientBinaryMessage
    | DaveTransitionReady
    | DaveMlsInvalidCommitWelcome
    | DaveStateChanged
    | DaveRecovering
)

#: Verification codes remembered per (epoch, privacy code, user): each costs ~0.25 s of scrypt.
_MAX_CACHED_CODES: Final = 64

_Snapshot: TypeAlias = tuple[int, int | None, bool, str | None]


class DaveClient:
    """One voice session's DAVE state: feed it every decoded server message, send what it returns.

    Kept across a resume (the server re-delivers missed messages and the group lives on); call
    :meth:`reset` for a new voice session (a server move or a channel switch), which starts DAVE
    afresh.

    Also used by the simulator's members: they are DAVE clients like the bot.

    Wiring: pass every decoded server message (JSON or binary) to :meth:`handle`; for each
    output, encode a :class:`ClientBinaryMessage` with ``encode_client_binary``, op 23/31
    payloads with ``encode_client_text``, and emit :class:`DaveStateChanged` and
    :class:`DaveRecovering` as events. Media goes through :meth:`encrypt_opus` before transport
    encryption and :meth:`decrypt_opus` after transport decryption.
    """

    def __init__(self, user_id: int, channel_id: int) -> None:
        self.user_id = validate_snowflake(user_id, name="user_id")
        self.channel_id = validate_snowflake(channel_id, name="channel_id")
        self._session: _DaveySession | None = None
        self._protocol_version = 0
        self._external_sender: bytes | None = None
        self._key_package_sent = False
        self._pending: dict[int, int] = {}  # transition id -> protocol version it moves to
        self._known_users: set[int] = set()
        self._last_transition_id = 0
        self._codes: dict[tuple[int | None, str | None, int], str] = {}
        self.decrypt_failures = 0

    # --- what the connection exposes ------------------------------------------------------------

    @property
    def protocol_version(self) -> int:
        """The DAVE version the call is using now; 0 means transport encryption only."""
        return self._protocol_version

    @property
    def epoch(self) -> int | None:
        """The MLS epoch of our group, ``None`` without one (0 while the group is only local)."""
        return None if self._session is None else self._session.epoch

    @property
    def can_encrypt(self) -> bool:
        """Whether outgoing Opus is end-to-end encrypted now (else it goes transport-only)."""
        return self._protocol_version > 0 and self._session is not None and self._session.ready

    @property
    def voice_privacy_code(self) -> str | None:
        """The code every member of the call sees; equal codes mean one shared group.

        None while the call is not end-to-end encrypted: before the group is ready, and in a
        transport-only (version 0) call, where a group left over from before a downgrade still
        holds a code that no longer protects anything.
        """
        if not self.can_encrypt:
            return None
        assert self._session is not None
        return self._session.voice_privacy_code

    @property
    def transition_pending(self) -> bool:
        """Whether a prepared transition (op 21 or 24) has not been executed (op 22) yet."""
        return bool(self._pending)

    @property
    def group_user_ids(self) -> frozenset[int]:
        """Users in our MLS group (ourselves included), empty without a group."""
        if self._session is None or not self._session.ready:
            return frozenset()
        return self._session.user_ids()

    def verification_code(self, user_id: int) -> str:
        """The code to compare out of band with ``user_id``; :class:`DaveError` without a group.

        Expensive: davey runs scrypt for it (0.2-0.3 s) *while holding the GIL*, so even from a
        worker thread it stalls every other Python thread. Call it on demand, never per frame.
        """
        return self._require_session().verification_code(user_id)

    def cached_verification_code(self, user_id: int) -> str:
        """:meth:`verification_code`, remembered until the group changes (epoch or code)."""
        key = (self.epoch, self.voice_privacy_code, user_id)
        code = self._codes.get(key)
        if code is None:
            code = self.verification_code(user_id)
            if len(self._codes) >= _MAX_CACHED_CODES:
                self._codes.clear()
            self._codes[key] = code
        return code

    def pairwise_fingerprint(self, user_id: int, version: int = 0) -> bytes:
        """The full pairwise fingerprint with ``user_id``; as costly as the verification code."""
        return self._require_session().pairwise_fingerprint(version, user_id)

    def epoch_authenticator(self) -> bytes | None:
        """The MLS epoch authenticator: what the privacy code is derived from."""
        return None if self._session is None else self._session.epoch_authenticator()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, protocol_version: int) -> list[DaveOutput]:
        """Session Description (op 4) chose the version: set up davey, maybe send a key package.

        Once per voice session: calling it again starts the group over.
        """
        if protocol_version > max_supported_dave_version():
            raise ProtocolError(
                f"the voice server chose DAVE version {protocol_version}, above the "
                f"{max_supported_dave_version()} we offered"
            )
        before = self._snapshot()
        self._protocol_version = protocol_version
        out: list[DaveOutput] = []
        if protocol_version > 0:
            self._reinit(protocol_version)
            out += self._maybe_send_key_package()
        return out + self._changed(before, DaveChange.STARTED, force=True)

    def reset(self) -> list[DaveOutput]:
        """A new voice session: forget the group, the external sender and the members.

        Not for a resume: a resumed session keeps its group, and the server re-delivers only the
        messages we missed.
        """
        before = self._snapshot()
        self._session = None
        self._protocol_version = 0
        self._external_sender = None
        self._key_package_sent = False
        self._pending.clear()
        self._known_users.clear()
        self._last_transition_id = 0
        return self._changed(before, DaveChange.RESET, force=True)

    def clients_connected(self, user_ids: Iterable[int]) -> None:
        """Clients Connect (op 11): these users may be proposed as members."""
        self._known_users.update(user_ids)

    def client_disconnected(self, user_id: int) -> None:
        """Client Disconnect (op 13): an Add for this user is no longer expected."""
        self._known_users.discard(user_id)

    def recover_from_failures(self, failures: int) -> list[DaveOutput]:
        """Received frames stopped opening outside any transition: start over (op 31).

        What @discordjs/voice does after 36 failures in a row: our group is not the call's any
        more (a commit we never got, a re-key we missed), and only a fresh key package gets us
        back in. Nothing to do without a group.
        """
        if self._session is None or self._protocol_version == 0:
            return []
        reason = DaveError(f"{failures} received frames in a row could not be decrypted")
        return self._recover("received audio", self._last_transition_id, reason)

    # --- dispatch -------------------------------------------------------------------------------

    def handle(self, message: ServerBinaryMessage | ServerMessage) -> list[DaveOutput]:
        """Feed any decoded server message; those DAVE does not care about return nothing.

        Raises :class:`ProtocolError` for a DAVE message too malformed to act on, and
        :class:`DaveError` for an external sender davey refuses; the shell logs both and goes on.
        """
        if isinstance(message, ServerBinaryMessage):
            return self.handle_binary(message)
        if isinstance(message, SessionDescription):
            return self.start(message.dave_protocol_version)
        if isinstance(message, ClientsConnect):
            self.clients_connected(message.user_ids)
            return []
        if isinstance(message, ClientDisconnect):
            self.client_disconnected(message.user_id)
            return []
        if isinstance(message, DavePrepareTransition):
            return self.prepare_transition(message.transition_id, message.protocol_version)
        if isinstance(message, DaveExecuteTransition):
            return self.execute_transition(message.transition_id)
        if isinstance(message, DavePrepareEpoch):
            return self.prepare_epoch(
                message.epoch, message.protocol_version, message.transition_id
            )
        return []

    def handle_binary(self, message: ServerBinaryMessage) -> list[DaveOutput]:
        """Ops 25, 27, 29 and 30, as :func:`decode_server_binary` splits them."""
        op = message.op
        if op is VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER:
            return self.external_sender(message.payload)
        if op is VoiceOpcode.DAVE_MLS_PROPOSALS:
            return self.proposals(message.payload)
        if message.transition_id is None:
            raise ProtocolError(f"DAVE op {int(op)} without a transition id")
        if op is VoiceOpcode.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION:
            return self.announce_commit(message.transition_id, message.payload)
        if op is VoiceOpcode.DAVE_MLS_WELCOME:
            return self.welcome(message.transition_id, message.payload)
        raise ProtocolError(f"voice op {int(op)} is not a DAVE message the server sends")

    # --- one method per DAVE message ------------------------------------------------------------

    def external_sender(self, data: bytes) -> list[DaveOutput]:
        """Op 25: the gateway's signing key; needed before any group, so the key package waits."""
        data = bytes(data)
        previous, self._external_sender = self._external_sender, data
        session = self._session
        if session is None:
            return []  # version 0 for now; used if the call upgrades
        if session.has_external_sender:
            if data == previous:
                return []  # re-delivered after a resume
            # A different gateway key: nothing signed by the old one can be trusted any more.
            self._reinit(session.protocol_version)
        else:
            session.set_external_sender(data)
        return self._maybe_send_key_package()

    def proposals(self, payload: bytes) -> list[DaveOutput]:
        """Op 27: append or revoke proposals; a resulting commit (+ welcome) goes back as op 28."""
        payload = bytes(payload)
        if not payload:
            raise ProtocolError("DAVE proposals (op 27) are empty")
        operation = payload[0]
        if operation not in (_PROPOSALS_APPEND, _PROPOSALS_REVOKE):
            raise ProtocolError(f"DAVE proposals (op 27) have unknown operation {operation}")
        session = self._session
        if session is None or not session.has_group:
            return []  # the whitepaper: proposals without a local group are ignored
        expected = sorted(self._known_users | {self.user_id})
        try:
            result = session.process_proposals(
                operation == _PROPOSALS_REVOKE, payload[1:], expected
            )
        except DaveError as exc:
            # Refused (wrong signer, wrong epoch, unexpected user): the group we would commit
            # to is not the server's, so ask to be removed and re-added.
            return self._recover("proposals", self._last_transition_id, exc)
        if result is None:
            return []
        commit, welcome = result
        return [ClientBinaryMessage(VoiceOpcode.DAVE_MLS_COMMIT_WELCOME, commit + (welcome or b""))]

    def announce_commit(self, transition_id: int, commit: bytes) -> list[DaveOutput]:
        """Op 29: apply the winning commit, then say we are ready (op 23)."""
        return self._apply("commit", transition_id, commit)

    def welcome(self, transition_id: int, welcome: bytes) -> list[DaveOutput]:
        """Op 30: join the group through the welcome, then say we are ready (op 23)."""
        return self._apply("welcome", transition_id, welcome)

    def prepare_transition(self, transition_id: int, protocol_version: int) -> list[DaveOutput]:
        """Op 21: a version change is coming; to 0, start accepting plaintext frames now."""
        if protocol_version > max_supported_dave_version():
            raise ProtocolError(f"the voice server moves to unsupported DAVE {protocol_version}")
        self._last_transition_id = transition_id
        self._pending[transition_id] = protocol_version
        if protocol_version == 0 and self._session is not None:
            self._session.set_passthrough(True)
        if transition_id == 0:
            return self.execute_transition(0)  # (re)initialisation: executes at once
        return [DaveTransitionReady(transition_id=transition_id)]

    def execute_transition(self, transition_id: int) -> list[DaveOutput]:
        """Op 22: switch to the prepared version; davey 0.1 already switched keys on commit."""
        if transition_id not in self._pending:
            return []  # unknown or already executed (a re-delivery): nothing to switch
        before = self._snapshot()
        version = self._pending.pop(transition_id)
        previous = self._protocol_version
        self._protocol_version = version
        cause = DaveChange.TRANSITION_EXECUTED
        if version == 0 and previous > 0:
            cause = DaveChange.DOWNGRADED
        elif version > 0 and previous == 0:
            cause = DaveChange.UPGRADED
            if self._session is not None:
                # Members still switching keep sending plaintext for a moment: accept it.
                self._session.set_passthrough(False, _PASSTHROUGH_EXPIRY)
        return self._changed(before, cause, transition_id=transition_id, force=True)

    def prepare_epoch(
        self, epoch: int, protocol_version: int, transition_id: int | None = None
    ) -> list[DaveOutput]:
        """Op 24: epoch 1 means a new group (an upgrade, or a sole member's reset): re-key."""
        if protocol_version > max_supported_dave_version():
            raise ProtocolError(f"the voice server moves to unsupported DAVE {protocol_version}")
        if transition_id is not None:
            self._last_transition_id = transition_id
            self._pending[transition_id] = protocol_version
        if epoch != 1 or protocol_version == 0:
            return []
        before = self._snapshot()
        self._reinit(protocol_version)
        out = self._maybe_send_key_package()
        return out + self._changed(before, DaveChange.REINITIALISED, force=True)

    # --- media ----------------------------------------------------------------------------------

    def encrypt_opus(self, frame: bytes) -> bytes:
        """DAVE-encrypt an Opus frame when the group is ready, else pass it through.

        Runs before transport encryption. Silence passes through, as receivers expect.
        Raises :class:`DaveError` if davey cannot encrypt (drop the frame, do not send plaintext).
        """
        frame = bytes(frame)
        if frame == OPUS_SILENCE_FRAME or not self.can_encrypt:
            return frame
        assert self._session is not None
        return self._session.encrypt_opus(frame)

    def decrypt_opus(self, user_id: int, frame: bytes) -> bytes | None:
        """The Opus frame ``user_id`` sent, or ``None`` when it cannot be trusted or decrypted.

        Plaintext is accepted only where the protocol allows it: in a version-0 call, before our
        group is ready, and in the passthrough window around a downgrade or upgrade.
        """
        frame = bytes(frame)
        if frame == OPUS_SILENCE_FRAME:
            return frame
        session = self._session
        if _looks_like_dave(frame):
            if session is not None and session.has_group:
                try:
                    return session.decrypt_audio(user_id, frame)
                except DaveError:
                    pass
            # Undecryptable ciphertext is noise to a decoder, whatever the mode. (Plaintext
            # Opus that happens to look like this loses one 20 ms frame.)
            self.decrypt_failures += 1
            return None
        if (
            self._protocol_version == 0
            or session is None
            or not session.ready
            or session.can_passthrough(user_id)
        ):
            return frame
        self.decrypt_failures += 1
        return None

    # --- internals ------------------------------------------------------------------------------

    def _require_session(self) -> _DaveySession:
        if self._session is None:
            raise DaveError("no DAVE session: the call does not use DAVE")
        return self._session

    def _snapshot(self) -> _Snapshot:
        return (self._protocol_version, self.epoch, self.can_encrypt, self.voice_privacy_code)

    def _changed(
        self,
        before: _Snapshot,
        cause: DaveChange,
        *,
        transition_id: int | None = None,
        force: bool = False,
    ) -> list[DaveOutput]:
        after = self._snapshot()
        if after == before and not force:
            return []
        version, epoch, can_encrypt, code = after
        return [DaveStateChanged(cause, version, epoch, can_encrypt, code, transition_id)]

    def _reinit(self, protocol_version: int) -> None:
        if self._session is None:
            if not dave_available():
                raise DaveError("DAVE was negotiated but davey cannot be imported")
            self._session = _DaveySession(protocol_version, self.user_id, self.channel_id)
        else:
            self._session.reinit(protocol_version)
        self._key_package_sent = False
        if not self._session.has_external_sender and self._external_sender is not None:
            self._session.set_external_sender(self._external_sender)

    def _maybe_send_key_package(self) -> list[DaveOutput]:
        # One key package per group attempt: davey keeps only the latest, so a second one would
        # orphan an Add the server already proposed for the first.
        session = self._session
        if session is None or self._key_package_sent or not session.has_external_sender:
            return []
        self._key_package_sent = True
        return [ClientBinaryMessage(VoiceOpcode.DAVE_MLS_KEY_PACKAGE, session.key_package())]

    def _apply(self, what: str, transition_id: int, data: bytes) -> list[DaveOutput]:
        session = self._session
        if session is None or not session.has_external_sender:
            return []  # no DAVE here (version 0 and never upgraded): nothing to apply it to
        self._last_transition_id = transition_id
        before = self._snapshot()
        try:
            if what == "commit":
                session.process_commit(bytes(data))
            else:
                session.process_welcome(bytes(data))
        except DaveError as exc:
            return self._recover(what, transition_id, exc)
        if self._protocol_version == 0:
            # An upgrade: the call stays transport-only until op 22, so members keep sending
            # plaintext until then. davey only applies passthrough to decryptors that exist,
            # which the commit or welcome just created.
            session.set_passthrough(True)
        out: list[DaveOutput] = []
        if transition_id == 0:
            # (Re)initialisation needs no acknowledgement: davey already uses the new keys.
            pass
        else:
            self._pending[transition_id] = session.protocol_version
            out.append(DaveTransitionReady(transition_id=transition_id))
        return out + self._changed(
            before, DaveChange.GROUP_JOINED, transition_id=transition_id, force=True
        )

    def _recover(self, what: str, transition_id: int, exc: DaveError) -> list[DaveOutput]:
        """Flag the message with op 31, then start over in a fresh group with a new key package."""
        session = self._session
        assert session is not None
        before = self._snapshot()
        out: list[DaveOutput] = [
            DaveRecovering(what=what, transition_id=transition_id, reason=str(exc)),
            DaveMlsInvalidCommitWelcome(transition_id=transition_id),
        ]
        self._reinit(session.protocol_version)
        out += self._maybe_send_key_package()
        return out + self._changed(before, DaveChange.REINITIALISED, force=True)
