"""The voice gateway's DAVE layer: a :class:`DaveServer` per channel, wired to sockets and members.

:class:`DaveServer` is sans-IO and clock-free; this is the :class:`DaveHook` that gives it I/O
and time. Bots reach it over their websocket (numbered JSON and binary frames, buffered so that a
resume re-delivers them like any other message); simulated members reach it in process, each
with its own :class:`DaveClient` (``_dave_members``), through exactly the same deliveries.

Everything a delivery causes is queued and run in order (:meth:`DaveGateway._run`): a member
answers a delivery synchronously, and its answer (a key package, a commit) must not be handled
in the middle of the delivery list that provoked it, or recipients would see messages out of
order.

Documented choices:

- **Modes.** ``"required"``: an Identify offering less than DAVE 1 is closed with 4017 at once
  (the voice server does that check). ``"optional"``: such a client is let in, and the call
  goes transport-only while it is there. The DAVE whitepaper describes exactly this for mixed
  calls: a participant without the protocol joining makes the gateway downgrade the call (op 21
  to version 0), and when the last such participant leaves it upgrades again (op 24 epoch 1, a
  new group). A client that joins a transport-only call gets ``dave_protocol_version=0`` in
  Session Description, and op 25 all the same, so it can take part in the upgrade.
- **Timeout.** A transition (ops 29/30 then 22, or an op 21 downgrade) waits
  ``transition_timeout`` seconds (trio's clock) for every op 23, then executes without the
  stragglers, as Discord must for a member whose client stalls.
- **Upgrades execute together.** After an upgrade (op 24 epoch 1), members whose key packages
  arrive first form a group among themselves, and :class:`DaveServer` would execute that
  group's transition at once. They would then switch to end-to-end encryption while the others
  still (rightly) send plaintext they have no passthrough window for, because davey opens one
  only for members already in the group. So op 22 is held until every DAVE participant in the
  channel holds the new group (or ``transition_timeout`` runs out): the whitepaper's upgrade is
  one transition of the whole call.
- **Faults** (:meth:`DaveGateway.corrupt_next`, :meth:`DaveGateway.drop_next_execute`, and
  the member switches ``never_commits``/``never_ready``) alter what is relayed, never the
  server's own view: a corrupted commit is broadcast as if it were fine, and the recipient must
  notice (op 31) and recover.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

import trio

from ..._core.voice.dave import DaveOutput
from ..._core.voice.frames import ClientBinaryMessage, ServerBinaryMessage
from ..._core.voice.opcodes import VoiceOpcode
from ..._core.voice.payloads import (
    ClientMessage,
    DaveExecuteTransition,
    DaveMlsInvalidCommitWelcome,
    DavePrepareTransition,
    DaveTransitionReady,
)
from ..._errors import ProtocolError, UsageError
from .._media import MediaEndpoint
from .._members import SimMember
from .._voice.connection import VoiceGatewaySession
from .members import SimDaveMember
from .server import (
    DAVE_PROTOCOL_VERSION,
    DaveDelivery,
    DaveServer,
    RejectedCommit,
    ServerDaveMessage,
)

if TYPE_CHECKING:
    from .._voice.gateway import VoiceServer

__all__ = ["DEFAULT_TRANSITION_TIMEOUT", "DaveChannel", "DaveGateway", "DaveMode"]

logger = logging.getLogger("discore_voice.testing.dave")

DaveMode: TypeAlias = Literal["off", "optional", "required"]
#: Seconds a transition waits for op 23 from everyone before executing anyway.
DEFAULT_TRANSITION_TIMEOUT = 10.0

_Participant: TypeAlias = VoiceGatewaySession | SimMember
_Room: TypeAlias = tuple[int, int]
_FaultKind: TypeAlias = Literal["commit", "welcome", "execute"]


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: _FaultKind
    user_id: int | None


@dataclass(eq=False)
class DaveChannel:
    """One channel's DAVE state: the external sender, who takes part, and transition timers."""

    room: _Room
    server: DaveServer
    #: Users the DaveServer knows (connected), with how to reach them.
    participants: dict[int, _Participant] = field(default_factory=dict)
    #: Sessions in the channel that offered no DAVE (optional mode): the call stays at 0.
    legacy: set[int] = field(default_factory=set)
    timers: dict[int, trio.CancelScope] = field(default_factory=dict)
    #: Op 28s the server refused, as ``(user_id, reason, stale)``.
    rejected: list[tuple[int, str, bool]] = field(default_factory=list)
    #: Op 31s received, as ``(user_id, transition_id)``.
    invalid_reports: list[tuple[int, int]] = field(default_factory=list)
    #: Transition ids executed because the timeout ran out.
    expired: list[int] = field(default_factory=list)
    #: Between an upgrade and the moment everyone holds the new group: op 22s are held.
    upgrading: bool = False
    #: A scripted downgrade: the call stays transport-only until a scripted upgrade.
    forced_zero: bool = False
    held: list[DaveDelivery] = field(default_factory=list)
    hold_timer: trio.CancelScope | None = None

    @property
    def protocol_version(self) -> int:
        return self.server.protocol_version

    @property
    def epoch(self) -> int:
        return self.server.epoch


