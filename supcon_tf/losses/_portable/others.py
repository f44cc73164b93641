"""The rest of the family in `keras.ops`: Barlow Twins, VICReg, SwAV (and
its Sinkhorn codes), CMC, LooC, NPID, PCL's ProtoNCE and SimCLR v2's
distillation, each as the public function of the same name defines it."""

import keras
from keras import ops

from supcon_tf.losses._portable.common import (as_views, dtype_of, l2_normalize,
                                               shape_of, shown)


def two_views(y_pred, name):
    """`(a, b)`: the two float32 views `[batch, dim]` of `[batch, 2, dim]`."""
    z = ops.convert_to_tensor(y_pred)
    if len(z.shape) != 3 or z.shape[1] != 2:
        raise ValueError(f"{name} needs `y_pred` of shape [batch, 2, dim]: two views of each "
                         f"sample. Received: y_pred.shape={shown(shape_of(z))}")
    if z.shape[2] < 1:
        raise ValueError(f"{name} needs embeddings of at least one dimension. "
                         f"Received: y_pred.shape={shown(shape_of(z))}")
    if z.shape[0] < 2:
        raise ValueError(f"{name} standardises over the batch and needs at least 2 samples. "
                         f"Received: y_pred.shape={shown(shape_of(z))}")
    z = ops.cast(z, "float32")
    return z[:, 0], z[:, 1]


def _off_diagonal_sum_of_squares(c):
    return ops.sum(ops.square(c)) - ops.sum(ops.square(ops.diagonal(c)))


def barlow_twins_loss(a, b, lambda_):
    n = a.shape[0]

    def standardise(x):
        mean, variance = ops.moments(x, axes=[0])
        return (x - mean) / ops.sqrt(variance + 1e-5)

    c = ops.matmul(ops.transpose(standardise(a)), standardise(b)) / n
    on_diagonal = ops.sum(ops.square(ops.diagonal(c) - 1.0))
    return on_diagonal + lambda_ * _off_diagonal_sum_of_squares(c)


def vicreg_terms(a, b):
    n, dim = a.shape
    invariance = ops.mean(ops.square(a - b))
    variance = covariance = 0.0
    for x in (a, b):
        x = x - ops.mean(x, axis=0)
        std = ops.sqrt(ops.sum(ops.square(x), axis=0) / (n - 1.0) + 1e-4)
        variance += ops.mean(ops.relu(1.0 - std)) / 2.0
        cov = ops.matmul(ops.transpose(x), x) / (n - 1.0)
        covariance += _off_diagonal_sum_of_squares(cov) / dim
    return invariance, variance, covariance


def swav_loss(codes, scores, temperature):
    codes = ops.stop_gradient(ops.cast(codes, "float32"))
    scores = ops.cast(scores, "float32")
    if len(codes.shape) != 3 or len(scores.shape) != 3:
        raise ValueError("`codes` must be [batch, A, K] and `scores` [batch, V, K]. Received: "
                         f"codes.shape={shown(shape_of(codes))}, scores.shape={shown(shape_of(scores))}")
    coded, views = codes.shape[1], scores.shape[1]
    if views < 2 or not 1 <= coded <= views:
        raise ValueError(
            "SwAV predicts each coded view from the other views: it needs `scores` of V >= 2 "
            "views and 1 <= A <= V coded views. Received: "
            f"codes.shape={shown(shape_of(codes))}, scores.shape={shown(shape_of(scores))}")
    if codes.shape[2] != scores.shape[2]:
        raise ValueError("`codes` and `scores` must have the same number of prototypes K. "
                         f"Received: codes.shape={shown(shape_of(codes))}, "
                         f"scores.shape={shown(shape_of(scores))}")
    log_p = ops.log_softmax(scores / temperature, axis=-1)
    cross = -ops.einsum("bak,bvk->bav", codes, log_p)
    others = 1.0 - ops.one_hot(ops.arange(coded), views)
    return ops.mean(ops.sum(cross * others[None], axis=2) / float(views - 1), axis=1)


def sinkhorn(scores, iterations, epsilon):
    """`supcon_tf.clustering.sinkhorn` on one device (options checked by the
    caller): the rows given are the whole batch."""
    scores = ops.stop_gradient(ops.cast(scores, "float32"))
    if len(scores.shape) != 2:
        raise ValueError(f"`scores` must be [batch, K]. Received: scores.shape={shown(shape_of(scores))}")
    log_q = ops.transpose(scores / epsilon)                      # [K, B]
    k, batch = log_q.shape
    log_k, log_batch = ops.log(float(k)), ops.log(float(batch))
    log_q = log_q - ops.logsumexp(log_q)
    for _ in range(int(iterations)):
        log_q = log_q - (ops.logsumexp(log_q, axis=1)[:, None] + log_k)
        log_q = log_q - (ops.logsumexp(log_q, axis=0, keepdims=True) + log_batch)
    return ops.transpose(ops.exp(log_q + log_batch))


