"""The FastAPI app of the service (python -m facenet_tf.serve runs it on uvicorn).

    app = create_app(config)                       # loads the gallery's model at start-up
    app = create_app(config, recognizer=r, keys=k)  # or with what the caller has built

Endpoints (docs/service.md; OpenAPI at /docs and /openapi.json):
    POST   /v1/identify           a photo -> every face named against the gallery   (user)
    POST   /v1/verify             two photos -> the best-matching pair of faces      (user)
    POST   /v1/enroll             a name and a photo -> its main face enrolled       (admin)
    DELETE /v1/people/{name}      a person taken out                                 (admin)
    GET    /v1/people             who is in the gallery                              (user)
    GET    /healthz               up, the gallery version and the batcher's counts   (none)

A photo comes as a multipart/form-data file, as base64 in a JSON object, or (identify) as the
raw body with an image/* or application/octet-stream content type. Statuses: 401 a missing or
unknown key (X-API-Key header); 403 a user key where an admin key is needed; 400 a malformed
request (bad JSON or base64, a missing field); 413 a body over the limit; 415 a content type
not listed above; 422 a photo that is not an accepted image, out of the size limits, or (verify,
enroll) without a face; 404 an unknown person; 503 too many requests waiting for the model.
"""

import base64
import binascii
import contextlib
import json
import logging
import os

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from facenet_tf.detection.detector import FaceDetector
from facenet_tf.inference import batch_embed
from facenet_tf.inference.embedders import PRETRAINED, load_embedder
from facenet_tf.recognition import gallery as gallery_lib
from facenet_tf.service import keys as keys_lib
from facenet_tf.service.batcher import Overloaded
from facenet_tf.service.config import ServiceConfig
from facenet_tf.service.recognizer import Recognizer
from facenet_tf.service.uploads import UploadError, validate_photo

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
RAW_TYPES = ("image/", "application/octet-stream")
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                        description="An API key from the service's key file.")


# ---- the model and the gallery ---------------------------------------------------------
def build_recognizer(config: ServiceConfig, warm_up: bool = True) -> Recognizer:
    """Opens the gallery, loads its model (config.model, else the one the gallery recorded)
    and the face detector, once; ValueError / FileNotFoundError naming what is wrong."""
    gallery = gallery_lib.open_gallery(config.gallery)
    model = config.model or gallery.model
    if model != PRETRAINED and "://" not in model and not os.path.exists(model):
        raise FileNotFoundError(f"{gallery.path}: its model {model} (fingerprint "
                                f"{gallery.fingerprint}) is not there; pass --model with "
                                "that model's current path")
    embedder = load_embedder(model, xla_max_batch=config.xla_max_batch)
    gallery.check_model(embedder)
    if config.threshold is None and gallery.calibration.threshold is None:
        raise ValueError(f"{gallery.path}: no threshold is known for model "
                         f"{gallery.fingerprint} (no calibration, and the model has none); "
                         "pass --threshold")
    recognizer = Recognizer(
        gallery, embedder, FaceDetector() if config.detect_faces else None,
        batch_embed.align_config_for(embedder, config.margin, config.align_method),
        config.batch_size, config.index, config.max_batch, config.max_wait_ms / 1000.0,
        config.max_queue)
    if warm_up:
        recognizer.warm_up()
    return recognizer


# ---- the request body ------------------------------------------------------------------
def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_fields(request: Request, files: tuple, texts: tuple = (),
                       raw: bool = False) -> tuple:
    """({file field: (bytes, file name)}, {text field: str}) of a multipart/form-data or JSON
    (base64 files) body, or (raw=True, one file field) of a raw image body; UploadError 400
    or 415 otherwise."""
    media = _media_type(request)
    if media == "multipart/form-data":
        return await _read_multipart(request, files, texts)
    if media == "application/json":
        return _read_json(await request.body(), files, texts)
    if raw and media.startswith(RAW_TYPES):
        return {files[0]: (await request.body(), "")}, {}
    accepted = ["multipart/form-data", "application/json"] + (
        ["image/*", "application/octet-stream"] if raw else [])
    raise UploadError(415, f"content type {media or 'missing'!r} is not accepted here; send "
                           f"one of {', '.join(accepted)}")


async def _read_multipart(request: Request, files: tuple, texts: tuple) -> tuple:
    got_files, got_texts = {}, {}
    fields = len(files) + len(texts)  # a few more than needed: the checks below name them
    async with request.form(max_files=fields, max_fields=fields,
                            max_part_size=request.app.state.config.max_request_bytes) as form:
        unknown = set(form.keys()) - set(files) - set(texts)
        if unknown:
            raise UploadError(400, f"unknown form fields {sorted(unknown)}; expected "
                                   f"{sorted(files + texts)}")
        for name in files:
            value = form.get(name)
            if value is None:
                raise UploadError(400, f"{name}: missing (a file field)")
            if not isinstance(value, UploadFile):
                raise UploadError(400, f"{name}: expected a file, got a text field")
            got_files[name] = (await value.read(), os.path.basename(value.filename or ""))
        for name in texts:
            value = form.get(name)
            if not isinstance(value, str):
                raise UploadError(400, f"{name}: missing (a text field)")
            got_texts[name] = value
    return got_files, got_texts


