"""Argument checks shared by the contrastive losses: options, embeddings,
the queue, and the marker that turns non-finite inputs into a NaN loss."""

import numbers

import tensorflow as tf

from supcon_tf._checks import check_positive
from supcon_tf.losses._masks import checked_labels, label_kind

CONTRAST_MODES = ("all", "one")
VARIANTS = ("out", "in")
DENOMINATORS = ("all", "one_positive", "only_negatives")


# The losses' name for the shared check.
_positive_number = check_positive


def _check_options(temperature, base_temperature, contrast_mode, variant,
                   denominator, positives_cap, block_size=None):
    """Validates the loss options; returns the resolved base temperature."""
    temperature = _positive_number(temperature, "temperature")
    if base_temperature is None:
        base_temperature = temperature
    base_temperature = _positive_number(base_temperature, "base_temperature",
                                        " or None")
    if contrast_mode not in CONTRAST_MODES:
        raise ValueError(
            f"`contrast_mode` must be one of {CONTRAST_MODES}. "
            f"Received: contrast_mode={contrast_mode!r}")
    if variant not in VARIANTS:
        raise ValueError(
            f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
    if denominator not in DENOMINATORS:
        raise ValueError(
            f"`denominator` must be one of {DENOMINATORS}. "
            f"Received: denominator={denominator!r}")
    if positives_cap is not None:
        if isinstance(positives_cap, bool) or not isinstance(positives_cap, numbers.Integral):
            raise TypeError(
                "`positives_cap` must be None or an integer >= 0. "
                f"Received: positives_cap={positives_cap!r}")
        if positives_cap < 0:
            raise ValueError(
                "`positives_cap` must be None or an integer >= 0. "
                f"Received: positives_cap={positives_cap}")
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
            raise TypeError(
                "`block_size` must be None or an integer >= 1. "
                f"Received: block_size={block_size!r}")
        if block_size < 1:
            raise ValueError(
                "`block_size` must be None or an integer >= 1. "
                f"Received: block_size={block_size}")
    return temperature, base_temperature


def check_embeddings(dims, real, dtype):
    """Raises for embeddings of unknown rank (`dims` None), rank < 2, a
    non-real `dtype` (`real` False) or an empty dimension; shared by the
    TensorFlow and the `keras.ops` losses."""
    if dims is None:
        raise ValueError(
            "`y_pred` must have a known rank >= 2 ([batch, dim] or "
            "[batch, views, dim, ...]). Received a tensor of unknown rank.")
    shape = shape_text(dims)
    if len(dims) < 2:
        raise ValueError(
            "`y_pred` must have rank >= 2 ([batch, dim] or [batch, views, dim, "
            f"...]). Received: y_pred.shape={shape}")
    if not real:
        raise TypeError(f"`y_pred` must be a real tensor. Received: y_pred.dtype={dtype}")
    if dims[0] == 0 or 0 in dims[1:]:
        raise ValueError(
            "`y_pred` must hold at least one sample, one view and one feature. "
            f"Received: y_pred.shape={shape}")


def _as_views(y_pred):
    """Returns embeddings as float32 `[batch, views, dim]`."""
    y_pred = tf.convert_to_tensor(y_pred)
    rank = y_pred.shape.rank
    check_embeddings(None if rank is None else y_pred.shape.as_list(),
                     (y_pred.dtype.is_floating or y_pred.dtype.is_integer)
                     and y_pred.dtype != tf.bool, y_pred.dtype)
    # All arithmetic in float32, also for float16 / bfloat16 embeddings.
    y_pred = tf.cast(y_pred, tf.float32)
    if rank == 2:
        return y_pred[:, None, :]
    if rank > 3:
        shape = tf.shape(y_pred)
        flat = y_pred.shape[2:].num_elements()
        y_pred = tf.reshape(y_pred, [shape[0], shape[1], flat if flat else -1])
    return y_pred


def shape_text(shape):
    """A shape (a tuple, list or `TensorShape`) as TensorFlow prints it:
    `(4, 2)`, `(6,)`, `(None, 3)`."""
    if isinstance(shape, tf.TensorShape) and shape.rank is None:
        return "<unknown>"
    dims = list(shape)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def check_queue_arguments(queue_shape, queue_labels_shape, mask_shape, dim, labelled):
    """Raises for a queue's arguments that cannot go together, from their
    shapes (None: the argument was not given); shared by the TensorFlow and
    the `keras.ops` losses."""
    if queue_shape is None:
        if queue_labels_shape is not None:
            raise ValueError("`queue_labels` needs a `queue`. Received: queue=None and "
                             f"queue_labels.shape={shape_text(queue_labels_shape)}")
        return
    if mask_shape is not None:
        raise ValueError("A `queue` cannot be combined with an explicit `mask` (the mask "
                         "says nothing of the queue's entries); pass labels instead. "
                         f"Received: mask.shape={shape_text(mask_shape)}")
    rank = queue_shape.rank if isinstance(queue_shape, tf.TensorShape) else len(queue_shape)
    if rank != 2 or (dim is not None and queue_shape[1] is not None
                     and queue_shape[1] != dim):
        raise ValueError(
            f"`queue` must be [entries, dim] with the embeddings' dim ({dim}). "
            f"Received: queue.shape={shape_text(queue_shape)}")
    if labelled and queue_labels_shape is None:
        raise ValueError("With labels, the `queue` needs `queue_labels` (its entries' "
                         "classes, [entries]). Received: queue_labels=None")
    if not labelled and queue_labels_shape is not None:
        raise ValueError("`queue_labels` were given without labels for the batch "
                         "(y_true=None): with no labels every queue entry is a "
                         "negative. Received: queue_labels.shape="
                         f"{shape_text(queue_labels_shape)}")


def _check_queue(queue, queue_labels, features, y_true, mask, labelled=None):
    """The queue as float32 `[K, dim]` (no gradient) and its labels, checked
    against the embeddings and the labels of the batch."""
    def shape(x):
        return None if x is None else tf.convert_to_tensor(x).shape

    labelled = y_true is not None if labelled is None else labelled
    check_queue_arguments(shape(queue), shape(queue_labels), shape(mask),
                          features.shape[-1], labelled)
    if queue is None:
        return None, None
    queue = tf.stop_gradient(tf.cast(tf.convert_to_tensor(queue), tf.float32))
    if queue_labels is not None:
        entries = queue.shape[0] if queue.shape[0] is not None else tf.shape(queue)[0]
        queue_labels, check = checked_labels(queue_labels, entries, "queue_labels",
                                             against="the number of entries in `queue`",
                                             unit="a queue")
        if label_kind(queue_labels) != label_kind(tf.convert_to_tensor(y_true)):
            raise ValueError(
                "`queue_labels` must be of the same kind as `y_true` (class ids, or "
                f"multi-hot with the same classes). Received: queue_labels.shape="
                f"{queue_labels.shape}, y_true.shape={tf.convert_to_tensor(y_true).shape}")
        with tf.control_dependencies([check]):
            queue = tf.identity(queue)
    return queue, queue_labels


def nonfinite_marker(*tensors):
    """A float32 scalar: 0 when every tensor is finite, NaN otherwise. Added to
    a loss, it makes a NaN or infinite embedding give a NaN loss on every path
    (Keras's NaN handling, e.g. `TerminateOnNaN`, then sees it)."""
    finite = tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None])
    return tf.stop_gradient(tf.where(tf.reduce_all(finite), 0.0, float("nan")))


