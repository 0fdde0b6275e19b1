"""tf.data readers over a dataset directory (beam_jobs.build_dataset's output), and its format.

- `load_manifest(dir)`: the checked manifest (DATASET_FORMAT is the one definition of the
  format); `shard_paths(dir)`: its shards in manifest order.
- `image_dataset(...)`: every image once per epoch, preprocessed (or augmented), as
  (image, label) pairs, or dicts with the image id and identity when with_metadata=True.
- `pk_batches(...)`: identity-balanced batches of P identities x K images, streamed.

How pk_batches streams without loading the dataset: build_dataset puts all images of an
identity into one shard, sorted by image id, so they are contiguous. Each shard is read in
turn (several interleaved, in a seeded random shard order) and `group_by_window`, with the
window size of each identity taken from the manifest, closes each identity's window as soon
as its last image is read; only the open windows are in memory. Per pass over the data
("epoch"), every eligible identity gives one block of K images; blocks are shuffled (a seeded
permutation of each run of shuffle_buffer blocks) and batched P at a time, so the P identities
of a batch are always distinct. Identities left over at the end of a pass (fewer than P) are
dropped for that pass. Every order depends on the seed argument only, never on the global
TF seed.

Identities with fewer than K images: with small_identities="replace" (default), an identity
with 2 <= n < K images contributes all n images plus K - n more drawn with replacement from
them; with small_identities="skip" it never appears in P x K batches. Identities with a
single image can give no anchor-positive pair, so they are never among the P identities;
with num_negatives > 0, each batch gets that many extra single-image faces appended (after
the P x K block, each with its own label) to serve only as negatives.
"""

import numpy as np
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.data import augment as aug
from facenet_tf.data import preprocess as pp
from facenet_tf.data import records

# What a dataset directory's manifest.json says it is (written by facenet_tf.pipelines.build_dataset).
DATASET_FORMAT = "facenet_tf.images"
DATASET_VERSION = 1
REQUIRED_FIELDS = ("label_map", "images_per_identity", "num_images", "num_identities",
                   "shards")
SMALL_IDENTITY_POLICIES = ("replace", "skip")
AUTOTUNE = tf.data.AUTOTUNE


def load_manifest(dataset_dir: str) -> dict:
    """Reads and checks a dataset directory's manifest.json (errors name the dir and field)."""
    manifest = io_utils.read_manifest(dataset_dir)
    if manifest.get("format") != DATASET_FORMAT:
        raise ValueError(f"{dataset_dir}: manifest format is {manifest.get('format')!r}, "
                         f"want {DATASET_FORMAT!r}")
    if manifest.get("version") != DATASET_VERSION:
        raise ValueError(f"{dataset_dir}: manifest version {manifest.get('version')!r} is not "
                         f"supported (this code reads version {DATASET_VERSION})")
    for field in REQUIRED_FIELDS:
        if field not in manifest:
            raise ValueError(f"{dataset_dir}: manifest has no field {field!r}")
    return manifest


def shard_paths(dataset_dir: str, manifest: dict | None = None) -> list:
    """Full paths of the dataset's shards, in manifest order; each must exist."""
    return io_utils.listed_shards(dataset_dir, manifest or load_manifest(dataset_dir))


def _epochs(num_epochs):
    if num_epochs is None:
        return tf.data.Dataset.counter()
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs!r}")
    return tf.data.Dataset.range(num_epochs)


def _permute(seed, n):
    """A random permutation of range(n), a pure function of the [2] stateless seed."""
    return tf.argsort(tf.random.stateless_uniform([n], seed))


def _stateless_shuffle(ds: tf.data.Dataset, window: int, seed) -> tf.data.Dataset:
    """Shuffles `ds` within consecutive windows of `window` elements, order from `seed` alone.

    Dataset.shuffle is not used: it mixes the global seed (tf.random.set_seed) into its seed,
    so its order would depend on process state, and with a tensor seed and global seed 0 it
    fails to trace (OperatorNotAllowedInGraphError in random_seed.get_seed).
    """
    def permute(index, elements):
        order = _permute(tf.random.experimental.stateless_fold_in(seed, index),
                         tf.shape(tf.nest.flatten(elements)[0])[0])
        return tf.nest.map_structure(lambda t: tf.gather(t, order), elements)

    return ds.batch(window).enumerate().map(permute).unbatch()


def _shuffled_paths(paths: list, seed) -> tf.data.Dataset:
    """The shard paths in a seeded random order."""
    order = _permute(seed, len(paths))
    return tf.data.Dataset.from_tensor_slices(tf.gather(tf.constant(paths), order))


def _to_model_input(encoded, preprocess, augment, seed):
    image = pp.decode_image(encoded)
    if augment is None:
        return pp.preprocess_image(image, preprocess)
    return aug.augment_image(image, preprocess, augment, seed)


