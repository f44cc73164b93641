"""k-means in TensorFlow, and the scores of a clustering against labels.

`kmeans` is Lloyd's algorithm with k-means++ seeding (Arthur & Vassilvitskii,
2007), Euclidean or spherical (cosine, for L2-normalised embeddings, as PCL
clusters them), with restarts; the distances are one matrix product per
iteration, so 60,000 x 128 embeddings with k in the hundreds take seconds on a
CPU. `clustering_accuracy`, `nmi` and `ari` score an assignment against
labels as scikit-learn's `normalized_mutual_info_score` (arithmetic mean) and
`adjusted_rand_score` do, and the accuracy of the best one-to-one matching of
clusters to classes (the Hungarian algorithm, `scipy.optimize`).

For the prototype methods: `concentration` is PCL's per-cluster temperature
phi, and `sinkhorn` SwAV's equal-partition codes over the global batch;
`mice_gate_clusters` is MiCE's clustering by its gate, from an exported
MiCE model's projection.
"""

import numbers

import numpy as np
import tensorflow as tf

from supcon_tf import _backend
from supcon_tf._checks import check_int

METRICS = ("euclidean", "cosine")


def _check_kmeans(x, k, metric, restarts, iterations):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"`x` must be a non-empty [n, d] matrix. Received: x.shape={x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"`x` must be real numbers. Received: x.dtype={x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("`x` holds NaN or infinite values.")
    for name, value in (("k", k), ("restarts", restarts), ("iterations", iterations)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    if k > x.shape[0]:
        raise ValueError(f"`k` ({k}) must not exceed the number of samples ({x.shape[0]}). "
                         f"Received: k={k}")
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}. Received: metric={metric!r}")
    return x.astype(np.float32)


def _sq_distances(x, x_sq, centroids):
    """Squared Euclidean distances `[n, k]`, >= 0."""
    c_sq = tf.reduce_sum(centroids * centroids, axis=1)
    d = x_sq[:, None] - 2.0 * tf.matmul(x, centroids, transpose_b=True) + c_sq[None, :]
    return tf.maximum(d, 0.0)


@tf.function(reduce_retracing=True)
def _plus_plus(x, x_sq, k, seed):
    """k-means++ seeding: the first centroid uniform, each next one drawn
    with probability proportional to the squared distance to the nearest
    chosen centroid."""
    n = tf.shape(x)[0]
    first = tf.random.stateless_uniform([], seed=seed, maxval=n, dtype=tf.int32)
    centroids = tf.TensorArray(tf.float32, size=k, element_shape=x.shape[1:])
    centroids = centroids.write(0, x[first])
    nearest = tf.reshape(_sq_distances(x, x_sq, x[first][None]), [-1])

    def body(i, centroids, nearest):
        # Sample by inverse CDF of the distances (no log of zeros).
        total = tf.reduce_sum(nearest)
        u = tf.random.stateless_uniform([], seed=seed + tf.cast(i, tf.int64) * [0, 1]) * total
        pick = tf.searchsorted(tf.cumsum(nearest), u[None], side="right")[0]
        # Every remaining point coincides with a centroid (total 0): any point.
        pick = tf.where(total > 0, tf.minimum(pick, n - 1), i % n)
        centroids = centroids.write(i, x[pick])
        nearest = tf.minimum(nearest, tf.reshape(_sq_distances(x, x_sq, x[pick][None]), [-1]))
        return i + 1, centroids, nearest

    _, centroids, _ = tf.while_loop(lambda i, *_: i < k, body, (1, centroids, nearest))
    return centroids.stack()


@tf.function(reduce_retracing=True)
def _lloyd(x, x_sq, centroids, iterations, spherical):
    """Lloyd's iterations until no assignment changes; an empty cluster
    keeps its centroid. Returns centroids, assignments and the inertia."""
    # The static count when the trace knows it (the loop's centroids keep
    # their entering shape, also for k = 1), else the dynamic one.
    k = centroids.shape[0] if centroids.shape[0] is not None else tf.shape(centroids)[0]

    def assign(centroids):
        d = _sq_distances(x, x_sq, centroids)
        return tf.argmin(d, axis=1, output_type=tf.int32), tf.reduce_min(d, axis=1)

    def body(i, centroids, labels, changed):
        sums = tf.math.unsorted_segment_sum(x, labels, k)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(x_sq), labels, k)
        means = sums / tf.maximum(counts, 1.0)[:, None]
        if spherical:
            means = tf.math.l2_normalize(means, axis=1)
        centroids = tf.ensure_shape(tf.where((counts > 0)[:, None], means, centroids),
                                    centroids.shape)
        new_labels, _ = assign(centroids)
        return i + 1, centroids, new_labels, tf.reduce_any(new_labels != labels)

    labels, _ = assign(centroids)
    _, centroids, labels, _ = tf.while_loop(
        lambda i, c, l, changed: tf.logical_and(i < iterations, changed), body,
        (0, centroids, labels, True))
    labels, d = assign(centroids)
    return centroids, labels, tf.reduce_sum(d)


