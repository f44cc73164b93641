"""Labels, sample-level masks and the masked log-sum-exp of the contrastive
losses.

Labels are read in one of two kinds, decided from the static shape:

- class ids: `[batch]` or `[batch, 1]`, integers (or floats holding integers);
  equal ids are positives;
- multi-hot: `[batch, classes]` of 0/1 values (one-hot included); samples
  that share any class are positives.

When the trace does not know the second dimension (`[None, None]` labels in a
`tf.function` signature) the kind is decided when the graph runs, from the
actual shape, so a traced call gives the same result as an eager one. Any
other values (label smoothing, `[class, domain]` pairs, fractional ids) are
an error, eagerly and in graphs, never a silent reinterpretation.
"""

import tensorflow as tf

IDS, HOT = "ids", "multi_hot"


def positive_mask(y_true, mask, batch):
    """The `[batch, batch]` float32 sample-level positive mask of `supcon_loss`:
    from class ids, one-hot / multi-hot labels, None (identity) or an explicit
    `mask`; raises `ValueError` for bad shapes (see `supcon_loss`)."""
    return pair_positive_mask(y_true, y_true, mask, batch, batch, 0)


def _self_mask(n_anchor, n_contrast, offset):
    """`[n_anchor, n_contrast]` bool: anchor sample i is contrast sample offset + i."""
    return tf.equal(tf.range(n_anchor)[:, None] + offset, tf.range(n_contrast)[None, :])


def label_kind(y_true):
    """`IDS`, `HOT`, or None when only the graph's run can tell (`[batch, None]`)."""
    rank = y_true.shape.rank
    if rank == 1:
        return IDS
    if y_true.shape[1] is None:
        return None
    return IDS if y_true.shape[1] == 1 else HOT


def _check_dtype(y_true, name):
    if y_true.dtype == tf.string or y_true.dtype == tf.bool or y_true.dtype.is_complex:
        raise TypeError(
            f"`{name}` must hold integer class ids or 0/1 multi-hot values. "
            f"Received: {name}.dtype={y_true.dtype.name}")


def _checked_ids(y, name):
    """Flat int64 class ids, with a check that float ids are whole numbers."""
    y = tf.reshape(y, [-1])
    if y.dtype.is_floating:
        whole = tf.debugging.assert_equal(
            y, tf.round(y), message=(
                f"`{name}` holds class ids ([batch] or [batch, 1]) that are not whole "
                "numbers; pass integer class ids"))
        with tf.control_dependencies([whole]):
            return tf.cast(y, tf.int64)
    return tf.cast(y, tf.int64)


def _checked_hot(y, name):
    """float32 0/1 multi-hot labels, with a check that nothing else is in them."""
    y = tf.cast(y, tf.float32)
    binary = tf.debugging.assert_equal(
        tf.reduce_all(tf.logical_or(tf.equal(y, 0.0), tf.equal(y, 1.0))), True,
        message=(f"`{name}` of shape [batch, classes] must be one-hot or multi-hot "
                 "0/1 values (samples sharing a class are positives); label-smoothed "
                 "or pair labels such as [class, domain] are not. Pass class ids "
                 "[batch], or an explicit `mask`"))
    with tf.control_dependencies([binary]):
        return tf.identity(y)


def same_class(y_anchor, y_contrast, kind, name="y_true"):
    """`[n_anchor, n_contrast]` bool: the anchor and contrast labels share a
    class. `kind` is `label_kind(y_anchor)`; None decides at run time."""
    def by_ids():
        return tf.equal(_checked_ids(y_anchor, name)[:, None],
                        _checked_ids(y_contrast, name)[None, :])

    def by_hot():
        hot_a, hot_c = _checked_hot(y_anchor, name), _checked_hot(y_contrast, name)
        return tf.matmul(hot_a, hot_c, transpose_b=True) > 0

    if kind == IDS:
        return by_ids()
    if kind == HOT:
        return by_hot()
    return tf.cond(tf.equal(tf.shape(y_anchor)[1], 1), by_ids, by_hot)


