"""Slow, loop-based numpy references of the contrastive losses, written from
the paper's definitions (float64, one anchor and one contrast view at a time),
independent of the vectorised TensorFlow code under test."""

import math

import numpy as np


def _sample_positive(labels, mask, i, j):
    """Is sample j a positive of sample i before any cap?"""
    if mask is not None:
        return mask[i][j] != 0
    if labels is None:
        return i == j
    labels = np.asarray(labels)
    if labels.ndim == 1 or labels.shape[1] == 1:
        flat = labels.reshape(-1)
        return flat[i] == flat[j]
    return i == j or bool(np.any((labels[i] != 0) & (labels[j] != 0)))


def _queue_positive(labels, queue_labels, i, k):
    """Is queue entry k a positive of anchor sample i?"""
    if labels is None:
        return False
    a, b = np.asarray(labels), np.asarray(queue_labels)
    if a.ndim == 1 or a.shape[1] == 1:
        return a.reshape(-1)[i] == b.reshape(-1)[k]
    return bool(np.any((a[i] != 0) & (b[k] != 0)))


def _status(labels, mask, cap, i, j, queue_labels=None):
    """'pos', 'neg' or 'excluded' (capped out) of sample j for anchor sample i;
    j = ('queue', k) is queue entry k, ranked after every batch sample."""
    batch = None if labels is None else len(labels)
    if isinstance(j, tuple):
        k = j[1]
        if not _queue_positive(labels, queue_labels, i, k):
            return "neg"
        if cap is None:
            return "pos"
        n = batch if batch is not None else len(mask)
        rank = sum(1 for jj in range(n) if jj != i and _sample_positive(labels, mask, i, jj))
        rank += sum(1 for kk in range(k + 1) if _queue_positive(labels, queue_labels, i, kk))
        return "pos" if rank <= cap else "excluded"
    if not _sample_positive(labels, mask, i, j):
        return "neg"
    if j == i or cap is None:
        return "pos"
    rank = sum(1 for jj in range(j + 1)
               if jj != i and _sample_positive(labels, mask, i, jj))
    return "pos" if rank <= cap else "excluded"


def supcon_reference(labels, features, mask=None, temperature=0.1,
                     base_temperature=None, contrast_mode="all", variant="out",
                     denominator="all", positives_cap=None, normalize=True,
                     queue=None, queue_labels=None):
    """Per-sample SupCon loss, by loops. Returns float64 [batch]. `queue`
    entries ([K, dim]) join every anchor's contrast set after the batch."""
    f = np.asarray(features, dtype=np.float64)
    qf = None if queue is None else np.asarray(queue, dtype=np.float64)
    if f.ndim == 2:
        f = f[:, None, :]
    batch, views = f.shape[:2]
    f = f.reshape(batch, views, -1)
    if normalize:
        f = f / np.linalg.norm(f, axis=-1, keepdims=True)
        if qf is not None:
            qf = qf / np.linalg.norm(qf, axis=-1, keepdims=True)
    if base_temperature is None:
        base_temperature = temperature
    anchor_views = range(views) if contrast_mode == "all" else [0]
    out = np.zeros(batch)
    for i in range(batch):
        total = 0.0
        for v in anchor_views:
            positives, negatives = [], []
            for j in range(batch):
                for w in range(views):
                    if (j, w) == (i, v):
                        continue
                    logit = float(np.dot(f[i, v], f[j, w])) / temperature
                    status = _status(labels, mask, positives_cap, i, j)
                    if status == "pos":
                        positives.append(logit)
                    elif status == "neg":
                        negatives.append(logit)
            for k in range(0 if qf is None else len(qf)):
                logit = float(np.dot(f[i, v], qf[k])) / temperature
                status = _status(labels, mask, positives_cap, i, ("queue", k), queue_labels)
                if status == "pos":
                    positives.append(logit)
                elif status == "neg":
                    negatives.append(logit)
            if not positives:
                continue
            if denominator == "only_negatives" and not negatives:
                continue
            sum_pos = sum(math.exp(x) for x in positives)
            sum_neg = sum(math.exp(x) for x in negatives)
            ratios = []
            for lp in positives:
                if denominator == "all":
                    den = sum_pos + sum_neg
                elif denominator == "one_positive":
                    den = math.exp(lp) + sum_neg
                else:
                    den = sum_neg
                ratios.append(math.exp(lp) / den)
            if variant == "out":
                loss = -sum(math.log(r) for r in ratios) / len(ratios)
            else:
                loss = -math.log(sum(ratios) / len(ratios))
            total += loss * temperature / base_temperature
        out[i] = total / len(anchor_views)
    return out


