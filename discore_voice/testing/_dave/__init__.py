"""The simulator's DAVE: the voice gateway's MLS external sender, its wire codec, and DAVE-capable
members."""