def pair_positive_mask(y_anchor, y_contrast, mask, n_anchor, n_contrast, offset,
                       dtype=tf.float32):
    """`[n_anchor, n_contrast]` positive mask between the anchors' samples
    (labels `y_anchor`) and the contrast samples (labels `y_contrast`), where
    anchor sample i is contrast sample `offset + i`. On one device both are
    the batch and `offset` is 0; inside a replica context the contrast samples
    are the global batch. float32 0/1 values, or bool with `dtype=tf.bool`
    (for a caller's `mask`: no float copy of it)."""
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
            return tf.cast(tf.not_equal(mask, 0), dtype)
    own = _self_mask(n_anchor, n_contrast, offset)
    if y_anchor is None:
        # Self-supervised (SimCLR / NT-Xent): only the sample itself.
        return tf.cast(own, tf.float32)
    y_anchor, check = checked_labels(y_anchor, n_anchor)
    with tf.control_dependencies([check]):
        same = same_class(y_anchor, tf.convert_to_tensor(y_contrast), label_kind(y_anchor))
        # A sample's other views are positives even if it has no label.
        return tf.cast(tf.logical_or(same, own), tf.float32)


def validate_labels(y_true, name="y_true"):
    """Raises for labels of a bad dtype or rank; returns them as a tensor."""
    y_true = tf.convert_to_tensor(y_true)
    _check_dtype(y_true, name)
    if y_true.shape.rank not in (1, 2):
        raise ValueError(
            f"`{name}` must be class ids [batch] or [batch, 1], or one-hot / "
            f"multi-hot [batch, classes]. Received: {name}.shape={y_true.shape}")
    return y_true


def checked_labels(y_true, batch, name="y_true", against="the batch size of `y_pred`",
                   unit="a batch"):
    """`y_true` as a tensor, and an assertion (to run before it is used) that
    it holds `batch` labels. Raises `ValueError` for a bad rank, or a number of
    labels different from a static `batch` (`against` and `unit` say what
    that count is); `TypeError` for string, bool or complex labels."""
    y_true = validate_labels(y_true, name)
    n_labels = y_true.shape[0]
    if isinstance(batch, int) and n_labels is not None and n_labels != batch:
        raise ValueError(
            f"The number of labels in `{name}` must equal {against}. "
            f"Received: {n_labels} labels ({name}.shape={y_true.shape}) for {unit} of {batch}")
    check = tf.debugging.assert_equal(
        tf.shape(y_true)[0], batch,
        message=f"The number of labels in `{name}` must equal {against}")
    return y_true, check


def is_class_ids(y_true):
    """True for labels known to be class ids (`[batch]` or `[batch, 1]`),
    False for one-hot / multi-hot `[batch, classes]` or an unknown second
    dimension."""
    return label_kind(y_true) == IDS


def class_ids(y_true, name="y_true"):
    """Class-id labels as flat int64, with the whole-number check."""
    return _checked_ids(y_true, name)


def _masked_logsumexp(x, mask):
    """Row-wise log-sum-exp of `x` over `mask` (bool); rows with an empty mask
    give 0 and `False` in the second output. Stable: each row is shifted by its
    own maximum over the mask, so nothing in the set underflows. A NaN in a
    row's set gives NaN (it is not mistaken for an empty row)."""
    neg_inf = tf.constant(-float("inf"), x.dtype)
    row_max = tf.stop_gradient(
        tf.reduce_max(tf.where(mask, x, neg_inf), axis=-1, keepdims=True))
    nonempty = tf.reduce_any(mask, axis=-1, keepdims=True)
    row_max = tf.where(tf.math.is_finite(row_max), row_max, tf.zeros_like(row_max))
    total = tf.reduce_sum(
        tf.exp(tf.where(mask, x - row_max, neg_inf)), axis=-1, keepdims=True)
    safe = tf.where(nonempty, total, tf.ones_like(total))
    return row_max + tf.math.log(safe), nonempty

# The name other modules used.
_positive_mask = pair_positive_mask
