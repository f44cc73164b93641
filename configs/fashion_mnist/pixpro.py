"""PixPro on Fashion-MNIST at the recipe budget.

    python examples/pretrain.py --config configs/fashion_mnist/pixpro.py --model_dir runs/pixpro

The model makes its own two crops from the simclr recipe's crop (area 0.3
to 1, as the family's configs) and flip, keeping their boxes, then the
recipe's colour distortion; the projector (hidden 512, output 128, as
BYOL's at this budget) runs on each of the 4 x 4 locations of the ResNet's
last map. Threshold 0.7, gamma 2, one transform layer and the momentum
0.99 -> 1 are the official PixPro's.
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
    c.method = "pixpro"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=(512,))
    c.model = dict(threshold=0.7, gamma=2.0, transform_layers=1, momentum=0.99,
                   momentum_schedule="cosine", seed=0)
    return with_budget(c)
