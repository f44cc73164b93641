"""SwAV's swapped prediction loss (Caron et al., NeurIPS 2020)."""

import keras
import tensorflow as tf

from supcon_tf import _backend
from supcon_tf.losses._checks import _positive_number
from supcon_tf.losses._portable import others as _portable
from supcon_tf.losses.base import ContrastiveLoss


def swav_loss(codes, scores, temperature=0.1):
    """Per-sample swapped prediction loss, as facebookresearch/swav computes it.

    The code of view `a` (one of the first `A` views, SwAV's
    `crops_for_assign`) is predicted from every other view `v`:
    `-sum_k codes[a, k] log softmax(scores[v] / temperature)_k`, averaged over
    the `V - 1` other views, then over the `A` coded views.

    Args:
        codes: `[batch, A, K]` Sinkhorn codes of views `0 .. A-1`
            (`supcon_tf.clustering.sinkhorn`); no gradient flows through them.
        scores: `[batch, V, K]` scores of every view's L2-normalised
            embedding against the unit-norm prototypes, `V >= 2`, `A <= V`.
        temperature: > 0. Defaults to 0.1 (SwAV's).

    Returns:
        `[batch]` float32.
    """
    temperature = _positive_number(temperature, "temperature")
    if not _backend.on_tensorflow(codes, scores):
        return _portable.swav_loss(codes, scores, temperature)
    codes = tf.stop_gradient(tf.cast(codes, tf.float32))
    scores = tf.cast(scores, tf.float32)
    if codes.shape.rank != 3 or scores.shape.rank != 3:
        raise ValueError("`codes` must be [batch, A, K] and `scores` [batch, V, K]. Received: "
                         f"codes.shape={codes.shape}, scores.shape={scores.shape}")
    coded, views = codes.shape[1], scores.shape[1]
    if views is None or coded is None or views < 2 or not 1 <= coded <= views:
        raise ValueError("SwAV predicts each coded view from the other views: it needs "
                         f"`scores` of V >= 2 views and 1 <= A <= V coded views. Received: "
                         f"codes.shape={codes.shape}, scores.shape={scores.shape}")
    if codes.shape[2] is not None and scores.shape[2] is not None \
            and codes.shape[2] != scores.shape[2]:
        raise ValueError("`codes` and `scores` must have the same number of prototypes K. "
                         f"Received: codes.shape={codes.shape}, scores.shape={scores.shape}")
    log_p = tf.nn.log_softmax(scores / temperature, axis=-1)          # [b, V, K]
    # cross[b, a, v] = -sum_k codes[b, a, k] log_p[b, v, k]
    cross = -tf.einsum("bak,bvk->bav", codes, log_p)
    others = 1.0 - tf.one_hot(tf.range(coded), views)                 # [A, V]: v != a
    per_view = tf.reduce_sum(cross * others[None], axis=2) / float(views - 1)
    return tf.reduce_mean(per_view, axis=1)


@keras.saving.register_keras_serializable(package="supcon_tf")
class SwAVLoss(ContrastiveLoss):
    """SwAV's swapped prediction loss as a Keras loss (`swav_loss` per sample).

    `y_true` holds the codes `[batch, A, K]` of the first `A` views (from
    `supcon_tf.clustering.sinkhorn`), `y_pred` the prototype scores of all
    views `[batch, V, K]`. `supcon_tf.models.SwAVModel` computes the codes
    and calls it.

    Args:
        temperature: > 0. Defaults to 0.1.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"swav_loss"`.
        dtype: Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> codes = np.full((2, 2, 4), 0.25, "float32")       # uniform codes
    >>> scores = np.zeros((2, 2, 4), "float32")          # uniform predictions
    >>> round(float(SwAVLoss()(codes, scores)), 4)       # log 4
    1.3863

    Reference:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting
        Cluster Assignments", NeurIPS 2020.
    """

    def __init__(self, temperature=0.1, reduction="sum_over_batch_size", name="swav_loss",
                 dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.temperature = _positive_number(temperature, "temperature")

    def call(self, y_true, y_pred):
        return swav_loss(y_true, y_pred, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
