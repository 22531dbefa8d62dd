"""The send pipeline end to end in one process: `./bootstrap demo` runs it until the demo lands."""

from __future__ import annotations

import pytest

from discore_voice._audio.opus import PCM_BLOCK_SIZE, OpusDecoder, OpusEncoder
from discore_voice._audio.signals import (
    channel,
    find_alignment,
    sine_pcm,
    zero_crossing_frequency,
)
from discore_voice._core.rtp import SAMPLES_PER_FRAME, next_sequence, next_timestamp
from discore_voice._core.transport import SUPPORTED_MODES, choose_mode, create_cipher

pytestmark = pytest.mark.smoke


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_pcm_survives_opus_rtp_and_transport_encryption(mode: str) -> None:
    key = bytes(range(32))
    sender = create_cipher(choose_mode(["aead_xchacha20_poly1305_rtpsize", mode]), key)
    receiver = create_cipher(sender.mode, key)
    source = sine_pcm(1.0, hz=440.0)
    received = bytearray()
    sequence, timestamp = 65_530, 2**32 - 3 * SAMPLES_PER_FRAME  # both wrap during the run
    with OpusEncoder(bitrate=128_000, fec=True) as encoder, OpusDecoder() as decoder:
        for offset in range(0, len(source), PCM_BLOCK_SIZE):
            packet = sender.encrypt_opus(
                sequence,
                timestamp,
                0xC0FFEE,
                encoder.encode(source[offset : offset + PCM_BLOCK_SIZE]),
            )
            decrypted = receiver.decrypt(packet)
            assert (decrypted.header.sequence, decrypted.header.timestamp) == (sequence, timestamp)
            received += decoder.decode(decrypted.payload)
            sequence, timestamp = next_sequence(sequence), next_timestamp(timestamp)
    assert sequence < 100 and timestamp < 100 * SAMPLES_PER_FRAME
    heard = channel(bytes(received))
    match = find_alignment(channel(source), heard)
    assert match.correlation >= 0.95, match
    assert abs(zero_crossing_frequency(heard[match.lag :]) - 440.0) < 5.0
