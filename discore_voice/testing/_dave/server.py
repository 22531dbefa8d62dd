"""The simulator's voice gateway side of DAVE: the MLS delivery service and external sender.

Sans-IO and clock-free like the client core: the voice gateway feeds it what members send (key
packages, commits, transition readiness, op 31) and connection changes, and gets back
:class:`DaveDelivery` items saying which users to send which message to. Timers belong to the
gateway too: it calls :meth:`DaveServer.expire_transition` when members take too long.

It plays Discord's part as the DAVE whitepaper describes it, with its own code on
``cryptography`` (no davey here, so the client and the simulator cannot share a bug):

- it signs external Add and Remove proposals, and revokes an Add that a newer key package
  supersedes;
- while no group exists, each pending member gets the Adds of every *other* pending member
  (davey refuses a commit that adds its own signature key twice);
- it broadcasts the first valid commit of each epoch (op 29) to the members that hold the group
  and sends each welcomed member the welcome narrowed to its own secrets (op 30), then executes
  the transition (op 22) once every recipient is ready (op 23) or the gateway gives up waiting;
- a commit is valid only if it is for the current epoch, comes from the leaf the committer holds,
  and cites exactly the unrevoked proposals issued to that committer, nothing else;
- a sole remaining member is reset (op 24 epoch 1, then op 21 transition 0), downgrades and
  upgrades run as transitions of their own.

Commit and welcome contents cannot be checked beyond their shape here (that needs group secrets);
members report what they cannot process with op 31, and the server removes and re-adds them.

Wiring, per DAVE-capable member socket: after Identify, ``connect(user_id)``; op 26 ->
``key_package``; op 28 -> ``commit_welcome`` (catch :class:`ProtocolError`, which includes
:class:`RejectedCommit`: log it and carry on); op 23 -> ``transition_ready``; op 31 ->
``invalid_commit_welcome``; socket gone -> ``disconnect``; transition timer ->
``expire_transition``. Encode each delivery's message with ``encode_server_binary`` or
``encode_server_text`` and that socket's next seq. Fault injection belongs to the gateway: it
can alter or drop any delivery.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec

from ..._core.voice.frames import ServerBinaryMessage
from ..._core.voice.opcodes import VoiceOpcode
from ..._core.voice.payloads import (
    DaveExecuteTransition,
    DavePrepareEpoch,
    DavePrepareTransition,
)
from ..._errors import ProtocolError, UsageError
from .mls_codec import TlsWriter
from .mls_messages import (
    CommitInfo,
    ExternalProposal,
    KeyPackageInfo,
    build_add_proposal,
    build_external_sender,
    build_remove_proposal,
    group_id_for_channel,
    identity_for_user,
    parse_commit_welcome,
    parse_key_package,
)

__all__ = [
    "DAVE_PROTOCOL_VERSION",
    "DaveDelivery",
    "DaveServer",
    "RejectedCommit",
    "ServerDaveMessage",
    "proposals_payload",
]

#: The DAVE protocol version the simulator speaks.
DAVE_PROTOCOL_VERSION: Final = 1
_MAX_TRANSITION_ID: Final = (1 << 16) - 1
_APPEND: Final = 0
_REVOKE: Final = 1

ServerDaveMessage: TypeAlias = (
    ServerBinaryMessage | DavePrepareTransition | DaveExecuteTransition | DavePrepareEpoch
)


class RejectedCommit(ProtocolError):
    """An op 28 the server will not broadcast; ``stale`` marks one that merely lost the race.

    Losing the race is normal when several members commit the same proposals at once, so the
    gateway logs a stale commit quietly and any other rejection loudly.
    """

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(f"commit rejected: {reason}")
        self.stale = stale


@dataclass(frozen=True, slots=True)
class DaveDelivery:
    """Send ``message`` to each user in ``to``; the gateway frames and numbers it per socket."""

    to: tuple[int, ...]
    message: ServerDaveMessage


class _Kind(enum.Enum):
    ADD = "add"
    REMOVE = "remove"


@dataclass(slots=True)
class _Issued:
    proposal: ExternalProposal
    kind: _Kind
    user_id: int
    recipients: set[int]


@dataclass(slots=True)
class _Transition:
    transition_id: int
    protocol_version: int
    participants: set[int]
    waiting: set[int]
    executed: bool = False


@dataclass(slots=True)
class _Group:
    """The gateway's view of the MLS group: who holds which leaf, and with which key."""

    epoch: int = 0  # 0 until the first commit establishes the group
    leaves: dict[int, int] = field(default_factory=dict)  # user id -> leaf index
    signature_keys: dict[int, bytes] = field(default_factory=dict)
    #: Members still in the tree who no longer hold the group (left, or flagged with op 31).
    detached: set[int] = field(default_factory=set)

    @property
    def established(self) -> bool:
        return self.epoch > 0

    def active(self) -> set[int]:
        return set(self.leaves) - self.detached


