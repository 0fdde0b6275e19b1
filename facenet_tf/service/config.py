"""The service's settings, each written once: the serve command's flags are these fields."""

import dataclasses

from facenet_tf.common.config_flags import setting
from facenet_tf.detection.align import AlignConfig
from facenet_tf.recognition.gallery import DEFAULT_TOP_K
from facenet_tf.recognition.index import AUTO, KINDS
from facenet_tf.service.uploads import ImageLimits

MB = 1 << 20


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """What the service serves and its limits (see docs/service.md)."""
    gallery: str = setting(help="The gallery directory (python -m facenet_tf.enroll); the "
                           "service is its one writer while it runs.")
    key_file: str = setting(help="JSON file of API keys (facenet_tf.service.keys): "
                            "{\"keys\": [{\"name\", \"role\": \"user\"|\"admin\", \"key\" or "
                            "\"sha256\"}]}.")
    model: str | None = setting(None, "The gallery's model at another path (checked by "
                                "fingerprint); default: where the gallery recorded it.")
    detect_faces: bool = setting(True, "Find every face of each photo (MTCNN); "
                                 "--nodetect_faces: each photo is one face crop.")
    top_k: int = setting(DEFAULT_TOP_K, "Default candidates listed per face (a request may "
                         "ask for up to max_top_k).")
    max_top_k: int = setting(50, "Most candidates a request may ask for.")
    threshold: float | None = setting(None, "Default squared-L2 distance under which a face "
                                      "is named (default: the gallery's calibration).")
    index: str = setting(AUTO, "Gallery search: exact, or a FAISS index (auto: exact for "
                         "small galleries, HNSW for large ones).", choices=(AUTO, *KINDS))
    max_request_mb: float = setting(10.0, "Largest request body accepted, in MiB (413 "
                                    "beyond).")
    max_image_pixels: int = setting(ImageLimits.max_pixels, "Largest photo accepted, in "
                                    "pixels (width x height).")
    max_image_side: int = setting(ImageLimits.max_side, "Longest photo side accepted, in "
                                  "pixels.")
    min_image_side: int = setting(ImageLimits.min_side, "Shortest photo side accepted, in "
                                  "pixels.")
    max_batch: int = setting(16, "Most requests the micro-batcher puts into one model call.")
    max_wait_ms: float = setting(5.0, "How long the micro-batcher waits for more requests "
                                 "after the first one of a batch, in ms (0: no wait).")
    max_queue: int = setting(64, "Requests that may wait for the model; beyond, 503.")
    batch_size: int = setting(64, "Faces per embedder call.")
    xla_max_batch: int = setting(0, "For 'pretrained' and .keras models: batches up to this "
                                 "size run XLA-compiled, each size compiled on first use "
                                 "(0: none, no compile pauses while serving).")
    margin: float = AlignConfig.margin
    align_method: str = AlignConfig.method

    def __post_init__(self):
        for name in ("top_k", "max_top_k", "max_batch", "max_queue", "batch_size",
                     "max_image_pixels", "max_image_side", "min_image_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_request_mb <= 0:
            raise ValueError(f"max_request_mb must be > 0, got {self.max_request_mb}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.top_k > self.max_top_k:
            raise ValueError(f"top_k ({self.top_k}) is above max_top_k ({self.max_top_k})")

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * MB)

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_image_pixels, self.max_image_side, self.min_image_side)
