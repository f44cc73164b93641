"""Contrastive Multiview Coding's loss: InfoNCE between the embeddings of
M >= 2 views of each sample, over the pairs of a view graph.

Reference: Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020
(https://arxiv.org/abs/1906.05849, github.com/HobbitLong/CMC).
"""

import itertools

import keras
import tensorflow as tf

from supcon_tf import _backend, _cross_replica
from supcon_tf._checks import check_choice, check_positive
from supcon_tf.losses._checks import _as_views
from supcon_tf.losses._portable import others as _portable
from supcon_tf.losses._portable.common import as_views as _portable_views
from supcon_tf.losses.base import ContrastiveLoss

GRAPHS = ("core", "full")


def view_pairs(views, graph="core"):
    """The unordered view pairs `(i, j)` of CMC's objective over `views`
    views: `"core"` pairs view 0 with each other view (the paper's core
    view, eq. 6), `"full"` every pair (the full graph, eq. 7)."""
    check_choice(graph, "graph", GRAPHS)
    if graph == "core":
        return [(0, j) for j in range(1, views)]
    return list(itertools.combinations(range(views), 2))


def cmc_loss(y_pred, temperature=0.07, graph="core", normalize=True):
    """CMC's objective per sample, with the (global) batch as negatives.

    For a pair of views `(i, j)` the term is symmetric,
    `L(i, j) = l(i -> j) + l(j -> i)`, where `l(i -> j)` of sample `s` is the
    cross-entropy of `z_s^i . z_t^j / T` over every sample `t` of the global
    batch with `t = s` the positive (softmax InfoNCE; the paper's eq. 2 with
    the batch's other samples as the negatives `k`). The loss sums the terms
    over the graph's pairs (`view_pairs`): `sum_j L(0, j)` for the core view,
    `sum_{i < j} L(i, j)` for the full graph, as the paper's eqs. 6 and 7.

    Under `tf.distribute` every replica's samples are contrasted against the
    global batch (gathered with gradients); each replica returns its own
    samples' values.

    Args:
        y_pred: `[batch, views, dim]`, views >= 2: each view's embedding.
        temperature: Softmax temperature > 0. Defaults to 0.07 (CMC's).
        graph: `"core"` or `"full"`. Defaults to `"core"`.
        normalize: L2-normalise the embeddings first. Defaults to True.

    Returns:
        float32 `[batch]`.

    Example:

    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(4, 3, 8)).astype("float32")
    >>> cmc_loss(z, graph="full").shape
    TensorShape([4])
    """
    temperature = check_positive(temperature, "temperature")
    portable = not _backend.on_tensorflow(y_pred)
    z = _portable_views(y_pred) if portable else _as_views(y_pred)
    if len(z.shape) != 3 or z.shape[1] is None or z.shape[1] < 2:
        raise ValueError("CMC's loss needs `y_pred` of shape [batch, views, dim] with at "
                         f"least 2 views. Received: y_pred.shape={tuple(z.shape)}")
    pairs = view_pairs(z.shape[1], graph)
    if portable:
        return _portable.cmc_loss(z, temperature, pairs, normalize)
    if normalize:
        z = tf.math.l2_normalize(z, axis=-1)
    everyone, offset = _cross_replica.global_batch(z)          # [global, views, dim]
    targets = offset + tf.range(tf.shape(z)[0])
    total = tf.zeros(tf.shape(z)[:1])
    for i, j in pairs:
        for a, b in ((i, j), (j, i)):
            logits = tf.matmul(z[:, a], everyone[:, b], transpose_b=True) / temperature
            total += tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
    return total


@keras.saving.register_keras_serializable(package="supcon_tf")
class CMCLoss(ContrastiveLoss):
    """CMC's loss over M >= 2 views (`cmc_loss`): symmetric InfoNCE for each
    pair of the core-view or full graph, the global batch as negatives.
    Labels are not read (`y_true` may be None).

    Args:
        temperature: Softmax temperature > 0. Defaults to 0.07.
        graph: `"core"` (view 0 against each other view) or `"full"` (every
            pair). Defaults to `"core"`.
        normalize: L2-normalise the embeddings first. Defaults to True.
        reduction, name, dtype: As `keras.losses.Loss`.
    """

    def __init__(self, temperature=0.07, graph="core", normalize=True,
                 reduction="sum_over_batch_size", name="cmc_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_positive(temperature, "temperature")
        self.graph = check_choice(graph, "graph", GRAPHS)
        self.normalize = bool(normalize)

    def call(self, y_true, y_pred):
        return cmc_loss(y_pred, self.temperature, self.graph, self.normalize)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "graph": self.graph,
                "normalize": self.normalize}
