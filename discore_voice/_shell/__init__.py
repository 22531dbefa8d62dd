"""The trio shell: tasks, sockets and clocks around the sans-IO core.

Each module holds one concern (the shard, its event fan-out, the websocket plumbing, the
gateway-voice bridges). Nothing here is imported by the core.
"""
