"""The simulator's voice gateway: the servers, one client connection, and who may join."""
