"""The pieces of the offline triplet-mining job: subset sampling, and its Beam DoFns.

Pure, picklable and free of global state, so the same code runs in-process, in local
worker processes and on remote runners. The pipeline itself is wired in
facenet_tf.pipelines.mine_triplets.
"""

import collections
import functools
import hashlib
import os
import time

import apache_beam as beam
import numpy as np
import tensorflow as tf

from facenet_tf.data import preprocess, records
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.models.inference import XLA_MAX_BATCH
from facenet_tf.pipelines.beam_utils import ms_since, stable_hash
from facenet_tf.triplets import distances, mining

NAMESPACE = "mine_triplets"
# Counters of milliseconds spent per stage (summed over workers), for profiling the job;
# embed_ms includes decoding and preprocessing the images (write_ms: beam_utils.WriteShard).
EMBED_MS, MINE_MS = "embed_ms", "mine_ms"
BAD = "bad"
STATS = "stats"


def derive_seed(seed: int, *parts) -> int:
    """A seed in [0, 2**31) for one sub-task (e.g. one subset) of a job seeded with `seed`."""
    return stable_hash("seed", seed, *parts) % (2 ** 31)


def sample_subsets(labels, num_subsets: int, identities_per_subset: int, seed: int):
    """Chooses the identities of each subset: a list of `num_subsets` sorted label lists.

    Identities are dealt from seeded permutations in consecutive chunks, so the subsets cover
    every identity once before any repeats; a short last chunk of a permutation is topped up
    from that permutation's start. Each subset holds min(identities_per_subset, len(labels))
    distinct identities.
    """
    labels = sorted(int(l) for l in labels)
    if not labels:
        raise ValueError("sample_subsets: no identities to sample from")
    if num_subsets < 1 or identities_per_subset < 1:
        raise ValueError(f"num_subsets ({num_subsets}) and identities_per_subset "
                         f"({identities_per_subset}) must be >= 1")
    k = min(identities_per_subset, len(labels))
    per_pass = -(-len(labels) // k)
    subsets = []
    for s in range(num_subsets):
        round_index, chunk = divmod(s, per_pass)
        rng = np.random.default_rng([seed, round_index])
        perm = [labels[i] for i in rng.permutation(len(labels))]
        members = perm[chunk * k:(chunk + 1) * k]
        members += perm[:k - len(members)]
        subsets.append(sorted(members))
    return subsets


def num_subsets_for_fraction(num_identities: int, identities_per_subset: int,
                             fraction: float) -> int:
    """How many subsets cover `fraction` of the identities (at least one)."""
    k = min(identities_per_subset, num_identities)
    return max(1, int(np.ceil(fraction * num_identities / k)))


def parse_record(element):
    """(file name, serialized) -> ImageRecord, or a tagged bad-record entry with the reason."""
    filename, serialized = element
    try:
        record = records.image_record_from_bytes(serialized)
    except Exception as e:  # any undecodable bytes are one bad record, not a failed job
        beam.metrics.Metrics.counter(NAMESPACE, "bad_records").inc()
        yield beam.pvalue.TaggedOutput(BAD, {
            "source": os.path.basename(str(filename)),
            "record_sha256": hashlib.sha256(serialized).hexdigest()[:16],
            "reason": f"unparseable image record: {e}"})
        return
    yield record


def main_candidates(record, label_to_subsets, seed: int):
    """One ((subset, label), (rank, image_id)) per subset that holds the record's identity.

    The rank is a seeded hash, so keeping the smallest ranks per key is a seeded sample of
    that identity's images which is the same whatever order the records arrive in.
    """
    for subset in label_to_subsets.get(record.label, ()):
        yield (subset, record.label), (stable_hash(seed, "img", subset, record.image_id),
                                       record.image_id)


def negative_candidates(record, label_to_subsets, num_subsets: int, seed: int):
    """One (subset, (rank, image_id)) per subset NOT holding the record's identity."""
    inside = set(label_to_subsets.get(record.label, ()))
    for subset in range(num_subsets):
        if subset not in inside:
            yield subset, (stable_hash(seed, "neg", subset, record.image_id), record.image_id)


def join_selection(element):
    """(image_id, {records, main, negatives}) -> (ImageRecord, memberships) for chosen images.

    memberships: sorted (subset, mining_label) pairs; random extra negatives get a negative
    mining label unique in their subset, so selection can never pair them as anchor-positive.
    Duplicate image ids are reported as bad records; the smallest encoding is kept.
    """
    image_id, groups = element
    recs = sorted(groups["records"], key=lambda r: r.encoded)
    memberships = sorted(set(groups["main"]) | set(groups["negatives"]))
    for dup in recs[1:]:
        beam.metrics.Metrics.counter(NAMESPACE, "bad_records").inc()
        yield beam.pvalue.TaggedOutput(BAD, {
            "source": image_id, "reason": "duplicate image id (another record was kept)",
            "record_sha256": hashlib.sha256(dup.encoded).hexdigest()[:16]})
    if recs and memberships:
        yield recs[0], memberships


def selected_image_id(item) -> str:
    """The image id of a selected (ImageRecord, memberships) item (its embedding batch key)."""
    return item[0].image_id


def max_selected_images(images_per_label: dict, subsets, images_per_identity: int,
                        negatives_per_subset: int) -> int:
    """At most how many distinct images one generation embeds: per identity, its images or
    images_per_identity per subset holding it, whichever is fewer, plus the negatives."""
    uses = collections.Counter(label for members in subsets for label in members)
    main = sum(min(images_per_label.get(label, 0), n * images_per_identity)
               for label, n in uses.items())
    return min(sum(images_per_label.values()), main + len(subsets) * negatives_per_subset)


def main_memberships(element):
    """((subset, label), [(rank, image_id), ...]) -> (image_id, (subset, label)) each."""
    (subset, label), chosen = element
    for _, image_id in chosen:
        yield image_id, (subset, label)


def negative_memberships(element):
    """(subset, [(rank, image_id), ...]) -> (image_id, (subset, -1 - k)) each."""
    subset, chosen = element
    for k, (_, image_id) in enumerate(sorted(chosen)):
        yield image_id, (subset, -1 - k)


class EmbedImages(beam.DoFn):
    """Embeds batches of (ImageRecord, memberships); the model is loaded once per worker.

    Each batch (from beam_utils.KeyedBatches: the same batches on every runner) is decoded,
    preprocessed with the embedder's own preprocessing and embedded in one TF call, always at
    the fixed batch size (padded with copies of its first image). A batch with an
    undecodable image is redone image by image, and that image becomes a bad record.
    """

    def __init__(self, model_path: str, preprocess_dict: dict | None, batch_size: int,
                 shared_model=None):
        self._model_path = model_path
        self._preprocess_dict = preprocess_dict
        self._batch_size = batch_size
        # A beam.utils.shared.Shared handle: in a process that already loaded the model
        # through it (the in-process runner's driver), setup() reuses that model.
        self._shared = shared_model
        self._embedded = beam.metrics.Metrics.counter(NAMESPACE, "images_embedded")
        self._bad = beam.metrics.Metrics.counter(NAMESPACE, "bad_records")
        self._embed_ms = beam.metrics.Metrics.counter(NAMESPACE, EMBED_MS)

    def setup(self):
        self._embedder = load_job_embedder(self._model_path, self._preprocess_dict,
                                           self._batch_size, self._shared)

    def _embed_one_by_one(self, chunk):
        """Embeddings of a chunk's decodable images, those items, and bad-record entries."""
        pixels, kept, bad = [], [], []
        for item in chunk:
            try:
                pixels.append(self._embedder.preprocess_encoded([item[0].encoded])[0])
            except tf.errors.OpError as e:
                bad.append({"source": item[0].image_id,
                            "reason": "undecodable image: " + preprocess.decode_error_message(e)})
                continue
            kept.append(item)
        if not kept:
            return np.zeros((0, self._embedder.embedding_dim), np.float32), kept, bad
        return self._embedder.embed_pixels(np.stack(self._padded(pixels)))[:len(kept)], kept, bad

    def _padded(self, items: list) -> list:
        """items topped up to batch_size with copies of the first (one traced batch shape)."""
        return items + items[:1] * (self._batch_size - len(items))

    def process(self, batch):
        batch = list(batch)
        for start in range(0, len(batch), self._batch_size):
            chunk = batch[start:start + self._batch_size]
            started = time.perf_counter()
            encoded = [record.encoded for record, _ in chunk]
            try:
                embeddings = self._embedder.embed_encoded(self._padded(encoded))[:len(chunk)]
                kept, bad = chunk, []
            except tf.errors.OpError:
                embeddings, kept, bad = self._embed_one_by_one(chunk)
            self._embed_ms.inc(ms_since(started))
            for entry in bad:
                self._bad.inc()
                yield beam.pvalue.TaggedOutput(BAD, entry)
            self._embedded.inc(len(kept))
            for (record, memberships), embedding in zip(kept, embeddings):
                yield record, memberships, embedding.astype(np.float32)


def load_job_embedder(model_path: str, preprocess_dict: dict | None, batch_size: int,
                      shared_model=None):
    """The job's embedder (facenet_tf.inference.embedders.load_embedder), through `shared_model` if
    given.

    The job always embeds whole batches of batch_size, so a `.keras` model's XLA build for
    small batches is left out unless batch_size is small.
    """
    config = preprocess.PreprocessConfig.from_dict(preprocess_dict) if preprocess_dict else None
    xla = XLA_MAX_BATCH if batch_size <= XLA_MAX_BATCH else 0

    def load():
        return load_embedder(model_path, preprocess=config, xla_max_batch=xla)

    return load() if shared_model is None else shared_model.acquire(load)


def by_subset(element):
    """(record, memberships, embedding) -> (subset, (image_id, label, mining_label, embedding))
    for each subset; the encoded image is left out (the image shards store it once)."""
    record, memberships, embedding = element
    for subset, mining_label in memberships:
        yield subset, (record.image_id, record.label, mining_label, embedding)


def by_image_shard(element, num_shards: int):
    """(record, memberships, embedding) -> (image shard, record)."""
    record = element[0]
    yield stable_hash("image", record.image_id) % num_shards, record


def anchor_positive_pairs(labels: np.ndarray) -> int:
    """Ordered anchor-positive pairs (a != p, same label) among the labels >= 0."""
    _, counts = np.unique(labels[labels >= 0], return_counts=True)
    return int(np.sum(counts * (counts - 1)))


def selection_function(strategy: str, alpha: float, options: dict):
    """A function (embeddings, labels, int seed) -> (triplets, squared distances, number of
    anchor-positive pairs with a semi-hard negative) that runs one tf.function, traced once per
    process for every subset size (and kept for later generations), so mining a subset is one
    TF call instead of a few hundred eager ops. It draws what select_triplets would with `seed`.

    The semi-hard count comes from facenet_tf.triplets.mining's own semi-hard rule: it is the number of
    semi_hard triplets (one per pair whose band d(a,p) < d(a,n) < d(a,p) + alpha is not empty);
    for any other selection a second, deterministic semi_hard selection is counted.
    """
    return _selection_function(strategy, float(alpha), tuple(sorted(options.items())))


@functools.lru_cache(maxsize=None)
def _selection_function(strategy: str, alpha: float, option_items: tuple):
    options = dict(option_items)
    resolved = mining.resolve_options(strategy, options)
    counts_semi_hard = strategy == "semi_hard" and resolved["fallback"] == "skip"

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                  tf.TensorSpec([None], tf.int32),
                                  tf.TensorSpec([2], tf.int32)], autograph=False)
    def select(embeddings, labels, seed):
        triplets = mining.select_triplets(embeddings, labels, strategy, alpha=alpha, seed=seed,
                                          **options)
        if counts_semi_hard:
            semi_hard = triplets
        else:
            semi_hard = mining.select_triplets(embeddings, labels, "semi_hard", alpha=alpha,
                                               seed=seed, choose="hardest")
        return (triplets, distances.tf_squared_l2_matrix(embeddings),
                tf.shape(semi_hard)[0])

    def run(embeddings, labels, seed: int):
        return select(embeddings, labels, mining.stateless_seed(seed))

    return run


