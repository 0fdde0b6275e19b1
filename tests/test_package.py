"""The package imports and its pinned requirements are what is installed."""

import importlib.metadata
import os
import re

from tests.conftest import REPO_ROOT


def test_packages_import():
    import facenet_tf
    assert facenet_tf.__version__


def test_installed_versions_match_pins():
    pins = {}
    with open(os.path.join(REPO_ROOT, "requirements", "base.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", line)
            if m:
                pins[m.group(1)] = m.group(3)
    assert "tensorflow-cpu" in pins and "apache-beam" in pins
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, name


def test_tensorflow_addons_is_not_a_dependency():
    with open(os.path.join(REPO_ROOT, "requirements", "base.txt")) as f:
        assert "tensorflow-addons" not in f.read()
