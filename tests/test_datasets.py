"""The bundled ORL dataset is complete and identical to the shared copy."""

import filecmp
import os

from facenet_tf import datasets


def test_bundled_orl_has_40_people_with_10_images():
    people = sorted(os.listdir(datasets.ORL_FACES_DIR))
    assert len(people) == 40
    for person in people:
        files = os.listdir(os.path.join(datasets.ORL_FACES_DIR, person))
        assert sorted(files) == sorted(f"{i}.pgm" for i in range(1, 11)), person


def test_bundled_orl_matches_shared_copy(orl_dir):
    cmp = filecmp.dircmp(datasets.ORL_FACES_DIR, orl_dir)
    assert not cmp.left_only and not cmp.right_only
    for person in cmp.common_dirs:
        sub = cmp.subdirs[person]
        assert not sub.diff_files and not sub.left_only and not sub.right_only, person
