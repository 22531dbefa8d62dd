"""A connection's player: tracks, their mixer stage and the queue."""
