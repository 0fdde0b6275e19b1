"""Serves a gallery over HTTP: identify, verify, enroll, delete and list people, with API keys.

  python -m facenet_tf.serve --gallery people.gallery --key_file keys.json --port 8000

The gallery's model and the face detector are loaded once, before the port opens; concurrent
requests share model calls (a micro-batcher: --max_batch, --max_wait_ms). Every request needs
an API key of --key_file in the X-API-Key header; enrolling and deleting need an admin key.
Bodies over --max_request_mb get 413, photos are checked (format, --max_image_pixels, every
pixel decoded) before they reach the model. The endpoints, the key file and the limits:
docs/service.md; the OpenAPI docs: http://HOST:PORT/docs. It listens on 127.0.0.1 unless
--host says otherwise (put it behind a TLS-terminating proxy before exposing it).
"""

import uvicorn
from absl import flags

from facenet_tf import _cli
from facenet_tf.common import config_flags
from facenet_tf.service.app import build_recognizer, create_app
from facenet_tf.service.config import ServiceConfig
from facenet_tf.service.keys import KeyFile


def main(argv):
    del argv
    f = flags.FLAGS
    config = ServiceConfig(**config_flags.values_from_flags(ServiceConfig), margin=f.margin,
                           align_method=f.align_method)
    keys = KeyFile(config.key_file)  # a bad key file fails before the model loads
    recognizer = build_recognizer(config)
    app = create_app(config, recognizer, keys)
    print(f"serving {recognizer.gallery} with {len(keys)} API keys on "
          f"http://{f.host}:{f.port} (docs: /docs)", flush=True)
    uvicorn.run(app, host=f.host, port=f.port, log_level=f.log_level,
                limit_concurrency=f.max_connections, timeout_graceful_shutdown=30)


def _define_flags():
    flags.mark_flags_as_required(config_flags.define_flags(ServiceConfig))
    _cli.define_face_crop_flags()
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every "
                        "interface).")
    flags.DEFINE_integer("port", 8000, "Port to listen on.")
    flags.DEFINE_integer("max_connections", 256, "Open connections and requests in progress "
                         "beyond which uvicorn answers 503.")
    flags.DEFINE_enum("log_level", "info", ["critical", "error", "warning", "info", "debug"],
                      "uvicorn's log level (access log at info).")


def run():
    """The `facenet-serve` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
