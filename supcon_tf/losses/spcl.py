"""SpCL's unified contrastive loss against a hybrid memory.

Reference: Ge et al., "Self-paced Contrastive Learning with Hybrid Memory for
Domain Adaptive Object Re-ID", NeurIPS 2020 (https://arxiv.org/abs/2006.02713);
the loss as the official code computes it (yxgeee/SpCL,
spcl/models/hm.py, `HybridMemory.forward`).

The memory holds `M` unit vectors `v_j` and a label for each, `l_j`: the
labelled (source) classes' centroids, and one instance feature per unlabelled
(target) sample, whose label is its cluster's or, for an un-clustered
outlier, its own. For an embedding `f` (L2-normalised here) the score of a
label `c` is the mean of `f . v_j / T` over the slots holding `c` (so a
cluster is scored by its centroid, a class by its one centroid, an outlier by
its own feature), and the loss is the cross-entropy of the softmax over
every label held by some slot, at the sample's own label:

    -log( exp(s_y) / sum_c exp(s_c) ),   s_c = mean_{j: l_j = c} f . v_j / T

A slot labelled -1 takes no part (the slots of labelled samples, which their
class centroid represents). The official code adds 1e-6 inside the softmax's
denominator and inside the log, which caps a sample's loss near 13.8; here the
log-softmax is exact.

Written once in `keras.ops` (every Keras backend). The memory is the same on
every replica, so each sample's loss reads nothing of the other replicas'.
"""

import keras
from keras import ops

from supcon_tf._checks import check_positive
from supcon_tf.losses._portable.common import l2_normalize, require, shape_of, shown
from supcon_tf.losses.base import ContrastiveLoss


def hybrid_memory_loss(y_true, y_pred, memory, memory_labels, temperature=0.05):
    """SpCL's loss per sample (see the module docstring).

    Args:
        y_true: `[batch]` each sample's label in the memory's label space
            (its class for a labelled sample, its cluster's or its own label
            for an unlabelled one), an integer in `[0, M)` held by some slot.
        y_pred: `[batch, dim]` (or `[batch, 1, dim]`) embeddings.
        memory: `[M, dim]` the memory's unit vectors (taken without gradient).
        memory_labels: `[M]` integer label of each slot in `[0, M)`, or -1 for
            a slot that takes no part.
        temperature: > 0. Defaults to 0.05 (the paper's).

    Returns:
        float32 `[batch]`.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> memory = rng.normal(size=(6, 8)).astype("float32")
    >>> memory /= np.linalg.norm(memory, axis=1, keepdims=True)
    >>> labels = np.array([0, 1, 2, 2, 4, -1])     # two classes, a cluster, an outlier
    >>> f = rng.normal(size=(3, 8)).astype("float32")
    >>> tuple(hybrid_memory_loss(np.array([0, 2, 4]), f, memory, labels).shape)
    (3,)

    Reference:
        Ge et al., "Self-paced Contrastive Learning with Hybrid Memory for
        Domain Adaptive Object Re-ID", NeurIPS 2020.
    """
    temperature = check_positive(temperature, "temperature")
    return loss_from_scores(y_true, *label_scores(y_pred, memory, memory_labels, temperature))


def loss_from_scores(y_true, means, held, check=0.0):
    """`hybrid_memory_loss` from `label_scores`' outputs (for a model that
    reads the scores too)."""
    slots = means.shape[1]
    y = ops.reshape(ops.cast(ops.convert_to_tensor(y_true), "int32"), (-1,))
    if y.shape[0] is not None and means.shape[0] is not None and y.shape[0] != means.shape[0]:
        raise ValueError(f"`y_true` must hold one label per embedding ({means.shape[0]}). "
                         f"Received: y_true.shape={shown(shape_of(y))}")
    masked = ops.where(held[None, :], means, float("-inf"))
    top = ops.stop_gradient(ops.max(masked, axis=1, keepdims=True))
    lse = top[:, 0] + ops.log(ops.sum(ops.exp(masked - top), axis=1))
    safe = ops.clip(y, 0, slots - 1)
    own = ops.take_along_axis(means, safe[:, None], axis=1)[:, 0]
    check = check + require(
        ops.all(ops.logical_and(ops.take(held, safe), ops.logical_and(y >= 0, y < slots))),
        "`y_true` must name labels that some slot of the memory holds (in "
        f"[0, {slots}))")
    return lse - own + check


