"""Triplet selection as FaceNet (Schroff et al. 2015, section 3.2) defines it.

Pure, vectorised TensorFlow functions over embeddings [N, D] and integer labels [N]. They accept
NumPy arrays or tensors, run eagerly or inside `tf.function` (the number of triplets T is dynamic),
and are shared by the online Keras losses (`facenet_tf.triplets.losses`) and the offline Beam miner, so that
both select triplets with one implementation.

Distances are squared L2 throughout (the paper's), except for the optional angular distance of the
`tfa_semi_hard` migration strategy. Ties between equal distances are broken by the lowest row
index, so results are deterministic; random choices use stateless ops seeded from `seed`.
Nothing sorts the [N, N] distance matrix. Pairs come from the label groups, not an [N, N] mask.
`semi_hard` sorts only each anchor's candidate negatives (those inside the span of its bands;
few once the network has learnt something) and finds every band by binary search; when the
candidates are many (an untrained network: N^2 / 16 or more), it buckets each anchor's
negatives between its band edges instead (O(N^2 log K), K = most positives of an anchor), as
`tfa_semi_hard` always does. `all` sorts only its candidate negatives.

Triplets come back as int32 [T, 3] rows (anchor, positive, negative), ordered by anchor, then
positive (then, for `all`, by negative distance and index).
"""

import numpy as np
import tensorflow as tf

from facenet_tf.triplets import distances

STRATEGIES = ("semi_hard", "hard", "all", "random", "tfa_semi_hard")
_SUB_BUCKETS = 8  # random sub-buckets for semi_hard: pairs of one anchor rarely share a negative

_OPTIONS = {
    "semi_hard": {"choose": ("random", "hardest"), "fallback": ("skip", "hardest_beyond")},
    "hard": {"hardest_positive": (False, True)},
    "all": {},
    "random": {},
    "tfa_semi_hard": {"distance": ("L2", "squared-L2", "angular")},
}


def _angular_distances(embeddings):
    """1 - cosine similarity [N, N] (tensorflow-addons' "angular" metric), exact 0 diagonal."""
    e = tf.math.l2_normalize(tf.cast(tf.convert_to_tensor(embeddings), tf.float32), axis=1)
    d = tf.maximum(1.0 - tf.matmul(e, e, transpose_b=True), 0.0)
    return tf.linalg.set_diag(d, tf.zeros(tf.shape(d)[:1]))


def _prepare(embeddings, labels):
    """Converts and checks inputs; returns (float32 [N, D], int64 [N])."""
    e = tf.convert_to_tensor(embeddings)
    if not (e.dtype.is_floating or e.dtype.is_integer):
        raise TypeError(f"embeddings must be numeric, got dtype {e.dtype.name}")
    e = tf.debugging.assert_all_finite(tf.cast(e, tf.float32),
                                       "embeddings contain NaN or Inf values")
    if e.shape.rank is not None and e.shape.rank != 2:
        raise ValueError(f"embeddings must have shape [N, D], got shape {e.shape}")
    y = tf.convert_to_tensor(labels)
    if y.dtype == tf.string or y.dtype == tf.bool:
        raise TypeError(f"labels must be integers, got dtype {y.dtype.name}")
    if y.shape.rank == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape.rank is not None and y.shape.rank != 1:
        raise ValueError(f"labels must have shape [N] or [N, 1], got shape {y.shape}")
    if y.dtype.is_floating:
        y = tf.round(y)
    y = tf.cast(y, tf.int64)
    n_e, n_y = e.shape[0], y.shape[0]
    if n_e is not None and n_y is not None and n_e != n_y:
        raise ValueError(f"embeddings have {n_e} rows but labels have {n_y} entries")
    return e, y


