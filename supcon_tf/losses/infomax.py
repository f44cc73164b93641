"""Deep InfoMax's local objective and AMDIM's noise-contrastive estimate:
mutual information between an image's global feature and its local
features.

With a global feature `g_i` (`[batch, R]`) and local features `l_{j,m}`
(`[batch, L, R]`, location m of image j), the scores are
`s_{i,j,m} = g_i . l_{j,m}`: image i's own locations are positives, every
location of another image a negative (over the global batch on TensorFlow
under `tf.distribute`).

- `dim_loss` (Hjelm et al., ICLR 2019; rdevon/DIM, `fenchel_dual_loss` and
  `infonce_loss`), per image i:
  `estimator="jsd"`: `mean_{j != i, m} (softplus(s_ijm) - log 2) -
  mean_m (log 2 - softplus(-s_iim))` (the Jensen-Shannon bound, negated);
  `estimator="infonce"`: `-mean_m log( exp(s_iim) / (exp(s_iim) +
  sum_{j != i, m'} exp(s_ijm')) )`. (The official InfoNCE keeps the other
  locations of the own image in the softmax at a score of -10; here they
  take no part.)
- `amdim_loss` (Bachman et al., NeurIPS 2019; Philip-Bachman/amdim-public,
  `NCE_MI_MULTI`): the InfoNCE form on `s / sqrt(R)` soft-clipped to
  `[-tclip, tclip]` by `tclip * tanh(s / tclip)`, plus `logit_reg` times the
  mean square of the unclipped scores (each image's share of the official
  batch mean).

Written once in `keras.ops` (every Keras backend).
"""

import math

import keras
from keras import ops

from supcon_tf import _backend, _cross_replica
from supcon_tf._checks import check_choice, check_positive
from supcon_tf.losses._portable.common import shape_of, shown
from supcon_tf.losses.base import ContrastiveLoss

ESTIMATORS = ("jsd", "infonce")


def _scores(global_features, local_features):
    """`(scores [b, n, L], own [b, n] bool)`: every global feature of this
    replica against every location of the (global) batch."""
    g = ops.cast(ops.convert_to_tensor(global_features), "float32")
    loc = ops.cast(ops.convert_to_tensor(local_features), "float32")
    if len(g.shape) != 2 or len(loc.shape) != 3 or (
            None not in (g.shape[1], loc.shape[2]) and g.shape[1] != loc.shape[2]):
        raise ValueError("Local-global losses need global features [batch, R] and local "
                         "features [batch, locations, R]. Received: "
                         f"{shown(shape_of(g))} and {shown(shape_of(loc))}")
    everyone, offset = loc, 0
    if _backend.backend() == "tensorflow":
        everyone, offset = _cross_replica.global_batch(loc)
    n, locations = ops.shape(everyone)[0], ops.shape(everyone)[1]
    flat = ops.reshape(everyone, (-1, ops.shape(everyone)[2]))
    scores = ops.reshape(ops.matmul(g, ops.transpose(flat)), (ops.shape(g)[0], n, locations))
    own = ops.arange(n)[None, :] == (offset + ops.arange(ops.shape(g)[0]))[:, None]
    return scores, own


def _nce(scores, own):
    """Per image: `-mean_m` of the log-softmax of its own location m against
    every location of the other images."""
    own3 = own[:, :, None]
    positives = ops.sum(ops.where(own3, scores, 0.0), axis=1)                # [b, L]
    negatives = ops.where(own3, float("-inf"), scores)
    negatives = ops.reshape(negatives, (ops.shape(scores)[0], -1))
    top = ops.stop_gradient(ops.maximum(ops.max(negatives, axis=1, keepdims=True),
                                        ops.max(positives, axis=1, keepdims=True)))
    rest = ops.sum(ops.exp(negatives - top), axis=1, keepdims=True)          # [b, 1]
    log_softmax = positives - top - ops.log(ops.exp(positives - top) + rest)
    return -ops.mean(log_softmax, axis=1)


def dim_loss(y_pred, local_features, estimator="jsd"):
    """Deep InfoMax's local objective per image (the module docstring).

    Args:
        y_pred: `[batch, R]` global features.
        local_features: `[batch, L, R]` local features (L locations).
        estimator: `"jsd"` (the paper's choice) or `"infonce"`. Defaults to
            `"jsd"`.

    Returns:
        float32 `[batch]`. With a (global) batch of one image there are no
        negatives: the InfoNCE form gives 0, the JSD form its positive term.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> g, l = rng.normal(size=(4, 8)), rng.normal(size=(4, 9, 8))
    >>> tuple(dim_loss(g, l, "infonce").shape)
    (4,)

    Reference:
        Hjelm et al., "Learning deep representations by mutual information
        estimation and maximization", ICLR 2019.
    """
    check_choice(estimator, "estimator", ESTIMATORS)
    scores, own = _scores(y_pred, local_features)
    if estimator == "infonce":
        return _nce(scores, own)
    log2 = math.log(2.0)
    own3 = ops.broadcast_to(own[:, :, None], ops.shape(scores))
    count = ops.sum(ops.cast(ops.logical_not(own3), "float32"), axis=(1, 2))
    negative = ops.sum(ops.where(own3, 0.0, ops.softplus(scores) - log2), axis=(1, 2))
    negative = negative / ops.maximum(count, 1.0)
    positive = ops.sum(ops.where(own3, log2 - ops.softplus(-scores), 0.0), axis=(1, 2))
    positive = positive / ops.cast(ops.shape(scores)[2], "float32")
    return negative - positive


