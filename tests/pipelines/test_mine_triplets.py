"""The offline mining job end to end on tiny data, checked against distances recomputed here."""

import io
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from facenet_tf.pipelines.mine_triplets import MiningConfig, mine_triplets
from tests.pipelines.conftest import write_tiny_dataset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
TOL = 1e-5


def read_dataset_images(dataset_dir):
    """image_id -> (label, encoded) for every parseable record of the dataset's shards."""
    import tensorflow as tf

    from facenet_tf.common import io_utils
    from facenet_tf.data import records
    images = {}
    for name in io_utils.read_manifest(dataset_dir)["shards"]:
        for raw in tf.data.TFRecordDataset(os.path.join(dataset_dir, name)).as_numpy_iterator():
            try:
                rec = records.image_record_from_bytes(raw)
            except Exception:
                continue
            images[rec.image_id] = (rec.label, rec.encoded)
    return images


def oracle_embeddings(model_path, images):
    """image_id -> embedding: PIL decode, (x - 127.5) / 128, the Keras model, L2-normalise.

    Valid for images already at the model's input size (no crop or resize needed).
    """
    import keras
    from PIL import Image
    model = keras.models.load_model(model_path, compile=False)
    out = {}
    for image_id, (_, encoded) in sorted(images.items()):
        try:
            pixels = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"), np.float32)
        except Exception:
            continue
        e = np.asarray(model(((pixels - 127.5) / 128.0)[None], training=False))[0]
        out[image_id] = e / np.linalg.norm(e)
    return out


def sq(a, b):
    return float(sum((x - y) ** 2 for x, y in zip(a, b)))


def read_triplets(output_dir):
    """All triplet records of a generation, in shard order, as dicts of plain values."""
    import tensorflow as tf

    from facenet_tf.common import io_utils
    from facenet_tf.data import records
    manifest = io_utils.read_manifest(output_dir)
    rows, per_shard = [], []
    for name in manifest["shards"]:
        ds = tf.data.TFRecordDataset(os.path.join(output_dir, name))
        n = 0
        for parsed in ds.map(records.parse_triplet_example).as_numpy_iterator():
            rows.append({k: (v.decode() if isinstance(v, bytes) else v)
                         for k, v in parsed.items()})
            n += 1
        per_shard.append(n)
    return manifest, rows, per_shard


def read_stored_images(output_dir, manifest):
    """image_id -> (label, encoded) from a generation's image shards, and the per-shard counts;
    fails on an id stored twice."""
    import tensorflow as tf

    from facenet_tf.data import records
    stored, per_shard = {}, []
    for name in manifest["image_shards"]:
        n = 0
        for raw in tf.data.TFRecordDataset(os.path.join(output_dir, name)).as_numpy_iterator():
            rec = records.image_record_from_bytes(raw)
            assert rec.image_id not in stored, f"{rec.image_id} stored twice"
            stored[rec.image_id] = (rec.label, rec.encoded)
            n += 1
        per_shard.append(n)
    return stored, per_shard


def shard_bytes(output_dir, manifest):
    return [open(os.path.join(output_dir, n), "rb").read()
            for n in manifest["shards"] + manifest["image_shards"]]


def whole_dataset_config(dataset, model, out, strategy, **kw):
    """One subset holding every identity with >= 2 images and all of their images."""
    return MiningConfig(dataset=dataset, model=model, output_dir=str(out), strategy=strategy,
                        identities_per_subset=100, images_per_identity=100, num_subsets=1,
                        num_shards=3, batch_size=8, **kw)


