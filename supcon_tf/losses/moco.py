"""MoCo's contrastive loss: queries against their keys and a queue of past keys.

Reference: He et al., "Momentum Contrast for Unsupervised Visual
Representation Learning", CVPR 2020 (https://arxiv.org/abs/1911.05722), and
Chen et al., "Improved Baselines with Momentum Contrastive Learning" (MoCo v2,
https://arxiv.org/abs/2003.04297). With labels, the SupCon paper's "MoCo
trick" (Khosla et al., NeurIPS 2020, section 4).
"""

import keras
import tensorflow as tf

from supcon_tf import _backend, _cross_replica
from supcon_tf.losses import _fused
from supcon_tf.losses._masks import checked_labels, class_ids, validate_labels
from supcon_tf.losses._checks import (_as_views, _check_queue, _positive_number,
                                      nonfinite_marker)
from supcon_tf.losses._portable import supcon as _portable
from supcon_tf.losses.base import ContrastiveLoss


def moco_loss(y_true, y_pred, queue=None, queue_labels=None, temperature=0.2,
              normalize=True, extra_negatives=None):
    """MoCo's InfoNCE loss (or, with labels, SupCon over keys and queue), per sample.

    `y_pred[:, 0]` are the queries `q` (from the trained encoder) and
    `y_pred[:, 1]` their keys `k` (from the momentum encoder, another view of
    the same image). Keys and queue receive no gradient.

    - `y_true=None` (MoCo v2, the paper's pseudo-code): for query `i`,
      `-log(exp(q_i.k_i / T) / (exp(q_i.k_i / T) + sum_j exp(q_i.n_j / T)))`
      over the queue entries `n_j`: the query's own key is its only positive,
      the queue its negatives; the other keys of the batch take no part.
    - With labels (SupCon with a labelled queue): the contrast set is every
      key of the (global) batch and every queue entry; the positives of query
      `i` are those of its class (its own key included), and the loss is
      SupCon's `L_out`: `logsumexp_c(q_i.c / T) - mean_{p in P(i)} q_i.p / T`.

    Args:
        y_true: Class ids `[batch]` or `[batch, 1]`, or None.
        y_pred: `[batch, 2, dim]`: queries and keys.
        queue: Optional `[K, dim]` past keys (`supcon_tf.memory.FeatureQueue`),
            read before this batch's keys are enqueued. Defaults to None.
        queue_labels: `[K]` class ids of the queue; required with labels and
            a queue. Defaults to None.
        temperature: Softmax temperature > 0. Defaults to 0.2 (MoCo v2).
        normalize: L2-normalise queries, keys and queue first. Defaults to True.
        extra_negatives: Optional `[batch, S, dim]` further negatives of each
            query alone (MoCHi's synthetic hard negatives, `mochi_negatives`),
            added to its denominator; no gradient flows into them. All-zero
            rows are absent (not negatives). Defaults to None.

    Returns:
        float32 `[batch]`. With no labels and an empty queue, 0 (the query has
        nothing to be told apart from). NaN if any input is not finite.

    Example:

    >>> import numpy as np
    >>> qk = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    >>> queue = np.random.default_rng(1).normal(size=(16, 8)).astype("float32")
    >>> moco_loss(None, qk, queue).shape
    TensorShape([4])

    Reference:
        He et al., "Momentum Contrast for Unsupervised Visual Representation
        Learning", CVPR 2020.
    """
    if not _backend.on_tensorflow(y_true, y_pred, queue, queue_labels, extra_negatives):
        return _portable.moco_loss(y_true, y_pred, queue, queue_labels, temperature,
                                   normalize, extra_negatives)
    temperature = _positive_number(temperature, "temperature")
    pairs = _as_views(y_pred)
    if pairs.shape[1] is not None and pairs.shape[1] != 2:
        raise ValueError("`y_pred` must be [batch, 2, dim]: queries and their keys. "
                         f"Received: y_pred.shape={tf.convert_to_tensor(y_pred).shape}")
    if y_true is not None:
        y_true = validate_labels(y_true)
        if y_true.shape.rank == 2 and y_true.shape[1] != 1:
            raise ValueError("MoCo's loss takes class ids [batch] or [batch, 1]. "
                             f"Received: y_true.shape={y_true.shape}")
    queue, queue_labels = _check_queue(queue, queue_labels, pairs, y_true, None)
    extra = _check_extra_negatives(extra_negatives, pairs)
    query, key = pairs[:, 0], tf.stop_gradient(pairs[:, 1])
    if normalize:
        query = tf.math.l2_normalize(query, axis=-1)
        key = tf.math.l2_normalize(key, axis=-1)
        if queue is not None:
            queue = tf.math.l2_normalize(queue, axis=-1)
        if extra is not None:
            extra = tf.math.l2_normalize(extra, axis=-1)
    poison = nonfinite_marker(query, key, queue, extra)
    extra_lse = None
    if extra is not None:
        present = tf.reduce_any(tf.not_equal(extra, 0.0), axis=-1)            # [B, S]
        logits = tf.einsum("bd,bsd->bs", query, extra) / temperature
        extra_lse = tf.reduce_logsumexp(
            tf.where(present, logits, tf.constant(-float("inf"))), axis=1)
    if y_true is None:
        positive = tf.reduce_sum(query * key, axis=1) / temperature
        if queue is None and extra is None:
            return tf.zeros_like(positive) + poison
        # -log(e^pos / (e^pos + sum_j e^neg_j)) = softplus(lse_neg - pos), with
        # the queue's log-sum-exp on the fused path (its own gradient, no
        # [batch, 1 + K] concatenation).
        parts = []
        if queue is not None:
            lse_queue = _fused.lse(query, queue, None, temperature, normalize, grad_rows=0)
            parts.append(tf.where(tf.shape(queue)[0] > 0, lse_queue,
                                  tf.fill(tf.shape(lse_queue), -float("inf"))))
        if extra_lse is not None:
            parts.append(extra_lse)
        lse_neg = parts[0] if len(parts) == 1 else tf.reduce_logsumexp(
            tf.stack(parts, axis=1), axis=1)
        has_negatives = tf.math.is_finite(lse_neg)
        safe = tf.where(has_negatives, lse_neg, tf.zeros_like(lse_neg))
        return tf.where(has_negatives, tf.nn.softplus(safe - positive),
                        tf.zeros_like(positive)) + poison
    batch = tf.shape(query)[0]
    y_true, check = checked_labels(y_true, batch)
    with tf.control_dependencies([check]):
        keys, offset = _cross_replica.global_batch(key)
        labels = class_ids(_cross_replica.all_gather(y_true))
    contrast = keys
    if queue is not None:
        contrast = tf.concat([keys, queue], 0)
        labels = tf.concat([labels, class_ids(queue_labels, "queue_labels")], 0)
    segments = _fused.class_segments(labels)
    per_query = _fused.supcon_out_per_anchor(               # keys and queue: no gradient
        query, contrast, segments[offset:offset + batch], segments, None,
        temperature, None, normalize, grad_rows=0, extra_lse=extra_lse)
    return per_query + poison


