"""Contrastive losses. Each is a `keras.losses.Loss` (per-sample values from
`call`, reduced by the Keras base class) with a plain function that does the
maths."""

from supcon_tf.losses.moco import MoCoLoss, moco_loss
from supcon_tf.losses.supcon import SupConLoss, supcon_loss

__all__ = ["MoCoLoss", "SupConLoss", "moco_loss", "supcon_loss"]
