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


# exp(-MAX_FIXED_SHIFT_SPAN) must stay a normal float32 (> 1.2e-38).
MAX_FIXED_SHIFT_SPAN = 80.0


# The element-wise passes over the N x N logits are compiled with XLA: the
# stock TensorFlow CPU kernels are built for AVX only and their `exp` alone
# costs about as much as one of the products (a one-off timing, docs/BENCHMARKS.md);
# XLA targets the host CPU and fuses the exponential with the row sum. The
# products stay on TensorFlow's oneDNN kernels.
def _capped_out(excluded):
    """The `[rows, cols]` bool matrix of the entries `positives_cap` leaves out
    of a block (neither positives nor negatives), from `excluded = (row_class,
    row_rank, row_sample, col_class, col_rank, col_sample, cap)`: a column of
    another sample of the anchor's class is that sample's
    `(rank(col) - [rank(row) < rank(col)])`-th other sample of the class in
    order, and is left out when that exceeds the cap. Compared inside the
    compiled pass: no `N x N` mask is stored."""
    row_class, row_rank, row_sample, col_class, col_rank, col_sample, cap = excluded
    order = col_rank[None, :] - tf.cast(row_rank[:, None] < col_rank[None, :], tf.int32)
    return tf.logical_and(
        tf.logical_and(tf.equal(row_class[:, None], col_class[None, :]),
                       tf.not_equal(row_sample[:, None], col_sample[None, :])),
        order > cap)


def _drop(logits, diag, excluded):
    """-inf on each anchor's own entry (`(i, i + diag)`; none with `diag`
    None: the anchors are not among the contrast rows) and on the entries of
    `_capped_out`. A comparison inside the compiled pass (a dynamic `diag`,
    as a replica's offset, is fine under XLA)."""
    drop = None
    if diag is not None:
        rows, cols = tf.shape(logits)[0], tf.shape(logits)[1]
        drop = tf.equal(tf.range(cols)[None, :], tf.range(rows)[:, None] + diag)
    if excluded is not None:
        out = _capped_out(excluded)
        drop = out if drop is None else tf.logical_or(drop, out)
    if drop is None:
        return logits
    return tf.where(drop, tf.constant(-float("inf")), logits)


@tf.function(jit_compile=True, reduce_retracing=True)
def _exp_row_sum(logits, diag=None, excluded=None):
    exp = tf.exp(_drop(logits, diag, excluded))
    return exp, tf.reduce_sum(exp, axis=1)


@tf.function(jit_compile=True, reduce_retracing=True)
def _exp_max_shifted_row_sum(logits, diag=None, excluded=None):
    logits = _drop(logits, diag, excluded)
    row_max = tf.reduce_max(logits, axis=1, keepdims=True)
    # A row with nothing to contrast (one row in all) is all -inf.
    row_max = tf.where(tf.math.is_finite(row_max), row_max, tf.zeros_like(row_max))
    exp = tf.exp(logits - row_max)
    return exp, tf.reduce_sum(exp, axis=1), row_max[:, 0]


@tf.function(jit_compile=True, reduce_retracing=True)
def _exp(logits, diag=None, excluded=None):
    return tf.exp(_drop(logits, diag, excluded))


def _as_diag(diag):
    return None if diag is None else tf.convert_to_tensor(diag, tf.int32)


def padded_rows(x, block_size):
    """`x` with zero rows appended up to a multiple of `block_size` (a Python
    int), so that every block is a slice of static size `block_size` at a
    dynamic offset: what XLA compiles (a shorter last block is not)."""
    n = tf.shape(x)[0]
    pad = (block_size - n % block_size) % block_size
    return tf.pad(x, tf.concat([[[0, pad]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)], 0))


def block_of(x, start, block_size):
    """Rows `start .. start + block_size` of a `padded_rows` tensor."""
    begin = tf.concat([[start], tf.zeros([tf.rank(x) - 1], tf.int32)], 0)
    size = tf.concat([[block_size], tf.fill([tf.rank(x) - 1], -1)], 0)
    return tf.slice(x, begin, size)