def kmeans(x, k, metric="euclidean", restarts=3, iterations=100, seed=0):
    """k-means of the rows of `x`, the best of `restarts` runs.

    Args:
        x: `[n, d]` array.
        k: Clusters, in `[1, n]`.
        metric: `"euclidean"` (Lloyd's k-means) or `"cosine"` (spherical
            k-means: rows and centroids L2-normalised; the inertia is then
            `sum 2 (1 - cos)`, the squared distance of unit vectors).
        restarts: Independent k-means++ seedings; the lowest inertia wins.
            Defaults to 3.
        iterations: Lloyd iterations at most per run (it stops when no
            assignment changes). Defaults to 100.
        seed: Integer seed (same seed, same result). Defaults to 0.

    Returns:
        `(centroids [k, d], assignments [n] int, inertia float)`, numpy.

    Raises:
        ValueError: `x` empty or not 2-D, or not finite; `k` above the number
            of samples; an unknown `metric`; `k`, `restarts` or `iterations`
            below 1.
        TypeError: non-numeric `x`.

    Example:

    >>> import numpy as np
    >>> x = np.concatenate([np.zeros((5, 2)), np.ones((5, 2))])
    >>> _, labels, inertia = kmeans(x, 2)
    >>> len(set(labels[:5])), len(set(labels[5:])), round(inertia, 6)
    (1, 1, 0.0)
    """
    x = _check_kmeans(x, k, metric, restarts, iterations)
    k, restarts, iterations = int(k), int(restarts), int(iterations)
    spherical = metric == "cosine"
    x = tf.constant(x)
    if spherical:
        x = tf.math.l2_normalize(x, axis=1)
    x_sq = tf.reduce_sum(x * x, axis=1)
    best = None
    for r in range(restarts):
        seed_r = tf.constant([seed, r], tf.int64)
        start = _plus_plus(x, x_sq, tf.constant(k, tf.int32), seed_r)
        centroids, labels, inertia = _lloyd(x, x_sq, start, tf.constant(iterations, tf.int32),
                                            spherical)
        if best is None or float(inertia) < best[2]:
            best = (centroids.numpy(), labels.numpy(), float(inertia))
    return best


def _contingency(labels, assignments):
    labels, assignments = np.asarray(labels).reshape(-1), np.asarray(assignments).reshape(-1)
    if labels.shape != assignments.shape or labels.size == 0:
        raise ValueError("`labels` and `assignments` must be non-empty and of the same length. "
                         f"Received: {labels.shape} and {assignments.shape}")
    _, label_ids = np.unique(labels, return_inverse=True)
    _, cluster_ids = np.unique(assignments, return_inverse=True)
    table = np.zeros((label_ids.max() + 1, cluster_ids.max() + 1), np.int64)
    np.add.at(table, (label_ids, cluster_ids), 1)
    return table