class DaveGateway:
    """The :class:`DaveHook` a voice server in a DAVE mode installs; see the module docstring."""

    def __init__(
        self,
        voice: VoiceServer,
        mode: DaveMode,
        *,
        transition_timeout: float = DEFAULT_TRANSITION_TIMEOUT,
    ) -> None:
        if mode not in ("optional", "required"):
            raise UsageError(f"a DAVE gateway is 'optional' or 'required', not {mode!r}")
        if transition_timeout <= 0:
            raise UsageError("the transition timeout must be positive")
        self._voice = voice
        self.mode: DaveMode = mode
        self.transition_timeout = transition_timeout
        self.channels: dict[_Room, DaveChannel] = {}
        self.faults: list[_Fault] = []
        #: Unexpected failures inside the layer (a simulator bug), for tests to assert empty.
        self.errors: list[str] = []
        self._queue: deque[Callable[[], None]] = deque()
        self._running = False

    # -- lookups ---------------------------------------------------------------------------------

    def channel(self, channel_id: int) -> DaveChannel:
        """The DAVE state of a voice channel someone has joined."""
        for room, state in self.channels.items():
            if room[1] == channel_id:
                return state
        raise UsageError(f"no DAVE state for channel {channel_id}: nobody has joined it")

    def _room(self, room: _Room) -> DaveChannel:
        state = self.channels.get(room)
        if state is None:
            state = self.channels[room] = DaveChannel(room, DaveServer(room[1]))
        return state

    # -- the hook ----------------------------------------------------------------------------------

    def participant_joined(self, endpoint: MediaEndpoint) -> None:
        owner = endpoint.owner
        state = self._room(endpoint.room)
        self._roster_add(state, endpoint.user_id, endpoint)
        if isinstance(owner, SimMember):
            self._run(lambda: self._member_joined(state, owner))
        elif isinstance(owner, VoiceGatewaySession):
            if owner.max_dave_protocol_version >= DAVE_PROTOCOL_VERSION:
                owner.dave_protocol_version = state.protocol_version
            else:
                owner.dave_protocol_version = 0
                state.legacy.add(owner.user_id)
                self._run(lambda: self._deliver(state, state.server.downgrade()))

    def session_started(self, session: VoiceGatewaySession) -> None:
        if session.max_dave_protocol_version < DAVE_PROTOCOL_VERSION:
            return
        state = self._room(session.endpoint.room)

        def start() -> None:
            state.participants[session.user_id] = session
            self._deliver(state, state.server.connect(session.user_id))

        self._run(start)

    def client_binary(self, session: VoiceGatewaySession, message: ClientBinaryMessage) -> None:
        state = self.channels.get(session.endpoint.room)
        if state is None or state.participants.get(session.user_id) is not session:
            logger.info("DAVE op %d from a session outside DAVE; ignored", int(message.op))
            return
        self._run(lambda: self._binary_from(state, session.user_id, message))

    def client_message(self, session: VoiceGatewaySession, message: ClientMessage) -> None:
        state = self.channels.get(session.endpoint.room)
        if state is None or state.participants.get(session.user_id) is not session:
            logger.info("DAVE op %d from a session outside DAVE; ignored", int(message.OPCODE))
            return
        self._run(lambda: self._json_from(state, session.user_id, message))

    def participant_left(self, endpoint: MediaEndpoint) -> None:
        state = self.channels.get(endpoint.room)
        if state is None:
            return
        user_id, owner = endpoint.user_id, endpoint.owner
        for other in state.participants.values():
            if isinstance(other, SimMember) and other.dave is not None and other is not owner:
                other.dave.client.client_disconnected(user_id)

        def leave() -> None:
            if user_id in state.legacy and isinstance(owner, VoiceGatewaySession):
                state.legacy.discard(user_id)
            if state.participants.get(user_id) is owner:
                del state.participants[user_id]
                self._deliver(state, state.server.disconnect(user_id))
            self._maybe_upgrade(state)

        self._run(leave)

    # -- scripted changes and faults -------------------------------------------------------------

    def downgrade(self, channel_id: int) -> None:
        """Move the call to transport-only encryption (op 21 to version 0, then op 22)."""
        state = self.channel(channel_id)
        state.forced_zero = True
        self._run(lambda: self._deliver(state, state.server.downgrade()))

    def upgrade(self, channel_id: int) -> None:
        """Bring DAVE back (op 25, op 24 epoch 1): everyone re-keys into a new group."""
        state = self.channel(channel_id)
        state.forced_zero = False
        self._run(lambda: self._upgrade(state))

    def corrupt_next(self, kind: Literal["commit", "welcome"], user_id: int | None = None) -> None:
        """Flip a byte in the next op 29 (``"commit"``) or op 30 (``"welcome"``) relayed to
        ``user_id`` (anyone if None), which must then flag it with op 31 and re-join."""
        self.faults.append(_Fault(kind, user_id))

    def drop_next_execute(self, user_id: int | None = None) -> None:
        """Lose the next op 22 meant for ``user_id`` (anyone if None)."""
        self.faults.append(_Fault("execute", user_id))

    # -- handling, always through the queue ------------------------------------------------------

    def _run(self, action: Callable[[], None]) -> None:
        self._queue.append(action)
        if self._running:
            return
        self._running = True
        try:
            while self._queue:
                step = self._queue.popleft()
                try:
                    step()
                except Exception as exc:
                    # A simulator bug must not take the voice connection down with it.
                    logger.exception("the DAVE layer failed; carrying on")
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            for state in self.channels.values():
                self._settle_timers(state)
        finally:
            self._running = False
        self._voice.changed()

    def _maybe_upgrade(self, state: DaveChannel) -> None:
        # Optional mode: the last client without DAVE is gone (and any downgrade it caused
        # has executed), so the call goes end-to-end again.
        if (
            state.protocol_version == 0
            and not state.legacy
            and not state.forced_zero
            and not state.server.pending_transitions
        ):
            self._upgrade(state)

    def _upgrade(self, state: DaveChannel) -> None:
        deliveries = state.server.upgrade()
        if not deliveries:
            return
        state.upgrading = True
        nursery = self._voice.nursery
        if nursery is not None and state.hold_timer is None:
            state.hold_timer = trio.CancelScope()
            nursery.start_soon(self._release_later, state, state.hold_timer)
        self._deliver(state, deliveries)

    async def _release_later(self, state: DaveChannel, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(self.transition_timeout)
            if state.upgrading:
                logger.info("DAVE upgrade timed out; executing without stragglers")
                self._run(lambda: self._release(state))

    def _release(self, state: DaveChannel) -> None:
        state.upgrading = False
        if state.hold_timer is not None:
            state.hold_timer.cancel()
            state.hold_timer = None
        held, state.held = state.held, []
        self._deliver(state, held)

    def _member_joined(self, state: DaveChannel, member: SimMember) -> None:
        dave = SimDaveMember(member.user_id, member.channel_id)
        dave.client.clients_connected(uid for uid in self._peers(member.endpoint))
        member.dave = dave
        member.frame_encryptor = dave.encrypt
        member.frame_decryptor = dave.decrypt
        member.dave_handler = lambda message: self._run(
            lambda: self._member_outputs(state, member, dave.handle(message))
        )
        dave.start(state.protocol_version)
        state.participants[member.user_id] = member
        self._deliver(state, state.server.connect(member.user_id))

    def _member_outputs(
        self, state: DaveChannel, member: SimMember, outputs: list[DaveOutput]
    ) -> None:
        if state.participants.get(member.user_id) is not member:
            return  # it left while the delivery was queued
        for output in outputs:
            if isinstance(output, ClientBinaryMessage):
                self._binary_from(state, member.user_id, output)
            elif isinstance(output, DaveTransitionReady | DaveMlsInvalidCommitWelcome):
                self._json_from(state, member.user_id, output)

    def _binary_from(self, state: DaveChannel, user_id: int, message: ClientBinaryMessage) -> None:
        server = state.server
        try:
            if message.op is VoiceOpcode.DAVE_MLS_KEY_PACKAGE:
                deliveries = server.key_package(user_id, message.payload)
            else:
                deliveries = server.commit_welcome(user_id, message.payload)
        except RejectedCommit as rejected:
            state.rejected.append((user_id, str(rejected), rejected.stale))
            log = logger.debug if rejected.stale else logger.info
            log("DAVE commit from user %d not broadcast: %s", user_id, rejected)
            return
        except ProtocolError as exc:
            logger.info("DAVE op %d from user %d refused: %s", int(message.op), user_id, exc)
            return
        self._deliver(state, deliveries)

    def _json_from(self, state: DaveChannel, user_id: int, message: ClientMessage) -> None:
        if isinstance(message, DaveTransitionReady):
            self._deliver(state, state.server.transition_ready(user_id, message.transition_id))
        elif isinstance(message, DaveMlsInvalidCommitWelcome):
            state.invalid_reports.append((user_id, message.transition_id))
            logger.info("user %d could not process transition %d", user_id, message.transition_id)
            deliveries = state.server.invalid_commit_welcome(user_id, message.transition_id)
            self._deliver(state, deliveries)

    # -- delivering ------------------------------------------------------------------------------

    def _deliver(self, state: DaveChannel, deliveries: list[DaveDelivery]) -> None:
        for delivery in deliveries:
            if state.upgrading and isinstance(delivery.message, DaveExecuteTransition):
                state.held.append(delivery)
                continue
            for user_id in delivery.to:
                participant = state.participants.get(user_id)
                if participant is None:
                    continue
                message = self._faulted(user_id, delivery.message)
                if message is None:
                    continue
                if isinstance(message, ServerBinaryMessage):
                    participant.notify_binary(message)
                else:
                    participant.notify(message)
            self._arm_timer(state, delivery)
        self._sync_versions(state)
        if any(isinstance(d.message, DaveExecuteTransition) for d in deliveries):
            self._maybe_upgrade(state)
        if state.upgrading and state.participants.keys() <= state.server.members.keys():
            self._release(state)

    def _faulted(self, user_id: int, message: ServerDaveMessage) -> ServerDaveMessage | None:
        kind: _FaultKind | None = None
        if isinstance(message, ServerBinaryMessage):
            if message.op is VoiceOpcode.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION:
                kind = "commit"
            elif message.op is VoiceOpcode.DAVE_MLS_WELCOME:
                kind = "welcome"
        elif isinstance(message, DaveExecuteTransition):
            kind = "execute"
        if kind is None:
            return message
        for fault in self.faults:
            if fault.kind != kind or fault.user_id not in (None, user_id):
                continue
            self.faults.remove(fault)  # each fault fires once; we return at once
            if kind == "execute":
                logger.info("fault: op 22 to user %d lost", user_id)
                return None
            assert isinstance(message, ServerBinaryMessage)
            logger.info("fault: op %d to user %d corrupted", int(message.op), user_id)
            payload = bytearray(message.payload)
            payload[-1] ^= 0xFF
            payload[len(payload) // 2] ^= 0xFF
            return ServerBinaryMessage(message.op, bytes(payload), message.transition_id)
        return message

    def _arm_timer(self, state: DaveChannel, delivery: DaveDelivery) -> None:
        message = delivery.message
        tid: int | None = None
        if isinstance(message, ServerBinaryMessage | DavePrepareTransition):
            tid = message.transition_id
        if not tid or tid in state.timers or tid not in state.server.pending_transitions:
            return
        nursery = self._voice.nursery
        if nursery is None:
            return  # not serving: nothing can wait, and nothing is waited for
        scope = state.timers[tid] = trio.CancelScope()
        nursery.start_soon(self._expire_later, state, tid, scope)

    async def _expire_later(self, state: DaveChannel, tid: int, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(self.transition_timeout)
            state.timers.pop(tid, None)
            if tid in state.server.pending_transitions:
                state.expired.append(tid)
                logger.info("DAVE transition %d timed out; executing without stragglers", tid)
                self._run(lambda: self._deliver(state, state.server.expire_transition(tid)))

    def _settle_timers(self, state: DaveChannel) -> None:
        pending = state.server.pending_transitions
        for tid in [t for t in state.timers if t not in pending]:
            state.timers.pop(tid).cancel()

    def _sync_versions(self, state: DaveChannel) -> None:
        # Session Description (and its re-send after a resume) says the call's version now.
        for participant in state.participants.values():
            if isinstance(participant, VoiceGatewaySession):
                participant.dave_protocol_version = state.protocol_version

    # -- rosters ---------------------------------------------------------------------------------

    def _peers(self, endpoint: MediaEndpoint | None) -> list[int]:
        if endpoint is None:
            return []
        return [peer.user_id for peer in self._voice.media.peers(endpoint)]

    def _roster_add(self, state: DaveChannel, user_id: int, endpoint: MediaEndpoint) -> None:
        # What Clients Connect tells a bot, a member's client learns here: Adds for anyone
        # else would be refused as unexpected users.
        for other in state.participants.values():
            if (
                isinstance(other, SimMember)
                and other.dave is not None
                and other.endpoint is not endpoint
            ):
                other.dave.client.clients_connected([user_id])