def _check_amdim(tclip, logit_reg):
    if tclip is not None:
        tclip = check_positive(tclip, "tclip", " or None")
    if isinstance(logit_reg, bool) or not isinstance(logit_reg, (int, float)) or \
            not math.isfinite(logit_reg) or logit_reg < 0:
        raise ValueError(f"`logit_reg` must be a number >= 0. Received: logit_reg={logit_reg!r}")
    return tclip, float(logit_reg)


def amdim_loss(y_pred, local_features, tclip=20.0, logit_reg=0.05):
    """AMDIM's noise-contrastive estimate per image (the module docstring),
    for one source -> target pair of scales or views.

    Args:
        y_pred: `[batch, R]` source features (e.g. the global feature of one
            view).
        local_features: `[batch, L, R]` target features (e.g. another view's
            local features).
        tclip: The soft clip of the scores, > 0, or None for none. Defaults
            to 20.0 (the official `tclip`).
        logit_reg: Weight of the scores' mean square. Defaults to 0.05 (the
            official).

    Returns:
        float32 `[batch]`.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> g, l = rng.normal(size=(4, 8)), rng.normal(size=(4, 9, 8))
    >>> tuple(amdim_loss(g, l).shape)
    (4,)

    Reference:
        Bachman, Hjelm, Buchwalter, "Learning Representations by Maximizing
        Mutual Information Across Views", NeurIPS 2019.
    """
    tclip, logit_reg = _check_amdim(tclip, logit_reg)
    scores, own = _scores(y_pred, local_features)
    dim = ops.convert_to_tensor(y_pred).shape[-1]
    if dim is None:
        raise ValueError("amdim_loss needs the features' size R known (it divides the "
                         "scores by sqrt(R)).")
    scores = scores / math.sqrt(dim)
    reg = logit_reg * ops.mean(ops.square(scores), axis=(1, 2))
    if tclip is not None:
        scores = tclip * ops.tanh(scores / tclip)
    return _nce(scores, own) + reg


@keras.saving.register_keras_serializable(package="supcon_tf")
class DIMLoss(ContrastiveLoss):
    """Deep InfoMax's local objective as a Keras loss:
    `loss(None, global_features, local=local_features)`; `dim_loss`
    documents it.

    Args:
        estimator: `"jsd"` or `"infonce"`. Defaults to `"jsd"`.
        reduction, name, dtype: Keras's. Name defaults to `"dim_loss"`.

    Reference:
        Hjelm et al., ICLR 2019.
    """

    def __init__(self, estimator="jsd", reduction="sum_over_batch_size", name="dim_loss",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.estimator = check_choice(estimator, "estimator", ESTIMATORS)

    def call(self, y_true, y_pred, local=None):
        if local is None:
            raise ValueError("DIMLoss needs the local features: `local=` [batch, L, R].")
        return dim_loss(y_pred, local, self.estimator)

    def get_config(self):
        return {**super().get_config(), "estimator": self.estimator}


@keras.saving.register_keras_serializable(package="supcon_tf")
class AMDIMLoss(ContrastiveLoss):
    """AMDIM's NCE as a Keras loss: `loss(None, source, local=targets)`;
    `amdim_loss` documents it.

    Args:
        tclip: Defaults to 20.0.
        logit_reg: Defaults to 0.05.
        reduction, name, dtype: Keras's. Name defaults to `"amdim_loss"`.

    Reference:
        Bachman, Hjelm, Buchwalter, NeurIPS 2019.
    """

    def __init__(self, tclip=20.0, logit_reg=0.05, reduction="sum_over_batch_size",
                 name="amdim_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.tclip, self.logit_reg = _check_amdim(tclip, logit_reg)

    def call(self, y_true, y_pred, local=None):
        if local is None:
            raise ValueError("AMDIMLoss needs the target features: `local=` [batch, L, R].")
        return amdim_loss(y_pred, local, self.tclip, self.logit_reg)

    def get_config(self):
        return {**super().get_config(), "tclip": self.tclip, "logit_reg": self.logit_reg}
