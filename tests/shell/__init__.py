"""Tests of the trio shell against the local Discord simulator (real sockets on loopback)."""
