"""FaceNet's triplet loss (eq. 3 of Schroff et al. 2015) for offline and online triplets.

All losses return per-example vectors, never a scalar: Keras 3 multiplies scalar losses (and their
gradients) by the replica count under MirroredStrategy. Math is float32 even under a
mixed_float16 policy. Online mining uses `facenet_tf.triplets.mining.select_triplets`, the same function
the offline Beam miner calls, and under tf.distribute mines over the GLOBAL batch.
"""

import keras
import tensorflow as tf

from facenet_tf.triplets import distances, mining

STAT_NAMES = ("num_triplets", "fraction_active", "mean_d_ap", "mean_d_an")


def triplet_distances(anchor, positive, negative):
    """Squared L2 d(a,p) and d(a,n) per triplet, as float32 [T] each."""
    return distances.tf_squared_l2(anchor, positive), distances.tf_squared_l2(anchor, negative)


def _active(d_ap, d_an, alpha):
    """1.0 for each triplet with positive loss, else 0.0."""
    return tf.cast(d_ap - d_an + tf.cast(alpha, tf.float32) > 0, tf.float32)


def triplet_loss(anchor, positive, negative, alpha=0.2):
    """Per-triplet [||a - p||^2 - ||a - n||^2 + alpha]_+ as float32 [T] (the paper's eq. 3)."""
    d_ap, d_an = triplet_distances(anchor, positive, negative)
    return tf.nn.relu(d_ap - d_an + tf.cast(alpha, tf.float32))


def triplet_stats(embeddings, labels, triplets, alpha=0.2):
    """Batch statistics of mined triplets, as a dict of float32 scalars.

    num_triplets, fraction_active (share with positive loss), mean_d_ap and mean_d_an (squared
    L2), and num_pairs (anchor-positive pairs in the batch, to judge how many found a negative).
    Means are 0 when there is no triplet.
    """
    e = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    y = tf.reshape(tf.convert_to_tensor(labels), [-1])
    t = tf.convert_to_tensor(triplets)
    d_ap, d_an = triplet_distances(*(tf.gather(e, t[:, i]) for i in range(3)))
    count = tf.cast(tf.shape(t)[0], tf.float32)
    active = _active(d_ap, d_an, alpha)
    same = tf.cast(tf.equal(y[:, None], y[None, :]), tf.float32)
    return {
        "num_triplets": count,
        "fraction_active": tf.math.divide_no_nan(tf.reduce_sum(active), count),
        "mean_d_ap": tf.math.divide_no_nan(tf.reduce_sum(d_ap), count),
        "mean_d_an": tf.math.divide_no_nan(tf.reduce_sum(d_an), count),
        "num_pairs": tf.reduce_sum(same) - tf.cast(tf.shape(y)[0], tf.float32),
    }


def _global_batch(embeddings, labels):
    """Gathers embeddings and labels from all replicas (gradients flow back through the gather).

    Returns (global embeddings, global labels, first row of this replica's slice). Outside a
    multi-replica context it returns the inputs and 0.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return embeddings, labels, 0
    sizes = ctx.all_gather(tf.shape(embeddings)[:1], axis=0)
    start = tf.reduce_sum(sizes[:ctx.replica_id_in_sync_group])
    gathered = _dense_gradient(ctx.all_gather(embeddings, axis=0))
    return gathered, ctx.all_gather(labels, axis=0), start


@tf.custom_gradient
def _dense_gradient(x):
    """Identity whose gradient is dense: all_gather's gradient all-reduce rejects IndexedSlices."""
    return tf.identity(x), lambda dy: tf.convert_to_tensor(dy)


def _labels_vector(y_true):
    y = tf.convert_to_tensor(y_true)
    if y.dtype.is_floating:
        y = tf.round(y)
    return tf.reshape(tf.cast(y, tf.int64), [-1])


def _batch_seed(seed, labels):
    """A stateless seed from the user's seed and the batch's labels.

    Identical on every replica (they all see the global labels), yet different across batches.
    """
    weights = tf.range(1, tf.size(labels, out_type=tf.int64) + 1, dtype=tf.int64)
    mix = tf.math.floormod(tf.reduce_sum(labels * 7919 * weights + weights), 2**31 - 1)
    return tf.stack([tf.constant((seed or 0) % 2**31, tf.int32), tf.cast(mix, tf.int32)])


def _default_alpha(strategy, alpha):
    return (1.0 if strategy == "tfa_semi_hard" else 0.2) if alpha is None else alpha


def _pair_distances(anchor, other, distance):
    """Distances used in the loss: squared L2, except tfa_semi_hard's L2 or angular options."""
    if distance == "angular":
        a = tf.math.l2_normalize(anchor, axis=-1)
        o = tf.math.l2_normalize(other, axis=-1)
        return 1.0 - tf.reduce_sum(a * o, axis=-1)
    sq = distances.tf_squared_l2(anchor, other)
    if distance == "L2":
        positive = sq > 0
        return tf.where(positive, tf.sqrt(tf.where(positive, sq, 1.0)), 0.0)
    return sq


