"""A gallery: the faces of known people, kept in a directory, to name the faces of new photos.

    gallery = open_gallery("people.gallery", embedder, create=True)
    gallery.enroll_photos(embedder, detector, people_in_folder("known/"))
    gallery.identify(embedder.embed_faces(crops))   # one answer per face

What it stores, per face: the embedding, the person (identity), the source photo (path and
sha256 of its bytes), the face's box and detector score, and for the whole gallery the
fingerprint of the model that made the embeddings: opening it with another model is refused.
Every photo ever offered is recorded with its outcome (enrolled; several faces, of which the
main one was enrolled; no face; unreadable), so that enrolling a grown folder again embeds
only the photos it has not seen (same path and same bytes: skipped; same path, new bytes:
embedded again, the old faces dropped).

On disk (one writer at a time):
    gallery.json                 the pointer: format, version, model, the segment list
    segment-<id>.npz             immutable tables of photos and faces
    calibration.json             optional: this gallery's own Calibration
    index-<kind>-<key>.faiss     the search index of this version (rebuilt when stale)
Every change writes new segment files first and publishes them by replacing gallery.json
(an atomic rename) last, so an interrupted write (even kill -9) leaves the previous version
whole; files of unfinished writes are removed by the next successful one. Additions are new
segments; a removal rewrites only the segments holding the removed rows.

The identity decision: every enrolled person's distance to a face under the calibration's
rule (facenet_tf.recognition.decision), the nearest person named when within the threshold,
with a calibrated confidence (facenet_tf.recognition.calibration). Search is exact up to
index.EXACT_UP_TO faces, through a FAISS index above (facenet_tf.recognition.index).
"""

import dataclasses
import datetime
import hashlib
import io
import logging
import os
import time
import uuid

import numpy as np
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.data import image_files
from facenet_tf.data import images as image_utils
from facenet_tf.detection.align import AlignConfig
from facenet_tf.evaluation import visualize
from facenet_tf.inference import batch_embed
from facenet_tf.recognition import calibration as calibration_lib
from facenet_tf.recognition import decision
from facenet_tf.recognition.index import AUTO, FaceIndex, choose_kind

logger = logging.getLogger(__name__)

POINTER = "gallery.json"
CALIBRATION = "calibration.json"
FORMAT = "facenet_tf.gallery"
FORMAT_VERSION = 1
DEFAULT_TOP_K = 5
# Faces fetched from an approximate index before the people among them are scored exactly.
SHORTLIST_FACES = 64
# A gallery with more segments than this is compacted into one when it is next written.
MAX_SEGMENTS = 32
# Photos embedded between two published versions while enrolling a folder.
PHOTOS_PER_PUBLISH = 500
# Test hook: seconds to sleep between writing a version's segments and publishing it.
PUBLISH_DELAY_ENV = "FACENET_TF_GALLERY_PUBLISH_DELAY_S"

# Photo outcomes.
ENROLLED = "enrolled"
SEVERAL_FACES = "several_faces"
NO_FACE = "no_face"
UNREADABLE = "unreadable"
ADDED = "added"  # faces given as embeddings (Gallery.add), no photo read
PROBLEMS = (SEVERAL_FACES, NO_FACE, UNREADABLE)

_PHOTO_FIELDS = {"photo_path": str, "photo_sha256": str, "photo_identity": str,
                 "photo_status": str, "photo_num_faces": np.int32, "photo_note": str}
_FACE_FIELDS = ("embeddings", "face_photo", "boxes", "scores")


