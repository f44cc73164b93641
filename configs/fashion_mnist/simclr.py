"""SimCLR on Fashion-MNIST: the zoo's fashion_mnist_resnet18_simclr.

    python examples/pretrain.py --config configs/fashion_mnist/simclr.py --model_dir runs/simclr

Override any value on the command line, e.g. `--config.optimizer.lr=4e-3`.
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
    c.method = "simclr"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float),
                     rotate90=False)
    c.head = dict(dim=128, hidden_dims=(512,))
    c.model = dict(views=2, imix=placeholder(str), imix_alpha=1.0, adversarial_eps=0.0, adversarial_weight=1.0)
    c.loss = dict(name="SupConLoss", temperature=0.2)
    return with_budget(c)
