"""The voice gateway (v8) and DAVE, sans-IO: payloads, framing, the state machines, the events."""
