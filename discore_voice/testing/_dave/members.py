"""A simulated member's side of DAVE: its own :class:`DaveClient`, and its frame hooks.

A member is a DAVE client like the bot, built on the same state machine the library uses, so
that what the bot encrypts is checked by an independent group member rather than by the
simulator's server (which, as on Discord, never holds group secrets). The client is fed by the
gateway's DAVE layer (``_dave_gateway``) through the same deliveries a bot's websocket gets.

The misbehaviour switches (``never_commits``, ``never_ready``) exist so a test can make one
member stall a transition or leave proposals uncommitted and watch the others cope.
"""

from __future__ import annotations

import logging

from ..._core.speaking import OPUS_SILENCE_FRAME
from ..._core.voice.dave import (
    DaveClient,
    DaveOutput,
    DaveRecovering,
    DaveStateChanged,
)
from ..._core.voice.frames import ClientBinaryMessage, ServerBinaryMessage
from ..._core.voice.opcodes import VoiceOpcode
from ..._core.voice.payloads import DaveTransitionReady, ServerMessage
from ..._errors import DaveError, DecryptionFailed, ProtocolError

__all__ = ["SimDaveMember"]

logger = logging.getLogger("discore_voice.testing.dave")


class SimDaveMember:
    """One member's MLS client, plus the counters a test reads."""

    def __init__(self, user_id: int, channel_id: int) -> None:
        self.client = DaveClient(user_id, channel_id)
        #: Drop every commit this member would send (op 28): others must commit instead.
        self.never_commits = False
        #: Never acknowledge a transition (op 23): the gateway's timeout must execute it.
        self.never_ready = False
        #: Frames that arrived DAVE-encrypted and opened (plaintext passthrough not counted).
        self.frames_decrypted = 0
        self.changes: list[DaveStateChanged] = []
        self.recoveries: list[DaveRecovering] = []
        #: What the member's client sent back, before the switches above filtered it.
        self.outputs: list[DaveOutput] = []
        #: Server messages its client refused outright (logged, as a real client would).
        self.errors: list[str] = []

    def start(self, protocol_version: int) -> None:
        self.client.start(protocol_version)

    def handle(self, message: ServerMessage | ServerBinaryMessage) -> list[DaveOutput]:
        """Feed one delivery; returns what the member sends back to the gateway."""
        try:
            outputs = self.client.handle(message)
        except (ProtocolError, DaveError) as exc:
            logger.info("a simulated member refused a DAVE message: %s", exc)
            self.errors.append(str(exc))
            return []
        self.outputs.extend(outputs)
        sent: list[DaveOutput] = []
        for output in outputs:
            if isinstance(output, DaveStateChanged):
                self.changes.append(output)
            elif isinstance(output, DaveRecovering):
                self.recoveries.append(output)
            elif (
                isinstance(output, ClientBinaryMessage)
                and output.op is VoiceOpcode.DAVE_MLS_COMMIT_WELCOME
                and self.never_commits
            ) or (isinstance(output, DaveTransitionReady) and self.never_ready):
                continue
            else:
                sent.append(output)
        return sent

    # -- frame hooks (``SimMember.frame_encryptor`` / ``frame_decryptor``) ---------------------

    def encrypt(self, user_id: int, frame: bytes) -> bytes:
        return self.client.encrypt_opus(frame)

    def decrypt(self, user_id: int, frame: bytes) -> bytes:
        opened = self.client.decrypt_opus(user_id, frame)
        if opened is None:
            raise DecryptionFailed(f"a simulated member could not open a frame of user {user_id}")
        if opened != frame and frame != OPUS_SILENCE_FRAME:
            self.frames_decrypted += 1
        return opened
