"""An indexed photo collection (the output of beam_jobs.index_faces): its search index, and
searching it for the photos where a person appears (the command is facenet_tf.search).

A search embeds the main face of the query photo with the collection's model, asks the index
for the nearest faces (squared L2), keeps each photo's nearest face and ranks the photos by it.
"""

import dataclasses
import os

import numpy as np
import pyarrow as pa
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.data import face_tables as tables
from facenet_tf.detection.align import AlignConfig
from facenet_tf.detection.faces import find_faces
from facenet_tf.evaluation.visualize import annotate_photo
from facenet_tf.recognition.index import FaceIndex

SEARCH_INDEX_FILE = "search.faiss"
# A search first asks the index for this many faces per photo wanted, then for twice as many
# while photos with several near faces leave it short.
_FACES_PER_PHOTO = 2


class NoFaceError(ValueError):
    """A query photo in which no face was found (or that could not be read)."""


def build_search_index(data_dir: str, face_shards: list) -> dict:
    """Builds the search index over the embeddings of the face shards (names in data_dir), in
    shard order, with the gallery's FaceIndex (facenet_tf.recognition.index: exact up to
    index.EXACT_UP_TO faces, HNSW above), writes it to data_dir when it has a file, and returns
    its manifest entry."""
    index = FaceIndex.build(_embeddings(data_dir, face_shards))
    data = index.to_bytes()
    if data:
        io_utils.write_bytes_atomic(os.path.join(data_dir, SEARCH_INDEX_FILE), data)
    return {"kind": index.kind, "engine": "facenet_tf.recognition.index.FaceIndex",
            "metric": "squared_l2", "file": SEARCH_INDEX_FILE if data else None,
            "num_vectors": len(index)}


def _embeddings(data_dir: str, face_shards: list) -> np.ndarray:
    """float32 [faces, D]: the embedding column of the face shards, in shard order."""
    columns = [tables.read_table(os.path.join(data_dir, name), ["embedding"]).column(0)
               for name in face_shards]
    return np.concatenate([tables.fixed_list_array(c) for c in columns])


def _read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


@dataclasses.dataclass
class Collection:
    """An opened index: its directory and manifest, the face rows in index order (photo, face,
    box, score, is_main; no embeddings), the search index and each face's photo."""
    directory: str
    manifest: dict
    faces: pa.Table
    index: object
    photos: list

    @property
    def data_dir(self) -> str:
        return os.path.join(self.directory, self.manifest["data_dir"])

    @property
    def align(self) -> AlignConfig:
        return AlignConfig(**self.manifest["align"])

    def photo_path(self, photo: str) -> str:
        return os.path.join(self.manifest["source"], photo)


def open_collection(directory: str) -> Collection:
    """Opens a finished index_faces output directory (FileNotFoundError if it is not one)."""
    manifest = io_utils.read_manifest(directory)
    if manifest.get("format") != tables.INDEX_FORMAT:
        raise ValueError(f"{directory}: not a face index (format {manifest.get('format')!r}); "
                         "make one with beam_jobs.index_faces")
    data_dir = os.path.join(directory, manifest["data_dir"])
    shards = manifest["shards"][tables.FACES]
    faces = pa.concat_tables([
        tables.read_table(os.path.join(data_dir, name), tables.FACE_METADATA_COLUMNS)
        for name in shards])
    entry = manifest["search_index"]
    data = _read_bytes(os.path.join(data_dir, entry["file"])) if entry["file"] else b""
    try:
        index = FaceIndex.from_bytes(entry["kind"], data, _embeddings(data_dir, shards))
    except ValueError as e:
        raise ValueError(f"{data_dir}: search index {entry['file']}: {e}") from None
    return Collection(directory, manifest, faces, index, faces.column("photo").to_pylist())


