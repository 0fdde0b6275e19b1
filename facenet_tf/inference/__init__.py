"""Embedding with a saved model: loading a SavedModel, .keras or .tflite file as an
Embedder, and embedding image files, encoded images, face crops and the faces of photos in
batches."""
