"""Mixing in embedding space: MoCHi's synthetic hard negatives.

Reference: Kalantidis et al., "Hard Negative Mixing for Contrastive
Learning", NeurIPS 2020 (https://arxiv.org/abs/2010.01028), section 4.
"""

import numbers

import tensorflow as tf

from supcon_tf.losses._masks import class_ids


def check_mochi(n_hard, s, s_prime, start_epoch=0):
    """Validates MoCHi's `(N, s, s')` and start epoch; returns them as ints
    (`n_hard=None`: MoCHi off, returns None)."""
    if n_hard is None:
        return None
    values = {"mochi_n": n_hard, "mochi_s": s, "mochi_s_prime": s_prime,
              "mochi_start_epoch": start_epoch}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"`{name}` must be an integer. Received: {name}={value!r}")
    if n_hard < 1:
        raise ValueError("`mochi_n` (the hardest queue negatives to mix from) must be >= 1, "
                         f"or None for no mixing. Received: mochi_n={n_hard}")
    if not 0 <= s <= n_hard:
        raise ValueError(f"`mochi_s` must be in [0, mochi_n={n_hard}] (mixes of pairs "
                         f"among the N hardest negatives). Received: mochi_s={s}")
    if s_prime < 0:
        raise ValueError(f"`mochi_s_prime` must be >= 0. Received: mochi_s_prime={s_prime}")
    if start_epoch < 0:
        raise ValueError(f"`mochi_start_epoch` must be >= 0. Received: "
                         f"mochi_start_epoch={start_epoch}")
    return int(n_hard), int(s), int(s_prime), int(start_epoch)


def mix_hardest(queries, queue, hardest, n_valid, draws):
    """MoCHi's mixes for given random draws (the deterministic part of
    `mochi_negatives`).

    Args:
        queries: `[B, d]` unit-norm queries.
        queue: `[K, d]` unit-norm negatives.
        hardest: `[B, N]` int indices into `queue`, the hardest first.
        n_valid: `[B]` how many leading entries of `hardest` may be mixed.
        draws: `(u_i, u_j, alpha)` each `[B, s]` and `(u_q, beta)` each
            `[B, s']`, uniform in [0, 1): picks among the first `n_valid`
            hardest (`floor(u * n_valid)`) and the mixing coefficients
            (`beta` is scaled to [0, 0.5)).

    Returns:
        `[B, s + s', d]`: `normalize(alpha n_i + (1 - alpha) n_j)` then
        `normalize(beta q + (1 - beta) n_j)`; zeros for a query with no
        negative to mix.
    """
    u_i, u_j, alpha, u_q, beta = draws
    n_valid = tf.cast(n_valid, tf.int32)

    def pick(u):
        slot = tf.cast(tf.floor(u * tf.cast(n_valid, u.dtype)[:, None]), tf.int32)
        slot = tf.clip_by_value(slot, 0, tf.maximum(n_valid - 1, 0)[:, None])
        return tf.gather(queue, tf.gather(hardest, slot, batch_dims=1))   # [B, n, d]

    pairs = alpha[..., None] * pick(u_i) + (1.0 - alpha[..., None]) * pick(u_j)
    beta = 0.5 * beta[..., None]
    with_query = beta * queries[:, None, :] + (1.0 - beta) * pick(u_q)
    mixes = tf.math.l2_normalize(tf.concat([pairs, with_query], axis=1), axis=-1)
    return tf.where((n_valid > 0)[:, None, None], mixes, tf.zeros_like(mixes))


def mochi_negatives(queries, queue, n_hard, s, s_prime, seed, labels=None,
                    queue_labels=None):
    """MoCHi's synthetic hard negatives for each query, no gradient.

    For each query `q` (L2-normalised) the queue's entries are ranked by
    `q . n`; among its `n_hard` hardest negatives (N in the paper), `s`
    mixes of two of them, `normalize(alpha n_i + (1 - alpha) n_j)` with
    `alpha ~ U(0, 1)`, and `s_prime` mixes with the query itself,
    `normalize(beta q + (1 - beta) n_j)` with `beta ~ U(0, 0.5)` (harder than
    any of the negatives), `i`, `j` uniform among the N. Nothing is
    back-propagated through them (paper, section 4). With labels, queue
    entries of the query's class are positives, never mixed as negatives.

    Args:
        queries: `[B, d]` queries (normalised here).
        queue: `[K, d]` queue (normalised here); `K` may be 0 and below `n_hard`.
        n_hard, s, s_prime: MoCHi's N, s and s'.
        seed: A stateless seed, `[2]` integers (same seed, same mixes).
        labels, queue_labels: Optional class ids `[B]` and `[K]`.

    Returns:
        float32 `[B, s + s_prime, d]`, unit-norm rows, or zero rows for a
        query with no negative in the queue (`moco_loss` ignores them).

    Example:

    >>> import numpy as np
    >>> q = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    >>> queue = np.random.default_rng(1).normal(size=(64, 8)).astype("float32")
    >>> mochi_negatives(q, queue, n_hard=16, s=8, s_prime=2, seed=[0, 1]).shape
    TensorShape([4, 10, 8])

    Reference:
        Kalantidis et al., "Hard Negative Mixing for Contrastive Learning",
        NeurIPS 2020.
    """
    check_mochi(n_hard, s, s_prime)
    q = tf.math.l2_normalize(tf.stop_gradient(tf.cast(queries, tf.float32)), axis=-1)
    negatives = tf.math.l2_normalize(tf.stop_gradient(tf.cast(queue, tf.float32)), axis=-1)
    # One zero row at the end, at -inf similarity: top_k always has an entry
    # to gather, and it is never valid.
    negatives = tf.concat([negatives, tf.zeros([1, tf.shape(negatives)[1]])], axis=0)
    batch, k = tf.shape(q)[0], tf.shape(negatives)[0]
    sims = tf.matmul(q, negatives, transpose_b=True)
    invalid = tf.equal(tf.range(k), k - 1)[None, :]
    if labels is not None:
        same = tf.equal(class_ids(labels)[:, None],
                        class_ids(queue_labels, "queue_labels")[None, :])
        invalid = tf.logical_or(invalid, tf.pad(same, [[0, 0], [0, 1]]))
    sims = tf.where(invalid, tf.constant(-float("inf")), sims)
    top, hardest = tf.math.top_k(sims, k=tf.minimum(n_hard, k))
    n_valid = tf.reduce_sum(tf.cast(tf.math.is_finite(top), tf.int32), axis=1)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    shapes = [[batch, s]] * 3 + [[batch, s_prime]] * 2
    draws = [tf.random.stateless_uniform(shape, seed=seed + [0, 7919 * (i + 1)])
             for i, shape in enumerate(shapes)]
    return tf.stop_gradient(mix_hardest(q, negatives, hardest, n_valid, draws))
