"""The fast paths of `supcon_loss` for its default options.

With class-id labels (or none), `contrast_mode="all"`, `variant="out"`,
`denominator="all"`, no `positives_cap` and no explicit `mask`, the loss of an
anchor `a` is

    L(a) = logsumexp_{c != a} (z_a . z_c / T) - (z_a . sum_{p in P(a)} z_p) / (T |P(a)|)

The positive term needs only the per-class sums of the contrast embeddings
(O(N d) work: segment sums, never an N x N mask). The log-sum-exp over the
N x N logits is the only O(N^2) part. It has its own gradient, which needs the
row softmax and two N x N x d products:

- `dense`: the logits are computed once and their exponentials kept for the
  backward pass (two N x N buffers at the peak, no masks);
- `blockwise`: the anchors are processed `block_size` rows at a time, in the
  forward pass and again in the backward pass (the logits of a block are
  recomputed), so the extra memory is O(block_size x N) instead of O(N^2), at
  the price of one more N x N x d product.

Rows are in sample-major order (row `i * views + v` is view `v` of sample `i`),
so an anchor's own view sits on one diagonal of the logits, offset by the
replica's first row in the global batch.
"""

import tensorflow as tf

# Above this many logits (anchors x contrast rows) the automatic choice is the
# blockwise path: the dense path holds two N x N float32 buffers at its peak
# (measured +2.3 GB at 16384 x 16384, docs/BENCHMARKS.md).
AUTO_BLOCKWISE_ABOVE = 16384 * 16384
AUTO_BLOCK_SIZE = 1024


def class_segments(labels):
    """Dense int32 ids of the classes in the 1-D `labels`: equal labels get
    equal ids, all ids are in `[0, len(labels))`. Sort based (XLA friendly, no
    N x N comparison)."""
    order = tf.argsort(labels, stable=True)
    ordered = tf.gather(labels, order)
    starts = tf.concat([tf.ones([1], tf.bool),
                        tf.not_equal(ordered[1:], ordered[:-1])], axis=0)
    ids_in_order = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    return tf.scatter_nd(order[:, None], ids_in_order, tf.shape(labels))


def _masked_rows(logits, diag):
    """Sets each anchor's own entry (`(i, i + diag)`) to -inf; with `diag`
    None the anchors are not among the contrast rows and nothing is masked."""
    if diag is None:
        return logits
    rows = tf.shape(logits)[0]
    return tf.linalg.set_diag(logits, tf.fill([rows], tf.constant(-float("inf"))),
                              k=diag)


# exp(-MAX_FIXED_SHIFT_SPAN) must stay a normal float32 (> 1.2e-38).
MAX_FIXED_SHIFT_SPAN = 80.0


# The element-wise passes over the N x N logits are compiled with XLA: the
# stock TensorFlow CPU kernels are built for AVX only and their `exp` alone
# costs about as much as one of the products (a one-off timing, docs/BENCHMARKS.md);
# XLA targets the host CPU and fuses the exponential with the row sum. The
# products stay on TensorFlow's oneDNN kernels.
@tf.function(jit_compile=True, reduce_retracing=True)
def _exp_row_sum(logits):
    exp = tf.exp(logits)
    return exp, tf.reduce_sum(exp, axis=1)


@tf.function(jit_compile=True, reduce_retracing=True)
def _exp_max_shifted_row_sum(logits):
    row_max = tf.reduce_max(logits, axis=1, keepdims=True)
    # A row with nothing to contrast (one row in all) is all -inf.
    row_max = tf.where(tf.math.is_finite(row_max), row_max, tf.zeros_like(row_max))
    exp = tf.exp(logits - row_max)
    return exp, tf.reduce_sum(exp, axis=1), row_max[:, 0]


@tf.function(jit_compile=True, reduce_retracing=True)
def _exp(logits):
    return tf.exp(logits)


def _shifted_logits(anchor_block, contrast, scale, shift):
    """`anchor_block @ contrast.T * scale - shift[:, None]`, the shift folded
    into the product as one more feature column (no N x N subtraction)."""
    anchor_block = tf.concat([anchor_block * scale, -shift[:, None]], axis=1)
    contrast = tf.concat([contrast, tf.ones_like(contrast[:, :1])], axis=1)
    return tf.matmul(anchor_block, contrast, transpose_b=True)


