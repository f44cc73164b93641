"""The general path of `supcon_loss`: every option, dense or in row blocks.

The options the fused paths (`_fused`) do not implement (`variant="in"`, the
other denominators, `positives_cap`, an explicit `mask`, multi-hot labels,
`contrast_mode="one"`) need, for each anchor row, which contrast rows are its
positives, which are excluded (capped out) and which are negatives. Here these
masks are built for a block of anchor rows at a time from sample-level
relations (`[rows, samples]`: labels or the user's mask, the cap), or for
class ids and no labels from one comparison of two label vectors, never as
`N x N` matrices of the whole batch. The element-wise pass over a block's
logits is compiled with XLA and keeps four row statistics, from which the
gradient of the logits has a closed form (`_backward`); the embeddings'
gradient is then two products:

- dense (`block_size=None` below the automatic threshold): one block of all
  rows, its logits kept for the backward pass;
- blockwise: the anchors `block_size` rows at a time, each block's logits
  recomputed in the backward pass, so the extra memory is O(block_size x N)
  for N contrast rows (one more `N x N x d` product than the dense path).

Layout, as in the reference implementation: anchor row `v * B + i` is view `v`
of local sample `i`; contrast column `v * Bc + j` is view `v` of global sample
`j`, and a queue's `K` entries are the last columns (one-view samples
`Bc .. Bc + K - 1`).
"""

import tensorflow as tf

from supcon_tf.losses import _fused
from supcon_tf.losses._fused import MAX_FIXED_SHIFT_SPAN
from supcon_tf.losses._masks import _masked_logsumexp, class_ids, same_class


def sample_relation(y_true, y_contrast, queue_labels, kind, mask, offset, n_samples,
                    positives_cap):
    """A function from local sample ids `[b]` to the sample-level
    `(positive, excluded)` bool matrices `[b, n_samples]`.

    A sample's own other views are positives (with a `mask`, only if the mask
    says so, as in the reference code); with `positives_cap = k` only the
    first `k` other samples of the class, in batch then queue order, stay
    positives and the rest are excluded (neither positives nor negatives).
    """

    def relation(ids):
        own = tf.equal(ids[:, None] + offset, tf.range(n_samples)[None, :])
        if mask is not None:
            pos = tf.gather(mask, ids)
        elif y_true is None:
            pos = own
        else:
            y = tf.gather(y_true, ids)
            pos = same_class(y, y_contrast, kind)
            if queue_labels is not None:
                pos = tf.concat([pos, same_class(y, queue_labels, kind, "queue_labels")], 1)
            pos = tf.logical_or(pos, own)
        if positives_cap is None:
            return pos, tf.zeros_like(pos)
        others = tf.logical_and(pos, tf.logical_not(own))
        rank = tf.cumsum(tf.cast(others, tf.int32), axis=1)      # 1-based on positives
        kept = tf.logical_and(others, rank <= positives_cap)
        excluded = tf.logical_and(others, tf.logical_not(kept))
        return tf.logical_or(kept, tf.logical_and(pos, own)), excluded

    return relation


def class_ranks(labels):
    """Each entry's 1-based position among the entries of its class, in
    order (`[n]` int32): sorted once, no `n x n` comparison."""
    order = tf.argsort(labels, stable=True)
    ordered = tf.gather(labels, order)
    first = tf.searchsorted(ordered, ordered, side="left", out_type=tf.int32)
    rank = tf.range(tf.size(labels, out_type=tf.int32)) - first + 1
    return tf.scatter_nd(order[:, None], rank, tf.shape(labels, out_type=tf.int32))


def label_columns(y_true, y_contrast, queue_labels, offset, batch, n_batch_samples,
                  views, n_queue, positives_cap=None):
    """For class ids (or no labels) without a mask: int64 labels of the local
    samples `[B]` and of the contrast columns `[N]` such that a column is a
    positive of an anchor exactly when their labels are equal (without labels
    each sample is its own class, and a queue entry no one's), and with
    `positives_cap` (and labels) the class ranks of the anchors' samples and
    of the columns and the cap, else None. The masks then come from
    comparisons of vectors."""
    if y_true is None:
        rows = tf.cast(offset + tf.range(batch), tf.int64)
        batch_cols = tf.range(n_batch_samples, dtype=tf.int64)
        queue_cols = -1 - tf.range(n_queue, dtype=tf.int64)
    else:
        rows = class_ids(y_true)
        batch_cols = class_ids(y_contrast)
        queue_cols = (tf.zeros([0], tf.int64) if queue_labels is None
                      else class_ids(queue_labels, "queue_labels"))
    ranks = None
    if positives_cap is not None and y_true is not None:
        # Samples then queue entries, the order positives_cap counts in.
        rank = class_ranks(tf.concat([batch_cols, queue_cols], 0))
        ranks = (rank[offset:offset + batch],
                 tf.concat([tf.tile(rank[:n_batch_samples], [views]), rank[n_batch_samples:]], 0),
                 int(positives_cap))
    return rows, tf.concat([tf.tile(batch_cols, [views]), queue_cols], 0), ranks


