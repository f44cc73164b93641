"""GraphCL's contrastive loss between two augmented views of each graph.

Reference: You et al., "Graph Contrastive Learning with Augmentations",
NeurIPS 2020 (https://arxiv.org/abs/2010.13902); the loss as the official
code computes it (Shen-Lab/GraphCL, unsupervised_TU/gsimclr.py, `loss_cal`):
cosine similarities of view 1 against view 2, T = 0.2, and for graph `i`

    -log( exp(s_ii / T) / sum_{j != i} exp(s_ij / T) )

one direction, the denominator holding only the other graphs' second views
(not the positive, not the first views): unlike NT-Xent. `symmetric=True`
averages it with the other direction (view 2 against view 1).

Written once in `keras.ops` (every Keras backend); on TensorFlow under
`tf.distribute` the other graphs are those of the global batch.
"""

import keras
from keras import ops

from supcon_tf import _backend, _cross_replica
from supcon_tf._checks import check_positive
from supcon_tf.losses._portable.common import l2_normalize, masked_logsumexp, shape_of, shown
from supcon_tf.losses.base import ContrastiveLoss


def graphcl_loss(y_pred, temperature=0.2, symmetric=False):
    """GraphCL's loss per graph (see the module docstring).

    Args:
        y_pred: `[batch, 2, dim]`: two augmented views of each graph, embedded.
        temperature: > 0. Defaults to 0.2 (the official code's).
        symmetric: Average with the view-2-to-view-1 direction. Defaults to
            False (the official code's one direction).

    Returns:
        float32 `[batch]`. With a (global) batch of one graph, 0.

    Example:

    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    >>> tuple(graphcl_loss(z).shape)
    (4,)

    Reference:
        You et al., "Graph Contrastive Learning with Augmentations", NeurIPS 2020.
    """
    temperature = check_positive(temperature, "temperature")
    z = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    if len(z.shape) != 3 or z.shape[1] != 2:
        raise ValueError("GraphCL's loss needs `y_pred` of shape [batch, 2, dim]: two views of "
                         f"each graph. Received: y_pred.shape={shown(shape_of(z))}")
    a, b = l2_normalize(z[:, 0]), l2_normalize(z[:, 1])
    all_a, all_b, offset = a, b, 0
    if _backend.backend() == "tensorflow":
        all_a, offset = _cross_replica.global_batch(a)
        all_b, _ = _cross_replica.global_batch(b)
    others = ops.arange(ops.shape(all_a)[0])[None, :] != (
        offset + ops.arange(ops.shape(a)[0]))[:, None]

    def direction(x, y):
        logits = ops.matmul(x, ops.transpose(y)) / temperature
        lse, has = masked_logsumexp(logits, others)
        positive = ops.sum(x * _own(y, offset, x), axis=-1) / temperature
        return ops.where(has[:, 0], lse[:, 0] - positive, 0.0)

    loss = direction(a, all_b)
    return 0.5 * (loss + direction(b, all_a)) if symmetric else loss


def _own(everyone, offset, local):
    """The rows of `everyone` that are this replica's own samples."""
    return ops.take(everyone, offset + ops.arange(ops.shape(local)[0]), axis=0)


@keras.saving.register_keras_serializable(package="supcon_tf")
class GraphCLLoss(ContrastiveLoss):
    """GraphCL's loss as a Keras loss: `loss(None, views)` with views
    `[batch, 2, dim]`; `graphcl_loss` documents it.

    Args:
        temperature: > 0. Defaults to 0.2.
        symmetric: Both directions. Defaults to False.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"graphcl_loss"`.
        dtype: Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    >>> float(GraphCLLoss()(None, z)) > 0
    True

    Reference:
        You et al., "Graph Contrastive Learning with Augmentations", NeurIPS 2020.
    """

    def __init__(self, temperature=0.2, symmetric=False, reduction="sum_over_batch_size",
                 name="graphcl_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_positive(temperature, "temperature")
        self.symmetric = bool(symmetric)

    def call(self, y_true, y_pred):
        return graphcl_loss(y_pred, self.temperature, self.symmetric)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "symmetric": self.symmetric}