def clustering_accuracy(labels, assignments):
    """The fraction of samples whose cluster is matched to their class by
    the best one-to-one matching of clusters to classes (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    table = _contingency(labels, assignments)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / table.sum())


def _entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(labels, assignments):
    """Normalised mutual information, `MI / mean(H(labels), H(assignments))`
    (scikit-learn's default, arithmetic normalisation); 1 when both are a
    single cluster."""
    table = _contingency(labels, assignments).astype(np.float64)
    n = table.sum()
    h_labels, h_clusters = _entropy(table.sum(1)), _entropy(table.sum(0))
    if h_labels == 0 and h_clusters == 0:
        return 1.0
    joint = table[table > 0] / n
    outer = (table.sum(1)[:, None] * table.sum(0)[None, :])[table > 0] / n ** 2
    mi = float((joint * np.log(joint / outer)).sum())
    return max(mi, 0.0) / ((h_labels + h_clusters) / 2)


def ari(labels, assignments):
    """Adjusted Rand index (Hubert & Arabie, 1985), as scikit-learn's."""
    table = _contingency(labels, assignments).astype(np.float64)
    n = table.sum()
    # scikit-learn's special cases: one cluster in both, or every sample its
    # own cluster in both (n = 1 is both), are a perfect match.
    if table.shape[0] == table.shape[1] and table.shape[0] in (1, n):
        return 1.0

    def pairs(c):
        return (c * (c - 1) / 2).sum()

    index, a, b = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = a * b / pairs(np.array([n]))
    maximum = (a + b) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def cluster_scores(embeddings, labels, k, metric="cosine", restarts=3, seed=0):
    """k-means of `embeddings` into `k` clusters, scored against `labels`.

    Args:
        embeddings: `[n, d]` array (e.g. `evaluation.embed`'s output).
        labels: `[n]` class ids.
        k: Clusters (the number of classes, usually).
        metric: `"cosine"` (default; spherical k-means, for L2-normalised
            embeddings) or `"euclidean"`.
        restarts, seed: As `kmeans`.

    Returns:
        A dict: `accuracy` (Hungarian-matched), `nmi`, `ari`, and the
        k-means `inertia`.

    Example:

    >>> import numpy as np
    >>> e = np.concatenate([np.eye(2)[[0] * 5], np.eye(2)[[1] * 5]])
    >>> cluster_scores(e, [0] * 5 + [1] * 5, k=2)["accuracy"]
    1.0
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != np.asarray(embeddings).shape[0]:
        raise ValueError("`labels` must hold one label per embedding. Received: "
                         f"{labels.shape[0]} labels for {np.asarray(embeddings).shape[0]} rows")
    _, assignments, inertia = kmeans(embeddings, k, metric=metric, restarts=restarts, seed=seed)
    return {"accuracy": clustering_accuracy(labels, assignments),
            "nmi": nmi(labels, assignments), "ari": ari(labels, assignments),
            "inertia": inertia}


def mice_gate_clusters(projection, num_experts):
    """Each image's cluster by a MiCE gate alone: the expert whose gating
    prototype (`losses.simplex_prototypes`, fixed) is nearest the gate's
    embedding, the argmax of MiCE's `log pi`.

    Args:
        projection: `[n, (num_experts + 1) * dim]`, the output of MiCE's
            `heads.MixtureHead` (the experts' embeddings, then the gate's):
            a MiCE zoo model's `projection` output, or
            `model.head(model.encoder(images))`.
        num_experts: K, the clusters (the recipe's `model.num_experts`).

    Returns:
        int64 `[n]` cluster ids in `[0, num_experts)`, equal to
        `MiCEModel.cluster(images)[1]`. The posterior's clusters
        (`MiCEModel.cluster(images)[0]`) also need the momentum network and
        the queue, which an exported encoder does not hold.

    Example:

    >>> import numpy as np
    >>> from supcon_tf.losses import simplex_prototypes
    >>> gate = simplex_prototypes(3, 4)[[2, 0]]           # two images' gates
    >>> projection = np.concatenate([np.zeros((2, 12)), gate], axis=1)
    >>> mice_gate_clusters(projection, num_experts=3).tolist()
    [2, 0]
    """
    from supcon_tf.losses.mice import simplex_prototypes

    num_experts = check_int(num_experts, "num_experts", 2)
    projection = np.asarray(projection, dtype=np.float32)
    if projection.ndim != 2 or projection.shape[1] % (num_experts + 1):
        raise ValueError("`projection` must be `[n, (num_experts + 1) * dim]`, a MixtureHead's "
                         f"output. Received: shape {projection.shape} with num_experts={num_experts}")
    dim = projection.shape[1] // (num_experts + 1)
    gate = projection[:, num_experts * dim:]
    return np.argmax(gate @ simplex_prototypes(num_experts, dim).T, axis=1).astype(np.int64)


def concentration(x, assignments, centroids, temperature=0.1, alpha=10.0):
    """PCL's concentration phi of each cluster (Li et al., ICLR 2021), as
    salesforce/PCL estimates it after k-means.

    For a cluster with `n > 1` members at Euclidean distances `d` from its
    centroid, `phi = mean(d) / log(n + alpha)`; clusters of one member get the
    largest phi of the others. Then phi is clipped to its 10th-90th
    percentile over the clusters and scaled so that its mean is
    `temperature`.

    Args:
        x: `[n, dim]` embeddings (PCL's are L2-normalised).
        assignments: `[n]` cluster ids in `[0, k)`.
        centroids: `[k, dim]` the clusters' centroids (before PCL normalises them).
        temperature: The mean of the result, > 0. Defaults to 0.1.
        alpha: Smoothing of the cluster size, > 0. Defaults to 10.0.

    Returns:
        A float32 numpy array `[k]`.
    """
    x = np.asarray(x, np.float64)
    centroids = np.asarray(centroids, np.float64)
    assignments = np.asarray(assignments)
    if x.ndim != 2 or centroids.ndim != 2 or centroids.shape[1] != x.shape[1]:
        raise ValueError("`x` must be [n, dim] and `centroids` [k, dim]. Received shapes "
                         f"{x.shape} and {centroids.shape}")
    k = len(centroids)
    if assignments.shape != (len(x),) or not np.issubdtype(assignments.dtype, np.integer) \
            or (len(x) and (assignments.min() < 0 or assignments.max() >= k)):
        raise ValueError(f"`assignments` must be [n] integer ids in [0, {k}). Received shape "
                         f"{assignments.shape}, dtype {assignments.dtype}")
    for name, value in (("temperature", temperature), ("alpha", alpha)):
        if not value > 0:
            raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")
    distances = np.linalg.norm(x - centroids[assignments], axis=1)
    counts = np.bincount(assignments, minlength=k)
    sums = np.bincount(assignments, weights=distances, minlength=k)
    phi = np.zeros(k)
    many = counts > 1
    phi[many] = sums[many] / counts[many] / np.log(counts[many] + alpha)
    phi[~many] = phi.max()
    phi = np.clip(phi, np.percentile(phi, 10), np.percentile(phi, 90))
    mean = phi.mean()
    if mean <= 0:
        raise ValueError("Every cluster's concentration is 0 (all members on their "
                         "centroids); there is nothing to scale.")
    return (temperature * phi / mean).astype(np.float32)


def sinkhorn(scores, iterations=3, epsilon=0.05, across_replicas=True):
    """SwAV's codes: the Sinkhorn-Knopp equal-partition assignment of a batch
    to prototypes (Caron et al., NeurIPS 2020), over the global batch.

    `Q = exp(scores / epsilon)`, normalised to sum 1, then `iterations`
    times: each prototype's row (summed over every replica's batch) scaled to
    `1 / K`, each sample's column to `1 / B` (`B` the global batch); the
    result is `B * Q`: each sample's code sums to 1 over the prototypes, and
    each prototype's share of the batch tends to `B / K` as the iterations
    grow (SwAV's 3 leave it approximate: a soft equal partition).
    Under `tf.distribute` each replica passes its own rows and the sums are
    taken over all replicas, as SwAV's `distributed_sinkhorn` does
    (`across_replicas=False`: `scores` already hold every row, e.g. gathered
    from the replicas, and no sums cross replicas). No gradient flows through
    the codes.

    Args:
        scores: `[batch, K]` similarities of embeddings to prototypes.
        iterations: Sinkhorn iterations, >= 1. Defaults to 3 (SwAV's).
        epsilon: Entropy regularisation, > 0. Defaults to 0.05 (SwAV's).
        across_replicas: Sum over the rows of every replica (each passes its
            own). Defaults to True.

    Returns:
        The codes `[batch, K]` of the rows given.
    """
    from supcon_tf import _cross_replica

    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) \
            or iterations < 1:
        raise ValueError(f"`iterations` must be an integer >= 1. Received: iterations={iterations!r}")
    if not epsilon > 0:
        raise ValueError(f"`epsilon` must be > 0. Received: epsilon={epsilon!r}")
    if not _backend.on_tensorflow(scores):
        from supcon_tf.losses._portable import others as _portable
        return _portable.sinkhorn(scores, iterations, epsilon)
    scores = tf.stop_gradient(tf.cast(scores, tf.float32))
    if scores.shape.rank != 2:
        raise ValueError(f"`scores` must be [batch, K]. Received: scores.shape={scores.shape}")

    gather = _cross_replica.all_gather if across_replicas else tf.identity

    def total(v):          # the sum over replicas of a per-replica tensor
        return tf.reduce_sum(gather(v[None]), axis=0)

    def log_total(v):      # log of the sum over replicas of exp(a per-replica tensor)
        return tf.reduce_logsumexp(gather(v[None]), axis=0)

    # In the log domain: exp(scores / epsilon) underflows for small epsilon
    # (a row of zeros, then 0 / 0); its logarithm does not.
    log_q = tf.transpose(scores / epsilon)                      # [K, b]
    log_k = tf.math.log(tf.cast(tf.shape(log_q)[0], tf.float32))
    batch = total(tf.cast(tf.shape(log_q)[1], tf.float32)[None])[0]
    log_batch = tf.math.log(batch)
    log_q -= log_total(tf.reduce_logsumexp(log_q)[None])[0]
    for _ in range(int(iterations)):
        log_q -= log_total(tf.reduce_logsumexp(log_q, axis=1))[:, None] + log_k
        log_q -= tf.reduce_logsumexp(log_q, axis=0, keepdims=True) + log_batch
    return tf.transpose(tf.exp(log_q + log_batch))
