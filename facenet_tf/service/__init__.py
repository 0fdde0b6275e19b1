"""The HTTP service over a gallery (python -m facenet_tf.serve): API keys (keys.py), request
and image limits (uploads.py), the micro-batcher that puts concurrent requests onto one model
call (batcher.py), what a batch does with the detector, embedder and gallery (recognizer.py),
and the FastAPI app (app.py). docs/service.md describes the endpoints."""
