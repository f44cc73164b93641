"""Names kept for code and `.keras` files that use `supcon_tf.layers`: the
heads live in `supcon_tf.heads`, SwAV's `Prototypes` in `supcon_tf.memory`,
the encoders' `Conv2D` in `supcon_tf.encoders` (the classes are the same
objects, registered under the same names)."""

from supcon_tf.encoders import Conv2D
from supcon_tf.heads import (HEAD_KINDS, L2Normalize, ProjectionHead, barlow_twins_projector,
                             byol_predictor, byol_projector, simsiam_predictor,
                             simsiam_projector, swav_projector, vicreg_expander)
from supcon_tf.memory import Prototypes

__all__ = ["Conv2D", "HEAD_KINDS", "L2Normalize", "ProjectionHead", "Prototypes",
           "barlow_twins_projector", "byol_predictor", "byol_projector", "simsiam_predictor",
           "simsiam_projector", "swav_projector", "vicreg_expander"]
