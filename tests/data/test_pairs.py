"""Pairs files: parsing both LFW layouts, writing, resolving paths, generating folds."""

import os

import pytest

from facenet_tf.data import pairs as P


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_read_view1_layout(tmp_path):
    path = _write(tmp_path / "p.txt", "2\nAnn\t1\t2\nAnn\t1\t3\nAnn\t1\tBob\t2\nBob\t1\tCid\t4\n")
    parsed = P.parse_pairs(path)
    assert parsed.folds is None and parsed.num_folds == 1 and parsed.pairs_per_set == 2
    assert parsed.pairs == [P.Pair("Ann", 1, "Ann", 2, True), P.Pair("Ann", 1, "Ann", 3, True),
                            P.Pair("Ann", 1, "Bob", 2, False), P.Pair("Bob", 1, "Cid", 4, False)]


def test_read_view2_layout_gives_consecutive_folds(tmp_path):
    lines = ["2\t1", "A\t1\t2", "A\t1\tB\t1", "C\t1\t2", "C\t2\tD\t1"]
    parsed = P.parse_pairs(_write(tmp_path / "p.txt", "\n".join(lines) + "\n"))
    assert list(parsed.folds) == [0, 0, 1, 1]
    assert [p.issame for p in parsed.pairs] == [True, False, True, False]


