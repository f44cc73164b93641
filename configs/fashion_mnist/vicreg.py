"""VICReg on Fashion-MNIST: the zoo's fashion_mnist_resnet18_vicreg.

    python examples/pretrain.py --config configs/fashion_mnist/vicreg.py --model_dir runs/vicreg

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
    c.method = "vicreg"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=1024, hidden_dims=(1024, 1024))
    c.model = dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    return with_budget(c)
