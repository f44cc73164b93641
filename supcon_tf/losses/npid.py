"""NPID's losses against a memory bank (Wu et al., CVPR 2018): NCE and the
non-parametric softmax."""

import keras
import tensorflow as tf

from supcon_tf import _backend, _cross_replica
from supcon_tf.losses._portable import others as _portable
from supcon_tf.losses._checks import _positive_number
from supcon_tf.losses.base import ContrastiveLoss

KINDS = ("nce", "softmax")


def nce_normalizer(similarities, temperature, bank_size):
    """NPID's NCE constant `Z = n * mean(exp(s / T))` over the similarities
    `[batch, 1 + m]` of a batch (the global batch under `tf.distribute`), as
    the reference code estimates it once, on the first batch."""
    scores = tf.stop_gradient(tf.cast(similarities, tf.float32)) / temperature
    local = tf.reshape(tf.reduce_mean(tf.exp(scores)), [1])
    return tf.reduce_mean(_cross_replica.all_gather(local)) * float(bank_size)


def npid_loss(y_true, y_pred, temperature=0.07, kind="nce", noise_ratio=None, z=None):
    """Per-sample NPID loss from similarities to memory-bank slots.

    With `y_true=None`, `y_pred` holds `[batch, 1 + m]` similarities `v_j . f`:
    the sample's own slot first, then `m` negative slots. `"nce"`: with
    `s = y_pred / temperature`, `P(j) = exp(s_j) / z`, noise `Pn` with
    `m * Pn = noise_ratio` (`m / n` for `n` slots), `h = P / (P + m Pn)`, the
    loss is `-log h(own) - sum_j log(1 - h(j))`. `"softmax"`: the
    cross-entropy of `s` with the own slot as the target. With `y_true`, the
    own slot indices `[batch]`, `y_pred` holds the similarities to every slot
    `[batch, n]` (the paper's equation 2, `"softmax"` only).

    Args:
        y_true: None, or the own slots' indices (see above).
        y_pred: Similarities, see above.
        temperature: `tau` > 0. Defaults to 0.07.
        kind: `"nce"` or `"softmax"`. Defaults to `"nce"`.
        noise_ratio: NCE's `m / n`. Required for `"nce"`.
        z: NCE's normalising constant (`nce_normalizer`). Required for `"nce"`.

    Returns:
        The per-sample losses `[batch]`.
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
    if y_true is not None and kind != "softmax":
        raise ValueError("Similarities to every slot (with `y_true`, the own slots) are "
                         "for kind='softmax'. Received: kind='nce'")
    if y_true is None and kind == "nce" and (noise_ratio is None or z is None):
        raise ValueError(f"NCE needs `noise_ratio` (m / n) and `z`. Received: "
                         f"noise_ratio={noise_ratio!r}, z={z!r}")
    if not _backend.on_tensorflow(y_true, y_pred, noise_ratio, z):
        return _portable.npid_loss(y_true, y_pred, temperature, kind, noise_ratio, z)
    scores = tf.cast(y_pred, tf.float32) / temperature
    if y_true is not None:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            tf.reshape(tf.cast(y_true, tf.int64), [-1]), scores)
    if kind == "softmax":
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            tf.zeros(tf.shape(scores)[:1], tf.int64), scores)
    # log P = s - log Z;  h = P / (P + m / n);  log h = -softplus(log(m / n) - log P).
    log_p = scores - tf.math.log(tf.cast(z, tf.float32))
    log_noise = tf.math.log(tf.cast(noise_ratio, tf.float32))
    log_h_own = -tf.nn.softplus(log_noise - log_p[:, 0])
    log_1m_h_negatives = -tf.nn.softplus(log_p[:, 1:] - log_noise)
    return -(log_h_own + tf.reduce_sum(log_1m_h_negatives, axis=1))


@keras.saving.register_keras_serializable(package="supcon_tf")
class NPIDLoss(ContrastiveLoss):
    """NPID's NCE or non-parametric softmax (`npid_loss`) as a Keras loss.

    `supcon_tf.models.NPIDModel` reads the bank and calls it with the
    similarities and, for NCE, `noise_ratio=` and `z=`:
    `loss(None, similarities, sample_weight, noise_ratio=m / n, z=z)`.

    Args:
        temperature: `tau` > 0. Defaults to 0.07.
        kind: `"nce"` or `"softmax"`. Defaults to `"nce"`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"npid_loss"`.
        dtype: Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> sims = np.array([[0.9, 0.1, -0.2]], "float32")   # own slot first
    >>> round(float(NPIDLoss(1.0, kind="softmax")(None, sims)), 4)
    0.5702

    Reference:
        Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
        Discrimination", CVPR 2018.
    """

    def __init__(self, temperature=0.07, kind="nce", reduction="sum_over_batch_size",
                 name="npid_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
        self.temperature = _positive_number(temperature, "temperature")
        self.kind = kind

    def call(self, y_true, y_pred, noise_ratio=None, z=None):
        return npid_loss(y_true, y_pred, self.temperature, self.kind, noise_ratio, z)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "kind": self.kind}
