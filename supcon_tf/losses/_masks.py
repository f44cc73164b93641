"""Sample-level masks and the masked log-sum-exp of the contrastive losses."""

import tensorflow as tf


def positive_mask(y_true, mask, batch):
    """The `[batch, batch]` float32 sample-level positive mask of `supcon_loss`:
    from class ids, one-hot / multi-hot labels, None (identity) or an explicit
    `mask`; raises `ValueError` for bad shapes (see `supcon_loss`)."""
    return _positive_mask(y_true, y_true, mask, batch, batch, 0)


def _self_mask(n_anchor, n_contrast, offset):
    """`[n_anchor, n_contrast]` bool: anchor sample i is contrast sample offset + i."""
    return tf.equal(tf.range(n_anchor)[:, None] + offset, tf.range(n_contrast)[None, :])


def _positive_mask(y_anchor, y_contrast, mask, n_anchor, n_contrast, offset):
    """`[n_anchor, n_contrast]` float32 positive mask between the anchors'
    samples (labels `y_anchor`) and the contrast samples (labels `y_contrast`),
    where anchor sample i is contrast sample `offset + i`. On one device both
    are the batch and `offset` is 0; inside a replica context the contrast
    samples are the global batch."""
    if y_anchor is not None and mask is not None:
        raise ValueError(
            "Pass either `y_true` (labels) or `mask`, not both. Received: "
            f"y_true with shape {tf.convert_to_tensor(y_anchor).shape} and mask "
            f"with shape {tf.convert_to_tensor(mask).shape}")
    static_batch = n_anchor if isinstance(n_anchor, int) else None
    static_contrast = n_contrast if isinstance(n_contrast, int) else None
    if mask is not None:
        mask = tf.convert_to_tensor(mask)
        expected = f"[{static_batch or 'batch'}, {static_contrast or 'batch'}]"
        if mask.shape.rank != 2 or any(
                d is not None and e is not None and d != e
                for d, e in zip(mask.shape, (static_batch, static_contrast))):
            raise ValueError(
                f"`mask` must be a {expected} matrix (inside a replica context: "
                f"[local batch, global batch]). Received: mask.shape={mask.shape}")
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.shape(mask), tf.stack([n_anchor, n_contrast]),
                message="`mask` must be a [batch, batch] matrix (inside a replica "
                        "context: [local batch, global batch])")]):
            return tf.cast(tf.not_equal(mask, 0), tf.float32)
    own = _self_mask(n_anchor, n_contrast, offset)
    if y_anchor is None:
        # Self-supervised (SimCLR / NT-Xent): only the sample itself.
        return tf.cast(own, tf.float32)
    y_anchor, check = checked_labels(y_anchor, n_anchor)
    rank = y_anchor.shape.rank
    with tf.control_dependencies([check]):
        y_contrast = tf.convert_to_tensor(y_contrast)
        if is_class_ids(y_anchor):
            same = tf.equal(tf.reshape(y_anchor, [-1])[:, None],
                            tf.reshape(y_contrast, [-1])[None, :])
        else:
            hot_a = tf.cast(tf.not_equal(y_anchor, 0), tf.float32)
            hot_c = tf.cast(tf.not_equal(y_contrast, 0), tf.float32)
            same = tf.matmul(hot_a, hot_c, transpose_b=True) > 0
            # A sample's other views are positives even if it has no label.
            same = tf.logical_or(same, own)
        return tf.cast(same, tf.float32)


def checked_labels(y_true, batch):
    """`y_true` as a tensor, and an assertion (to run before it is used) that
    it holds `batch` labels. Raises `ValueError` for a bad rank, or a number of
    labels different from a static `batch`."""
    y_true = tf.convert_to_tensor(y_true)
    rank = y_true.shape.rank
    if rank not in (1, 2):
        raise ValueError(
            "`y_true` must be class ids [batch] or [batch, 1], or one-hot / "
            f"multi-hot [batch, classes]. Received: y_true.shape={y_true.shape}")
    n_labels = y_true.shape[0]
    if isinstance(batch, int) and n_labels is not None and n_labels != batch:
        raise ValueError(
            "The number of labels must equal the batch size of `y_pred`. "
            f"Received: {n_labels} labels (y_true.shape={y_true.shape}) for a "
            f"batch of {batch}")
    check = tf.debugging.assert_equal(
        tf.shape(y_true)[0], batch,
        message="The number of labels must equal the batch size of `y_pred`")
    return y_true, check


def is_class_ids(y_true):
    """True for labels `[batch]` or `[batch, 1]` (class ids), False for
    one-hot / multi-hot `[batch, classes]` (or an unknown second dimension)."""
    return y_true.shape.rank == 1 or y_true.shape[1] == 1


def _masked_logsumexp(x, mask):
    """Row-wise log-sum-exp of `x` over `mask` (bool); rows with an empty mask
    give 0 and `False` in the second output. Stable: each row is shifted by its
    own maximum over the mask, so nothing in the set underflows."""
    neg_inf = tf.constant(-float("inf"), x.dtype)
    row_max = tf.stop_gradient(
        tf.reduce_max(tf.where(mask, x, neg_inf), axis=-1, keepdims=True))
    nonempty = tf.math.is_finite(row_max)
    row_max = tf.where(nonempty, row_max, tf.zeros_like(row_max))
    total = tf.reduce_sum(
        tf.exp(tf.where(mask, x - row_max, neg_inf)), axis=-1, keepdims=True)
    safe = tf.where(nonempty, total, tf.ones_like(total))
    return row_max + tf.math.log(safe), nonempty