def _masks(logits, sample_pos, sample_out, col_sample, self_col, row_label, col_label,
           cap_ranks):
    """The positive and negative masks `[b, N]` of a block: from equal labels
    (`row_label`, `col_label`; with `positives_cap`, the class ranks of
    `cap_ranks`) or gathered from its sample-level relations (column `c` is
    sample `col_sample[c]`); the anchor itself is neither."""
    # The anchor itself: view v of sample i is column v * Bc + offset + i.
    not_self = tf.not_equal(tf.range(tf.shape(logits)[1])[None, :], self_col[:, None])
    if row_label is not None:
        same = tf.equal(row_label[:, None], col_label[None, :])
        if cap_ranks is None:
            return tf.logical_and(same, not_self), tf.logical_not(same)
        # The entries past the cap are neither positives nor negatives.
        row_rank, col_rank, row_sample, cap = cap_ranks
        capped = _fused._capped_out(
            (row_label, row_rank, row_sample, col_label, col_rank, col_sample, cap))
        pos = tf.logical_and(tf.logical_and(same, tf.logical_not(capped)), not_self)
        return pos, tf.logical_not(same)
    pos = tf.gather(sample_pos, col_sample, axis=1)
    out = tf.gather(sample_out, col_sample, axis=1)
    pos = tf.logical_and(pos, not_self)
    neg = tf.logical_not(tf.logical_or(tf.logical_or(pos, out), tf.logical_not(not_self)))
    return pos, neg


def _lse(x, mask, shift):
    """Row log-sum-exp of `x` over `mask` and whether the row's set is
    non-empty (`[b, 1]` each; 0 for an empty row). With `shift` (logits of
    unit-norm rows, bounded by `shift = 1/T`), shifted by that bound instead
    of the row maximum: one pass fewer."""
    if shift is None:
        return _masked_logsumexp(x, mask)
    total = tf.reduce_sum(tf.where(mask, tf.exp(x - shift), 0.0), axis=1, keepdims=True)
    nonempty = tf.reduce_any(mask, axis=1, keepdims=True)
    return shift + tf.math.log(tf.where(nonempty, total, tf.ones_like(total))), nonempty


def _forward(logits, sample_pos, sample_out, col_sample, self_col, row_label, col_label,
             cap_ranks, variant, denominator, shift):
    """Per-anchor loss `[b]` of a block and the row statistics `[b, 5]` its
    gradient needs: (log-sum-exp over the denominator, or over the negatives
    for "one_positive"; the log-sum-exp over the positives of the log-probs
    for variant "in"; the number of positives; whether the anchor counts;
    for "one_positive" with the fixed shift, `sum_p c_p` of `_backward`)."""
    pos, neg = _masks(logits, sample_pos, sample_out, col_sample, self_col, row_label,
                      col_label, cap_ranks)
    if denominator == "one_positive" and shift is not None:
        return _one_positive_shifted(logits, pos, neg, variant, shift)
    if denominator == "one_positive":
        lse, has_neg = _lse(logits, neg, shift)
        lse = tf.where(has_neg, lse, tf.constant(-float("inf")))
        # log(exp(l) / (exp(l) + sum_neg)) = -softplus(log_sum_neg - l).
        log_prob = -tf.nn.softplus(lse - logits)
        valid = tf.ones_like(has_neg)
    else:
        den_mask = tf.logical_or(pos, neg) if denominator == "all" else neg
        lse, valid = _lse(logits, den_mask, shift)
        log_prob = logits - lse
    n_pos = tf.reduce_sum(tf.cast(pos, tf.float32), axis=1)
    has_pos = n_pos > 0
    safe_n_pos = tf.where(has_pos, n_pos, tf.ones_like(n_pos))
    if variant == "out":
        lse_pos = tf.zeros_like(n_pos)
        per_anchor = -tf.reduce_sum(tf.where(pos, log_prob, 0.0), axis=1) / safe_n_pos
    else:
        lse_pos = _masked_logsumexp(log_prob, pos)[0][:, 0]
        per_anchor = -(lse_pos - tf.math.log(safe_n_pos))
    keep = tf.logical_and(has_pos, valid[:, 0])
    per_anchor = tf.where(keep, per_anchor, tf.zeros_like(per_anchor))
    stats = tf.stack([lse[:, 0], lse_pos, safe_n_pos, tf.cast(keep, tf.float32),
                      tf.zeros_like(lse_pos)], axis=1)
    return per_anchor, stats


