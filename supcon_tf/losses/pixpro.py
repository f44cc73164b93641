"""PixPro's pixel-to-propagation consistency (Xie et al., CVPR 2021;
zdaxie/PixPro).

Two crops of an image each give a feature map of `h x w` locations. A
location's centre in the original image follows from its crop's box; a
pair of locations (one per view) is positive when their centres are closer
than `threshold` times the larger of the two views' bin diagonals
(`pixel_positive_mask`, the official `get_mask`, threshold 0.7). The loss of
one direction, per image, is minus twice the mean cosine similarity between
the online view's predictions (after pixel propagation) and the other
view's target features over its positive pairs:

    -2 * sum_{p, q} mask_pq cos(y_p, y'_q) / (sum_{p, q} mask_pq + 1e-6)

(the official `regression_loss`; an image whose crops share no positive pair
contributes 0). PixPro sums both directions.

Boxes are `[y0, x0, y1, x1]` as fractions of the image (the convention of
`tf.image.crop_and_resize`: `y0 = 0` is the first pixel row, `y1 = 1` the
last), with `x0 > x1` for a view that was flipped horizontally (as the
official `RandomHorizontalFlipCoord` swaps them): location `j` of a row then
runs from the right edge of the box to the left.

Written once in `keras.ops` (every Keras backend). Nothing crosses images,
so the loss needs no gather under `tf.distribute`.
"""

import keras
from keras import ops

from supcon_tf._checks import check_positive
from supcon_tf.losses._portable.common import shape_of, shown
from supcon_tf.losses.base import ContrastiveLoss


def _centres(boxes, height, width):
    """`([n, h * w] y, [n, h * w] x, [n] bin diagonal)` of each location's
    centre, row-major."""
    y0, x0, y1, x1 = (boxes[:, k:k + 1] for k in range(4))
    bin_h, bin_w = (y1 - y0) / height, (x1 - x0) / width                   # [n, 1]
    rows = (ops.arange(height, dtype="float32") + 0.5)[None, :]
    cols = (ops.arange(width, dtype="float32") + 0.5)[None, :]
    cy = ops.repeat(y0 + rows * bin_h, width, axis=1)                       # [n, h*w]
    cx = ops.tile(x0 + cols * bin_w, (1, height))
    return cy, cx, ops.sqrt(bin_h ** 2 + bin_w ** 2)[:, 0]


def pixel_positive_mask(boxes_a, boxes_b, grid, threshold=0.7):
    """Which location pairs of two views are positives.

    Args:
        boxes_a: `[batch, 4]` boxes of view a (`[y0, x0, y1, x1]`, the
            module docstring's convention; `x0 > x1` when flipped).
        boxes_b: `[batch, 4]` boxes of view b.
        grid: `(h, w)`, the feature map's size.
        threshold: Largest distance of a positive pair, in units of the
            larger bin diagonal of the two views. Defaults to 0.7 (the
            official `pixpro-pos-ratio`).

    Returns:
        float32 `[batch, h * w, h * w]`: 1 where location p of view a and
        location q of view b are positives (locations row-major).
    """
    threshold = check_positive(threshold, "threshold")
    try:
        height, width = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise ValueError(f"`grid` must be (height, width). Received: grid={grid!r}") from None
    a = ops.cast(ops.convert_to_tensor(boxes_a), "float32")
    b = ops.cast(ops.convert_to_tensor(boxes_b), "float32")
    for name, boxes in (("boxes_a", a), ("boxes_b", b)):
        if len(boxes.shape) != 2 or boxes.shape[1] != 4:
            raise ValueError(f"`{name}` must be [batch, 4] boxes [y0, x0, y1, x1]. "
                             f"Received: {name}.shape={shown(shape_of(boxes))}")
    ay, ax, adiag = _centres(a, height, width)
    by, bx, bdiag = _centres(b, height, width)
    dist = ops.sqrt(ops.square(ay[:, :, None] - by[:, None, :])
                    + ops.square(ax[:, :, None] - bx[:, None, :]))
    scale = ops.maximum(adiag, bdiag)[:, None, None]
    return ops.cast(dist / scale < threshold, "float32")


def pixpro_loss(y_true, y_pred, positive_mask):
    """PixPro's loss of one direction per image (the module docstring).

    Args:
        y_true: `[batch, L, D]` target features of one view (L locations;
            the momentum network's projections).
        y_pred: `[batch, L, D]` the other view's predictions (the online
            projections after pixel propagation). Neither need be normalised.
        positive_mask: `[batch, L, L]`, row p a location of `y_pred`'s view,
            column q one of `y_true`'s (`pixel_positive_mask(boxes of
            y_pred's view, boxes of y_true's view, ...)`).

    Returns:
        float32 `[batch]`, in [-2, 2].

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> t, p = rng.normal(size=(2, 4, 8)), rng.normal(size=(2, 4, 8))
    >>> tuple(pixpro_loss(t, p, np.eye(4)[None].repeat(2, 0)).shape)
    (2,)

    Reference:
        Xie et al., "Propagate Yourself: Exploring Pixel-Level Consistency
        for Unsupervised Visual Representation Learning", CVPR 2021.
    """
    t = ops.cast(ops.convert_to_tensor(y_true), "float32")
    p = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    mask = ops.cast(ops.convert_to_tensor(positive_mask), "float32")
    if (len(t.shape) != 3 or len(p.shape) != 3 or len(mask.shape) != 3
            or None not in (t.shape[2], p.shape[2]) and t.shape[2] != p.shape[2]):
        raise ValueError("pixpro_loss needs targets and predictions [batch, L, D] and a mask "
                         f"[batch, L, L]. Received: y_true {shown(shape_of(t))}, y_pred "
                         f"{shown(shape_of(p))}, positive_mask {shown(shape_of(mask))}")
    t = t / ops.maximum(ops.norm(t, axis=-1, keepdims=True), 1e-12)
    p = p / ops.maximum(ops.norm(p, axis=-1, keepdims=True), 1e-12)
    cos = ops.matmul(p, ops.transpose(t, (0, 2, 1)))                          # [b, L, L]
    return -2.0 * ops.sum(cos * mask, axis=(1, 2)) / (ops.sum(mask, axis=(1, 2)) + 1e-6)


@keras.saving.register_keras_serializable(package="supcon_tf")
class PixProLoss(ContrastiveLoss):
    """PixPro's pixel-to-propagation loss of one direction as a Keras loss:
    `loss(targets, predictions, positives=mask)`; `pixpro_loss` documents
    it. `PixProModel` sums it over both directions.

    Args:
        reduction, name, dtype: Keras's. Name defaults to `"pixpro_loss"`.

    Reference:
        Xie et al., CVPR 2021.
    """

    def __init__(self, reduction="sum_over_batch_size", name="pixpro_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred, positives=None):
        if y_true is None or positives is None:
            raise ValueError("PixProLoss needs the target features as `y_true` and the "
                             "positive pairs' mask: `positives=` [batch, L, L].")
        return pixpro_loss(y_true, y_pred, positives)
