"""The main gateway (v10), sans-IO: protocol, close codes, limits, intents, voice payloads."""
