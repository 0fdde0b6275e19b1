"""An indexed photo collection (the output of beam_jobs.index_faces): its search index, and
searching it for the photos where a person appears (the command is facenet_tf.search).

A search embeds the main face of the query photo with the collection's model, asks the index
for the nearest faces (squared L2), keeps each photo's nearest face and ranks the photos by it.
"""

import dataclasses
import os

import faiss
import numpy as np
import pyarrow as pa
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.data import face_tables as tables
from facenet_tf.data.images import decode_rgb
from facenet_tf.detection.align import AlignConfig
from facenet_tf.detection.faces import find_faces
from facenet_tf.evaluation.visualize import draw_boxes

SEARCH_INDEX_FILE = "search.faiss"
# A search first asks the index for this many faces per photo wanted, then for twice as many
# while photos with several near faces leave it short.
_FACES_PER_PHOTO = 2


class NoFaceError(ValueError):
    """A query photo in which no face was found (or that could not be read)."""


def build_search_index(data_dir: str, face_shards: list) -> dict:
    """Builds the search index over the embeddings of the face shards (names in data_dir), in
    shard order, and writes it to data_dir; returns its manifest entry.

    Exact search (FAISS IndexFlatL2, squared L2) for now: the one place to switch to the
    gallery's index (exact below a size, HNSW above) once facenet_tf.recognition.index lands.
    """
    columns = [tables.read_table(os.path.join(data_dir, name), ["embedding"]).column(0)
               for name in face_shards]
    dim = columns[0].type.list_size
    embeddings = np.concatenate([tables.fixed_list_array(c) for c in columns]) if columns \
        else np.zeros((0, dim), np.float32)
    index = faiss.IndexFlatL2(dim)
    index.add(np.ascontiguousarray(embeddings, np.float32))
    io_utils.write_bytes_atomic(os.path.join(data_dir, SEARCH_INDEX_FILE),
                                faiss.serialize_index(index).tobytes())
    return {"kind": "exact", "engine": f"faiss {faiss.__version__} IndexFlatL2",
            "metric": "squared_l2", "file": SEARCH_INDEX_FILE, "num_vectors": int(index.ntotal)}


def _load_search_index(data_dir: str, entry: dict):
    data = _read_bytes(os.path.join(data_dir, entry["file"]))
    return faiss.deserialize_index(np.frombuffer(data, np.uint8))


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
    shards = [tables.read_table(os.path.join(data_dir, name), tables.FACE_METADATA_COLUMNS)
              for name in manifest["shards"][tables.FACES]]
    faces = pa.concat_tables(shards)
    index = _load_search_index(data_dir, manifest["search_index"])
    if index.ntotal != faces.num_rows:
        raise ValueError(f"{data_dir}: the search index holds {index.ntotal} faces, the "
                         f"tables {faces.num_rows}")
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
    total = collection.index.ntotal
    query = np.ascontiguousarray(np.reshape(query, (1, -1)), np.float32)
    wanted = min(total, top_k * _FACES_PER_PHOTO)
    while True:
        distances, ids = collection.index.search(query, wanted) if wanted else ([[]], [[]])
        best = {}
        for distance, row in zip(distances[0], ids[0]):
            if row < 0 or (threshold is not None and distance > threshold):
                break
            best.setdefault(collection.photos[row], (float(distance), int(row)))
        within = len(ids[0]) == 0 or threshold is None or distances[0][-1] <= threshold
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
    """Copies of the query photo and of each matched photo with the face outlined and labelled
    (rank and distance), as JPEGs in out_dir: query.jpg, then 001_<photo>.jpg, ...; returns
    the paths written."""
    tf.io.gfile.makedirs(out_dir)
    written = [draw_boxes(os.path.join(out_dir, "query.jpg"), _pixels(result["query"]),
                          [result["query_face"]["box"]], ["query"], color="orange")]
    for match in result["results"]:
        name = match["photo"].replace("/", "__").replace(os.sep, "__")
        path = os.path.join(out_dir, f"{match['rank']:03d}_{os.path.splitext(name)[0]}.jpg")
        written.append(draw_boxes(path, _pixels(collection.photo_path(match["photo"])),
                                  [match["box"]],
                                  [f"#{match['rank']} d={match['distance']:.2f}"]))
    return written


def _pixels(path: str) -> np.ndarray:
    return decode_rgb(_read_bytes(path))
