"""`discore-voice demo`, the quick start's first command, run the way a newcomer runs it."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import pytest

from discore_voice._cli.demo import _HeardReport, _MemberReport, _Report

pytestmark = pytest.mark.smoke


def test_demo_plays_through_dave_and_every_member_matches(tmp_path: Path) -> None:
    target = tmp_path / "heard.wav"
    result = subprocess.run(
        [sys.executable, "-m", "discore_voice", "demo", "--seconds", "1", "--wav", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DAVE             protocol v1" in result.stdout
    assert result.stdout.count("matches the source") == 2
    # And the other way: the bot heard each member, through DAVE, saying what it said.
    assert "matches what alice said" in result.stdout
    assert "matches what bob said" in result.stdout
    assert "result           OK" in result.stdout
    with wave.open(str(target)) as heard:
        assert (heard.getframerate(), heard.getnchannels(), heard.getsampwidth()) == (48_000, 2, 2)
        assert heard.getnframes() >= 48_000 * 0.9


def _member(**changes: object) -> _MemberReport:
    fields: dict[str, object] = dict(
        name="alice",
        frames_heard=50,
        frames_decrypted=50,
        decrypt_failures=0,
        gap_p50_ms=20.0,
        gap_p99_ms=21.0,
        correlation=0.99,
        epoch=2,
        privacy_code="1" * 30,
    )
    fields.update(changes)
    return _MemberReport(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("member", "ok"),
    [
        (_member(), True),
        (_member(correlation=0.5), False),
        (_member(frames_decrypted=10), False),
        (_member(privacy_code="2" * 30), False),
        (_member(epoch=3), False),
    ],
)
def test_the_report_fails_on_any_mismatch(member: _MemberReport, ok: bool) -> None:
    heard = [_HeardReport("alice", 50, 0, 0.99)]
    report = _Report(
        4.0, "aead_aes256_gcm_rtpsize", 1, 2, "1" * 30, 50, [member], heard, Path("x.wav")
    )
    assert report.ok is ok
    assert report.render().endswith("OK" if ok else "FAILED")


def test_the_report_fails_when_the_bot_misheard() -> None:
    heard = [_HeardReport("alice", 50, 0, 0.99), _HeardReport("bob", 50, 3, 0.4)]
    report = _Report(
        4.0, "aead_aes256_gcm_rtpsize", 1, 2, "1" * 30, 50, [_member()], heard, Path("x.wav")
    )
    assert not report.ok
    assert "DOES NOT MATCH what bob said" in report.render()


def test_demo_rejects_a_silly_length() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "discore_voice", "demo", "--seconds", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "discore-voice demo: error: --seconds must be between 0.5 and 60"
    )