@pytest.mark.parametrize("text, needle", [
    ("", "empty"),
    ("x y z\nA\t1\t2\n", ":1:"),
    ("1\nA\t1\n", ":2:"),
    ("1\nA\tone\t2\n", ":2:"),
    ("2\t1\nA\t1\t2\nA\t1\tB\t1\n", "2 folds"),
])
def test_bad_files_name_file_and_line(tmp_path, text, needle):
    path = _write(tmp_path / "bad.txt", text)
    with pytest.raises(ValueError) as e:
        P.read_pairs(path)
    assert "bad.txt" in str(e.value) and needle in str(e.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        P.read_pairs(str(tmp_path / "nope.txt"))


def test_write_read_roundtrip_both_layouts(tmp_path):
    pairs = [P.Pair("A", 1, "A", 2, True), P.Pair("A", 1, "B", 3, False),
             P.Pair("C", 2, "C", 5, True), P.Pair("C", 1, "D", 1, False)]
    P.write_pairs(str(tmp_path / "f.txt"), pairs, num_folds=2)
    assert P.read_pairs(str(tmp_path / "f.txt")) == pairs
    with open(tmp_path / "f.txt") as f:
        assert f.readline() == "2\t1\n"
    P.write_pairs(str(tmp_path / "v1.txt"), pairs)
    back = P.read_pairs(str(tmp_path / "v1.txt"))
    assert back == [pairs[0], pairs[2], pairs[1], pairs[3]]
    with pytest.raises(ValueError, match="fold 0"):
        P.format_pairs([pairs[1], pairs[0]], num_folds=1)


def test_pair_image_paths_lfw_and_sorted(tmp_path):
    root = tmp_path / "images"
    (root / "Ann_Lee").mkdir(parents=True)
    (root / "s3").mkdir()
    for i in (1, 2):
        (root / "Ann_Lee" / f"Ann_Lee_{i:04d}.jpg").write_bytes(b"x")
    for i in range(1, 12):
        (root / "s3" / f"{i}.pgm").write_bytes(b"x")
    p1, p2 = P.pair_image_paths(str(root), P.Pair("Ann_Lee", 2, "s3", 10, False))
    assert p1 == os.path.join(str(root), "Ann_Lee", "Ann_Lee_0002.jpg")
    assert p2 == os.path.join(str(root), "s3", "10.pgm")  # natural order, not "10" < "2"
    # Missing images resolve to paths that do not exist (the evaluator lists them).
    m1, m2 = P.pair_image_paths(str(root), P.Pair("Ann_Lee", 7, "s3", 12, False))
    assert not os.path.exists(m1) and not os.path.exists(m2)


def _make_folder(root, sizes):
    for name, n in sizes.items():
        os.makedirs(os.path.join(root, name))
        for i in range(n):
            open(os.path.join(root, name, f"{i + 1}.png"), "wb").close()
    return str(root)


def test_generate_pairs_folds_disjoint_balanced_seeded(tmp_path):
    sizes = {f"id{k:02d}": 2 + k % 4 for k in range(24)}
    sizes.update({f"single{k}": 1 for k in range(5)})
    root = _make_folder(tmp_path / "ds", sizes)
    pairs = P.generate_pairs(root, num_folds=4, pairs_per_fold=8, seed=3)
    assert len(pairs) == 32
    out = str(tmp_path / "gen.txt")
    P.write_pairs(out, pairs, num_folds=4)
    parsed = P.parse_pairs(out)
    assert parsed.pairs == pairs
    fold_names = []
    for k in range(4):
        chunk = [p for p, f in zip(parsed.pairs, parsed.folds) if f == k]
        assert sum(p.issame for p in chunk) == 4 and sum(not p.issame for p in chunk) == 4
        assert len(set(chunk)) == 8
        for p in chunk:
            assert 1 <= p.idx1 <= sizes[p.name1] and 1 <= p.idx2 <= sizes[p.name2]
            assert (p.name1 == p.name2) == p.issame
            if p.issame:
                assert p.idx1 != p.idx2
        fold_names.append({n for p in chunk for n in (p.name1, p.name2)})
    for a in range(4):
        for b in range(a + 1, 4):
            assert not fold_names[a] & fold_names[b]
    assert P.generate_pairs(root, num_folds=4, pairs_per_fold=8, seed=3) == pairs
    assert P.generate_pairs(root, num_folds=4, pairs_per_fold=8, seed=4) != pairs


def test_generate_pairs_identity_subset_and_infeasible(tmp_path):
    root = _make_folder(tmp_path / "ds", {f"s{k}": 3 for k in range(1, 7)})
    pairs = P.generate_pairs(root, num_folds=2, seed=0, identities=["s1", "s2", "s3", "s4"])
    names = {n for p in pairs for n in (p.name1, p.name2)}
    assert names <= {"s1", "s2", "s3", "s4"}
    # Two identities of 3 images per fold: 6 matched, 9 mismatched possible -> 6 per set.
    assert len(pairs) == 2 * 2 * 6
    with pytest.raises(ValueError, match="at most 6 matched"):
        P.generate_pairs(root, num_folds=2, pairs_per_fold=14, identities=["s1", "s2", "s3", "s4"])
    with pytest.raises(ValueError, match="at most 0"):
        P.generate_pairs(root, num_folds=6)


def test_generated_pairs_of_lfw_named_crops_with_gaps_resolve_to_their_files(tmp_path):
    # An aligned LFW tree: PNG crops, and the photos without a face are missing.
    numbers = {"Ann_Lee": [1, 3, 4, 7], "Bo_Li": [2, 5], "Cy_Ng": [1, 2, 3]}
    for name, present in numbers.items():
        os.makedirs(tmp_path / name)
        for i in present:
            (tmp_path / name / f"{name}_{i:04d}.png").write_bytes(b"png")
    pairs = P.generate_pairs(str(tmp_path), num_folds=1, pairs_per_fold=4, seed=0)
    resolver = P.ImageResolver(str(tmp_path))  # ext "jpg" and naming "auto", the defaults
    for p in pairs:
        for name, index in ((p.name1, p.idx1), (p.name2, p.idx2)):
            assert index in numbers[name]
            assert resolver.path(name, index) == str(tmp_path / name / f"{name}_{index:04d}.png")
        if p.issame:
            assert p.idx1 != p.idx2


@pytest.mark.integration
def test_lfw_dev_pairs_resolve_to_existing_images(lfw_dir):
    pairs = P.read_pairs(os.path.join(lfw_dir, "pairsDevTrain.txt"))
    assert len(pairs) == 2200 and sum(p.issame for p in pairs) == 1100
    resolver = P.ImageResolver(os.path.join(lfw_dir, "images"))
    for p in pairs[::50]:
        assert os.path.exists(resolver.path(p.name1, p.idx1))
        assert os.path.exists(resolver.path(p.name2, p.idx2))
