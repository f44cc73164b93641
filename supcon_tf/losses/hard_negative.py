"""Hard negative sampling (HCL) and the debiased contrastive loss (DCL).

References: Robinson et al., "Contrastive Learning with Hard Negative Samples",
ICLR 2021 (https://arxiv.org/abs/2010.04592; code: github.com/joshr17/HCL,
image/main.py), and Chuang et al., "Debiased Contrastive Learning", NeurIPS
2020 (https://arxiv.org/abs/2007.00224).
"""

import math
import numbers

import keras
import tensorflow as tf

from supcon_tf import _backend, _cross_replica
from supcon_tf.losses._checks import _as_views, _positive_number, nonfinite_marker
from supcon_tf.losses._masks import (_masked_logsumexp, checked_labels, label_kind,
                                     same_class, validate_labels)
from supcon_tf.losses._portable import supcon as _portable
from supcon_tf.losses.base import ContrastiveLoss


def _check_hcl_options(temperature, tau_plus, beta):
    temperature = _positive_number(temperature, "temperature")
    for name, value in (("tau_plus", tau_plus), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"`{name}` must be a number. Received: {name}={value!r}")
    if not (math.isfinite(tau_plus) and 0.0 <= tau_plus < 1.0):
        raise ValueError("`tau_plus` (the class prior: the probability that a negative "
                         "shares the anchor's class) must be in [0, 1). "
                         f"Received: tau_plus={tau_plus}")
    if not (math.isfinite(beta) and beta >= 0.0):
        raise ValueError("`beta` (the concentration on hard negatives) must be a finite "
                         f"number >= 0. Received: beta={beta}")
    return temperature, float(tau_plus), float(beta)


def hard_negative_loss(y_true, y_pred, temperature=0.5, tau_plus=0.1, beta=1.0,
                       normalize=True):
    """HCL's contrastive loss with hard negatives, one value per sample.

    Each of the `2B` views is an anchor; its positive is the other view of its
    sample and its negatives are the views of every other sample in the
    (global) batch: `n = 2B - 2` of them. With `pos = exp(s+ / T)`,
    `neg_j = exp(s_j / T)` and the importance weights `imp_j = neg_j ** beta`,

        Ng = (-tau_plus * n * pos + sum_j imp_j * neg_j / mean_j(imp_j)) / (1 - tau_plus)
        Ng = max(Ng, n * exp(-1 / T))
        loss(anchor) = -log(pos / (pos + Ng))

    as in the reference code (joshr17/HCL, `criterion` with
    `estimator="hard"`); the importance weights are not detached there either.
    A sample's value is the mean over its two anchors. It is computed in the
    log domain (log-sum-exps shifted by their maxima), so small temperatures
    and large `beta` do not overflow where `exp(s / T)` would.

    Special cases: `beta=0` is the debiased loss of Chuang et al.
    (`Ng = (sum_j neg_j - tau_plus * n * pos) / (1 - tau_plus)`, clamped), and
    `beta=0, tau_plus=0` is SimCLR's NT-Xent (`supcon_loss(None, y_pred,
    temperature)`; the clamp never binds, since every `neg_j >= exp(-1/T)` for
    unit-norm embeddings).

    With labels, the views of samples of the anchor's class are removed from
    its negatives (the positive stays the other view of its own sample) and `n`
    is the anchor's own count of remaining negatives. `tau_plus` is the prior
    probability that a negative is in fact of the anchor's class. Without
    labels that is about 1 / classes for balanced classes (the papers' setting,
    e.g. 0.1 for CIFAR-10); with labels, the same-class samples are already
    gone, so `tau_plus` estimates only the false negatives the labels miss:
    use 0 for clean, complete labels, and more for noisy or partial ones.

    Inside a `tf.distribute` replica context the negatives are those of the
    global batch (gathered from all replicas, gradients flowing back), as in
    `supcon_loss`; the values are this replica's samples.

    Args:
        y_true: None (self-supervised), or class ids `[batch]` / `[batch, 1]`,
            or one-hot / multi-hot `[batch, classes]` (samples sharing a class
            are not negatives of each other).
        y_pred: `[batch, 2, dim]`: two views of each sample.
        temperature: Softmax temperature > 0. Defaults to 0.5 (the reference
            code's default).
        tau_plus: Class prior in `[0, 1)`. Defaults to 0.1.
        beta: Concentration on hard negatives, >= 0. Defaults to 1.0.
        normalize: L2-normalise the embeddings first. Defaults to True (the
            reference model normalises its output).

    Returns:
        float32 `[batch]`. An anchor with no negative left (every other
        sample shares its class) contributes 0. NaN if any embedding is not
        finite.

    Raises:
        ValueError: `y_pred` not `[batch, 2, dim]`; `temperature <= 0`;
            `tau_plus` outside `[0, 1)`; `beta < 0`; labels of a bad rank or
            count.
        TypeError: non-numeric options; string or bool labels.

    Example:

    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    >>> hard_negative_loss(None, z, tau_plus=0.1, beta=1.0).shape
    TensorShape([4])

    Reference:
        Robinson et al., "Contrastive Learning with Hard Negative Samples",
        ICLR 2021; Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020.
    """
    return hard_negative_terms(y_true, y_pred, temperature=temperature, tau_plus=tau_plus,
                               beta=beta, normalize=normalize)["loss"]


