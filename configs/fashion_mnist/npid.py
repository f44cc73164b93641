"""NPID (instance discrimination with a memory bank) on Fashion-MNIST:
the zoo's fashion_mnist_resnet18_npid.

    python examples/pretrain.py --config configs/fashion_mnist/npid.py --model_dir runs/npid

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
    c.method = "npid"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=placeholder(tuple))
    # loss: "nce" or "softmax" (the non-parametric softmax; num_negatives=None: every slot).
    c.model = dict(temperature=0.07, num_negatives=4096, loss="nce", bank_momentum=0.5)
    return with_budget(c)