def _one_positive_shifted(logits, pos, neg, variant, shift):
    """`_forward` for "one_positive" when every exponential is shifted by the
    fixed bound (`e = exp(l - shift)` neither overflows nor underflows): with
    `S` the row's sum of `e` over the negatives, the positive's log-prob is
    `log(e / (e + S))` and `sigmoid(lse_neg - l) = S / (e + S)`, one
    exponential and one logarithm per entry; the gradient's `sum_p c_p` is
    summed here, so `_backward` needs one pass. With no negative, `S = 0`
    and every term is 0, as in the general form."""
    e = tf.exp(logits - shift)
    total = tf.reduce_sum(tf.where(neg, e, 0.0), axis=1, keepdims=True)
    has_neg = total > 0
    lse = tf.where(has_neg, shift + tf.math.log(tf.where(has_neg, total, 1.0)),
                   tf.constant(-float("inf")))
    den = e + total
    sig = total / den
    n_pos = tf.reduce_sum(tf.cast(pos, tf.float32), axis=1)
    has_pos = n_pos > 0
    safe_n_pos = tf.where(has_pos, n_pos, tf.ones_like(n_pos))
    if variant == "out":
        log_prob = (logits - shift) - tf.math.log(den)
        lse_pos = tf.zeros_like(n_pos)
        per_anchor = -tf.reduce_sum(tf.where(pos, log_prob, 0.0), axis=1) / safe_n_pos
        sum_c = tf.reduce_sum(tf.where(pos, sig, 0.0), axis=1) / safe_n_pos
    else:
        # exp(log_prob) = e / (e + S) = 1 - sig: the positives' log-sum-exp of
        # the log-probs is the log of a plain sum.
        prob = e / den
        mass = tf.reduce_sum(tf.where(pos, prob, 0.0), axis=1)
        safe_mass = tf.where(has_pos, mass, tf.ones_like(mass))
        lse_pos = tf.math.log(safe_mass)
        per_anchor = -(lse_pos - tf.math.log(safe_n_pos))
        sum_c = tf.reduce_sum(tf.where(pos, sig * prob, 0.0), axis=1) / safe_mass
    per_anchor = tf.where(has_pos, per_anchor, tf.zeros_like(per_anchor))
    stats = tf.stack([lse[:, 0], lse_pos, safe_n_pos, tf.cast(has_pos, tf.float32), sum_c],
                     axis=1)
    return per_anchor, stats


def _backward(logits, sample_pos, sample_out, col_sample, self_col, row_label, col_label,
              cap_ranks, variant, denominator, shift, stats, upstream):
    """The gradient of `upstream . per_anchor` w.r.t. the block's logits, in
    one element-wise pass, in closed form from the row statistics of `_forward`:

    - denominator "all" / "only_negatives": `softmax_D - g` on the positives,
      `g = 1 / |P|` (out) or the softmax of the log-probs over P (in);
    - "one_positive": with `s_p = sigmoid(lse_neg - l_p)` and `c_p = g_p s_p`,
      `-c` on the positives and `(sum_p c_p) softmax_neg` on the negatives.
    """
    pos, neg = _masks(logits, sample_pos, sample_out, col_sample, self_col, row_label,
                      col_label, cap_ranks)
    lse, lse_pos, safe_n_pos, keep, sum_c = (stats[:, i:i + 1] for i in range(5))
    scale = tf.where(keep > 0, upstream[:, None], tf.zeros_like(keep))
    if denominator == "one_positive" and shift is not None:
        # As _one_positive_shifted: e = exp(l - shift), S from lse_neg; the
        # negatives' softmax is e / S.
        e = tf.exp(logits - shift)
        total = tf.exp(lse - shift)                       # 0 with no negative
        den = e + total
        if variant == "out":
            c = tf.where(pos, total / (den * safe_n_pos), 0.0)
        else:
            c = tf.where(pos, total * e / (den * den * tf.exp(lse_pos)), 0.0)
        inv_total = tf.where(total > 0, 1.0 / tf.where(total > 0, total, 1.0), 0.0)
        d = tf.where(neg, (sum_c * inv_total) * e, -c)
    elif denominator == "one_positive":
        # One exponential per entry: e = exp(l - lse_neg) is the negatives'
        # softmax, and sigmoid(lse_neg - l) = 1 / (1 + e). With no negative
        # (lse_neg = -inf) every term is 0.
        finite = tf.math.is_finite(lse)
        e = tf.exp(logits - tf.where(finite, lse, tf.zeros_like(lse)))
        sig = tf.where(finite, 1.0 / (1.0 + e), 0.0)
        if variant == "out":
            c = tf.where(pos, sig / safe_n_pos, 0.0)
        else:
            # exp(log_prob - lse_pos), with log_prob = log(e / (1 + e)) computed
            # stably (e overflows for a positive far above the negatives).
            log_prob = -tf.nn.softplus(lse - logits)
            c = tf.where(pos, sig * tf.exp(log_prob - lse_pos), 0.0)
        soft_neg = tf.where(tf.logical_and(neg, finite), e, 0.0)
        d = tf.reduce_sum(c, axis=1, keepdims=True) * soft_neg - c
    else:
        den_mask = tf.logical_or(pos, neg) if denominator == "all" else neg
        soft_den = tf.where(den_mask, tf.exp(logits - lse), 0.0)
        if variant == "out":
            d = soft_den - tf.where(pos, 1.0 / safe_n_pos, 0.0)
        else:
            d = soft_den - tf.where(pos, tf.exp(logits - lse - lse_pos), 0.0)
    return d * scale