def _lse_block(anchor_block, contrast, diag, temperature, unit_norm):
    """Row log-sum-exp of one block's logits (own entries excluded) and the
    shifted exponentials, with their row sums.

    The exponentials are shifted by the row maximum, or, for unit-norm
    embeddings whose logits lie in [-1/T, 1/T], by the bound 1/T folded into
    the product (no max and subtract passes over the logits), when exp(-2/T)
    cannot underflow."""
    scale = 1.0 / temperature
    if unit_norm and 2.0 * scale <= MAX_FIXED_SHIFT_SPAN:
        shift = tf.fill(tf.shape(anchor_block)[:1], tf.constant(scale))
        logits = _masked_rows(_shifted_logits(anchor_block, contrast, scale, shift), diag)
        exp, total = _exp_row_sum(logits)
    else:
        logits = _masked_rows(
            tf.matmul(anchor_block * scale, contrast, transpose_b=True), diag)
        exp, total, shift = _exp_max_shifted_row_sum(logits)
    safe = tf.where(total > 0, total, tf.ones_like(total))
    return shift + tf.math.log(safe), exp, safe


def _contrast_grad(weights, operand, contrast, grad_rows):
    """`weights.T @ operand` for the first `grad_rows` contrast rows (all when
    None), zeros for the rest: rows such as a queue's take no gradient, and
    their product is not computed."""
    if grad_rows is None:
        return tf.matmul(weights, operand, transpose_a=True)
    head = tf.matmul(weights[:, :grad_rows], operand, transpose_a=True)
    rest = tf.zeros(tf.stack([tf.shape(contrast)[0] - grad_rows, tf.shape(contrast)[1]]),
                    contrast.dtype)
    return tf.concat([head, rest], 0)


def _lse_dense(anchor, contrast, diag, temperature, unit_norm, grad_rows=None):
    @tf.custom_gradient
    def lse(a, c):
        value, exp, total = _lse_block(a, c, diag, temperature, unit_norm)

        def grad(upstream):
            # d lse_i / d logit_ij = exp_ij / total_i. The row weights are
            # applied to the [N, d] operands and results, never to the
            # N x N exponentials: the backward pass is the two products.
            row_weight = (upstream / total / temperature)[:, None]
            return (tf.matmul(exp, c) * row_weight,
                    _contrast_grad(exp, a * row_weight, c, grad_rows))

        return value, grad

    return lse(anchor, contrast)


def _shift(diag, start):
    return None if diag is None else diag + start


def _lse_blockwise(anchor, contrast, diag, temperature, unit_norm, block_size,
                   grad_rows=None):
    n_anchor = tf.shape(anchor)[0]
    n_blocks = (n_anchor + block_size - 1) // block_size

    def bounds(b):
        start = b * block_size
        return start, tf.minimum(start + block_size, n_anchor)

    @tf.custom_gradient
    def lse(a, c):
        def forward(b, values):
            start, stop = bounds(b)
            value, _, _ = _lse_block(a[start:stop], c, _shift(diag, start),
                                     temperature, unit_norm)
            return b + 1, values.write(b, value)

        _, values = tf.while_loop(
            lambda b, _: b < n_blocks, forward,
            (tf.constant(0), tf.TensorArray(tf.float32, size=n_blocks, infer_shape=False)),
            parallel_iterations=1)
        value = values.concat()

        def grad(upstream):
            def backward(b, d_anchor, d_contrast):
                start, stop = bounds(b)
                block = a[start:stop]
                # The softmax from the stored log-sum-exp (empty rows have a
                # zero upstream gradient and a finite stand-in), its row
                # weights applied to the [rows, d] operands as in _lse_dense.
                row_lse = value[start:stop]
                row_lse = tf.where(tf.math.is_finite(row_lse), row_lse,
                                   tf.zeros_like(row_lse))
                softmax = _exp(_masked_rows(
                    _shifted_logits(block, c, 1.0 / temperature, row_lse),
                    _shift(diag, start)))
                row_weight = (upstream[start:stop] / temperature)[:, None]
                d_anchor = d_anchor.write(b, tf.matmul(softmax, c) * row_weight)
                d_contrast = tf.ensure_shape(
                    d_contrast + _contrast_grad(softmax, block * row_weight, c, grad_rows),
                    c.shape)
                return b + 1, d_anchor, d_contrast

            _, d_anchor, d_contrast = tf.while_loop(
                lambda b, *_: b < n_blocks, backward,
                (tf.constant(0),
                 tf.TensorArray(tf.float32, size=n_blocks, infer_shape=False),
                 tf.zeros_like(c)),
                parallel_iterations=1)
            return tf.reshape(d_anchor.concat(), tf.shape(a)), d_contrast

        return value, grad

    return lse(anchor, contrast)


