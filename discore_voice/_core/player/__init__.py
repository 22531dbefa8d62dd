"""The player's sans-IO parts: mixing arithmetic and what a track's end reports."""
