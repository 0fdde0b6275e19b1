"""The README's first screen runs as printed: its Python example, on the LFW photos it names,
prints exactly the output block the README shows under it."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

# The photos the example names, from LFW (shared data).
PHOTOS = {"colin_1.jpg": "Colin_Powell/Colin_Powell_0001.jpg",
          "colin_3.jpg": "Colin_Powell/Colin_Powell_0003.jpg",
          "serena_1.jpg": "Serena_Williams/Serena_Williams_0001.jpg"}


def readme_example() -> tuple:
    """The first ```python block under "## In Python" and the ``` output block after it."""
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index("## In Python"):]
    match = re.search(r"```python\n(.*?)```\n```\n(.*?)```", section, re.S)
    assert match, "README: '## In Python' has no python block followed by an output block"
    return match.group(1), match.group(2)


def test_the_readme_example_is_short():
    code, _ = readme_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 12


@pytest.mark.integration
@pytest.mark.slow
def test_the_readme_example_prints_what_the_readme_shows(lfw_dir, tmp_path):
    for name, source in PHOTOS.items():
        shutil.copy(os.path.join(lfw_dir, "images", source), tmp_path / name)
    code, expected = readme_example()
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == expected.split()