def _block_excluded(excluded, start, block_size):
    """`excluded` (its row vectors `padded_rows`) for the block at `start`."""
    if excluded is None:
        return None
    row_class, row_rank, row_sample, *cols = excluded
    return (block_of(row_class, start, block_size), block_of(row_rank, start, block_size),
            block_of(row_sample, start, block_size), *cols)


def _shifted_logits(anchor_block, contrast, scale, shift):
    """`anchor_block @ contrast.T * scale - shift[:, None]`, the shift folded
    into the product as one more feature column (no N x N subtraction)."""
    anchor_block = tf.concat([anchor_block * scale, -shift[:, None]], axis=1)
    contrast = tf.concat([contrast, tf.ones_like(contrast[:, :1])], axis=1)
    return tf.matmul(anchor_block, contrast, transpose_b=True)


def _lse_block(anchor_block, contrast, diag, temperature, unit_norm, excluded=None):
    """Row log-sum-exp of one block's logits (own entries excluded, and with
    `excluded` the entries `positives_cap` leaves out) and the shifted
    exponentials, with their row sums.

    The exponentials are shifted by the row maximum, or, for unit-norm
    embeddings whose logits lie in [-1/T, 1/T], by the bound 1/T folded into
    the product (no max and subtract passes over the logits), when exp(-2/T)
    cannot underflow."""
    scale = 1.0 / temperature
    if unit_norm and 2.0 * scale <= MAX_FIXED_SHIFT_SPAN:
        shift = tf.fill(tf.shape(anchor_block)[:1], tf.constant(scale))
        exp, total = _exp_row_sum(_shifted_logits(anchor_block, contrast, scale, shift),
                                  _as_diag(diag), excluded)
    else:
        exp, total, shift = _exp_max_shifted_row_sum(
            tf.matmul(anchor_block * scale, contrast, transpose_b=True), _as_diag(diag),
            excluded)
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


def _lse_dense(anchor, contrast, diag, temperature, unit_norm, grad_rows=None,
               excluded=None):
    @tf.custom_gradient
    def lse(a, c):
        value, exp, total = _lse_block(a, c, diag, temperature, unit_norm, excluded)

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


def uniform_upstream(upstream, counted=None):
    """Whether the per-row `upstream` gradient is one number `c` on the rows
    that `counted` (bool `[rows]`, None: all) marks and 0 on the others, and
    that `c` (0 with no counted row).

    A loss that is a mean of its rows (what Keras's reduction makes of it
    without `sample_weight`) gives such an upstream; the blockwise paths then
    use the gradient they computed for `c = 1` in the forward pass, while
    each block's logits were at hand."""
    if counted is None:
        counted = tf.ones_like(upstream, tf.bool)
    high = tf.reduce_max(tf.where(counted, upstream, tf.constant(-float("inf"))))
    any_counted = tf.reduce_any(counted)
    scale = tf.where(any_counted, high, 0.0)
    uniform = tf.reduce_all(tf.where(counted, tf.equal(upstream, scale),
                                     tf.equal(upstream, 0.0)))
    return uniform, scale


