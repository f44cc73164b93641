"""Cross-modal contrast, CLIP-style: a symmetric InfoNCE between two
encoders' embeddings with a learnable temperature.

Reference: Radford et al., "Learning Transferable Visual Models From Natural
Language Supervision", ICML 2021 (https://arxiv.org/abs/2103.00020); the
loss as open_clip's `ClipLoss` computes it (mlfoundations/open_clip,
src/open_clip/loss.py): logits `scale * a @ b.T`, cross-entropy both ways,
the mean of the two; the scale is `exp(s)` of a learned `s` initialised at
`log(1 / 0.07)` and clamped to `[0, log 100]` (`supcon_tf.heads.LogitScale`).

Written once in `keras.ops` (every Keras backend); on TensorFlow under
`tf.distribute` each replica's pairs are contrasted against the global
batch of the other modality (open_clip's `local_loss=True` with its
gathered features).
"""

import keras
from keras import ops

from supcon_tf import _backend, _cross_replica
from supcon_tf.losses._portable.common import l2_normalize, shape_of, shown
from supcon_tf.losses.base import ContrastiveLoss


def clip_loss(y_true, y_pred, logit_scale):
    """CLIP's symmetric contrastive loss, one value per pair.

    `y_pred[:, 0]` are the embeddings of one modality (images), `y_pred[:, 1]`
    of the other (texts, or a second signal of the image), pair `i` matched.
    With `a`, `b` L2-normalised and `s` the logit scale,

        loss_i = (CE(s a_i . b, i) + CE(s b_i . a, i)) / 2

    over the (global) batch. With labels, every pair of the same class is a
    match (the mean of the log-probabilities over them, SupCon's `L_out`
    form): for a batch with repeated class texts, as in zero-shot training
    on class descriptions, the same description is then no negative of
    itself. With unique labels, or `y_true=None`, it is CLIP's loss.

    Args:
        y_true: None, or class ids `[batch]` / `[batch, 1]`.
        y_pred: `[batch, 2, dim]`: the two modalities' embeddings.
        logit_scale: A scalar `> 0`, the inverse temperature (e.g. the output
            of `supcon_tf.heads.LogitScale`); gradients flow into it.

    Returns:
        float32 `[batch]`.

    Raises:
        ValueError: `y_pred` not `[batch, 2, dim]`; labels of another count.

    Example:

    >>> import numpy as np
    >>> pairs = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    >>> tuple(clip_loss(None, pairs, 1 / 0.07).shape)
    (4,)

    Reference:
        Radford et al., "Learning Transferable Visual Models From Natural
        Language Supervision", ICML 2021.
    """
    z = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    if len(z.shape) != 3 or z.shape[1] != 2:
        raise ValueError("CLIP's loss needs `y_pred` of shape [batch, 2, dim]: the two "
                         f"modalities' embeddings. Received: y_pred.shape={shown(shape_of(z))}")
    a, b = l2_normalize(z[:, 0]), l2_normalize(z[:, 1])
    scale = ops.cast(logit_scale, "float32")
    all_a, all_b, offset = a, b, 0
    if _backend.backend() == "tensorflow":
        all_a, offset = _cross_replica.global_batch(a)
        all_b, _ = _cross_replica.global_batch(b)
    own = ops.arange(ops.shape(all_a)[0])[None, :] == (offset + ops.arange(ops.shape(a)[0]))[:, None]
    match = own
    if y_true is not None:
        y = ops.reshape(ops.cast(ops.convert_to_tensor(y_true), "int32"), (-1,))
        if z.shape[0] is not None and y.shape[0] != z.shape[0]:
            raise ValueError(f"CLIP's loss needs one label per pair. Received: {y.shape[0]} "
                             f"labels for y_pred.shape={shown(shape_of(z))}")
        labels = _cross_replica.all_gather(y) if _backend.backend() == "tensorflow" else y
        match = ops.logical_or(own, ops.equal(y[:, None], labels[None, :]))
    count = ops.sum(ops.cast(match, "float32"), axis=1)

    def direction(x, others):
        log_p = ops.log_softmax(scale * ops.matmul(x, ops.transpose(others)), axis=-1)
        return -ops.sum(ops.where(match, log_p, 0.0), axis=1) / count

    return 0.5 * (direction(a, all_b) + direction(b, all_a))


@keras.saving.register_keras_serializable(package="supcon_tf")
class CLIPLoss(ContrastiveLoss):
    """CLIP's symmetric InfoNCE as a Keras loss:
    `loss(labels_or_None, pairs, logit_scale=scale)`.

    `call` returns `clip_loss`'s per-pair values (which documents the
    formula); the Keras base class applies `sample_weight` and the
    reduction. The logit scale is an input, not an attribute: it is a
    trained weight of the model (`supcon_tf.heads.LogitScale`).

    Args:
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"clip_loss"`.
        dtype: Defaults to None (float32).

    Example:

    >>> import numpy as np
    >>> pairs = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    >>> float(CLIPLoss()(None, pairs, logit_scale=1 / 0.07)) > 0
    True

    Reference:
        Radford et al., "Learning Transferable Visual Models From Natural
        Language Supervision", ICML 2021.
    """

    def __init__(self, reduction="sum_over_batch_size", name="clip_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred, logit_scale=None):
        if logit_scale is None:
            raise ValueError("CLIPLoss needs the inverse temperature: `logit_scale=` (e.g. "
                             "the output of supcon_tf.heads.LogitScale).")
        return clip_loss(y_true, y_pred, logit_scale)