def _own_log_softmax(logits, columns):
    """Row `i`'s log-softmax at column `columns[i]`."""
    log_p = ops.log_softmax(logits, axis=-1)
    return ops.take_along_axis(log_p, columns[:, None], axis=1)[:, 0]


def cmc_loss(y_pred, temperature, pairs, normalize):
    z = as_views(y_pred)
    if normalize:
        z = l2_normalize(z)
    own = ops.arange(z.shape[0])
    total = ops.zeros((z.shape[0],), "float32")
    for i, j in pairs:
        for a, b in ((i, j), (j, i)):
            logits = ops.matmul(z[:, a], ops.transpose(z[:, b])) / temperature
            total = total - _own_log_softmax(logits, own)
    return total


def looc_loss(y_pred, temperature, normalize):
    z = ops.convert_to_tensor(y_pred)
    if dtype_of(z) not in ("float16", "bfloat16", "float32", "float64"):
        raise TypeError(f"`y_pred` must be a float tensor. Received: y_pred.dtype={dtype_of(z)}")
    z = ops.cast(z, "float32")
    if len(z.shape) != 4 or z.shape[2] < 2 or z.shape[1] != z.shape[2] + 1:
        raise ValueError(
            "LooC's loss needs `y_pred` of shape [batch, S + 1, S, dim]: a query and S keys, "
            f"each embedded in S >= 2 spaces. Received: y_pred.shape={shown(shape_of(z))}")
    batch, _, spaces, dim = z.shape
    if normalize:
        z = l2_normalize(z)
    keys = z[:, 1:]
    total = ops.zeros((batch,), "float32")
    for s in range(spaces):
        flat = ops.reshape(keys[:, :, s], (-1, dim))            # row j * S + i: key i of j
        log_p = ops.log_softmax(ops.matmul(z[:, 0, s], ops.transpose(flat)) / temperature)
        log_p = ops.reshape(log_p, (batch, batch, spaces))
        mine = ops.transpose(ops.diagonal(log_p, axis1=0, axis2=1))   # [B, S]: own keys
        total = total - (ops.mean(mine, axis=1) if s == 0 else mine[:, s])
    return total


def npid_loss(y_true, y_pred, temperature, kind, noise_ratio, z):
    scores = ops.cast(y_pred, "float32") / temperature
    if y_true is not None:
        return -_own_log_softmax(scores, ops.reshape(ops.cast(y_true, "int32"), (-1,)))
    if kind == "softmax":
        return -ops.log_softmax(scores, axis=-1)[:, 0]
    log_p = scores - ops.log(ops.cast(z, "float32"))
    log_noise = ops.log(ops.cast(noise_ratio, "float32"))
    log_h_own = -ops.softplus(log_noise - log_p[:, 0])
    log_1m_h_negatives = -ops.softplus(log_p[:, 1:] - log_noise)
    return -(log_h_own + ops.sum(log_1m_h_negatives, axis=1))


def proto_nce(queries, centroids, phi, targets, num_negatives, seed):
    """PCL's ProtoNCE on one device; `seed` an integer or a
    `keras.random.SeedGenerator` for the draw of negative prototypes."""
    queries = ops.cast(queries, "float32")
    centroids = ops.cast(centroids, "float32")
    phi = ops.cast(phi, "float32")
    targets = ops.reshape(ops.cast(targets, "int32"), (-1,))
    k, batch = centroids.shape[0], targets.shape[0]
    used = ops.any(ops.equal(targets[:, None], ops.arange(k)[None, :]), axis=0)
    noise = keras.random.uniform((k,), seed=seed)
    order = ops.cast(ops.argsort(ops.where(used, 2.0, noise)), "int32")
    r = ops.minimum(num_negatives, k - ops.sum(ops.cast(used, "int32")))
    candidates = ops.concatenate([targets, order], 0)
    logits = ops.matmul(queries, ops.transpose(ops.take(centroids, candidates, axis=0)))
    logits = logits / ops.take(phi, candidates)[None]
    keep = ops.arange(candidates.shape[0]) < batch + r
    logits = ops.where(keep[None], logits, -1e9)
    return -_own_log_softmax(logits, ops.arange(batch))


def distillation_loss(y_true, y_pred, temperature):
    teacher = ops.stop_gradient(ops.cast(y_true, "float32"))
    student = ops.cast(y_pred, "float32")
    if len(teacher.shape) != 2 or len(student.shape) != 2:
        raise ValueError("Distillation needs logits [batch, classes] from both models. "
                         f"Received: teacher {shown(shape_of(teacher))}, "
                         f"student {shown(shape_of(student))}")
    return -ops.sum(ops.softmax(teacher / temperature, axis=-1)
                    * ops.log_softmax(student / temperature, axis=-1), axis=-1)