def proposals_payload(operation: int, items: list[bytes]) -> bytes:
    """Op 27's payload: the operation byte, then one vector of messages or of vector(ref)s."""
    return bytes(TlsWriter().u8(operation).vector(b"".join(items)))


class DaveServer:
    """One voice channel's DAVE group, as the voice gateway sees it.

    ``signing_key`` is the external sender's P-256 key; tests pass their own to sign with a wrong
    one. Every method returns the deliveries to make, in order.
    """

    def __init__(
        self,
        channel_id: int,
        *,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        identity: bytes = b"discore-voice simulator",
        protocol_version: int = DAVE_PROTOCOL_VERSION,
    ) -> None:
        if protocol_version not in (0, DAVE_PROTOCOL_VERSION):
            raise UsageError(f"the simulator speaks DAVE 0 or 1, not {protocol_version}")
        self.channel_id = channel_id
        self._key = signing_key or ec.generate_private_key(ec.SECP256R1())
        self._group_id = group_id_for_channel(channel_id)
        #: The op 25 payload; members compare it with the group's external senders extension.
        self.external_sender_package = build_external_sender(self._key, identity)
        self.protocol_version = protocol_version
        self._connected: set[int] = set()
        self._key_packages: dict[int, KeyPackageInfo] = {}
        self._group = _Group()
        self._issued: dict[bytes, _Issued] = {}
        self._transitions: dict[int, _Transition] = {}
        self._last_transition_id = 0

    # --- what the gateway can read --------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The group's current MLS epoch; 0 while no group is established."""
        return self._group.epoch

    @property
    def members(self) -> dict[int, int]:
        """User id to leaf index, for members that hold the group."""
        return {u: leaf for u, leaf in self._group.leaves.items() if u not in self._group.detached}

    @property
    def pending(self) -> set[int]:
        """Connected users whose key package waits to be committed."""
        return set(self._key_packages)

    @property
    def pending_transitions(self) -> dict[int, set[int]]:
        """Transition id to the users it still waits for."""
        return {t.transition_id: set(t.waiting) for t in self._transitions.values()}

    def issued_to(self, user_id: int) -> set[bytes]:
        """ProposalRefs a commit by ``user_id`` must cite, no more and no fewer."""
        return {ref for ref, issued in self._issued.items() if user_id in issued.recipients}

    # --- connection changes ---------------------------------------------------------------------

    def connect(self, user_id: int) -> list[DaveDelivery]:
        """A DAVE-capable user identified: give it our external sender (op 25).

        Sent in a version-0 call too: a member needs it before it can take part in an upgrade.
        """
        self._connected.add(user_id)
        return [self._to([user_id], self._binary(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, b""))]

    def disconnect(self, user_id: int) -> list[DaveDelivery]:
        """A user left: revoke its pending Add, remove it from the group, or reset a sole member."""
        self._connected.discard(user_id)
        out = self._revoke_adds_for(user_id)
        self._key_packages.pop(user_id, None)
        out += self._forget_in_transitions(user_id)
        group = self._group
        if user_id in group.leaves and user_id not in group.detached:
            group.detached.add(user_id)
            active = group.active()
            if len(active) == 1 and not self._key_packages:
                out += self._sole_member_reset(next(iter(active)))
            else:
                out += self._issue_remove(user_id)
        return out

    # --- what members send ----------------------------------------------------------------------

    def key_package(self, user_id: int, payload: bytes) -> list[DaveDelivery]:
        """Op 26: validate the key package, then propose adding its member (op 27).

        A member that is still in the group (it flagged a bad commit, or simply re-keys) is
        removed first; an Add still in flight for an older key package is revoked.
        """
        if user_id not in self._connected:
            raise ProtocolError(f"key package from user {user_id}, who is not connected")
        if self.protocol_version == 0:
            raise ProtocolError("key package in a call that does not use DAVE")
        info = parse_key_package(payload)
        if info.user_id != user_id:
            raise ProtocolError(
                f"key package of user {user_id} names user {info.user_id} in its credential"
            )
        out = self._revoke_adds_for(user_id)
        self._forget_proposals_held_by(user_id)
        group = self._group
        if user_id in group.leaves and user_id not in group.detached:
            group.detached.add(user_id)
            out += self._issue_remove(user_id)
        self._key_packages[user_id] = info
        out += self._issue_add(user_id)
        return out

    def commit_welcome(self, user_id: int, payload: bytes) -> list[DaveDelivery]:
        """Op 28: broadcast it (op 29 + op 30) if it is the first valid commit of the epoch.

        Raises :class:`RejectedCommit` (a :class:`ProtocolError`) for a commit not broadcast,
        and :class:`ProtocolError` for one that does not even parse.
        """
        info = parse_commit_welcome(payload)
        group = self._group
        if info.group_id != self._group_id:
            raise RejectedCommit("it is for another group")
        if info.epoch != group.epoch:
            raise RejectedCommit(
                f"it is for epoch {info.epoch}, the group is at {group.epoch}",
                stale=info.epoch < group.epoch,
            )
        if group.established:
            if user_id not in group.active():
                raise RejectedCommit(f"user {user_id} does not hold the group")
            expected_leaf = group.leaves[user_id]
            expected_key = group.signature_keys[user_id]
        else:
            kp = self._key_packages.get(user_id)
            if kp is None:
                raise RejectedCommit(f"user {user_id} has no key package for a new group")
            expected_leaf, expected_key = 0, kp.signature_key
        if info.sender_leaf != expected_leaf:
            raise RejectedCommit(f"it is signed for leaf {info.sender_leaf}, not {expected_leaf}")
        if info.path_leaf is not None and info.path_leaf != (
            identity_for_user(user_id),
            expected_key,
        ):
            raise RejectedCommit("it changes the committer's credential or signature key")
        expected = self.issued_to(user_id)
        if (
            not info.proposal_refs
            or set(info.proposal_refs) != expected
            or (len(set(info.proposal_refs)) != len(info.proposal_refs))
        ):
            raise RejectedCommit("it does not cite exactly the proposals issued to its sender")
        adds = [self._issued[r].user_id for r in info.proposal_refs if self._is(r, _Kind.ADD)]
        removes = [self._issued[r].user_id for r in info.proposal_refs if self._is(r, _Kind.REMOVE)]
        welcomes: dict[int, bytes] = {}
        if adds:
            if info.welcome is None:
                raise RejectedCommit("it adds members but carries no welcome")
            for added in adds:
                narrowed = info.welcome.for_member(self._key_packages[added].ref)
                if narrowed is None:
                    raise RejectedCommit(f"its welcome has nothing for user {added}")
                welcomes[added] = narrowed
        elif info.welcome is not None:
            raise RejectedCommit("it carries a welcome but adds nobody")
        return self._apply_commit(user_id, info, adds, removes, welcomes)

    def transition_ready(self, user_id: int, transition_id: int) -> list[DaveDelivery]:
        """Op 23: once every participant is ready, execute the transition (op 22)."""
        transition = self._transitions.get(transition_id)
        if transition is None:
            # A late or repeated op 23 after the gateway executed without this member.
            return []
        transition.waiting.discard(user_id)
        if transition.waiting:
            return []
        return self._execute(transition)

    def expire_transition(self, transition_id: int) -> list[DaveDelivery]:
        """The gateway's timer ran out: execute without the members that never got ready."""
        transition = self._transitions.get(transition_id)
        return [] if transition is None else self._execute(transition)

    def invalid_commit_welcome(self, user_id: int, transition_id: int) -> list[DaveDelivery]:
        """Op 31: the member reset itself; remove it (if it is in the group) until it re-keys."""
        out = self._revoke_adds_for(user_id)
        self._forget_proposals_held_by(user_id)
        self._key_packages.pop(user_id, None)
        transition = self._transitions.get(transition_id)
        if transition is not None:
            transition.waiting.discard(user_id)
            if not transition.waiting:
                out += self._execute(transition)
        group = self._group
        if user_id in group.leaves and user_id not in group.detached:
            group.detached.add(user_id)
            out += self._issue_remove(user_id)
        return out

    # --- version changes ------------------------------------------------------------------------

    def downgrade(self) -> list[DaveDelivery]:
        """Announce a move to transport-only encryption (op 21, version 0); executes on ready."""
        if self.protocol_version == 0:
            return []
        transition = self._new_transition(0, set(self._connected))
        message = DavePrepareTransition(transition_id=transition.transition_id, protocol_version=0)
        out = [self._to(sorted(self._connected), message)]
        if not transition.waiting:
            out += self._execute(transition)
        return out

    def upgrade(self) -> list[DaveDelivery]:
        """Announce DAVE again (op 24, epoch 1): members re-key and a new group is created."""
        if self.protocol_version != 0:
            return []
        self.protocol_version = DAVE_PROTOCOL_VERSION
        self._reset_group()
        message = DavePrepareEpoch(epoch=1, protocol_version=DAVE_PROTOCOL_VERSION)
        # Members that already have our external sender ignore the repeat; one that joined
        # while the call was transport-only may not, and needs it before it can re-key.
        targets = sorted(self._connected)
        return [
            self._to(targets, self._binary(VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER, b"")),
            self._to(targets, message),
        ]

    # --- internals ------------------------------------------------------------------------------

    def _is(self, ref: bytes, kind: _Kind) -> bool:
        return self._issued[ref].kind is kind

    @staticmethod
    def _to(users: list[int] | set[int], message: ServerDaveMessage) -> DaveDelivery:
        return DaveDelivery(to=tuple(sorted(users)), message=message)

    def _binary(
        self, op: VoiceOpcode, payload: bytes, tid: int | None = None
    ) -> ServerBinaryMessage:
        if op is VoiceOpcode.DAVE_MLS_EXTERNAL_SENDER:
            payload = self.external_sender_package
        return ServerBinaryMessage(op=op, payload=payload, transition_id=tid)

    def _proposals(self, users: set[int], operation: int, items: list[bytes]) -> DaveDelivery:
        payload = proposals_payload(operation, items)
        return self._to(users, self._binary(VoiceOpcode.DAVE_MLS_PROPOSALS, payload))

    def _issue_add(self, user_id: int) -> list[DaveDelivery]:
        group = self._group
        kp = self._key_packages[user_id]
        proposal = build_add_proposal(self._key, self._group_id, group.epoch, kp.raw)
        out: list[DaveDelivery] = []
        if group.established:
            recipients = group.active() - {user_id}
        else:
            # No group yet: every other pending member may create it, so each gets this Add,
            # and the newcomer gets the Adds already in flight for the others.
            recipients = set(self._key_packages) - {user_id}
            theirs = [
                issued.proposal.message
                for issued in self._issued.values()
                if issued.kind is _Kind.ADD and issued.user_id != user_id
            ]
            for issued in self._issued.values():
                if issued.kind is _Kind.ADD and issued.user_id != user_id:
                    issued.recipients.add(user_id)
            if theirs:
                out.append(self._proposals({user_id}, _APPEND, theirs))
        self._issued[proposal.ref] = _Issued(proposal, _Kind.ADD, user_id, set(recipients))
        if recipients:
            out.append(self._proposals(recipients, _APPEND, [proposal.message]))
        return out

    def _issue_remove(self, user_id: int) -> list[DaveDelivery]:
        group = self._group
        if any(i.kind is _Kind.REMOVE and i.user_id == user_id for i in self._issued.values()):
            return []
        recipients = group.active()
        if not recipients:
            # Nobody holds the group any more: forget it, and let pending members start anew.
            return self._restart_group()
        proposal = build_remove_proposal(
            self._key, self._group_id, group.epoch, group.leaves[user_id]
        )
        self._issued[proposal.ref] = _Issued(proposal, _Kind.REMOVE, user_id, set(recipients))
        return [self._proposals(recipients, _APPEND, [proposal.message])]

    def _forget_proposals_held_by(self, user_id: int) -> None:
        # A member that re-keys has reinitialised and dropped every proposal it cached; its next
        # commit can only cite what it is sent from now on (``_issue_add`` re-sends pending Adds).
        for issued in self._issued.values():
            issued.recipients.discard(user_id)

    def _revoke_adds_for(self, user_id: int) -> list[DaveDelivery]:
        out: list[DaveDelivery] = []
        for ref, issued in list(self._issued.items()):
            if issued.kind is _Kind.ADD and issued.user_id == user_id:
                del self._issued[ref]
                recipients = issued.recipients & self._connected
                if recipients:
                    out.append(self._proposals(recipients, _REVOKE, [_vector(ref)]))
        return out

    def _new_transition(self, version: int, participants: set[int]) -> _Transition:
        tid = self._last_transition_id % _MAX_TRANSITION_ID + 1  # never 0: 0 means "at once"
        self._last_transition_id = tid
        transition = _Transition(tid, version, set(participants), set(participants))
        self._transitions[tid] = transition
        return transition

    def _execute(self, transition: _Transition) -> list[DaveDelivery]:
        self._transitions.pop(transition.transition_id, None)
        if transition.executed:
            return []
        transition.executed = True
        if transition.protocol_version == 0 and self.protocol_version != 0:
            self.protocol_version = 0
            self._reset_group()
        targets = transition.participants & self._connected
        if not targets:
            return []
        message = DaveExecuteTransition(transition_id=transition.transition_id)
        return [self._to(targets, message)]

    def _forget_in_transitions(self, user_id: int) -> list[DaveDelivery]:
        out: list[DaveDelivery] = []
        for transition in list(self._transitions.values()):
            transition.participants.discard(user_id)
            if user_id in transition.waiting:
                transition.waiting.discard(user_id)
                if not transition.waiting:
                    out += self._execute(transition)
        return out

    def _apply_commit(
        self,
        committer: int,
        info: CommitInfo,
        adds: list[int],
        removes: list[int],
        welcomes: dict[int, bytes],
    ) -> list[DaveDelivery]:
        group = self._group
        if not group.established:
            kp = self._key_packages.pop(committer)
            group.leaves = {committer: 0}
            group.signature_keys = {committer: kp.signature_key}
            group.detached = set()
        for removed in removes:
            group.leaves.pop(removed, None)
            group.signature_keys.pop(removed, None)
            group.detached.discard(removed)
        holders = group.active()  # they apply the commit (op 29)
        for added in adds:
            # RFC 9420 §12.3: Adds go to the leftmost blank leaf, in commit order.
            taken = set(group.leaves.values())
            leaf = next(i for i in range(len(taken) + 1) if i not in taken)
            kp = self._key_packages.pop(added)
            group.leaves[added] = leaf
            group.signature_keys[added] = kp.signature_key
        if info.path_leaf is not None:
            group.signature_keys[committer] = info.path_leaf[1]
        group.epoch += 1
        self._issued.clear()
        transition = self._new_transition(self.protocol_version, holders | set(welcomes))
        tid = transition.transition_id
        out = [
            self._to(
                holders,
                self._binary(VoiceOpcode.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION, info.commit, tid),
            )
        ]
        for added, welcome in sorted(welcomes.items()):
            out.append(self._to([added], self._binary(VoiceOpcode.DAVE_MLS_WELCOME, welcome, tid)))
        # Whatever the commit did not settle is proposed again for the new epoch.
        for user_id in sorted(group.detached):
            out += self._issue_remove(user_id)
        for user_id in sorted(self._key_packages):
            out += self._issue_add(user_id)
        return out

    def _reset_group(self) -> None:
        self._group = _Group()
        self._issued.clear()
        self._key_packages.clear()

    def _restart_group(self) -> list[DaveDelivery]:
        # Pending members keep their key packages; a new group is proposed among them.
        pending = dict(self._key_packages)
        self._group = _Group()
        self._issued.clear()
        self._key_packages.clear()
        out: list[DaveDelivery] = []
        for user_id, kp in sorted(pending.items()):
            self._key_packages[user_id] = kp
            out += self._issue_add(user_id)
        return out

    def _sole_member_reset(self, user_id: int) -> list[DaveDelivery]:
        """Nobody keeps a group alone: the last member re-keys and waits for company."""
        self._reset_group()
        version = self.protocol_version
        return [
            self._to([user_id], DavePrepareEpoch(epoch=1, protocol_version=version)),
            self._to([user_id], DavePrepareTransition(transition_id=0, protocol_version=version)),
        ]


def _vector(data: bytes) -> bytes:
    return bytes(TlsWriter().vector(data))