def supcon_pytorch_port(labels, features, temperature=0.07, base_temperature=0.07,
                        contrast_mode="all"):
    """The authors' PyTorch `SupConLoss.forward` (HobbitLong/SupContrast,
    losses.py) transcribed line by line to numpy: a second, vectorised,
    independent implementation. Returns the scalar mean loss."""
    features = np.asarray(features, dtype=np.float64)
    batch_size = features.shape[0]
    if labels is None:
        mask = np.eye(batch_size)
    else:
        labels = np.asarray(labels).reshape(-1, 1)
        mask = (labels == labels.T).astype(np.float64)
    contrast_count = features.shape[1]
    contrast_feature = np.concatenate([features[:, k] for k in range(contrast_count)])
    if contrast_mode == "one":
        anchor_feature = features[:, 0]
        anchor_count = 1
    else:
        anchor_feature = contrast_feature
        anchor_count = contrast_count
    anchor_dot_contrast = anchor_feature @ contrast_feature.T / temperature
    logits = anchor_dot_contrast - anchor_dot_contrast.max(axis=1, keepdims=True)
    mask = np.tile(mask, (anchor_count, contrast_count))
    logits_mask = np.ones_like(mask)
    idx = np.arange(batch_size * anchor_count)
    logits_mask[idx, idx] = 0
    mask = mask * logits_mask
    exp_logits = np.exp(logits) * logits_mask
    log_prob = logits - np.log(exp_logits.sum(1, keepdims=True))
    mask_pos_pairs = mask.sum(1)
    mask_pos_pairs = np.where(mask_pos_pairs < 1e-6, 1, mask_pos_pairs)
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask_pos_pairs
    loss = -(temperature / base_temperature) * mean_log_prob_pos
    return loss.reshape(anchor_count, batch_size).mean()


def moco_reference(labels, queries, keys, queue, queue_labels=None, temperature=0.2,
                   extra=None):
    """MoCo's loss per query, by loops, from the paper's pseudo-code (Algorithm
    1): l_pos = q . k, l_neg = q . queue, loss = CE([l_pos, l_neg] / T, 0).
    With labels: SupCon's L_out over every key of the batch and the queue,
    positives those of the query's class. `extra` `[B, S, d]`: further
    negatives of query i alone (MoCHi's), all-zero rows skipped. Inputs are
    L2-normalised here."""
    unit = lambda a: np.asarray(a, np.float64) / np.linalg.norm(a, axis=-1, keepdims=True)
    q, k = unit(queries), unit(keys)
    qu = np.zeros((0, q.shape[1])) if queue is None or len(queue) == 0 else unit(queue)
    out = np.zeros(len(q))
    for i in range(len(q)):
        own = [] if extra is None else [unit(h) for h in np.asarray(extra)[i] if np.any(h)]
        if labels is None:
            logits = [float(q[i] @ k[i]) / temperature]
            logits += [float(q[i] @ n) / temperature for n in list(qu) + own]
            out[i] = -logits[0] + math.log(sum(math.exp(x) for x in logits))
            continue
        contrast = [(float(q[i] @ k[j]) / temperature, labels[j] == labels[i])
                    for j in range(len(k))]
        contrast += [(float(q[i] @ qu[m]) / temperature, queue_labels[m] == labels[i])
                     for m in range(len(qu))]
        contrast += [(float(q[i] @ h) / temperature, False) for h in own]
        log_den = math.log(sum(math.exp(x) for x, _ in contrast))
        positives = [x for x, p in contrast if p]
        out[i] = -sum(x - log_den for x in positives) / len(positives)
    return out