class GalleryError(ValueError):
    """A gallery that cannot be opened or used as asked (the message says why)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _empty_tables(dim: int) -> dict:
    tables = {name: np.zeros(0, dtype) for name, dtype in _PHOTO_FIELDS.items()}
    tables.update(embeddings=np.zeros((0, dim), np.float32), face_photo=np.zeros(0, np.int64),
                  boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32))
    return tables


def _concat(parts: list, dim: int) -> dict:
    """One table from segment tables (face_photo re-based onto the joined photo rows)."""
    if not parts:
        return _empty_tables(dim)
    offsets = np.cumsum([0] + [len(p["photo_path"]) for p in parts[:-1]])
    out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    out["face_photo"] = np.concatenate([p["face_photo"] + o for p, o in zip(parts, offsets)])
    return out


def _select_photos(tables: dict, keep_photo: np.ndarray) -> dict:
    """The tables with only the photos where keep_photo is true (and their faces)."""
    new_row = np.cumsum(keep_photo) - 1
    keep_face = keep_photo[tables["face_photo"]]
    out = {name: tables[name][keep_photo] for name in _PHOTO_FIELDS}
    out.update({name: tables[name][keep_face] for name in _FACE_FIELDS})
    out["face_photo"] = new_row[out["face_photo"]]
    return out


@dataclasses.dataclass
class NewPhoto:
    """One photo's outcome, to add: its faces (embeddings [n, D], boxes, scores; the main face
    only is kept) and record fields."""
    path: str
    sha256: str
    identity: str
    status: str
    num_faces: int = 0
    note: str = ""
    embeddings: np.ndarray | None = None
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None


def _tables_of(photos: list, dim: int) -> dict:
    tables = _empty_tables(dim)
    for name, dtype in _PHOTO_FIELDS.items():
        field = name.removeprefix("photo_")
        tables[name] = np.array([getattr(p, field) for p in photos], dtype).reshape(-1)
    faces = [(i, p) for i, p in enumerate(photos) if p.embeddings is not None]
    if faces:
        tables["embeddings"] = np.concatenate([p.embeddings for _, p in faces]).astype(
            np.float32).reshape(-1, dim)
        tables["face_photo"] = np.concatenate([np.full(len(p.embeddings), i)
                                               for i, p in faces]).astype(np.int64)
        tables["boxes"] = np.concatenate([p.boxes for _, p in faces]).astype(
            np.float32).reshape(-1, 4)
        tables["scores"] = np.concatenate([p.scores for _, p in faces]).astype(np.float32)
    return tables


class Gallery:
    """An opened gallery (a snapshot of one version; every change publishes the next one).
    Open or create one with open_gallery."""

    def __init__(self, path: str, pointer: dict, segments: dict):
        self.path = path
        self._pointer = pointer
        self._segments = segments  # name -> tables, in pointer order
        self._refresh()

    # ---- what is in it ---------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """The fingerprint of the model whose embeddings the gallery holds."""
        return self._pointer["model"]["fingerprint"]

    @property
    def model(self) -> str:
        """Where the gallery's model was loaded from (a path or "pretrained")."""
        return self._pointer["model"]["source"]

    @property
    def embedding_dim(self) -> int:
        return int(self._pointer["model"]["embedding_dim"])

    @property
    def version(self) -> int:
        return int(self._pointer["version"])

    @property
    def embeddings(self) -> np.ndarray:
        """float32 [faces, D]: every enrolled face."""
        return self._tables["embeddings"]

    @property
    def identities(self) -> np.ndarray:
        """The person of each face (parallel to embeddings)."""
        return self._tables["photo_identity"][self._tables["face_photo"]]

    def faces(self) -> list:
        """Every enrolled face: identity, photo, sha256, box, score."""
        t = self._tables
        return [{"identity": str(t["photo_identity"][p]), "photo": str(t["photo_path"][p]),
                 "sha256": str(t["photo_sha256"][p]), "box": [float(v) for v in box],
                 "score": float(score)}
                for p, box, score in zip(t["face_photo"], t["boxes"], t["scores"])]

    def people(self) -> dict:
        """{identity: number of enrolled faces}, by name."""
        names, counts = np.unique(self.identities, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}

    def photos(self) -> list:
        """The record of every photo offered: path, sha256, identity, status (enrolled,
        several_faces, no_face, unreadable or added), num_faces found, note."""
        t = self._tables
        return [{"photo": str(t["photo_path"][i]), "sha256": str(t["photo_sha256"][i]),
                 "identity": str(t["photo_identity"][i]), "status": str(t["photo_status"][i]),
                 "num_faces": int(t["photo_num_faces"][i]), "note": str(t["photo_note"][i])}
                for i in range(len(t["photo_path"]))]

    def problems(self) -> list:
        """The photo records whose status is not a plain enrolment (see photos())."""
        return [p for p in self.photos() if p["status"] in PROBLEMS]

    def __len__(self) -> int:
        return len(self.embeddings)

    def __repr__(self) -> str:
        return (f"Gallery({self.path!r}: {len(self.people())} people, {len(self)} faces, "
                f"model {self.fingerprint}, version {self.version})")

    # ---- the model -------------------------------------------------------------------
    def check_model(self, embedder) -> None:
        """GalleryError unless `embedder` is the model the gallery was made with."""
        if embedder.fingerprint != self.fingerprint:
            raise GalleryError(
                f"{self.path}: made with model {self.fingerprint} ({self.model}), but the "
                f"model given ({embedder.source or 'in memory'}) has fingerprint "
                f"{embedder.fingerprint}: its embeddings cannot be compared with the "
                "gallery's; use the gallery's model or enrol into a new gallery")

    @property
    def calibration(self) -> calibration_lib.Calibration:
        """This gallery's own calibration (set_calibration), else the one shipped for its
        model, else the model's own threshold without confidence (with a note)."""
        own = os.path.join(self.path, CALIBRATION)
        if tf.io.gfile.exists(own):
            return calibration_lib.read_calibration(own)
        return calibration_lib.for_model(self.fingerprint,
                                         self._pointer["model"].get("threshold"))

    def set_calibration(self, calibration: calibration_lib.Calibration) -> None:
        """Makes `calibration` (fitted for this gallery's model) this gallery's own."""
        if calibration.fingerprint != self.fingerprint:
            raise GalleryError(f"a calibration for model {calibration.fingerprint} cannot "
                               f"serve {self.path}, made with model {self.fingerprint}")
        calibration_lib.write_calibration(os.path.join(self.path, CALIBRATION), calibration)

    # ---- changes ---------------------------------------------------------------------
    def add(self, identity: str, embeddings, photos=None, boxes=None, scores=None) -> None:
        """Adds faces given as embeddings [n, D] (unit rows of the gallery's model) to a
        person; photos (names, for the record), boxes [n, 4] and scores are optional."""
        embeddings = np.asarray(embeddings, np.float32).reshape(-1, self.embedding_dim)
        n = len(embeddings)
        photos = list(photos) if photos is not None else [""] * n
        boxes = np.full((n, 4), np.nan, np.float32) if boxes is None else np.asarray(boxes)
        scores = np.full(n, np.nan, np.float32) if scores is None else np.asarray(scores)
        _check_identity(identity)
        new = [NewPhoto(path=photos[i], sha256="", identity=identity, status=ADDED,
                        num_faces=1, embeddings=embeddings[i:i + 1], boxes=boxes[i:i + 1],
                        scores=scores[i:i + 1]) for i in range(n)]
        self._publish(add=_tables_of(new, self.embedding_dim))

    def remove(self, identity: str) -> int:
        """Takes a person out (faces and photo records); returns the faces removed."""
        people = self.people()
        if identity not in people and identity not in set(self._tables["photo_identity"]):
            raise GalleryError(f"{self.path}: no person named {identity!r} "
                               f"(people: {', '.join(people) or 'none'})")
        self._publish(drop=lambda t: t["photo_identity"] == identity)
        return people.get(identity, 0)

    def enroll_photos(self, embedder, detector, photos: dict, align: AlignConfig | None = None,
                      batch_size: int = 64, photos_per_publish: int = PHOTOS_PER_PUBLISH
                      ) -> dict:
        """Enrols photos: {identity: [photo paths]}. Each photo gives its main face (with a
        detector; None: each file is a face crop, taken whole). Photos seen before with the
        same bytes are skipped; a photo whose bytes changed replaces its old faces. Publishes
        a version every photos_per_publish photos. Returns a report: counts of new, changed
        and unchanged photos and of faces enrolled, the problems (photo, identity, status,
        note), and the people with no usable face at all."""
        self.check_model(embedder)
        align = align or batch_embed.align_config_for(embedder)
        t = self._tables
        known = {str(p): (str(h), str(s)) for p, h, s in
                 zip(t["photo_path"], t["photo_sha256"], t["photo_status"])}
        todo, report = [], {"new": 0, "changed": 0, "unchanged": 0, "faces_enrolled": 0,
                            "problems": [], "people_without_faces": []}
        for identity, paths in photos.items():
            _check_identity(identity)
            for path in paths:
                key = _photo_key(path)
                data, error = _read(path)
                digest = sha256_bytes(data) if data is not None else ""
                before = known.get(key)
                if before is not None and before[0] == digest and before[1] != UNREADABLE:
                    report["unchanged"] += 1
                    continue
                report["changed" if before is not None else "new"] += 1
                todo.append((identity, key, data, digest, error))
        for start in range(0, len(todo), max(1, photos_per_publish)):
            chunk = todo[start:start + photos_per_publish]
            new = _embed_photos(embedder, detector, chunk, align, batch_size)
            replaced = {key for _, key, *_ in chunk}
            self._publish(add=_tables_of(new, self.embedding_dim),
                          drop=lambda tables: np.isin(tables["photo_path"], list(replaced)))
            for p in new:
                report["faces_enrolled"] += 0 if p.embeddings is None else len(p.embeddings)
                if p.status in PROBLEMS:
                    report["problems"].append({"photo": p.path, "identity": p.identity,
                                               "status": p.status, "note": p.note})
        people = self.people()
        report["people_without_faces"] = sorted(i for i in photos if i not in people)
        report["people"] = people
        report["version"] = self.version
        return report

    def _publish(self, add: dict | None = None, drop=None) -> None:
        """Writes the next version: segments that hold dropped rows rewritten without them,
        `add` as a new segment; then the pointer, last; then removes what it replaced."""
        segments = dict(self._segments)
        new_files = {}
        if drop is not None:
            for name, tables in self._segments.items():
                gone = drop(tables)
                if gone.any():
                    del segments[name]
                    if not gone.all():
                        new_files[_segment_name()] = _select_photos(tables, ~gone)
        if add is not None and len(add["photo_path"]):
            new_files[_segment_name()] = add
        segments.update(new_files)
        if len(segments) > MAX_SEGMENTS:
            merged = _concat(list(segments.values()), self.embedding_dim)
            segments = {_segment_name(): merged}
            new_files = dict(segments)
        for name, tables in new_files.items():
            buf = io.BytesIO()
            np.savez(buf, **tables)
            io_utils.write_bytes_atomic(os.path.join(self.path, name), buf.getvalue())
        delay = float(os.environ.get(PUBLISH_DELAY_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        pointer = dict(self._pointer, version=self.version + 1, segments=list(segments),
                       updated=_now())
        tables = list(segments.values())
        face_people = [t["photo_identity"][t["face_photo"]] for t in tables]
        pointer["counts"] = {
            "people": len(np.unique(np.concatenate(face_people))) if tables else 0,
            "faces": sum(len(t["embeddings"]) for t in tables),
            "photos": sum(len(t["photo_path"]) for t in tables)}
        io_utils.write_json_atomic(os.path.join(self.path, POINTER), pointer)
        self._pointer, self._segments = pointer, segments
        self._refresh()
        _remove_unlisted(self.path, set(segments), self.index_key)

    def _refresh(self) -> None:
        self._tables = _concat(list(self._segments.values()), self.embedding_dim)
        self._people = decision.People.from_labels(self.identities, self.embeddings)
        self._index = None

    # ---- search ----------------------------------------------------------------------
    @property
    def index_key(self) -> str:
        """Names this version's data: an index file built for another key is stale."""
        return sha256_bytes("\n".join(self._pointer["segments"]).encode())[:16]

    def search_index(self, kind: str = AUTO) -> FaceIndex:
        """The nearest-face index of this version (kind: index.choose_kind): read from its
        file beside the gallery, else built and saved. A file that does not read back is
        rebuilt, with a warning."""
        kind = choose_kind(len(self), kind)
        if self._index is not None and self._index.kind == kind:
            return self._index
        if kind == "exact":
            self._index = FaceIndex.build(self.embeddings, "exact")
            return self._index
        path = os.path.join(self.path, f"index-{kind}-{self.index_key}.faiss")
        index = None
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path, "rb") as f:
                data = f.read()
            try:
                index = FaceIndex.from_bytes(kind, data, self.embeddings)
            except ValueError as e:
                logger.warning("%s: %s; rebuilding it from the gallery", path, e)
        if index is None:
            index = FaceIndex.build(self.embeddings, kind)
            io_utils.write_bytes_atomic(path, index.to_bytes())
        self._index = index
        return index

    def identify(self, embeddings, top_k: int = DEFAULT_TOP_K, threshold: float | None = None,
                 index_kind: str = AUTO) -> list:
        """Names faces (embeddings [n, D] of the gallery's model): for each, a dict with
        `identity` (the nearest person if within the threshold, else None), `distance` (to
        the nearest person, by the calibration's rule), `confidence` (calibrated probability
        that the nearest person is right; None without a calibration) and `candidates`
        (up to top_k {identity, distance}, nearest first). threshold: default the
        calibration's; index_kind: see search_index."""
        calibration = self.calibration
        t = calibration.threshold if threshold is None else float(threshold)
        if t is None:
            raise GalleryError(f"{self.path}: no threshold known for model {self.fingerprint}"
                               " (no calibration, and the model has none): pass one")
        queries = np.asarray(embeddings, np.float32).reshape(-1, self.embedding_dim)
        ids, dist = self.rank_people(queries, top_k, calibration.rule, index_kind)
        conf = calibration.confidence(dist[:, 0]) if ids.shape[1] else None
        results = []
        for i in range(len(queries)):
            candidates = [{"identity": str(self._people.names[p]), "distance": float(d)}
                          for p, d in zip(ids[i], dist[i]) if p >= 0]
            best = candidates[0] if candidates else None
            results.append({
                "identity": best["identity"] if best and best["distance"] <= t else None,
                "distance": best["distance"] if best else None,
                "confidence": None if conf is None or best is None else float(conf[i]),
                "candidates": candidates})
        return results

    def rank_people(self, queries, top_k: int, rule: str, index_kind: str = AUTO):
        """(person ids [Q, k], distances [Q, k]) of the top_k nearest people of each query
        (-1 / inf past the number of people), by `rule`: exactly over every face, or the
        people among an approximate index's SHORTLIST_FACES nearest faces scored exactly."""
        queries = np.asarray(queries, np.float32).reshape(-1, self.embedding_dim)
        k = max(1, int(top_k))
        if len(self) == 0:
            return (np.full((len(queries), k), -1, np.int64),
                    np.full((len(queries), k), np.inf, np.float32))
        index = self.search_index(index_kind)
        if index.kind == "exact":
            ids, dist = decision.top_people(
                decision.person_distances(queries, self.embeddings, self._people, rule), k)
        else:
            _, rows = index.search(queries, max(SHORTLIST_FACES, 4 * k))
            ids, dist = decision.candidate_distances(queries, self.embeddings, self._people,
                                                     rows, rule)
            ids, dist = ids[:, :k], dist[:, :k]
        pad = k - ids.shape[1]
        if pad > 0:
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
        return ids, dist


def open_gallery(path: str, embedder=None, create: bool = False) -> Gallery:
    """Opens the gallery in directory `path`. With an embedder, refuses a gallery made with
    another model (GalleryError). create=True makes an empty gallery for the embedder's model
    when there is none (in a new or empty directory)."""
    path = os.fspath(path).rstrip("/") or "/"
    pointer_path = os.path.join(path, POINTER)
    if not tf.io.gfile.exists(pointer_path):
        if not create:
            what = "no such directory" if not tf.io.gfile.exists(path) else \
                f"not a gallery (no {POINTER})"
            raise FileNotFoundError(f"{path}: {what}; enrol people first "
                                    "(python -m facenet_tf.enroll)")
        if embedder is None:
            raise ValueError("creating a gallery needs the model (an embedder)")
        return _create(path, embedder)
    try:
        pointer = io_utils.read_json(pointer_path)
    except ValueError as e:
        raise GalleryError(f"{path}: unreadable gallery: {e}") from None
    if pointer.get("format") != FORMAT or "segments" not in pointer or "model" not in pointer:
        raise GalleryError(f"{pointer_path}: not a facenet_tf gallery file")
    if pointer.get("format_version", 0) > FORMAT_VERSION:
        raise GalleryError(f"{path}: gallery format {pointer['format_version']} is newer "
                           f"than this facenet_tf reads ({FORMAT_VERSION}); upgrade")
    segments = {name: _read_segment(path, name) for name in pointer["segments"]}
    gallery = Gallery(path, pointer, segments)
    if embedder is not None:
        gallery.check_model(embedder)
    return gallery


def people_in_folder(folder: str) -> dict:
    """{person: [photo paths]}: each sub-folder of `folder` is one person (its images,
    sub-folders included). ValueError if there is none with an image."""
    if not tf.io.gfile.isdir(folder):
        if tf.io.gfile.exists(folder):
            raise NotADirectoryError(f"{folder}: not a folder (expected one sub-folder of "
                                     "photos per person)")
        raise FileNotFoundError(f"{folder}: no such directory")
    people = {}
    for name in sorted(tf.io.gfile.listdir(folder)):
        name = name.rstrip("/")
        sub = os.path.join(folder, name)
        if tf.io.gfile.isdir(sub):
            paths = image_files.list_images(sub)
            if paths:
                people[name] = paths
    if not people:
        raise ValueError(f"{folder}: no person folders with images (expected one sub-folder "
                         "of photos per person)")
    return people


def _create(path: str, embedder) -> Gallery:
    if tf.io.gfile.exists(path) and tf.io.gfile.listdir(path):
        raise GalleryError(f"{path}: exists and is not a gallery (no {POINTER}); give a new "
                           "or empty directory")
    tf.io.gfile.makedirs(path)
    source = embedder.source
    if source and source != "pretrained" and "://" not in source:
        source = os.path.abspath(source)
    pointer = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": 0,
               "segments": [], "created": _now(), "updated": _now(),
               "model": {"fingerprint": embedder.fingerprint, "source": source,
                         "embedding_dim": int(embedder.embedding_dim),
                         "threshold": embedder.threshold},
               "counts": {"people": 0, "faces": 0, "photos": 0}}
    io_utils.write_json_atomic(os.path.join(path, POINTER), pointer)
    return Gallery(path, pointer, {})