def label_scores(y_pred, memory, memory_labels, temperature=0.05):
    """Each embedding's score of each label, `mean_{j: l_j = c} f . v_j / T`.

    Returns `(scores [batch, M], held [M], check)`: column `c` is label `c`'s
    score (0 where no slot holds it), `held` whether a slot holds it, and
    `check` 0 (NaN inside a traced function when a label is out of range).
    The arguments are `hybrid_memory_loss`'s.
    """
    f = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    if len(f.shape) == 3 and f.shape[1] == 1:
        f = f[:, 0]
    if len(f.shape) != 2:
        raise ValueError("SpCL's loss needs `y_pred` of shape [batch, dim] (or [batch, 1, "
                         f"dim]). Received: y_pred.shape={shown(shape_of(f))}")
    v = ops.stop_gradient(ops.cast(ops.convert_to_tensor(memory), "float32"))
    if len(v.shape) != 2 or None not in (v.shape[1], f.shape[1]) and v.shape[1] != f.shape[1]:
        raise ValueError(f"`memory` must be [slots, {f.shape[1]}] (the embeddings' size). "
                         f"Received: memory.shape={shown(shape_of(v))}")
    slots = v.shape[0]
    labels = ops.reshape(ops.cast(ops.convert_to_tensor(memory_labels), "int32"), (-1,))
    if labels.shape[0] != slots:
        raise ValueError(f"`memory_labels` must hold one label per slot of `memory` "
                         f"({slots}). Received: memory_labels.shape={shown(shape_of(labels))}")
    check = require(ops.logical_and(ops.all(labels >= -1), ops.all(labels < slots)),
                    f"`memory_labels` must be in [-1, {slots}) (-1: a slot that takes no "
                    "part)")
    # Inactive slots go to segment `slots`, which is dropped.
    segments = ops.where(labels >= 0, labels, slots)
    scores = ops.matmul(l2_normalize(f), ops.transpose(v)) / temperature      # [b, M]
    sums = ops.segment_sum(ops.transpose(scores), segments, num_segments=slots + 1)[:slots]
    counts = ops.segment_sum(ops.ones((slots,), "float32"), segments,
                             num_segments=slots + 1)[:slots]
    means = ops.transpose(sums / ops.maximum(counts, 1.0)[:, None])            # [b, M]
    return means, counts > 0, check


@keras.saving.register_keras_serializable(package="supcon_tf")
class HybridMemoryLoss(ContrastiveLoss):
    """SpCL's unified contrastive loss as a Keras loss:
    `loss(labels, embeddings, memory=..., memory_labels=...)`;
    `hybrid_memory_loss` documents it. `supcon_tf.models.SpCLModel` keeps
    the memory and passes it.

    Args:
        temperature: > 0. Defaults to 0.05.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"hybrid_memory_loss"`.
        dtype: Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> memory = np.eye(4, dtype="float32")
    >>> f = np.eye(4, dtype="float32")[:2]
    >>> loss = HybridMemoryLoss()(np.array([0, 1]), f, memory=memory,
    ...                           memory_labels=np.array([0, 1, 2, 3]))
    >>> round(float(loss), 4)
    0.0

    Reference:
        Ge et al., "Self-paced Contrastive Learning with Hybrid Memory for
        Domain Adaptive Object Re-ID", NeurIPS 2020.
    """

    def __init__(self, temperature=0.05, reduction="sum_over_batch_size",
                 name="hybrid_memory_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_positive(temperature, "temperature")

    def call(self, y_true, y_pred, memory=None, memory_labels=None):
        if y_true is None or memory is None or memory_labels is None:
            raise ValueError("HybridMemoryLoss needs each sample's label (`y_true`), the "
                             "memory (`memory=`) and its slots' labels (`memory_labels=`).")
        return hybrid_memory_loss(y_true, y_pred, memory, memory_labels, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
