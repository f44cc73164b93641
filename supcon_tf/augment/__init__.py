"""Augmentation layers and recipes for contrastive learning.

Everything here is a Keras layer that works on batches, inside `tf.data`
(`ds.batch(n).map(layer)`) and inside a model. Random layers take `seed`.
Images are float in `[0, 255]` (uint8 input is cast).

References: Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations" (SimCLR), ICML 2020; Khosla et al., "Supervised Contrastive
Learning", NeurIPS 2020.
"""

from supcon_tf.augment.geometry import CropViews, split_geometry
from supcon_tf.augment.layers import (MultiView, RandomApply, RandomResizedCrop, RandomRotate90,
                                      crop_and_resize, rotate90)
from supcon_tf.augment.randaugment import RAND_AUGMENT_OPS, RandAugment
from supcon_tf.augment.recipes import (MAX_COLOR_STRENGTH, RECIPES, from_spec, infomin, simclr,
                                       supcon)

__all__ = ["CropViews", "MAX_COLOR_STRENGTH", "MultiView", "RAND_AUGMENT_OPS", "RECIPES", "RandAugment",
           "RandomApply", "RandomResizedCrop", "RandomRotate90", "crop_and_resize", "from_spec",
           "infomin", "rotate90", "simclr", "split_geometry", "supcon"]
