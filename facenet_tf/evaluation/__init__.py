"""Evaluation: verification (LFW protocol, VAL@FAR), retrieval, clustering, plots, embedding."""
