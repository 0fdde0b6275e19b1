"""Subset sampling and the pure helpers of the mining job, against hand-written loops."""

import numpy as np
import pytest

from facenet_tf.pipelines import beam_utils
from facenet_tf.pipelines import mining_transforms as mt
from tests._triplet_oracle import oracle_band, oracle_pairs


def test_stable_hash_is_sha256_of_the_joined_parts():
    # Not Python's per-process hash(): the same value in every worker process.
    import hashlib
    digest = hashlib.sha256("7\x1fsubset\x1f3\x1fa/1.png".encode()).digest()
    assert beam_utils.stable_hash(7, "subset", 3, "a/1.png") == int.from_bytes(digest[:8], "big") >> 1
    assert beam_utils.stable_hash(7, "subset", 3, "a/2.png") != beam_utils.stable_hash(7, "subset", 3, "a/1.png")
    assert 0 <= mt.derive_seed(7, "subset", 3) < 2 ** 31


def test_sample_subsets_covers_every_identity_before_repeating():
    labels = list(range(10, 20))
    subsets = mt.sample_subsets(labels, num_subsets=6, identities_per_subset=4, seed=3)
    assert len(subsets) == 6
    for s in subsets:
        assert len(s) == 4 and len(set(s)) == 4 and s == sorted(s)
        assert set(s) <= set(labels)
    # 10 identities, 4 per subset: subsets 0-2 are one pass and cover everything.
    assert set().union(*subsets[:3]) == set(labels)
    assert set().union(*subsets[3:6]) == set(labels)


def test_sample_subsets_is_seeded():
    labels = list(range(30))
    a = mt.sample_subsets(labels, 5, 7, seed=1)
    assert a == mt.sample_subsets(list(reversed(labels)), 5, 7, seed=1)
    assert a != mt.sample_subsets(labels, 5, 7, seed=2)


def test_sample_subsets_with_fewer_identities_than_asked():
    assert mt.sample_subsets([4, 2, 9], 2, 45, seed=0) == [[2, 4, 9], [2, 4, 9]]
    with pytest.raises(ValueError, match="no identities"):
        mt.sample_subsets([], 1, 3, seed=0)


def test_num_subsets_for_fraction():
    assert mt.num_subsets_for_fraction(100, 45, 1.0) == 3      # ceil(100 / 45)
    assert mt.num_subsets_for_fraction(100, 45, 0.5) == 2      # ceil(50 / 45)
    assert mt.num_subsets_for_fraction(10, 45, 1.0) == 1
    assert mt.num_subsets_for_fraction(100, 10, 0.01) == 1


def test_anchor_positive_pairs_counts_ordered_pairs_of_real_identities():
    labels = np.array([0, 0, 0, 1, 1, 2, -1, -2, 2, 2, 7])
    # identity 0: 3 images -> 6 ordered pairs; 1: 2 -> 2; 2: 3 -> 6; 7 alone and the
    # negative (extra-negative) labels give none.
    assert mt.anchor_positive_pairs(labels) == 14
    assert mt.anchor_positive_pairs(np.array([-1, -2, 3])) == 0


@pytest.mark.parametrize("strategy", ["semi_hard", "hard", "all", "random"])
def test_selection_function_counts_pairs_with_a_semi_hard_negative(strategy):
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 2, -1, -2, 2, 2], np.int32)
    points = rng.normal(size=(len(labels), 3)).astype(np.float32)
    alpha = 0.8
    select = mt.selection_function(strategy, alpha, {})
    triplets, d, semi = select(points, labels, 3)
    d = np.asarray(d)
    expected_d = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d, expected_d, atol=1e-5)
    # The miner's extra negatives (labels < 0) are singletons here, so the plain-loop oracle's
    # pairs are the miner's anchor-positive pairs.
    expected = sum(1 for a, p in oracle_pairs(labels) if oracle_band(d, labels, a, p, alpha))
    assert 0 < expected < mt.anchor_positive_pairs(labels)  # the case has both outcomes
    assert int(semi) == expected
    # The triplets are those of the shared selection code, whatever the compiled wrapper.
    from facenet_tf.triplets import mining
    direct = mining.select_triplets(points, labels, strategy, alpha=alpha, seed=3)
    np.testing.assert_array_equal(np.asarray(triplets), np.asarray(direct))


def test_parse_record_tags_garbage_as_bad():
    from facenet_tf.data import records
    rec = records.ImageRecord(b"x", "png", 3, "p", "p/1.png", 1, 1)
    good = list(mt.parse_record(("s.tfrecord", records.image_example(rec).SerializeToString())))
    assert good == [rec]
    bad = list(mt.parse_record(("gs://b/s.tfrecord", b"\xff\xfe garbage")))
    assert len(bad) == 1 and bad[0].tag == mt.BAD
    assert bad[0].value["source"] == "s.tfrecord"
    assert "unparseable" in bad[0].value["reason"]


def test_candidates_and_memberships():
    from facenet_tf.data import records
    rec = records.ImageRecord(b"x", "png", 5, "p", "p/1.png", 1, 1)
    label_to_subsets = {5: [0, 2], 6: [1]}
    main = list(mt.main_candidates(rec, label_to_subsets, seed=1))
    assert [k for k, _ in main] == [(0, 5), (2, 5)]
    assert all(v[1] == "p/1.png" for _, v in main)
    neg = list(mt.negative_candidates(rec, label_to_subsets, num_subsets=4, seed=1))
    assert [k for k, _ in neg] == [1, 3]
    chosen = [(9, "b"), (1, "a")]
    assert list(mt.negative_memberships((3, chosen))) == [("a", (3, -1)), ("b", (3, -2))]
    assert list(mt.main_memberships(((3, 5), chosen))) == [("b", (3, 5)), ("a", (3, 5))]


def test_max_selected_images_bounds_what_a_generation_embeds():
    images_per_label = {0: 3, 1: 10, 2: 50, 3: 7}
    # Label 0 in two subsets (its 3 images), 1 in one (5 of its 10), 2 in both (2 x 5 of 50);
    # label 3 in none; 2 subsets x 4 negatives.
    subsets = [[0, 1, 2], [0, 2]]
    assert mt.max_selected_images(images_per_label, subsets, 5, 4) == 3 + 5 + 10 + 8
    # Never more than the dataset holds.
    assert mt.max_selected_images(images_per_label, subsets, 5, 100) == 70
