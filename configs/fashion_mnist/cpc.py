"""CPC v2 on Fashion-MNIST at the recipe budget.

    python examples/pretrain.py --config configs/fashion_mnist/cpc.py --model_dir runs/cpc

Each 28 x 28 image (after the simclr recipe's crop from 0.3, flip and
colour) is cut into a 6 x 6 grid of 8 x 8 patches 4 pixels apart (half
overlapping, as CPC v2's 64-pixel patches 32 apart); the recipe's ResNet-18
(width 0.125, layer norm in place of BatchNorm) encodes each patch (each
flipped on its own with probability 1/2, CPC v2's patch augmentation), a
linear head maps it to 128, and two masked context networks (down and up)
predict the patches 3 rows away, as CPC v2 (the patch 1 row away shares
half its pixels with the context's own row, the one 2 rows away borders
it). The image representation is the mean of the 36 patch encodings.
The recipe's keys: docs/methods.md (supcon_tf.methods.DEFAULTS).
"""

import os
import runpy

import ml_collections
from ml_collections.config_dict import placeholder

# The budget shared by these configs (a file beside this one).
with_budget = runpy.run_path(os.path.join(os.path.dirname(__file__), "budget.py"))["with_budget"]


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "cpc"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=placeholder(tuple))
    c.model = dict(patch_size=8, stride=4, steps=3, first_step=3, directions=("down", "up"),
                   context_depth=2, patch_norm="layer", patch_flip=True)
    return with_budget(c)
