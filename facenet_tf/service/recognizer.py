"""What the service does with photos: the model (detector + embedder, loaded once) behind a
micro-batcher, and the gallery, read through snapshots and written by one writer.

Every photo of every request in a batch goes through one detector call (face detection,
alignment; or, without a detector, each photo is one face crop) and one embedder call; the
faces of all identify requests in the batch are then named by one gallery search. The JSON of
a face is identify's (facenet_tf.recognition.gallery.identify_photos): photo, face, box,
identity (None when unknown), distance, confidence, candidates.

The gallery: a request reads the snapshot current when its batch runs. Enrolling and removing
take the write lock, publish the change to disk from a copy of the current snapshot
(Gallery.add / Gallery.remove: new segments, then the pointer, atomically), build the copy's
search index, and only then make the copy current. A reader therefore sees a version either
entirely before or entirely after a change, never a partial one, and a change is on disk
before any reader sees it; a crash (even kill -9) during a change leaves the previous version
on disk, which is what the service opens when it starts again.
"""

import asyncio
import copy
import dataclasses
import logging
import threading

import numpy as np

from facenet_tf.detection.align import AlignConfig
from facenet_tf.detection.faces import encode_png, find_faces
from facenet_tf.inference import batch_embed
from facenet_tf.recognition import gallery as gallery_lib
from facenet_tf.recognition.index import AUTO
from facenet_tf.service.batcher import MicroBatcher
from facenet_tf.service.uploads import Photo, UploadError
from facenet_tf.triplets import distances

logger = logging.getLogger(__name__)

IDENTIFY, VERIFY, ENROLL = "identify", "verify", "enroll"
MAX_NAME_LENGTH = 128


@dataclasses.dataclass(frozen=True)
class Job:
    """One request's work for a batch: its kind, its photos, and identify's settings."""
    kind: str
    photos: tuple
    top_k: int = gallery_lib.DEFAULT_TOP_K
    threshold: float | None = None


@dataclasses.dataclass
class _Face:
    photo: int           # index into the batch's photos
    index: int           # the face's rank in its photo (detector score order)
    box: list
    score: float | None
    is_main: bool


def check_name(name) -> str:
    """A person's name as the service accepts it, or UploadError 400."""
    if not isinstance(name, str) or not name.strip():
        raise UploadError(400, "name: a person's name must be a non-empty string")
    if name != name.strip() or len(name) > MAX_NAME_LENGTH or not name.isprintable() \
            or "/" in name:
        raise UploadError(400, f"name: {name[:MAX_NAME_LENGTH]!r} is not accepted (at most "
                               f"{MAX_NAME_LENGTH} printable characters, no '/', no "
                               "leading or trailing spaces)")
    return name


