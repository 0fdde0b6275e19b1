"""facenet_tf: FaceNet face embeddings (Schroff et al., 2015) in TensorFlow 2 / Keras 3.

    import facenet_tf as fn

    embedder = fn.load_embedder("pretrained")     # or a SavedModel dir, a .keras or .tflite file
    detector = fn.FaceDetector()                  # MTCNN
    faces = fn.find_faces(detector, ["a.jpg"])[0] # every face: box, score, aligned crop
    vectors = embedder.embed_faces(faces.crops)   # float32 [faces, 512], unit length

    gallery = fn.open_gallery("people.gallery", embedder, create=True)
    gallery.enroll_photos(embedder, detector, fn.people_in_folder("known/"))
    gallery.identify(vectors)                     # who is each face? (or unknown)
    fn.identify_photos(gallery, embedder, detector, ["b.jpg"])  # every face of photos

A gallery decides by its Calibration (rule, threshold, confidence fit) and searches exactly
or, when large, through a FAISS FaceIndex; a gallery of another model is a GalleryError.

The names below are the public API; each is imported from its module on first use, so
`import facenet_tf` stays light. The Keras pieces (triplet losses, triplet selection, P x K
batches, distances) work for any embedding model, not only faces. Commands are the modules
`python -m facenet_tf.<command>`; CONTRIBUTING.md has the map of the library.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it (one home per name).
_EXPORTS = {
    # Models: load one to embed with, or build a network to train.
    "load_embedder": "facenet_tf.inference.embedders",
    "network_embedder": "facenet_tf.inference.embedders",
    "Embedder": "facenet_tf.inference.embedders",
    "build_model": "facenet_tf.models",
    "ARCHITECTURES": "facenet_tf.models",
    # Faces in photos.
    "FaceDetector": "facenet_tf.detection.detector",
    "FaceDetections": "facenet_tf.detection.detector",
    "main_face": "facenet_tf.detection.detector",
    "AlignConfig": "facenet_tf.detection.align",
    "find_faces": "facenet_tf.detection.faces",
    "PhotoFaces": "facenet_tf.detection.faces",
    # Uses of the embedding.
    "verify": "facenet_tf.recognition.workflows",
    "open_gallery": "facenet_tf.recognition.gallery",
    "Gallery": "facenet_tf.recognition.gallery",
    "people_in_folder": "facenet_tf.recognition.gallery",
    "identify_photos": "facenet_tf.recognition.gallery",
    "GalleryError": "facenet_tf.recognition.gallery",
    "Calibration": "facenet_tf.recognition.calibration",
    "FaceIndex": "facenet_tf.recognition.index",
    "agglomerative_clusters": "facenet_tf.evaluation.clustering",
    "evaluate_pairs_file": "facenet_tf.evaluation.protocols",
    "evaluate_pairs": "facenet_tf.evaluation.verification",
    # Metric learning, for any embedding model.
    "squared_l2": "facenet_tf.triplets.distances",
    "squared_l2_matrix": "facenet_tf.triplets.distances",
    "select_triplets": "facenet_tf.triplets.mining",
    "triplet_loss": "facenet_tf.triplets.losses",
    "OnlineTripletLoss": "facenet_tf.triplets.losses",
    "OfflineTripletLoss": "facenet_tf.triplets.losses",
    "triplet_metrics": "facenet_tf.triplets.losses",
    "pk_batches": "facenet_tf.data.readers",
    "pk_batches_from_arrays": "facenet_tf.data.readers",
    "PreprocessConfig": "facenet_tf.data.preprocess",
    # Training and export.
    "TrainConfig": "facenet_tf.training.config",
    "train": "facenet_tf.training.loop",
    "export_saved_model": "facenet_tf.serving.saved_model",
    "export_tflite": "facenet_tf.serving.tflite",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'facenet_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
