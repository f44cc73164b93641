"""AMDIM (Bachman et al., NeurIPS 2019) on Fashion-MNIST at the recipe budget.

    python examples/pretrain.py --config configs/fashion_mnist/amdim.py --model_dir runs/amdim

Two views of the simclr recipe at crop 0.3 (the family's); the multiscale
objective of the official code: each view's global embedding against the
other view's 4 x 4 last map and 7 x 7 third-stage map, and a random location
of the last map against the other's, each both ways, summed (tclip 20,
logit penalty 0.05). Embeddings of 128 from heads with a hidden layer of
256, not normalised. The recipe's keys: docs/methods.md
(supcon_tf.methods.DEFAULTS).
"""

import os
import runpy

import ml_collections
from ml_collections.config_dict import placeholder

# The budget shared by these configs (a file beside this one).
with_budget = runpy.run_path(os.path.join(os.path.dirname(__file__), "budget.py"))["with_budget"]


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "dim"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=(256,))
    c.model = dict(objective="amdim", scales=2)
    return with_budget(c)