def _check_extra_negatives(extra, pairs):
    """`extra_negatives` as float32 `[batch, S, dim]` without gradient."""
    if extra is None:
        return None
    extra = tf.stop_gradient(tf.cast(tf.convert_to_tensor(extra), tf.float32))
    batch, dim = pairs.shape[0], pairs.shape[-1]
    if extra.shape.rank != 3 or any(
            a is not None and b is not None and a != b
            for a, b in ((extra.shape[0], batch), (extra.shape[2], dim))):
        raise ValueError(
            f"`extra_negatives` must be [batch, S, dim] with the queries' batch and dim "
            f"({batch}, {dim}). Received: extra_negatives.shape={extra.shape}")
    return extra


@keras.saving.register_keras_serializable(package="supcon_tf")
class MoCoLoss(ContrastiveLoss):
    """MoCo's loss as a Keras loss: `y_pred` is `[batch, 2, dim]` (queries, keys).

    `call` returns `moco_loss`'s per-sample values and the Keras base class
    applies `sample_weight` and the reduction. The queue comes with the call:
    `loss(y_true, y_pred, queue=..., queue_labels=...)`, as
    `supcon_tf.models.MoCoModel` does.

    Args:
        temperature: Softmax temperature > 0. Defaults to 0.2.
        normalize: L2-normalise inside the loss. Defaults to True.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"moco_loss"`.
        dtype: Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> qk = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    >>> float(MoCoLoss()(None, qk, queue=qk[:, 1])) > 0
    True

    Reference:
        He et al., "Momentum Contrast for Unsupervised Visual Representation
        Learning", CVPR 2020.
    """

    def __init__(self, temperature=0.2, normalize=True, reduction="sum_over_batch_size",
                 name="moco_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _positive_number(temperature, "temperature")
        self.normalize = bool(normalize)

    def call(self, y_true, y_pred, queue=None, queue_labels=None, extra_negatives=None):
        return moco_loss(y_true, y_pred, queue, queue_labels, temperature=self.temperature,
                         normalize=self.normalize, extra_negatives=extra_negatives)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "normalize": self.normalize}
