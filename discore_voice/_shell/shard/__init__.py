"""A bot's main gateway shard: its task, its dispatch fan-out and its voice state queue."""
