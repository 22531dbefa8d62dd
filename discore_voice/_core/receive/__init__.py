"""Receiving voice, sans-IO: what happens to each datagram a voice server forwards."""
