"""Metric learning with triplets, for any embedding model: squared L2 distances, triplet
selection (one implementation for the online loss and the Beam miner) and the Keras losses."""