def hard_negative_terms(y_true, y_pred, temperature=0.5, tau_plus=0.1, beta=1.0,
                        normalize=True):
    """`hard_negative_loss` and how often its clamp binds, per sample.

    The clamp `Ng >= n * exp(-1 / T)` is where the debiased estimate of the
    negatives' sum turns non-positive: `tau_plus * n * pos` (the expected
    false negatives, scaled by the positive) exceeds the (reweighted) sum of
    the negatives. An anchor at the clamp gets a constant `Ng`: its
    negatives send no gradient and only its positive is pulled closer. With
    a well-aligned positive and a low temperature, `pos = exp(s+ / T)` is
    large (e^4.5 = 90 for s+ = 0.9 at T = 0.2) and the clamp binds for most
    anchors; the papers' CIFAR settings use T = 0.5. Watch `clamped` when
    choosing `temperature` and `tau_plus`. (With `tau_plus=0` it binds only
    where every negative is exactly opposite the anchor.)

    Args:
        As `hard_negative_loss`.

    Returns:
        A dict of float32 `[batch]` tensors: `loss`, the values of
        `hard_negative_loss`, and `clamped`, the fraction (0, 0.5 or 1) of the
        sample's two anchors whose `Ng` is at the clamp (anchors without
        negatives count as not clamped).

    Example:

    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(4, 2, 64)).astype("float32")
    >>> z[:, 1] = z[:, 0]                     # aligned views, near-orthogonal samples
    >>> float(hard_negative_terms(None, z, temperature=0.2, beta=0.0)["clamped"].numpy().mean())
    1.0
    """
    temperature, tau_plus, beta = _check_hcl_options(temperature, tau_plus, beta)
    if not _backend.on_tensorflow(y_true, y_pred):
        return _portable.hard_negative_terms(y_true, y_pred, temperature, tau_plus, beta,
                                             normalize)
    features = _as_views(y_pred)
    if features.shape.rank != 3 or features.shape[1] != 2:
        raise ValueError("`y_pred` must be [batch, 2, dim]: two views of each sample. "
                         f"Received: y_pred.shape={tf.convert_to_tensor(y_pred).shape}")
    if y_true is not None:
        y_true = validate_labels(y_true)
    if normalize:
        features = tf.math.l2_normalize(features, axis=-1)
    batch = tf.shape(features)[0]
    contrast, offset = _cross_replica.global_batch(features)
    poison = nonfinite_marker(contrast)
    dim = tf.shape(features)[-1]
    n_global = tf.shape(contrast)[0]

    # Rows sample-major: row 2i + v is view v of sample i.
    anchor = tf.reshape(features, [-1, dim])
    logits = tf.matmul(anchor, tf.reshape(contrast, [-1, dim]), transpose_b=True) / temperature
    positive = tf.reduce_sum(features[:, 0] * features[:, 1], axis=-1) / temperature
    positive = tf.repeat(positive, 2)                                   # [2B]
    anchor_sample = tf.repeat(tf.range(batch) + offset, 2)
    column_sample = tf.repeat(tf.range(n_global), 2)
    negative = tf.not_equal(anchor_sample[:, None], column_sample[None, :])
    check = None
    if y_true is not None:
        y_true, check = checked_labels(
            y_true, batch if features.shape[0] is None else features.shape[0])
        y_all = _cross_replica.all_gather(y_true)
        with tf.control_dependencies([check]):
            same = same_class(tf.repeat(y_true, 2, axis=0), tf.repeat(y_all, 2, axis=0),
                              label_kind(y_true))
        negative = tf.logical_and(negative, tf.logical_not(same))

    count = tf.reduce_sum(tf.cast(negative, tf.float32), axis=1)        # n per anchor
    has_negatives = count > 0
    safe_count = tf.where(has_negatives, count, tf.ones_like(count))
    # log(sum imp * neg / mean imp) = log n + lse((1 + beta) s / T) - lse(beta s / T)
    lse_hard, _ = _masked_logsumexp((1.0 + beta) * logits, negative)
    if beta == 0.0:
        log_reweighted = lse_hard[:, 0]
    else:
        lse_imp, _ = _masked_logsumexp(beta * logits, negative)
        log_reweighted = tf.math.log(safe_count) + lse_hard[:, 0] - lse_imp[:, 0]
    # Shift everything by m = max(log reweighted, s+ / T): no exp overflows.
    shift = tf.stop_gradient(tf.maximum(log_reweighted, positive))
    pos = tf.exp(positive - shift)
    ng = (tf.exp(log_reweighted - shift) - tau_plus * safe_count * pos) / (1.0 - tau_plus)
    floor = safe_count * tf.exp(-1.0 / temperature - shift)
    clamped = tf.logical_and(has_negatives, ng <= floor)
    ng = tf.maximum(ng, floor)
    # -log(pos / (pos + Ng)) = softplus(log Ng - s+ / T): exact also when Ng << pos.
    # (Ng can underflow to 0 only where the loss is below float32's resolution.)
    keep = tf.logical_and(has_negatives, ng > 0)
    log_ng = tf.math.log(tf.where(keep, ng, tf.ones_like(ng))) + shift
    per_anchor = tf.where(keep, tf.nn.softplus(log_ng - positive), tf.zeros_like(ng))
    if check is not None:
        with tf.control_dependencies([check]):
            per_anchor = tf.identity(per_anchor)
    clamped = tf.reduce_mean(tf.reshape(tf.cast(clamped, tf.float32), [batch, 2]), axis=1)
    return {"loss": tf.reduce_mean(tf.reshape(per_anchor, [batch, 2]), axis=1) + poison,
            "clamped": clamped + poison}