def check_generation(dataset, model, out, alpha, rule):
    """Checks every triplet against `rule(a, p, n, d, members)` with recomputed distances,
    and the manifest's counts against the records; returns (manifest, rows, distances)."""
    images = read_dataset_images(dataset)
    emb = oracle_embeddings(model, images)
    manifest, rows, per_shard = read_triplets(out)
    stored, images_per_shard = read_stored_images(out, manifest)
    assert manifest["num_triplets"] == len(rows) > 0
    assert manifest["triplets_per_shard"] == per_shard
    assert sum(s["triplets"] for s in manifest["subset_stats"]) == len(rows)
    labels = {i: images[i][0] for i in emb}
    counts = {}
    for l in labels.values():
        counts[l] = counts.get(l, 0) + 1
    members = sorted(i for i in emb if counts[labels[i]] >= 2)
    assert manifest["num_images"] == len(members)
    # Every embedded image is stored once, byte for byte as in the dataset.
    assert sorted(stored) == members and manifest["num_images_stored"] == len(members)
    assert manifest["images_per_image_shard"] == images_per_shard
    assert all(stored[i] == images[i] for i in members)
    assert manifest["num_anchor_positive_pairs"] == sum(
        c * (c - 1) for c in counts.values() if c >= 2)
    d = {(x, y): sq(emb[x], emb[y]) for x in members for y in members}
    for r in rows:
        a, p, n = r["anchor/id"], r["positive/id"], r["negative/id"]
        assert a != p and labels[a] == labels[p] == r["anchor/label"] == r["positive/label"]
        assert labels[n] == r["negative/label"] != labels[a]
        assert abs(r["mining/d_ap"] - d[a, p]) < TOL and abs(r["mining/d_an"] - d[a, n]) < TOL
        assert r["mining/alpha"] == pytest.approx(alpha)
        assert rule(a, p, n, d, members, labels), (a, p, n)
    return manifest, rows, d


def test_semi_hard_triplets_satisfy_the_rule_and_counts_match(tiny_dataset, tiny_model_path,
                                                              tmp_path):
    alpha = 0.002  # the untrained model's distances are about 0.01: a selective band
    config = whole_dataset_config(tiny_dataset, tiny_model_path, tmp_path / "gen",
                                  "semi_hard", alpha=alpha, generation=3, seed=5)
    manifest = mine_triplets(config)

    def semi_hard(a, p, n, d, members, labels):
        return d[a, p] - TOL < d[a, n] < d[a, p] + alpha + TOL

    manifest, rows, d = check_generation(tiny_dataset, tiny_model_path, tmp_path / "gen",
                                         alpha, semi_hard)
    assert {r["mining/generation"] for r in rows} == {3}
    assert {r["mining/strategy"] for r in rows} == {"semi_hard"}
    assert manifest["strategy"] == "semi_hard" and manifest["seed"] == 5
    # Every pair with a clearly non-empty band has its triplet, and no pair has two.
    pairs = [(r["anchor/id"], r["positive/id"]) for r in rows]
    assert len(pairs) == len(set(pairs))
    members = sorted(d)
    ids = sorted({x for x, _ in members})
    labels = {r["anchor/id"]: r["anchor/label"] for r in rows}
    labels.update({r["negative/id"]: r["negative/label"] for r in rows})
    found = 0
    for a, p in itertools.permutations(ids, 2):
        if a in labels and p in labels and labels[a] == labels[p]:
            band = [n for n in ids if n in labels and labels[n] != labels[a]
                    and d[a, p] + TOL < d[a, n] < d[a, p] + alpha - TOL]
            if band:
                found += 1
                assert (a, p) in set(pairs)
    assert 0 < found <= len(rows) < manifest["num_anchor_positive_pairs"]
    assert manifest["semi_hard_pair_fraction"] == pytest.approx(
        len(rows) / manifest["num_anchor_positive_pairs"])
    mean_ap = sum(r["mining/d_ap"] for r in rows) / len(rows)
    assert manifest["mean_d_ap"] == pytest.approx(mean_ap, rel=1e-4)
    assert sorted(os.listdir(tmp_path / "gen")) == sorted(
        manifest["shards"] + manifest["image_shards"] + ["manifest.json"])


