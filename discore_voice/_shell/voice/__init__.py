"""A voice connection's trio shell: one session task, and one task per concern around it."""