def image_dataset(dataset_dir: str, preprocess: pp.PreprocessConfig, batch_size=None,
                  shuffle_seed=None, augment: aug.AugmentConfig | None = None,
                  augment_seed: int = 0, with_metadata: bool = False, num_epochs=1,
                  shuffle_buffer: int = 1024) -> tf.data.Dataset:
    """Every image of the dataset per epoch, as model input.

    Elements are (image float32 [h, w, 3], label int64), or with with_metadata=True dicts
    {"image", "label", "image_id", "identity"}; batched when batch_size is given (the last
    batch may be smaller). Without shuffle_seed the order is the manifest's shard order and
    the image-id order inside each shard; with it, shards and records are shuffled (seeded,
    differently each epoch). With `augment`, image i of epoch e is augmented with a seed
    derived from (augment_seed, e, i). num_epochs=None repeats forever.
    """
    manifest = load_manifest(dataset_dir)
    paths = shard_paths(dataset_dir, manifest)

    def one_epoch(epoch):
        if shuffle_seed is None:
            ds = tf.data.TFRecordDataset(paths)
        else:
            files = _shuffled_paths(paths, aug.element_seed(shuffle_seed, epoch))
            ds = files.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(paths)),
                                  num_parallel_calls=AUTOTUNE, deterministic=True)
            ds = _stateless_shuffle(ds, shuffle_buffer,
                                    aug.element_seed(shuffle_seed, epoch, 1))
        return ds.enumerate().map(lambda i, s: (epoch, i, s))

    def convert(epoch, index, serialized):
        rec = records.parse_image_example(serialized)
        seed = aug.element_seed(augment_seed, epoch, index)
        image = _to_model_input(rec[records.ENCODED], preprocess, augment, seed)
        image.set_shape([*preprocess.image_size, 3])
        if with_metadata:
            return {"image": image, "label": rec[records.LABEL],
                    "image_id": rec[records.IMAGE_ID], "identity": rec[records.IDENTITY]}
        return image, rec[records.LABEL]

    ds = _epochs(num_epochs).flat_map(one_epoch)
    ds = ds.map(convert, num_parallel_calls=AUTOTUNE, deterministic=True)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    return ds.prefetch(AUTOTUNE)


_PK_SPEC = {records.ENCODED: records.IMAGE_FEATURE_SPEC[records.ENCODED],
            records.LABEL: records.IMAGE_FEATURE_SPEC[records.LABEL]}


def _label_counts(manifest: dict) -> np.ndarray:
    counts = np.zeros([len(manifest["label_map"])], np.int64)
    for identity, label in manifest["label_map"].items():
        counts[label] = manifest["images_per_identity"].get(identity, 0)
    return counts


