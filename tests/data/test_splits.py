"""Seeded identity subsets (data.splits.subset_identities), against counts made by hand."""

import os

import pytest

from facenet_tf.data.splits import subset_identities


def _folder(root, counts):
    """Identity folders person_i with counts[i] empty image files each."""
    for i, n in enumerate(counts):
        os.makedirs(os.path.join(root, f"person_{i:02d}"))
        for j in range(n):
            with open(os.path.join(root, f"person_{i:02d}", f"{j}.jpg"), "wb") as f:
                f.write(bytes([i, j]))
    return root


def test_subsets_keep_the_mix_are_seeded_and_nested(tmp_path):
    counts = [3, 1, 2, 1, 1, 5, 2, 1, 1, 1, 4, 1]  # 5 with 2+ images, 7 with one
    src = _folder(str(tmp_path / "all"), counts)
    multi = {f"person_{i:02d}" for i, n in enumerate(counts) if n >= 2}
    quarter = subset_identities(src, str(tmp_path / "q"), 0.25, seed=3)
    half = subset_identities(src, str(tmp_path / "h"), 0.5, seed=3)
    whole = subset_identities(src, str(tmp_path / "w"), 1.0, seed=3)
    # round(0.25 * 5) = 1 and round(0.25 * 7) = 2; round(2.5) = 2 and round(3.5) = 4.
    assert (len(set(quarter) & multi), len(set(quarter) - multi)) == (1, 2)
    assert (len(set(half) & multi), len(set(half) - multi)) == (2, 4)
    assert set(whole) == {f"person_{i:02d}" for i in range(len(counts))}
    assert set(quarter) <= set(half) <= set(whole)
    assert sorted(os.listdir(tmp_path / "h")) == half
    for name in half:  # the same files, linked or copied
        for f in os.listdir(os.path.join(src, name)):
            with open(os.path.join(tmp_path, "h", name, f), "rb") as got, \
                    open(os.path.join(src, name, f), "rb") as want:
                assert got.read() == want.read()
    assert subset_identities(src, str(tmp_path / "again"), 0.5, seed=3) == half
    others = [subset_identities(src, str(tmp_path / f"s{s}"), 0.5, seed=s) for s in range(4)]
    assert any(o != half for o in others)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_a_bad_fraction_is_named(tmp_path, fraction):
    src = _folder(str(tmp_path / "all"), [2, 1])
    with pytest.raises(ValueError, match=f"fraction must be in \\(0, 1\\], got {fraction}"):
        subset_identities(src, str(tmp_path / "out"), fraction, seed=0)
