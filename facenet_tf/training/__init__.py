"""The trainer's library: config, distribution strategy, triplet input, callbacks, generation loop."""
