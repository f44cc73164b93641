"""Heads on the encoder's features: the projection head of SimCLR / SupCon,
the projectors and predictors of the methods without negatives (with the
papers' shapes), L2 normalisation (heads/projection.py), and the heads of
single methods: MiCE's `MixtureHead`, CPC's `CPCContext`, PixPro's
`PixelPropagation` (heads/method_heads.py)."""

from supcon_tf.heads.method_heads import CPCContext, MixtureHead, PixelPropagation
from supcon_tf.heads.projection import (HEAD_KINDS, ClipValue, L2Normalize, LogitScale,
                                        ProjectionHead, barlow_twins_projector, byol_predictor,
                                        byol_projector, simsiam_predictor, simsiam_projector,
                                        swav_projector, vicreg_expander)

__all__ = ["CPCContext", "ClipValue", "HEAD_KINDS", "L2Normalize", "LogitScale", "MixtureHead",
           "PixelPropagation", "ProjectionHead", "barlow_twins_projector", "byol_predictor",
           "byol_projector", "simsiam_predictor", "simsiam_projector", "swav_projector",
           "vicreg_expander"]