def _lse_blockwise(anchor, contrast, diag, temperature, unit_norm, block_size,
                   grad_rows=None, excluded=None, counted=None):
    """The blockwise log-sum-exp. Each block's forward pass also takes the two
    products of its gradient for an upstream of 1 on the `counted` rows (bool
    `[rows]`, None: all) while its exponentials are at hand: the backward pass
    then only scales them when the upstream is uniform (`uniform_upstream`),
    and recomputes each block's logits otherwise. A caller that takes no
    gradient inside a `tf.function` does not pay for these products: the
    unused loop outputs are pruned. The anchors are padded to whole blocks
    (zero rows, dropped from the results), so that XLA compiles the loop."""
    n_anchor = tf.shape(anchor)[0]
    n_blocks = (n_anchor + block_size - 1) // block_size
    weights = None if counted is None else padded_rows(tf.cast(counted, tf.float32), block_size)
    if excluded is not None:
        excluded = tuple(padded_rows(v, block_size) for v in excluded[:3]) + tuple(excluded[3:])

    def array():
        return tf.TensorArray(tf.float32, size=n_blocks, element_shape=None,
                              infer_shape=False)

    @tf.custom_gradient
    def lse(a, c):
        padded = padded_rows(a, block_size)

        def forward(b, values, d_anchor, d_contrast):
            start = b * block_size
            block = block_of(padded, start, block_size)
            value, exp, total = _lse_block(block, c, _shift(diag, start),
                                           temperature, unit_norm,
                                           _block_excluded(excluded, start, block_size))
            # The softmax's row weights on the [rows, d] operands, as in
            # _lse_dense (an empty row has exponentials 0 and total 1; a
            # padding row is zero and adds nothing to the contrast's).
            inverse = (1.0 / total)[:, None]
            weight = inverse if weights is None else (
                inverse * block_of(weights, start, block_size)[:, None])
            d_anchor = d_anchor.write(b, tf.matmul(exp, c) * inverse)
            d_contrast = tf.ensure_shape(
                d_contrast + _contrast_grad(exp, block * weight, c, grad_rows), c.shape)
            return b + 1, values.write(b, value), d_anchor, d_contrast

        _, values, d_anchor_1, d_contrast_1 = tf.while_loop(
            lambda b, *_: b < n_blocks, forward,
            (tf.constant(0), array(), array(), tf.zeros_like(c)), parallel_iterations=1)
        value = values.concat()[:n_anchor]
        d_anchor_1 = tf.reshape(d_anchor_1.concat()[:n_anchor], tf.shape(a))
        padded_value = padded_rows(value, block_size)

        def recomputed(upstream):
            padded_upstream = padded_rows(upstream, block_size)

            def backward(b, d_anchor, d_contrast):
                start = b * block_size
                block = block_of(padded, start, block_size)
                # The softmax from the stored log-sum-exp (empty rows have a
                # zero upstream gradient and a finite stand-in).
                row_lse = block_of(padded_value, start, block_size)
                row_lse = tf.where(tf.math.is_finite(row_lse), row_lse,
                                   tf.zeros_like(row_lse))
                softmax = _exp(_shifted_logits(block, c, 1.0 / temperature, row_lse),
                               _as_diag(_shift(diag, start)),
                               _block_excluded(excluded, start, block_size))
                row_weight = (block_of(padded_upstream, start, block_size)
                              / temperature)[:, None]
                d_anchor = d_anchor.write(b, tf.matmul(softmax, c) * row_weight)
                d_contrast = tf.ensure_shape(
                    d_contrast + _contrast_grad(softmax, block * row_weight, c, grad_rows),
                    c.shape)
                return b + 1, d_anchor, d_contrast

            _, d_anchor, d_contrast = tf.while_loop(
                lambda b, *_: b < n_blocks, backward,
                (tf.constant(0), array(), tf.zeros_like(c)), parallel_iterations=1)
            return tf.reshape(d_anchor.concat()[:n_anchor], tf.shape(a)), d_contrast

        def grad(upstream):
            uniform, scale = uniform_upstream(upstream, counted)
            return tf.cond(
                uniform,
                lambda: (d_anchor_1 * (upstream / temperature)[:, None],
                         d_contrast_1 * (scale / temperature)),
                lambda: recomputed(upstream))

        return value, grad

    return lse(anchor, contrast)


