"""Backbones that map images to a pooled feature vector.

`resnet18`, `resnet34` and `resnet50` are the ResNets of He et al. (CVPR 2016)
with the CIFAR stem used by SimCLR and SupCon for small images: one 3x3 conv,
stride 1, no max-pool. A `width` multiplier scales every layer's channels.
Their convolutions are `supcon_tf.encoders.Conv2D` (Keras's Conv2D with a
faster input gradient; same values), so load a saved one after `import
supcon_tf`.
Any Keras model whose output is `[batch, features]` works as an encoder too
(`as_encoder` checks and wraps one, e.g. `keras.applications.ResNet50(
include_top=False, pooling="avg")`).

Encoders of several views of one image (encoders/views.py): `multi_view`, a
backbone per fixed signal (`ViewSignal`: the image, its gradient, its
Laplacian; CMC), and `learned_views`, a backbone per channel of a learned
`ViewFlow` (InfoMin).

An image encoder made of a patch encoder (encoders/patches.py):
`patch_grid_encoder`, the image cut into a grid of overlapping patches
(`PatchGrid`), each encoded on its own (`OnPatches`), the encodings
averaged (CPC). `resnet(..., norm="layer")` builds a ResNet with layer norm
in place of BatchNorm (CPC v2's patch encoder).
"""

from supcon_tf.encoders.backbones import (Conv2D, as_encoder, get, resnet, resnet18, resnet34,
                                          resnet50)
from supcon_tf.encoders.patches import OnPatches, PatchGrid, grid_size, patch_grid_encoder
from supcon_tf.encoders.views import (SIGNALS, ViewChannel, ViewFlow, ViewSignal, learned_branches,
                                      learned_views, multi_view, signal_branches, view_signals)

__all__ = ["Conv2D", "OnPatches", "PatchGrid", "SIGNALS", "ViewChannel", "ViewFlow", "ViewSignal", "as_encoder", "get", "grid_size",
           "learned_branches", "learned_views", "multi_view", "patch_grid_encoder", "resnet", "resnet18", "resnet34",
           "resnet50", "signal_branches", "view_signals"]