class Recognizer:
    """The model, its batcher and the gallery; see the module doc. Call start() before use
    (from any thread; warm_up() first, optionally) and stop() at the end."""

    def __init__(self, gallery: gallery_lib.Gallery, embedder, detector=None,
                 align: AlignConfig | None = None, batch_size: int = 64,
                 index_kind: str = AUTO, max_batch: int = 16, max_wait_s: float = 0.005,
                 max_queue: int = 64):
        gallery.check_model(embedder)
        self.embedder = embedder
        self.detector = detector
        self.align = align or batch_embed.align_config_for(embedder)
        self.batch_size = batch_size
        self.index_kind = index_kind
        self._gallery = gallery
        self._write_lock = threading.Lock()
        self.batcher = MicroBatcher(self.run_batch, max_batch, max_wait_s, max_queue,
                                    name="facenet-model")

    # ---- life ------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Runs the model once on a blank photo, so that no request pays for tracing."""
        side = max(self.align.image_size, 64)
        blank = np.full((side, side, 3), 128, np.uint8)
        photo = Photo("warm-up", "warm-up", "", side, side, pixels=blank,
                      encoded=encode_png(blank) if self.detector is None else None)
        self.run_batch([Job(VERIFY, (photo, photo))])
        if self.detector is not None:  # the blank has no face: the embedder's turn
            self.embedder.embed_faces(np.zeros((1, side, side, 3), np.uint8))

    def start(self) -> "Recognizer":
        """Builds the gallery's search index, then starts the batcher."""
        self._gallery.search_index(self.index_kind)
        self.batcher.start()
        return self

    def stop(self) -> None:
        self.batcher.stop()

    @property
    def gallery(self) -> gallery_lib.Gallery:
        """The current snapshot (do not change it: use enroll and remove)."""
        return self._gallery

    # ---- requests (asyncio) ----------------------------------------------------------
    async def identify(self, photo: Photo, top_k: int, threshold: float | None) -> dict:
        """{"faces": [identify's JSON per face], "gallery_version", "threshold", "rule"}."""
        return await self.batcher.submit(Job(IDENTIFY, (photo,), top_k, threshold))

    async def verify(self, photo1: Photo, photo2: Photo, threshold: float | None) -> dict:
        """The best-matching pair of faces of two photos (the question is "is this person
        in both?"): its distance, same (distance <= threshold; default the model's), each
        face's rank, box and score, and how many faces each photo holds."""
        return await self.batcher.submit(Job(VERIFY, (photo1, photo2), threshold=threshold))

    async def enroll(self, name: str, photo: Photo) -> dict:
        """Adds the main face of `photo` (facenet_tf.detection.main_face) to person `name`;
        UploadError 422 when the photo has no face."""
        check_name(name)
        face = await self.batcher.submit(Job(ENROLL, (photo,)))
        return await asyncio.to_thread(self._add, name, photo, face)

    async def remove(self, name: str) -> dict:
        """Takes a person out; UploadError 404 for a name not in the gallery."""
        return await asyncio.to_thread(self._remove, name)

    def people(self) -> dict:
        g = self._gallery
        return {"people": g.people(), "faces": len(g), "gallery_version": g.version}

    # ---- writes (one at a time) ------------------------------------------------------
    def _swap(self, change) -> tuple:
        """Applies `change(copy)` to a copy of the current snapshot (which publishes it),
        builds its index, then makes it current; returns (change's result, the copy)."""
        with self._write_lock:
            new = copy.copy(self._gallery)
            result = change(new)
            new.search_index(self.index_kind)
            self._gallery = new
            return result, new

    def _add(self, name: str, photo: Photo, face: dict) -> dict:
        _, g = self._swap(lambda new: new.add(
            name, face["embedding"][None], photos=[f"upload sha256:{photo.sha256}"],
            boxes=np.array([face["box"]], np.float32),
            scores=np.array([np.nan if face["score"] is None else face["score"]], np.float32)))
        logger.info("enrolled a face of %s (version %d)", name, g.version)
        return {"name": name, "faces_enrolled": 1, "box": face["box"],
                "faces_in_photo": face["faces_in_photo"], "note": face["note"],
                "faces_of_person": g.people().get(name, 0), "gallery_version": g.version}

    def _remove(self, name: str) -> dict:
        if name not in self._gallery.people():
            raise UploadError(404, f"no person named {name!r} in the gallery")
        removed, g = self._swap(lambda new: new.remove(name))
        logger.info("removed %s (%d faces; version %d)", name, removed, g.version)
        return {"name": name, "faces_removed": removed, "gallery_version": g.version}

    # ---- the batch (on the batcher's thread) -----------------------------------------
    def run_batch(self, jobs: list) -> list:
        """One result (or UploadError) per job: every photo through one detector call and
        one embedder call, every identify face through one gallery search per setting."""
        photos = [p for job in jobs for p in job.photos]
        faces, embeddings = self._faces(photos)
        by_photo = [[] for _ in photos]
        for row, face in enumerate(faces):
            by_photo[face.photo].append(row)
        gallery = self._gallery
        answers = self._identify_faces(gallery, jobs, by_photo, embeddings)
        results, start = [], 0
        for j, job in enumerate(jobs):
            rows = [by_photo[start + k] for k in range(len(job.photos))]
            start += len(job.photos)
            try:
                if job.kind == IDENTIFY:
                    results.append(self._identify_result(gallery, job, rows[0], faces,
                                                         answers.get(j, [])))
                elif job.kind == VERIFY:
                    results.append(self._verify_result(job, rows, faces, embeddings))
                else:
                    results.append(self._enroll_result(job, rows[0], faces, embeddings))
            except UploadError as e:
                results.append(e)
        return results

    def _faces(self, photos: list) -> tuple:
        """(a _Face per face found, embeddings [faces, D]) of the photos, in photo order,
        each photo's faces in detector-score order."""
        if self.detector is None:
            embeddings = batch_embed.embed_encoded_images(
                self.embedder, [p.encoded for p in photos], total=len(photos),
                batch_size=self.batch_size, names=[p.field for p in photos],
                progress_every_s=None)
            faces = [_Face(k, 0, [0.0, 0.0, float(p.width), float(p.height)], None, True)
                     for k, p in enumerate(photos)]
            return faces, embeddings
        found = find_faces(self.detector, [p.pixels for p in photos], self.align, keep="all",
                           names=[p.field for p in photos])
        faces, crops = [], []
        for k, photo_faces in enumerate(found):
            for j, index in enumerate(photo_faces.kept):
                crops.append(photo_faces.crops[j])
                faces.append(_Face(k, int(index), photo_faces.detections.boxes[index].tolist(),
                                   float(photo_faces.detections.scores[index]),
                                   index == photo_faces.main))
        if not crops:
            return faces, np.zeros((0, self.embedder.embedding_dim), np.float32)
        return faces, self.embedder.embed_faces(np.stack(crops), self.batch_size)

    def _identify_faces(self, gallery, jobs, by_photo, embeddings) -> dict:
        """{job index: Gallery.identify answers of its faces}, one search per (top_k,
        threshold) among the batch's identify jobs."""
        groups, start = {}, 0
        for j, job in enumerate(jobs):
            if job.kind == IDENTIFY:
                groups.setdefault((job.top_k, job.threshold), []).append((j, by_photo[start]))
            start += len(job.photos)
        answers = {}
        for (top_k, threshold), members in groups.items():
            rows = [r for _, job_rows in members for r in job_rows]
            if not rows:
                continue
            found = gallery.identify(embeddings[rows], top_k, threshold, self.index_kind)
            at = 0
            for j, job_rows in members:
                answers[j] = found[at:at + len(job_rows)]
                at += len(job_rows)
        return answers

    def _identify_result(self, gallery, job, rows, faces, answers) -> dict:
        photo = job.photos[0]
        calibration = gallery.calibration
        out = [gallery_lib.face_answer(photo.name, faces[r].index, faces[r].box, faces[r].score,
                                       answer)
               for r, answer in zip(rows, answers)]
        return {"faces": out, "gallery_version": gallery.version,
                "threshold": calibration.threshold if job.threshold is None
                else float(job.threshold), "rule": calibration.rule}

    def _verify_result(self, job, rows, faces, embeddings) -> dict:
        for photo, photo_rows in zip(job.photos, rows):
            if not photo_rows:
                raise UploadError(422, f"{photo.field}: no face found")
        d = distances.squared_l2_matrix(embeddings[rows[0]], embeddings[rows[1]])
        i, k = np.unravel_index(int(np.argmin(d)), d.shape)
        t = job.threshold if job.threshold is not None else self.embedder.threshold
        dist = float(d[i, k])

        def face(r):
            return {"face": faces[r].index, "box": [round(float(v), 1) for v in faces[r].box],
                    "score": faces[r].score}

        return {"same": None if t is None else dist <= t, "distance": dist,
                "threshold": None if t is None else float(t),
                "face1": face(rows[0][i]), "face2": face(rows[1][k]),
                "faces_in_photo1": len(rows[0]), "faces_in_photo2": len(rows[1])}

    def _enroll_result(self, job, rows, faces, embeddings) -> dict:
        photo = job.photos[0]
        main = [r for r in rows if faces[r].is_main]
        if not main:
            raise UploadError(422, f"{photo.field}: no face found")
        r = main[0]
        note = "" if len(rows) == 1 else \
            f"{len(rows)} faces; enrolled the main one (face {faces[r].index})"
        return {"embedding": embeddings[r], "box": [round(float(v), 1) for v in faces[r].box],
                "score": faces[r].score, "faces_in_photo": len(rows), "note": note}

