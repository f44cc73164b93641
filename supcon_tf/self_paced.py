"""SpCL's self-paced clustering: the k-reciprocal Jaccard distance, DBSCAN on
it, and the reliability criteria that decide which samples keep their
cluster.

Ge et al., "Self-paced Contrastive Learning with Hybrid Memory for Domain
Adaptive Object Re-ID" (NeurIPS 2020) re-cluster the unlabelled samples'
features every epoch:

1. `jaccard_distance`: the k-reciprocal encoding of Zhong et al.
   ("Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR
   2017) as SpCL's `compute_jaccard_distance` computes it (k1 = 30, k2 = 6),
   sparse: only pairs that share a k-reciprocal neighbour are below 1, so
   the result is a `scipy.sparse` matrix whose stored entries are the pairs
   closer than 1 (the diagonal's zeros stored too); every other pair is at
   distance 1.
2. `dbscan`: DBSCAN (Ester et al., KDD 1996) on such a matrix, with
   scikit-learn's labels (its `DBSCAN(metric="precomputed")` reads a sparse
   input the same way).
3. `self_paced_labels`: DBSCAN at `eps`, `eps - eps_gap` (tight) and
   `eps + eps_gap` (loose); a sample keeps its cluster only if the cluster is
   independent (its members' sets barely grow at the loose `eps`, by the
   intersection over union) and the sample is compact (its set barely
   shrinks at the tight one); every other sample is an outlier with a label
   of its own. As the official code (yxgeee/SpCL, `spcl_train_uda.py`).

All NumPy / SciPy, run once per epoch outside the training step.
"""

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from supcon_tf._checks import check_int, check_positive