def test_hard_negatives_are_the_nearest_other_identity(tiny_dataset, tiny_model_path, tmp_path):
    alpha = 0.002  # selective for the manifest's semi-hard statistic; "hard" ignores it
    mine_triplets(whole_dataset_config(tiny_dataset, tiny_model_path, tmp_path / "gen", "hard",
                                       alpha=alpha))

    def hard(a, p, n, d, members, labels):
        nearest = min(d[a, x] for x in members if labels[x] != labels[a])
        return d[a, n] <= nearest + TOL

    manifest, rows, d = check_generation(tiny_dataset, tiny_model_path, tmp_path / "gen", alpha,
                                         hard)
    assert len(rows) == manifest["num_anchor_positive_pairs"]  # one per ordered pair
    # The manifest's share of pairs with a semi-hard negative, for a strategy that does not
    # select them: every pair counted by a loop here, give or take pairs within TOL of a band
    # edge (the job's float32 distances may fall on either side).
    labels = {r["anchor/id"]: r["anchor/label"] for r in rows}
    ids = sorted(labels)
    clear = near_edge = 0
    for a, p in itertools.permutations(ids, 2):
        if labels[a] != labels[p]:
            continue
        others = [n for n in ids if labels[n] != labels[a]]
        if any(d[a, p] + TOL < d[a, n] < d[a, p] + alpha - TOL for n in others):
            clear += 1
        elif any(d[a, p] - TOL < d[a, n] < d[a, p] + alpha + TOL for n in others):
            near_edge += 1
    with_semi_hard = round(manifest["semi_hard_pair_fraction"]
                           * manifest["num_anchor_positive_pairs"])
    assert 0 < clear <= with_semi_hard <= clear + near_edge
    assert with_semi_hard < manifest["num_anchor_positive_pairs"]


def test_all_triplets_violate_the_margin(tiny_dataset, tiny_model_path, tmp_path):
    alpha = 0.003
    mine_triplets(whole_dataset_config(tiny_dataset, tiny_model_path, tmp_path / "gen", "all",
                                       alpha=alpha))

    def violates(a, p, n, d, members, labels):
        return d[a, n] < d[a, p] + alpha + TOL

    _, rows, d = check_generation(tiny_dataset, tiny_model_path, tmp_path / "gen", alpha,
                                  violates)
    written = {(r["anchor/id"], r["positive/id"], r["negative/id"]) for r in rows}
    assert len(written) == len(rows)
    labels = {r[k + "/id"]: r[k + "/label"] for r in rows for k in ("anchor", "negative")}
    ids = sorted(labels)
    clear = {(a, p, n) for a, p, n in itertools.permutations(ids, 3)
             if labels[a] == labels[p] != labels[n] and d[a, n] < d[a, p] + alpha - TOL}
    assert clear <= written


def test_same_seed_same_triplets_other_seed_others(tiny_dataset, tiny_model_path, tmp_path):
    def run(name, seed):
        config = MiningConfig(tiny_dataset, tiny_model_path, str(tmp_path / name),
                              strategy="random", identities_per_subset=3, images_per_identity=3,
                              num_subsets=3, negatives_per_subset=2, seed=seed, num_shards=2,
                              batch_size=4)
        return mine_triplets(config)

    m1, m2, m3 = run("a", 11), run("b", 11), run("c", 12)
    assert shard_bytes(tmp_path / "a", m1) == shard_bytes(tmp_path / "b", m2)
    assert m1["subsets"] == m2["subsets"]
    assert shard_bytes(tmp_path / "a", m1) != shard_bytes(tmp_path / "c", m3)
    # 3 identities x 3 images + 2 extra negatives per subset; anchors only from the subset.
    assert [s["images"] for s in m1["subset_stats"]] == [11, 11, 11]
    assert m1["num_anchor_positive_pairs"] == 3 * 3 * 3 * 2
    _, rows, _ = read_triplets(tmp_path / "a")
    subset_labels = [set(s["labels"]) for s in m1["subsets"]]
    for r in rows:
        assert any(r["anchor/label"] in s for s in subset_labels)
        assert r["anchor/label"] != 6  # the one-image identity is never an anchor


