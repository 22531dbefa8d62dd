"""Tests against servers that break the protocol (issue #12)."""
