"""CPC's InfoNCE over a grid of patches.

Reference: van den Oord, Li, Vinyals, "Representation Learning with
Contrastive Predictive Coding", 2018, and Hénaff et al., "Data-Efficient
Image Recognition with Contrastive Predictive Coding", ICML 2020 (CPC v2).

An image is cut into an `H x W` grid of patches, each encoded to `z_{i,j}`
(`[batch, H, W, D]`); a context network that sees rows up to `i` gives
`c_{i,j}`, and for each step `k` (from `first_step` on) a linear map
predicts the patch `k` rows below, `p^k_{i,j} = W_k c_{i,j}` (rows
`i < H - k`). The loss of a prediction is the cross-entropy of its scores
against every patch of the (global) batch, the true `z_{i+k,j}` being the
positive:

    -log( exp(p^k_ij . z_{i+k,j}) / sum_{n, i', j'} exp(p^k_ij . z^n_{i'j'}) )

(every other patch of the same image and every patch of the other images
are negatives, as CPC v2). A sample's loss is the mean over its steps and
their valid positions. CPC v2 predicts only the patches 3 rows below
(`first_step=3`, one step): its patches overlap half of the next row's, so
the patch 1 row below shares pixels with the context's own row, and the
one 2 rows below borders it.

Written once in `keras.ops` (every Keras backend); on TensorFlow under
`tf.distribute` the candidates are the global batch's patches.
"""

import keras
from keras import ops

from supcon_tf import _backend, _cross_replica
from supcon_tf._checks import check_int
from supcon_tf.losses._portable.common import shape_of, shown
from supcon_tf.losses.base import ContrastiveLoss


def cpc_loss(y_pred, targets, first_step=1):
    """CPC's loss per image (see the module docstring).

    Args:
        y_pred: `[batch, K, H, W, D]`: the predictions at each position of
            the patches `first_step`, ..., `first_step + K - 1` rows below
            (rows `i >= H - k` of step k are ignored).
        targets: `[batch, H, W, D]`: the patches' encodings `z`.
        first_step: The offset of `y_pred`'s first step, an integer >= 1.
            Defaults to 1.

    Returns:
        float32 `[batch]`.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p, z = rng.normal(size=(2, 2, 4, 3, 5)), rng.normal(size=(2, 4, 3, 5))
    >>> tuple(cpc_loss(p, z).shape)
    (2,)

    Reference:
        Hénaff et al., "Data-Efficient Image Recognition with Contrastive
        Predictive Coding", ICML 2020.
    """
    p = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    z = ops.cast(ops.convert_to_tensor(targets), "float32")
    if len(p.shape) != 5 or len(z.shape) != 4 or tuple(p.shape[2:]) != tuple(z.shape[1:]):
        raise ValueError("CPC's loss needs predictions [batch, K, H, W, D] and targets "
                         f"[batch, H, W, D] of one grid. Received: y_pred.shape="
                         f"{shown(shape_of(p))}, targets.shape={shown(shape_of(z))}")
    first_step = check_int(first_step, "first_step", 1)
    steps, rows, cols, dim = p.shape[1], z.shape[1], z.shape[2], z.shape[3]
    last = first_step + steps - 1
    if last >= rows:
        raise ValueError(f"Predictions up to {last} rows ahead ({steps} steps from {first_step}) "
                         f"need a grid of more than {last} rows. "
                         f"Received: targets.shape={shown(shape_of(z))}")
    everyone, offset = z, 0
    if _backend.backend() == "tensorflow":
        everyone, offset = _cross_replica.global_batch(z)
    candidates = ops.reshape(everyone, (-1, dim))                        # [n*H*W, D]
    batch = ops.shape(z)[0]
    image = offset + ops.arange(batch)                                    # [b]
    total = ops.zeros((batch,), "float32")
    for t in range(steps):
        k = first_step + t                                                  # rows ahead
        pred = ops.reshape(p[:, t, :rows - k], (-1, dim))                  # [b*(H-k)*W, D]
        logits = ops.matmul(pred, ops.transpose(candidates))
        top = ops.stop_gradient(ops.max(logits, axis=1, keepdims=True))
        lse = top[:, 0] + ops.log(ops.sum(ops.exp(logits - top), axis=1))
        # The positive of (b, i, j) is patch (b, i + k, j) of the gathered grid.
        i = ops.arange(rows - k)[:, None]
        j = ops.arange(cols)[None, :]
        within = ops.reshape((i + k) * cols + j, (1, -1))                  # [1, (H-k)*W]
        column = ops.reshape(image[:, None] * (rows * cols) + within, (-1, 1))
        positive = ops.take_along_axis(logits, column, axis=1)[:, 0]
        per = ops.reshape(lse - positive, (batch, -1))
        total = total + ops.mean(per, axis=1)
    return total / steps


@keras.saving.register_keras_serializable(package="supcon_tf")
class CPCLoss(ContrastiveLoss):
    """CPC's loss as a Keras loss: `loss(None, predictions, targets=z,
    first_step=1)`; `cpc_loss` documents it.

    Args:
        reduction, name, dtype: Keras's. Name defaults to `"cpc_loss"`.

    Reference:
        Hénaff et al., ICML 2020.
    """

    def __init__(self, reduction="sum_over_batch_size", name="cpc_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred, targets=None, first_step=1):
        if targets is None:
            raise ValueError("CPCLoss needs the patches' encodings: `targets=` [batch, H, W, D].")
        return cpc_loss(y_pred, targets, first_step)
