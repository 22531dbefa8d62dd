"""Tests of the local Discord simulator, discore_voice.testing."""