# The element-wise passes over a block's logits (masks, log-sum-exps, the
# closed-form gradient) are compiled with XLA, which fuses them (the stock CPU
# kernels are built for AVX only, see _fused); the products stay on
# TensorFlow's oneDNN kernels.
_xla_forward = tf.function(_forward, jit_compile=True, reduce_retracing=True)
_xla_backward = tf.function(_backward, jit_compile=True, reduce_retracing=True)


@tf.function(jit_compile=True, reduce_retracing=True)
def _xla_forward_and_gradient(logits, *inputs):
    """`_forward`, and `_backward` for an upstream of 1 on every row, in one
    compiled function."""
    per_anchor, stats = _forward(logits, *inputs)
    return per_anchor, stats, _backward(logits, *inputs, stats, tf.ones_like(per_anchor))


class Blocks:
    """What a block of anchor rows needs besides its rows: the sample-level
    relations and the layout (see the module docstring)."""

    def __init__(self, relation, batch, n_batch_samples, views, n_queue, offset,
                 temperature, variant, denominator, unit_norm, labels=None):
        self.relation, self.batch, self.offset = relation, batch, offset
        self.labels = labels                    # label_columns' result
        self.n_batch_samples = n_batch_samples
        self.col_sample = tf.concat([tf.tile(tf.range(n_batch_samples), [views]),
                                     n_batch_samples + tf.range(n_queue)], 0)
        self.temperature, self.variant, self.denominator = temperature, variant, denominator
        # Unit-norm rows have logits in [-1/T, 1/T]: shift the exponentials by
        # the bound when exp(-2/T) cannot underflow (as _fused does).
        self.shift = (1.0 / temperature
                      if unit_norm and 2.0 / temperature <= MAX_FIXED_SHIFT_SPAN else None)

    def inputs(self, rows):
        """The element-wise pass's inputs for the anchor rows `rows`."""
        ids = rows % self.batch
        self_col = (rows // self.batch) * self.n_batch_samples + self.offset + ids
        if self.labels is not None:
            rows_label, cols_label, ranks = self.labels
            cap_ranks = None
            if ranks is not None:
                rows_rank, cols_rank, cap = ranks
                cap_ranks = (tf.gather(rows_rank, ids), cols_rank, self.offset + ids, cap)
            return (None, None, None if ranks is None else self.col_sample, self_col,
                    tf.gather(rows_label, ids), cols_label, cap_ranks, self.variant,
                    self.denominator, self.shift)
        sample_pos, sample_out = self.relation(ids)
        return (sample_pos, sample_out, self.col_sample, self_col, None, None, None,
                self.variant, self.denominator, self.shift)

    def logits(self, anchor, contrast):
        # 1/T on the [rows, d] operand, not on the [rows, N] product.
        return tf.matmul(anchor * (1.0 / self.temperature), contrast, transpose_b=True)

    def loss(self, anchor, contrast, rows):
        """`(per-anchor loss [b], row statistics [b, 4])` of the rows."""
        return _xla_forward(self.logits(anchor, contrast), *self.inputs(rows))

    def grads(self, anchor, contrast, rows, stats, upstream, logits=None):
        """`(d anchor, d contrast)` of `upstream . loss(anchor, contrast, rows)`:
        the logits' gradient in one element-wise pass, then two products."""
        logits = self.logits(anchor, contrast) if logits is None else logits
        # The 1/T of the logits folded into the upstream gradient ([rows]).
        d_logits = _xla_backward(logits, *self.inputs(rows), stats,
                                 upstream * (1.0 / self.temperature))
        return (tf.matmul(d_logits, contrast),
                tf.matmul(d_logits, anchor, transpose_a=True))


def per_anchor_loss(anchor, contrast, blocks, block_size):
    """`blocks.loss` over all anchor rows, with its own gradient: in one block
    when `block_size` is None (the logits kept for the backward pass), else
    `block_size` rows at a time, each block's logits recomputed in the
    backward pass (O(block x N) memory)."""
    n_anchor = tf.shape(anchor)[0]
    if block_size is None:
        @tf.custom_gradient
        def dense(a, c):
            rows = tf.range(n_anchor)
            logits = blocks.logits(a, c)
            value, stats = _xla_forward(logits, *blocks.inputs(rows))

            def grad(upstream):
                return blocks.grads(a, c, rows, stats, upstream, logits=logits)

            return value, grad

        return dense(anchor, contrast)
    n_blocks = (n_anchor + block_size - 1) // block_size

    def array():
        return tf.TensorArray(tf.float32, size=n_blocks, infer_shape=False)

    @tf.custom_gradient
    def run(a, c):
        # The anchors padded to whole blocks (zero rows: they add nothing to
        # the contrast's gradient and their results are dropped), so that
        # every block has a static size and XLA compiles the loop.
        padded = _fused.padded_rows(a, block_size)

        def block(b):
            start = b * block_size
            return (_fused.block_of(padded, start, block_size),
                    start + tf.range(block_size))

        # Each block's forward pass also takes its gradient for an upstream of
        # 1 on every row (`_fused.uniform_upstream`), while its logits are at
        # hand; the backward pass scales it, or recomputes each block's logits
        # when the upstream is not uniform. Unused, these loop outputs are
        # pruned inside a tf.function.
        def forward(b, values, stats, d_anchor, d_contrast):
            rows_a, rows = block(b)
            value, stat, d_logits = _xla_forward_and_gradient(blocks.logits(rows_a, c),
                                                              *blocks.inputs(rows))
            d_anchor = d_anchor.write(b, tf.matmul(d_logits, c))
            d_contrast = tf.ensure_shape(
                d_contrast + tf.matmul(d_logits, rows_a, transpose_a=True), c.shape)
            return b + 1, values.write(b, value), stats.write(b, stat), d_anchor, d_contrast

        _, values, stats, d_anchor_1, d_contrast_1 = tf.while_loop(
            lambda b, *_: b < n_blocks, forward,
            (tf.constant(0), array(), array(), array(), tf.zeros_like(c)),
            parallel_iterations=1)
        padded_stats = stats.concat()
        stats = padded_stats[:n_anchor]
        d_anchor_1 = tf.reshape(d_anchor_1.concat()[:n_anchor], tf.shape(a))

        def recomputed(upstream):
            padded_upstream = _fused.padded_rows(upstream, block_size)

            def backward(b, d_anchor, d_contrast):
                rows_a, rows = block(b)
                start = b * block_size
                d_block, d_c = blocks.grads(
                    rows_a, c, rows, _fused.block_of(padded_stats, start, block_size),
                    _fused.block_of(padded_upstream, start, block_size))
                return (b + 1, d_anchor.write(b, d_block),
                        tf.ensure_shape(d_contrast + d_c, c.shape))

            _, d_anchor, d_contrast = tf.while_loop(
                lambda b, *_: b < n_blocks, backward,
                (tf.constant(0), array(), tf.zeros_like(c)), parallel_iterations=1)
            return tf.reshape(d_anchor.concat()[:n_anchor], tf.shape(a)), d_contrast

        def grad(upstream):
            # Rows that do not count (no positive) have a zero gradient of
            # the logits whatever their upstream.
            counted = stats[:, 3] > 0
            uniform, scale = _fused.uniform_upstream(
                tf.where(counted, upstream, tf.zeros_like(upstream)), counted)
            inverse_t = 1.0 / blocks.temperature
            return tf.cond(
                uniform,
                lambda: (d_anchor_1 * (upstream * inverse_t)[:, None],
                         d_contrast_1 * (scale * inverse_t)),
                lambda: recomputed(upstream))

        return values.concat()[:n_anchor], grad

    return run(anchor, contrast)
