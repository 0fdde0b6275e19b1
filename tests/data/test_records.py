"""Triplet records: the fast reusable encoder against protobuf serialization of a fresh Example."""

import numpy as np

from facenet_tf.data import records


def _random_members(rng):
    ids = ["".join(rng.choice(list("abxyzé/._- 019"), rng.randint(0, 30))) for _ in range(3)]
    labels = [int(rng.choice([0, 1, 127, 128, 2**31, 2**62, -1, -129, -2**63]))
              for _ in range(3)]
    return list(zip(ids, labels))


def test_triplet_encoder_equals_a_fresh_example_for_every_record():
    rng = np.random.RandomState(0)
    for generation in (0, 7, 2**40):
        encoder = records.TripletEncoder("step-120", "semi_hard", 0.2, generation)
        for _ in range(100):  # one encoder, many records: nothing may leak between them
            members = _random_members(rng)
            d_ap, d_an = (float(v) for v in rng.choice([0.0, -0.0, 1e-38, 3.4e38, 0.31,
                                                        np.inf], 2))
            info = records.MiningInfo("step-120", "semi_hard", 0.2, generation, d_ap, d_an)
            expected = records.triplet_example_from_ids(members, info).SerializeToString(
                deterministic=True)
            assert encoder.encode(members, d_ap, d_an) == expected
