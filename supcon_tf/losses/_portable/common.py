"""Checks and building blocks of the `keras.ops` losses: embeddings as
`[batch, views, dim]`, labels and their sample-level relations, the queue,
the NaN marker and the masked log-sum-exp."""

import keras
from keras import ops

from supcon_tf.losses._checks import check_embeddings, check_queue_arguments, shape_text

IDS, HOT = "ids", "multi_hot"
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)


def shape_of(x):
    return tuple(x.shape)


shown = shape_text


def concrete(x):
    """`x` as a NumPy array, or None inside a traced function."""
    try:
        return ops.convert_to_numpy(x)
    except Exception:  # noqa: BLE001 - each backend raises its own tracer error
        return None


def require(valid, message):
    """A float32 scalar to add to a loss: 0 when `valid` (a bool tensor) holds.
    When the value is known and false, a `ValueError` with `message`;
    inside a traced function, NaN (nothing can raise there)."""
    value = concrete(valid)
    if value is not None:
        if not bool(value):
            raise ValueError(message)
        return ops.zeros((), "float32")
    return ops.stop_gradient(ops.where(valid, 0.0, float("nan")))


def as_views(y_pred):
    """Embeddings as float32 `[batch, views, dim]` (trailing dims flattened)."""
    z = ops.convert_to_tensor(y_pred)
    dtype = dtype_of(z)
    real = dtype in FLOAT_DTYPES or (dtype.startswith(("int", "uint")))
    check_embeddings(list(shape_of(z)), real, dtype)
    z = ops.cast(z, "float32")
    if len(z.shape) == 2:
        return z[:, None, :]
    if len(z.shape) > 3:
        z = ops.reshape(z, (z.shape[0], z.shape[1], -1))
    return z


def l2_normalize(x):
    """As `tf.math.l2_normalize` (epsilon 1e-12 on the squared norm)."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


def nonfinite_marker(*tensors):
    """0, or NaN when any tensor holds a NaN or infinity (no gradient)."""
    finite = [ops.all(ops.isfinite(t)) for t in tensors if t is not None]
    ok = finite[0]
    for f in finite[1:]:
        ok = ops.logical_and(ok, f)
    return ops.stop_gradient(ops.where(ok, 0.0, float("nan")))


def masked_logsumexp(x, mask):
    """Row log-sum-exp of `x` over `mask` and whether the row's set is
    non-empty (`[b, 1]` each, 0 for an empty row); the gradient is 0 off the
    mask and finite everywhere."""
    neg_inf = float("-inf")
    row_max = ops.stop_gradient(ops.max(ops.where(mask, x, neg_inf), axis=-1, keepdims=True))
    nonempty = ops.any(mask, axis=-1, keepdims=True)
    row_max = ops.where(ops.isfinite(row_max), row_max, 0.0)
    total = ops.sum(ops.exp(ops.where(mask, x - row_max, neg_inf)), axis=-1, keepdims=True)
    return row_max + ops.log(ops.where(nonempty, total, 1.0)), nonempty


def validate_labels(y_true, name="y_true"):
    """Labels as a tensor and their kind (`IDS` or `HOT`); raises for a bad
    dtype or rank as the TensorFlow losses do."""
    y = ops.convert_to_tensor(y_true)
    dtype = dtype_of(y)
    if dtype in ("bool", "string") or dtype.startswith("complex"):
        raise TypeError(
            f"`{name}` must hold integer class ids or 0/1 multi-hot values. "
            f"Received: {name}.dtype={dtype}")
    if len(y.shape) not in (1, 2):
        raise ValueError(
            f"`{name}` must be class ids [batch] or [batch, 1], or one-hot / "
            f"multi-hot [batch, classes]. Received: {name}.shape={shown(shape_of(y))}")
    return y, IDS if len(y.shape) == 1 or y.shape[1] == 1 else HOT


def check_count(y, count, name="y_true", against="the batch size of `y_pred`", unit="a batch"):
    if y.shape[0] != count:
        raise ValueError(
            f"The number of labels in `{name}` must equal {against}. Received: "
            f"{y.shape[0]} labels ({name}.shape={shown(shape_of(y))}) for {unit} of {count}")


def labels_valid(y, kind, name="y_true"):
    """Labels in a comparable form (int32 ids, float32 multi-hot) and the
    `require` term of their values' check."""
    if kind == IDS:
        y = ops.reshape(y, (-1,))
        if dtype_of(y) in FLOAT_DTYPES:
            term = require(ops.all(ops.equal(y, ops.round(y))), (
                f"`{name}` holds class ids ([batch] or [batch, 1]) that are not whole "
                "numbers; pass integer class ids"))
            return ops.cast(y, "int32"), term
        return ops.cast(y, "int32"), ops.zeros((), "float32")
    y = ops.cast(y, "float32")
    term = require(ops.all(ops.logical_or(ops.equal(y, 0.0), ops.equal(y, 1.0))), (
        f"`{name}` of shape [batch, classes] must be one-hot or multi-hot 0/1 values "
        "(samples sharing a class are positives); label-smoothed or pair labels such "
        "as [class, domain] are not. Pass class ids [batch], or an explicit `mask`"))
    return y, term


def same_class(a, b, kind):
    """`[len(a), len(b)]` bool: the labels share a class."""
    if kind == IDS:
        return ops.equal(a[:, None], b[None, :])
    return ops.matmul(a, ops.transpose(b)) > 0


def check_queue(queue, queue_labels, dim, labelled, mask=None):
    """The queue as float32 `[K, dim]` without gradient, its labels and
    their kind (the TensorFlow losses' `_check_queue`)."""
    def shape(x):
        return None if x is None else shape_of(ops.convert_to_tensor(x))

    check_queue_arguments(shape(queue), shape(queue_labels), shape(mask), dim, labelled)
    if queue is None:
        return None, None
    queue = ops.stop_gradient(ops.cast(ops.convert_to_tensor(queue), "float32"))
    if queue_labels is None:
        return queue, None
    queue_labels, kind = validate_labels(queue_labels, "queue_labels")
    check_count(queue_labels, queue.shape[0], "queue_labels",
                "the number of entries in `queue`", "a queue")
    return queue, (queue_labels, kind)