def check_model(collection: Collection, embedder) -> None:
    """Raises ValueError unless `embedder` is the model the collection was indexed with."""
    if embedder.fingerprint != collection.manifest["model_fingerprint"]:
        raise ValueError(f"model {embedder.source}: fingerprint {embedder.fingerprint}, but "
                         f"{collection.directory} was indexed with "
                         f"{collection.manifest['model_fingerprint']} "
                         f"({collection.manifest['model']})")


def nearest_photos(collection: Collection, query, top_k: int = 50,
                   threshold: float | None = None) -> list:
    """The photos nearest to one query embedding, ranked by the squared L2 distance of their
    nearest face (ties: index order), at most top_k, only those within `threshold` if given:
    [{"rank", "photo", "face", "box", "score", "distance"}]."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k!r}")
    total = len(collection.index)
    query = np.reshape(np.asarray(query, np.float32), (1, -1))
    wanted = min(total, top_k * _FACES_PER_PHOTO)
    while True:
        distances, rows = collection.index.search(query, wanted)
        best = {}
        for distance, row in zip(distances[0], rows[0]):
            if row < 0 or (threshold is not None and distance > threshold):
                break
            best.setdefault(collection.photos[row], (float(distance), int(row)))
        within = wanted == 0 or threshold is None or distances[0][-1] <= threshold
        if len(best) >= top_k or wanted >= total or not within:
            break
        wanted = min(total, wanted * 2)
    results = []
    for rank, (photo, (distance, row)) in enumerate(list(best.items())[:top_k], start=1):
        face = collection.faces.slice(row, 1).to_pylist()[0]
        results.append({"rank": rank, "photo": photo, "face": face["face"],
                        "box": [round(float(v), 1) for v in face["box"]],
                        "score": round(float(face["score"]), 4),
                        "distance": round(distance, 4)})
    return results


def query_embedding(collection: Collection, embedder, detector, photo: str) -> tuple:
    """(embedding of the query photo's main face, its detections summary). NoFaceError if the
    photo has no face or cannot be read."""
    [faces] = find_faces(detector, [photo], collection.align, keep="main")
    if faces.error or not faces.kept:
        raise NoFaceError(f"{photo}: {faces.error or 'no face found'}")
    embedding = embedder.embed_faces(faces.crops)[0]
    return embedding, {"box": [round(float(v), 1) for v in faces.boxes[0]],
                       "score": round(float(faces.scores[0]), 4),
                       "num_faces": faces.num_faces}


def search_photo(collection: Collection, embedder, detector, photo: str, top_k: int = 50,
                 threshold: float | None = None) -> dict:
    """The photos of the collection where the person of the query photo's main face appears
    (nearest_photos with the model's threshold when none is given)."""
    check_model(collection, embedder)
    threshold = threshold if threshold is not None else embedder.threshold
    embedding, face = query_embedding(collection, embedder, detector, photo)
    return {"query": photo, "query_face": face, "threshold": threshold, "top_k": top_k,
            "collection": collection.directory, "num_collection_photos":
                collection.manifest["num_photos"], "num_collection_faces":
                collection.manifest["num_faces"],
            "results": nearest_photos(collection, embedding, top_k, threshold)}


def annotate(collection: Collection, result: dict, out_dir: str) -> list:
    """Copies of the query photo and of each matched photo with the face boxed and labelled
    (rank and distance), as JPEGs in out_dir: query.jpg, then 001_<photo>.jpg, ...; returns
    the paths written."""
    tf.io.gfile.makedirs(out_dir)
    written = [annotate_photo(_read_bytes(result["query"]),
                              [(result["query_face"]["box"], "query", True)],
                              os.path.join(out_dir, "query.jpg"))]
    for match in result["results"]:
        name = os.path.splitext(match["photo"].replace("/", "__").replace(os.sep, "__"))[0]
        written.append(annotate_photo(
            _read_bytes(collection.photo_path(match["photo"])),
            [(match["box"], f"#{match['rank']} d={match['distance']:.2f}", True)],
            os.path.join(out_dir, f"{match['rank']:03d}_{name}.jpg")))
    return written
