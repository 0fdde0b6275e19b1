"""The public Python API: `import facenet_tf as fn` gives every documented name, lazily."""

import subprocess
import sys

import pytest

import facenet_tf as fn
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("name", fn.__all__)
def test_every_public_name_resolves_to_a_documented_object(name):
    value = getattr(fn, name)
    assert value is not None
    if callable(value):
        assert (value.__doc__ or "").strip(), f"facenet_tf.{name} has no docstring"
    assert name in dir(fn)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        fn.no_such_thing  # noqa: B018


def test_import_is_light_and_names_load_on_first_use():
    code = ("import sys, facenet_tf as fn; assert 'tensorflow' not in sys.modules; "
            "fn.select_triplets; assert 'tensorflow' in sys.modules; "
            "assert 'apache_beam' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