@keras.saving.register_keras_serializable(package="facenet_tf")
class OfflineTripletLoss(keras.losses.Loss):
    """Loss for offline-mined triplets: y_pred [B, 3, D] = (anchor, positive, negative) embeddings.

    y_true is ignored; returns the per-triplet loss [B] (Keras averages it over the batch).
    """

    def __init__(self, alpha=0.2, name="offline_triplet_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = float(alpha)

    def call(self, y_true, y_pred):
        e = tf.cast(y_pred, tf.float32)
        return triplet_loss(e[:, 0], e[:, 1], e[:, 2], self.alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="facenet_tf")
class OnlineTripletLoss(keras.losses.Loss):
    """Triplet loss with in-batch mining: y_true labels [B] or [B, 1], y_pred embeddings [B, D].

    Mines with `mining.select_triplets(strategy, alpha, **options)` over the global batch (all
    replicas) and returns a per-example vector [B]: example i carries the loss of the triplets
    anchored at i, scaled by B_global / T, so Keras's mean over the batch equals the mean loss
    over the T mined triplets, on one device or many (same loss and gradients). No triplet gives
    zeros. alpha defaults to 0.2, or 1.0 (tensorflow-addons' margin) for "tfa_semi_hard".
    """

    def __init__(self, strategy="semi_hard", alpha=None, seed=None, name="online_triplet_loss",
                 reduction="sum_over_batch_size", **options):
        super().__init__(name=name, reduction=reduction)
        resolved = mining.resolve_options(strategy, options)
        self._distance = resolved.get("distance", "squared-L2")
        self.strategy = strategy
        self.alpha = float(_default_alpha(strategy, alpha))
        self.seed = seed
        self.options = dict(options)

    def call(self, y_true, y_pred):
        emb = tf.cast(y_pred, tf.float32)
        labels = _labels_vector(y_true)
        g_emb, g_labels, start = _global_batch(emb, labels)
        triplets = mining.select_triplets(
            tf.stop_gradient(g_emb), g_labels, self.strategy, alpha=self.alpha,
            seed=_batch_seed(self.seed, g_labels), **self.options)
        a, p, n = (tf.gather(g_emb, triplets[:, i]) for i in range(3))
        per_triplet = tf.nn.relu(_pair_distances(a, p, self._distance)
                                 - _pair_distances(a, n, self._distance) + self.alpha)
        n_global = tf.shape(g_emb)[0]
        per_anchor = tf.math.unsorted_segment_sum(per_triplet, triplets[:, 0], n_global)
        scale = tf.cast(n_global, tf.float32) / tf.cast(tf.maximum(tf.shape(triplets)[0], 1),
                                                          tf.float32)
        return (per_anchor * scale)[start:start + tf.shape(emb)[0]]

    def get_config(self):
        return {**super().get_config(), "strategy": self.strategy, "alpha": self.alpha,
                "seed": self.seed, **self.options}


class _BatchStats:
    """Mines a batch once for every TripletStat that shares it.

    Keras passes the same y_true / y_pred tensors to each metric of one step (one trace in
    graph mode), so the metrics of `triplet_metrics` reuse one selection per step instead of
    mining again each.
    """

    def __init__(self, strategy, alpha, seed, options):
        self.strategy, self.alpha, self.seed, self.options = strategy, alpha, seed, options
        self._inputs = None
        self._stats = None

    def __call__(self, y_true, y_pred):
        if self._inputs is None or self._inputs[0] is not y_true or self._inputs[1] is not y_pred:
            labels = _labels_vector(y_true)
            emb, labels, _ = _global_batch(tf.cast(y_pred, tf.float32), labels)
            triplets = mining.select_triplets(emb, labels, self.strategy, alpha=self.alpha,
                                              seed=_batch_seed(self.seed, labels),
                                              **self.options)
            self._inputs = (y_true, y_pred)
            self._stats = triplet_stats(emb, labels, triplets, self.alpha)
        return self._stats


@keras.saving.register_keras_serializable(package="facenet_tf")
class TripletStat(keras.metrics.Mean):
    """Mean over batches of one `triplet_stats` value for online mining (global batch).

    Pass the same strategy, alpha, seed and options as the loss; the metric mines again (one
    extra `select_triplets` per batch, shared by the metrics `triplet_metrics` returns).
    """

    def __init__(self, stat, strategy="semi_hard", alpha=None, seed=None, name=None,
                 _shared=None, **options):
        if stat not in STAT_NAMES + ("num_pairs",):
            raise ValueError(f"unknown triplet stat {stat!r}; expected one of {STAT_NAMES}")
        super().__init__(name=name or stat)
        mining.resolve_options(strategy, options)
        self.stat = stat
        self.strategy = strategy
        self.alpha = float(_default_alpha(strategy, alpha))
        self.seed = seed
        self.options = dict(options)
        self._batch_stats = _shared or _BatchStats(strategy, self.alpha, seed, self.options)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(self._batch_stats(y_true, y_pred)[self.stat])

    def get_config(self):
        return {"stat": self.stat, "strategy": self.strategy, "alpha": self.alpha,
                "seed": self.seed, "name": self.name, **self.options}


def triplet_metrics(strategy="semi_hard", alpha=None, seed=None, **options):
    """The four `TripletStat` metrics (num_triplets, fraction_active, mean_d_ap, mean_d_an),
    sharing one mining of each batch."""
    mining.resolve_options(strategy, options)
    shared = _BatchStats(strategy, float(_default_alpha(strategy, alpha)), seed, dict(options))
    return [TripletStat(stat, strategy, alpha, seed, _shared=shared, **options)
            for stat in STAT_NAMES]


def offline_triplet_metrics(alpha=0.2) -> list:
    """fraction_active, mean_d_ap and mean_d_an of offline [B, 3, D] triplet batches, as
    per-triplet values Keras averages: the statistics triplet_stats reports for online mining.
    """
    def distances(y_pred):
        e = tf.cast(y_pred, tf.float32)
        return triplet_distances(e[:, 0], e[:, 1], e[:, 2])

    def fraction_active(y_true, y_pred):
        return _active(*distances(y_pred), alpha)

    def mean_d_ap(y_true, y_pred):
        return distances(y_pred)[0]

    def mean_d_an(y_true, y_pred):
        return distances(y_pred)[1]

    return [fraction_active, mean_d_ap, mean_d_an]
