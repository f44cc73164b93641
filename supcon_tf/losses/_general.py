"""The general path of `supcon_loss`: every option, dense or in row blocks.

The options the fused paths (`_fused`) do not implement (`variant="in"`, the
other denominators, `positives_cap`, an explicit `mask`, multi-hot labels,
`contrast_mode="one"`) need, for each anchor row, which contrast rows are its
positives, which are excluded (capped out) and which are negatives. Here these
masks are built for a block of anchor rows at a time from sample-level
relations (`[rows, samples]`: labels or the user's mask, the cap), never as
`N x N` matrices of the whole batch:

- dense (`block_size=None` below the automatic threshold): one block of all
  rows, differentiated by TensorFlow;
- blockwise: the anchors `block_size` rows at a time, with a custom gradient
  that recomputes each block's logits and masks in the backward pass, so the
  extra memory is O(block_size x N) for N contrast rows (one more
  `N x N x d` product than the dense path).

Layout, as in the reference implementation: anchor row `v * B + i` is view `v`
of local sample `i`; contrast column `v * Bc + j` is view `v` of global sample
`j`, and a queue's `K` entries are the last columns (one-view samples
`Bc .. Bc + K - 1`).
"""

import tensorflow as tf

from supcon_tf.losses._masks import _masked_logsumexp, same_class


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


def _loss_from_logits(logits, sample_pos, sample_out, col_sample, self_col, variant,
                      denominator):
    """Per-anchor loss `[b]` from a block's logits `[b, N]` and its sample-level
    relations; the masks `[b, N]` are gathered from them here."""
    pos = tf.gather(sample_pos, col_sample, axis=1)
    out = tf.gather(sample_out, col_sample, axis=1)
    # The anchor itself: view v of sample i is column v * Bc + offset + i.
    not_self = tf.not_equal(tf.range(tf.shape(logits)[1])[None, :], self_col[:, None])
    pos = tf.logical_and(pos, not_self)
    neg = tf.logical_not(tf.logical_or(tf.logical_or(pos, out), tf.logical_not(not_self)))

    if denominator == "one_positive":
        log_neg, has_neg = _masked_logsumexp(logits, neg)
        # log(exp(l) / (exp(l) + sum_neg)) = -softplus(log_sum_neg - l).
        log_prob = -tf.nn.softplus(
            tf.where(has_neg, log_neg, tf.constant(-float("inf"))) - logits)
        valid_anchor = tf.ones_like(has_neg)
    else:
        den_mask = tf.logical_or(pos, neg) if denominator == "all" else neg
        log_den, valid_anchor = _masked_logsumexp(logits, den_mask)
        log_prob = logits - log_den

    n_pos = tf.reduce_sum(tf.cast(pos, tf.float32), axis=1)
    has_pos = n_pos > 0
    safe_n_pos = tf.where(has_pos, n_pos, tf.ones_like(n_pos))
    if variant == "out":
        per_anchor = -tf.reduce_sum(tf.where(pos, log_prob, 0.0), axis=1) / safe_n_pos
    else:
        log_mean, _ = _masked_logsumexp(log_prob, pos)
        per_anchor = -(log_mean[:, 0] - tf.math.log(safe_n_pos))
    keep = tf.logical_and(has_pos, valid_anchor[:, 0])
    return tf.where(keep, per_anchor, tf.zeros_like(per_anchor))


# The element-wise passes over a block's logits (masks, log-sum-exps) are
# compiled with XLA, which fuses them (the stock CPU kernels are built for AVX
# only, see _fused); the products stay on TensorFlow's oneDNN kernels.
_xla_loss = tf.function(_loss_from_logits, jit_compile=True, reduce_retracing=True)


@tf.function(jit_compile=True, reduce_retracing=True)
def _xla_loss_grad(logits, sample_pos, sample_out, col_sample, self_col, variant,
                   denominator, upstream):
    """The gradient of `upstream . _loss_from_logits(logits, ...)` w.r.t. the logits."""
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = _loss_from_logits(logits, sample_pos, sample_out, col_sample, self_col,
                                  variant, denominator)
    return tape.gradient(value, logits, output_gradients=upstream)


class Blocks:
    """What a block of anchor rows needs besides its rows: the sample-level
    relations and the layout (see the module docstring)."""

    def __init__(self, relation, batch, n_batch_samples, views, n_queue, offset,
                 temperature, variant, denominator):
        self.relation, self.batch, self.offset = relation, batch, offset
        self.n_batch_samples = n_batch_samples
        self.temperature, self.variant, self.denominator = temperature, variant, denominator
        self.col_sample = tf.concat([tf.tile(tf.range(n_batch_samples), [views]),
                                     n_batch_samples + tf.range(n_queue)], 0)

    def inputs(self, rows):
        """The element-wise pass's inputs for the anchor rows `rows`."""
        ids = rows % self.batch
        sample_pos, sample_out = self.relation(ids)
        self_col = (rows // self.batch) * self.n_batch_samples + self.offset + ids
        return sample_pos, sample_out, self.col_sample, self_col, self.variant, self.denominator

    def logits(self, anchor, contrast):
        return tf.matmul(anchor, contrast, transpose_b=True) / self.temperature

    def loss(self, anchor, contrast, rows):
        return _xla_loss(self.logits(anchor, contrast), *self.inputs(rows))

    def grads(self, anchor, contrast, rows, upstream):
        """`(d anchor, d contrast)` of `upstream . loss(anchor, contrast, rows)`:
        the logits' gradient from the element-wise pass, then two products."""
        d_logits = _xla_loss_grad(self.logits(anchor, contrast), *self.inputs(rows),
                                  upstream) / self.temperature
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
            inputs = blocks.inputs(rows)

            def grad(upstream):
                d_logits = _xla_loss_grad(logits, *inputs, upstream) / blocks.temperature
                return (tf.matmul(d_logits, c), tf.matmul(d_logits, a, transpose_a=True))

            return _xla_loss(logits, *inputs), grad

        return dense(anchor, contrast)
    n_blocks = (n_anchor + block_size - 1) // block_size

    def bounds(b):
        start = b * block_size
        stop = tf.minimum(start + block_size, n_anchor)
        return start, stop, tf.range(start, stop)

    @tf.custom_gradient
    def run(a, c):
        def forward(b, values):
            start, stop, rows = bounds(b)
            return b + 1, values.write(b, blocks.loss(a[start:stop], c, rows))

        _, values = tf.while_loop(
            lambda b, _: b < n_blocks, forward,
            (tf.constant(0), tf.TensorArray(tf.float32, size=n_blocks, infer_shape=False)),
            parallel_iterations=1)

        def grad(upstream):
            def backward(b, d_anchor, d_contrast):
                start, stop, rows = bounds(b)
                d_block, d_c = blocks.grads(a[start:stop], c, rows, upstream[start:stop])
                return (b + 1, d_anchor.write(b, d_block),
                        tf.ensure_shape(d_contrast + d_c, c.shape))

            _, d_anchor, d_contrast = tf.while_loop(
                lambda b, *_: b < n_blocks, backward,
                (tf.constant(0), tf.TensorArray(tf.float32, size=n_blocks, infer_shape=False),
                 tf.zeros_like(c)),
                parallel_iterations=1)
            return tf.reshape(d_anchor.concat(), tf.shape(a)), d_contrast

        return values.concat(), grad

    return run(anchor, contrast)
