"""Discord's ``*_rtpsize`` AEAD transport encryption, for both ends of the voice socket.

A packet is ``header || ciphertext || tag(16) || nonce(4)``. The header (fixed part, CSRCs and the
extension preamble) is authenticated but sent in the clear, so the voice server can route packets;
the extension body is encrypted along with the Opus frame. The AEAD nonce is a 4-byte big-endian
counter, zero-padded on the right to the cipher's nonce size.

The same classes serve the client (encrypt what it sends, decrypt what members send) and the local
Discord simulator (decrypt what bots send, encrypt what simulated members send), so the two cannot
disagree about the wire format without a test noticing.

Nonce reuse under one key breaks both AES-GCM and XChaCha20-Poly1305, so the counter only moves
forward and refuses to wrap: the connection needs a new key (a new voice session) instead. The
counter belongs to the *key*, not to a cipher object: a voice server may send the same key again
(a Session Description re-sent after a resume), and a fresh counter starting at 0 would reuse the
nonces already spent. A :class:`NonceLedger` hands every cipher built for a key that key's one
counter; the voice connections of a process share :data:`PROCESS_NONCE_LEDGER`. Cipher objects
cannot be copied or pickled, because a copy would share the counter's future values.
"""

from __future__ import annotations

import abc
import hashlib
import secrets
import struct
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, NoReturn

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._errors import (
    DecryptionFailed,
    DiscoreVoiceError,
    NoCompatibleEncryptionMode,
    NonceExhausted,
    ProtocolError,
    UsageError,
    shorten,
)
from .rtp import RTP_HEADER_SIZE, RTP_VERSION, RtpHeader, pack_opus_header

__all__ = [
    "AES256_GCM_RTPSIZE",
    "KEY_SIZE",
    "MAX_NONCE",
    "NONCE_SIZE",
    "PROCESS_NONCE_LEDGER",
    "SUPPORTED_MODES",
    "TAG_SIZE",
    "XCHACHA20_POLY1305_RTPSIZE",
    "AesGcmCipher",
    "DecryptedPacket",
    "NonceLedger",
    "TransportCipher",
    "XChaCha20Poly1305Cipher",
    "choose_mode",
    "create_cipher",
    "parse_secret_key",
]

AES256_GCM_RTPSIZE = "aead_aes256_gcm_rtpsize"
XCHACHA20_POLY1305_RTPSIZE = "aead_xchacha20_poly1305_rtpsize"
#: In order of preference: AES-GCM is Discord's preference and six times cheaper with AES-NI;
#: XChaCha20-Poly1305 is the mode every client must support.
SUPPORTED_MODES: tuple[str, ...] = (AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE)

KEY_SIZE = 32
TAG_SIZE = 16
#: The nonce as sent on the wire, after the tag.
NONCE_SIZE = 4
#: The last counter value a cipher may use; the next encrypt raises :class:`NonceExhausted`.
MAX_NONCE = (1 << 32) - 1

_U32 = struct.Struct(">I")
_AES_NONCE_PADDING = bytes(12 - NONCE_SIZE)
_XCHACHA_NONCE_PADDING = bytes(24 - NONCE_SIZE)
_MIN_SEALED_SIZE = TAG_SIZE + NONCE_SIZE
#: The fixed header's fields the receive path needs: first byte, sequence, timestamp, SSRC.
_MEDIA_FIXED = struct.Struct(">BxHII")


@dataclass(frozen=True, slots=True)
class DecryptedPacket:
    """What a receiver gets from one packet.

    ``payload`` is the bare Opus frame, with the extension body (kept in ``extension_body``) and
    any RTP padding removed. ``nonce`` is the sender's counter, which lets statistics spot replays
    and reordering independently of the RTP sequence number.
    """

    header: RtpHeader
    payload: bytes
    nonce: int
    extension_body: bytes = b""


class NonceCounter:
    """The next nonce of one key; shared by every cipher built for that key through a ledger."""

    __slots__ = ("next",)

    def __init__(self, first: int = 0) -> None:
        if isinstance(first, bool) or not isinstance(first, int):
            raise UsageError(f"first_nonce must be an int, got {type(first).__name__}")
        if not 0 <= first <= MAX_NONCE:
            raise UsageError(f"first_nonce must be in 0..{MAX_NONCE}, got {first}")
        self.next = first

    def __repr__(self) -> str:
        return f"<NonceCounter next={self.next}>"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise UsageError("a NonceCounter cannot be copied or pickled: a copy would reuse nonces")


