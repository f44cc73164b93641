"""Losses from statistics of the batch: Barlow Twins and VICReg.

Neither has per-sample terms: both look at the whole (global) batch, so
each returns one value per batch. Under `tf.distribute` the embeddings are
all-gathered first, so every statistic is the global batch's; each replica
computes the same global value and `keras.losses.Loss` scales it by
`1 / replicas`, so the replicas' values sum to the single-device loss and the
gradients reaching each replica's slice are that loss's.

References: Zbontar et al., "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction", ICML 2021 (github.com/facebookresearch/barlowtwins);
Bardes et al., "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022 (github.com/facebookresearch/vicreg).
"""

import math
import numbers

import keras
import tensorflow as tf

from supcon_tf import _backend, _cross_replica
from supcon_tf.losses._portable import others as _portable
from supcon_tf.losses.base import ContrastiveLoss


def _non_negative(value, name):
    """`value` as a float; a `TypeError` / `ValueError` naming `name` unless
    it is a finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number >= 0. Received: {name}={value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value}")
    return float(value)


def _two_views(y_pred, name):
    """`y_pred` `[batch, 2, dim]` -> the two branches `[global batch, dim]`
    (float32, gathered over replicas), after checking the shape and that the
    global batch holds at least 2 samples."""
    z = tf.convert_to_tensor(y_pred)
    if z.shape.rank != 3 or (z.shape[1] is not None and z.shape[1] != 2):
        raise ValueError(f"{name} needs `y_pred` of shape [batch, 2, dim]: two views of "
                         f"each sample. Received: y_pred.shape={z.shape}")
    if z.shape[2] is not None and z.shape[2] < 1:
        raise ValueError(f"{name} needs embeddings of at least one dimension. "
                         f"Received: y_pred.shape={z.shape}")
    if z.shape[0] is not None and _cross_replica.replica_context() is None and z.shape[0] < 2:
        raise ValueError(f"{name} standardises over the batch and needs at least 2 "
                         f"samples. Received: y_pred.shape={z.shape}")
    z, _ = _cross_replica.global_batch(tf.cast(z, tf.float32))
    check = tf.debugging.assert_greater_equal(
        tf.shape(z)[0], 2,
        message=f"{name} standardises over the batch and needs a (global) batch of at "
                "least 2 samples")
    with tf.control_dependencies([check]):
        z = tf.identity(z)
    return z[:, 0], z[:, 1]


def _off_diagonal_sum_of_squares(c):
    return tf.reduce_sum(tf.square(c)) - tf.reduce_sum(tf.square(tf.linalg.diag_part(c)))


def barlow_twins_loss(y_pred, lambda_=0.0051):
    """Barlow Twins' loss of a batch of pairs (the reference implementation's).

    Each dimension of each branch is standardised over the (global) batch
    (batch mean, biased variance, eps 1e-5: BatchNorm without scale or
    offset), then `c = z_a^T z_b / batch` and the loss is
    `sum_i (1 - c_ii)^2 + lambda_ * sum_{i != j} c_ij^2`.

    Args:
        y_pred: `[batch, 2, dim]`: the two branches' embeddings.
        lambda_: Weight of the redundancy (off-diagonal) term >= 0.
            Defaults to 0.0051 (the paper's, for dim 8192).

    Returns:
        A float32 scalar: the loss of the global batch.

    Raises:
        ValueError: `y_pred` is not `[batch, 2, dim]`, or a batch of 1.

    Example:

    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(16, 2, 8)).astype("float32")
    >>> float(barlow_twins_loss(z)) > 0
    True
    """
    lambda_ = _non_negative(lambda_, "lambda_")
    if not _backend.on_tensorflow(y_pred):
        return _portable.barlow_twins_loss(*_portable.two_views(y_pred, "BarlowTwinsLoss"),
                                           lambda_)
    a, b = _two_views(y_pred, "BarlowTwinsLoss")
    n = tf.cast(tf.shape(a)[0], tf.float32)

    def standardise(x):
        mean, variance = tf.nn.moments(x, axes=[0])
        return (x - mean) / tf.sqrt(variance + 1e-5)

    c = tf.matmul(standardise(a), standardise(b), transpose_a=True) / n
    on_diagonal = tf.reduce_sum(tf.square(tf.linalg.diag_part(c) - 1.0))
    return on_diagonal + lambda_ * _off_diagonal_sum_of_squares(c)


def vicreg_loss(y_pred, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    """VICReg's loss of a batch of pairs (the reference implementation's).

    - invariance: the mean squared difference of the branches (over batch
      and dimensions);
    - variance: per branch, the mean over dimensions of
      `relu(1 - sqrt(var + 1e-4))` with the unbiased variance over the batch;
      the two branches averaged;
    - covariance: per branch, the sum of squared off-diagonal entries of the
      covariance (centred, divided by batch - 1), divided by dim; the two
      branches summed.

    The loss is `sim_coeff * invariance + std_coeff * variance + cov_coeff *
    covariance`, all over the (global) batch.

    Args:
        y_pred: `[batch, 2, dim]`: the two branches' embeddings.
        sim_coeff, std_coeff, cov_coeff: The weights, each >= 0. Default to
            25, 25 and 1 (the paper's).

    Returns:
        A float32 scalar: the loss of the global batch.

    Raises:
        ValueError: `y_pred` is not `[batch, 2, dim]`, or a batch of 1.
    """
    coeffs = [_non_negative(c, name) for c, name in ((sim_coeff, "sim_coeff"),
                                                      (std_coeff, "std_coeff"),
                                                      (cov_coeff, "cov_coeff"))]
    terms = vicreg_terms(y_pred)
    return coeffs[0] * terms[0] + coeffs[1] * terms[1] + coeffs[2] * terms[2]


def vicreg_terms(y_pred):
    """VICReg's three unweighted terms `(invariance, variance, covariance)`
    of `y_pred` `[batch, 2, dim]` (see `vicreg_loss`)."""
    if not _backend.on_tensorflow(y_pred):
        return _portable.vicreg_terms(*_portable.two_views(y_pred, "VICRegLoss"))
    a, b = _two_views(y_pred, "VICRegLoss")
    n = tf.cast(tf.shape(a)[0], tf.float32)
    dim = tf.cast(tf.shape(a)[1], tf.float32)
    invariance = tf.reduce_mean(tf.square(a - b))
    variance = covariance = 0.0
    for x in (a, b):
        x = x - tf.reduce_mean(x, axis=0)
        std = tf.sqrt(tf.reduce_sum(tf.square(x), axis=0) / (n - 1.0) + 1e-4)
        variance += tf.reduce_mean(tf.nn.relu(1.0 - std)) / 2.0
        cov = tf.matmul(x, x, transpose_a=True) / (n - 1.0)
        covariance += _off_diagonal_sum_of_squares(cov) / dim
    return invariance, variance, covariance


class _BatchLoss(ContrastiveLoss):
    """A loss of the whole batch: `call` returns one value, `y_true` is
    ignored (it may be None) and there are no sample weights. Inside a replica
    context the value is divided by the number of replicas (Keras scales only
    per-sample losses), so the replicas' values sum to the global batch's."""

    def __call__(self, y_true=None, y_pred=None, sample_weight=None):
        if y_pred is None:
            raise ValueError(f"{type(self).__name__} needs `y_pred` [batch, 2, dim].")
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} is a statistic of the whole batch and "
                             "takes no `sample_weight`. Received a sample_weight.")
        value = super().__call__(y_true, y_pred)
        ctx = _cross_replica.replica_context()
        return value if ctx is None else value / ctx.num_replicas_in_sync


@keras.saving.register_keras_serializable(package="supcon_tf")
class BarlowTwinsLoss(_BatchLoss):
    """Barlow Twins' loss as a Keras loss (see `barlow_twins_loss`).

    `loss(None, y_pred)` with `y_pred` `[batch, 2, dim]` returns the paper's
    value of the batch (the global batch under `tf.distribute`).

    Args:
        lambda_: Weight of the off-diagonal term. Defaults to 0.0051.
        reduction: Keras reduction (of the one value). Defaults to
            `"sum_over_batch_size"`.
        name: Defaults to `"barlow_twins_loss"`.
        dtype: Defaults to None (float32).

    Reference:
        Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy
        Reduction", ICML 2021.
    """

    def __init__(self, lambda_=0.0051, reduction="sum_over_batch_size",
                 name="barlow_twins_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.lambda_ = _non_negative(lambda_, "lambda_")

    def call(self, y_true, y_pred):
        return barlow_twins_loss(y_pred, self.lambda_)

    def get_config(self):
        return {**super().get_config(), "lambda_": self.lambda_}


@keras.saving.register_keras_serializable(package="supcon_tf")
class VICRegLoss(_BatchLoss):
    """VICReg's loss as a Keras loss (see `vicreg_loss`).

    `loss(None, y_pred)` with `y_pred` `[batch, 2, dim]` returns the paper's
    value of the batch (the global batch under `tf.distribute`).

    Args:
        sim_coeff: Weight of the invariance term. Defaults to 25.
        std_coeff: Weight of the variance term. Defaults to 25.
        cov_coeff: Weight of the covariance term. Defaults to 1.
        reduction: Keras reduction (of the one value). Defaults to
            `"sum_over_batch_size"`.
        name: Defaults to `"vicreg_loss"`.
        dtype: Defaults to None (float32).

    Reference:
        Bardes et al., "VICReg: Variance-Invariance-Covariance Regularization
        for Self-Supervised Learning", ICLR 2022.
    """

    def __init__(self, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0,
                 reduction="sum_over_batch_size", name="vicreg_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.sim_coeff = _non_negative(sim_coeff, "sim_coeff")
        self.std_coeff = _non_negative(std_coeff, "std_coeff")
        self.cov_coeff = _non_negative(cov_coeff, "cov_coeff")

    def call(self, y_true, y_pred):
        return vicreg_loss(y_pred, self.sim_coeff, self.std_coeff, self.cov_coeff)

    def get_config(self):
        return {**super().get_config(), "sim_coeff": self.sim_coeff,
                "std_coeff": self.std_coeff, "cov_coeff": self.cov_coeff}
