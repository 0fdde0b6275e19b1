"""facenet_tf: FaceNet face embeddings in TensorFlow 2 / Keras 3.

Triplet selection exactly as the paper defines it (facenet_tf.triplets.mining), offline triplet
generation as an Apache Beam job (beam_jobs.mine_triplets), a MirroredStrategy Keras trainer
(facenet_tf.train) and SavedModel serving (facenet_tf.serving). The folders follow the data
flow; CONTRIBUTING.md has the map.
"""

__version__ = "0.1.0"
