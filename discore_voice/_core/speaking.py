"""Speaking flags and the Opus silence frame: the two constants every sender needs."""

from __future__ import annotations

import enum

__all__ = ["OPUS_SILENCE_FRAME", "SILENCE_FRAMES_AFTER_AUDIO", "SpeakingFlags"]


class SpeakingFlags(enum.IntFlag):
    """Voice gateway op 5 flags; Discord ignores audio from an SSRC that is not speaking."""

    NONE = 0
    MICROPHONE = 1 << 0
    SOUNDSHARE = 1 << 1
    PRIORITY = 1 << 2


#: Three bytes Discord's clients recognise as Opus silence; it passes through DAVE unencrypted.
OPUS_SILENCE_FRAME = b"\xf8\xff\xfe"

#: Sent when audio stops, so receivers do not interpolate the last frame into a drone.
SILENCE_FRAMES_AFTER_AUDIO = 5
