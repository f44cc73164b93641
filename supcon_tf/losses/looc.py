"""Leave-one-out Contrastive Learning's loss: one InfoNCE per embedding
space, the all-invariant space and one space per augmentation family.

Reference: Xiao, Wang, Efros, Darrell, "What Should Not Be Contrastive in
Contrastive Learning", ICLR 2021 (https://arxiv.org/abs/2008.05659).
"""

import keras
import tensorflow as tf

from supcon_tf import _backend, _cross_replica
from supcon_tf._checks import check_positive
from supcon_tf.losses._portable import others as _portable
from supcon_tf.losses.base import ContrastiveLoss


def looc_loss(y_pred, temperature=0.2, normalize=True):
    """LooC's objective per sample: the sum over its S = n + 1 embedding spaces.

    Each sample has a query view q and S key views k_0 .. k_n: k_0 augmented
    independently of q in every family, k_i sharing q's parameters of family
    i and independent in the others. In space 0 (invariant to every family)
    all S keys are q's positives; in space i >= 1 only k_i is, and q's other
    keys, which differ from q in family i, are negatives with the other
    samples' keys, so space i keeps what family i changes. Each space's term
    is `-1/|P| sum_{p in P} log softmax(q . k / T)_p` over every key of the
    global batch (all S keys of every sample), P its positives.

    Under `tf.distribute` the keys are gathered over replicas (with
    gradients); each replica returns its own samples' values.

    Args:
        y_pred: `[batch, S + 1, S, dim]`: view v's embedding in space s, view 0
            the query, views 1 .. S the keys k_0 .. k_n; S >= 2.
        temperature: Softmax temperature > 0. Defaults to 0.2.
        normalize: L2-normalise the embeddings first. Defaults to True.

    Returns:
        float32 `[batch]`.

    Example:

    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(4, 3, 2, 8)).astype("float32")
    >>> looc_loss(z).shape
    TensorShape([4])
    """
    temperature = check_positive(temperature, "temperature")
    if not _backend.on_tensorflow(y_pred):
        return _portable.looc_loss(y_pred, temperature, normalize)
    z = tf.convert_to_tensor(y_pred)
    if not z.dtype.is_floating:
        raise TypeError(f"`y_pred` must be a float tensor. Received: y_pred.dtype={z.dtype}")
    z = tf.cast(z, tf.float32)
    if (z.shape.rank != 4 or z.shape[2] is None or z.shape[2] < 2
            or z.shape[1] != z.shape[2] + 1):
        raise ValueError("LooC's loss needs `y_pred` of shape [batch, S + 1, S, dim]: a query "
                         "and S keys, each embedded in S >= 2 spaces. "
                         f"Received: y_pred.shape={z.shape}")
    spaces = z.shape[2]
    if normalize:
        z = tf.math.l2_normalize(z, axis=-1)
    keys, offset = _cross_replica.global_batch(z[:, 1:])      # [global, S keys, S, dim]
    own = offset + tf.range(tf.shape(z)[0])                   # [batch]
    total = tf.zeros(tf.shape(z)[:1])
    for s in range(spaces):
        flat = tf.reshape(keys[:, :, s], [-1, tf.shape(z)[-1]])   # key j of sample t at t*S + j
        log_p = tf.nn.log_softmax(tf.matmul(z[:, 0, s], flat, transpose_b=True) / temperature)
        log_p = tf.reshape(log_p, [tf.shape(z)[0], -1, spaces])   # [batch, global, S keys]
        mine = tf.gather(log_p, own, axis=1, batch_dims=1)       # [batch, S keys]
        total -= tf.reduce_mean(mine, axis=1) if s == 0 else mine[:, s]
    return total


@keras.saving.register_keras_serializable(package="supcon_tf")
class LooCLoss(ContrastiveLoss):
    """LooC's loss (`looc_loss`): for each sample, an InfoNCE in the
    all-invariant space (every key positive) plus one per augmentation
    family's space (only the key sharing that family's parameters with the
    query positive), the global batch's keys the contrast set. Labels are not
    read (`y_true` may be None).

    Args:
        temperature: Softmax temperature > 0. Defaults to 0.2.
        normalize: L2-normalise the embeddings first. Defaults to True.
        reduction, name, dtype: As `keras.losses.Loss`.
    """

    def __init__(self, temperature=0.2, normalize=True, reduction="sum_over_batch_size",
                 name="looc_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_positive(temperature, "temperature")
        self.normalize = bool(normalize)

    def call(self, y_true, y_pred):
        return looc_loss(y_pred, self.temperature, self.normalize)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "normalize": self.normalize}
