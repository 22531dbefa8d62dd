"""The send path: the PCM producer, the stepper the send clock drives, and the send task."""