def pk_batches(dataset_dir: str, p: int, k: int, preprocess: pp.PreprocessConfig, seed: int,
               augment: aug.AugmentConfig | None = None, small_identities: str = "replace",
               num_negatives: int = 0, num_epochs=None, shuffle_buffer: int = 256,
               cycle_length: int = 4, *, start_batch: int = 0) -> tf.data.Dataset:
    """Identity-balanced batches: (images float32 [P*K(+num_negatives), h, w, 3], labels int64).

    See the module docstring for the sampling rules. Batch b holds identity blocks at rows
    [i*K, (i+1)*K) for i < P. Same arguments and seed, same batches. num_epochs counts passes
    over the identities (None = forever). start_batch: the stream begins at that batch (the
    ones before it are skipped before any image is decoded), to resume training mid-stream.
    """
    if p < 1 or k < 1:
        raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
    if small_identities not in SMALL_IDENTITY_POLICIES:
        raise ValueError(f"small_identities must be one of {SMALL_IDENTITY_POLICIES}, "
                         f"got {small_identities!r}")
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch}")
    manifest = load_manifest(dataset_dir)
    paths = shard_paths(dataset_dir, manifest)
    counts = _label_counts(manifest)
    min_images = 2 if small_identities == "replace" else max(k, 2)
    eligible = counts >= min_images
    if eligible.sum() < p:
        raise ValueError(
            f"{dataset_dir}: only {int(eligible.sum())} identities have >= {min_images} images "
            f"(small_identities={small_identities!r}, k={k}); cannot fill p={p}")
    if num_negatives and not (counts == 1).any():
        raise ValueError(f"{dataset_dir}: num_negatives={num_negatives} but the dataset has "
                         "no single-image identity")
    counts_t = tf.constant(counts)
    eligible_t = tf.constant(eligible)
    max_count = int(counts.max())

    def identity_blocks(path):
        # Each window holds exactly one identity's images (its count is in the manifest).
        return tf.data.TFRecordDataset(path).map(_parse_pk).group_by_window(
            key_func=lambda enc, label: label,
            reduce_func=lambda key, window: window.batch(max_count),
            window_size_func=lambda key: tf.gather(counts_t, key))

    def sample_block(eseed, index, encoded, labels):
        bseed = tf.random.experimental.stateless_fold_in(eseed, index)
        perm_seed, extra_seed, image_seed = tf.unstack(
            tf.random.experimental.stateless_split(bseed, num=3))
        n = tf.shape(encoded)[0]
        perm = _permute(perm_seed, n)
        extra = tf.random.stateless_uniform([tf.maximum(k - n, 0)], extra_seed, minval=0,
                                            maxval=n, dtype=tf.int32)
        picks = tf.concat([perm, extra], axis=0)[:k]
        seeds = tf.random.experimental.stateless_split(image_seed, num=k)
        return tf.gather(encoded, picks), tf.fill([k], labels[0]), seeds

    def one_epoch(epoch):
        eseed = aug.element_seed(seed, epoch)
        blocks = _shuffled_paths(paths, eseed).interleave(
            identity_blocks, cycle_length=min(cycle_length, len(paths)),
            num_parallel_calls=AUTOTUNE, deterministic=True)
        blocks = blocks.filter(lambda enc, labels: tf.gather(eligible_t, labels[0]))
        blocks = blocks.enumerate().map(
            lambda i, block: sample_block(eseed, i, *block), num_parallel_calls=AUTOTUNE)
        blocks = _stateless_shuffle(blocks, shuffle_buffer,
                                    tf.random.experimental.stateless_fold_in(eseed, -1))
        return blocks.batch(p, drop_remainder=True)

    def to_inputs(encoded, label, image_seed):
        image = _to_model_input(encoded, preprocess, augment, image_seed)
        image.set_shape([*preprocess.image_size, 3])
        return image, label

    ds = _epochs(num_epochs).flat_map(one_epoch).skip(start_batch)
    ds = ds.unbatch().unbatch()  # P blocks of K -> single images, order kept
    ds = ds.map(to_inputs, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(p * k, drop_remainder=True)
    if num_negatives:
        ds = tf.data.Dataset.zip(ds, _negatives(paths, counts, seed, num_negatives,
                                                start_batch, to_inputs))
        ds = ds.map(lambda pk, neg: (tf.concat([pk[0], neg[0]], 0),
                                     tf.concat([pk[1], neg[1]], 0)))
    return ds.prefetch(AUTOTUNE)


def pk_batches_from_arrays(features, labels, p: int, k: int, seed: int,
                           num_batches: int | None = None) -> tf.data.Dataset:
    """Identity-balanced P x K batches of in-memory examples of any kind (not only faces):
    (features [P*K, ...], labels [P*K]) with P distinct labels of K examples each, in blocks
    of K rows, ready for `model.fit` with facenet_tf.triplets.losses.OnlineTripletLoss.

    Each batch draws P labels among those with >= 2 examples, then K of each label's examples
    (with replacement only for labels that have fewer than K). Batch b depends on (seed, b)
    alone: same arrays and seed, same batches. num_batches: None repeats forever.
    """
    x = np.asarray(features)
    y = np.asarray(labels).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"features ({len(x)}) and labels ({len(y)}) differ in length")
    if p < 1 or k < 1:
        raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
    _, inverse = np.unique(y, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(inverse.max(initial=-1) + 1)]
    eligible = np.array([c for c, m in enumerate(members) if len(m) >= 2])
    if len(eligible) < p:
        raise ValueError(f"only {len(eligible)} labels have >= 2 examples; cannot fill p={p}")

    def batch_rows(b):
        rng = np.random.default_rng([seed, int(b)])
        chosen = rng.choice(eligible, size=p, replace=False)
        return np.concatenate([rng.choice(members[c], size=k, replace=len(members[c]) < k)
                               for c in chosen]).astype(np.int64)

    x_t, y_t = tf.constant(x), tf.constant(y)
    ds = tf.data.Dataset.counter() if num_batches is None else tf.data.Dataset.range(num_batches)
    ds = ds.map(lambda b: tf.ensure_shape(tf.numpy_function(batch_rows, [b], tf.int64),
                                          [p * k]))
    return ds.map(lambda rows: (tf.gather(x_t, rows), tf.gather(y_t, rows))).prefetch(AUTOTUNE)


def _parse_pk(serialized):
    rec = tf.io.parse_single_example(serialized, _PK_SPEC)
    return rec[records.ENCODED], rec[records.LABEL]


def _negatives(paths, counts, seed, num_negatives, start_batch, to_inputs):
    """An endless, seeded stream of batches of single-image identities' faces."""
    single_t = tf.constant(counts == 1)
    nseed = aug.element_seed(seed, -1)

    def one_epoch(epoch):
        eseed = tf.random.experimental.stateless_fold_in(nseed, epoch)
        ds = tf.data.TFRecordDataset(paths).map(_parse_pk).filter(
            lambda enc, label: tf.gather(single_t, label))
        ds = _stateless_shuffle(ds, 1024, tf.random.experimental.stateless_fold_in(eseed, -1))
        return ds.enumerate().map(
            lambda i, r: (r[0], r[1], tf.random.experimental.stateless_fold_in(eseed, i)))

    ds = tf.data.Dataset.counter().flat_map(one_epoch).skip(start_batch * num_negatives)
    return ds.map(to_inputs).batch(num_negatives, drop_remainder=True)
