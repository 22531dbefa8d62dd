"""The few MLS (RFC 9420) messages a DAVE voice gateway builds or inspects, with ``cryptography``.

The gateway is the group's external sender: it signs Add and Remove proposals, and it reads what
clients send closely enough to route and police it (a key package's identity and signature, a
commit's proposal references, a welcome's per-member secrets). It never holds group secrets, so
none of this needs an MLS library: external proposals are signed over ``FramedContentTBS``, which
has no group context for an external sender.

Only DAVE protocol version 1 is spoken: MLS 1.0, ciphersuite 2 (P-256, AES-128-GCM, SHA-256),
basic credentials whose identity is the member's user id as 8 big-endian bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ..._errors import ProtocolError, UsageError
from .mls_codec import TlsReader, TlsWriter, opaque_vector

__all__ = [
    "CIPHERSUITE",
    "MLS_VERSION",
    "CommitInfo",
    "ExternalProposal",
    "KeyPackageInfo",
    "WelcomeInfo",
    "build_add_proposal",
    "build_external_sender",
    "build_remove_proposal",
    "build_welcome",
    "group_id_for_channel",
    "identity_for_user",
    "parse_commit_welcome",
    "parse_key_package",
    "parse_welcome",
    "public_key_bytes",
    "sign_with_label",
]

MLS_VERSION: Final = 1
CIPHERSUITE: Final = 2
_CREDENTIAL_BASIC: Final = 1
_WIRE_PUBLIC_MESSAGE: Final = 1
_SENDER_MEMBER: Final = 1
_SENDER_EXTERNAL: Final = 2
_CONTENT_PROPOSAL: Final = 2
_CONTENT_COMMIT: Final = 3
_PROPOSAL_ADD: Final = 1
_PROPOSAL_REMOVE: Final = 3
_PROPOSAL_OR_REF_PROPOSAL: Final = 1
_PROPOSAL_OR_REF_REFERENCE: Final = 2
_LEAF_SOURCE_KEY_PACKAGE: Final = 1
_LEAF_SOURCE_UPDATE: Final = 2
_LEAF_SOURCE_COMMIT: Final = 3
_MAX_U64: Final = (1 << 64) - 1
_LABEL_PREFIX: Final = b"MLS 1.0 "
_P256_POINT: Final = 65


def identity_for_user(user_id: int) -> bytes:
    """DAVE's basic-credential identity: the snowflake as 8 big-endian bytes."""
    if not 0 <= user_id <= _MAX_U64:
        raise UsageError(f"a user id must fit in 64 bits, got {user_id}")
    return user_id.to_bytes(8, "big")


def group_id_for_channel(channel_id: int) -> bytes:
    """DAVE's MLS group id is the channel id, 8 big-endian bytes (what davey derives too)."""
    return identity_for_user(channel_id)


def public_key_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed X9.62 point: MLS's SignaturePublicKey for P-256."""
    from cryptography.hazmat.primitives import serialization

    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _sign_content(label: bytes, content: bytes) -> bytes:
    return opaque_vector(_LABEL_PREFIX + label) + opaque_vector(content)


def sign_with_label(key: ec.EllipticCurvePrivateKey, label: bytes, content: bytes) -> bytes:
    """RFC 9420 SignWithLabel: a DER ECDSA signature, which is what ciphersuite 2 expects."""
    return key.sign(_sign_content(label, content), ec.ECDSA(hashes.SHA256()))


def _verify_with_label(public_key: bytes, label: bytes, content: bytes, signature: bytes) -> bool:
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
        key.verify(signature, _sign_content(label, content), ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature):
        return False
    return True


def _ref_hash(label: bytes, value: bytes) -> bytes:
    return hashlib.sha256(opaque_vector(_LABEL_PREFIX + label) + opaque_vector(value)).digest()


def build_external_sender(key: ec.EllipticCurvePrivateKey, identity: bytes) -> bytes:
    """The op 25 payload: ``ExternalSender { signature_key<V>, Credential (basic) }``."""
    return bytes(TlsWriter().vector(public_key_bytes(key)).u16(_CREDENTIAL_BASIC).vector(identity))


@dataclass(frozen=True, slots=True)
class ExternalProposal:
    """A signed external proposal: ``message`` goes into op 27, ``ref`` is how commits cite it."""

    message: bytes
    ref: bytes

    def __repr__(self) -> str:
        return f"ExternalProposal(ref={self.ref.hex()[:16]}…, <{len(self.message)} bytes>)"


def _external_proposal(
    key: ec.EllipticCurvePrivateKey, group_id: bytes, epoch: int, proposal: bytes
) -> ExternalProposal:
    content = bytes(
        TlsWriter()
        .vector(group_id)
        .u64(epoch)
        .u8(_SENDER_EXTERNAL)
        .u32(0)  # our index in the group's external_senders extension: the only one
        .vector(b"")  # authenticated_data
        .u8(_CONTENT_PROPOSAL)
        .raw(proposal)
    )
    framing = bytes(TlsWriter().u16(MLS_VERSION).u16(_WIRE_PUBLIC_MESSAGE))
    # An external sender's FramedContentTBS carries no GroupContext: that is why we can sign.
    signature = sign_with_label(key, b"FramedContentTBS", framing + content)
    # No membership tag: only member senders have one.
    message = framing + content + opaque_vector(signature)
    # ProposalRef hashes the AuthenticatedContent: wire format, content, then the auth data.
    authenticated = bytes(TlsWriter().u16(_WIRE_PUBLIC_MESSAGE)) + content
    ref = _ref_hash(b"Proposal Reference", authenticated + opaque_vector(signature))
    return ExternalProposal(message=message, ref=ref)