def _standardised(z, eps, ddof=0):
    """Each column of `z` minus its mean, over sqrt(variance + eps), by loops."""
    n, d = z.shape
    out = np.zeros((n, d))
    for j in range(d):
        mean = sum(z[i, j] for i in range(n)) / n
        var = sum((z[i, j] - mean) ** 2 for i in range(n)) / (n - ddof)
        for i in range(n):
            out[i, j] = (z[i, j] - mean) / math.sqrt(var + eps)
    return out


def barlow_twins_reference(za, zb, lambda_=0.0051):
    """Barlow Twins, from the paper's Algorithm 1 with the reference code's
    BatchNorm standardisation (biased variance, eps 1e-5), by loops."""
    za, zb = np.asarray(za, np.float64), np.asarray(zb, np.float64)
    n, d = za.shape
    a, b = _standardised(za, 1e-5), _standardised(zb, 1e-5)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1.0 - c) ** 2 if i == j else lambda_ * c ** 2
    return loss


def vicreg_reference(za, zb, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    """VICReg, from the paper's Algorithm 1 / the reference code, by loops."""
    za, zb = np.asarray(za, np.float64), np.asarray(zb, np.float64)
    n, d = za.shape
    invariance = sum((za[i, j] - zb[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    variance = covariance = 0.0
    for z in (za, zb):
        means = [sum(z[i, j] for i in range(n)) / n for j in range(d)]
        x = [[z[i, j] - means[j] for j in range(d)] for i in range(n)]
        for j in range(d):
            std = math.sqrt(sum(x[i][j] ** 2 for i in range(n)) / (n - 1) + 1e-4)
            variance += max(0.0, 1.0 - std) / d / 2
        for j in range(d):
            for k in range(d):
                if j != k:
                    cov = sum(x[i][j] * x[i][k] for i in range(n)) / (n - 1)
                    covariance += cov ** 2 / d
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


def hard_negative_reference(features, labels=None, temperature=0.5, tau_plus=0.1, beta=1.0,
                            return_clamped=False):
    """HCL (Robinson et al., ICLR 2021, joshr17/HCL `criterion`, estimator
    "hard"), one anchor at a time: `features` `[batch, 2, dim]` (normalised
    here); negatives are the views of the other samples (of other classes,
    with `labels`). Per sample: the mean over its two anchors. With
    `return_clamped`, also the fraction of the two anchors whose Ng is at
    the clamp."""
    z = np.asarray(features, np.float64)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    out = np.zeros(len(z))
    clamped = np.zeros(len(z))
    for i in range(len(z)):
        values = []
        for v in range(2):
            anchor = z[i, v]
            pos = math.exp(anchor @ z[i, 1 - v] / temperature)
            neg = np.array([math.exp(anchor @ z[j, w] / temperature)
                            for j in range(len(z)) for w in range(2)
                            if j != i and (labels is None or labels[j] != labels[i])])
            if len(neg) == 0:
                values.append(0.0)
                continue
            n = len(neg)
            imp = neg ** beta
            reweighted = (imp * neg).sum() / imp.mean()
            ng = (-tau_plus * n * pos + reweighted) / (1 - tau_plus)
            clamped[i] += (ng <= n * math.exp(-1 / temperature)) / 2
            ng = max(ng, n * math.exp(-1 / temperature))
            values.append(-math.log(pos / (pos + ng)))
        out[i] = np.mean(values)
    return (out, clamped) if return_clamped else out


def finite_differences(fn, z, eps=1e-5):
    """Central differences of the scalar `fn(z)` with respect to every entry
    of `z`, in float64."""
    z = np.asarray(z, np.float64)
    numeric = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (fn(up) - fn(down)) / (2 * eps)
    return numeric


def sinkhorn_reference(scores, iterations=3, epsilon=0.05):
    """SwAV's distributed_sinkhorn on one process, transcribed."""
    q = np.exp(scores / epsilon).T
    b, k = q.shape[1], q.shape[0]
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def swav_reference(codes, scores, temperature=0.1):
    """SwAV's swapped prediction (facebookresearch/swav, main_swav.py), per
    sample, with loops: for each coded view a, the mean over the other views
    v of -sum_k q_ak log softmax(s_v / T)_k; then the mean over a."""
    codes, scores = np.asarray(codes, np.float64), np.asarray(scores, np.float64)
    batch, coded, _ = codes.shape
    views = scores.shape[1]
    out = np.zeros(batch)
    for i in range(batch):
        total = 0.0
        for a in range(coded):
            sub = 0.0
            for v in range(views):
                if v == a:
                    continue
                x = scores[i, v] / temperature
                log_p = x - np.log(np.sum(np.exp(x - x.max()))) - x.max()
                sub -= np.sum(codes[i, a] * log_p)
            total += sub / (views - 1)
        out[i] = total / coded
    return out


def cmc_reference(z, temperature=0.07, graph="core"):
    """CMC's objective per sample, in float64 loops (Tian et al., eqs. 2, 6,
    7): for each pair of the graph, both directions, the cross-entropy of
    sample s's view a against view b of every sample, s's own the positive."""
    z = np.asarray(z, np.float64)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    n, m = z.shape[:2]
    pairs = ([(0, j) for j in range(1, m)] if graph == "core"
             else [(i, j) for i in range(m) for j in range(i + 1, m)])
    out = np.zeros(n)
    for s in range(n):
        for i, j in pairs:
            for a, b in ((i, j), (j, i)):
                logits = [float(z[s, a] @ z[t, b]) / temperature for t in range(n)]
                top = max(logits)
                out[s] += top + math.log(sum(math.exp(v - top) for v in logits)) - logits[s]
    return out


def looc_reference(z, temperature=0.2):
    """LooC's objective per sample, in float64 loops (Xiao et al., ICLR 2021):
    `z[s, v, e]` is view v of sample s in space e, view 0 the query, views
    1..S the keys k_0..k_{S-1}. Space 0: every key of s positive; space e >= 1:
    only k_e; the contrast set is every key of every sample."""
    z = np.asarray(z, np.float64)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    n, views, spaces = z.shape[:3]
    out = np.zeros(n)
    for s in range(n):
        for e in range(spaces):
            logits = {(t, j): float(z[s, 0, e] @ z[t, 1 + j, e]) / temperature
                      for t in range(n) for j in range(spaces)}
            top = max(logits.values())
            log_norm = top + math.log(sum(math.exp(v - top) for v in logits.values()))
            positives = range(spaces) if e == 0 else [e]
            out[s] += -sum(logits[(s, j)] - log_norm for j in positives) / len(positives)
    return out


def conditional_contrastive_reference(labels, embed, proxy, temperature=1.0):
    """ContraGAN's 2C loss per sample, in float64 loops, as StudioGAN's
    `ConditionalContrastiveLoss` writes it: num = exp(s(e, p) / T) + the
    same-class others' exp(s(e_i, e_j) / T), den = exp(s(e, p) / T) + every
    other's; loss = -log(num / den)."""
    e = np.asarray(embed, np.float64)
    p = np.asarray(proxy, np.float64)
    e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    p = p / np.linalg.norm(p, axis=-1, keepdims=True)
    out = np.zeros(len(e))
    for i in range(len(e)):
        proxy_term = math.exp(float(e[i] @ p[i]) / temperature)
        num = den = proxy_term
        for j in range(len(e)):
            if j == i:
                continue
            term = math.exp(float(e[i] @ e[j]) / temperature)
            den += term
            if labels[j] == labels[i]:
                num += term
        out[i] = -math.log(num / den)
    return out


def clip_reference(a, b, scale, labels=None):
    """CLIP's loss per pair, in float64 loops (open_clip's ClipLoss on one
    process): the mean of the two cross-entropies of pair i's row of
    scale * a @ b.T and of scale * b @ a.T; with labels, the mean over the
    same-class columns of the log-probabilities."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    n = len(a)
    out = np.zeros(n)
    for i in range(n):
        for x, y in ((a, b), (b, a)):
            logits = [scale * float(x[i] @ y[j]) for j in range(n)]
            top = max(logits)
            lse = top + math.log(sum(math.exp(v - top) for v in logits))
            cols = [j for j in range(n) if j == i or (labels is not None and labels[j] == labels[i])]
            out[i] += 0.5 * sum(lse - logits[j] for j in cols) / len(cols)
    return out


def graphcl_reference(z, temperature=0.2, symmetric=False):
    """GraphCL's loss per graph, in float64 loops, as Shen-Lab/GraphCL's
    `loss_cal`: exp(cos(x_i, y_i)/T) over the sum of exp(cos(x_i, y_j)/T) for
    j != i, x the first views and y the second; with `symmetric`, the mean
    with the other direction."""
    z = np.asarray(z, np.float64)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    n = len(z)

    def one(x, y):
        out = np.zeros(n)
        for i in range(n):
            pos = math.exp(float(x[i] @ y[i]) / temperature)
            neg = sum(math.exp(float(x[i] @ y[j]) / temperature) for j in range(n) if j != i)
            out[i] = -math.log(pos / neg)
        return out

    forward = one(z[:, 0], z[:, 1])
    return 0.5 * (forward + one(z[:, 1], z[:, 0])) if symmetric else forward


def hybrid_memory_reference(y, f, memory, memory_labels, temperature=0.05):
    """SpCL's loss per sample in float64 loops, as yxgeee/SpCL's
    `HybridMemory.forward` without its 1e-6 terms: each label's score is the
    mean of f . v_j / T over the slots holding it (slots labelled -1 take no
    part); cross-entropy of the softmax over the held labels."""
    f = np.asarray(f, np.float64)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    v = np.asarray(memory, np.float64)
    labels = [int(l) for l in np.asarray(memory_labels).ravel()]
    held = sorted({l for l in labels if l >= 0})
    out = np.zeros(len(f))
    for i in range(len(f)):
        scores = {}
        for c in held:
            members = [j for j, l in enumerate(labels) if l == c]
            scores[c] = sum(float(f[i] @ v[j]) for j in members) / len(members) / temperature
        total = sum(math.exp(s) for s in scores.values())
        out[i] = -math.log(math.exp(scores[int(y[i])]) / total)
    return out


def hybrid_memory_update_reference(memory, slots, features, momentum=0.2):
    """The official memory update: one feature after the other,
    v <- normalize(m v + (1 - m) f) (features normalised first)."""
    v = np.array(memory, np.float64)
    for s, x in zip(slots, np.asarray(features, np.float64)):
        x = x / np.linalg.norm(x)
        v[s] = momentum * v[s] + (1 - momentum) * x
        v[s] /= np.linalg.norm(v[s])
    return v


def jaccard_reference(x, k1=20, k2=6):
    """SpCL's `compute_jaccard_distance` (spcl/utils/faiss_rerank.py) in NumPy,
    dense, with a brute-force search of the k1 nearest (squared L2) in place of
    faiss."""
    x = np.asarray(x, np.float64)
    n = len(x)
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    initial_rank = np.argsort(sq + np.diag(np.full(n, -1.0)), axis=1, kind="stable")[:, :k1]

    def k_reciprocal_neigh(rank, i, k):
        forward = rank[i, :k + 1]
        backward = rank[forward, :k + 1]
        return forward[np.where(backward == i)[0]]

    nn_k1 = [k_reciprocal_neigh(initial_rank, i, k1) for i in range(n)]
    nn_half = [k_reciprocal_neigh(initial_rank, i, int(np.around(k1 / 2))) for i in range(n)]
    v = np.zeros((n, n))
    for i in range(n):
        r = nn_k1[i]
        expansion = r
        for c in r:
            cand = nn_half[c]
            if len(np.intersect1d(cand, r)) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        dist = sq[i, expansion]      # the official 2 - 2 x.y, for unit rows
        w = np.exp(-dist - np.max(-dist))
        v[i, expansion] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[initial_rank[i, :k2]].mean(axis=0) for i in range(n)])
    inv = [np.where(v[:, i] != 0)[0] for i in range(n)]
    jaccard = np.zeros((n, n))
    for i in range(n):
        temp_min = np.zeros(n)
        nonzero = np.where(v[i] != 0)[0]
        for k in nonzero:
            temp_min[inv[k]] += np.minimum(v[i, k], v[inv[k], k])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    jaccard[jaccard < 0] = 0.0
    return jaccard


def dbscan_reference(distance, eps, min_samples):
    """DBSCAN as scikit-learn runs it on a dense precomputed distance: scan the
    samples in order, grow a cluster from each unlabelled core sample;
    returns (labels, core mask)."""
    d = np.asarray(distance)
    n = len(d)
    neighbours = [np.where(d[i] <= eps)[0] for i in range(n)]
    core = np.array([len(nb) >= min_samples for nb in neighbours])
    labels = np.full(n, -1)
    cluster = 0
    for i in range(n):
        if labels[i] != -1 or not core[i]:
            continue
        labels[i] = cluster
        stack = [i]
        while stack:
            j = stack.pop()
            if not core[j]:
                continue
            for k in neighbours[j]:
                if labels[k] == -1:
                    labels[k] = cluster
                    stack.append(k)
        cluster += 1
    return labels, core


def self_paced_reference(distance, eps=0.6, eps_gap=0.02, min_samples=4, threshold=None):
    """The official code's pseudo labels for one epoch (spcl_train_uda.py, the
    block from `pseudo_labels = cluster.fit_predict` to the re-labelled
    outliers), on a dense distance, with `dbscan_reference` for
    sklearn's DBSCAN; returns (labels, threshold) with labels as the
    official ids (not renumbered)."""
    def pseudo(ids):
        ids = np.asarray(ids)
        num = len(set(ids.tolist()) - {-1})
        out, outliers = [], 0
        for i in ids:
            if i != -1:
                out.append(i)
            else:
                out.append(num + outliers)
                outliers += 1
        return np.array(out)

    labels = pseudo(dbscan_reference(distance, eps, min_samples)[0])
    tight = pseudo(dbscan_reference(distance, eps - eps_gap, min_samples)[0])
    loose = pseudo(dbscan_reference(distance, eps + eps_gap, min_samples)[0])
    same = (labels[:, None] == labels[None, :]).astype(float)
    same_t = (tight[:, None] == tight[None, :]).astype(float)
    same_l = (loose[:, None] == loose[None, :]).astype(float)
    r_comp = 1 - np.minimum(same, same_t).sum(-1) / np.maximum(same, same_t).sum(-1)
    r_indep = 1 - np.minimum(same, same_l).sum(-1) / np.maximum(same, same_l).sum(-1)
    comp, indep, num = {}, {}, {}
    for c, i_, l in zip(r_comp, r_indep, labels):
        comp.setdefault(int(l), []).append(c)
        indep.setdefault(int(l), []).append(i_)
        num[int(l)] = num.get(int(l), 0) + 1
    keys = sorted(comp)
    cluster_comp = [min(comp[k]) for k in keys]
    cluster_indep = [min(indep[k]) for k in keys]
    noins = [iou for iou, k in zip(cluster_indep, keys) if num[k] > 1]
    if threshold is None:
        threshold = np.sort(noins)[min(len(noins) - 1, int(np.round(len(noins) * 0.9)))]
    out = labels.copy()
    outliers = 0
    for i, l in enumerate(labels):
        if cluster_indep[l] <= threshold and r_comp[i] <= cluster_comp[l]:
            continue
        out[i] = len(cluster_indep) + outliers
        outliers += 1
    return out, threshold


def mice_reference(f, v, g, omega, mu, queue, temperature=1.0, kappa=1.0):
    """MiCE's loss per image in float64 loops, as TsungWeiTsai/MiCE's
    `MiCE_ELBO.forward` (without its 1e-18 terms): the gate's softmax, each
    expert's softmax over its positive and the queue's keys, the posterior,
    and -sum_k q_k (log pi_k + log phi_k - log q_k). Returns (loss [B],
    posterior [B, K])."""
    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    f, v, g, mu, queue = unit(f), unit(v), unit(g), unit(mu), unit(queue)
    omega = np.asarray(omega, np.float64)
    b, k = f.shape[:2]
    loss, posterior = np.zeros(b), np.zeros((b, k))
    for i in range(b):
        gate = [float(omega[j] @ g[i]) / kappa for j in range(k)]
        log_pi = [s - math.log(sum(math.exp(t) for t in gate)) for s in gate]
        log_phi = []
        for j in range(k):
            pos = (float(f[i, j] @ v[i, j]) + float(v[i, j] @ mu[j])) / temperature
            negs = [(float(queue[q, j] @ f[i, j]) + float(queue[q, j] @ mu[j])) / temperature
                    for q in range(len(queue))]
            log_phi.append(pos - math.log(math.exp(pos) + sum(math.exp(n) for n in negs)))
        joint = [math.exp(a + c) for a, c in zip(log_pi, log_phi)]
        q = [x / sum(joint) for x in joint]
        posterior[i] = q
        loss[i] = -sum(qk * (a + c - math.log(qk)) for qk, a, c in zip(q, log_pi, log_phi))
    return loss, posterior


def dim_reference(g, local, estimator="jsd"):
    """Deep InfoMax's local objective per image in float64 loops, as
    rdevon/DIM's `fenchel_dual_loss` (JSD measure) and `infonce_loss` (with
    the other locations of the own image left out of the softmax instead of
    scored -10)."""
    g, local = np.asarray(g, np.float64), np.asarray(local, np.float64)
    b, n_loc = local.shape[:2]
    out = np.zeros(b)
    log2 = math.log(2.0)

    def softplus(x):
        return math.log1p(math.exp(-abs(x))) + max(x, 0.0)

    for i in range(b):
        if estimator == "jsd":
            pos = np.mean([log2 - softplus(-float(g[i] @ local[i, m])) for m in range(n_loc)])
            neg = [softplus(float(g[i] @ local[j, m])) - log2 for j in range(b) if j != i
                   for m in range(n_loc)]
            out[i] = (np.mean(neg) if neg else 0.0) - pos
        else:
            negs = [float(g[i] @ local[j, m]) for j in range(b) if j != i for m in range(n_loc)]
            terms = []
            for m in range(n_loc):
                p = float(g[i] @ local[i, m])
                terms.append(-(p - math.log(math.exp(p) + sum(math.exp(n) for n in negs))))
            out[i] = np.mean(terms)
    return out


def amdim_reference(src, trg, tclip=20.0, logit_reg=0.05):
    """AMDIM's NCE per source in float64 loops, as Philip-Bachman/amdim-public's
    `NCE_MI_MULTI._model_scores` / `_loss_g2l` (its batch-mean logit penalty
    as each source's share): scores / sqrt(R), tanh-clipped; each own target
    location against every other image's locations."""
    src, trg = np.asarray(src, np.float64), np.asarray(trg, np.float64)
    b, n_loc, r = trg.shape
    out = np.zeros(b)
    for i in range(b):
        raw = np.array([[float(src[i] @ trg[j, m]) / math.sqrt(r) for m in range(n_loc)]
                        for j in range(b)])
        reg = logit_reg * float(np.mean(raw ** 2))
        clipped = tclip * np.tanh(raw / tclip) if tclip else raw
        negs = [clipped[j, m] for j in range(b) if j != i for m in range(n_loc)]
        terms = [-(clipped[i, m] - math.log(math.exp(clipped[i, m])
                                            + sum(math.exp(n) for n in negs)))
                 for m in range(n_loc)]
        out[i] = np.mean(terms) + reg
    return out


def cpc_reference(predictions, z, first_step=1):
    """CPC's loss per image in float64 loops: for step t (k = first_step + t
    rows ahead) and position (i, j) with i + k < H, the cross-entropy of the
    prediction's scores against every patch of every image, the positive the
    image's patch (i + k, j); the mean over positions, then over steps."""
    p, z = np.asarray(predictions, np.float64), np.asarray(z, np.float64)
    b, steps, rows, cols, _ = p.shape
    flat = z.reshape(-1, z.shape[-1])
    out = np.zeros(b)
    for n in range(b):
        for t in range(steps):
            k = first_step + t
            terms = []
            for i in range(rows - k):
                for j in range(cols):
                    scores = flat @ p[n, t, i, j]
                    pos = scores[n * rows * cols + (i + k) * cols + j]
                    terms.append(-(pos - math.log(sum(math.exp(s) for s in scores))))
            out[n] += np.mean(terms) / steps
    return out


def pixpro_mask_reference(boxes_q, boxes_k, height, width, threshold=0.7):
    """The official PixPro `get_mask` in float64 loops, with its boxes
    `(x0, y0, x1, y1)` read from ours `[y0, x0, y1, x1]`: each location's
    centre from its view's box, positive when the distance over the larger
    bin diagonal is below `threshold`."""
    out = np.zeros((len(boxes_q), height * width, height * width))
    for n, (q, k) in enumerate(zip(np.asarray(boxes_q, np.float64),
                                   np.asarray(boxes_k, np.float64))):
        qy0, qx0, qy1, qx1 = q
        ky0, kx0, ky1, kx1 = k
        qbw, qbh = (qx1 - qx0) / width, (qy1 - qy0) / height
        kbw, kbh = (kx1 - kx0) / width, (ky1 - ky0) / height
        diag = max(math.hypot(qbw, qbh), math.hypot(kbw, kbh))
        for p in range(height * width):
            cqy, cqx = qy0 + (p // width + 0.5) * qbh, qx0 + (p % width + 0.5) * qbw
            for r in range(height * width):
                cky, ckx = ky0 + (r // width + 0.5) * kbh, kx0 + (r % width + 0.5) * kbw
                out[n, p, r] = math.hypot(cqy - cky, cqx - ckx) / diag < threshold
    return out


def pixpro_reference(targets, predictions, mask):
    """The official PixPro `regression_loss` of one direction per image in
    float64 loops: -2 sum_pq mask_pq cos(pred_p, target_q) / (sum mask + 1e-6)."""
    t, p = np.asarray(targets, np.float64), np.asarray(predictions, np.float64)
    mask = np.asarray(mask, np.float64)
    out = np.zeros(len(t))
    for n in range(len(t)):
        total = 0.0
        for i in range(p.shape[1]):
            for j in range(t.shape[1]):
                cos = p[n, i] @ t[n, j] / np.linalg.norm(p[n, i]) / np.linalg.norm(t[n, j])
                total += mask[n, i, j] * cos
        out[n] = -2.0 * total / (mask[n].sum() + 1e-6)
    return out


def pixel_propagation_reference(x, values, gamma=2.0):
    """The official `featprop` per location in float64 loops, with the
    values `g(x)` given: y_i = sum_j max(cos(x_i, x_j), 0)^gamma g_j / |g_j|."""
    x, g = np.asarray(x, np.float64), np.asarray(values, np.float64)
    out = np.zeros_like(g)
    for n in range(len(x)):
        for i in range(x.shape[1]):
            for j in range(x.shape[1]):
                cos = x[n, i] @ x[n, j] / np.linalg.norm(x[n, i]) / np.linalg.norm(x[n, j])
                out[n, i] += max(cos, 0.0) ** gamma * g[n, j] / np.linalg.norm(g[n, j])
    return out