def _read_json(body: bytes, files: tuple, texts: tuple) -> tuple:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UploadError(400, f"body: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UploadError(400, f"body: expected a JSON object with {sorted(files + texts)}")
    unknown = set(data) - set(files) - set(texts)
    if unknown:
        raise UploadError(400, f"body: unknown fields {sorted(unknown)}; expected "
                               f"{sorted(files + texts)}")
    got_files, got_texts = {}, {}
    for name in files + texts:
        if not isinstance(data.get(name), str):
            raise UploadError(400, f"{name}: missing (a string"
                                   f"{' of base64 image bytes' if name in files else ''})")
    for name in files:
        try:
            got_files[name] = (base64.b64decode(data[name], validate=True), "")
        except (binascii.Error, ValueError) as e:
            raise UploadError(400, f"{name}: not valid base64 ({e})") from None
    for name in texts:
        got_texts[name] = data[name]
    return got_files, got_texts


async def _photos(request: Request, files: tuple, texts: tuple = (), raw: bool = False):
    """The request's photos, validated (uploads.validate_photo, off the event loop), and its
    text fields."""
    config, recognizer = request.app.state.config, request.app.state.recognizer
    got_files, got_texts = await _read_fields(request, files, texts, raw)
    photos = []
    for name in files:
        data, filename = got_files[name]
        photos.append(await run_in_threadpool(
            validate_photo, data, name, config.image_limits, filename,
            recognizer.detector is not None))
    return photos, got_texts


# ---- keys ------------------------------------------------------------------------------
def _client(request: Request, key: str | None) -> keys_lib.Client:
    client = request.app.state.keys.client(key)
    if client is None:
        raise HTTPException(401, f"{'no' if not key else 'unknown'} API key: send a key of "
                                 f"the service's key file in the {API_KEY_HEADER} header",
                            headers={"WWW-Authenticate": "APIKey"})
    return client


async def user(request: Request, key: str | None = Security(_api_key)) -> keys_lib.Client:
    """Any valid key."""
    return _client(request, key)


async def admin(request: Request, key: str | None = Security(_api_key)) -> keys_lib.Client:
    """An admin key: a valid user key gets 403 (it is known, but not allowed this)."""
    client = _client(request, key)
    if not client.is_admin:
        raise HTTPException(403, f"the key of {client.name!r} is a {client.role} key; "
                                 "enrolling and deleting need an admin key")
    return client


# ---- response models (for the OpenAPI docs) --------------------------------------------
class Candidate(BaseModel):
    identity: str
    distance: float


class Face(BaseModel):
    photo: str
    face: int
    box: list[float]
    score: float | None
    identity: str | None
    distance: float | None
    confidence: float | None
    candidates: list[Candidate]


class IdentifyResponse(BaseModel):
    faces: list[Face]
    gallery_version: int
    threshold: float | None
    rule: str


class VerifyFace(BaseModel):
    face: int
    box: list[float]
    score: float | None


class VerifyResponse(BaseModel):
    same: bool | None
    distance: float
    threshold: float | None
    face1: VerifyFace
    face2: VerifyFace
    faces_in_photo1: int
    faces_in_photo2: int


class EnrollResponse(BaseModel):
    name: str
    faces_enrolled: int
    box: list[float]
    faces_in_photo: int
    note: str
    faces_of_person: int
    gallery_version: int


class RemoveResponse(BaseModel):
    name: str
    faces_removed: int
    gallery_version: int


class PeopleResponse(BaseModel):
    people: dict[str, int]
    faces: int
    gallery_version: int


class HealthResponse(BaseModel):
    status: str
    gallery_version: int
    waiting: int
    batches: int
    requests_batched: int
    largest_batch: int
    model_busy_s: float


def _body_doc(files: tuple, texts: tuple = (), raw: bool = False) -> dict:
    """The OpenAPI requestBody of an endpoint that reads its body itself (_read_fields)."""
    def schema(file_format):
        props = {n: {"type": "string", "format": file_format} for n in files}
        props.update({n: {"type": "string"} for n in texts})
        return {"schema": {"type": "object", "properties": props,
                           "required": list(files + texts)}}
    content = {"multipart/form-data": schema("binary"),
               "application/json": schema("byte")}
    if raw:
        content["image/jpeg"] = content["application/octet-stream"] = {
            "schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


_ERRORS = {code: {"description": text} for code, text in (
    (400, "malformed request"), (401, "missing or unknown API key"),
    (413, "body over the size limit"), (415, "content type not accepted"),
    (422, "not an accepted image, or out of the size limits"),
    (503, "too many requests waiting for the model"))}


# ---- the app ---------------------------------------------------------------------------
def create_app(config: ServiceConfig, recognizer: Recognizer | None = None,
               keys: keys_lib.KeyFile | None = None) -> FastAPI:
    """The service's app. Without a recognizer, the lifespan builds one (build_recognizer)
    before the first request; either way the lifespan starts its batcher and stops it."""
    keys = keys or keys_lib.KeyFile(config.key_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if app.state.recognizer is None:
            app.state.recognizer = await run_in_threadpool(build_recognizer, config)
        await run_in_threadpool(app.state.recognizer.start)
        logger.info("serving %s", app.state.recognizer.gallery)
        try:
            yield
        finally:
            await run_in_threadpool(app.state.recognizer.stop)

    # max_body_size: 413 for a Content-Length over it, before the body is read, and for a
    # chunked body once that many bytes have come (uvicorn drops the rest of the body).
    app = FastAPI(title="facenet_tf service", lifespan=lifespan,
                  summary="Names the faces of photos against a gallery of known people.",
                  description=(__doc__ or "").split("\n\n", 2)[2],
                  max_body_size=config.max_request_bytes)
    app.state.config, app.state.keys, app.state.recognizer = config, keys, recognizer

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, e: UploadError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, e: Overloaded):
        return JSONResponse({"detail": f"busy: {e}; retry shortly"}, status_code=503,
                            headers={"Retry-After": "1"})

    def top_k_param(top_k: int | None = Query(None, ge=1, description=(
            f"Candidates per face (default {config.top_k}, at most {config.max_top_k})."))):
        if top_k is not None and top_k > config.max_top_k:
            raise UploadError(422, f"top_k: at most {config.max_top_k}, got {top_k}")
        return top_k or config.top_k

    threshold_doc = ("Squared-L2 distance under which a face is named (default: the "
                     "service's, else the gallery's calibration).")

    @app.post("/v1/identify", response_model=IdentifyResponse, responses=_ERRORS,
              openapi_extra=_body_doc(("photo",), raw=True))
    async def identify(request: Request, _: keys_lib.Client = Depends(user),
                       top_k: int = Depends(top_k_param),
                       threshold: float | None = Query(None, ge=0, description=threshold_doc)):
        """Every face of a photo, named after the nearest enrolled person when within the
        threshold (identity null when unknown), with its calibrated confidence and the
        top_k nearest people: the JSON of `python -m facenet_tf.identify --output`."""
        (photo,), _ = await _photos(request, ("photo",), raw=True)
        return await app.state.recognizer.identify(
            photo, top_k, threshold if threshold is not None else config.threshold)

    @app.post("/v1/verify", response_model=VerifyResponse, responses=_ERRORS,
              openapi_extra=_body_doc(("photo1", "photo2")))
    async def verify(request: Request, _: keys_lib.Client = Depends(user),
                     threshold: float | None = Query(None, ge=0, description=(
                         "Squared-L2 distance for 'same' (default: the model's)."))):
        """Is the same person in both photos? The best-matching pair of their faces, its
        distance, and same = distance <= threshold. 422 when a photo has no face."""
        (photo1, photo2), _ = await _photos(request, ("photo1", "photo2"))
        return await app.state.recognizer.verify(photo1, photo2, threshold)

    @app.post("/v1/enroll", response_model=EnrollResponse, responses=_ERRORS,
              openapi_extra=_body_doc(("photo",), ("name",)))
    async def enroll(request: Request, client: keys_lib.Client = Depends(admin)):
        """Enrols the main face of a photo as person `name` (a new person, or one more face
        of a known one). The gallery is written before the answer: a 200 means it is on
        disk. 422 when the photo has no face."""
        (photo,), texts = await _photos(request, ("photo",), ("name",))
        result = await app.state.recognizer.enroll(texts["name"], photo)
        logger.info("%s enrolled a face of %s", client.name, texts["name"])
        return result

    @app.delete("/v1/people/{name}", response_model=RemoveResponse,
                responses={**_ERRORS, 404: {"description": "no such person"}})
    async def remove(name: str, client: keys_lib.Client = Depends(admin)):
        """Takes a person (every enrolled face) out of the gallery."""
        result = await app.state.recognizer.remove(name)
        logger.info("%s removed %s", client.name, name)
        return result

    @app.get("/v1/people", response_model=PeopleResponse, responses=_ERRORS)
    async def people(_: keys_lib.Client = Depends(user)):
        """Who is in the gallery: each person's number of enrolled faces."""
        return app.state.recognizer.people()

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz():
        """Up and serving (no key needed): the gallery version, requests waiting for the
        model, and the batcher's counts since start (requests_batched / batches is the mean
        batch; model_busy_s the seconds spent in model calls)."""
        r = app.state.recognizer
        stats = r.batcher.stats
        return {"status": "ok", "gallery_version": r.gallery.version,
                "waiting": r.batcher.waiting, "batches": stats.batches,
                "requests_batched": stats.items, "largest_batch": stats.largest,
                "model_busy_s": round(stats.busy_s, 3)}

    return app