class NonceLedger:
    """Each transport key's one nonce counter, so that no (key, nonce) pair is ever used twice.

    Keys are remembered by a salted BLAKE2b digest, never as themselves, and only the
    ``capacity`` most recently used are kept: a key forgotten is one that ``capacity`` newer keys
    have replaced, which Discord (a random key per voice session) never sends again.
    """

    __slots__ = ("_capacity", "_counters", "_salt")

    def __init__(self, capacity: int = 1 << 16) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise UsageError("capacity must be a positive integer")
        self._capacity = capacity
        self._counters: OrderedDict[bytes, NonceCounter] = OrderedDict()
        self._salt = secrets.token_bytes(16)

    def __len__(self) -> int:
        return len(self._counters)

    def __repr__(self) -> str:
        return f"<NonceLedger keys={len(self._counters)} capacity={self._capacity}>"

    def counter(self, key: bytes) -> NonceCounter:
        """The counter of ``key``: a new one starting at 0 the first time, the same one after."""
        digest = hashlib.blake2b(key, digest_size=32, key=self._salt).digest()
        counter = self._counters.get(digest)
        if counter is None:
            counter = self._counters[digest] = NonceCounter()
            if len(self._counters) > self._capacity:
                self._counters.popitem(last=False)
        else:
            self._counters.move_to_end(digest)
        return counter


#: The ledger every voice connection of this process draws its nonces from.
PROCESS_NONCE_LEDGER: Final = NonceLedger()