def resolve_options(strategy, options):
    """Checks a strategy name and its options; returns all its options with defaults filled in.

    Raises ValueError naming the bad strategy, option or value (entry points can call this to
    validate flags before any work).
    """
    if strategy not in _OPTIONS:
        raise ValueError(f"unknown triplet strategy {strategy!r}; expected one of {STRATEGIES}")
    allowed = _OPTIONS[strategy]
    out = {name: values[0] for name, values in allowed.items()}
    for name, value in options.items():
        if name not in allowed:
            raise ValueError(f"strategy {strategy!r} has no option {name!r}; "
                             f"options: {sorted(allowed) or 'none'}")
        if value not in allowed[name]:
            raise ValueError(f"option {name}={value!r} for strategy {strategy!r} must be one "
                             f"of {allowed[name]}")
        out[name] = value
    return out


def stateless_seed(seed):
    """The shape-[2] int32 stateless seed select_triplets makes of `seed` (an int, a scalar
    or shape-[2] tensor); None draws one from TF's global generator."""
    if seed is None:
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    if isinstance(seed, (int, np.integer)):
        seed = int(seed)
        return tf.constant([seed % 2**31, (seed // 2**31) % 2**31], tf.int32)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        return tf.stack([tf.cast(seed, tf.int32), tf.constant(0x5eed, tf.int32)])
    return tf.cast(seed, tf.int32)


def _positive_pairs(y):
    """Every ordered (anchor, positive) pair a != p with y[a] == y[p], for anchors that have a
    negative; int32 columns sorted by anchor, then positive, and the number of pairs per anchor.

    Built from the label groups in O(N log N + pairs), without an [N, N] mask.
    """
    n = tf.shape(y)[0]
    order = tf.cast(tf.argsort(y, stable=True), tf.int32)  # each group's rows in index order
    _, group, sizes = tf.unique_with_counts(tf.gather(y, order), out_idx=tf.int32)
    starts = tf.cumsum(sizes, exclusive=True)
    position = tf.math.invert_permutation(order)  # row -> its place in `order`
    anchor_group = tf.gather(group, position)
    start = tf.gather(starts, anchor_group)
    size = tf.gather(sizes, anchor_group)
    count = tf.where(size < n, size - 1, 0)  # one label only: no negatives, no triplets
    a = tf.repeat(tf.range(n), count)
    slot = tf.range(tf.shape(a)[0]) - tf.gather(tf.cumsum(count, exclusive=True), a)
    slot += tf.cast(slot >= tf.gather(position - start, a), tf.int32)  # skip the anchor itself
    p = tf.gather(order, tf.gather(start, a) + slot)
    return a, p, count


def _first_index_where(condition):
    """Per row, the lowest column where `condition` holds (N if nowhere)."""
    n = tf.shape(condition)[1]
    cols = tf.broadcast_to(tf.range(n)[None, :], tf.shape(condition))
    return tf.reduce_min(tf.where(condition, cols, n), axis=1)


def _first_argmin(values, mask):
    """Per row, the lowest index of the smallest masked value (N if the row mask is empty)."""
    inf = tf.constant(np.inf, values.dtype)
    masked = tf.where(mask, values, inf)
    best = tf.reduce_min(masked, axis=1, keepdims=True)
    return _first_index_where(mask & tf.equal(masked, best))


def _first_argmax(values, mask):
    return _first_argmin(-values, mask)


def _random_offsets(seed, counts):
    """A uniform integer in [0, count) for each entry of `counts` (0 where count is 0)."""
    u = tf.random.stateless_uniform(tf.shape(counts), seed=seed, dtype=tf.float32)
    k = tf.cast(tf.floor(u * tf.cast(counts, tf.float32)), tf.int32)
    return tf.clip_by_value(k, 0, tf.maximum(counts - 1, 0))


def _random_negatives(seed, labels, anchors):
    """For each anchor, a uniformly random row with another label (each anchor has one).

    Draws uniform rows and redraws those that share the anchor's label: exact, O(pairs) per round.
    """
    n = tf.shape(labels)[0]
    anchor_labels = tf.gather(labels, anchors)

    def draw(i, negs):
        fresh = tf.random.stateless_uniform(tf.shape(anchors), seed=seed + i, minval=0,
                                            maxval=n, dtype=tf.int32)
        bad = tf.equal(tf.gather(labels, negs), anchor_labels)
        return i + 1, tf.where(bad, fresh, negs)

    def pending(i, negs):
        return tf.reduce_any(tf.equal(tf.gather(labels, negs), anchor_labels))

    _, negs = tf.while_loop(pending, draw, (tf.constant(0), tf.identity(anchors)))
    return negs


def _stack(a, p, n):
    return tf.cast(tf.stack([a, p, n], axis=1), tf.int32)


def select_triplets(embeddings, labels, strategy, alpha=0.2, seed=None, **options):
    """Selects (anchor, positive, negative) row triplets, int32 [T, 3], from one batch.

    Positives are every ordered pair a != p with the same label (the paper uses all of them);
    negatives have another label. Strategies and their options:

    - "semi_hard" (paper, section 3.2): for each anchor-positive pair, a negative with
      d(a,p) < d(a,n) < d(a,p) + alpha. `choose="random"` (default, seeded uniform within the band)
      or "hardest" (smallest d(a,n) in the band). Pairs with an empty band are skipped
      (`fallback="skip"`, default) or get the hardest negative with d(a,n) > d(a,p)
      (`fallback="hardest_beyond"`; skipped if there is none).
    - "hard": for each pair the negative with the smallest d(a,n). `hardest_positive=True` keeps
      only the positive with the largest d(a,p) per anchor ("batch-hard").
    - "all": every (a, p, n) with positive loss, i.e. d(a,n) < d(a,p) + alpha ("batch-all").
    - "random": a seeded uniform random negative for each pair (the paper's baseline).
    - "tfa_semi_hard": tfa.losses.TripletSemiHardLoss' rule, for migrating users: the negative
      with the smallest d(a,n) > d(a,p), else the largest d(a,n). Its margin does not enter the
      selection (use alpha=1.0 in the loss). `distance` is "L2" (tfa's default), "squared-L2"
      (both select identically) or "angular" (1 - cosine similarity).

    Anchors without any negative yield no triplet. Ties pick the lowest index; `seed` (int or a
    shape-[2] stateless seed; None draws from TF's global generator) fixes all random choices.
    """
    opts = resolve_options(strategy, options)
    angular = opts.get("distance") == "angular"
    batch = _Batch(embeddings, labels, alpha, angular)
    return _SELECTORS[strategy](batch, seed, opts)


class _Batch:
    """The pieces of one batch that the selectors share, each built when first used: the
    anchor-positive pairs, the distances, the negatives mask, and the pairs laid out on an
    [N, K] grid (K = most positives of an anchor, +inf padded), so that every per-pair search
    is an [N, K] op and nothing sorts an [N, N] matrix."""

    def __init__(self, embeddings, labels, alpha, angular=False):
        self.e, self.y = _prepare(embeddings, labels)
        self.n = tf.shape(self.e)[0]
        self.a, self.p, self.per_anchor = _positive_pairs(self.y)
        self._alpha = alpha
        self._angular = angular
        self._cache = {}

    def _cached(self, name, build):
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    @property
    def is_neg(self):
        return self._cached("is_neg", lambda: tf.not_equal(self.y[:, None], self.y[None, :]))

    @property
    def d(self):
        """[N, N] distances: squared L2, or angular for tfa_semi_hard's option."""
        return self._cached("d", lambda: _angular_distances(self.e) if self._angular
                            else distances.tf_squared_l2_matrix(self.e))

    @property
    def alpha(self):
        return self._cached("alpha", lambda: tf.cast(self._alpha, tf.float32))

    @property
    def d_ap(self):
        return self._cached("d_ap", lambda: tf.gather_nd(self.d, tf.stack([self.a, self.p], 1)))

    @property
    def d_margin(self):
        return self._cached("d_margin", lambda: self.d_ap + self.alpha)

    def _grid(self):
        def build():
            slot = tf.range(tf.shape(self.a)[0]) - tf.gather(
                tf.cumsum(self.per_anchor, exclusive=True), self.a)
            at = tf.stack([self.a, slot], axis=1)
            shape = tf.stack([self.n, tf.reduce_max(tf.concat([slot + 1, [1]], 0))])
            return at, shape
        return self._cached("grid", build)

    def on_grid(self, values, fill):
        """Per-pair values [P] -> [N, K] (row = anchor), `fill` where an anchor has no pair."""
        at, shape = self._grid()
        return tf.tensor_scatter_nd_update(tf.fill(shape, fill), at, values)

    def off_grid(self, grid):
        """[N, K] -> the per-pair values [P]."""
        return tf.gather_nd(grid, self._grid()[0])


_INF = np.inf


def _select_random(batch, seed, opts):
    return _stack(batch.a, batch.p, _random_negatives(stateless_seed(seed), batch.y, batch.a))


def _select_hard(batch, seed, opts):
    hardest_neg = _first_argmin(batch.d, batch.is_neg)
    if opts["hardest_positive"]:
        is_pos = ~batch.is_neg & ~tf.eye(batch.n, dtype=tf.bool)
        hardest_pos = _first_argmax(batch.d, is_pos)
        anchors = tf.cast(tf.where(batch.per_anchor > 0)[:, 0], tf.int32)
        return _stack(anchors, tf.gather(hardest_pos, anchors), tf.gather(hardest_neg, anchors))
    return _stack(batch.a, batch.p, tf.gather(hardest_neg, batch.a))


def _select_all(batch, seed, opts):
    return _all_triplets(batch.d, batch.is_neg, batch.a, batch.p, batch.d_margin, batch.n)


def _first_bucket_beyond(batch, buckets):
    """Per pair: the bucket of negatives just above d(a,p), the first non-empty one from there
    on, and whether there is one."""
    inf = tf.constant(_INF, tf.float32)
    lo = buckets.bucket_of(batch.on_grid(batch.d_ap, inf), "right", "right")
    beyond_first = buckets.first_nonempty(lo)
    return lo, beyond_first, batch.off_grid(beyond_first) < buckets.num_buckets


def _select_tfa_semi_hard(batch, seed, opts):
    inf = tf.constant(_INF, tf.float32)
    lower = tf.sort(batch.on_grid(batch.d_ap, inf), axis=1)
    buckets = _Buckets(batch.d, batch.is_neg, lower, None)
    _, beyond_first, has_beyond = _first_bucket_beyond(batch, buckets)
    hardest_beyond = batch.off_grid(buckets.hardest_in(beyond_first))
    farthest = tf.gather(_first_argmax(batch.d, batch.is_neg), batch.a)
    return _stack(batch.a, batch.p, tf.where(has_beyond, hardest_beyond, farthest))


def _select_semi_hard(batch, seed, opts):
    random_choice = opts["choose"] == "random"
    fallback = opts["fallback"] == "hardest_beyond"
    seed = stateless_seed(seed)

    def by_buckets():
        inf = tf.constant(_INF, tf.float32)
        lower = tf.sort(batch.on_grid(batch.d_ap, inf), axis=1)
        buckets = _Buckets(batch.d, batch.is_neg, lower, lower + batch.alpha,
                           seed + 1 if random_choice else None)
        lo, beyond_first, has_beyond = _first_bucket_beyond(batch, buckets)
        # Last bucket below d(a,p) + alpha: bucket_of(x) for x just below it.
        hi = buckets.bucket_of(batch.on_grid(batch.d_margin, inf), "left", "left")
        band = buckets.count_between(lo, hi)
        keep = batch.off_grid(band) > 0
        # The first non-empty bucket above d(a,p) is in the band whenever the band is not
        # empty.
        hardest = (batch.off_grid(buckets.hardest_in(beyond_first))
                   if fallback or not random_choice else None)
        chosen = (batch.off_grid(buckets.random_in_band(lo, band, seed)) if random_choice
                  else hardest)
        if fallback:
            chosen = tf.where(keep, chosen, hardest)
            keep = keep | has_beyond
        return chosen, keep

    if fallback:
        chosen, keep = by_buckets()
    else:
        candidates = _BandCandidates(batch.d, batch.is_neg, batch.a, batch.d_ap, batch.d_margin)
        chosen, keep = tf.cond(
            candidates.size <= _candidate_budget(batch.n),
            lambda: candidates.choose(seed + 1 if random_choice else None),
            by_buckets)
    return tf.boolean_mask(_stack(batch.a, batch.p, chosen), keep)


# One selector per strategy: (batch, seed as given, resolved options) -> int32 [T, 3]. Only the
# selectors that draw at random turn the seed into a stateless one (None draws from TF's
# global generator, which the others must leave untouched).
_SELECTORS = {
    "semi_hard": _select_semi_hard,
    "hard": _select_hard,
    "all": _select_all,
    "random": _select_random,
    "tfa_semi_hard": _select_tfa_semi_hard,
}


def _candidate_budget(n):
    """Most candidate negatives the sorted-candidates path takes (it sorts them): N^2 / 16."""
    return tf.maximum(n * n // 16, 1 << 16)


class _BandCandidates:
    """Semi-hard selection over each anchor's candidate negatives, sorted by distance.

    Candidates of anchor a: negatives with min d(a,p) < d(a,n) < max d(a,p) + alpha over its
    pairs (every negative in some band of a is one). Sorted by (anchor, distance, index), each
    pair's band d(a,p) < d(a,n) < d(a,p) + alpha is a contiguous run found by two binary
    searches. Mid-training the candidates are a small fraction of N^2, so sorting them is far
    cheaper than bucketing all N^2 negatives; `size` is their count.
    """

    def __init__(self, d, is_neg, a, d_ap, d_margin):
        n = tf.shape(d)[0]
        lo = tf.math.unsorted_segment_min(d_ap, a, n)  # +max float for anchors without pairs
        hi = tf.math.unsorted_segment_max(d_margin, a, n)  # lowest float for those
        self._is_cand = is_neg & (d > lo[:, None]) & (d < hi[:, None])
        self.size = tf.reduce_sum(tf.cast(self._is_cand, tf.int32))
        self._d, self._a, self._d_ap, self._d_margin = d, a, d_ap, d_margin

    def choose(self, seed=None):
        """(negative, found) per pair: uniform over the band with a seed, else the hardest
        (smallest d(a,n), then lowest index)."""
        keys, negs = _sorted_candidates(self._d, self._is_cand)
        first = tf.searchsorted(keys, _row_keys(self._a, self._d_ap), side="right",
                                out_type=tf.int32)  # first with d(a,n) > d(a,p)
        end = tf.searchsorted(keys, _row_keys(self._a, self._d_margin), side="left",
                              out_type=tf.int32)  # first with d(a,n) >= d(a,p) + alpha
        band = tf.maximum(end - first, 0)
        pick = first if seed is None else first + _random_offsets(seed, band)
        found = band > 0
        pick = tf.where(found, pick, 0)
        return tf.gather(tf.concat([negs, [0]], 0), pick), found


class _Buckets:
    """Each anchor's negatives bucketed by distance between the anchor's 2K band edges.

    With lower edges L (the anchor's d(a,p) values, ascending) and upper edges U = L + alpha, a
    negative at distance x falls in bucket #{L < x} + #{U <= x} (monotone in x), so every band
    L_r < x < U_r is exactly a contiguous run of buckets. upper=None uses the lower edges only.
    With a seed each bucket is also split at random into sub-buckets (fine index
    bucket * subs + sub), which keeps bands contiguous. Costs O(N^2 log K) plus [N, 2K] work.
    """

    def __init__(self, d, is_neg, lower, upper, seed=None):
        self._d, self._lower, self._upper = d, lower, upper
        n = tf.shape(d)[0]
        self.num_buckets = tf.shape(lower)[1] * (1 if upper is None else 2) + 1
        # Sub-buckets only with a seed, and at most N per anchor (memory stays O(N^2)).
        self._subs = 1 if seed is None else tf.clip_by_value(n // self.num_buckets, 1,
                                                              _SUB_BUCKETS)
        self._fine = self.num_buckets * self._subs
        self._segments = n * self._fine + 1  # the last one collects non-negatives
        if upper is None:
            edges = lower
        else:  # U <= x  <=>  nextafter(U, -inf) < x: one search against all edges
            inf = tf.fill(tf.shape(upper), tf.constant(np.inf, tf.float32))
            below_upper = tf.where(upper < inf, tf.math.nextafter(upper, -inf), inf)
            edges = tf.sort(tf.concat([lower, below_upper], 1), axis=1)
        below, inside = _count_edges_below(edges, d, is_neg)
        self._cols = tf.range(n, dtype=tf.int64)[None, :]
        rows = tf.range(n)[:, None] * self._fine
        # Sub-bucket 0 for all here (hardest_in reduces over sub-buckets anyway).
        self._segment = tf.reshape(tf.where(is_neg, rows + below * self._subs,
                                            self._segments - 1), [-1])

        def histogram(segment):
            return tf.math.bincount(segment, minlength=self._segments, maxlength=self._segments,
                                    dtype=tf.int32)

        counts = histogram(self._segment)
        if seed is not None:
            # Every band member lies inside the anchor's edges: only those move to a random
            # sub-bucket and get a key (random high 32 bits, then the column), so the max-key
            # member of a fine bucket is uniform in it.
            at = tf.where(inside)
            bits = tf.random.stateless_uniform(tf.shape(at)[:1], seed=seed, minval=None,
                                               maxval=None, dtype=tf.int32)
            sub0 = tf.cast(at[:, 0], tf.int32) * self._fine + tf.gather_nd(below, at) * self._subs
            self._random_segment = sub0 + tf.math.floormod(bits, self._subs)
            counts += histogram(self._random_segment) - histogram(sub0)
            self._random_keys = tf.bitwise.left_shift(tf.cast(bits, tf.int64), 32) | at[:, 1]
        counts = tf.reshape(counts[:-1], [n, self._fine])
        self._cum = tf.cumsum(counts, axis=1)  # per anchor: negatives in fine buckets <= j

    def bucket_of(self, x, lower_side, upper_side):
        """#{L < x} + #{U <= x} per row of x [N, M] ("left" counts <, "right" counts <=)."""
        b = tf.searchsorted(self._lower, x, side=lower_side, out_type=tf.int32)
        if self._upper is not None:
            b += tf.searchsorted(self._upper, x, side=upper_side, out_type=tf.int32)
        return b

    def _cum_at(self, fine):
        """Per row, the anchor's negatives in fine buckets < fine (fine may be the fine count)."""
        return tf.gather(tf.pad(self._cum, [[0, 0], [1, 0]]), fine, batch_dims=1)

    def count_between(self, lo, hi):
        """Negatives in buckets lo..hi (inclusive; 0 if hi < lo)."""
        return tf.maximum(self._cum_at((hi + 1) * self._subs) - self._cum_at(lo * self._subs), 0)

    def _fine_holding(self, rank):
        """The fine bucket holding each row's rank-th negative in bucket order."""
        return tf.searchsorted(self._cum, rank, side="right", out_type=tf.int32)

    def first_nonempty(self, lo):
        """First non-empty bucket >= lo (num_buckets if none)."""
        return self._fine_holding(self._cum_at(lo * self._subs)) // self._subs

    def _winner(self, keys, segment, reduce):
        """Per fine bucket, the key that wins `reduce`, as [N, buckets, subs]."""
        best = reduce(tf.reshape(keys, [-1]), segment, self._segments)
        return tf.reshape(best[:-1], tf.stack([-1, self.num_buckets, self._subs]))

    def hardest_in(self, bucket):
        """The smallest-distance (then lowest-index) negative of each row's bucket."""
        keys = tf.bitwise.left_shift(tf.cast(_float_order(self._d), tf.int64), 32) | self._cols
        best = tf.reduce_min(self._winner(keys, self._segment, tf.math.unsorted_segment_min),
                             axis=2)
        bucket = tf.minimum(bucket, self.num_buckets - 1)
        return _low_column(tf.gather(best, bucket, batch_dims=1))

    def random_in_band(self, lo, band, seed):
        """A uniform random negative among each entry's `band` negatives from bucket lo on.

        Picks a fine bucket with probability count / band, then its member with the largest
        random key (uniform within it): each band member has probability exactly 1 / band.
        """
        rank = self._cum_at(lo * self._subs) + _random_offsets(seed, band)
        fine = tf.minimum(self._fine_holding(rank), self._fine - 1)  # band 0: unused
        best = tf.reshape(self._winner(self._random_keys, self._random_segment,
                                       tf.math.unsorted_segment_max), tf.stack([-1, self._fine]))
        return _low_column(tf.gather(best, fine, batch_dims=1))


def _float_order(x):
    """int32 with the order of the float32 values x (-0.0 and 0.0 both map to 0)."""
    bits = tf.bitcast(x, tf.int32)
    return tf.where(bits < 0, -tf.bitwise.bitwise_and(bits, 0x7FFFFFFF), bits)


def _row_keys(rows, x):
    """int64 keys ordered by (row, x): row * 2^32 + the order of float32 x."""
    return tf.cast(rows, tf.int64) * 2**32 + tf.cast(_float_order(x), tf.int64) + 2**31


def _count_edges_below(edges, d, is_neg):
    """#{edges[i, :] < d[i, j]} for the negatives (edges [N, E] ascending, +inf padded).

    Also returns the mask of negatives strictly between the row's first and last finite edge.
    Binary-searches only the negatives strictly between a row's first and last finite edge (the
    rest are 0 or all finite edges), in one flat search when they are few; in mid-training
    batches they are a small fraction of N^2.
    """
    finite = tf.reduce_sum(tf.cast(edges < np.inf, tf.int32), axis=1)
    last = tf.gather(edges, tf.maximum(finite - 1, 0), batch_dims=1)[:, None]
    inside = is_neg & (d > edges[:, :1]) & (d <= last)
    n = tf.shape(d)[0]

    def search_all():
        return tf.searchsorted(edges, d, side="left", out_type=tf.int32)

    def search_inside():
        at = tf.where(inside)
        edge_keys = tf.reshape(_row_keys(tf.range(n)[:, None], edges), [-1])
        found = tf.searchsorted(edge_keys, _row_keys(at[:, 0], tf.gather_nd(d, at)),
                                side="left", out_type=tf.int64)
        counts = tf.cast(found - at[:, 0] * tf.shape(edges, out_type=tf.int64)[1], tf.int32)
        outside = tf.where(d > last, finite[:, None], 0)
        return tf.tensor_scatter_nd_update(outside, at, counts)

    few = 4 * tf.reduce_sum(tf.cast(inside, tf.int32)) < n * n
    return tf.cond(few, search_inside, search_all), inside


def _low_column(keys):
    return tf.cast(tf.bitwise.bitwise_and(keys, 0xFFFFFFFF), tf.int32)


def _sorted_candidates(d, mask):
    """The masked (anchor, negative) entries sorted by (anchor, distance, index): their int64
    keys (_row_keys) and int32 negative indices."""
    cand = tf.where(mask)  # row-major: by anchor, then index
    keys = _row_keys(cand[:, 0], tf.gather_nd(d, cand))
    order = tf.argsort(keys, stable=True)  # stable: ties keep index order
    return tf.gather(keys, order), tf.cast(tf.gather(cand[:, 1], order), tf.int32)


def _all_triplets(d, is_neg, a, p, d_margin, n):
    """Every (a, p, n) with d(a,n) < d(a,p) + alpha, per pair by ascending d(a,n), then index.

    Sorts only the candidates (negatives closer than the anchor's largest d(a,p) + alpha), so
    the cost follows the output size rather than N^2 log N.
    """
    reach = tf.math.unsorted_segment_max(d_margin, a, n)
    keys, negs = _sorted_candidates(d, is_neg & (d < reach[:, None]))
    start = tf.searchsorted(keys, tf.cast(a, tf.int64) * 2**32, side="left", out_type=tf.int32)
    counts = tf.searchsorted(keys, _row_keys(a, d_margin), side="left", out_type=tf.int32) - start
    pair_of = tf.repeat(tf.range(tf.shape(a)[0]), counts)
    rank = tf.range(tf.shape(pair_of)[0]) - tf.gather(tf.cumsum(counts, exclusive=True), pair_of)
    return _stack(tf.gather(a, pair_of), tf.gather(p, pair_of),
                  tf.gather(negs, tf.gather(start, pair_of) + rank))
