"""ContraGAN's conditional contrastive (2C) loss.

Reference: Kang & Park, "ContraGAN: Contrastive Learning for Conditional
Image Generation", NeurIPS 2020 (https://arxiv.org/abs/2006.12681); the
definition as POSTECH-CVLab/PyTorch-StudioGAN computes it
(`ConditionalContrastiveLoss` in src/utils/losses.py).

Written once in `keras.ops`, so it runs on every Keras backend; on
TensorFlow inside a `tf.distribute` replica context the other samples are
those of the global batch, as StudioGAN's DDP gather makes them.
"""

import keras
from keras import ops

from supcon_tf import _backend, _cross_replica
from supcon_tf._checks import check_positive
from supcon_tf.losses._portable.common import (l2_normalize, masked_logsumexp, shape_of,
                                               shown)
from supcon_tf.losses.base import ContrastiveLoss


def conditional_contrastive_loss(y_true, y_pred, proxies, temperature=1.0):
    """The 2C loss per sample: data-to-class and data-to-data contrast.

    For sample `i` with embedding `e_i`, its class's proxy `p_i` (the class
    embedding of its label) and cosine similarities `s(.,.)`:

        num_i = exp(s(e_i, p_i) / T) + sum_{j != i, y_j = y_i} exp(s(e_i, e_j) / T)
        den_i = exp(s(e_i, p_i) / T) + sum_{j != i} exp(s(e_i, e_j) / T)
        loss_i = -log(num_i / den_i)

    computed as `softplus(lse_negatives - lse_num)` (no overflow at small `T`,
    and exact where the loss is small).
    The proxy pulls every embedding towards its class; the other samples of
    the class are positives, every other sample a negative.

    Args:
        y_true: Class ids `[batch]` or `[batch, 1]`.
        y_pred: Embeddings `[batch, dim]` (a discriminator's embedding of
            real or generated images).
        proxies: `[batch, dim]`: each sample's class embedding (e.g. a
            `keras.layers.Embedding` of `y_true`). Gradients flow into both.
        temperature: > 0. Defaults to 1.0 (StudioGAN's ContraGAN configs).

    Returns:
        float32 `[batch]`.

    Raises:
        ValueError: shapes other than the above; `temperature <= 0`.
        TypeError: a non-numeric `temperature`.

    Example:

    >>> import numpy as np
    >>> e = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    >>> p = np.random.default_rng(1).normal(size=(6, 8)).astype("float32")
    >>> tuple(conditional_contrastive_loss(np.array([0, 1, 0, 1, 2, 2]), e, p).shape)
    (6,)

    Reference:
        Kang & Park, "ContraGAN: Contrastive Learning for Conditional Image
        Generation", NeurIPS 2020.
    """
    temperature = check_positive(temperature, "temperature")
    if y_true is None:
        raise ValueError("The 2C loss is conditional: it needs class ids `y_true`. "
                         "Received: y_true=None")
    e = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    p = ops.cast(ops.convert_to_tensor(proxies), "float32")
    y = ops.reshape(ops.cast(ops.convert_to_tensor(y_true), "int32"), (-1,))
    if len(e.shape) != 2 or tuple(p.shape) != tuple(e.shape) or (
            e.shape[0] is not None and y.shape[0] != e.shape[0]):
        raise ValueError(
            "The 2C loss needs embeddings `y_pred` [batch, dim], `proxies` of the same "
            "shape and one class id per sample. Received: y_pred.shape="
            f"{shown(shape_of(e))}, proxies.shape={shown(shape_of(p))}, "
            f"y_true.shape={shown(shape_of(ops.convert_to_tensor(y_true)))}")
    e, p = l2_normalize(e), l2_normalize(p)
    everyone, offset, labels = e, 0, y
    if _backend.backend() == "tensorflow":
        everyone, offset = _cross_replica.global_batch(e)
        labels = _cross_replica.all_gather(y)
    to_proxy = ops.sum(e * p, axis=-1, keepdims=True) / temperature          # [b, 1]
    to_data = ops.matmul(e, ops.transpose(everyone)) / temperature           # [b, n]
    own = ops.arange(ops.shape(everyone)[0])[None, :] == (
        offset + ops.arange(ops.shape(e)[0]))[:, None]
    others = ops.logical_not(own)
    same = ops.logical_and(ops.equal(y[:, None], labels[None, :]), others)
    logits = ops.concatenate([to_proxy, to_data], axis=1)
    always = ops.ones_like(to_proxy) > 0
    lse_num = masked_logsumexp(logits, ops.concatenate([always, same], axis=1))[0]
    negatives = ops.logical_and(others, ops.logical_not(same))
    lse_neg, has_neg = masked_logsumexp(to_data, negatives)
    # -log(num / den) = log(1 + neg / num) = softplus(lse_neg - lse_num):
    # exact also where the loss is far below 1 (no difference of two
    # log-sum-exps of nearly equal sums).
    return ops.where(has_neg, ops.softplus(lse_neg - lse_num), 0.0)[:, 0]


@keras.saving.register_keras_serializable(package="supcon_tf")
class ConditionalContrastiveLoss(ContrastiveLoss):
    """ContraGAN's 2C loss as a Keras loss:
    `loss(labels, embeddings, proxies=class_embeddings)`.

    `call` returns `conditional_contrastive_loss`'s per-sample values (which
    documents the formula and the errors); the Keras base class applies
    `sample_weight` and the reduction.

    Args:
        temperature: > 0. Defaults to 1.0.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"conditional_contrastive_loss"`.
        dtype: Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> e = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    >>> loss = ConditionalContrastiveLoss()
    >>> float(loss(np.array([0, 1, 0, 1, 2, 2]), e, proxies=e[::-1])) > 0
    True

    Reference:
        Kang & Park, "ContraGAN: Contrastive Learning for Conditional Image
        Generation", NeurIPS 2020.
    """

    def __init__(self, temperature=1.0, reduction="sum_over_batch_size",
                 name="conditional_contrastive_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_positive(temperature, "temperature")

    def call(self, y_true, y_pred, proxies=None):
        if proxies is None:
            raise ValueError("ConditionalContrastiveLoss needs each sample's class "
                             "embedding: `proxies=` [batch, dim].")
        return conditional_contrastive_loss(y_true, y_pred, proxies, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