def build_add_proposal(
    key: ec.EllipticCurvePrivateKey, group_id: bytes, epoch: int, key_package: bytes
) -> ExternalProposal:
    """An external Add carrying a member's raw KeyPackage (as op 26 delivered it)."""
    proposal = bytes(TlsWriter().u16(_PROPOSAL_ADD).raw(key_package))
    return _external_proposal(key, group_id, epoch, proposal)


def build_remove_proposal(
    key: ec.EllipticCurvePrivateKey, group_id: bytes, epoch: int, leaf_index: int
) -> ExternalProposal:
    """An external Remove: MLS names members by leaf index, which the gateway tracks for that."""
    proposal = bytes(TlsWriter().u16(_PROPOSAL_REMOVE).u32(leaf_index))
    return _external_proposal(key, group_id, epoch, proposal)


# --- key packages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LeafNode:
    signature_key: bytes
    credential_type: int
    identity: bytes
    source: int
    lifetime: tuple[int, int] | None


def _read_credential(reader: TlsReader) -> tuple[int, bytes]:
    credential_type = reader.u16()
    if credential_type != _CREDENTIAL_BASIC:
        raise reader.error(f"credential type {credential_type} is not basic")
    return credential_type, reader.vector()


def _read_leaf_node(reader: TlsReader) -> _LeafNode:
    reader.vector()  # encryption_key
    signature_key = reader.vector()
    credential_type, identity = _read_credential(reader)
    capabilities = ("versions", "cipher suites", "extensions", "proposals", "credentials")
    for name in capabilities:
        reader.sub_reader(f"capability {name}")
    source = reader.u8()
    lifetime: tuple[int, int] | None = None
    if source == _LEAF_SOURCE_KEY_PACKAGE:
        lifetime = (reader.u64(), reader.u64())
    elif source == _LEAF_SOURCE_COMMIT:
        reader.vector()  # parent_hash
    elif source != _LEAF_SOURCE_UPDATE:
        raise reader.error(f"unknown leaf node source {source}")
    reader.vector()  # extensions
    reader.vector()  # signature (over LeafNodeTBS, which needs group context for commits)
    return _LeafNode(signature_key, credential_type, identity, source, lifetime)


@dataclass(frozen=True, slots=True)
class KeyPackageInfo:
    """What the gateway checks in a key package before it proposes adding the member."""

    raw: bytes
    user_id: int
    signature_key: bytes
    ref: bytes  # KeyPackageRef: how a Welcome names the member it is for

    def __repr__(self) -> str:
        return f"KeyPackageInfo(user_id={self.user_id}, <{len(self.raw)} bytes>)"


def parse_key_package(data: bytes) -> KeyPackageInfo:
    """Parse and verify an op 26 KeyPackage, as the DAVE whitepaper asks of the gateway.

    The version, ciphersuite, basic credential with an 8-byte identity, the unbounded lifetime
    DAVE requires and the self-signature are all checked; anything else is a
    :class:`ProtocolError`.
    """
    reader = TlsReader(data, "MLS key package")
    version = reader.u16()
    suite = reader.u16()
    if version != MLS_VERSION or suite != CIPHERSUITE:
        raise reader.error(f"version {version}/ciphersuite {suite} is not MLS 1.0 suite 2")
    reader.vector()  # init_key
    leaf = _read_leaf_node(reader)
    reader.vector()  # extensions
    signed_end = reader.position
    signature = reader.vector()
    reader.expect_end()
    if leaf.source != _LEAF_SOURCE_KEY_PACKAGE or leaf.lifetime != (0, _MAX_U64):
        raise ProtocolError("MLS key package: DAVE requires the unbounded key package lifetime")
    if len(leaf.identity) != 8:
        raise ProtocolError("MLS key package: the identity is not an 8-byte user id")
    if len(leaf.signature_key) != _P256_POINT:
        raise ProtocolError("MLS key package: the signature key is not an uncompressed P-256 point")
    raw = bytes(data)
    if not _verify_with_label(leaf.signature_key, b"KeyPackageTBS", raw[:signed_end], signature):
        raise ProtocolError("MLS key package: the signature does not verify")
    return KeyPackageInfo(
        raw=raw,
        user_id=int.from_bytes(leaf.identity, "big"),
        signature_key=leaf.signature_key,
        ref=_ref_hash(b"KeyPackage Reference", raw),
    )