def lse(anchor, contrast, diag, temperature, unit_norm, block_size=None, grad_rows=None):
    """Row log-sum-exp of `anchor @ contrast.T / temperature` (each anchor's
    own row `i + diag` excluded unless `diag` is None), with its own gradient;
    dense, or blockwise with `block_size` rows (None: decided as in
    `supcon_out_per_anchor`). Only the first `grad_rows` contrast rows get a
    gradient (None: all)."""
    if block_size is None:
        rows = (anchor.shape[0], contrast.shape[0])
        if None not in rows and rows[0] * rows[1] > AUTO_BLOCKWISE_ABOVE:
            block_size = AUTO_BLOCK_SIZE
    if block_size is None:
        return _lse_dense(anchor, contrast, diag, temperature, unit_norm, grad_rows)
    return _lse_blockwise(anchor, contrast, diag, temperature, unit_norm, block_size,
                          grad_rows)


def supcon_out_per_anchor(anchor, contrast, seg_anchor, seg_contrast, diag,
                          temperature, block_size, unit_norm, grad_rows=None,
                          extra_lse=None):
    """`L_out` with `denominator="all"` for each anchor row.

    Args:
        anchor: `[Na, d]` float32 anchor rows.
        contrast: `[Nc, d]` float32 contrast rows; anchor row `i` is contrast
            row `i + diag`.
        seg_anchor, seg_contrast: int32 class ids of the rows, `< Nc`.
        diag: int32 scalar, the offset of the anchors' own rows; or None
            when the anchors are not contrast rows (MoCo's queries against
            keys): then nothing is excluded and every row of the anchor's
            class is a positive.
        temperature: Python float.
        block_size: None (automatic), or the anchor rows per block of the
            blockwise path.
        unit_norm: whether the rows are L2-normalised (their logits are then
            bounded by 1/T, which allows a fixed shift).
        grad_rows: None, or how many leading contrast rows take a gradient
            (a queue's rows after them do not; 0: none do).
        extra_lse: None, or `[Na]` log-sum-exps of logits of further
            negatives of each anchor (MoCHi's synthetic ones), added to the
            denominator.

    Returns:
        `[Na]` float32; 0 for an anchor with no positive.
    """
    n_contrast = tf.shape(contrast)[0]
    n_anchor = tf.shape(anchor)[0]
    class_sum = tf.math.unsorted_segment_sum(contrast, seg_contrast, n_contrast)
    class_rows = tf.math.unsorted_segment_sum(
        tf.ones_like(seg_contrast, tf.float32), seg_contrast, n_contrast)
    positives_sum = tf.gather(class_sum, seg_anchor)
    n_pos = tf.gather(class_rows, seg_anchor)
    if diag is not None:
        positives_sum -= contrast[diag:diag + n_anchor]
        n_pos -= 1.0
    has_pos = n_pos > 0
    safe_n_pos = tf.where(has_pos, n_pos, tf.ones_like(n_pos))
    positive_term = tf.reduce_sum(anchor * positives_sum, axis=1) / (
        temperature * safe_n_pos)

    # The path is decided when the function is traced (a `tf.cond` between
    # the two custom gradients breaks TensorFlow's graph optimisations): with
    # row counts unknown then, the dense path.
    row_lse = lse(anchor, contrast, diag, temperature, unit_norm, block_size, grad_rows)
    if extra_lse is not None:
        row_lse = tf.math.reduce_logsumexp(tf.stack([row_lse, extra_lse], axis=1), axis=1)
    per_anchor = row_lse - positive_term
    return tf.where(has_pos, per_anchor, tf.zeros_like(per_anchor))
