"""Every script in ``examples/`` runs, offline against the simulator, and shows that it worked.

Each runs in its own interpreter with ``-W error``, as a reader would run it, and the test checks
what it printed (audio heard, channels switched), not only its exit code.
"""

from __future__ import annotations

import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 120


def run(*args: str | Path) -> str:
    result = subprocess.run(
        [sys.executable, "-W", "error", *(str(arg) for arg in args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def number(pattern: str, output: str) -> int:
    """The integer that ``pattern``'s one group captures in ``output``."""
    match = re.search(pattern, output)
    assert match, f"{pattern!r} not in:\n{output}"
    return int(match.group(1))


def heard(output: str, who: str) -> int:
    return number(rf"{who}.* heard (\d+) frames", output)


def test_every_example_is_tested() -> None:
    tested = {
        "play_file.py",
        "soundboard.py",
        "bridge_worker.py",
        "test_my_bot.py",
        "record_call.py",
        "echo_bot.py",
    }
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


def test_play_file_plays_a_generated_tone() -> None:
    output = run(EXAMPLES / "play_file.py")
    played = number(r"played (\d+) frames", output)
    assert played == 50, output  # one second of 20 ms frames
    assert heard(output, "alice") >= played


def _tone(seconds: float) -> bytes:
    samples = (
        int(8192 * math.sin(2 * math.pi * 440 * i / 48_000)) for i in range(int(48_000 * seconds))
    )
    return b"".join(struct.pack("<hh", v, v) for v in samples)


def test_play_file_passes_ogg_opus_through(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    path = tmp_path / "tone.opus"
    pcm = _tone(0.6)
    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48_000, layout="stereo")
        for start in range(0, len(pcm), 3840):
            frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
            frame.planes[0].update(pcm[start : start + 3840])
            frame.sample_rate = 48_000
            frame.pts = start // 4
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    output = run(EXAMPLES / "play_file.py", path)
    assert "of tone.opus" in output, output
    played = number(r"played (\d+) frames", output)
    assert 30 <= played <= 32, output  # 0.6 s, plus the encoder's pre-skip
    assert heard(output, "alice") >= played


def test_play_file_decodes_a_wav_with_the_av_extra(tmp_path: Path) -> None:
    pytest.importorskip("av")
    import wave

    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(48_000)
        writer.writeframes(_tone(0.4))
    output = run(EXAMPLES / "play_file.py", path)
    assert "of tone.wav" in output, output
    assert heard(output, "alice") >= 20


def test_soundboard_switches_channels_and_mutes() -> None:
    output = run(EXAMPLES / "soundboard.py")
    lines = [line for line in output.splitlines() if line]
    assert lines[:4] == [
        "joined Lobby",
        "switched to Games",
        "muted: (self_mute, self_deaf) = (True, False)",
        "deafened: (self_mute, self_deaf) = (False, True)",
    ], output
    # Each channel's member heard the beep played while the bot was there: 0.4 s each.
    assert heard(output, r"alice \(Lobby\)") >= 20
    assert heard(output, r"bob \(Games\)") >= 20


def test_bridge_worker_runs_voice_in_a_second_process() -> None:
    output = run(EXAMPLES / "bridge_worker.py")
    assert "worker: connected through the bridge" in output, output
    assert "main: worker exited with code 0" in output, output
    played = number(r"worker: played (\d+) frames", output)
    assert played == 30, output
    assert heard(output, "main: alice") >= played
    # The worker's leave went back over the socket to the shard as op 4 with a null channel.
    assert "bot voice state after leaving: None" in output, output


def test_my_bot_example_passes_under_pytest() -> None:
    output = run("-m", "pytest", EXAMPLES / "test_my_bot.py", "-q", "-p", "no:cacheprovider")
    assert re.search(r"\b1 passed\b", output), output


def test_record_call_writes_one_aligned_file_per_member(tmp_path: Path) -> None:
    from discore_voice._audio.ogg import OggOpusReader

    output = run(EXAMPLES / "record_call.py", "--out", tmp_path)
    files = sorted(tmp_path.glob("*.ogg"))
    assert len(files) == 2, output
    lengths = []
    for path in files:
        reader = OggOpusReader(str(path))
        packets = reader.feed(path.read_bytes())
        reader.close()
        lengths.append(len(packets))
        # Each member said half a second: at least 25 frames that are not silence.
        assert sum(packet != b"\xf8\xff\xfe" for packet in packets) >= 25, output
    assert lengths[0] == lengths[1] >= 75  # both span the whole recording (~2 s), aligned
    assert output.count("is speaking") == 2


def test_echo_bot_says_back_what_it_heard() -> None:
    output = run(EXAMPLES / "echo_bot.py")
    echoed = number(r"echoed (\d+) frames", output)
    assert echoed >= 30, output  # 0.6 s of tone, and its silence tail
    assert heard(output, "alice") >= echoed
