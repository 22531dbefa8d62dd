"""The receive path: the receiver the user holds, its tick task, and its bounded streams."""