def test_corrupt_records_are_counted_and_listed(tiny_model_path, tmp_path):
    dataset = write_tiny_dataset(tmp_path / "ds", [3, 3, 3], corrupt_record=True,
                                 corrupt_image=True)
    manifest = mine_triplets(whole_dataset_config(dataset, tiny_model_path, tmp_path / "gen",
                                                  "hard"))
    assert manifest["num_bad_records"] == 2
    reasons = sorted(b["reason"].split(":")[0] for b in manifest["bad_records"])
    assert reasons == ["undecodable image", "unparseable image record"]
    undecodable = next(b["reason"] for b in manifest["bad_records"]
                       if b["reason"].startswith("undecodable"))
    # TF's own words for the garbage PNG, without the op location around them.
    assert undecodable.startswith("undecodable image: Unknown image file format")
    assert "\n" not in undecodable and "{{" not in undecodable and "[Op:" not in undecodable
    assert {b["source"] for b in manifest["bad_records"]} == {
        "person_00/broken.png", "images-00000-of-00002.tfrecord"}
    assert manifest["counters"]["bad_records"] == 2
    assert manifest["num_images"] == 9 and manifest["num_triplets"] == 9 * 2


def test_bad_inputs_fail_before_the_pipeline(tiny_dataset, tiny_model_path, tmp_path):
    out = str(tmp_path / "gen")

    def mine(dataset=tiny_dataset, model=tiny_model_path):
        return mine_triplets(MiningConfig(dataset, model, out, num_subsets=1))

    with pytest.raises(FileNotFoundError, match="nowhere.keras"):
        mine(model=str(tmp_path / "nowhere.keras"))
    not_a_model = tmp_path / "model.txt"
    not_a_model.write_text("hello")
    with pytest.raises(ValueError, match="model.txt"):
        mine(model=str(not_a_model))
    with pytest.raises(ValueError, match="empty"):
        mine(dataset=write_tiny_dataset(tmp_path / "empty", []))
    with pytest.raises(ValueError, match="at least 2"):
        mine(dataset=write_tiny_dataset(tmp_path / "one", [3]))
    with pytest.raises(ValueError, match="no identity has 2"):
        mine(dataset=write_tiny_dataset(tmp_path / "singles", [1, 1, 1]))
    with pytest.raises(FileNotFoundError, match="manifest"):
        mine(dataset=str(tmp_path))
    with pytest.raises(ValueError, match="strategy"):
        MiningConfig(tiny_dataset, tiny_model_path, out, strategy="hardest")
    with pytest.raises(ValueError, match="colour"):
        MiningConfig(tiny_dataset, tiny_model_path, out, strategy_options={"colour": 1})
    assert not os.path.exists(out)


def test_a_complete_generation_is_not_overwritten(tiny_dataset, tiny_model_path, tmp_path):
    out = tmp_path / "gen"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    with pytest.raises(FileExistsError, match="complete generation"):
        mine_triplets(MiningConfig(tiny_dataset, tiny_model_path, str(out), num_subsets=1))