def lse(anchor, contrast, diag, temperature, unit_norm, block_size=None, grad_rows=None,
        excluded=None, counted=None):
    """Row log-sum-exp of `anchor @ contrast.T / temperature` (each anchor's
    own row `i + diag` excluded unless `diag` is None, and with `excluded` the
    entries of `_capped_out`), with its own gradient; dense, or blockwise with
    `block_size` rows (None: decided as in `supcon_out_per_anchor`). Only the
    first `grad_rows` contrast rows get a gradient (None: all). `counted`
    (bool `[rows]`, None: all): the rows whose upstream gradient is not known
    to be 0 (`_lse_blockwise`)."""
    if block_size is None:
        rows = (anchor.shape[0], contrast.shape[0])
        if None not in rows and rows[0] * rows[1] > AUTO_BLOCKWISE_ABOVE:
            block_size = AUTO_BLOCK_SIZE
    if block_size is None:
        return _lse_dense(anchor, contrast, diag, temperature, unit_norm, grad_rows, excluded)
    return _lse_blockwise(anchor, contrast, diag, temperature, unit_norm, block_size,
                          grad_rows, excluded, counted)


def supcon_out_per_anchor(anchor, contrast, seg_anchor, seg_contrast, diag,
                          temperature, block_size, unit_norm, grad_rows=None,
                          extra_lse=None, positives=None, excluded=None):
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
        positives: None, or `(positives_sum [Na, d], n_pos [Na])`: the sum of
            each anchor's positive rows and their number, in place of its
            class's (`positives_cap`).
        excluded: None, or the row and column vectors of `_capped_out`: the
            entries left out of the denominator.

    Returns:
        `[Na]` float32; 0 for an anchor with no positive.
    """
    n_contrast = tf.shape(contrast)[0]
    n_anchor = tf.shape(anchor)[0]
    if positives is not None:
        positives_sum, n_pos = positives
    else:
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
    row_lse = lse(anchor, contrast, diag, temperature, unit_norm, block_size, grad_rows,
                  excluded, counted=has_pos)
    if extra_lse is not None:
        row_lse = tf.math.reduce_logsumexp(tf.stack([row_lse, extra_lse], axis=1), axis=1)
    per_anchor = row_lse - positive_term
    return tf.where(has_pos, per_anchor, tf.zeros_like(per_anchor))


def capped_positives(sample_sums, sample_rows, classes, ranks, samples, views, cap):
    """Each anchor sample's kept positives under `positives_cap = cap`: the
    first `cap` other entries of its class in order (a class's first `cap + 1`
    entries, itself left out), and its own views.

    Args:
        sample_sums: `[M, d]`, each entry's rows summed (a batch sample's
            views; a queue entry's one row).
        sample_rows: `[M]` float32, each entry's number of rows.
        classes, ranks: `[M]` int32 dense class ids (`class_segments`) and
            1-based ranks within the class (`_general.class_ranks`).
        samples: `[b]` int32, the anchors' entries.
        views: the anchors' rows per sample.
        cap: Python int >= 0.

    Returns:
        `(positives_sum [b * views, d], n_pos [b * views])` per anchor row
        (sample-major), the anchor's own row to be subtracted by the caller:
        the sum includes it and the count does not.
    """
    width = cap + 1
    m = tf.shape(classes)[0]
    first = ranks <= width
    slots = classes * width + ranks - 1
    table = tf.scatter_nd(tf.boolean_mask(slots, first)[:, None],
                          tf.boolean_mask(tf.range(1, m + 1), first), [m * width])
    candidates = tf.gather(tf.reshape(table, [m, width]), tf.gather(classes, samples)) - 1
    valid = tf.logical_and(candidates >= 0, tf.not_equal(candidates, samples[:, None]))
    kept = tf.logical_and(valid, tf.cumsum(tf.cast(valid, tf.int32), axis=1) <= cap)
    weight = tf.cast(kept, sample_sums.dtype)
    safe = tf.maximum(candidates, 0)
    total = tf.einsum("bk,bkd->bd", weight, tf.gather(sample_sums, safe))
    total += tf.gather(sample_sums, samples)
    count = (tf.reduce_sum(weight * tf.gather(sample_rows, safe), axis=1)
             + tf.gather(sample_rows, samples) - 1.0)
    return tf.repeat(total, views, axis=0), tf.repeat(count, views)
