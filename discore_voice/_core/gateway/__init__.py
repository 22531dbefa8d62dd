"""The main gateway (v10), sans-IO: its protocol, close codes, limits, intents and voice payloads."""