@keras.saving.register_keras_serializable(package="supcon_tf")
class HardNegativeLoss(ContrastiveLoss):
    """HCL's hard-negative contrastive loss (and the debiased loss) as a Keras loss.

    `y_pred` is `[batch, 2, dim]` (two views); `y_true` is None for the
    self-supervised loss, or labels whose same-class samples are then no
    negatives. `call` returns `hard_negative_loss`'s per-sample values, which
    documents the formula, the special cases and the errors; the Keras base
    class applies `sample_weight` and the reduction.

    - `HardNegativeLoss(tau_plus=0.1, beta=1.0)`: HCL (Robinson et al.).
    - `HardNegativeLoss(tau_plus=0.1, beta=0.0)`: the debiased loss (Chuang et al.).
    - `HardNegativeLoss(tau_plus=0.0, beta=0.0)`: NT-Xent, as
      `SupConLoss(temperature)` without labels.

    Args:
        temperature: Softmax temperature > 0. Defaults to 0.5.
        tau_plus: Class prior in `[0, 1)`. Defaults to 0.1.
        beta: Concentration on hard negatives, >= 0. Defaults to 1.0.
        normalize: L2-normalise inside the loss. Defaults to True.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"hard_negative_loss"`.
        dtype: Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    >>> float(HardNegativeLoss(beta=1.0)(None, z)) > 0
    True

    Reference:
        Robinson et al., "Contrastive Learning with Hard Negative Samples",
        ICLR 2021.
    """

    def __init__(self, temperature=0.5, tau_plus=0.1, beta=1.0, normalize=True,
                 reduction="sum_over_batch_size", name="hard_negative_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature, self.tau_plus, self.beta = _check_hcl_options(
            temperature, tau_plus, beta)
        self.normalize = bool(normalize)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if not _backend.on_tensorflow(y_true, y_pred):
            return super().__call__(y_true, y_pred, sample_weight=sample_weight)
        if y_true is None:
            # Every sample its own class: exactly the self-supervised negatives
            # (ids unique over the global batch), and a tensor for the base class.
            y_true = _cross_replica.unique_ids(tf.shape(tf.convert_to_tensor(y_pred))[0])
        else:
            # Before the base class casts them to floats (a string label would
            # fail there with a ValueError about floats).
            validate_labels(y_true)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        return hard_negative_loss(y_true, y_pred, temperature=self.temperature,
                                  tau_plus=self.tau_plus, beta=self.beta,
                                  normalize=self.normalize)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "tau_plus": self.tau_plus, "beta": self.beta, "normalize": self.normalize}
