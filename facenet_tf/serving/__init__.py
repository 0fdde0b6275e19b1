"""Serving: SavedModel and TFLite export, and loading a model to embed with."""
