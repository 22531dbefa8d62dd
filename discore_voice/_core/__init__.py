"""The sans-IO protocol core.

Bytes and events in, bytes and events out: nothing in this package performs I/O, reads a clock or
imports trio. The trio shell and the local Discord simulator are both built on it, which keeps the
two honest with each other, and lets hypothesis test every codec in isolation.
"""