def test_cli_help_documents_every_option():
    result = subprocess.run([sys.executable, "-m", "beam_jobs.mine_triplets", "--help"],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    text = result.stdout + result.stderr
    for flag in ("dataset", "model", "output_dir", "strategy", "alpha", "identities_per_subset",
                 "images_per_identity", "num_subsets", "subset_fraction", "negatives_per_subset",
                 "seed", "generation", "num_shards", "batch_size", "strategy_options"):
        assert f"--{flag}" in text, flag
    assert "--direct_num_workers" in text  # points at the Beam pipeline options


@pytest.mark.slow
def test_cli_multiprocess_run_equals_in_process_run(tmp_path, tiny_model_path):
    """The CLI on DirectRunner workers in 2 processes writes the in-process bytes."""
    dataset = write_tiny_dataset(tmp_path / "ds", [3, 3, 3, 2])
    common = dict(strategy="semi_hard", identities_per_subset=2, images_per_identity=3,
                  num_subsets=3, seed=4, num_shards=2, batch_size=4, generation=1)
    reference = mine_triplets(MiningConfig(dataset, tiny_model_path, str(tmp_path / "inproc"),
                                           **common))
    args = [f"--{k}={v}" for k, v in common.items()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run(
        [sys.executable, "-m", "beam_jobs.mine_triplets", f"--dataset={dataset}",
         f"--model={tiny_model_path}", f"--output_dir={tmp_path / 'multi'}", *args,
         "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from facenet_tf.common import io_utils
    multi = io_utils.read_manifest(str(tmp_path / "multi"))
    assert multi["num_triplets"] == reference["num_triplets"] > 0
    assert multi["shards"] == reference["shards"]
    assert shard_bytes(tmp_path / "multi", multi) == shard_bytes(tmp_path / "inproc", reference)
    assert multi["run_info"]["flags"]["seed"] == 4


@pytest.mark.integration
@pytest.mark.slow
def test_orl_through_build_dataset(orl_dir, tmp_path):
    """ORL ingested by build_dataset, an untrained 112x92 model: semi-hard rule and counts."""
    from facenet_tf.pipelines.build_dataset import build_dataset
    from tests.conftest import make_tiny_embedding_model
    dataset = str(tmp_path / "orl")
    build_dataset(orl_dir, dataset, num_shards=2)
    model_path = str(tmp_path / "orl.keras")
    make_tiny_embedding_model(input_shape=(112, 92, 3), seed=1).save(model_path)
    alpha = 0.01
    manifest = mine_triplets(MiningConfig(
        dataset, model_path, str(tmp_path / "gen"), strategy="semi_hard", alpha=alpha,
        identities_per_subset=40, images_per_identity=10, num_subsets=1, num_shards=4,
        batch_size=50))
    assert manifest["num_images"] == 400 and manifest["num_bad_records"] == 0

    def semi_hard(a, p, n, d, members, labels):
        return d[a, p] - TOL < d[a, n] < d[a, p] + alpha + TOL

    check_generation(dataset, model_path, str(tmp_path / "gen"), alpha, semi_hard)


def test_portable_runner_with_a_separate_worker_process_equals_direct_run(
        tmp_path, tiny_model_path, monkeypatch):
    """Beam's portability framework (the path Flink and Spark take: pickled DoFns, an SDK
    worker process with no driver-side state) writes the in-process DirectRunner's bytes."""
    dataset = write_tiny_dataset(tmp_path / "ds", [3, 3, 3, 2])
    common = dict(strategy="semi_hard", identities_per_subset=2, images_per_identity=3,
                  num_subsets=3, seed=4, num_shards=2, batch_size=4, generation=1)
    reference = mine_triplets(MiningConfig(dataset, tiny_model_path, str(tmp_path / "direct"),
                                           **common))
    # The loopback worker pool starts its SDK worker as `python -c ...` from PATH.
    monkeypatch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable),
                                                os.environ.get("PATH", "")]))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [REPO_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    portable = mine_triplets(
        MiningConfig(dataset, tiny_model_path, str(tmp_path / "portable"), **common),
        pipeline_options=["--runner=PortableRunner", "--job_endpoint=embed",
                          "--environment_type=LOOPBACK",
                          "--experiments=use_loopback_process_worker"])
    assert portable["num_triplets"] == reference["num_triplets"] > 0
    assert portable["subset_stats"] == reference["subset_stats"]
    assert shard_bytes(tmp_path / "portable", portable) == shard_bytes(tmp_path / "direct",
                                                                        reference)
    assert portable["counters"]["images_embedded"] == reference["counters"]["images_embedded"]