def _features(features, name="features"):
    x = np.asarray(features, np.float32)
    if x.ndim != 2 or x.shape[0] < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` must be finite, of shape [samples >= 2, dim]. "
                         f"Received: {name}.shape={x.shape}")
    return x


def nearest(features, k, block=2048):
    """Indices `[N, k]` of each row's `k` nearest rows by Euclidean distance,
    nearest first (a row is its own nearest; ties by index)."""
    x = _features(features)
    n = x.shape[0]
    k = min(check_int(k, "k", 1), n)
    sq = np.sum(x * x, axis=1)
    out = np.empty((n, k), np.int64)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        d = sq[rows, None] - 2.0 * x[rows] @ x.T + sq[None, :]
        d[np.arange(d.shape[0]), np.arange(start, rows.stop)] = -np.inf   # self first
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else np.tile(
            np.arange(n), (d.shape[0], 1))
        order = np.lexsort((part, np.take_along_axis(d, part, axis=1)), axis=1)
        out[rows] = np.take_along_axis(part, order, axis=1)
    return out


def _reciprocal(rank, k):
    """Boolean CSR: `[i, j]` when j is among i's first k and i among j's."""
    n = rank.shape[0]
    cols = rank[:, :k]
    a = sparse.csr_matrix((np.ones(cols.size, bool), (np.repeat(np.arange(n), cols.shape[1]),
                                                      cols.ravel())), shape=(n, n))
    return a.multiply(a.T).tocsr()


def _row_softmax(matrix):
    """In place: each CSR row's stored values -> softmax of their negatives."""
    for start, stop in zip(matrix.indptr[:-1], matrix.indptr[1:]):
        if stop > start:
            v = -matrix.data[start:stop]
            v = np.exp(v - v.max())
            matrix.data[start:stop] = v / v.sum()
    return matrix


def jaccard_distance(features, k1=30, k2=6, block=512):
    """The k-reciprocal Jaccard distance between rows of `features`.

    As SpCL's `compute_jaccard_distance` (after Zhong et al., CVPR 2017):
    each sample's k1-reciprocal neighbours (it is among their k1 nearest and
    they among its), expanded by each neighbour's round(k1/2)-reciprocal set
    that shares more than 2/3 of its members with them; weights
    `softmax(-|x_i - x_j|^2)` over that set; the weights averaged over the k2
    nearest neighbours (query expansion); then
    `d(i, j) = 1 - m / (2 - m)` with `m = sum_k min(V_ik, V_jk)`.

    Args:
        features: `[N, dim]` (SpCL's are L2-normalised).
        k1: Neighbours of the reciprocal sets. Defaults to 30 (SpCL's).
        k2: Neighbours of the query expansion; 1 for none. Defaults to 6.
        block: Rows per block of the last step (memory ~ `block * N` floats).
            Defaults to 512.

    Returns:
        A `scipy.sparse.csr_matrix` `[N, N]` holding the distances of the
        pairs closer than 1, the zeros of the diagonal included (stored); a
        pair not stored is at distance 1 (scikit-learn's convention for a
        sparse precomputed distance).

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
    >>> d = jaccard_distance(x, k1=6, k2=2)
    >>> d.shape, bool(d.diagonal().max() < 1e-6)
    ((40, 40), True)
    """
    x = _features(features)
    n = x.shape[0]
    k1, k2 = check_int(k1, "k1", 1), check_int(k2, "k2", 1)
    block = check_int(block, "block", 1)
    rank = nearest(x, max(k1, k2))
    r = _reciprocal(rank, k1)                                        # [N, N] bool
    half = _reciprocal(rank, int(np.around(k1 / 2)) + 1)
    # Neighbour c of i qualifies when |half(c) & r(i)| > 2/3 |half(c)|.
    overlap = (r.astype(np.float32) @ half.T.astype(np.float32)).multiply(r).tocsr()
    sizes = np.asarray(half.sum(axis=1)).ravel()
    rows = np.repeat(np.arange(n), np.diff(overlap.indptr))
    keep = overlap.data > (2.0 / 3.0) * sizes[overlap.indices]
    q = sparse.csr_matrix((np.ones(int(keep.sum()), np.float32),
                           (rows[keep], overlap.indices[keep])), shape=(n, n))
    expansion = ((r.astype(np.float32) + q @ half.astype(np.float32)) > 0).tocsr()
    expansion.sort_indices()
    rows = np.repeat(np.arange(n), np.diff(expansion.indptr))
    sq = np.sum((x[rows] - x[expansion.indices]) ** 2, axis=1)
    v = sparse.csr_matrix((sq.astype(np.float64), expansion.indices.copy(),
                           expansion.indptr.copy()), shape=(n, n))
    v = _row_softmax(v)
    if k2 > 1:
        cols = rank[:, :k2]
        qe = sparse.csr_matrix((np.full(cols.size, 1.0 / k2),
                                (np.repeat(np.arange(n), k2), cols.ravel())), shape=(n, n))
        v = (qe @ v).tocsr()
    v.eliminate_zeros()
    vc = v.tocsc()
    col_nnz = np.diff(vc.indptr)
    out_rows, out_cols, out_d = [], [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        lo, hi = v.indptr[start], v.indptr[stop]
        i = np.repeat(np.arange(start, stop), np.diff(v.indptr[start:stop + 1])) - start
        k, w = v.indices[lo:hi], v.data[lo:hi]
        counts = col_nnz[k]
        total = int(counts.sum())
        offsets = np.repeat(vc.indptr[k] - np.concatenate([[0], np.cumsum(counts)[:-1]]),
                            counts) + np.arange(total)
        j = vc.indices[offsets]
        m = np.minimum(np.repeat(w, counts), vc.data[offsets])
        temp = np.bincount(np.repeat(i, counts) * n + j, weights=m,
                           minlength=(stop - start) * n).reshape(stop - start, n)
        bi, bj = np.nonzero(temp)
        t = temp[bi, bj]
        out_rows.append(bi + start)
        out_cols.append(bj)
        out_d.append(np.maximum(1.0 - t / (2.0 - t), 0.0))
    d = sparse.coo_matrix((np.concatenate(out_d).astype(np.float32),
                           (np.concatenate(out_rows), np.concatenate(out_cols))),
                          shape=(n, n)).tocsr()
    return d


def _check_distance(distance):
    if not sparse.issparse(distance) or distance.shape[0] != distance.shape[1]:
        raise ValueError("`distance` must be a square scipy.sparse matrix of the distances "
                         "below 1 (e.g. `jaccard_distance`'s). Received: "
                         f"{type(distance).__name__} of shape {getattr(distance, 'shape', None)}")
    return distance.tocsr()


def dbscan(distance, eps=0.6, min_samples=4):
    """DBSCAN on a sparse precomputed distance.

    A sample's neighbours are the stored entries of its row at distance <=
    `eps`, itself included when its diagonal entry is stored (as
    `jaccard_distance` stores it); a core sample has at least `min_samples`
    of them. Clusters are the connected groups of core samples, numbered in
    the order of their first sample and a non-core sample with a core
    neighbour joins the first of its neighbours' clusters, as scikit-learn's
    scan assigns them; any other sample is noise, -1.

    Args:
        distance: A square `scipy.sparse` matrix (stored entries: distances).
        eps: The neighbourhood radius, > 0. Defaults to 0.6 (SpCL's).
        min_samples: Neighbours of a core sample. Defaults to 4 (SpCL's).

    Returns:
        int64 `[N]` cluster ids, -1 for noise.

    Example:

    >>> from scipy import sparse
    >>> d = sparse.csr_matrix(([0.0, 0.1, 0.1, 0.0, 0.0], ([0, 0, 1, 1, 2], [0, 1, 0, 1, 2])),
    ...                       shape=(3, 3))
    >>> dbscan(d, eps=0.5, min_samples=2).tolist()
    [0, 0, -1]
    """
    d = _check_distance(distance)
    eps = check_positive(eps, "eps")
    min_samples = check_int(min_samples, "min_samples", 1)
    n = d.shape[0]
    rows = np.repeat(np.arange(n), np.diff(d.indptr))
    near = d.data <= eps
    rows, cols, dist = rows[near], d.indices[near], d.data[near]
    core = np.bincount(rows, minlength=n) >= min_samples
    both = core[rows] & core[cols]
    graph = sparse.csr_matrix((np.ones(int(both.sum())), (rows[both], cols[both])),
                              shape=(n, n))
    _, component = csgraph.connected_components(graph, directed=False)
    labels = np.full(n, -1, np.int64)
    core_ids = np.flatnonzero(core)
    if core_ids.size:
        # Number clusters by their first (core) sample.
        first = np.full(n, n, np.int64)
        np.minimum.at(first, component[core_ids], core_ids)
        order = np.argsort(first[component[core_ids]], kind="stable")
        _, number = np.unique(first[component[core_ids]][order], return_inverse=True)
        labels[core_ids[order]] = number
        border = ~core[rows] & core[cols]
        if border.any():
            # The first cluster (by number) among its core neighbours': the one
            # scikit-learn's scan reaches it from.
            best = np.full(n, np.iinfo(np.int64).max)
            np.minimum.at(best, rows[border], labels[cols[border]])
            joined = best < np.iinfo(np.int64).max
            labels[joined] = best[joined]
    return labels


def _with_outliers(labels):
    """DBSCAN's ids with each noise sample given an id of its own (after the
    clusters', in sample order), as SpCL's `generate_pseudo_labels`."""
    labels = np.asarray(labels, np.int64).copy()
    noise = labels < 0
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


def _group_sizes(labels):
    """Per sample: how many samples share its label (rows of `labels [N, m]`
    compared whole)."""
    _, inverse, counts = np.unique(labels, axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()]


def _one_minus_iou(a, b):
    """Per sample: 1 - |I_a & I_b| / |I_a | I_b|, I the samples sharing its label."""
    size_a, size_b = _group_sizes(a[:, None]), _group_sizes(b[:, None])
    inter = _group_sizes(np.stack([a, b], axis=1))
    return 1.0 - inter / (size_a + size_b - inter)


def self_paced_labels(distance, eps=0.6, eps_gap=0.02, min_samples=4,
                      independence_threshold=None):
    """SpCL's pseudo labels for one epoch.

    DBSCAN at `eps`, `eps - eps_gap` and `eps + eps_gap`; per sample
    `R_comp = 1 - IoU(I, I_tight)` and `R_indep = 1 - IoU(I, I_loose)` (I:
    the samples sharing its label, each outlier alone); per cluster the
    minimum of each over its members. A sample keeps its cluster when the
    cluster's `R_indep` is at most the independence threshold and its own
    `R_comp` at most its cluster's; otherwise it becomes an outlier with a
    label of its own. The threshold, when not given, is the 90th percentile
    of the clusters' `R_indep` (clusters of two or more samples), as the
    official code sets it at the first epoch and keeps it.

    Args:
        distance: `jaccard_distance`'s sparse matrix (or any of its kind).
        eps: DBSCAN's radius. Defaults to 0.6 (SpCL's).
        eps_gap: The tight and loose radii's offset. Defaults to 0.02.
        min_samples: DBSCAN's. Defaults to 4.
        independence_threshold: The threshold, or None to compute it.

    Returns:
        `(labels, threshold, stats)`: int64 labels `[N]` from 0 (clusters
        first, then outliers; every id held), the threshold used (None when
        there was no cluster of two or more to set it), and a dict with
        `clusters` (labels held by two or more samples) and `outliers`.
    """
    eps = check_positive(eps, "eps")
    eps_gap = check_positive(eps_gap, "eps_gap")
    if eps_gap >= eps:
        raise ValueError(f"`eps_gap` must be smaller than `eps` ({eps}). "
                         f"Received: eps_gap={eps_gap}")
    d = _check_distance(distance)
    labels = _with_outliers(dbscan(d, eps, min_samples))
    tight = _with_outliers(dbscan(d, eps - eps_gap, min_samples))
    loose = _with_outliers(dbscan(d, eps + eps_gap, min_samples))
    r_comp, r_indep = _one_minus_iou(labels, tight), _one_minus_iou(labels, loose)
    ids, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    cluster_comp = np.full(ids.size, np.inf)
    cluster_indep = np.full(ids.size, np.inf)
    np.minimum.at(cluster_comp, inverse, r_comp)
    np.minimum.at(cluster_indep, inverse, r_indep)
    threshold = independence_threshold
    if threshold is None:
        multi = np.sort(cluster_indep[sizes > 1])
        if multi.size:
            threshold = float(multi[min(multi.size - 1, int(np.round(multi.size * 0.9)))])
    keep = r_comp <= cluster_comp[inverse]
    if threshold is not None:
        keep &= cluster_indep[inverse] <= threshold
    out = labels.copy()
    out[~keep] = labels.max() + 1 + np.arange(int((~keep).sum()))
    out = np.unique(out, return_inverse=True)[1].astype(np.int64).ravel()
    counts = np.bincount(out)
    return out, threshold, {"clusters": int((counts > 1).sum()),
                            "outliers": int((counts == 1).sum())}