# --- welcomes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WelcomeInfo:
    """A Welcome split into its per-member secrets, so each member gets only its own (op 30)."""

    cipher_suite: int
    secrets: tuple[tuple[bytes, bytes], ...]  # (KeyPackageRef, encoded EncryptedGroupSecrets)
    encrypted_group_info: bytes

    def for_member(self, key_package_ref: bytes) -> bytes | None:
        """The Welcome narrowed to one member, or ``None`` if it has nothing for that member."""
        mine = [encoded for ref, encoded in self.secrets if ref == key_package_ref]
        if not mine:
            return None
        return build_welcome(self.cipher_suite, mine, self.encrypted_group_info)

    def __repr__(self) -> str:
        return f"WelcomeInfo(members={len(self.secrets)})"


def build_welcome(cipher_suite: int, secrets: list[bytes], encrypted_group_info: bytes) -> bytes:
    """A raw Welcome (davey sends and takes it without MLSMessage framing)."""
    return bytes(
        TlsWriter().u16(cipher_suite).vector(b"".join(secrets)).vector(encrypted_group_info)
    )


def _read_welcome(reader: TlsReader) -> WelcomeInfo:
    cipher_suite = reader.u16()
    if cipher_suite != CIPHERSUITE:
        raise reader.error(f"welcome ciphersuite {cipher_suite} is not 2")
    secrets_reader = reader.sub_reader("welcome secrets")
    secrets: list[tuple[bytes, bytes]] = []
    while not secrets_reader.at_end():
        start = secrets_reader.position
        ref = secrets_reader.vector()  # new_member: KeyPackageRef
        secrets_reader.vector()  # kem_output
        secrets_reader.vector()  # ciphertext
        end = secrets_reader.position
        # Keep the entry exactly as the client encoded it.
        secrets.append((ref, secrets_reader.span(start, end)))
    encrypted_group_info = reader.vector()
    return WelcomeInfo(cipher_suite, tuple(secrets), encrypted_group_info)


def parse_welcome(data: bytes) -> WelcomeInfo:
    """Parse a raw Welcome; trailing bytes are refused."""
    reader = TlsReader(data, "MLS welcome")
    welcome = _read_welcome(reader)
    reader.expect_end()
    return welcome


# --- commits ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """An op 28 payload split and inspected: enough to police it, never to apply it."""

    commit: bytes  # the MLSMessage, as op 29 re-broadcasts it
    welcome: WelcomeInfo | None
    group_id: bytes
    epoch: int
    sender_leaf: int
    proposal_refs: tuple[bytes, ...]
    #: (identity, signature key) of the committer's new leaf node, when the commit has a path.
    path_leaf: tuple[bytes, bytes] | None

    def __repr__(self) -> str:
        return (
            f"CommitInfo(epoch={self.epoch}, sender_leaf={self.sender_leaf}, "
            f"refs={len(self.proposal_refs)}, welcome={self.welcome is not None})"
        )


def parse_commit_welcome(data: bytes) -> CommitInfo:
    """Parse op 28: a PublicMessage commit, then an optional raw Welcome, back to back.

    Only the shape DAVE allows is accepted: a member-sent commit whose proposals are all
    references. Its signature and tags are not checked (they need group secrets); the members do
    that, and report a bad commit with op 31.
    """
    reader = TlsReader(data, "MLS commit")
    version = reader.u16()
    wire_format = reader.u16()
    if version != MLS_VERSION or wire_format != _WIRE_PUBLIC_MESSAGE:
        raise reader.error(f"version {version}/wire format {wire_format} is not a PublicMessage")
    group_id = reader.vector()
    epoch = reader.u64()
    sender_type = reader.u8()
    if sender_type != _SENDER_MEMBER:
        raise reader.error(f"commit sender type {sender_type} is not a member")
    sender_leaf = reader.u32()
    reader.vector()  # authenticated_data
    content_type = reader.u8()
    if content_type != _CONTENT_COMMIT:
        raise reader.error(f"content type {content_type} is not a commit")
    proposals = reader.sub_reader("commit proposals")
    refs: list[bytes] = []
    while not proposals.at_end():
        kind = proposals.u8()
        if kind != _PROPOSAL_OR_REF_REFERENCE:
            kind_name = "an inline proposal" if kind == _PROPOSAL_OR_REF_PROPOSAL else str(kind)
            raise proposals.error(f"DAVE commits cite proposals by reference, not {kind_name}")
        refs.append(proposals.vector())
    path_leaf: tuple[bytes, bytes] | None = None
    if reader.optional():
        leaf = _read_leaf_node(reader)
        if leaf.source != _LEAF_SOURCE_COMMIT:
            raise reader.error("a commit path's leaf node must have the commit source")
        path_leaf = (leaf.identity, leaf.signature_key)
        reader.vector()  # nodes: UpdatePathNode<V>
    reader.vector()  # signature
    reader.vector()  # confirmation_tag
    reader.vector()  # membership_tag (a member sender always has one)
    commit_end = reader.position
    welcome = None if reader.at_end() else _read_welcome(reader)
    reader.expect_end()
    return CommitInfo(
        commit=bytes(data[:commit_end]),
        welcome=welcome,
        group_id=group_id,
        epoch=epoch,
        sender_leaf=sender_leaf,
        proposal_refs=tuple(refs),
        path_leaf=path_leaf,
    )