class MineSubset(beam.DoFn):
    """Mines one subset's triplets with facenet_tf.triplets.mining.select_triplets.

    Main output, per shard that gets some of the subset's triplets: (shard, rows), rows of
    ((sort key, subset, anchor id, positive id, negative id), (labels), d_ap, d_an). Tagged
    STATS output: the subset's counts and distance sums for the manifest.
    """

    def __init__(self, strategy: str, alpha: float, seed: int, num_shards: int,
                 strategy_options: dict | None = None):
        self._strategy = strategy
        self._alpha = alpha
        self._seed = seed
        self._num_shards = num_shards
        self._options = dict(strategy_options or {})
        self._mined = beam.metrics.Metrics.counter(NAMESPACE, "subsets_mined")
        self._triplets = beam.metrics.Metrics.counter(NAMESPACE, "triplets_mined")
        self._mine_ms = beam.metrics.Metrics.counter(NAMESPACE, MINE_MS)

    def setup(self):
        self._select = selection_function(self._strategy, self._alpha, self._options)

    def process(self, element):
        started = time.perf_counter()
        subset, items = element
        items = sorted(items, key=lambda item: (item[0], item[2]))
        ids = [item[0] for item in items]
        identity = [int(item[1]) for item in items]
        labels = np.array([item[2] for item in items], np.int32)
        embeddings = np.stack([item[3] for item in items]).astype(np.float32)
        pairs = anchor_positive_pairs(labels)
        triplets, with_semi_hard = np.zeros((0, 3), np.int64), 0
        d_ap = d_an = np.zeros(0)
        if pairs:
            triplets, distances, with_semi_hard = self._select(
                embeddings, labels, derive_seed(self._seed, "subset", subset))
            triplets = np.asarray(triplets, np.int64).reshape(-1, 3)
            distances = np.asarray(distances)
            d_ap = distances[triplets[:, 0], triplets[:, 1]].astype(float)
            d_an = distances[triplets[:, 0], triplets[:, 2]].astype(float)
        per_shard = {}
        for (a, p, n), ap, an in zip(triplets.tolist(), d_ap.tolist(), d_an.tolist()):
            key = stable_hash(self._seed, subset, ids[a], ids[p], ids[n])
            per_shard.setdefault(key % self._num_shards, []).append(
                ((key, subset, ids[a], ids[p], ids[n]), (identity[a], identity[p], identity[n]),
                 ap, an))
        self._mine_ms.inc(ms_since(started))
        for shard, rows in sorted(per_shard.items()):
            yield shard, rows
        self._mined.inc()
        self._triplets.inc(len(triplets))
        yield beam.pvalue.TaggedOutput(STATS, {
            "subset": subset, "images": len(ids),
            "identities": len({int(l) for l in labels if l >= 0}),
            "anchor_positive_pairs": pairs, "pairs_with_semi_hard_negative": int(with_semi_hard),
            "triplets": len(triplets), "sum_d_ap": float(d_ap.sum()),
            "sum_d_an": float(d_an.sum())})


def serialize_triplet_rows(model_tag: str, strategy: str, alpha: float, generation: int,
                           packs):
    """One shard's triplet records, from MineSubset's row packs, sorted by their key."""
    encoder = records.TripletEncoder(model_tag, strategy, alpha, generation)
    for (_, _, a, p, n), labels, d_ap, d_an in sorted(row for pack in packs for row in pack):
        yield encoder.encode(zip((a, p, n), labels), d_ap, d_an)


def serialize_image_records(recs):
    """One image shard's records: each embedded image once, sorted by id."""
    for rec in sorted(recs, key=lambda r: r.image_id):
        yield records.image_example(rec).SerializeToString(deterministic=True)