class TransportCipher(abc.ABC):
    """One transport key and its nonce counter; build one with :func:`create_cipher`."""

    __slots__ = ("_counter",)

    mode: ClassVar[str]

    def __init__(self, *, first_nonce: int = 0, counter: NonceCounter | None = None) -> None:
        self._counter = counter if counter is not None else NonceCounter(first_nonce)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} mode={self.mode!r}>"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        # Covers copy.copy, copy.deepcopy and pickle: a copy would reuse the counter's nonces.
        raise UsageError(
            f"{type(self).__name__} cannot be copied or pickled: a copy would reuse nonces"
        )

    @property
    def next_nonce(self) -> int:
        """The counter value the next encrypted packet will carry."""
        return self._counter.next

    @property
    def nonces_remaining(self) -> int:
        """How many more packets this key can encrypt; lets a caller rekey before running out."""
        return MAX_NONCE + 1 - self._counter.next

    def encrypt_opus(self, sequence: int, timestamp: int, ssrc: int, payload: bytes) -> bytes:
        """Encrypt one frame behind the common header (no CSRCs, no extension): the hot path."""
        header = pack_opus_header(sequence, timestamp, ssrc)
        return self._encrypt(header, payload)

    def encrypt(self, header: RtpHeader, payload: bytes, *, extension_body: bytes = b"") -> bytes:
        """Encrypt a packet with any header; ``extension_body`` must match its extension length.

        With the P bit set, ``payload`` must already end with its RTP padding, as the receiver
        strips it after decrypting.
        """
        expected = header.extension_body_size
        if len(extension_body) != expected:
            raise UsageError(
                f"the header announces a {expected}-byte extension body, "
                f"but extension_body is {len(extension_body)} bytes"
            )
        aad = header.build()
        return self._encrypt(aad, extension_body + payload if extension_body else payload)

    def _encrypt(self, aad: bytes, plaintext: bytes) -> bytes:
        counter = self._counter
        value = counter.next
        if value > MAX_NONCE:
            raise NonceExhausted(
                f"the {self.mode} nonce counter is exhausted after 2**32 packets; "
                "the voice connection needs a new key"
            )
        # Spend the nonce before sealing, so not even a failed seal can lead to its reuse.
        counter.next = value + 1
        nonce = _U32.pack(value)
        return aad + self._seal(nonce, aad, plaintext) + nonce

    def decrypt(self, packet: bytes) -> DecryptedPacket:
        """Authenticate and decrypt one RTP packet, or raise a :class:`ProtocolError`.

        :class:`DecryptionFailed` means the packet was too short or failed authentication;
        another :class:`ProtocolError` means its header, extension or padding was malformed.
        """
        header, header_size = RtpHeader.parse(packet)
        size = len(packet)
        if size < header_size + _MIN_SEALED_SIZE:
            raise DecryptionFailed(
                f"{self.mode} packet is {size} bytes, too short for its {header_size}-byte "
                f"header, a {TAG_SIZE}-byte tag and a {NONCE_SIZE}-byte nonce"
            )
        nonce = packet[-NONCE_SIZE:]
        plaintext = self._open(nonce, packet[:header_size], packet[header_size:-NONCE_SIZE])
        body_size = header.extension_body_size
        end = len(plaintext)
        if body_size > end:
            raise ProtocolError(
                f"RTP extension body of {body_size} bytes is longer than the "
                f"{end}-byte decrypted payload"
            )
        if header.padding:
            padding = plaintext[-1] if end > body_size else 0
            if padding == 0 or padding > end - body_size:
                raise ProtocolError(
                    f"RTP padding count {padding} does not fit a {end - body_size}-byte payload"
                )
            end -= padding
        return DecryptedPacket(
            header,
            plaintext[body_size:end],
            _U32.unpack(nonce)[0],
            plaintext[:body_size],
        )

    def open_media(self, packet: bytes) -> tuple[int, int, int, bytes]:
        """``(sequence, timestamp, ssrc, payload)`` of one packet: :meth:`decrypt`'s hot path.

        The same checks and errors as :meth:`decrypt`, without building a header or a packet
        object: the receive pipeline opens every datagram of every member (5000 a second with
        100 speakers), and those objects cost more than the AEAD itself.
        """
        size = len(packet)
        if size < RTP_HEADER_SIZE:
            return self._parse_error(packet)
        first, sequence, timestamp, ssrc = _MEDIA_FIXED.unpack_from(packet)
        header_size = RTP_HEADER_SIZE + 4 * (first & 0x0F)
        body_size = 0
        if first & 0x10:
            if header_size + 4 > size or first >> 6 != RTP_VERSION:
                return self._parse_error(packet)
            body_size = 4 * int.from_bytes(packet[header_size + 2 : header_size + 4], "big")
            header_size += 4
        if first >> 6 != RTP_VERSION or header_size + body_size > size:
            return self._parse_error(packet)
        if size < header_size + _MIN_SEALED_SIZE:
            raise DecryptionFailed(
                f"{self.mode} packet is {size} bytes, too short for its {header_size}-byte "
                f"header, a {TAG_SIZE}-byte tag and a {NONCE_SIZE}-byte nonce"
            )
        plaintext = self._open(packet[-NONCE_SIZE:], packet[:header_size], packet[header_size:-4])
        end = len(plaintext)
        if body_size > end:
            raise ProtocolError(
                f"RTP extension body of {body_size} bytes is longer than the "
                f"{end}-byte decrypted payload"
            )
        if first & 0x20:
            padding = plaintext[-1] if end > body_size else 0
            if padding == 0 or padding > end - body_size:
                raise ProtocolError(
                    f"RTP padding count {padding} does not fit a {end - body_size}-byte payload"
                )
            end -= padding
        return sequence, timestamp, ssrc, plaintext[body_size:end]

    @staticmethod
    def _parse_error(packet: bytes) -> NoReturn:
        RtpHeader.parse(packet)  # raises the header's own ProtocolError
        raise ProtocolError("malformed RTP header")  # pragma: no cover - parse raised

    @abc.abstractmethod
    def _seal(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        """Return ciphertext plus tag for the 4-byte wire nonce."""

    @abc.abstractmethod
    def _open(self, nonce: bytes, aad: bytes, sealed: bytes) -> bytes:
        """Return the plaintext, or raise :class:`DecryptionFailed`; nothing else may escape."""

    def _fail(self) -> NoReturn:
        raise DecryptionFailed(f"{self.mode} packet failed authentication") from None


class AesGcmCipher(TransportCipher):
    """``aead_aes256_gcm_rtpsize``, through ``cryptography``: 0.57 µs per 160-byte frame."""

    __slots__ = ("_aead",)

    mode: ClassVar[str] = AES256_GCM_RTPSIZE

    def __init__(
        self, key: bytes, *, first_nonce: int = 0, counter: NonceCounter | None = None
    ) -> None:
        super().__init__(first_nonce=first_nonce, counter=counter)
        # Created once per key: the key schedule is the expensive part.
        self._aead = AESGCM(key)

    def _seal(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return self._aead.encrypt(nonce + _AES_NONCE_PADDING, plaintext, aad)

    def _open(self, nonce: bytes, aad: bytes, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce + _AES_NONCE_PADDING, sealed, aad)
        except (InvalidTag, ValueError, OverflowError):
            self._fail()


class XChaCha20Poly1305Cipher(TransportCipher):
    """``aead_xchacha20_poly1305_rtpsize``, through PyNaCl: 3.5 µs per 160-byte frame."""

    __slots__ = ("_key",)

    mode: ClassVar[str] = XCHACHA20_POLY1305_RTPSIZE

    def __init__(
        self, key: bytes, *, first_nonce: int = 0, counter: NonceCounter | None = None
    ) -> None:
        super().__init__(first_nonce=first_nonce, counter=counter)
        self._key = key

    def _seal(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, aad, nonce + _XCHACHA_NONCE_PADDING, self._key
        )

    def _open(self, nonce: bytes, aad: bytes, sealed: bytes) -> bytes:
        try:
            return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed, aad, nonce + _XCHACHA_NONCE_PADDING, self._key
            )
        except nacl.exceptions.CryptoError:
            self._fail()


_CIPHERS: dict[str, type[AesGcmCipher] | type[XChaCha20Poly1305Cipher]] = {
    AES256_GCM_RTPSIZE: AesGcmCipher,
    XCHACHA20_POLY1305_RTPSIZE: XChaCha20Poly1305Cipher,
}


def create_cipher(
    mode: str,
    key: bytes | Sequence[int],
    *,
    first_nonce: int = 0,
    ledger: NonceLedger | None = None,
) -> TransportCipher:
    """Make the cipher for a negotiated mode.

    ``key`` is 32 bytes, or the Session Description's list of 32 ints. A bad mode or key here is
    the caller's :class:`UsageError`: a key received from the server should go through
    :func:`parse_secret_key` first, which blames the server instead. With a ``ledger`` the cipher
    draws its nonces from the key's counter there, so a key seen before carries on where it
    stopped; without one it counts from ``first_nonce``, which exists so tests can start near the
    end of the counter.
    """
    cipher_class = _CIPHERS.get(mode) if isinstance(mode, str) else None
    if cipher_class is None:
        raise UsageError(
            f"unknown transport encryption mode {shorten(repr(mode))}; "
            f"supported: {', '.join(SUPPORTED_MODES)}"
        )
    raw = _coerce_key(key, UsageError, "key")
    if ledger is None:
        return cipher_class(raw, first_nonce=first_nonce)
    return cipher_class(raw, counter=ledger.counter(raw))


def parse_secret_key(value: object) -> bytes:
    """Check the ``secret_key`` of a Session Description; a malformed one is a ProtocolError."""
    return _coerce_key(value, ProtocolError, "Session Description secret_key")


def _coerce_key(value: object, error: type[DiscoreVoiceError], what: str) -> bytes:
    # Messages describe the key's shape only: its bytes are a secret.
    if isinstance(value, bytes | bytearray | memoryview):
        key = bytes(value)
    elif isinstance(value, list | tuple):
        if not all(type(item) is int and 0 <= item <= 255 for item in value):
            raise error(f"{what} must hold only ints in 0..255")
        key = bytes(value)
    else:
        raise error(
            f"{what} must be {KEY_SIZE} bytes or a list of {KEY_SIZE} ints, "
            f"got {type(value).__name__}"
        )
    if len(key) != KEY_SIZE:
        raise error(f"{what} must be {KEY_SIZE} bytes long, got {len(key)}")
    return key


def choose_mode(offered: Iterable[str], *, supported: Sequence[str] = SUPPORTED_MODES) -> str:
    """Pick a mode from the server's Ready ``modes``: the first of ``supported`` it offers.

    ``supported`` (default :data:`SUPPORTED_MODES`) lets a caller or a test force XChaCha20. The
    discontinued xsalsa20 modes are never chosen, whatever the server offers.
    """
    for mode in supported:
        if mode not in _CIPHERS:
            raise UsageError(
                f"unsupported transport encryption mode {mode!r}; "
                f"supported: {', '.join(SUPPORTED_MODES)}"
            )
    offered_modes = list(offered)
    for mode in supported:
        if mode in offered_modes:
            return mode
    # Mode names come from the server: each is capped, and so is the list.
    shown = ", ".join(shorten(repr(mode), 60) for mode in offered_modes[:10])
    if len(offered_modes) > 10:
        shown += f", ... ({len(offered_modes)} in all)"
    raise NoCompatibleEncryptionMode(
        f"the voice server offered [{shown}]; discore_voice supports {', '.join(supported)}"
    )
