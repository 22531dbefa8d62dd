"""Interop tests: independent clients (discord.py) against the local Discord simulator."""
