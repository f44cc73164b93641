"""Contrastive Multiview Coding on Fashion-MNIST: the zoo's fashion_mnist_resnet18_cmc.

    python examples/pretrain.py --config configs/fashion_mnist/cmc.py --model_dir runs/cmc

Two views: the image and its Sobel gradient magnitude, each of its own
augmented crop (`crops="independent"`: on one shared crop the gradient is a
function of the image and the views are matched by pixel positions alone;
docs/results/views.md), each with its own ResNet-18 at half the budget's
width (the paper halves each view's network, so the concatenated features
are as wide as one network's), a linear head to 128 each, the core-view
graph at temperature 0.07 (CMC's) with the global batch as negatives. `--config.model.signals="('image', 'gradient',
'laplacian')"` adds a third view; `--config.loss.graph=full` contrasts every pair.
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
    c.method = "cmc"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=placeholder(tuple))
    c.model = dict(signals=("image", "gradient"), crops="independent")
    c.loss = dict(name="CMCLoss", temperature=0.07, graph="core")
    c = with_budget(c)
    c.encoder.width = 0.0625
    return c