def _read_segment(path: str, name: str) -> dict:
    full = os.path.join(path, name)
    if not tf.io.gfile.exists(full):
        raise GalleryError(f"{path}: {POINTER} lists {name}, which is missing")
    with tf.io.gfile.GFile(full, "rb") as f:
        data = f.read()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise GalleryError(f"{full}: unreadable gallery segment ({e})") from None


def _remove_unlisted(path: str, keep: set, index_key: str) -> None:
    """Deletes the segments and index files the current version does not use, and the
    temporary files of interrupted writes."""
    for name in tf.io.gfile.listdir(path):
        if ((name.startswith("segment-") and name not in keep) or ".tmp-" in name
                or (name.startswith("index-") and not name.endswith(f"-{index_key}.faiss"))):
            try:
                tf.io.gfile.remove(os.path.join(path, name))
            except tf.errors.NotFoundError:
                pass


def _segment_name() -> str:
    return f"segment-{uuid.uuid4().hex[:16]}.npz"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _check_identity(identity: str) -> None:
    if not isinstance(identity, str) or not identity.strip():
        raise ValueError(f"a person's name must be a non-empty string, got {identity!r}")


def _photo_key(path: str) -> str:
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)


def _read(path: str):
    """(bytes, None) or (None, why the file cannot be read)."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read(), None
    except (tf.errors.OpError, OSError) as e:
        return None, f"cannot read file: {getattr(e, 'message', e)}"


def _embed_whole(embedder, files: list, batch_size: int):
    """Files taken whole as face crops: [(name, bytes)] -> ([(name, whole-image box)],
    embeddings, [(name, reason)] of those that do not decode)."""
    good, encoded, bad = [], [], []
    for name, data in files:
        try:
            img = image_utils.normalize_image(data)
        except image_utils.BadImageError as e:
            bad.append((name, f"unreadable image: {e}"))
            continue
        encoded.append(img.encoded)
        good.append((name, [0.0, 0.0, float(img.width), float(img.height)]))
    emb = batch_embed.embed_encoded_images(embedder, encoded, total=len(encoded),
                                           batch_size=batch_size, names=[g[0] for g in good])
    return good, emb, bad


def _embed_photos(embedder, detector, chunk: list, align, batch_size: int) -> list:
    """NewPhoto per (identity, key, bytes, sha256, read error) of `chunk`: the main face of
    each photo (detector), or each file whole (no detector)."""
    out = [NewPhoto(key, digest, identity, UNREADABLE, note=error)
           for identity, key, data, digest, error in chunk if data is None]
    readable = [c for c in chunk if c[2] is not None]
    if not readable:
        return out
    if detector is None:
        good, emb, bad = _embed_whole(embedder, [(c[1], c[2]) for c in readable], batch_size)
        meta = {c[1]: c for c in readable}
        for key, reason in bad:
            identity, _, _, digest, _ = meta[key]
            out.append(NewPhoto(key, digest, identity, UNREADABLE, note=reason))
        for (key, box), e in zip(good, emb):
            identity, _, _, digest, _ = meta[key]
            out.append(NewPhoto(key, digest, identity, ENROLLED, 1, "", e[None],
                                np.array([box], np.float32), np.array([np.nan], np.float32)))
        return out
    keys = [c[1] for c in readable]
    table = batch_embed.embed_photo_faces(embedder, detector, keys, keys, align, keep="all",
                                          batch_size=batch_size)
    skipped = {s["photo"]: s["reason"] for s in table.skipped}
    photos = np.asarray(table.photos, dtype=str)
    for identity, key, _, digest, _ in readable:
        if key in skipped:
            reason = skipped[key]
            status = NO_FACE if reason == "no face found" else UNREADABLE
            out.append(NewPhoto(key, digest, identity, status, 0, reason))
            continue
        rows = np.flatnonzero(photos == key)
        main = rows[table.is_main[rows]]
        n = len(rows)
        status, note = ENROLLED, ""
        if n > 1:
            box = ", ".join(f"{v:.0f}" for v in table.boxes[main[0]])
            status, note = SEVERAL_FACES, f"{n} faces found; enrolled the main one (box {box})"
        out.append(NewPhoto(key, digest, identity, status, n, note, table.embeddings[main],
                            table.boxes[main], table.scores[main]))
    return out


def identify_photos(gallery: Gallery, embedder, detector, paths, top_k: int = DEFAULT_TOP_K,
                    threshold: float | None = None, align: AlignConfig | None = None,
                    batch_size: int = 64, index_kind: str = AUTO) -> dict:
    """Names every face of every photo (with a detector; None: each file is one face crop).
    Returns {"faces": [one dict per face: photo, face (its rank in the photo), box, score
    (the detector's; None without one), and Gallery.identify's identity, distance,
    confidence, candidates], "skipped": [{photo,
    reason}] (no face, unreadable), "threshold", "rule", "calibration_note"}."""
    gallery.check_model(embedder)
    paths = [os.fspath(p) for p in paths]
    calibration = gallery.calibration
    if detector is None:
        read = [(path, *_read(path)) for path in paths]
        skipped = [{"photo": path, "reason": error} for path, _, error in read if error]
        good, emb, bad = _embed_whole(embedder, [(p, d) for p, d, e in read if not e],
                                      batch_size)
        skipped += [{"photo": path, "reason": reason} for path, reason in bad]
        photos, boxes, face_index = [g[0] for g in good], [g[1] for g in good], [0] * len(good)
        scores = [None] * len(good)
    else:
        table = batch_embed.embed_photo_faces(embedder, detector, paths, paths,
                                              align or batch_embed.align_config_for(embedder),
                                              keep="all", batch_size=batch_size)
        photos, boxes, face_index, emb = (table.photos, table.boxes.tolist(),
                                          table.face_index.tolist(), table.embeddings)
        scores = table.scores.tolist()
        skipped = table.skipped
    answers = gallery.identify(emb, top_k, threshold, index_kind) if len(emb) else []
    faces = [face_answer(photo, i, box, score, answer)
             for photo, i, box, score, answer in zip(photos, face_index, boxes, scores, answers)]
    return {"faces": faces, "skipped": skipped,
            "threshold": calibration.threshold if threshold is None else float(threshold),
            "rule": calibration.rule, "calibration_note": calibration.note}


def face_answer(photo: str, face: int, box, score, answer: dict) -> dict:
    """One face of identify's JSON (the command's and the service's): photo, face (its rank
    in the photo), box, detector score (None for a file taken whole), then the gallery's
    answer (identity, distance, confidence, candidates)."""
    return {"photo": photo, "face": int(face), "box": [round(float(v), 1) for v in box],
            "score": None if score is None else round(float(score), 4), **answer}


def face_label(face: dict) -> str:
    """The name drawn for a face: its identity (and confidence), or "unknown"."""
    name = face["identity"] if face["identity"] is not None else "unknown"
    if face["confidence"] is not None and face["identity"] is not None:
        return f"{name} {percent(face['confidence'])}"
    return name


def percent(p: float) -> str:
    """A probability as a whole percentage that never rounds to a certainty."""
    return ">99%" if p > 0.99 else "<1%" if p < 0.01 else f"{p:.0%}"


def annotate_photos(faces: list, out_dir: str, root: str | None = None,
                    skipped: list = ()) -> list:
    """Writes out_dir/<photo> (its path under `root`, else its file name) for every photo
    with its faces' boxes and labels drawn (visualize.annotate_photo), photos without a face
    too; returns the written paths."""
    by_photo = {}
    for face in faces:
        by_photo.setdefault(face["photo"], []).append(face)
    for s in skipped:
        if s["reason"] == "no face found":
            by_photo.setdefault(s["photo"], [])
    written = []
    for photo, photo_faces in by_photo.items():
        rel = os.path.relpath(photo, root) if root else os.path.basename(photo)
        stem, ext = os.path.splitext(rel)
        out = os.path.join(out_dir, stem + (ext if ext.lower() in (".jpg", ".jpeg")
                                            else ".png"))
        tf.io.gfile.makedirs(os.path.dirname(out) or ".")
        data, error = _read(photo)
        if error:
            continue
        written.append(visualize.annotate_photo(
            data, [(f["box"], face_label(f), f["identity"] is not None)
                   for f in photo_faces], out))
    return written
